// Stand-in `docker`: containers, networks and volumes kept in the scenario state.
import fs from 'node:fs';
import path from 'node:path';
import { all, one, parseArgs } from '../common.mjs';

const DOWN = 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n';

const portsText = (c) =>
  c.ports.map((p) => `${p.hostIp}:${p.hostPort}->${p.containerPort}/${p.proto}`).join(', ');

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
  const { state, out, err } = ctx;
  const d = state.docker;
  if (!d.running && argv[0] !== '--version') {
    err(DOWN);
    return 1;
  }
  const [cmd, ...rest] = argv;
  const sub = cmd === 'network' || cmd === 'volume' || cmd === 'image' ? `${cmd} ${rest.shift()}` : cmd;
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
        ports: all(flags, '-p', '--publish').map((p) => parsePort(p)),
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
    case 'network ls':
      for (const n of Object.values(d.networks)) {
        if (!matchesFilters(n, all(flags, '--filter', '-f'))) continue;
        out(one(flags, '--format') === '{{.Name}}' ? `${n.name}\n` : `${JSON.stringify({ Name: n.name, ID: `net-${n.name}`, Labels: labelsText(n.labels) })}\n`);
      }
      return 0;
    case 'network inspect': {
      const n = d.networks[positional[0]];
      if (!n) {
        out('[]\n');
        err(`Error response from daemon: network ${positional[0]} not found\n`);
        return 1;
      }
      const containers = Object.fromEntries(
        networkAttached(state, n.name).map((c) => [`id-${c.name}`, { Name: c.name, IPv4Address: `${c.networks[n.name].ip}/24` }]),
      );
      out(`${JSON.stringify([{ Name: n.name, Labels: n.labels, IPAM: { Config: [{ Subnet: n.subnet }] }, Containers: containers }])}\n`);
      return 0;
    }
    case 'network create': {
      const name = positional[0];
      if (d.networks[name]) {
        err(`Error response from daemon: network with name ${name} already exists\n`);
        return 1;
      }
      const labels = Object.fromEntries(all(flags, '--label').map((l) => l.split(/=(.*)/s).slice(0, 2)));
      d.networks[name] = { name, labels, subnet: one(flags, '--subnet') ?? '172.20.0.0/16' };
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
