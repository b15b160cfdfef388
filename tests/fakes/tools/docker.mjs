// Stand-in `docker`: containers, networks and volumes kept in the scenario state. The CLI finds
// its daemon as docker/cli v29 does (DOCKER_HOST, else DOCKER_CONTEXT, else the current context)
// and fails to connect with the moby client's words when the host profile has no daemon there.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { all, one, parseArgs } from '../common.mjs';

/** client.DefaultDockerHost on Unix (moby client/client_unix.go): the endpoint without DOCKER_HOST or a context. */
export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock';

/**
 * The endpoint the docker CLI talks to: DOCKER_HOST wins, then DOCKER_CONTEXT, then the current
 * context (docker/cli cli/command/cli.go resolveContextName); "default" is DOCKER_HOST or the socket.
 */
export function cliEndpoint(state, env) {
  if (env.DOCKER_HOST) return { context: 'default', host: env.DOCKER_HOST };
  const context = env.DOCKER_CONTEXT || state.docker.currentContext || 'default';
  if (context === 'default') return { context, host: DEFAULT_DOCKER_HOST };
  const host = state.docker.contexts[context];
  if (host) return { context, host };
  const id = crypto.createHash('sha256').update(context).digest('hex');
  const meta = path.join(env.HOME ?? '~', '.docker', 'contexts', 'meta', id, 'meta.json');
  return { context, error: `context "${context}": context not found: open ${meta}: no such file or directory` };
}

/**
 * Why a Docker API client cannot reach the daemon at `host`, in the words of moby client v0.4/v0.5
 * (client/request.go, used by docker CLI v29 and talosctl v1.13), or undefined when it can.
 */
export function connectError(state, host) {
  const socket = state.docker.sockets.find((s) => s.host === host);
  if (!socket && host.startsWith('unix://')) {
    const file = host.slice('unix://'.length);
    return `failed to connect to the docker API at ${host}; check if the path is correct and if the daemon is running: dial unix ${file}: connect: no such file or directory`;
  }
  if (socket?.access === 'denied') return `permission denied while trying to connect to the docker API at ${host}`;
  if (!socket || !state.docker.running) return `Cannot connect to the Docker daemon at ${host}. Is the docker daemon running?`;
  return undefined;
}

const subnetRange = (cidr) => {
  const [addr, bits] = cidr.split('/');
  const start = addr.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  return [start, start + 2 ** (32 - Number(bits)) - 1];
};

/** Creates a network as the daemon does, or returns the daemon's error (moby libnetwork, ipamapi.ErrPoolOverlap). */
export function createNetwork(state, { name, labels, subnet }) {
  const d = state.docker;
  if (d.networks[name]) return `Error response from daemon: network with name ${name} already exists`;
  const [start, end] = subnetRange(subnet);
  const overlaps = Object.values(d.networks).some((n) => n.subnet && (([s, e]) => s <= end && start <= e)(subnetRange(n.subnet)));
  if (overlaps) return 'Error response from daemon: invalid pool request: Pool overlaps with other one on this address space';
  d.networks[name] = { name, labels, subnet };
  return undefined;
}

/** The JSON `docker network inspect` prints for a network (the fields the phases read). */
function inspectNetwork(state, n) {
  const containers = Object.fromEntries(
    networkAttached(state, n.name).map((c) => [`id-${c.name}`, { Name: c.name, IPv4Address: `${c.networks[n.name].ip}/24` }]),
  );
  return { Name: n.name, Id: `net-${n.name}`, Driver: n.driver ?? 'bridge', Labels: n.labels, IPAM: { Config: n.subnet ? [{ Subnet: n.subnet }] : [] }, Containers: containers };
}

/** What `docker context inspect` prints for a context (docker/cli cli/command/context/inspect.go). */
const inspectContext = (name, host) => ({
  Name: name,
  Metadata: {},
  Endpoints: { docker: { Host: host, SkipTLSVerify: false } },
  TLSMaterial: {},
  Storage: name === 'default' ? { MetadataPath: '<IN MEMORY>', TLSPath: '<IN MEMORY>' } : { MetadataPath: `~/.docker/contexts/meta/${name}`, TLSPath: `~/.docker/contexts/tls/${name}` },
});

/** The Ports column of `docker ps`: a container that does not run publishes nothing. */
const portsText = (c) =>
  (c.state === 'running' ? c.ports : []).map((p) => `${p.hostIp}:${p.hostPort}->${p.containerPort}/${p.proto}`).join(', ');

const labelsText = (labels) =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

function matchesFilters(obj, filters) {
  return filters.every((f) => {
    const [kind, expr] = f.split(/=(.*)/s);
    if (kind === 'label') {
      const [k, v] = expr.split(/=(.*)/s);
      return k in obj.labels && (v === undefined || obj.labels[k] === v);
    }
    if (kind === 'name') return obj.name.includes(expr);
    return true;
  });
}

/** Parses `-p [ip:]host:container[/proto]`. */
export function parsePort(spec, defaultIp = '0.0.0.0') {
  const [addr, proto = 'tcp'] = spec.split('/');
  const parts = addr.split(':');
  const [hostIp, hostPort, containerPort] = parts.length === 3 ? parts : [defaultIp, ...parts];
  return { hostIp, hostPort: Number(hostPort), containerPort: Number(containerPort), proto };
}

/**
 * A published port as Docker binds it: an empty host port ("127.0.0.1::5000") gets an ephemeral port,
 * the next of scenario `docker.ephemeralPorts` (a test's own servers) or else from 32768 up.
 */
function withHostPort(d, p) {
  if (p.hostPort) return p;
  const taken = Object.values(d.containers).flatMap((c) => c.ports.map((x) => x.hostPort));
  let port = d.ephemeralPorts?.shift();
  for (let n = 32768; port === undefined; n++) if (!taken.includes(n)) port = n;
  return { ...p, hostPort: port };
}

/** Adds a container to the state; shared with the talosctl stand-in. */
export function addContainer(state, c) {
  state.docker.containers[c.name] = {
    state: 'running',
    labels: {},
    ports: [],
    networks: {},
    env: [],
    mounts: [],
    ...c,
  };
}

export function inspectContainer(c) {
  const bindings = {};
  for (const p of c.ports) {
    (bindings[`${p.containerPort}/${p.proto}`] ??= []).push({ HostIp: p.hostIp, HostPort: String(p.hostPort) });
  }
  return {
    Id: `id-${c.name}`,
    Name: `/${c.name}`,
    State: { Status: c.state, Running: c.state === 'running' },
    Config: { Image: c.image, Labels: c.labels, Env: c.env },
    HostConfig: { PortBindings: bindings, RestartPolicy: { Name: c.restart ?? 'no' } },
    Mounts: c.mounts,
    NetworkSettings: {
      Networks: Object.fromEntries(Object.entries(c.networks).map(([n, v]) => [n, { IPAddress: v.ip }])),
    },
  };
}

function networkAttached(state, name) {
  return Object.values(state.docker.containers).filter((c) => name in c.networks);
}

export default function docker(argv, ctx) {
  const { state, out, err, env } = ctx;
  const d = state.docker;
  const [cmd, ...rest] = argv;
  const sub = ['network', 'volume', 'image', 'context', 'manifest'].includes(cmd) ? `${cmd} ${rest.shift()}` : cmd;
  const endpoint = cliEndpoint(state, env);
  if (sub !== '--version' && sub !== 'context inspect') {
    const failure = endpoint.error ?? connectError(state, endpoint.host);
    if (failure) {
      // `docker info --format` still prints the client part, then fails (docker/cli cli/command/system/info.go).
      if (sub === 'info' && !endpoint.error) out(`${JSON.stringify({ ID: '', ServerVersion: '', ClientInfo: { Context: endpoint.context } })}\n`);
      err(`${failure}\n`);
      return 1;
    }
  }
  const { flags, positional } = parseArgs(rest, [
    '--format', '-f', '--filter', '--name', '--label', '-l', '-p', '--publish', '-e', '--env', '-v', '--volume',
    '--network', '--ip', '--restart', '--subnet', '-o', '--opt', '--driver', '-t', '--tag', '--mount', '--file',
  ]);
  switch (sub) {
    case 'build': {
      // docker build --tag ref [--label k=v] [--file Dockerfile] <context>: needs a Dockerfile.
      const context = positional[0];
      const dockerfile = one(flags, '--file', '-f') ?? path.join(context ?? '.', 'Dockerfile');
      if (!context || !fs.existsSync(dockerfile)) {
        err(`ERROR: failed to build: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory\n`);
        return 1;
      }
      const id = `sha256:${Buffer.from(`${context}:${Date.now()}`).toString('hex').padEnd(64, '0').slice(0, 64)}`;
      for (const ref of all(flags, '--tag', '-t')) d.images[ref] = { id, labels: Object.fromEntries(all(flags, '--label').map((l) => l.split(/=(.*)/s).slice(0, 2))) };
      err(`#0 building with "default" instance using docker driver\n#9 naming to ${all(flags, '--tag', '-t').join(', ')} done\n`);
      return 0;
    }
    case 'image inspect': {
      const missing = positional.filter((n) => !d.images[n]);
      if (missing.length) {
        out('[]\n');
        err(`Error response from daemon: No such image: ${missing[0]}\n`);
        return 1;
      }
      const format = one(flags, '--format', '-f');
      if (format === '{{.Id}}') out(positional.map((n) => `${d.images[n].id}\n`).join(''));
      else out(`${JSON.stringify(positional.map((n) => ({ Id: d.images[n].id, RepoTags: [n], Config: { Labels: d.images[n].labels ?? {} } })), null, 2)}\n`);
      return 0;
    }
    case 'push': {
      // The pushed refs are kept in state.docker.pushed (ref -> digest); a test's stand-in registry
      // (an HTTP server) answers /v2/<name>/manifests/<tag> from that list.
      const ref = positional[0];
      if (!d.images[ref]) {
        err(`An image does not exist locally with the tag: ${ref.replace(/:[^:/]+$/, '')}\n`);
        return 1;
      }
      const digest = `sha256:${d.images[ref].id.slice(7, 71)}`;
      d.pushed = { ...(d.pushed ?? {}), [ref]: digest };
      out(`The push refers to repository [${ref.replace(/:[^:/]+$/, '')}]\n${ref.split(':').at(-1)}: digest: ${digest} size: 1786\n`);
      return 0;
    }
    case 'manifest inspect': {
      // A registry other than the local one (IMAGE_REGISTRY): it holds what `docker push` sent there.
      const ref = positional[0];
      if (!d.pushed?.[ref]) {
        err(`no such manifest: ${ref}\n`);
        return 1;
      }
      out(`${JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ digest: d.pushed[ref], platform: { architecture: 'amd64', os: 'linux' } }] }, null, 3)}\n`);
      return 0;
    }
    case '--version':
      out('Docker version 28.2.2, build e6534b4\n');
      return 0;
    case 'info':
      out(`${JSON.stringify(d.info)}\n`);
      return 0;
    case 'ps': {
      const filters = all(flags, '--filter', '-f');
      for (const c of Object.values(d.containers)) {
        if (!flags['-a'] && !flags['--all'] && c.state !== 'running') continue;
        if (!matchesFilters(c, filters)) continue;
        out(
          `${JSON.stringify({
            ID: `id-${c.name}`,
            Names: c.name,
            Image: c.image,
            State: c.state,
            Status: c.state === 'running' ? 'Up 5 minutes' : 'Exited (0) 1 minute ago',
            Labels: labelsText(c.labels),
            Ports: portsText(c),
            Networks: Object.keys(c.networks).join(','),
          })}\n`,
        );
      }
      return 0;
    }
    case 'inspect': {
      const missing = positional.filter((n) => !d.containers[n]);
      if (missing.length) {
        out('[]\n');
        err(`Error: No such object: ${missing[0]}\n`);
        return 1;
      }
      out(`${JSON.stringify(positional.map((n) => inspectContainer(d.containers[n])), null, 2)}\n`);
      return 0;
    }
    case 'run': {
      const name = one(flags, '--name');
      if (d.containers[name]) {
        err(`docker: Error response from daemon: Conflict. The container name "/${name}" is already in use.\n`);
        return 125;
      }
      const labels = Object.fromEntries(all(flags, '--label', '-l').map((l) => l.split(/=(.*)/s).slice(0, 2)));
      const network = one(flags, '--network');
      for (const v of all(flags, '-v', '--volume')) {
        const vol = v.split(':')[0];
        if (!vol.startsWith('/')) d.volumes[vol] ??= { name: vol, labels: {} };
      }
      addContainer(state, {
        name,
        image: positional[0],
        labels,
        restart: one(flags, '--restart'),
        env: all(flags, '-e', '--env'),
        mounts: all(flags, '-v', '--volume'),
        ports: all(flags, '-p', '--publish').map((p) => withHostPort(d, parsePort(p))),
        networks: network ? { [network]: { ip: one(flags, '--ip') ?? '172.18.0.9' } } : { bridge: { ip: '172.17.0.9' } },
      });
      out(`id-${name}\n`);
      return 0;
    }
    case 'port': {
      // docker port CONTAINER PRIVATE_PORT[/PROTO]: one "ip:port" line per binding; a stopped
      // container publishes nothing. IPv4 "any" also binds [::], as a dual-stack engine shows it.
      const [name, wanted] = positional;
      const c = d.containers[name];
      if (!c) {
        err(`Error response from daemon: No such container: ${name}\n`);
        return 1;
      }
      const [port, proto = 'tcp'] = wanted.split('/');
      const bound = c.state === 'running' ? c.ports.filter((p) => String(p.containerPort) === port && p.proto === proto) : [];
      if (bound.length === 0) {
        err(`Error: No public port '${port}/${proto}' published for ${name}\n`);
        return 1;
      }
      out(bound.flatMap((p) => [`${p.hostIp}:${p.hostPort}\n`, ...(p.hostIp === '0.0.0.0' ? [`[::]:${p.hostPort}\n`] : [])]).join(''));
      return 0;
    }
    case 'exec': {
      // docker exec CONTAINER COMMAND…: the stand-in plays `find <dir> -type f -name link` over the
      // container's files (scenario `docker.containers[name].files`, absolute paths).
      const [name, ...command] = rest; // options of docker exec itself are not played
      const c = d.containers[name];
      if (!c) {
        err(`Error response from daemon: No such container: ${name}\n`);
        return 1;
      }
      if (c.state !== 'running') {
        err(`Error response from daemon: container id-${name} is not running\n`);
        return 1;
      }
      const [tool, root, ...tests] = command;
      if (tool !== 'find' || tests.join(' ') !== '-type f -name link') {
        err(`fake docker: exec command not played by the stand-in: ${command.join(' ')}\n`);
        return 2;
      }
      const under = (c.files ?? []).filter((f) => f.startsWith(`${root}/`));
      if (under.length === 0) {
        err(`find: ${root}: No such file or directory\n`);
        return 1;
      }
      out(under.filter((f) => f.endsWith('/link')).map((f) => `${f}\n`).join(''));
      return 0;
    }
    case 'start':
    case 'stop':
      for (const n of positional) {
        if (!d.containers[n]) {
          err(`Error response from daemon: No such container: ${n}\n`);
          return 1;
        }
        d.containers[n].state = sub === 'start' ? 'running' : 'exited';
        out(`${n}\n`);
      }
      return 0;
    case 'rm':
      for (const n of positional) {
        if (!d.containers[n]) {
          if (flags['-f'] || flags['--force']) continue;
          err(`Error response from daemon: No such container: ${n}\n`);
          return 1;
        }
        delete d.containers[n];
        out(`${n}\n`);
      }
      return 0;
    case 'context inspect': {
      // Without a name: the context the CLI uses now (DOCKER_HOST makes it "default").
      const names = positional.length ? positional : [endpoint.context];
      const found = [];
      for (const name of names) {
        const resolved = name === endpoint.context ? endpoint : cliEndpoint(state, { ...env, DOCKER_HOST: '', DOCKER_CONTEXT: name });
        if (resolved.error) {
          err(`${resolved.error}\n`);
          return 1;
        }
        found.push(inspectContext(name, resolved.host));
      }
      if (one(flags, '--format', '-f') === '{{json .}}') out(found.map((c) => `${JSON.stringify(c)}\n`).join(''));
      else out(`${JSON.stringify(found, null, 4)}\n`);
      return 0;
    }
    case 'network ls':
      for (const n of Object.values(d.networks)) {
        if (!matchesFilters(n, all(flags, '--filter', '-f'))) continue;
        if (one(flags, '--format') === '{{.Name}}') out(`${n.name}\n`);
        else out(`${JSON.stringify({ Name: n.name, ID: `net-${n.name}`, Labels: labelsText(n.labels) })}\n`);
      }
      return 0;
    case 'network inspect': {
      const missing = positional.filter((name) => !d.networks[name]);
      if (missing.length) {
        out('[]\n');
        err(`Error response from daemon: network ${missing[0]} not found\n`);
        return 1;
      }
      const found = positional.map((name) => inspectNetwork(state, d.networks[name]));
      if (one(flags, '--format', '-f') === '{{json .}}') out(found.map((n) => `${JSON.stringify(n)}\n`).join(''));
      else out(`${JSON.stringify(found)}\n`);
      return 0;
    }
    case 'network create': {
      const name = positional[0];
      const labels = Object.fromEntries(all(flags, '--label').map((l) => l.split(/=(.*)/s).slice(0, 2)));
      const failure = createNetwork(state, { name, labels, subnet: one(flags, '--subnet') ?? '172.20.0.0/16' });
      if (failure) {
        err(`${failure}\n`);
        return 1;
      }
      out(`net-${name}\n`);
      return 0;
    }
    case 'network connect': {
      const [net, name] = positional;
      if (!d.networks[net]) {
        err(`Error response from daemon: network ${net} not found\n`);
        return 1;
      }
      if (!d.containers[name]) {
        err(`Error response from daemon: No such container: ${name}\n`);
        return 1;
      }
      d.containers[name].networks[net] = { ip: one(flags, '--ip') ?? '10.5.0.99' };
      return 0;
    }
    case 'network disconnect': {
      const [net, name] = positional;
      if (!d.containers[name]?.networks[net]) {
        err(`Error response from daemon: container ${name} is not connected to network ${net}\n`);
        return 1;
      }
      delete d.containers[name].networks[net];
      return 0;
    }
    case 'network rm': {
      for (const n of positional) {
        if (!d.networks[n]) {
          err(`Error response from daemon: network ${n} not found\n`);
          return 1;
        }
        if (networkAttached(state, n).length) {
          err(`Error response from daemon: error while removing network: network ${n} has active endpoints\n`);
          return 1;
        }
        delete d.networks[n];
      }
      return 0;
    }
    case 'volume ls':
      for (const v of Object.values(d.volumes)) {
        if (matchesFilters(v, all(flags, '--filter', '-f'))) out(`${v.name}\n`);
      }
      return 0;
    case 'volume rm':
      for (const n of positional) {
        if (Object.values(d.containers).some((c) => c.mounts.some((m) => m.startsWith(`${n}:`)))) {
          err(`Error response from daemon: remove ${n}: volume is in use\n`);
          return 1;
        }
        delete d.volumes[n];
      }
      return 0;
    default:
      err(`fake docker: unsupported command: ${argv.join(' ')}\n`);
      return 2;
  }
}
