// Stand-in `talosctl`: `cluster create docker` makes node containers (through the docker state),
// writes a talosconfig and merges a kubeconfig into $KUBECONFIG, `cluster destroy` removes them,
// `kubeconfig` fetches the admin kubeconfig from the control plane, as the real v1.13.9 does.
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

export function kubeconfigFor(cluster, server) {
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: { server, 'certificate-authority-data': 'ZmFrZQ==' } }],
    users: [{ name: `admin@${cluster}`, user: { 'client-certificate-data': 'ZmFrZQ==', 'client-key-data': 'ZmFrZQ==' } }],
    contexts: [{ name: `admin@${cluster}`, context: { cluster, user: `admin@${cluster}`, namespace: 'default' } }],
    'current-context': `admin@${cluster}`,
  };
}

function writeKubeconfig(file, cluster, server) {
  const fresh = kubeconfigFor(cluster, server);
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
  fs.writeFileSync(file, YAML.stringify(doc), { mode: 0o600 });
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

/** Docker's answer when a container publishes a host port that a running container already holds. */
function portTaken(state, self, ports) {
  for (const p of ports) {
    for (const c of Object.values(state.docker.containers)) {
      if (c.name === self || c.state !== 'running') continue;
      const clash = c.ports.find((q) => q.hostPort === p.hostPort && (q.hostIp === p.hostIp || q.hostIp === '0.0.0.0' || p.hostIp === '0.0.0.0'));
      if (clash) return `driver failed programming external connectivity on endpoint ${self} (id-${self}): Bind for ${p.hostIp}:${p.hostPort} failed: port is already allocated`;
    }
  }
  return undefined;
}

/**
 * `talosctl cluster create docker`, in the order of talosctl v1.13.9 (pkg/provision/providers/docker
 * create.go, node.go, network.go; cmd/talosctl/cmd/mgmt/cluster/create): the state directory first,
 * then the image, the network, the control plane, the workers, state.yaml only once every node
 * exists, then the talosconfig, bootstrap and health checks, and the kubeconfig last.
 * Scenario `talosctl.createStopsAt`: "image-pull", "worker-start" or "health" stops it there, as a
 * registry outage, a node that does not start or a cluster that never gets healthy would. A host
 * port held by another container stops the control plane's start, as Docker does.
 */
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
  const stopAt = state.talosctl.createStopsAt;
  for (const p of all(flags, '--config-patch', '--config-patch-controlplanes', '--config-patch-workers')) {
    if (!loadPatch(p, err)) return 1;
  }
  const d = state.docker;

  const clusterState = path.join(one(flags, '--state') ?? path.join(os.homedir(), '.talos', 'clusters'), name);
  if (fs.existsSync(clusterState)) {
    err(`failed to initialize provisioner state: state directory "${clusterState}" already exists, is the cluster "${name}" already running? remove cluster state with talosctl cluster destroy\n`);
    return 1;
  }
  out(`creating state directory in "${clusterState}"\n`);
  fs.mkdirSync(clusterState, { recursive: true });
  // The first Docker call (the image list) goes to DOCKER_HOST, else /var/run/docker.sock.
  const unreachable = connectError(state, env.DOCKER_HOST || DEFAULT_DOCKER_HOST);
  if (unreachable) {
    err(`${unreachable}\n`);
    return 1;
  }

  const image = one(flags, '--image') ?? 'ghcr.io/siderolabs/talos:v1.13.9';
  if (!d.images[image]) {
    out(`downloading ${image}\n`);
    if (stopAt === 'image-pull') {
      err(`Error response from daemon: Get "https://ghcr.io/v2/": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)\n`);
      return 1;
    }
    d.images[image] = { id: `sha256:${'7a1e5'.padEnd(64, '0')}`, labels: {} };
  }

  out(`creating network ${name}\n`);
  const net = clusterNetwork(state, name);
  if (net && net.subnet !== subnet) {
    err(`unable to create or re-use a docker network: existing network has differing cidr: ${net.subnet} vs ${subnet}\n`);
    return 1;
  }
  if (!net) {
    const failure = createNetwork(state, { name, labels: { 'talos.owned': 'true', 'talos.cluster.name': name }, subnet });
    if (failure) {
      err(`unable to create or re-use a docker network: ${failure}\n`);
      return 1;
    }
  }

  const workers = Number(one(flags, '--workers') ?? 1);
  const k8s = one(flags, '--kubernetes-version') ?? '1.36.3';
  const prefix = subnet.split('.').slice(0, 3).join('.');
  // node.go: the Kubernetes and Talos APIs on ports talosctl picks; on Linux on 127.0.0.1, elsewhere
  // (Docker in a VM) on --host-ip.
  const apiIp = state.host.os === 'linux' ? '127.0.0.1' : hostIp;
  const exposed = (one(flags, '-p', '--exposed-ports') ?? '').split(',').filter(Boolean).map((p) => parsePort(p, hostIp));
  const roles = [
    ['controlplane', [{ name: `${name}-controlplane-1`, ports: [{ hostIp: apiIp, hostPort: TALOS_API_PORT, containerPort: 50000, proto: 'tcp' }, { hostIp: apiIp, hostPort: KUBERNETES_API_PORT, containerPort: 6443, proto: 'tcp' }, ...exposed] }]],
    ['worker', Array.from({ length: workers }, (_, i) => ({ name: `${name}-worker-${i + 1}`, ports: [] }))],
  ];
  let index = 0;
  for (const [type, nodes] of roles) {
    out(`creating ${type} nodes\n`);
    for (const n of nodes) {
      const ip = `${prefix}.${2 + index++}`;
      if (d.containers[n.name]) {
        err(`1 error occurred:\n\t* Error response from daemon: Conflict. The container name "/${n.name}" is already in use by container "id-${n.name}". You have to remove (or rename) that container to be able to reuse that name.\n\n`);
        return 1;
      }
      addContainer(state, {
        name: n.name,
        image,
        state: 'created',
        labels: { 'talos.owned': 'true', 'talos.cluster.name': name, 'talos.type': type },
        ports: n.ports,
        networks: { [name]: { ip } },
        meta: { kubernetesVersion: k8s },
      });
      const lastWorker = type === 'worker' && n === nodes.at(-1);
      const startError = portTaken(state, n.name, n.ports) ??
        (stopAt === 'worker-start' && lastWorker ? 'failed to create task for container: failed to create shim task: OCI runtime create failed: unable to start container process: unknown' : undefined);
      if (startError) {
        err(`1 error occurred:\n\t* Error response from daemon: ${startError}\n\n`);
        return 1;
      }
      d.containers[n.name].state = 'running';
    }
  }
  fs.writeFileSync(path.join(clusterState, 'state.yaml'), YAML.stringify({ ProvisionerName: 'docker', ClusterInfo: { ClusterName: name, KubernetesEndpoint: `https://127.0.0.1:${KUBERNETES_API_PORT}` } }));

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
  out('bootstrapping cluster\nwaiting for etcd to be healthy: ...\n');
  if (stopAt === 'health') {
    err('waiting for etcd to be healthy: ...\ncontext deadline exceeded\n');
    return 1;
  }
  // The kubeconfig the node serves names https://<control plane IP>:6443; create rewrites it to the published port.
  const kubeconfig = env.KUBECONFIG ?? path.join(os.homedir(), '.kube', 'config');
  writeKubeconfig(kubeconfig, name, `https://127.0.0.1:${KUBERNETES_API_PORT}`);
  err(`\nmerging kubeconfig into "${kubeconfig}"\n`);
  return 0;
}

/**
 * `talosctl cluster destroy` as in v1.13.9: it reads state.yaml first (so a create that stopped
 * before every node existed cannot be destroyed with it), then removes every container labelled
 * talos.owned=true and talos.cluster.name=<name>, then the network with those labels, then the whole
 * --state folder.
 */
function clusterDestroy(rest, ctx) {
  const { state, out, err } = ctx;
  const { flags } = parseArgs(rest, ['--name', '--state', '--provisioner']);
  const name = one(flags, '--name') ?? 'talos-default';
  const stateRoot = one(flags, '--state') ?? path.join(os.homedir(), '.talos', 'clusters');
  const clusterState = path.join(stateRoot, name);
  if (!fs.existsSync(clusterState)) {
    err(`failed to read cluster state: cluster "${name}" not found: stat ${clusterState}: no such file or directory\n`);
    return 1;
  }
  if (!fs.existsSync(path.join(clusterState, 'state.yaml'))) {
    err(`failed to read cluster state: open ${path.join(clusterState, 'state.yaml')}: no such file or directory\n`);
    return 1;
  }
  const d = state.docker;
  const ours = (labels) => labels['talos.cluster.name'] === name && labels['talos.owned'] === 'true';
  for (const [n, c] of Object.entries(d.containers)) {
    if (ours(c.labels)) {
      delete d.containers[n];
      out(`destroying node ${n}\n`);
    }
  }
  err(`destroying network ${name}\n`);
  for (const net of Object.values(d.networks).filter((x) => ours(x.labels))) {
    if (Object.values(d.containers).some((c) => net.name in c.networks)) {
      err(`1 error occurred:\n\t* Error response from daemon: error while removing network: network ${net.name} id net-${net.name} has active endpoints\n\n`);
      if (flags['--force'] || flags['-f']) fs.rmSync(stateRoot, { recursive: true, force: true });
      return 1;
    }
    delete d.networks[net.name];
  }
  // Destroy removes the cluster's StatePath, which Reflect sets to the --state folder itself, not
  // <state>/<name> (pkg/provision/providers/docker/reflect.go, destroy.go, result.go at v1.13.9).
  fs.rmSync(stateRoot, { recursive: true, force: true });
  // What the cluster held (its API objects and the Helm releases, whose records are Secrets in it) was
  // in the control plane's etcd, which went with its container.
  state.kubectl.objects = {};
  state.helm.releases = {};
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

/**
 * Scenario `talosctl.createWaitsFor` (a file path): `cluster create` boots its nodes until that file
 * exists (at most 20 s), without holding the state lock, so that calls made meanwhile (the cache
 * prefill) run while create runs; create then records in `talosctl.createSawFile` whether it appeared.
 */
export async function beforeLock(argv, state) {
  const file = state.talosctl.createWaitsFor;
  if (!file || !argv.join(' ').startsWith('cluster create docker')) return;
  const deadline = Date.now() + 20000;
  while (!fs.existsSync(file) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
}

export default function talosctl(argv, ctx) {
  const { state, out, err } = ctx;
  const joined = argv.join(' ');
  if (argv[0] === 'version' && argv.includes('--client')) {
    out(argv.includes('--short') ? `Client:\nTalos ${state.talosctl.version}\n` : `Client:\n\tTag:         ${state.talosctl.version}\n`);
    return 0;
  }
  if (joined.startsWith('cluster create docker')) {
    if (state.talosctl.createWaitsFor) state.talosctl.createSawFile = fs.existsSync(state.talosctl.createWaitsFor);
    return clusterCreate(argv.slice(3), ctx);
  }
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
    // As machined generates it (pkg/kubeconfig GenerateAdmin): the server is the cluster endpoint of
    // the machine config, the control plane's address on the Docker network, not a published port.
    writeKubeconfig(positional[0] ?? path.join(os.homedir(), '.kube', 'config'), name, `https://${cp.networks[name].ip}:6443`);
    return 0;
  }
  err(`fake talosctl: unsupported command: ${joined}\n`);
  return 2;
}
