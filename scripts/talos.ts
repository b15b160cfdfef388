// Phase 1: a Talos Kubernetes cluster in Docker (1 control plane + WORKERS workers), with a local
// image registry and pull-through caches for the nodes. The caches also publish their port on
// 127.0.0.1 (a port Docker picks); while `talosctl cluster create` boots the nodes, scripts/images.ts
// --prefill fills them in a process of its own with every image the platform runs (a failure there
// is one line, never a failed phase; once the nodes are Ready it gets PREFILL_GRACE_SECONDS more).
//
//   npx tsx scripts/talos.ts               preflight, then create or check the cluster (task talos)
//   npx tsx scripts/talos.ts --preflight   only the preflight checks (task preflight)
//   npx tsx scripts/talos.ts --registry    only the local registry and the pull-through caches,
//                                          after the Docker checks they need (task registry; the
//                                          deploy graph starts with it, so the sample app's image is
//                                          pushed while the nodes boot); idempotent
//   npx tsx scripts/talos.ts --destroy [--yes] [--clean]
//                                          remove the cluster (also one whose creation stopped
//                                          part-way), its contexts and the state the phases wrote
//                                          (never anything else in STATE_DIR, and never the hosts
//                                          backups); --clean also the registry, the caches and their
//                                          volumes, and the certificates (task destroy / task clean)
//   npx tsx scripts/talos.ts --kubeconfig  add the cluster's context to ~/.kube/config
//                                          (task kubeconfig; KUBECONFIG_TARGET overrides the path)
//   npx tsx scripts/talos.ts --target [--yes]
//                                          print the cluster of the run (task target, the root of
//                                          the deploy graph); with CLUSTER=existing check that it
//                                          answers and confirm a remote-looking context once for
//                                          the run (lib confirmTarget)
//   --verbose                              print every command
//
// With CLUSTER=existing (README "Use your own cluster") the cluster is the user's: create, --registry,
// --preflight and --kubeconfig say "skipped: CLUSTER=existing" and call no tool; --destroy [--clean]
// lists what the platform installed there (releases and CRDs recorded in STATE_DIR/installed.log,
// namespaces labelled talos-local.platform/owner=<CLUSTER_NAME>, the objects it applied with the
// label app.kubernetes.io/part-of=talos-local-observability into namespaces that are not ours, e.g.
// a monitoring the user had before: Ingresses, Secret platform-tls with our key, IngressRoutes;
// local-path when storage installed it), asks unless --yes, removes only that and the state; never
// the cluster, never Docker.
//
// Reads .env keys: CLUSTER_NAME TALOS_VERSION KUBERNETES_VERSION WORKERS CONTROLPLANE_CPUS
//   CONTROLPLANE_MEMORY WORKER_CPUS WORKER_MEMORY CLUSTER_SUBNET HOST_IP HTTP_PORT HTTPS_PORT
//   REGISTRY_PORT PULL_THROUGH_CACHE STATE_DIR (and PROMETHEUS_STORAGE, LOKI_STORAGE for the disk
//   estimate), CLUSTER, KUBECONFIG, KUBE_CONTEXT (the target). The docker CLI honours DOCKER_HOST
//   and DOCKER_CONTEXT from the environment as usual.
// Tools: docker, talosctl, kubectl (helm only for the preflight version check and, with
//   CLUSTER=existing, destroy's list and uninstall; the prefill process
//   calls helm template and docker, see scripts/images.ts). talosctl reads no
//   docker context, only DOCKER_HOST: it is given the endpoint the docker CLI uses, so both talk to
//   the same Docker (Docker Desktop, Colima, OrbStack, a plain engine).
//
// Under `task deploy` (DEPLOY_RUN_ID) the registry phase records that Docker passed its checks and
// that the subnet is free and the network exists, and talos reuses both instead of asking Docker
// again; talos records that the API answered (the nodes read) for the later phases (lib's run facts).
// The tool versions are asked once per binary (lib.toolVersionOutput).
//
// It reads the current state first (containers, network, kubeconfig, nodes), compares it with what
// .env asks for, and acts only on the difference: a healthy cluster is reported and left alone;
// stopped nodes are started; a half-created or differently-shaped cluster is explained with the
// command that fixes it. Everything it generates stays in STATE_DIR: talosconfig, kubeconfig
// (pointed at the API port Docker publishes, also when fetched again), talos/patches/*.yaml (the
// config patches), talos/clusters (talosctl's own state) and talos/docker-endpoint (the Docker it
// was created through: when the docker CLI later points elsewhere, create and destroy stop rather
// than drop the credentials of a cluster that may still run there).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline/promises';
import YAML from 'yaml';
import {
  CommandError,
  type Config,
  INGRESS_NODE_PORTS,
  NAMESPACE_OWNER_LABEL,
  PART_OF_LABEL,
  type OwnedOnCluster,
  ownedOnCluster,
  clusterTarget,
  crdNames,
  deployedReleases,
  helm,
  installedRecord,
  requireCluster,
  targetLine,
  PINNED,
  PROJECT_DIR,
  RUN_FACTS,
  STATE_DIR_MARKER,
  claimStateDir,
  STATE_ENTRIES,
  UserError,
  hasTool,
  ipv4Number,
  isMain,
  kubeconfigPath,
  kubectl,
  quantityMiB,
  note,
  recordRunFact,
  run,
  runFact,
  check,
  runPhase,
  statePath,
  subnetRange,
  step,
  toolVersionOutput,
  warn,
  writeFileAtomic,
} from './lib.ts';

// ---------------------------------------------------------------------------------------------
// Desired state (pure)
// ---------------------------------------------------------------------------------------------

const ipv4Text = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/**
 * The address `offset` places after the network address of CLUSTER_SUBNET (the cluster's Docker
 * network, which we create with talosctl's labels so the caches can join it first). talosctl counts
 * the same way (NthIPInNetwork): +1 is the gateway, +2 the control plane, then the workers.
 */
export const subnetAddress = (cfg: Config, offset: number) => ipv4Text(subnetRange(cfg.CLUSTER_SUBNET)[0] + offset);
export const controlplaneIp = (cfg: Config) => subnetAddress(cfg, 2);
/** The local registry's address on the cluster network; the caches follow it (offsets 249–254 fit a /24). */
export const registryIp = (cfg: Config) => subnetAddress(cfg, 249);
/** Label on our own containers (registry, caches) and their volumes. */
export const OWNER_LABEL = 'talos-local.cluster';
const ROLE_LABEL = 'talos-local.role';

/** Upstream registries behind pull-through caches, each at a fixed offset in CLUSTER_SUBNET. */
export const UPSTREAMS = [
  { registry: 'docker.io', remote: 'https://registry-1.docker.io', offset: 251 },
  { registry: 'registry.k8s.io', remote: 'https://registry.k8s.io', offset: 252 },
  { registry: 'ghcr.io', remote: 'https://ghcr.io', offset: 253 },
  { registry: 'quay.io', remote: 'https://quay.io', offset: 254 },
  { registry: 'gcr.io', remote: 'https://gcr.io', offset: 250 },
] as const;

export interface HelperContainer {
  name: string;
  role: 'registry' | 'cache';
  ip: string;
  volume: string;
  /**
   * For the registry: HOST_IP:REGISTRY_PORT (and 127.0.0.1, where `docker push localhost:…` goes) on port 5000.
   * For a cache: 127.0.0.1 at a port Docker picks, where the prefill (scripts/images.ts) reaches it on every host.
   */
  publish: string[];
  /** For a cache: the upstream it proxies. */
  remote?: string;
}

/** A cache's port 5000 on the host's loopback, at an ephemeral port (read back from `docker ps`). */
export const CACHE_PUBLISH = '127.0.0.1::5000';

/** Whether a published port ("127.0.0.1:49153:5000") is the one asked for ("127.0.0.1::5000": any host port). */
export const publishMatches = (want: string, published: string) => {
  const [ip, hostPort, containerPort] = want.split(':');
  const [gotIp, gotHostPort, gotContainerPort] = published.split(':');
  return ip === gotIp && containerPort === gotContainerPort && (hostPort === '' || hostPort === gotHostPort);
};

/** The registry, and the caches when PULL_THROUGH_CACHE is on. */
export function helperContainers(cfg: Config): HelperContainer[] {
  const registry: HelperContainer = {
    name: `${cfg.CLUSTER_NAME}-registry`,
    role: 'registry',
    ip: registryIp(cfg),
    volume: `${cfg.CLUSTER_NAME}-registry`,
    publish: [...new Set([cfg.HOST_IP, ...(cfg.HOST_IP === '0.0.0.0' ? [] : ['127.0.0.1'])])].map((ip) => `${ip}:${cfg.REGISTRY_PORT}:5000`),
  };
  const caches: HelperContainer[] = UPSTREAMS.map((u) => ({
    name: `${cfg.CLUSTER_NAME}-cache-${u.registry.replace(/\./g, '-')}`,
    role: 'cache',
    ip: subnetAddress(cfg, u.offset),
    volume: `${cfg.CLUSTER_NAME}-cache-${u.registry.replace(/\./g, '-')}`,
    publish: [CACHE_PUBLISH],
    remote: u.remote,
  }));
  return cfg.PULL_THROUGH_CACHE ? [registry, ...caches] : [registry];
}

export function dockerRunArgs(cfg: Config, c: HelperContainer): string[] {
  return [
    'run', '--detach',
    '--name', c.name,
    '--restart', 'unless-stopped',
    '--label', `${OWNER_LABEL}=${cfg.CLUSTER_NAME}`,
    '--label', `${ROLE_LABEL}=${c.role}`,
    '--volume', `${c.volume}:/var/lib/registry`,
    ...c.publish.flatMap((p) => ['--publish', p]),
    ...(c.remote ? ['--env', `REGISTRY_PROXY_REMOTEURL=${c.remote}`] : []),
    PINNED.registryImage,
  ];
}

/** Talos machine-config patches, by file name. */
export function talosPatches(cfg: Config): Record<string, unknown[]> {
  const mirror = (name: string, ip: string, skipFallback?: true) => ({
    apiVersion: 'v1alpha1',
    kind: 'RegistryMirrorConfig',
    name,
    endpoints: [{ url: `http://${ip}:5000` }],
    ...(skipFallback && { skipFallback }),
  });
  return {
    // Nodes pull localhost:<REGISTRY_PORT>/x from the local registry, and upstream images through the caches.
    // The local registry has no fallback: "localhost" on a node is the node itself, so a stopped registry
    // should fail the pull with the mirror's error, not "connection refused" from the node's own localhost.
    // The caches fall back to the real registries when they fail.
    'registry-mirrors.yaml': [
      mirror(`localhost:${cfg.REGISTRY_PORT}`, registryIp(cfg), true),
      ...(cfg.PULL_THROUGH_CACHE ? UPSTREAMS.map((u) => mirror(u.registry, subnetAddress(cfg, u.offset))) : []),
    ],
    // local-path-provisioner keeps volumes here; kubelet must see the host path (Talos docs).
    'local-path-mount.yaml': [
      {
        machine: {
          kubelet: {
            extraMounts: [
              {
                destination: '/var/local-path-provisioner',
                type: 'bind',
                source: '/var/local-path-provisioner',
                options: ['bind', 'rshared', 'rw'],
              },
            ],
          },
        },
      },
    ],
    // Control-plane components listen on localhost by default; bind their metrics so Alloy can scrape them.
    'controlplane-metrics.yaml': [
      {
        cluster: {
          controllerManager: { extraArgs: { 'bind-address': '0.0.0.0' } },
          scheduler: { extraArgs: { 'bind-address': '0.0.0.0' } },
          etcd: { extraArgs: { 'listen-metrics-urls': 'http://0.0.0.0:2381' } },
          proxy: { extraArgs: { 'metrics-bind-address': '0.0.0.0:10249' } },
        },
      },
    ],
  };
}

export const patchText = (docs: unknown[]) => docs.map((d) => YAML.stringify(d)).join('---\n');

export const talosImage = (cfg: Config) => `ghcr.io/siderolabs/talos:${cfg.TALOS_VERSION}`;

/**
 * Where talosctl publishes the Talos and Kubernetes API ports. On Linux it always uses 127.0.0.1;
 * elsewhere (Docker in a VM) it uses --host-ip, while talosconfig and kubeconfig always point at
 * 127.0.0.1 (pkg/provision/providers/docker/node.go and docker.go, talosctl v1.13.9). So --host-ip
 * is always 127.0.0.1: another address breaks the create, 0.0.0.0 would put the APIs on the LAN.
 */
const API_HOST_IP = '127.0.0.1';

/** Host ports the control-plane container publishes, as talosctl's -p wants them: HOST_IP in each. */
export const exposedPorts = (cfg: Config) =>
  `${cfg.HOST_IP}:${cfg.HTTP_PORT}:${INGRESS_NODE_PORTS.http}/tcp,${cfg.HOST_IP}:${cfg.HTTPS_PORT}:${INGRESS_NODE_PORTS.https}/tcp`;

export function clusterCreateArgs(cfg: Config, patchDir: string): string[] {
  return [
    'cluster', 'create', 'docker',
    '--name', cfg.CLUSTER_NAME,
    '--state', statePath(cfg, 'talos', 'clusters'),
    '--talosconfig-destination', statePath(cfg, 'talosconfig'),
    '--image', talosImage(cfg),
    '--kubernetes-version', cfg.KUBERNETES_VERSION,
    '--workers', String(cfg.WORKERS),
    '--cpus-controlplanes', String(cfg.CONTROLPLANE_CPUS),
    '--memory-controlplanes', `${cfg.CONTROLPLANE_MEMORY}MiB`,
    '--cpus-workers', String(cfg.WORKER_CPUS),
    '--memory-workers', `${cfg.WORKER_MEMORY}MiB`,
    '--subnet', cfg.CLUSTER_SUBNET,
    '--host-ip', API_HOST_IP,
    '--exposed-ports', exposedPorts(cfg),
    '--config-patch', `@${path.join(patchDir, 'registry-mirrors.yaml')}`,
    '--config-patch', `@${path.join(patchDir, 'local-path-mount.yaml')}`,
    '--config-patch-controlplanes', `@${path.join(patchDir, 'controlplane-metrics.yaml')}`,
  ];
}

// ---------------------------------------------------------------------------------------------
// Preflight (pure parts)
// ---------------------------------------------------------------------------------------------

export const parseVersion = (text: string) => {
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(text);
  return m ? { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text: `v${m[1]}.${m[2]}.${m[3]}` } : undefined;
};

/** A problem with a tool's version, or undefined when it fits. */
export function versionProblem(tool: 'talosctl' | 'helm' | 'kubectl', output: string, cfg: Config): string | undefined {
  const got = parseVersion(output);
  if (!got) return `could not read the ${tool} version from: ${output.trim() || '(no output)'}`;
  if (tool === 'talosctl') {
    const want = parseVersion(cfg.TALOS_VERSION)!;
    if (got.major !== want.major || got.minor !== want.minor) {
      return `talosctl is ${got.text} but TALOS_VERSION=${cfg.TALOS_VERSION} needs talosctl v${want.major}.${want.minor}.x. ` +
        `Install it: ${installHint('talosctl', process.platform, cfg)}`;
    }
    return undefined;
  }
  if (tool === 'kubectl') {
    const min = parseVersion(PINNED.kubectlMinimum)!;
    if (got.major === 1 && got.minor < min.minor) {
      return `kubectl is ${got.text}; ${min.major}.${min.minor}+ is needed. Install it: ${installHint('kubectl', process.platform, cfg)}`;
    }
    return undefined;
  }
  const min = parseVersion(PINNED.helmMinimum)!;
  if (got.major < 3 || (got.major === 3 && got.minor < min.minor) || got.major > 4) {
    return `helm is ${got.text}; 3.${min.minor}+ or 4.x is needed. Install it: ${installHint('helm', process.platform, cfg)}`;
  }
  return undefined;
}

export function installHint(tool: string, platform: NodeJS.Platform, cfg: Config): string {
  const mac = platform === 'darwin';
  const arch = os.arch() === 'arm64' ? 'arm64' : 'amd64';
  switch (tool) {
    case 'talosctl':
      return `curl -fsSLo talosctl https://github.com/siderolabs/talos/releases/download/${cfg.TALOS_VERSION}/talosctl-${mac ? 'darwin' : 'linux'}-${arch} && chmod +x talosctl && sudo mv talosctl /usr/local/bin/`;
    case 'kubectl':
      return mac ? 'brew install kubectl' : 'see https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/';
    case 'helm':
      return mac ? 'brew install helm' : 'curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash';
    case 'docker':
      return mac ? 'install Docker Desktop (or OrbStack/Colima) and start it' : 'install Docker Engine: https://docs.docker.com/engine/install/';
    default:
      return '';
  }
}


export interface Resources {
  memoryMiB: number;
  cpus: number;
  diskMiB: number;
}

/**
 * The memory model, in MiB. CONTROLPLANE_MEMORY and WORKER_MEMORY become cgroup limits of the node
 * containers (talosctl sets HostConfig.Resources.Memory): ceilings a node may grow to, not memory
 * it takes. So what must fit into Docker is what the cluster is expected to use, not the sum of the
 * limits: each part below is an estimate of its use, with headroom.
 */
export const EXPECTED_MEMORY_MIB = {
  /** Talos services, etcd, kube-apiserver, controller-manager, scheduler, kubelet, Flannel, CoreDNS. */
  controlplane: 1536,
  /** Talos services, containerd, kubelet, Flannel, kube-proxy. */
  worker: 512,
  /**
   * The platform's pods: their memory requests add up to ~2.4GiB with 2 workers (2490MiB as
   * rendered, Tempo and the OTLP receiver included, see README Phase 3), with headroom for use above them.
   */
  workloads: 3072,
  /** The local registry and the pull-through caches (registry:2, a few tens of MiB each). */
  helpers: 256,
  /** Where Docker runs in a VM: the VM's kernel and Docker itself, out of the VM's memory. */
  dockerVm: 512,
} as const;

/** What the cluster needs: its expected memory use; the largest node's CPUs; images, volumes and PVCs on disk. */
export function requiredResources(cfg: Config): Resources {
  const m = EXPECTED_MEMORY_MIB;
  return {
    memoryMiB: m.controlplane + cfg.WORKERS * m.worker + m.workloads + m.helpers,
    cpus: Math.max(cfg.CONTROLPLANE_CPUS, cfg.WORKER_CPUS),
    diskMiB: 10 * 1024 + quantityMiB(cfg.PROMETHEUS_STORAGE) + quantityMiB(cfg.LOKI_STORAGE) + quantityMiB(cfg.TEMPO_STORAGE),
  };
}

/**
 * Memory Docker can give the cluster. Where Docker runs on this machine (Linux, same hostname), the
 * nodes share its memory, so what is available now counts; in a VM (Docker Desktop, Colima,
 * OrbStack), the VM's memory less what the VM itself needs.
 */
export function dockerMemoryMiB(dockerMemTotalMiB: number, thisMachine: { availableMiB: number } | undefined): number {
  return thisMachine ? Math.min(dockerMemTotalMiB, thisMachine.availableMiB) : dockerMemTotalMiB - EXPECTED_MEMORY_MIB.dockerVm;
}

const gib = (mib: number) => `${(mib / 1024).toFixed(1)}GiB`;

/** A worker's memory limit below its expected share (its own services and its part of the pods), or undefined. */
export function workerMemoryProblem(cfg: Config): string | undefined {
  const share = EXPECTED_MEMORY_MIB.worker + Math.ceil(EXPECTED_MEMORY_MIB.workloads / cfg.WORKERS);
  if (cfg.WORKER_MEMORY >= share) return undefined;
  return `WORKER_MEMORY=${gib(cfg.WORKER_MEMORY)} is less than a worker is expected to use with WORKERS=${cfg.WORKERS} ` +
    `(${gib(share)}: its services and its share of the platform's pods), so pods would be killed for lack of memory. ` +
    `Raise WORKER_MEMORY or WORKERS in .env.`;
}

/** Problems when what is available (undefined: unknown) is short of what is required. */
export function resourceProblems(need: Resources, have: Partial<Resources>): string[] {
  const problems: string[] = [];
  if (have.memoryMiB !== undefined && have.memoryMiB < need.memoryMiB) {
    const m = EXPECTED_MEMORY_MIB;
    problems.push(
      `Docker has ${gib(have.memoryMiB)} of memory available but the cluster is expected to use ${gib(need.memoryMiB)} ` +
        `(${gib(m.controlplane)} for the control plane, ${gib(m.worker)} per worker, ${gib(m.workloads)} for the platform's pods, ` +
        `${gib(m.helpers)} for registry and caches; node memory sizes are limits, not reservations). ` +
        `Give Docker more memory (Docker Desktop: Settings → Resources; Colima: colima start --memory 8), close other programs, or lower WORKERS in .env.`,
    );
  }
  if (have.cpus !== undefined && have.cpus < need.cpus) {
    problems.push(
      `Docker has ${have.cpus} CPUs but a node asks for ${need.cpus}. Lower CONTROLPLANE_CPUS/WORKER_CPUS in .env or give Docker more CPUs.`,
    );
  }
  if (have.diskMiB !== undefined && have.diskMiB < need.diskMiB) {
    problems.push(
      `only ${gib(have.diskMiB)} of disk is free where Docker keeps its data but ${gib(need.diskMiB)} is needed ` +
        `(10GiB for images and nodes + PROMETHEUS_STORAGE + LOKI_STORAGE). Free some space (docker system prune) or lower the sizes in .env.`,
    );
  }
  return problems;
}

/** What the docker CLI talks to: `docker context inspect` of the current context (DOCKER_HOST makes it "default"). */
export interface DockerEndpoint {
  context: string;
  host: string;
}

/**
 * Why Docker cannot be used, from the docker CLI's error (moby client v0.4+ words, and the older
 * "Got permission denied …"), with what to do. The user's DOCKER_HOST wins over contexts, so it is named.
 */
export function dockerUnreachable(error: string, where: { host?: string; platform: NodeJS.Platform; dockerHostEnv?: string }): string {
  const detail = error.trim() || '(no output)';
  const envNote = where.dockerHostEnv ? ` DOCKER_HOST=${where.dockerHostEnv} is set in your environment and wins over docker contexts: correct or unset it.` : '';
  const mac = where.platform === 'darwin';
  if (/permission denied/i.test(detail)) {
    return `Docker runs, but this user may not use its socket ${where.host ?? ''} (${detail}). Starting Docker does not help: ` +
      'add yourself to the docker group (`sudo usermod -aG docker $USER`, then log out and in, or `newgrp docker`), ' +
      `or point DOCKER_HOST at a Docker socket you may use.${envNote}`;
  }
  if (/context not found|unable to resolve docker endpoint/i.test(detail)) {
    return `the docker CLI cannot find its context (${detail}). List them with \`docker context ls\` and pick one with ` +
      `\`docker context use <name>\`, or unset DOCKER_CONTEXT if it names a context that does not exist.`;
  }
  if (/no such file or directory|check if the path is correct/i.test(detail)) {
    return `nothing listens at ${where.host ?? 'the Docker socket'} (${detail}). ` +
      (mac
        ? 'Start Docker Desktop, Colima (`colima start`) or OrbStack; if one runs already, select its context: `docker context ls`, `docker context use <name>`.'
        : 'Start Docker (`sudo systemctl start docker`), or, for Docker Desktop, select its context: `docker context ls`, `docker context use <name>`.') +
      envNote;
  }
  return `Docker is not running or not reachable (docker info: ${detail}). ` +
    `Start it: ${mac ? 'open Docker Desktop (or `colima start`, or OrbStack)' : 'sudo systemctl start docker'}, then run this again.${envNote}`;
}

/** Rootless Docker and rootless Podman say so in `docker info`'s SecurityOptions ("name=rootless"). */
export function rootlessProblem(cfg: Config, info: { SecurityOptions?: string[] | null; OperatingSystem?: string; ServerVersion?: string }, endpoint: string): string | undefined {
  if (!(info.SecurityOptions ?? []).includes('name=rootless')) return undefined;
  const lowPorts = (['HTTP_PORT', 'HTTPS_PORT', 'REGISTRY_PORT'] as const).filter((k) => cfg[k] < 1024).map((k) => `${k}=${cfg[k]}`);
  return `Docker at ${endpoint} runs rootless (${info.OperatingSystem ?? ''} ${info.ServerVersion ?? ''}; docker info lists name=rootless). ` +
    'Talos nodes are privileged containers that mount filesystems and set cgroups and sysctls, which a rootless engine cannot grant' +
    (lowPorts.length ? `, and a rootless engine cannot publish ports below 1024 (${lowPorts.join(', ')})` : '') +
    '. Nothing was created. Use a rootful Docker Engine: start it (`sudo systemctl start docker`) and select it ' +
    '(`docker context use default`, and unset DOCKER_HOST if it points at the rootless socket), then run this again.';
}

/** A Docker network as `docker network inspect --format '{{json .}}'` prints it (the fields we read). */
export interface DockerNetwork {
  Name: string;
  Labels?: Record<string, string> | null;
  IPAM?: { Config?: { Subnet?: string }[] | null };
}

const subnetsOf = (n: DockerNetwork) => (n.IPAM?.Config ?? []).map((c) => c.Subnet).filter((x): x is string => !!x && !x.includes(':'));
const overlap = (a: string, b: string) => {
  const [a0, a1] = subnetRange(a);
  const [b0, b1] = subnetRange(b);
  return a0 <= b1 && b0 <= a1;
};
/** The cluster's own network, found by talosctl's labels as talosctl finds it. */
const isClusterNetwork = (cfg: Config, n: DockerNetwork) =>
  n.Labels?.['talos.owned'] === 'true' && n.Labels?.['talos.cluster.name'] === cfg.CLUSTER_NAME;

/** The first 10.x.y.0/24 from 10.5.0.0/24 on that overlaps none of these networks. */
export function freeSubnet(networks: DockerNetwork[]): string | undefined {
  const taken = networks.flatMap(subnetsOf);
  for (let n = ipv4Number('10.5.0.0'); n < ipv4Number('11.0.0.0'); n += 256) {
    const candidate = `${ipv4Text(n)}/24`;
    if (!taken.some((t) => overlap(t, candidate))) return candidate;
  }
  return undefined;
}

/**
 * Networks in the way of CLUSTER_SUBNET: Docker refuses a network whose subnet overlaps another's
 * ("Pool overlaps with other one on this address space"), and talosctl refuses its own network
 * when the subnet differs ("existing network has differing cidr").
 */
export function networkProblems(cfg: Config, networks: DockerNetwork[]): string[] {
  const problems: string[] = [];
  const others = networks.filter((n) => !isClusterNetwork(cfg, n));
  const suggestion = freeSubnet(networks);
  const instead = suggestion ? `set CLUSTER_SUBNET=${suggestion} in .env (free here)` : 'set CLUSTER_SUBNET in .env to a free private range';
  const ours = networks.find((n) => isClusterNetwork(cfg, n));
  const oursSubnet = ours && subnetsOf(ours)[0];
  if (oursSubnet && oursSubnet !== cfg.CLUSTER_SUBNET) {
    problems.push(
      `the cluster's Docker network ${ours.Name} has subnet ${oursSubnet} but CLUSTER_SUBNET=${cfg.CLUSTER_SUBNET}. ` +
        `Set CLUSTER_SUBNET=${oursSubnet} in .env, or recreate the cluster: \`task destroy -- --yes && task talos\`.`,
    );
    return problems;
  }
  const sameName = others.find((n) => n.Name === cfg.CLUSTER_NAME);
  if (sameName) {
    problems.push(
      `a Docker network named ${cfg.CLUSTER_NAME} exists that talosctl did not create (it lacks the talos.cluster.name label), ` +
        `so the cluster cannot have it. Remove it (\`docker network rm ${cfg.CLUSTER_NAME}\`) or set another CLUSTER_NAME in .env.`,
    );
  }
  if (oursSubnet) return problems;
  for (const n of others) {
    const clash = subnetsOf(n).find((sub) => overlap(sub, cfg.CLUSTER_SUBNET));
    if (!clash) continue;
    const talos = n.Labels?.['talos.cluster.name'];
    problems.push(
      `the Docker network ${n.Name} (${clash}${talos ? `, Talos cluster "${talos}"` : ''}) overlaps CLUSTER_SUBNET=${cfg.CLUSTER_SUBNET}, ` +
        `and Docker refuses overlapping networks ("Pool overlaps with other one on this address space"). ` +
        `${instead[0].toUpperCase()}${instead.slice(1)}, or remove that network` +
        `${talos ? ` (\`talosctl cluster destroy --name ${talos}\`)` : ` (\`docker network rm ${n.Name}\`)`}.`,
    );
  }
  return problems;
}

export interface PublishedPort {
  hostIp: string;
  hostPort: number;
  containerPort: number;
}

/** Parses `docker ps`'s Ports column: "127.0.0.1:80->30080/tcp, 0.0.0.0:5001->5000/tcp". */
export function parsePorts(text: string): PublishedPort[] {
  return [...text.matchAll(/([\d.:[\]a-f]*):(\d+)->(\d+)\/tcp/g)].map((m) => ({
    hostIp: m[1],
    hostPort: Number(m[2]),
    containerPort: Number(m[3]),
  }));
}

/**
 * HOST_IP must be an address of this machine (or 0.0.0.0): Docker publishes ports there, on Linux
 * directly and with Docker Desktop, Colima and OrbStack through their port forwarders on the host.
 */
export function hostIpProblem(hostIp: string, localAddresses: string[], platform: NodeJS.Platform): string | undefined {
  const loopback = platform === 'linux' && hostIp.startsWith('127.');
  if (hostIp === '0.0.0.0' || loopback || localAddresses.includes(hostIp)) return undefined;
  return `HOST_IP=${hostIp} is not an address of this machine (it has ${localAddresses.join(', ')}), so nothing can be published there. ` +
    'Set HOST_IP in .env to 127.0.0.1 (the default) or to one of these addresses.';
}

/** Whether something listens on host:port (a bind test, or a connect test where binding needs root). */
export async function portInUse(host: string, port: number): Promise<boolean> {
  const bindResult = await new Promise<'free' | 'taken' | 'unknown'>((resolve) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE' ? 'taken' : 'unknown'));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve('free')));
  });
  if (bindResult !== 'unknown') return bindResult === 'taken';
  return new Promise<boolean>((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(1000);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Kubeconfig editing (pure): only our cluster, user and context entries are touched
// ---------------------------------------------------------------------------------------------

interface Named {
  name: string;
  [k: string]: unknown;
}
interface Kubeconfig {
  clusters?: Named[];
  users?: Named[];
  contexts?: Named[];
  'current-context'?: string;
  [k: string]: unknown;
}

const SECTIONS = ['clusters', 'users', 'contexts'] as const;

/** Adds or replaces our entries in the user's kubeconfig text; our context becomes current only if none is. */
export function mergeKubeconfigText(userText: string, ours: Kubeconfig): string {
  const doc = userText.trim() ? YAML.parseDocument(userText) : new YAML.Document({ apiVersion: 'v1', kind: 'Config' });
  for (const section of SECTIONS) {
    for (const entry of ours[section] ?? []) {
      const list = doc.get(section);
      if (!YAML.isSeq(list)) {
        doc.set(section, doc.createNode([entry]));
        continue;
      }
      const i = list.items.findIndex((it) => YAML.isMap(it) && it.get('name') === entry.name);
      if (i >= 0) list.items[i] = doc.createNode(entry) as never;
      else list.items.push(doc.createNode(entry) as never);
    }
  }
  // Someone else's current context stays current; `kubectl config use-context` switches.
  if (!doc.get('current-context') && ours['current-context']) doc.set('current-context', ours['current-context']);
  return doc.toString();
}

/** Removes entries with these names; clears current-context when it was ours. */
export function removeFromKubeconfigText(userText: string, names: { clusters: string[]; users: string[]; contexts: string[] }): string {
  const doc = YAML.parseDocument(userText);
  for (const section of SECTIONS) {
    const list = doc.get(section);
    if (!YAML.isSeq(list)) continue;
    list.items = list.items.filter((it) => !(YAML.isMap(it) && names[section].includes(String(it.get('name')))));
  }
  if (names.contexts.includes(String(doc.get('current-context')))) doc.set('current-context', '');
  return doc.toString();
}

/** Points our cluster entry of a kubeconfig at another API server address; everything else stays. */
export function setKubeconfigServer(text: string, cluster: string, server: string): string {
  const doc = YAML.parseDocument(text);
  const list = doc.get('clusters');
  const entry = YAML.isSeq(list) ? list.items.find((it) => YAML.isMap(it) && it.get('name') === cluster) : undefined;
  if (!YAML.isMap(entry)) throw new UserError(`the kubeconfig talosctl fetched has no cluster "${cluster}"; run \`task destroy -- --yes && task talos\`.`);
  entry.setIn(['cluster', 'server'], server);
  return doc.toString();
}

/** `docker port` output ("127.0.0.1:40123", "0.0.0.0:40123", "[::]:40123") as the address to dial. */
export function apiServerFromPorts(text: string): string | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/m.exec(text.trim());
  return m ? `https://${m[1] === '0.0.0.0' ? '127.0.0.1' : m[1]}:${m[2]}` : undefined;
}

// ---------------------------------------------------------------------------------------------
// Current state
// ---------------------------------------------------------------------------------------------

interface ContainerRow {
  Names: string;
  Image: string;
  State: string;
  Ports: string;
  Networks: string;
  Labels: string;
}

/** Containers (running or not) carrying every one of these labels. */
async function dockerPs(...labels: string[]): Promise<ContainerRow[]> {
  const out = await run('docker', ['ps', '--all', ...labels.flatMap((l) => ['--filter', `label=${l}`]), '--format', '{{json .}}']);
  return out.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as ContainerRow);
}

/** The control plane's Kubernetes API as this machine reaches it: the host port Docker publishes for 6443. */
async function publishedApiServer(cfg: Config): Promise<string> {
  const cp = `${cfg.CLUSTER_NAME}-controlplane-1`;
  const res = await run('docker', ['port', cp, '6443/tcp']);
  const server = apiServerFromPorts(res.stdout);
  if (!server) throw new UserError(`${cp} publishes no port for the Kubernetes API (docker port: ${res.stdout.trim() || 'nothing'}). Recreate the cluster: \`task destroy -- --yes && task talos\`.`);
  return server;
}

interface Current {
  nodes: ContainerRow[];
  helpers: ContainerRow[];
}

/** The labels talosctl puts on a cluster's containers and network, and finds and removes them by. */
const talosLabels = (cfg: Config) => ['talos.owned=true', `talos.cluster.name=${cfg.CLUSTER_NAME}`];

/** The labels of a `docker ps` row ("k=v,k=v"; our values and talosctl's hold no comma) as a set of "k=v". */
const rowLabels = (row: ContainerRow) => new Set(row.Labels.split(','));

/** Our nodes and helpers, from one `docker ps` of every container (Docker ANDs label filters: one query cannot ask for both). */
const readCurrent = async (cfg: Config): Promise<Current> => {
  const rows = await dockerPs();
  const withAll = (...labels: string[]) => rows.filter((r) => labels.every((l) => rowLabels(r).has(l)));
  return { nodes: withAll(...talosLabels(cfg)), helpers: withAll(`${OWNER_LABEL}=${cfg.CLUSTER_NAME}`) };
};

const expectedNodeNames = (cfg: Config) => [
  `${cfg.CLUSTER_NAME}-controlplane-1`,
  ...Array.from({ length: cfg.WORKERS }, (_, i) => `${cfg.CLUSTER_NAME}-worker-${i + 1}`),
];

/** Differences between an existing cluster's containers and .env, each with what to do. */
export function clusterDifferences(cfg: Config, nodes: ContainerRow[]): string[] {
  const recreate = 'Run `task destroy -- --yes` and then `task talos` to recreate it (or set .env back).';
  const names = nodes.map((n) => n.Names);
  const problems: string[] = [];
  const missing = expectedNodeNames(cfg).filter((n) => !names.includes(n));
  const extra = names.filter((n) => !expectedNodeNames(cfg).includes(n));
  if (missing.length || extra.length) {
    problems.push(
      `cluster "${cfg.CLUSTER_NAME}" has nodes ${names.join(', ')} but WORKERS=${cfg.WORKERS} asks for ${expectedNodeNames(cfg).join(', ')}` +
        `${missing.length ? ` (missing ${missing.join(', ')}: half-created, or WORKERS changed)` : ''}. ${recreate}`,
    );
  }
  for (const n of nodes.filter((x) => x.Image !== talosImage(cfg))) {
    problems.push(`${n.Names} runs ${n.Image} but TALOS_VERSION=${cfg.TALOS_VERSION} asks for ${talosImage(cfg)}. ${recreate}`);
  }
  const cp = nodes.find((n) => n.Names === `${cfg.CLUSTER_NAME}-controlplane-1`);
  if (cp && cp.State === 'running') {
    const published = parsePorts(cp.Ports);
    for (const [keyName, hostPort, nodePort] of [
      ['HTTP_PORT', cfg.HTTP_PORT, INGRESS_NODE_PORTS.http],
      ['HTTPS_PORT', cfg.HTTPS_PORT, INGRESS_NODE_PORTS.https],
    ] as const) {
      const p = published.find((x) => x.containerPort === nodePort);
      if (!p || p.hostPort !== hostPort || p.hostIp !== cfg.HOST_IP) {
        problems.push(
          `the control plane publishes ${p ? `${p.hostIp}:${p.hostPort}` : 'nothing'} for port ${nodePort} but ${keyName}=${hostPort} on HOST_IP=${cfg.HOST_IP} is asked. ${recreate}`,
        );
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

/** The ports we publish ourselves (existing control plane and registry) are not "taken". */
function ownPorts(current: Current): number[] {
  return [...current.nodes, ...current.helpers].filter((c) => c.State === 'running').flatMap((c) => parsePorts(c.Ports).map((p) => p.hostPort));
}

/**
 * The endpoint the docker CLI uses: `docker context inspect` of the current context, which is
 * "default" (DOCKER_HOST or the default socket) when DOCKER_HOST is set, else DOCKER_CONTEXT's or
 * the one `docker context use` chose. talosctl, which reads only DOCKER_HOST, gets this host.
 */
export async function dockerEndpoint(): Promise<DockerEndpoint> {
  const res = await run('docker', ['context', 'inspect', '--format', '{{json .}}']);
  const context = JSON.parse(res.stdout.split('\n')[0]) as { Name: string; Endpoints: { docker: { Host: string } } };
  return { context: context.Name, host: context.Endpoints.docker.Host };
}

interface DockerInfo {
  NCPU: number;
  MemTotal: number;
  DockerRootDir: string;
  OSType: string;
  OperatingSystem: string;
  ServerVersion: string;
  Name: string;
  SecurityOptions?: string[] | null;
  ServerErrors?: string[];
}

/** What preflight found: the current containers, and the Docker endpoint to hand to talosctl. */
interface Preflight {
  current: Current;
  dockerHost: string;
  /** Whether the cluster's Docker network (talosctl's labels) exists already. */
  networkExists: boolean;
}

/** Docker's answer to `docker info`, and where the docker CLI reaches it. */
interface DockerFound {
  info: DockerInfo;
  endpoint: DockerEndpoint;
}

async function checkDockerDaemon(cfg: Config, platform: NodeJS.Platform): Promise<DockerFound> {
  let found: DockerFound | undefined;
  await check('Docker daemon', async () => {
    // The registry phase of this deploy run passed these checks moments ago, through the same docker CLI.
    found = runFact<DockerFound>(cfg, RUN_FACTS.docker);
    if (found) return `Docker ${found.info.ServerVersion} at ${found.endpoint.host} (checked by the registry phase of this deploy)`;
    const where = { platform, dockerHostEnv: process.env.DOCKER_HOST || undefined };
    const endpoint = await dockerEndpoint().catch((err: Error) => {
      throw new UserError(dockerUnreachable(err instanceof CommandError ? err.output : err.message, where));
    });
    const res = await run('docker', ['info', '--format', '{{json .}}'], { okCodes: [1] });
    const parsed = res.code === 0 ? (JSON.parse(res.stdout) as DockerInfo) : undefined;
    if (!parsed || parsed.ServerErrors?.length || !parsed.ServerVersion) {
      throw new UserError(dockerUnreachable(res.stderr || parsed?.ServerErrors?.join(' ') || '', { ...where, host: endpoint.host }));
    }
    const rootless = rootlessProblem(cfg, parsed, endpoint.host);
    if (rootless) throw new UserError(rootless);
    found = { info: parsed, endpoint };
    return `Docker ${parsed.ServerVersion} (${parsed.OperatingSystem}) at ${endpoint.host}` +
      `${endpoint.context === 'default' ? '' : ` (context ${endpoint.context})`}, ${parsed.NCPU} CPUs, ${gib(parsed.MemTotal / 1024 / 1024)}`;
  });
  return found!;
}

/** CLUSTER_SUBNET overlaps no other Docker network; returns whether our cluster network exists. */
async function checkClusterSubnet(cfg: Config): Promise<boolean> {
  let networkExists = false;
  await check(`Docker network for CLUSTER_SUBNET=${cfg.CLUSTER_SUBNET}`, async () => {
    // The registry phase of this deploy run checked the subnet and made sure the network exists.
    if (runFact(cfg, RUN_FACTS.clusterNetwork)) {
      networkExists = true;
      return `network ${cfg.CLUSTER_NAME} exists (checked by the registry phase of this deploy)`;
    }
    const names = (await run('docker', ['network', 'ls', '--format', '{{.Name}}'])).stdout.split('\n').filter(Boolean);
    const inspected = names.length ? (await run('docker', ['network', 'inspect', '--format', '{{json .}}', ...names])).stdout : '';
    const networks = inspected.split('\n').filter(Boolean).map((l) => JSON.parse(l) as DockerNetwork);
    const problems = networkProblems(cfg, networks);
    if (problems.length) throw new UserError(problems.join('\n'));
    networkExists = networks.some((n) => isClusterNetwork(cfg, n));
    return networkExists ? `network ${cfg.CLUSTER_NAME} exists` : `free (${networks.length} other networks)`;
  });
  return networkExists;
}

type PortKey = 'HTTP_PORT' | 'HTTPS_PORT' | 'REGISTRY_PORT';

/** The ports of these keys are free on HOST_IP, or published by our own containers. */
async function checkPorts(cfg: Config, current: Current, keys: PortKey[], platform: NodeJS.Platform): Promise<void> {
  await check(`Port${keys.length > 1 ? 's' : ''} ${keys.map((k) => cfg[k]).join(', ')} on ${cfg.HOST_IP}`, async () => {
    const addresses = Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address));
    const notHere = hostIpProblem(cfg.HOST_IP, addresses, platform);
    if (notHere) throw new UserError(notHere);
    const ours = ownPorts(current);
    const problems: string[] = [];
    for (const keyName of keys) {
      const p = cfg[keyName];
      if (ours.includes(p)) continue;
      if (await portInUse(cfg.HOST_IP, p)) {
        problems.push(`${keyName}=${p} is already in use on ${cfg.HOST_IP}. Stop what listens there (\`sudo lsof -iTCP:${p} -sTCP:LISTEN\`) or set another ${keyName} in .env.`);
      }
    }
    if (problems.length) throw new UserError(problems.join('\n'));
    return ours.length ? 'free (or ours)' : 'free';
  });
}

async function checkTools(cfg: Config, tools: string[], platform: NodeJS.Platform): Promise<void> {
  const problems: string[] = [];
  for (const tool of tools) {
    if (!(await hasTool(tool))) problems.push(`${tool} is not installed (not on PATH). Install it: ${installHint(tool, platform, cfg)}`);
  }
  if (problems.length) throw new UserError(problems.join('\n'));
}

async function preflight(cfg: Config, platform: NodeJS.Platform = process.platform): Promise<Preflight> {
  await check('Tools: docker, talosctl, kubectl, helm', async () => {
    await checkTools(cfg, ['docker', 'talosctl', 'kubectl', 'helm'], platform);
    // Each binary is asked once: another binary on PATH (an upgrade too) is asked again.
    const talosctl = await toolVersionOutput(cfg, 'talosctl', ['version', '--client', '--short']);
    const helm = await toolVersionOutput(cfg, 'helm', ['version', '--short']);
    const kubectlVersion = await toolVersionOutput(cfg, 'kubectl', ['version', '--client', '--output', 'json']);
    const problems = [
      versionProblem('talosctl', talosctl, cfg),
      versionProblem('helm', helm, cfg),
      versionProblem('kubectl', kubectlVersion, cfg),
    ].filter((p): p is string => !!p);
    if (problems.length) throw new UserError(problems.join('\n'));
    return `talosctl ${parseVersion(talosctl)!.text}, helm ${parseVersion(helm)!.text}, kubectl ${parseVersion(kubectlVersion)!.text}`;
  });

  const { info, endpoint } = await checkDockerDaemon(cfg, platform);
  const dockerHost = endpoint.host;

  // talosctl's Docker client reads DOCKER_HOST only (client.FromEnv), never a docker context.
  await check('talosctl reaches the same Docker', async () => {
    const res = await run('talosctl', ['cluster', 'show', '--name', cfg.CLUSTER_NAME, '--state', statePath(cfg, 'talos', 'clusters')], {
      env: { DOCKER_HOST: dockerHost },
      okCodes: [1],
    });
    if (res.code !== 0) {
      throw new UserError(
        `talosctl cannot reach Docker at DOCKER_HOST=${dockerHost}, where the docker CLI can (${(res.stderr || res.stdout).trim()}). ` +
          'talosctl supports unix:// and plain tcp:// endpoints; for an ssh:// or TLS context, forward the socket ' +
          '(`ssh -NL /tmp/docker.sock:/var/run/docker.sock <host>`) and set DOCKER_HOST=unix:///tmp/docker.sock.',
      );
    }
    return `DOCKER_HOST=${dockerHost}`;
  });

  const networkExists = await checkClusterSubnet(cfg);

  const current = await readCurrent(cfg);
  const clusterRunning = current.nodes.some((n) => n.State === 'running');
  // Docker on this machine (not in a VM): Linux, and the daemon's hostname is ours.
  const dockerOnThisMachine = platform === 'linux' && info.Name === os.hostname();

  await check('Memory, CPUs and disk', async () => {
    const need = requiredResources(cfg);
    // A running cluster already holds its memory: what is free now says nothing about it.
    const memoryMiB = clusterRunning
      ? undefined
      : dockerMemoryMiB(Math.floor(info.MemTotal / 1024 / 1024), dockerOnThisMachine ? { availableMiB: Math.floor(os.freemem() / 1024 / 1024) } : undefined);
    let diskMiB: number | undefined;
    const diskDir = dockerOnThisMachine && fs.existsSync(info.DockerRootDir ?? '') ? info.DockerRootDir : undefined;
    if (diskDir) {
      const s = fs.statfsSync(diskDir);
      diskMiB = Math.floor((s.bavail * s.bsize) / 1024 / 1024);
    }
    const problems = resourceProblems(need, { memoryMiB, cpus: info.NCPU, diskMiB });
    const workerProblem = workerMemoryProblem(cfg);
    if (workerProblem) problems.push(workerProblem);
    if (problems.length) throw new UserError(problems.join('\n'));
    return `expected use ${gib(need.memoryMiB)}${memoryMiB === undefined ? '' : ` of ${gib(memoryMiB)} available`}, ${need.cpus} CPUs, ${gib(need.diskMiB)} disk` +
      (diskDir ? '' : ' (disk of the Docker VM not visible: not checked)');
  });

  await checkPorts(cfg, current, ['HTTP_PORT', 'HTTPS_PORT', 'REGISTRY_PORT'], platform);

  if (dockerOnThisMachine && fs.existsSync('/proc/modules')) {
    const modules = fs.readFileSync('/proc/modules', 'utf8');
    if (!/^br_netfilter /m.test(modules) && !fs.existsSync('/proc/sys/net/bridge')) {
      warn('br_netfilter is not loaded; Flannel needs it for Service traffic: `sudo modprobe br_netfilter`');
    }
  }
  return { current, dockerHost, networkExists };
}

/**
 * `--registry` (`task registry`, the first node of the deploy graph): only what the registry and
 * the caches need (docker, its daemon, CLUSTER_SUBNET, REGISTRY_PORT), then the cluster network
 * they join and the containers themselves, so that images can be pushed while the nodes boot.
 */
async function registryOnly(cfg: Config, platform: NodeJS.Platform = process.platform): Promise<void> {
  await check('Tools: docker', () => checkTools(cfg, ['docker'], platform));
  const docker = await checkDockerDaemon(cfg, platform);
  const networkExists = await checkClusterSubnet(cfg);
  // The nodes publish no registry port: the helpers are all the registry needs to know.
  const current: Current = { nodes: [], helpers: await dockerPs(`${OWNER_LABEL}=${cfg.CLUSTER_NAME}`) };
  await checkPorts(cfg, current, ['REGISTRY_PORT'], platform);
  claimStateDir(cfg);
  await ensureNetwork(cfg, networkExists);
  // For the talos phase of this deploy run: Docker passed its checks, the subnet is free and the network exists.
  recordRunFact(cfg, RUN_FACTS.docker, docker);
  recordRunFact(cfg, RUN_FACTS.clusterNetwork, true);
  await ensureHelpers(cfg, current);
  note(`Images pushed to localhost:${cfg.REGISTRY_PORT}/<name> run in the cluster under the same name.`);
}

/** The names of the cluster's Docker networks, found by talosctl's labels as talosctl finds and removes them. */
async function clusterNetworks(cfg: Config): Promise<string[]> {
  const ls = await run('docker', ['network', 'ls', ...talosLabels(cfg).flatMap((l) => ['--filter', `label=${l}`]), '--format', '{{.Name}}']);
  return ls.stdout.split('\n').filter(Boolean);
}

/** Creates the cluster's network unless preflight found it. */
async function ensureNetwork(cfg: Config, exists: boolean): Promise<void> {
  await step(`Docker network ${cfg.CLUSTER_NAME} (${cfg.CLUSTER_SUBNET})`, async () => {
    if (exists) return 'already exists';
    await run('docker', [
      'network', 'create',
      ...talosLabels(cfg).flatMap((l) => ['--label', l]),
      '--subnet', cfg.CLUSTER_SUBNET,
      '--opt', 'com.docker.network.driver.mtu=1500',
      cfg.CLUSTER_NAME,
    ]);
    return 'created';
  });
}

async function ensureHelpers(cfg: Config, current: Current): Promise<void> {
  const wanted = helperContainers(cfg);
  await step(`Local registry on ${cfg.HOST_IP}:${cfg.REGISTRY_PORT}${cfg.PULL_THROUGH_CACHE ? ` and ${UPSTREAMS.length} pull-through caches` : ''}`, async () => {
    const actions: string[] = [];
    for (const c of wanted) {
      const row = current.helpers.find((h) => h.Names === c.name);
      // Docker shows the published ports of a running container only; a stopped one is started and checked on the next run.
      const published = parsePorts(row?.Ports ?? '').map((p) => `${p.hostIp}:${p.hostPort}:${p.containerPort}`);
      const wrongPort = row?.State === 'running' && c.publish.some((want) => !published.some((p) => publishMatches(want, p)));
      if (!row || wrongPort) {
        // A registry's data is in its volume, so a new container with the new port loses nothing.
        if (wrongPort) await run('docker', ['rm', '--force', c.name]);
        await run('docker', dockerRunArgs(cfg, c));
        await run('docker', ['network', 'connect', '--ip', c.ip, cfg.CLUSTER_NAME, c.name]);
        const why = c.role === 'registry' ? 'REGISTRY_PORT or HOST_IP changed' : `now published on ${CACHE_PUBLISH}, for the prefill; its volume is kept`;
        actions.push(wrongPort ? `recreated ${c.name} (${why})` : `created ${c.name}`);
        continue;
      }
      if (row.State !== 'running') {
        await run('docker', ['start', c.name]);
        actions.push(`started ${c.name}`);
      }
      if (!row.Networks.split(',').includes(cfg.CLUSTER_NAME)) {
        await run('docker', ['network', 'connect', '--ip', c.ip, cfg.CLUSTER_NAME, c.name]);
        actions.push(`attached ${c.name} to ${cfg.CLUSTER_NAME}`);
      }
    }
    const unwanted = current.helpers.filter((h) => !wanted.some((w) => w.name === h.Names));
    if (unwanted.length) note(`PULL_THROUGH_CACHE=false: ${unwanted.length} cache containers left as they are; \`task clean\` removes them.`);
    return actions.length ? actions.join('; ') : 'unchanged';
  });
}

function writePatches(cfg: Config, clusterExists: boolean): string {
  const dir = statePath(cfg, 'talos', 'patches');
  const written = Object.entries(talosPatches(cfg)).filter(([file, docs]) => writeFileAtomic(path.join(dir, file), patchText(docs)));
  if (written.length && clusterExists) {
    // Talos applied the patches when the nodes were created; a running cluster keeps that config.
    warn(
      `${written.map(([f]) => f).join(', ')} changed since the cluster was created (e.g. PULL_THROUGH_CACHE or REGISTRY_PORT); ` +
        `the running nodes keep the old config. Apply it with \`talosctl --talosconfig ${statePath(cfg, 'talosconfig')} --nodes <node IPs> patch mc --patch @<file>\`, ` +
        'or recreate the cluster: `task destroy -- --yes && task talos`.',
    );
  }
  return written.length ? `wrote ${written.map(([f]) => f).join(', ')}` : 'unchanged';
}

/** talosctl's record of a cluster whose every node was created (it writes state.yaml last). */
const clusterStateFile = (cfg: Config) => statePath(cfg, 'talos', 'clusters', cfg.CLUSTER_NAME, 'state.yaml');
/** The Docker endpoint the cluster was created through (written just before `cluster create`). */
const dockerEndpointFile = (cfg: Config) => statePath(cfg, 'talos', 'docker-endpoint');

/**
 * Why the cluster's state must not be touched although Docker shows none of its nodes: the cluster
 * was created through another Docker endpoint than the one the docker CLI uses now (another
 * context: Docker Desktop, Colima, OrbStack), where it may well still run. Undefined when the same.
 */
export function otherDockerProblem(cfg: Config, recorded: string | undefined, currentHost: string): string | undefined {
  if (recorded === undefined || recorded === currentHost) return undefined;
  return (
    `cluster "${cfg.CLUSTER_NAME}" was created through Docker at ${recorded}, but the docker CLI now uses ${currentHost}, ` +
    'which has none of its nodes. Nothing was changed, and its talosconfig and kubeconfig are kept. ' +
    `Switch back (\`docker context use <the context of ${recorded}>\`, or \`export DOCKER_HOST=${recorded}\`) and run this again.`
  );
}

const readRecordedEndpoint = (cfg: Config) => (fs.existsSync(dockerEndpointFile(cfg)) ? fs.readFileSync(dockerEndpointFile(cfg), 'utf8').trim() : undefined);

/**
 * How long the phase waits for the prefill once the nodes are Ready (PREFILL_GRACE_SECONDS in the
 * environment overrides it, for tests): what it has not fetched by then, pods pull through the caches.
 */
export const PREFILL_GRACE_SECONDS = 120;

/** The cache prefill running beside `talosctl cluster create`: its outcome (never a rejection), and a way to stop it. */
interface BackgroundPrefill {
  outcome: Promise<{ ok: boolean; line: string }>;
  stop(): void;
}

/**
 * Starts `scripts/images.ts --prefill` as a process of its own (this node with this script's loader
 * flags), so that the caches fill while the nodes boot. Its last line is its result: what it fetched
 * and what was cached already, or why it stopped.
 */
function startPrefill(): BackgroundPrefill {
  const child = spawn(process.execPath, [...process.execArgv, path.join(PROJECT_DIR, 'scripts', 'images.ts'), '--prefill'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const lastLine = (text: string) => text.trim().split('\n').at(-1)?.replace(/^✗ images --prefill: /, '') ?? '';
  const outcome = new Promise<{ ok: boolean; line: string }>((resolve) => {
    child.once('error', (err) => resolve({ ok: false, line: err.message }));
    child.once('close', (code, signal) =>
      resolve(code === 0 ? { ok: true, line: lastLine(stdout) } : { ok: false, line: lastLine(stderr) || lastLine(stdout) || `stopped (${signal ?? `exit ${code}`})` }),
    );
  });
  return { outcome, stop: () => void (child.exitCode === null && child.signalCode === null && child.kill()) };
}

/** Creates the cluster (with the cache prefill beside it when the caches are on, kept in `background`), or checks the one there. */
async function ensureCluster(cfg: Config, current: Current, dockerHost: string, background: { prefill?: BackgroundPrefill }): Promise<void> {
  const talosconfig = statePath(cfg, 'talosconfig');
  await step(`Talos cluster ${cfg.CLUSTER_NAME}: 1 control plane + ${cfg.WORKERS} workers`, async () => {
    if (current.nodes.length === 0) {
      if (fs.existsSync(clusterStateFile(cfg))) {
        // Every node was created once; none is here now. Never drop its credentials on a guess.
        throw new UserError(
          otherDockerProblem(cfg, readRecordedEndpoint(cfg), dockerHost) ??
            `cluster "${cfg.CLUSTER_NAME}" was created (${clusterStateFile(cfg)}), but Docker at ${dockerHost} has none of its nodes. ` +
              'If it runs under another Docker context, switch back and run this again; if its nodes were removed, ' +
              '`task destroy -- --yes` clears what is left, then `task talos` creates it again.',
        );
      }
      // A run stopped before every node existed may have left talosctl state behind; it describes nothing now.
      for (const stale of [statePath(cfg, 'talos', 'clusters', cfg.CLUSTER_NAME), talosconfig, kubeconfigPath(cfg)]) {
        fs.rmSync(stale, { recursive: true, force: true });
      }
      writeFileAtomic(dockerEndpointFile(cfg), `${dockerHost}\n`);
      if (cfg.PULL_THROUGH_CACHE) background.prefill = startPrefill();
      await run('talosctl', clusterCreateArgs(cfg, statePath(cfg, 'talos', 'patches')), {
        env: { KUBECONFIG: kubeconfigPath(cfg), DOCKER_HOST: dockerHost },
        hint: `Nothing of a half-created cluster is lost by retrying: \`task destroy -- --yes && task talos\`.`,
      });
      return `created (Talos ${cfg.TALOS_VERSION}, Kubernetes ${cfg.KUBERNETES_VERSION})`;
    }
    const problems = clusterDifferences(cfg, current.nodes);
    if (!fs.existsSync(talosconfig)) {
      problems.push(`its talosconfig (${talosconfig}) is missing, so it cannot be managed. Run \`task destroy -- --yes\` and then \`task talos\`.`);
    }
    if (problems.length) throw new UserError(problems.join('\n'));
    const stopped = current.nodes.filter((n) => n.State !== 'running').map((n) => n.Names);
    if (stopped.length) {
      await run('docker', ['start', ...stopped]);
      return `started stopped nodes: ${stopped.join(', ')}`;
    }
    return 'already exists';
  });

  await step('Kubeconfig', async () => {
    const file = kubeconfigPath(cfg);
    if (fs.existsSync(file)) return `already present: ${file}`;
    await run('talosctl', ['kubeconfig', file, '--talosconfig', talosconfig, '--nodes', controlplaneIp(cfg), '--force']);
    // It names the control plane's address on the Docker network (https://10.5.0.2:6443), which a Mac
    // cannot reach; `cluster create` points its kubeconfig at the published port, and so do we.
    const server = await publishedApiServer(cfg);
    writeFileAtomic(file, setKubeconfigServer(fs.readFileSync(file, 'utf8'), cfg.CLUSTER_NAME, server), 0o600);
    return `fetched into ${file} (server ${server})`;
  });

  await check('Nodes Ready', async () => {
    const want = 1 + cfg.WORKERS;
    const readNodes = async () => {
      const res = await kubectl(cfg, ['get', 'nodes', '--output', 'json']);
      return (JSON.parse(res.stdout).items as { metadata: { name: string }; status: { conditions: { type: string; status: string }[]; nodeInfo: { kubeletVersion: string } } }[]);
    };
    const ready = (n: Awaited<ReturnType<typeof readNodes>>[number]) => n.status.conditions.some((c) => c.type === 'Ready' && c.status === 'True');
    let nodes = await readNodes();
    const already = nodes.length === want && nodes.every(ready);
    if (!already) {
      await kubectl(cfg, ['wait', '--for=condition=Ready', 'nodes', '--all', '--timeout=300s'], {
        hint: `Nodes are not Ready. Look at \`talosctl --talosconfig ${talosconfig} --nodes ${controlplaneIp(cfg)} health\` and \`kubectl --kubeconfig ${kubeconfigPath(cfg)} describe nodes\`.`,
      });
      nodes = await readNodes();
      if (nodes.length !== want) throw new UserError(`${nodes.length} nodes registered, ${want} expected. Check \`kubectl --kubeconfig ${kubeconfigPath(cfg)} get nodes\`.`);
    }
    const versions = [...new Set(nodes.map((n) => n.status.nodeInfo.kubeletVersion))];
    if (versions.some((v) => v !== `v${cfg.KUBERNETES_VERSION}`)) {
      throw new UserError(
        `nodes run Kubernetes ${versions.join(', ')} but KUBERNETES_VERSION=${cfg.KUBERNETES_VERSION}. ` +
          `Upgrade with \`talosctl --talosconfig ${talosconfig} --nodes ${controlplaneIp(cfg)} upgrade-k8s --to ${cfg.KUBERNETES_VERSION}\`, or recreate the cluster.`,
      );
    }
    // The API answered: the later phases of this deploy run need not ask its /readyz again.
    recordRunFact(cfg, RUN_FACTS.clusterAnswers, true);
    return `${already ? 'already ' : ''}${nodes.length}/${want} Ready (Kubernetes ${versions.join(', ')})`;
  });
}

async function create(cfg: Config): Promise<void> {
  const { current, dockerHost, networkExists } = await preflight(cfg);
  claimStateDir(cfg);
  await ensureNetwork(cfg, networkExists);
  await ensureHelpers(cfg, current);
  await step('Talos config patches', async () => writePatches(cfg, current.nodes.length > 0));
  const background: { prefill?: BackgroundPrefill } = {};
  try {
    await ensureCluster(cfg, current, dockerHost, background);
  } catch (err) {
    background.prefill?.stop();
    throw err;
  }
  const { prefill } = background;
  if (prefill) {
    // A prefill that did not finish costs only time: the nodes pull through the caches themselves.
    await step('Pull-through caches prefilled while the nodes booted', async () => {
      const graceMs = Number(process.env.PREFILL_GRACE_SECONDS ?? PREFILL_GRACE_SECONDS) * 1000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([prefill.outcome, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
      prefill.stop();
      const { ok, line } = await prefill.outcome;
      return ok ? line : `not finished, the deploy goes on (pods pull through the caches as usual): ${line}`;
    });
  }
  note(`export KUBECONFIG=${kubeconfigPath(cfg)}`);
  note(`export TALOSCONFIG=${statePath(cfg, 'talosconfig')}`);
  note(`Images pushed to localhost:${cfg.REGISTRY_PORT}/<name> run in the cluster under the same name.`);
}

// ---------------------------------------------------------------------------------------------
// Destroy and kubeconfig
// ---------------------------------------------------------------------------------------------

const userKubeconfig = () => process.env.KUBECONFIG_TARGET ?? path.join(os.homedir(), '.kube', 'config');
/** Where the user's kubeconfig is backed up before we edit it (never a `config.bak` of their own). */
const userKubeconfigBackup = () => `${userKubeconfig()}.talos-local-observability.bak`;

/**
 * Our entries in the user's kubeconfig: the cluster, user and context named as in STATE_DIR's
 * kubeconfig, and only where the cluster's CA and the user's certificate are that kubeconfig's too:
 * an entry that merely has the same name (another cluster called talos-local) is not ours.
 */
export function ownKubeconfigEntries(userText: string, ours: Kubeconfig): { clusters: string[]; users: string[]; contexts: string[] } {
  const user = (YAML.parse(userText) ?? {}) as Kubeconfig;
  // Entries of a section whose body (its `cluster:` or `user:` map) has the same value for field.
  const same = (section: 'clusters' | 'users', body: 'cluster' | 'user', field: string) =>
    (ours[section] ?? [])
      .filter((o) => {
        const mine = (o[body] as Record<string, unknown> | undefined)?.[field];
        const theirs = (user[section] ?? []).find((u) => u.name === o.name)?.[body] as Record<string, unknown> | undefined;
        return mine !== undefined && theirs?.[field] === mine;
      })
      .map((o) => o.name);
  const clusters = same('clusters', 'cluster', 'certificate-authority-data');
  const users = same('users', 'user', 'client-certificate-data');
  const contexts = (ours.contexts ?? [])
    .filter((o) => {
      const theirs = (user.contexts ?? []).find((u) => u.name === o.name)?.context as { cluster?: string; user?: string } | undefined;
      return theirs !== undefined && clusters.includes(theirs.cluster ?? '') && users.includes(theirs.user ?? '');
    })
    .map((o) => o.name);
  return { clusters, users, contexts };
}

/** Writes the user's kubeconfig atomically, keeping a backup of what was there. */
function rewriteUserKubeconfig(edit: (text: string) => string): 'unchanged' | 'updated' {
  const file = userKubeconfig();
  const before = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const after = edit(before);
  if (after === before) return 'unchanged';
  if (before) fs.copyFileSync(file, userKubeconfigBackup());
  writeFileAtomic(file, after, 0o600);
  return 'updated';
}

async function mergeIntoUserKubeconfig(cfg: Config): Promise<void> {
  await step(`Context admin@${cfg.CLUSTER_NAME} in ${userKubeconfig()}`, async () => {
    if (!fs.existsSync(kubeconfigPath(cfg))) throw new UserError(`no kubeconfig in ${kubeconfigPath(cfg)}: run \`task talos\` first.`);
    const ours = YAML.parse(fs.readFileSync(kubeconfigPath(cfg), 'utf8')) as Kubeconfig;
    const result = rewriteUserKubeconfig((text) => mergeKubeconfigText(text, ours));
    if (result === 'unchanged') return 'unchanged';
    note(`kubectl config use-context admin@${cfg.CLUSTER_NAME}   # if it is not the current context already`);
    return `added (backup: ${userKubeconfigBackup()})`;
  });
}

async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) throw new UserError('not asking without a terminal: pass --yes (task destroy -- --yes) to confirm.');
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  const answer = await rl.question(`${question} [y/N] `);
  rl.close();
  return /^y(es)?$/i.test(answer.trim());
}

/**
 * The entries of STATE_DIR that destroy keeps: the certificates (a CA you trusted keeps working after a
 * redeploy) and phases.log (destroy writes it itself) unless --clean; the hosts backups always (copies of
 * your hosts file, whose block `task hosts:remove` removes).
 */
export const keptStateEntries = (clean: boolean): string[] => (clean ? ['hosts'] : ['certs', 'hosts', 'phases.log']);

/** Removes what the phases wrote to STATE_DIR (keptStateEntries stay), and with --clean the folder when nothing else is left. */
async function removeState(cfg: Config, clean: boolean): Promise<void> {
  await step(`State in ${cfg.stateDir}`, async () => {
    if (!fs.existsSync(cfg.stateDir)) return 'unchanged (none)';
    // Only what the phases wrote (runPhase refused the folder if it were not ours).
    const kept = keptStateEntries(clean);
    const removed = STATE_ENTRIES.filter((entry) => !kept.includes(entry) && fs.existsSync(statePath(cfg, entry)));
    for (const entry of removed) fs.rmSync(statePath(cfg, entry), { recursive: true, force: true });
    const left = fs.readdirSync(cfg.stateDir).filter((e) => e !== STATE_DIR_MARKER);
    const foreign = left.filter((e) => !(STATE_ENTRIES as readonly string[]).includes(e));
    if (foreign.length) note(`kept, not ours: ${foreign.join(', ')} (in ${cfg.stateDir})`);
    if (left.includes('hosts')) {
      note(`kept ${statePath(cfg, 'hosts')} (backups of your hosts file). A block \`task hosts\` added stays in the hosts file: \`task hosts:remove\` removes it.`);
    }
    if (clean && left.length === 0) {
      fs.rmSync(statePath(cfg, STATE_DIR_MARKER));
      fs.rmdirSync(cfg.stateDir);
      return `removed ${[...removed, 'the folder'].join(', ')}`;
    }
    return removed.length ? `removed ${removed.join(', ')}` : `unchanged (kept: ${left.join(', ') || 'nothing'})`;
  });
}

async function destroy(cfg: Config, clean: boolean, yes: boolean): Promise<void> {
  const what = clean ? 'the cluster, its state, the registry, the caches and the certificates' : 'the cluster and its state';
  if (!yes && !(await confirm(`Destroy ${what} of "${cfg.CLUSTER_NAME}"?`))) {
    note('nothing done');
    return;
  }
  const current = await readCurrent(cfg);
  await step('Detach registry and caches from the cluster network', async () => {
    const attached = current.helpers.filter((h) => h.Networks.split(',').includes(cfg.CLUSTER_NAME));
    for (const h of attached) await run('docker', ['network', 'disconnect', '--force', cfg.CLUSTER_NAME, h.Names]);
    return attached.length ? `detached ${attached.length}` : 'unchanged (none attached)';
  });
  await step(`Talos cluster ${cfg.CLUSTER_NAME}`, async () => {
    // What talosctl would remove: containers (read above) and networks with both of its labels.
    const nodes = current.nodes.map((n) => n.Names);
    const networks = await clusterNetworks(cfg);
    // talosctl reads only DOCKER_HOST: give it the docker CLI's endpoint, as for create.
    const { host } = await dockerEndpoint();
    const elsewhere = nodes.length === 0 ? otherDockerProblem(cfg, readRecordedEndpoint(cfg), host) : undefined;
    if (elsewhere) throw new UserError(elsewhere);
    if (nodes.length === 0 && networks.length === 0) return 'unchanged (no cluster)';
    if (fs.existsSync(clusterStateFile(cfg))) {
      await run('talosctl', ['cluster', 'destroy', '--name', cfg.CLUSTER_NAME, '--state', statePath(cfg, 'talos', 'clusters')], {
        env: { DOCKER_HOST: host },
      });
      return `destroyed ${nodes.length} nodes`;
    }
    // talosctl writes state.yaml only once every node exists, and `cluster destroy` starts by reading
    // it: what a create that stopped earlier (image pull, a port taken, a node not starting) left is removed here.
    if (nodes.length) await run('docker', ['rm', '--force', '--volumes', ...nodes]);
    if (networks.length) await run('docker', ['network', 'rm', ...networks]);
    return `removed what a stopped create left: ${nodes.length} nodes, ${networks.length} networks`;
  });
  await step(`Context admin@${cfg.CLUSTER_NAME} in ${userKubeconfig()}`, async () => {
    if (!fs.existsSync(kubeconfigPath(cfg))) return 'unchanged (no kubeconfig of ours to recognise entries by)';
    const ours = YAML.parse(fs.readFileSync(kubeconfigPath(cfg), 'utf8')) as Kubeconfig;
    const result = rewriteUserKubeconfig((text) => (text ? removeFromKubeconfigText(text, ownKubeconfigEntries(text, ours)) : text));
    return result === 'unchanged' ? 'unchanged (none of ours there)' : 'removed';
  });
  await removeState(cfg, clean);
  if (clean) {
    await step('Registry and caches with their volumes', async () => {
      const names = current.helpers.map((h) => h.Names);
      if (names.length) await run('docker', ['rm', '--force', ...names]);
      const volumes = helperContainers({ ...cfg, PULL_THROUGH_CACHE: true }).map((h) => h.volume);
      const existing = (await run('docker', ['volume', 'ls', '--format', '{{.Name}}'])).stdout.split('\n').filter((v) => volumes.includes(v));
      if (existing.length) await run('docker', ['volume', 'rm', ...existing]);
      return names.length || existing.length ? `removed ${names.length} containers, ${existing.length} volumes` : 'unchanged (none)';
    });
  }
}

// ---------------------------------------------------------------------------------------------
// CLUSTER=existing: the cluster is the user's
// ---------------------------------------------------------------------------------------------

/** A phase that only CLUSTER=talos has: with existing it says so in one line and calls no tool. */
const talosOnly = (body: (cfg: Config) => Promise<void>) => async (cfg: Config) => {
  if (cfg.CLUSTER === 'existing') note(`skipped: CLUSTER=existing (the cluster of context ${clusterTarget(cfg).context}: no Docker, no Talos)`);
  else await body(cfg);
};

/**
 * `--target` (the root of the deploy graph): prints the cluster every phase of the run goes to and,
 * with CLUSTER=existing, checks that it answers and confirms a remote-looking one once for the
 * whole `task deploy` run (lib.confirmTarget records it for DEPLOY_RUN_ID). CLUSTER=talos: the line only.
 */
async function target(cfg: Config): Promise<void> {
  if (cfg.CLUSTER === 'talos') {
    note(targetLine(cfg));
    return;
  }
  await check('Cluster target', async () => {
    await requireCluster(cfg);
    return `context ${clusterTarget(cfg).context} answers`;
  });
}

/**
 * The kinds the platform applies with kubectl into namespaces (manifests/, lib ingressManifests and
 * tlsSecretManifest, the observability phase's Secrets and dashboards, the app phase), as kubectl
 * names them; the Traefik ones only where their CRD exists (kubectl fails on a resource type the
 * server does not have).
 */
const APPLIED_KINDS = ['deployments.apps', 'services', 'secrets', 'configmaps', 'ingresses.networking.k8s.io'];
const TRAEFIK_KINDS = ['ingressroutes.traefik.io', 'middlewares.traefik.io', 'tlsstores.traefik.io'];
const [PART_OF_KEY, PART_OF_VALUE] = Object.entries(PART_OF_LABEL)[0];

/** An object the platform applied outside its own namespaces: its type for kubectl (kind.group), namespace and name. */
export interface AppliedObject {
  type: string;
  kind: string;
  namespace: string;
  name: string;
}

/**
 * Of the objects a label-selected `kubectl get` returned, those that are ours (PART_OF_LABEL, checked
 * again here) in a namespace that is not (ourNamespaces go whole, with everything in them).
 */
export function ourObjectsElsewhere(
  items: { apiVersion?: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } }[],
  ourNamespaces: string[],
): AppliedObject[] {
  return items
    .filter((o) => o.metadata.namespace && !ourNamespaces.includes(o.metadata.namespace) && o.metadata.labels?.[PART_OF_KEY] === PART_OF_VALUE)
    .map((o) => {
      const group = o.apiVersion?.includes('/') ? o.apiVersion.split('/')[0] : '';
      return { type: `${o.kind.toLowerCase()}${group ? `.${group}` : ''}`, kind: o.kind, namespace: o.metadata.namespace as string, name: o.metadata.name };
    });
}

/**
 * destroy with CLUSTER=existing: lists exactly what the platform installed on the cluster
 * (ownedOnCluster, ourObjectsElsewhere), asks unless --yes, removes it (releases, then the objects
 * it applied into namespaces that are not ours, namespaces, CRDs, local-path's cluster objects) and
 * the state it wrote. Never the cluster, never Docker, never anything else.
 */
async function destroyExisting(cfg: Config, clean: boolean, yes: boolean): Promise<void> {
  const t = clusterTarget(cfg);
  note(targetLine(cfg));
  let owned: OwnedOnCluster = { releases: [], namespaces: [], crds: [], clusterObjects: [] };
  let elsewhere: AppliedObject[] = [];
  await check('What the platform installed there', async () => {
    await kubectl(cfg, ['get', '--raw', '/readyz'], { hint: `Check the cluster of context ${t.context}, or KUBE_CONTEXT in .env.` });
    const crds = await crdNames(cfg);
    owned = ownedOnCluster({
      clusterName: cfg.CLUSTER_NAME,
      releases: await deployedReleases(cfg),
      namespaces: JSON.parse((await kubectl(cfg, ['get', 'namespaces', '--output', 'json'])).stdout).items ?? [],
      crds,
      installed: installedRecord(cfg),
    });
    const kinds = [...APPLIED_KINDS, ...TRAEFIK_KINDS.filter((k) => crds.includes(k))];
    const labelled = await kubectl(cfg, ['get', kinds.join(','), '--all-namespaces', '--selector', `${PART_OF_KEY}=${PART_OF_VALUE}`, '--output', 'json']);
    elsewhere = ourObjectsElsewhere(JSON.parse(labelled.stdout).items ?? [], owned.namespaces);
    const n = owned.releases.length + owned.namespaces.length + elsewhere.length + owned.crds.length + owned.clusterObjects.length;
    return n ? `${n} things` : 'nothing';
  });
  const listing = [
    ...owned.releases.map((r) => `Helm release ${r.namespace}/${r.name}`),
    ...elsewhere.map((o) => `${o.kind} ${o.namespace}/${o.name} (labelled ${PART_OF_KEY}=${PART_OF_VALUE}, in namespace ${o.namespace}, which is not ours)`),
    ...owned.namespaces.map((n) => `namespace ${n} (labelled ${NAMESPACE_OWNER_LABEL}=${cfg.CLUSTER_NAME}) with everything in it`),
    ...owned.crds.map((c) => `CustomResourceDefinition ${c}`),
    ...owned.clusterObjects.map((o) => `${o} (local-path-provisioner)`),
  ];
  const stateToo = clean ? 'the state in STATE_DIR, certificates included' : 'the state in STATE_DIR';
  for (const line of listing) note(`will remove ${line}`);
  if (!yes && !(await confirm(`Remove ${listing.length ? 'these' : 'nothing'} from context ${t.context} (${t.server}), and ${stateToo}? The cluster itself stays.`))) {
    note('nothing done');
    return;
  }
  await step('Our Helm releases', async () => {
    for (const r of owned.releases) await helm(cfg, ['uninstall', r.name, '--namespace', r.namespace, '--wait', '--timeout', '5m']);
    return owned.releases.length ? `uninstalled ${owned.releases.map((r) => r.name).join(', ')}` : 'unchanged (none)';
  });
  await step(`Our objects in namespaces that are not ours (labelled ${PART_OF_KEY}=${PART_OF_VALUE})`, async () => {
    // One delete per namespace and type, by the names listed and confirmed above (not by the selector).
    for (const key of new Set(elsewhere.map((o) => `${o.namespace} ${o.type}`))) {
      const [namespace, type] = key.split(' ');
      const names = elsewhere.filter((o) => o.namespace === namespace && o.type === type).map((o) => o.name);
      await kubectl(cfg, ['delete', type, ...names, '--namespace', namespace, '--ignore-not-found']);
    }
    return elsewhere.length ? `deleted ${elsewhere.map((o) => `${o.kind} ${o.namespace}/${o.name}`).join(', ')}` : 'unchanged (none)';
  });
  await step('Our namespaces', async () => {
    if (owned.namespaces.length) await kubectl(cfg, ['delete', 'namespace', ...owned.namespaces, '--ignore-not-found', '--timeout=5m']);
    return owned.namespaces.length ? `deleted ${owned.namespaces.join(', ')}` : 'unchanged (none)';
  });
  await step('CRDs and cluster objects we installed', async () => {
    if (owned.crds.length) await kubectl(cfg, ['delete', 'customresourcedefinitions', ...owned.crds, '--ignore-not-found']);
    for (const o of owned.clusterObjects) {
      const [kind, name] = o.split('/');
      await kubectl(cfg, ['delete', kind, name, '--ignore-not-found']);
    }
    const n = owned.crds.length + owned.clusterObjects.length;
    return n ? `deleted ${[...owned.crds, ...owned.clusterObjects].join(', ')}` : 'unchanged (none)';
  });
  await removeState(cfg, clean);
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  const yes = args.includes('--yes');
  if (args.includes('--preflight')) await runPhase('preflight', talosOnly(async (cfg) => void (await preflight(cfg))));
  else if (args.includes('--target')) await runPhase('target', target);
  else if (args.includes('--registry')) await runPhase('registry', talosOnly((cfg) => registryOnly(cfg)));
  else if (args.includes('--destroy')) {
    await runPhase('destroy', (cfg) => (cfg.CLUSTER === 'existing' ? destroyExisting(cfg, args.includes('--clean'), yes) : destroy(cfg, args.includes('--clean'), yes)));
  } else if (args.includes('--kubeconfig')) await runPhase('kubeconfig', talosOnly(mergeIntoUserKubeconfig));
  else await runPhase('talos', talosOnly(create));
}
