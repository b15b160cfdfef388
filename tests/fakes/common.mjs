// Shared by the stand-in tools and the tests: the default scenario state and argument parsing.

/**
 * The Helm releases the stand-in plays, one per supported major: the newest tag of each in the helm
 * repository when pinned (v3.21.4 takes the same flags as the oldest supported, v3.17.0).
 */
export const HELM_RELEASES = {
  3: { version: 'v3.21.4', commit: '813176c51bb5c181dbbd7901298ddcc104cd3417' },
  4: { version: 'v4.2.4', commit: '3900f434fd3ef2b84065dc04508df48f288dba00' },
};

/** The Helm major a test run plays: FAKE_HELM_MAJOR=3 or 4 (vitest.config.ts runs the Helm-using tests under both); 4 by default, what a new install gets. */
export function helmMajorOfRun(env = process.env) {
  const major = env.FAKE_HELM_MAJOR ?? '4';
  if (!(major in HELM_RELEASES)) throw new Error(`FAKE_HELM_MAJOR="${major}": the stand-in plays helm ${Object.keys(HELM_RELEASES).join(' or ')}`);
  return Number(major);
}

/** `helm version --short` of a played release: v4.2.4+g3900f43. */
export const helmShortVersion = (major) => `${HELM_RELEASES[major].version}+g${HELM_RELEASES[major].commit.slice(0, 7)}`;

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
        Architecture: 'x86_64',
      },
      containers: {},
      networks: {},
      volumes: {},
      images: {},
    },
    talosctl: { version: 'v1.13.9' },
    kubectl: { version: 'v1.36.3', objects: {}, notReadyNodes: [] },
    helm: { version: helmShortVersion(helmMajorOfRun()), releases: {} },
    /** Scripted failures: {tool, argv: [elements that must all be in argv], code, stdout?, stderr?, times?}. */
    failures: [],
  };
}

/**
 * The modelled duration of one call under a latency model (bench/latency-model.yaml): the first rule
 * whose tool matches and whose argv words all appear in the call, its fixed seconds plus the pull of
 * each image it names (the image's MB in the model's `images`, at the internet bandwidth, or at the
 * cache's once `pulled` names the image). 0 when no rule matches. `pulls` says what each image cost,
 * so that the bench can price an image the prefill cached before the call again (bench/deploy.ts).
 */
export function modelledSeconds(model, tool, argv, pulled = []) {
  const rule = (model.commands ?? []).find((r) => r.tool === tool && (r.argv ?? []).every((a) => argv.includes(a)));
  if (!rule) return { seconds: 0, rule: undefined, fixed: 0, pulls: [] };
  const pulls = (rule.images ?? []).map((image) => {
    const MB = model.images?.[image]?.MB;
    if (typeof MB !== 'number') throw new Error(`latency model: rule "${rule.name}" pulls image "${image}", which its images: section does not size (add "${image}: { MB: <n>, source: ... }")`);
    const warm = pulled.includes(image);
    return { image, MB, warm, seconds: MB / (warm ? model.bandwidthMBps.cache : model.bandwidthMBps.internet) };
  });
  const fixed = rule.seconds ?? 0;
  return { seconds: fixed + pulls.reduce((n, p) => n + p.seconds, 0), rule, fixed, pulls };
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

// ---------------------------------------------------------------------------------------------
// Command lines as cobra/pflag parse them (helm and kubectl are both cobra programs)
// ---------------------------------------------------------------------------------------------

/**
 * A flag table from its compact form: space-separated entries "[s/]long" for a flag without a
 * value (bool), "[s/]long=" for one that takes a value, "[s/]long?" for one whose value is optional
 * (pflag's NoOptDefVal: `--long` alone or `--long=value`, never `--long value`).
 */
export function flagTable(...specs) {
  const table = { long: {}, short: {} };
  for (const entry of specs.join(' ').split(/\s+/).filter(Boolean)) {
    const m = /^(?:([a-zA-Z])\/)?([a-z0-9-]+)([=?]?)$/.exec(entry);
    if (!m) throw new Error(`flag table: bad entry "${entry}"`);
    const [, short, long, kind] = m;
    table.long[long] = { short, kind: kind === '=' ? 'value' : kind === '?' ? 'optional' : 'bool' };
    if (short) table.short[short] = long;
  }
  return table;
}

const BOOL_TEXT = { 1: true, t: true, T: true, TRUE: true, true: true, True: true, 0: false, f: false, F: false, FALSE: false, false: false, False: false };

/**
 * Parses argv as pflag does with the given flag table (flags may come anywhere; `--` ends them).
 * Returns {flags: {long: value|[values]}, positional} or {error} with pflag's message (e.g.
 * "unknown flag: --all"). Bool flags hold true/false, the others their text.
 */
export function parseCommandLine(argv, table) {
  const flags = {};
  const positional = [];
  const name = (long) => (table.long[long].short ? `-${table.long[long].short}, --${long}` : `--${long}`);
  const set = (long, raw) => {
    let value = raw;
    if (table.long[long].kind === 'bool') {
      if (!(raw in BOOL_TEXT)) return `invalid argument "${raw}" for "${name(long)}" flag: strconv.ParseBool: parsing "${raw}": invalid syntax`;
      value = BOOL_TEXT[raw];
    }
    flags[long] = long in flags && table.long[long].kind === 'value' ? [].concat(flags[long], value) : value;
    return undefined;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    let problem;
    if (a.startsWith('--')) {
      const [long, inline] = a.slice(2).split(/=(.*)/s);
      const spec = table.long[long];
      if (!spec) return { error: `unknown flag: --${long}` };
      if (inline !== undefined) problem = set(long, inline);
      else if (spec.kind === 'bool') problem = set(long, 'true');
      else if (spec.kind === 'optional') problem = set(long, '');
      else if (i + 1 < argv.length) problem = set(long, argv[++i]);
      else return { error: `flag needs an argument: --${long}` };
    } else if (a.startsWith('-') && a !== '-') {
      // Shorthands: -abc (bools), -n value, -nvalue, -n=value.
      for (let j = 1; j < a.length; j++) {
        const long = table.short[a[j]];
        if (!long) return { error: `unknown shorthand flag: '${a[j]}' in ${a}` };
        const rest = a.slice(j + 1);
        if (table.long[long].kind === 'value') {
          if (rest) problem = set(long, rest.replace(/^=/, ''));
          else if (i + 1 < argv.length) problem = set(long, argv[++i]);
          else return { error: `flag needs an argument: '${a[j]}' in -${a[j]}` };
          break;
        }
        if (rest.startsWith('=')) {
          problem = set(long, rest.slice(1));
          break;
        }
        problem = set(long, table.long[long].kind === 'bool' ? 'true' : '');
      }
    } else positional.push(a);
    if (problem) return { error: problem };
  }
  return { flags, positional };
}

/**
 * The command path of a cobra program's argv: the leading words that name a command (e.g.
 * ['get', 'values']), skipping flags and the values of the given value flags. `commands` maps
 * each command to its subcommands ({} when it has none).
 */
export function commandPath(argv, commands, globalTable) {
  const path = [];
  let level = commands;
  for (let i = 0; i < argv.length && level && Object.keys(level).length; i++) {
    const a = argv[i];
    if (a === '--') break;
    if (a.startsWith('-')) {
      const long = a.startsWith('--') ? a.slice(2) : globalTable.short[a[1]];
      if (!a.includes('=') && globalTable.long[long]?.kind === 'value' && (a.startsWith('--') || a.length === 2)) i++;
      continue;
    }
    if (!(a in level)) return { path, unknown: a };
    path.push(a);
    level = level[a];
  }
  return { path };
}
