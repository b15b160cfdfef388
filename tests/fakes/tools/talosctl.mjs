// Stand-in `talosctl`: `cluster create docker` makes node containers (through the docker state),
// writes a talosconfig and merges a kubeconfig into $KUBECONFIG, as the real one does.
// Its Docker client is talosctl v1.13.9's: client.New(client.FromEnv) in
// pkg/provision/providers/docker/docker.go, so DOCKER_HOST or unix:///var/run/docker.sock, never a
// docker CLI context.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { all, one, parseArgs } from '../common.mjs';
import { DEFAULT_DOCKER_HOST, addContainer, connectError, createNetwork, parsePort } from './docker.mjs';

const TALOS_API_PORT = 40124;
const KUBERNETES_API_PORT = 40123;

/** The network talosctl reuses: found by its labels, not by name (pkg/provision/providers/docker/network.go). */
const clusterNetwork = (state, name) =>
  Object.values(state.docker.networks).find((n) => n.labels['talos.owned'] === 'true' && n.labels['talos.cluster.name'] === name);

export function kubeconfigFor(cluster, server = 'https://127.0.0.1:40123') {
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: { server, 'certificate-authority-data': 'ZmFrZQ==' } }],
    users: [{ name: `admin@${cluster}`, user: { 'client-certificate-data': 'ZmFrZQ==', 'client-key-data': 'ZmFrZQ==' } }],
    contexts: [{ name: `admin@${cluster}`, context: { cluster, user: `admin@${cluster}`, namespace: 'default' } }],
    'current-context': `admin@${cluster}`,
  };
}

function writeKubeconfig(file, cluster) {
  const fresh = kubeconfigFor(cluster);
  let doc = fresh;
  if (fs.existsSync(file)) {
    const old = YAML.parse(fs.readFileSync(file, 'utf8')) ?? {};
    const merge = (list, add) => [...(list ?? []).filter((e) => e.name !== add[0].name), ...add];
    doc = {
      ...old,
      clusters: merge(old.clusters, fresh.clusters),
      users: merge(old.users, fresh.users),
      contexts: merge(old.contexts, fresh.contexts),
      'current-context': fresh['current-context'],
    };
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, YAML.stringify(doc));
}

function loadPatch(ref, err) {
  if (!ref.startsWith('@')) return true;
  const file = ref.slice(1);
  try {
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
      if (doc.errors.length) throw doc.errors[0];
    }
    return true;
  } catch (e) {
    err(`error: failed to load patch "${ref}": ${e.message}\n`);
    return false;
  }
}

function clusterCreate(rest, ctx) {
  const { state, out, err, env } = ctx;
  const { flags } = parseArgs(rest, [
    '--name', '--state', '--talosconfig-destination', '--workers', '--image', '--kubernetes-version', '--subnet',
    '--host-ip', '-p', '--exposed-ports', '--config-patch', '--config-patch-controlplanes', '--config-patch-workers',
    '--cpus-controlplanes', '--memory-controlplanes', '--cpus-workers', '--memory-workers', '--mount',
  ]);
  const name = one(flags, '--name') ?? 'talos-default';
  const subnet = one(flags, '--subnet') ?? '10.5.0.0/24';
  const hostIp = one(flags, '--host-ip') ?? '0.0.0.0';
  for (const p of all(flags, '--config-patch', '--config-patch-controlplanes', '--config-patch-workers')) {
    if (!loadPatch(p, err)) return 1;
  }
  // Provisioner.Create: the state directory first, then the first Docker call (the image list).
  const stateDir = path.join(one(flags, '--state') ?? path.join(os.homedir(), '.talos', 'clusters'), name);
  out(`creating state directory in "${stateDir}"\n`);
  fs.mkdirSync(stateDir, { recursive: true });
  const unreachable = connectError(state, env.DOCKER_HOST || DEFAULT_DOCKER_HOST);
  if (unreachable) {
    err(`${unreachable}\n`);
    return 1;
  }
  const d = state.docker;
  const net = clusterNetwork(state, name);
  if (net && net.subnet !== subnet) {
    err(`unable to create or re-use a docker network: existing network has differing cidr: ${net.subnet} vs ${subnet}\n`);
    return 1;
  }
  out(`creating network ${name}\n`);
  if (!net) {
    const failure = createNetwork(state, { name, labels: { 'talos.owned': 'true', 'talos.cluster.name': name }, subnet });
    if (failure) {
      err(`unable to create or re-use a docker network: ${failure}\n`);
      return 1;
    }
  }
  const workers = Number(one(flags, '--workers') ?? 1);
  const image = one(flags, '--image') ?? 'ghcr.io/siderolabs/talos:v1.13.9';
  const k8s = one(flags, '--kubernetes-version') ?? '1.36.3';
  const prefix = subnet.split('.').slice(0, 3).join('.');
  const exposed = (one(flags, '-p', '--exposed-ports') ?? '').split(',').filter(Boolean).map((p) => parsePort(p, hostIp));
  // node.go: on Linux the API ports are published on 127.0.0.1; elsewhere (Docker in a VM) on --host-ip.
  const apiIp = state.host.os === 'linux' ? '127.0.0.1' : hostIp;
  const apiPorts = [
    { hostIp: apiIp, hostPort: KUBERNETES_API_PORT, containerPort: 6443, proto: 'tcp' },
    { hostIp: apiIp, hostPort: TALOS_API_PORT, containerPort: 50000, proto: 'tcp' },
  ];
  const nodes = [
    { name: `${name}-controlplane-1`, type: 'controlplane', ports: [...apiPorts, ...exposed] },
    ...Array.from({ length: workers }, (_, i) => ({ name: `${name}-worker-${i + 1}`, type: 'worker', ports: [] })),
  ];
  for (const [i, n] of nodes.entries()) {
    if (d.containers[n.name]) {
      err(`error: Error response from daemon: Conflict. The container name "/${n.name}" is already in use\n`);
      return 1;
    }
    addContainer(state, {
      name: n.name,
      image,
      labels: { 'talos.owned': 'true', 'talos.cluster.name': name, 'talos.type': n.type },
      ports: n.ports,
      networks: { [name]: { ip: `${prefix}.${i + 2}` } },
      meta: { kubernetesVersion: k8s },
    });
    out(`creating node ${n.name}\n`);
  }
  fs.writeFileSync(path.join(stateDir, 'state.yaml'), YAML.stringify({ name, provisioner: 'docker' }));
  const talosconfig = one(flags, '--talosconfig-destination') ?? path.join(os.homedir(), '.talos', 'config');
  fs.mkdirSync(path.dirname(talosconfig), { recursive: true });
  fs.writeFileSync(
    talosconfig,
    YAML.stringify({ context: name, contexts: { [name]: { endpoints: [`127.0.0.1:${TALOS_API_PORT}`], nodes: [`${prefix}.2`] } } }),
  );
  // The talosconfig (and kubeconfig) always point at 127.0.0.1; a port published only on another
  // address is not there, so bootstrapping fails (the outcome of the real run; its text is abridged).
  if (!['127.0.0.1', '0.0.0.0'].includes(apiIp)) {
    err(`bootstrap error: rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:${TALOS_API_PORT}: connect: connection refused"\n`);
    return 1;
  }
  const kubeconfig = env.KUBECONFIG ?? path.join(os.homedir(), '.kube', 'config');
  writeKubeconfig(kubeconfig, name);
  out(`waiting for the cluster to be healthy\nmerging kubeconfig into "${kubeconfig}"\n`);
  return 0;
}

/** `cluster show`: what Reflect finds in Docker by talosctl's labels (pkg/provision/providers/docker/reflect.go). */
function clusterShow(rest, ctx) {
  const { state, out } = ctx;
  const { flags } = parseArgs(rest, ['--name', '--state', '--provisioner']);
  const name = one(flags, '--name') ?? 'talos-default';
  const net = clusterNetwork(state, name);
  const nodes = Object.values(state.docker.containers).filter((c) => c.labels['talos.owned'] === 'true' && c.labels['talos.cluster.name'] === name);
  const api = nodes.flatMap((c) => c.ports).find((p) => p.containerPort === 6443);
  out(
    `PROVISIONER           docker\nNAME                  ${name}\nNETWORK NAME          ${net?.name ?? ''}\nNETWORK CIDR          ${net?.subnet ?? ''}\n` +
      `KUBERNETES ENDPOINT   ${api ? `https://127.0.0.1:${api.hostPort}` : ''}\n\nNODES:\n\nNAME   TYPE   IP\n` +
      nodes.map((c) => `${c.name}   ${c.labels['talos.type']}   ${net ? (c.networks[net.name]?.ip ?? '') : ''}\n`).join(''),
  );
  return 0;
}

function clusterDestroy(rest, ctx) {
  const { state, out, err } = ctx;
  const { flags } = parseArgs(rest, ['--name', '--state', '--provisioner']);
  const name = one(flags, '--name') ?? 'talos-default';
  const d = state.docker;
  for (const [n, c] of Object.entries(d.containers)) {
    if (c.labels['talos.cluster.name'] === name && c.labels['talos.owned'] === 'true') {
      delete d.containers[n];
      out(`destroying node ${n}\n`);
    }
  }
  if (d.networks[name]) {
    const attached = Object.values(d.containers).filter((c) => name in c.networks);
    if (attached.length) {
      err(`error: error destroying network: network ${name} has active endpoints\n`);
      return 1;
    }
    delete d.networks[name];
    out(`destroying network ${name}\n`);
  }
  const stateDir = one(flags, '--state') ?? path.join(os.homedir(), '.talos', 'clusters');
  fs.rmSync(path.join(stateDir, name), { recursive: true, force: true });
  return 0;
}

export default function talosctl(argv, ctx) {
  const { state, out, err } = ctx;
  const joined = argv.join(' ');
  if (argv[0] === 'version' && argv.includes('--client')) {
    out(argv.includes('--short') ? `Client:\nTalos ${state.talosctl.version}\n` : `Client:\n\tTag:         ${state.talosctl.version}\n`);
    return 0;
  }
  if (joined.startsWith('cluster create docker')) return clusterCreate(argv.slice(3), ctx);
  if (argv[0] === 'cluster' && (argv[1] === 'destroy' || argv[1] === 'show')) {
    const unreachable = connectError(state, ctx.env.DOCKER_HOST || DEFAULT_DOCKER_HOST);
    if (unreachable) {
      err(`${unreachable}\n`);
      return 1;
    }
    return argv[1] === 'show' ? clusterShow(argv.slice(2), ctx) : clusterDestroy(argv.slice(2), ctx);
  }
  if (argv[0] === 'kubeconfig') {
    const { flags, positional } = parseArgs(argv.slice(1), ['--talosconfig', '--nodes', '-n', '--endpoints', '-e', '--force-context-name']);
    const talosconfig = one(flags, '--talosconfig');
    if (!talosconfig || !fs.existsSync(talosconfig)) {
      err('error: failed to open config file: no such file or directory\n');
      return 1;
    }
    const name = YAML.parse(fs.readFileSync(talosconfig, 'utf8')).context;
    const cp = state.docker.containers[`${name}-controlplane-1`];
    if (!cp || cp.state !== 'running') {
      err('error: rpc error: code = Unavailable desc = connection refused\n');
      return 1;
    }
    writeKubeconfig(positional[0] ?? path.join(os.homedir(), '.kube', 'config'), name);
    return 0;
  }
  err(`fake talosctl: unsupported command: ${joined}\n`);
  return 2;
}
