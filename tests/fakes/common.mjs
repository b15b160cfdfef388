// Shared by the stand-in tools and the tests: the default scenario state and argument parsing.

/** The healthy machine: Docker up, tools at their pinned versions, plenty of resources, no cluster. */
export function defaultState() {
  return {
    /** The machine the tools run on: `os` is talosctl's runtime.GOOS (where it publishes the API ports). */
    host: { os: 'linux' },
    docker: {
      running: true,
      /**
       * Where the daemon answers, and whether this user may connect there ("ok" or "denied"). Any
       * other endpoint does not exist. A list, so a host profile replaces it whole.
       */
      sockets: [{ host: 'unix:///var/run/docker.sock', access: 'ok' }],
      /** docker CLI contexts besides "default" (name → endpoint), and the current one (~/.docker/config.json). */
      contexts: {},
      currentContext: 'default',
      info: {
        ServerVersion: '28.2.2',
        OSType: 'linux',
        OperatingSystem: 'Debian GNU/Linux 12 (bookworm)',
        NCPU: 8,
        MemTotal: 32 * 1024 ** 3,
        DockerRootDir: '/var/lib/docker',
      },
      containers: {},
      networks: {},
      volumes: {},
      images: {},
    },
    talosctl: { version: 'v1.13.9' },
    kubectl: { version: 'v1.36.3', objects: {}, notReadyNodes: [] },
    helm: { version: 'v3.19.2+g8766e71', releases: {} },
    /** Scripted failures: {tool, argv: [elements that must all be in argv], code, stdout?, stderr?, times?}. */
    failures: [],
  };
}

export function deepMerge(base, over) {
  if (Array.isArray(over) || typeof over !== 'object' || over === null) return over;
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = typeof base?.[k] === 'object' && base[k] !== null && !Array.isArray(base[k]) ? deepMerge(base[k], v) : v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

/**
 * Splits argv into flags and positionals. `spec` names the flags that take a value; repeated
 * flags collect into arrays. Accepts --flag value, --flag=value and -f value.
 */
export function parseArgs(argv, valueFlags = []) {
  const flags = {};
  const positional = [];
  const add = (name, value) => {
    if (name in flags) flags[name] = [].concat(flags[name], value);
    else flags[name] = value;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('-') && a !== '-') {
      const [name, inline] = a.split(/=(.*)/s);
      if (inline !== undefined) add(name, inline);
      else if (valueFlags.includes(name)) add(name, argv[++i]);
      else add(name, true);
    } else positional.push(a);
  }
  return { flags, positional };
}

/** All values of a flag that may repeat, under any of its names. */
export const all = (flags, ...names) => names.flatMap((n) => (n in flags ? [].concat(flags[n]) : []));
export const one = (flags, ...names) => all(flags, ...names).at(-1);
