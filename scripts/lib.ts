// The one shared helper module of the phase scripts.
//
// It holds what every phase needs and nothing phase-specific:
//   - PINNED: every version and chart version the platform installs, in one place;
//   - loadConfig(): reads `.env` (shell variables win), validates every key against CONFIG_KEYS and
//     returns a typed Config, or throws a ConfigError naming each bad key, its value and the fix;
//   - STATE_DIR ownership: the marker file, the list of entries the phases write (STATE_ENTRIES),
//     checkStateDir() (every phase, before anything: a folder that is not ours is refused) and
//     claimStateDir() (before a phase first writes there: create it or mark it);
//   - run(): a command runner whose errors carry the command line and its output (and counts the
//     calls: `--verbose` prints a phase's count);
//   - the cluster target: clusterTarget() (CLUSTER=talos: the kubeconfig in the state directory;
//     CLUSTER=existing: KUBECONFIG/KUBE_CONTEXT, the context resolved once per process by
//     resolveContext()), kubectl()/helm() (run() pointed at it: targetArgs()), toolHint() (the same
//     target in the commands we print), targetLine(), isLocalTarget() and confirmTarget() (a
//     remote-looking context is confirmed once per `task deploy` run, or with --yes);
//   - installedRecord()/recordInstalled()/volumeClass(): what the platform installed on an existing
//     cluster (STATE_DIR/installed.log), for storage, observability, validate, status and destroy;
//     ownedOnCluster(): from that record and the cluster's own answers, what is provably ours there
//     (destroy removes it, footprint counts it);
//   - runPhase()/step(): a list of named steps, each with a status line that always closes
//     (✓ or ✗ with its duration), and a summary at the end; under `task deploy` (PHASE_LABELS=true,
//     set by the deploy graph, where phases run side by side) every line starts with "[phase] ";
//   - parallel(): steps side by side inside a phase (each branch's tool calls see which branch they
//     belong to in PLATFORM_BRANCH, as they see their phase in PLATFORM_PHASE: bench/ replays them);
//   - runsInWsl(): whether this Linux runs under WSL (hosts and trust-ca say what Windows needs);
//   - parseQuantity()/quantityMiB(): Kubernetes quantities (requests, limits, volume sizes) as numbers;
//   - subnetRange(), namesAddress(), ingressUrl(), resolvesByItself(): addresses and names;
//   - appRecords()/appRecordPath(): the apps `task app` deployed, from STATE_DIR/apps/*.json;
//   - recordRunFact()/runFact(): what one phase of a `task deploy` proved (the API answers, the
//     Docker checks passed), reused by the later phases of the same run (DEPLOY_RUN_ID);
//     toolVersionOutput(): a tool's version output, asked once per binary;
//   - small shared actions: applyManifests() (diff first, apply only the difference; with
//     CLUSTER=existing our new namespaces get NAMESPACE_OWNER_LABEL),
//     helmRelease() (install or upgrade only when chart or values differ; deployedReleases() and
//     deployedValues() read Helm once per process, and a revision's values are recorded in
//     STATE_DIR/helm, so an unchanged release needs only `helm list`), requireCluster() (prints
//     and confirms the target),
//     podDiagnostics() (unready pods with events and logs), renderTemplate() and writeFileAtomic();
//   - our routes on the cluster's own ingress controller (INGRESS_CLASS): routeSpecsOf() (from the
//     IngressRoutes), ingressManifests() (Ingresses of that class and the TLS Secrets they name),
//     tlsSecretManifest(), ingressService() (INGRESS_SERVICE's parts), ingressClassAddressOf() (the
//     address the controller published on them: endpoints, validate).
// .env keys: all of CONFIG_KEYS (loadConfig); the target reads CLUSTER, KUBECONFIG, KUBE_CONTEXT.
// Tools: whatever the calling phase runs through run(). No tool is called at import time.
import { AsyncLocalStorage } from 'node:async_hooks';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline/promises';
import { isDeepStrictEqual } from 'node:util';
import { fileURLToPath } from 'node:url';
import dotenv from 'dotenv';
import kleur from 'kleur';
import YAML from 'yaml';
import { $ } from 'zx';

/** Repository root: the folder that holds scripts/. */
export const PROJECT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Every version the platform pins. Talos and Kubernetes are defaults of .env keys; the rest are fixed. */
export const PINNED = {
  talos: 'v1.13.9',
  kubernetes: '1.36.3',
  helmMinimum: '3.17.0',
  /** `kubectl wait --for=create` (observability phase) needs 1.31. */
  kubectlMinimum: '1.31.0',
  localPathProvisioner: 'v0.0.37',
  registryImage: 'registry:2.8.3',
  /** Small image for one-shot pods: the storage smoke test and local-path-provisioner's helper pods. */
  busyboxImage: 'busybox:1.37.0',
  charts: {
    traefik: { repo: 'https://traefik.github.io/charts', chart: 'traefik', version: '41.3.0' },
    prometheus: { repo: 'https://prometheus-community.github.io/helm-charts', chart: 'prometheus', version: '29.27.0' },
    loki: { repo: 'https://grafana-community.github.io/helm-charts', chart: 'loki', version: '18.11.0' },
    grafana: { repo: 'https://grafana-community.github.io/helm-charts', chart: 'grafana', version: '12.11.1' },
    k8sMonitoring: { repo: 'https://grafana.github.io/helm-charts', chart: 'k8s-monitoring', version: '4.4.0' },
    /** Tempo 2.10.8 (the chart's appVersion), single binary. */
    tempo: { repo: 'https://grafana-community.github.io/helm-charts', chart: 'tempo', version: '2.2.4' },
  },
} as const;

/** Traefik's NodePorts; the control-plane container publishes HTTP_PORT/HTTPS_PORT onto them. */
export const INGRESS_NODE_PORTS = { http: 30080, https: 30443 } as const;

/** The names Traefik routes, each under DOMAIN: grafana.<DOMAIN> and so on (certificates, hosts block, routes). */
export const INGRESS_HOSTS = ['grafana', 'prometheus', 'alertmanager', 'traefik', 'app'] as const;

/**
 * Where pods send OTLP: the receiver collector of k8s-monitoring's applicationObservability feature
 * (Alloy), gRPC and HTTP. Apps get it as OTEL_EXPORTER_OTLP_ENDPOINT (otlpEndpoint('http')).
 */
export const OTLP_RECEIVER = { service: 'k8s-monitoring-alloy-receiver', namespace: 'monitoring', grpcPort: 4317, httpPort: 4318 } as const;
export const otlpEndpoint = (protocol: 'grpc' | 'http') =>
  `http://${OTLP_RECEIVER.service}.${OTLP_RECEIVER.namespace}.svc.cluster.local:${protocol === 'grpc' ? OTLP_RECEIVER.grpcPort : OTLP_RECEIVER.httpPort}`;

/** Tempo (traces): its release and Service (HTTP API on httpPort), and its Grafana datasource uid. */
export const TEMPO = { release: 'tempo', namespace: 'monitoring', service: 'tempo', httpPort: 3200, datasourceUid: 'tempo' } as const;

/**
 * The address the routed names resolve to: HOST_IP, except 127.0.0.1 for HOST_IP=0.0.0.0 (the
 * ports are then published on every address, and browsers refuse 0.0.0.0 as a destination).
 */
export const namesAddress = (hostIp: string) => (hostIp === '0.0.0.0' ? '127.0.0.1' : hostIp);

/** https://<name>.<DOMAIN>[:HTTPS_PORT]<path>: a UI as the browser reaches it (no port when it is 443). */
export const ingressUrl = (cfg: Pick<Config, 'DOMAIN' | 'HTTPS_PORT'>, name: string, pathName = '') =>
  `https://${name}.${cfg.DOMAIN}${cfg.HTTPS_PORT === 443 ? '' : `:${cfg.HTTPS_PORT}`}${pathName}`;

/**
 * Names under localhost resolve to the loopback address by themselves (RFC 6761: Chrome, Edge,
 * Firefox, curl and systemd-resolved do it; Safari and plain getaddrinfo on macOS do not).
 */
export const resolvesByItself = (domain: string) => domain === 'localhost' || domain.endsWith('.localhost');

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

interface KeySpec<T> {
  default: string;
  /** What is allowed, as the user reads it in an error message and in .env.example. */
  allowed: string;
  /** Returns the typed value, or undefined when the raw text is not allowed. */
  parse: (raw: string) => T | undefined;
  /** A credential: error messages show only its first characters, never the whole value. */
  secret?: boolean;
  /** The default under PROFILE=cluster, where it differs (longer retention, larger volumes). */
  clusterDefault?: string;
}

const key = <T>(spec: KeySpec<T>) => spec;

const intIn = (min: number, max: number) => (raw: string) => {
  if (!/^\d+$/.test(raw)) return undefined;
  const n = Number(raw);
  return n >= min && n <= max ? n : undefined;
};
const port = intIn(1, 65535);
const bool = (raw: string) => (raw === 'true' ? true : raw === 'false' ? false : undefined);
const cpus = (raw: string) => {
  if (!/^\d+(\.\d+)?$/.test(raw)) return undefined;
  const n = Number(raw);
  return n >= 1 && n <= 64 ? n : undefined;
};
/** Memory as MiB; accepts 4GiB, 4096MiB. */
const memoryMiB = (minMiB: number) => (raw: string) => {
  const m = /^(\d+(?:\.\d+)?)(MiB|GiB)$/.exec(raw);
  if (!m) return undefined;
  const mib = Number(m[1]) * (m[2] === 'GiB' ? 1024 : 1);
  return mib >= minMiB && Number.isInteger(mib) ? mib : undefined;
};
/** A Kubernetes storage quantity, in Gi or Mi. */
const quantity = (raw: string) => (/^[1-9]\d*(Gi|Mi)$/.test(raw) ? raw : undefined);
const matching = (re: RegExp) => (raw: string) => (re.test(raw) ? raw : undefined);
const ipv4 = (raw: string) => {
  const parts = raw.split('.');
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255) ? raw : undefined;
};
/** An IPv4 address as a number (for subnet arithmetic). */
export const ipv4Number = (ip: string) => ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
/** First and last address of a subnet such as 10.5.0.0/24, as numbers. */
export function subnetRange(cidr: string): [number, number] {
  const [address, bits] = cidr.split('/');
  const first = ipv4Number(address);
  return [first, first + 2 ** (32 - Number(bits)) - 1];
}
const PRIVATE_RANGES = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'].map(subnetRange);
/** A private IPv4 network of /16 to /24 written with its network address, such as 10.5.0.0/24. */
const privateSubnet = (raw: string) => {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(raw);
  if (!m || !ipv4(m[1])) return undefined;
  const bits = Number(m[2]);
  const [first, last] = subnetRange(raw);
  const isNetworkAddress = first % 2 ** (32 - bits) === 0;
  const isPrivate = PRIVATE_RANGES.some(([start, end]) => first >= start && last <= end);
  return bits >= 16 && bits <= 24 && isNetworkAddress && isPrivate ? raw : undefined;
};

/** '' (not set), or an absolute http(s) URL with a host and no spaces. */
const optionalHttpUrl = (raw: string) => {
  if (raw === '') return raw;
  if (/\s/.test(raw)) return undefined;
  try {
    const u = new URL(raw);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' ? raw : undefined;
  } catch {
    return undefined;
  }
};

/** Every .env key, its default and what it allows. .env.example documents exactly these. */
export const CONFIG_KEYS = {
  CLUSTER: key({
    default: 'talos',
    allowed: 'talos (a Talos cluster in Docker, made by `task talos`) or existing (the cluster of KUBECONFIG and KUBE_CONTEXT)',
    parse: (raw: string) => (raw === 'talos' || raw === 'existing' ? raw : undefined),
  }),
  KUBECONFIG: key({
    default: '',
    allowed: 'empty (~/.kube/config) or kubeconfig file paths separated by ":" (read only with CLUSTER=existing)',
    parse: matching(/^[^\n]*$/),
  }),
  KUBE_CONTEXT: key({
    default: '',
    allowed: "empty (the kubeconfig's current context) or the name of a context in it (read only with CLUSTER=existing)",
    parse: matching(/^[^\s]*$/),
  }),
  PROFILE: key({
    default: 'laptop',
    allowed: 'laptop (small requests and limits, one replica) or cluster (more memory, retention and replicas where the charts support it)',
    parse: (raw: string) => (raw === 'laptop' || raw === 'cluster' ? raw : undefined),
  }),
  IMAGE_REGISTRY: key({
    default: '',
    allowed: 'empty (the local registry, or kind/k3d image loading with CLUSTER=existing) or a registry host and path the nodes pull from, such as ghcr.io/me or registry.example.com:5000/team',
    parse: matching(/^$|^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?(\/[a-z0-9._-]+)*$/),
  }),
  INGRESS_CLASS: key({
    default: '',
    allowed: "empty (the platform installs Traefik) or the name of an IngressClass the cluster already has, such as nginx (only with CLUSTER=existing)",
    parse: matching(/^$|^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/),
  }),
  INGRESS_SERVICE: key({
    default: '',
    allowed: "empty, or your ingress controller's Service as <namespace>/<service>[:<port name or number>] (default port 443), such as ingress-nginx/ingress-nginx-controller:https; validate port-forwards to it (only with INGRESS_CLASS)",
    parse: matching(/^$|^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\/[a-z]([a-z0-9-]{0,61}[a-z0-9])?(:([1-9]\d{0,4}|[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?))?$/),
  }),
  CLUSTER_NAME: key({
    default: 'talos-local',
    allowed: 'lowercase letters, digits and "-", starting with a letter, at most 40 characters',
    parse: matching(/^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/),
  }),
  TALOS_VERSION: key({ default: PINNED.talos, allowed: 'a Talos release tag such as v1.13.9', parse: matching(/^v\d+\.\d+\.\d+$/) }),
  KUBERNETES_VERSION: key({
    default: PINNED.kubernetes,
    allowed: 'a Kubernetes version without "v", such as 1.36.3',
    parse: matching(/^\d+\.\d+\.\d+$/),
  }),
  WORKERS: key({ default: '2', allowed: 'a whole number from 1 to 5', parse: intIn(1, 5) }),
  CONTROLPLANE_CPUS: key({ default: '2', allowed: 'a number of CPUs from 1 to 64, such as 2 or 1.5', parse: cpus }),
  CONTROLPLANE_MEMORY: key({
    default: '4GiB',
    allowed: 'a size in MiB or GiB of at least 2GiB, such as 4GiB or 3072MiB',
    parse: memoryMiB(2048),
  }),
  WORKER_CPUS: key({ default: '2', allowed: 'a number of CPUs from 1 to 64, such as 2 or 1.5', parse: cpus }),
  WORKER_MEMORY: key({
    default: '4GiB',
    allowed: 'a size in MiB or GiB of at least 1GiB, such as 4GiB or 2048MiB',
    parse: memoryMiB(1024),
  }),
  CLUSTER_SUBNET: key({
    default: '10.5.0.0/24',
    allowed: 'a private IPv4 network from /16 to /24 written with its network address, such as 10.5.0.0/24 or 192.168.50.0/24',
    parse: privateSubnet,
  }),
  HOST_IP: key({ default: '127.0.0.1', allowed: 'an IPv4 address of this machine, such as 127.0.0.1', parse: ipv4 }),
  HTTP_PORT: key({ default: '80', allowed: 'a TCP port from 1 to 65535', parse: port }),
  HTTPS_PORT: key({ default: '443', allowed: 'a TCP port from 1 to 65535', parse: port }),
  DOMAIN: key({
    default: 'localhost',
    allowed: 'a DNS name in lowercase, such as localhost, dev.localhost or local.dev',
    parse: matching(/^(?=.{1,200}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/),
  }),
  REGISTRY_PORT: key({ default: '5001', allowed: 'a TCP port from 1 to 65535', parse: port }),
  PULL_THROUGH_CACHE: key({ default: 'true', allowed: 'true or false', parse: bool }),
  STATE_DIR: key({
    default: '.state',
    allowed: 'a folder path, relative to the repository or absolute, without spaces',
    parse: matching(/^[^\s]+$/),
  }),
  PROMETHEUS_RETENTION: key({
    default: '15d',
    allowed: 'a Prometheus duration such as 15d, 36h or 2w',
    parse: matching(/^[1-9]\d*(h|d|w)$/),
    clusterDefault: '30d',
  }),
  PROMETHEUS_STORAGE: key({ default: '10Gi', allowed: 'a volume size such as 10Gi or 512Mi', parse: quantity, clusterDefault: '50Gi' }),
  LOKI_RETENTION: key({
    default: '168h',
    allowed: 'a whole number of hours of at least 24, such as 168h (Loki retention runs in 24h steps)',
    parse: (raw: string) => {
      const m = /^(\d+)h$/.exec(raw);
      return m && Number(m[1]) >= 24 && Number(m[1]) % 24 === 0 ? raw : undefined;
    },
    clusterDefault: '720h',
  }),
  LOKI_STORAGE: key({ default: '5Gi', allowed: 'a volume size such as 5Gi or 512Mi', parse: quantity, clusterDefault: '50Gi' }),
  TEMPO_RETENTION: key({
    default: '72h',
    allowed: 'a whole number of hours, such as 72h',
    parse: matching(/^[1-9]\d*h$/),
  }),
  TEMPO_STORAGE: key({ default: '2Gi', allowed: 'a volume size such as 2Gi or 512Mi', parse: quantity }),
  SAMPLE_TRAFFIC: key({ default: 'true', allowed: 'true or false', parse: bool }),
  ALERT_WEBHOOK_URL: key({
    default: '',
    allowed: 'empty (alerts stay in Alertmanager and Grafana), or an http:// or https:// URL such as https://hooks.slack.com/services/T000/B000/XXXX',
    parse: optionalHttpUrl,
    secret: true,
  }),
};

type Keys = typeof CONFIG_KEYS;
export type Config = { [K in keyof Keys]: NonNullable<ReturnType<Keys[K]['parse']>> } & {
  /** Absolute path of the state directory. */
  stateDir: string;
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Validates a set of raw values (already merged: shell over .env over defaults) into a Config. */
export function parseConfig(raw: Record<string, string | undefined>): Config {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(CONFIG_KEYS) as [string, KeySpec<unknown>][]) {
    const given = raw[name];
    const fallback = raw.PROFILE?.trim() === 'cluster' && spec.clusterDefault ? spec.clusterDefault : spec.default;
    const text = given === undefined || given === '' ? fallback : given.trim();
    const value = spec.parse(text);
    if (value === undefined) {
      const shown = spec.secret ? `${name} (${text.length} characters, starting "${text.slice(0, 8)}…")` : `${name}="${given}"`;
      problems.push(
        `${shown} is not allowed: expected ${spec.allowed}. ` +
          `Fix it in .env (or your shell), or remove it to use the default${fallback === '' ? ' (not set)' : ` "${fallback}"`}.`,
      );
    }
    out[name] = value;
  }
  const ports = ['HTTP_PORT', 'HTTPS_PORT', 'REGISTRY_PORT'] as const;
  for (const [i, a] of ports.entries()) {
    for (const b of ports.slice(i + 1)) {
      if (out[a] !== undefined && out[a] === out[b]) {
        problems.push(`${a} and ${b} are both ${out[a]}: each needs its own port. Change one of them in .env.`);
      }
    }
  }
  if (out.INGRESS_CLASS && out.CLUSTER === 'talos') {
    problems.push(
      `INGRESS_CLASS="${out.INGRESS_CLASS}" needs CLUSTER=existing: the Talos cluster runs its own Traefik on HTTP_PORT/HTTPS_PORT. ` +
        'Remove INGRESS_CLASS from .env (or your shell), or set CLUSTER=existing with KUBECONFIG/KUBE_CONTEXT of a cluster that runs that ingress controller.',
    );
  }
  if (out.INGRESS_SERVICE && out.INGRESS_CLASS === '') {
    problems.push(
      `INGRESS_SERVICE="${out.INGRESS_SERVICE}" names an ingress controller's Service, but INGRESS_CLASS is not set (the platform installs Traefik then, and validate forwards to it). ` +
        'Set INGRESS_CLASS to that controller\'s IngressClass, or remove INGRESS_SERVICE.',
    );
  }
  if (typeof out.DOMAIN === 'string' && typeof out.HOST_IP === 'string' && resolvesByItself(out.DOMAIN) && namesAddress(out.HOST_IP) !== '127.0.0.1') {
    problems.push(
      `DOMAIN=${out.DOMAIN} names resolve to 127.0.0.1, but HOST_IP=${out.HOST_IP} publishes the UIs elsewhere. ` +
        'Set HOST_IP=127.0.0.1 (or 0.0.0.0), or set DOMAIN to a name of your own (such as local.dev) and run `task hosts`.',
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);
  out.stateDir = path.resolve(PROJECT_DIR, out.STATE_DIR as string);
  return out as Config;
}

/** Reads .env (ENV_FILE overrides its path) under the shell's environment, then validates it. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const envFile = env.ENV_FILE ?? path.join(PROJECT_DIR, '.env');
  const fromFile = fs.existsSync(envFile) ? dotenv.parse(fs.readFileSync(envFile)) : {};
  return parseConfig({ ...fromFile, ...env });
}

const QUANTITY_SUFFIX: Record<string, number> = {
  '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("100m", "1.5", "512Mi", "1G", "1e3") as a plain number (cores, bytes). */
export function parseQuantity(raw: string | number): number {
  const m = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?)$/.exec(String(raw).trim());
  if (!m) throw new Error(`not a Kubernetes quantity: ${JSON.stringify(raw)}`);
  return Number(m[1] + (m[2] ?? '')) * QUANTITY_SUFFIX[m[3] ?? ''];
}

/** A volume size of the config (10Gi, 512Mi) in MiB. */
export const quantityMiB = (raw: string) => parseQuantity(raw) / 2 ** 20;

/** Path of a file in the state directory. */
export const statePath = (cfg: Pick<Config, 'stateDir'>, ...parts: string[]) => path.join(cfg.stateDir, ...parts);

/**
 * The file that marks a folder as this platform's STATE_DIR. claimStateDir() writes it when a phase
 * first writes there (creating the folder, or adopting an empty one or one of an earlier version).
 */
export const STATE_DIR_MARKER = '.talos-local-platform';

/**
 * Every entry the phases write at the top of STATE_DIR (the first part of each statePath() in
 * scripts/). `task destroy` deletes only these; anything else in the folder is left alone.
 */
export const STATE_ENTRIES = [
  'kubeconfig', // talos
  'talosconfig', // talos
  'talos', // talos: config patches and talosctl's cluster state
  'phases.log', // runPhase, for the closing summary of `task deploy`
  'helm', // helmRelease: the values of each release, and the record of each deployed revision's values
  'storage', // storage: the rendered kustomization
  'certs', // traefik: the local CA and the server certificate
  'grafana-admin-password', // observability
  'hosts', // hosts: the hosts block, the dnsmasq snippet and backups of the hosts file
  'apps', // app: one record per app that `task app` deployed (appRecords)
  'target.json', // confirmTarget: the remote context a `task deploy` run confirmed (CLUSTER=existing)
  'installed.log', // helmRelease, storage: what the platform installed on the cluster (recordInstalled), for destroy
  'run-facts', // recordRunFact: what a phase of one `task deploy` proved, for the later phases of that run
  'tool-versions', // toolVersionOutput: each tool's version output, by the binary that gave it
] as const;

/** What `task app` created for one app, in $STATE_DIR/apps/<name>.json (scripts/app.ts writes it). */
export interface AppRecord {
  name: string;
  namespace: string;
  /** The route's host name, <name>.<DOMAIN> (the sample app's: app.<DOMAIN>). */
  host: string;
  image: string;
  metricsPort: number | null;
  metricsPath: string | null;
  /** The Grafana dashboard uid, app-<name>. */
  dashboard: string;
  /**
   * The metric names Prometheus had for the app's job when the dashboard was made from them (absent
   * when it was made from the assumed names): with the same image, a re-run makes the same dashboard
   * from these without asking Prometheus again.
   */
  metricNames?: string[];
}

/** Where `task app` keeps the record of one app: $STATE_DIR/apps/<name>.json. */
export const appRecordPath = (cfg: Pick<Config, 'stateDir'>, name: string) => statePath(cfg, 'apps', `${name}.json`);

/** The records of the apps `task app` deployed, sorted by name (hosts, endpoints, status, traefik and validate read them). */
export function appRecords(cfg: Pick<Config, 'stateDir'>): AppRecord[] {
  const dir = path.join(cfg.stateDir, 'apps');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as AppRecord);
}

/** A file only the talos phase writes, in every version: what proves an unmarked folder was ours. */
const EARLIER_STATE_PROOF = path.join('talos', 'patches', 'registry-mirrors.yaml');

/**
 * Why STATE_DIR may not be used, or undefined when it is ours or free: it is ours with the marker,
 * or when every entry in it is one the phases write and it holds talos/patches/registry-mirrors.yaml
 * (a folder of an earlier version, before the marker); free when missing or empty. A file, or any
 * other folder, is refused: a `kubeconfig` alone proves nothing.
 */
export function stateDirProblem(cfg: Config): string | undefined {
  const fix = 'Set STATE_DIR in .env to a new or empty folder, or remove it to use the default ".state".';
  if (!fs.existsSync(cfg.stateDir)) return undefined;
  if (!fs.statSync(cfg.stateDir).isDirectory()) return `STATE_DIR="${cfg.STATE_DIR}" (${cfg.stateDir}) is a file, not a folder. ${fix}`;
  const entries = fs.readdirSync(cfg.stateDir);
  if (entries.length === 0 || entries.includes(STATE_DIR_MARKER)) return undefined;
  const foreign = entries.filter((e) => !(STATE_ENTRIES as readonly string[]).includes(e));
  if (foreign.length === 0 && fs.existsSync(path.join(cfg.stateDir, EARLIER_STATE_PROOF))) return undefined;
  const what = foreign.length
    ? `holds files this platform did not write (${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? ', …' : ''})`
    : `holds files with the names this platform uses (${entries.join(', ')}) but not its ${EARLIER_STATE_PROOF}`;
  return (
    `STATE_DIR="${cfg.STATE_DIR}" (${cfg.stateDir}) ${what} and no ${STATE_DIR_MARKER}, so nothing is written there and nothing in it is deleted. ${fix}` +
    (foreign.length ? '' : ` If this platform made it, mark it as ours: touch ${statePath(cfg, STATE_DIR_MARKER)}`)
  );
}

/** Stops a phase before it does anything when STATE_DIR is not ours (see stateDirProblem). Writes nothing. */
export function checkStateDir(cfg: Config): void {
  const problem = stateDirProblem(cfg);
  if (problem) throw new UserError(problem);
}

/**
 * Makes STATE_DIR ours before a phase first writes there: creates it, or marks a free one, with the
 * marker. Idempotent; refuses what checkStateDir refuses.
 */
/** Whether STATE_DIR carries our marker: the phases record facts and caches only in a folder that is ours. */
export const isOurStateDir = (cfg: Pick<Config, 'stateDir'>) => fs.existsSync(statePath(cfg, STATE_DIR_MARKER));

export function claimStateDir(cfg: Config): 'created' | 'adopted' | 'ours' {
  const marker = statePath(cfg, STATE_DIR_MARKER);
  if (isOurStateDir(cfg)) return 'ours';
  checkStateDir(cfg);
  const exists = fs.existsSync(cfg.stateDir);
  fs.mkdirSync(cfg.stateDir, { recursive: true });
  fs.writeFileSync(marker, 'This folder is the STATE_DIR of the Talos Local Observability Platform. `task destroy` deletes only the entries the platform wrote here.\n');
  return exists ? 'adopted' : 'created';
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

export const verbose = process.argv.includes('--verbose') || process.env.VERBOSE === 'true';

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly output: string,
    hint?: string,
  ) {
    super(`command failed (exit ${exitCode}): ${command}${output ? `\n${indent(output.trim())}` : ''}${hint ? `\n${hint}` : ''}`);
  }
}

/** A failure the user can fix, with the fix in its message; printed without a stack. */
export class UserError extends Error {}

export interface RunOptions {
  input?: string;
  env?: Record<string, string>;
  /** Exit codes that are answers rather than failures (e.g. 1 from `kubectl diff`). */
  okCodes?: number[];
  /** Added to the error when the command fails. */
  hint?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const indent = (text: string) => text.replace(/^/gm, '    ');
const quoteArg = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
export const commandLine = (cmd: string, args: string[]) => [cmd, ...args].map(quoteArg).join(' ');

/** Commands this process has run (a phase's tool calls: `--verbose` prints them and their count). */
let commandsRun = 0;

/** Runs a command without a shell; a non-zero exit (not in okCodes) throws a CommandError. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  commandsRun++;
  const line = commandLine(cmd, args);
  if (verbose) say(kleur.gray(`    $ ${line}`));
  let result: RunResult;
  try {
    const p = await $({
      nothrow: true,
      quiet: true,
      input: opts.input,
      env: { ...process.env, PLATFORM_BRANCH: branchPath.getStore() ?? '', ...opts.env },
    })`${cmd} ${args}`;
    result = { code: p.exitCode ?? 1, stdout: p.stdout, stderr: p.stderr };
  } catch (err) {
    throw new CommandError(line, null, String((err as Error).message), opts.hint);
  }
  if (verbose && result.stderr.trim()) say(kleur.gray(indent(result.stderr.trim())));
  if (result.code !== 0 && !(opts.okCodes ?? []).includes(result.code)) {
    const output = [result.stdout.trim(), result.stderr.trim()].filter(Boolean).join('\n');
    throw new CommandError(line, result.code, output, opts.hint);
  }
  return result;
}

/** Whether a command is on PATH. */
export async function hasTool(name: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, name))) return true;
  }
  return false;
}

/** Whether this is Linux under WSL (Windows Subsystem for Linux), where browsers run on Windows. */
export function runsInWsl(env: NodeJS.ProcessEnv = process.env, procVersionFile = '/proc/version'): boolean {
  if (env.WSL_DISTRO_NAME) return true;
  return fs.existsSync(procVersionFile) && /microsoft/i.test(fs.readFileSync(procVersionFile, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// The cluster target: which cluster every kubectl and helm call of a run goes to
// ---------------------------------------------------------------------------------------------

/** The kubeconfig the talos phase writes (STATE_DIR/kubeconfig): the target of CLUSTER=talos. */
export const kubeconfigPath = (cfg: Config) => statePath(cfg, 'kubeconfig');

/** The label on every namespace the platform creates: destroy with CLUSTER=existing deletes only namespaces that carry it. */
export const NAMESPACE_OWNER_LABEL = 'talos-local.platform/owner';

/**
 * The label on every object the platform applies with kubectl (manifests/, ingressManifests, the
 * observability phase's Secrets and dashboards): with CLUSTER=existing, destroy deletes the ones in
 * namespaces that are not ours by it.
 */
export const PART_OF_LABEL = { 'app.kubernetes.io/part-of': 'talos-local-observability' } as const;

/** Where every kubectl and helm call of this run goes. */
export interface ClusterTarget {
  kind: 'talos' | 'existing';
  /** The kubeconfig files, in KUBECONFIG order (one for talos: STATE_DIR/kubeconfig). */
  files: string[];
  /** The context every call names (existing); talos: admin@CLUSTER_NAME, the only one in our kubeconfig. */
  context: string;
  /** The API server URL of that context ('' for talos). */
  server: string;
}

interface KubeconfigJson {
  'current-context'?: string;
  contexts?: { name: string; context?: { cluster?: string } }[];
  clusters?: { name: string; cluster?: { server?: string } }[];
}

/** The kubeconfig files of CLUSTER=existing: KUBECONFIG's ":"-separated list, or ~/.kube/config when empty. */
export const kubeconfigFiles = (cfg: Pick<Config, 'KUBECONFIG'>, home = os.homedir()) =>
  cfg.KUBECONFIG ? cfg.KUBECONFIG.split(':').filter(Boolean).map((f) => path.resolve(f.replace(/^~(?=\/|$)/, home))) : [path.join(home, '.kube', 'config')];

/**
 * The context a run deploys to, from the kubeconfig files as kubectl merges them (client-go
 * clientcmd loader: the first file that sets current-context, or that defines a context or
 * cluster of a name, wins; files that do not exist are skipped): KUBE_CONTEXT, or when empty the
 * current context. Returns its name and server, or the problem naming the key and the fix.
 */
export function resolveContext(
  files: { file: string; text: string | undefined }[],
  wanted: string,
): { context: string; server: string } | { problem: string } {
  const present = files.filter((f) => f.text !== undefined);
  const where = files.map((f) => f.file).join(':');
  if (present.length === 0) {
    return { problem: `KUBECONFIG names no kubeconfig file that exists (${where}). Set KUBECONFIG in .env to your cluster's kubeconfig (":"-separated for several), or set CLUSTER=talos.` };
  }
  const configs = present.map((f) => (YAML.parse(f.text!) ?? {}) as KubeconfigJson);
  const first = <T>(pick: (c: KubeconfigJson) => T | undefined) => configs.map(pick).find((v) => v !== undefined && v !== '');
  const contextNames = [...new Set(configs.flatMap((c) => (c.contexts ?? []).map((x) => x.name)))];
  const choices = contextNames.length ? `contexts there: ${contextNames.join(', ')}` : 'it defines no context';
  const name = wanted || first((c) => c['current-context']);
  if (!name) return { problem: `KUBE_CONTEXT is empty and ${where} sets no current context (${choices}). Set KUBE_CONTEXT in .env to the context to deploy to.` };
  const context = first((c) => c.contexts?.find((x) => x.name === name));
  if (!context) {
    return { problem: `${wanted ? `KUBE_CONTEXT="${wanted}"` : `the current context "${name}"`} is not a context in ${where} (${choices}). Set KUBE_CONTEXT in .env to one of them.` };
  }
  const clusterName = context.context?.cluster ?? '';
  const server = first((c) => c.clusters?.find((x) => x.name === clusterName))?.cluster?.server;
  if (!server) return { problem: `context "${name}" names cluster "${clusterName}", which has no server in ${where}. Fix that kubeconfig, or set KUBE_CONTEXT in .env to another context.` };
  return { context: name, server };
}

/** The targets this process resolved, by KUBECONFIG and KUBE_CONTEXT: each is read once. */
const targetsResolved = new Map<string, ClusterTarget>();

/**
 * The cluster of this run, resolved once per process: with CLUSTER=existing the context is read
 * from the kubeconfig files when the run starts and then named in every call, so the user switching
 * the current context mid-run changes nothing. Throws a UserError naming the key when it cannot be resolved.
 */
export function clusterTarget(cfg: Config): ClusterTarget {
  if (cfg.CLUSTER === 'talos') return { kind: 'talos', files: [kubeconfigPath(cfg)], context: `admin@${cfg.CLUSTER_NAME}`, server: '' };
  const files = kubeconfigFiles(cfg);
  const key = JSON.stringify([files, cfg.KUBE_CONTEXT]);
  const known = targetsResolved.get(key);
  if (known) return known;
  const resolved = resolveContext(files.map((file) => ({ file, text: fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined })), cfg.KUBE_CONTEXT);
  if ('problem' in resolved) throw new UserError(`CLUSTER=existing: ${resolved.problem}`);
  const target: ClusterTarget = { kind: 'existing', files: files.filter((f) => fs.existsSync(f)), ...resolved };
  targetsResolved.set(key, target);
  return target;
}

/**
 * The arguments and environment that point a tool at the target: `--kubeconfig <file>` for one
 * file, the KUBECONFIG environment variable for several (`--kubeconfig` takes one file; kubectl
 * and helm merge the list as client-go does); `--context` (kubectl) or `--kube-context` (helm,
 * pkg/cli/environment.go of v3.17 and v4) with CLUSTER=existing.
 */
export function targetArgs(target: ClusterTarget, tool: 'kubectl' | 'helm'): { args: string[]; env: Record<string, string> } {
  const contextFlag = target.kind === 'existing' ? [tool === 'helm' ? '--kube-context' : '--context', target.context] : [];
  if (target.files.length === 1) return { args: ['--kubeconfig', target.files[0], ...contextFlag], env: {} };
  return { args: contextFlag, env: { KUBECONFIG: target.files.join(':') } };
}

/** A command line for the user that reaches the same cluster as this run: `kubectl --kubeconfig … --context …`, for hints. */
export function toolHint(cfg: Config, tool: 'kubectl' | 'helm'): string {
  const { args, env } = targetArgs(clusterTarget(cfg), tool);
  return [...(env.KUBECONFIG ? [`KUBECONFIG=${quoteArg(env.KUBECONFIG)}`] : []), commandLine(tool, args)].join(' ');
}

/** "cluster: …": the line each phase prints at its start, so nobody deploys to the wrong cluster by accident. */
export function targetLine(cfg: Config): string {
  const t = clusterTarget(cfg);
  return t.kind === 'talos'
    ? `cluster: Talos "${cfg.CLUSTER_NAME}" in Docker (kubeconfig ${t.files[0]})`
    : `cluster: context ${t.context} (server ${t.server}) from ${t.files.join(':')}`;
}

/** Context names of local clusters (kind, k3d, Docker Desktop, OrbStack, Colima, minikube, Rancher Desktop). */
const LOCAL_CONTEXT = /^(kind-|k3d-|docker-desktop$|orbstack$|colima($|-)|minikube$|rancher-desktop$)/;

/**
 * Whether a context is a cluster on this machine or its LAN, to deploy to without asking: its
 * server is loopback, a private IPv4 address (10/8, 172.16/12, 192.168/16), localhost, *.local,
 * host.docker.internal or kubernetes.docker.internal (Docker Desktop's), or its name is one that
 * kind, k3d, Docker Desktop, OrbStack, Colima, minikube or Rancher Desktop give their contexts.
 */
export function isLocalTarget(context: string, server: string): boolean {
  if (LOCAL_CONTEXT.test(context)) return true;
  let host: string;
  try {
    host = new URL(server).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return false;
  }
  if (['localhost', '::1', 'host.docker.internal', 'kubernetes.docker.internal'].includes(host)) return true;
  if (host.endsWith('.localhost') || host.endsWith('.local')) return true;
  if (!ipv4(host)) return false;
  const n = ipv4Number(host);
  return host.startsWith('127.') || PRIVATE_RANGES.some(([start, end]) => n >= start && n <= end);
}

/** STATE_DIR/target.json: the remote context a `task deploy` run (DEPLOY_RUN_ID) confirmed, so its later phases do not ask again. */
const targetRecord = (cfg: Config) => statePath(cfg, 'target.json');

/** The command that confirms a remote target without a terminal: this script with --yes (`task deploy -- --yes` in the deploy graph). */
const confirmCommand = () =>
  process.env.DEPLOY_RUN_ID && process.env.PHASE_LABELS === 'true'
    ? 'task deploy -- --yes'
    : `npx tsx ${path.relative(PROJECT_DIR, process.argv[1] ?? 'scripts/<phase>.ts')} ${[...process.argv.slice(2), '--yes'].join(' ')}`;

/**
 * Confirms the target before a phase changes anything: a local one (isLocalTarget) and CLUSTER=talos
 * need nothing; a remote-looking one needs --yes, the confirmation of an earlier phase of the same
 * `task deploy` run (DEPLOY_RUN_ID, in STATE_DIR/target.json), or a "y" on a terminal. Without a
 * terminal it refuses, naming the command that confirms; it writes nothing before the answer.
 * Returns how it was confirmed.
 */
export async function confirmTarget(cfg: Config, argv = process.argv): Promise<string> {
  const t = clusterTarget(cfg);
  if (t.kind === 'talos') return 'ours';
  if (isLocalTarget(t.context, t.server)) return 'local';
  const run = process.env.DEPLOY_RUN_ID ?? '';
  const record = () => {
    claimStateDir(cfg);
    writeFileAtomic(targetRecord(cfg), `${JSON.stringify({ run, context: t.context, server: t.server })}\n`);
  };
  if (argv.includes('--yes')) {
    if (run) record();
    return 'confirmed by --yes';
  }
  if (run && fs.existsSync(targetRecord(cfg))) {
    const earlier = JSON.parse(fs.readFileSync(targetRecord(cfg), 'utf8'));
    if (earlier.run === run && earlier.context === t.context && earlier.server === t.server) return 'confirmed earlier in this deploy';
  }
  const question = `Deploy to ${t.context} (${t.server})?`;
  if (!process.stdin.isTTY) {
    throw new UserError(`context ${t.context} (server ${t.server}) looks like a remote cluster, and there is no terminal to ask "${question}". Nothing was changed. Confirm with: ${confirmCommand()}`);
  }
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  const answer = await rl.question(labelled(`${question} [y/N] `));
  rl.close();
  if (!/^y(es)?$/i.test(answer.trim())) throw new UserError(`not confirmed: nothing was changed on ${t.context}.`);
  if (run) record();
  return 'confirmed';
}


export const helm = (cfg: Config, args: string[], opts: RunOptions = {}) => {
  const target = targetArgs(clusterTarget(cfg), 'helm');
  return run('helm', [...target.args, ...args], { ...opts, env: { ...target.env, ...opts.env } });
};
/**
 * The arguments and environment kubectl() runs with, for a kubectl this process keeps running in
 * the background (validate's port-forward), which run() cannot do: it must reach the same cluster.
 */
export const kubectlTarget = (cfg: Config): { args: string[]; env: Record<string, string> } => targetArgs(clusterTarget(cfg), 'kubectl');
export const kubectl = (cfg: Config, args: string[], opts: RunOptions = {}) => {
  const target = kubectlTarget(cfg);
  return run('kubectl', [...target.args, ...args], { ...opts, env: { ...target.env, ...opts.env } });
};

/**
 * What the platform installed on a cluster of CLUSTER=existing (STATE_DIR/installed.log; with
 * CLUSTER=talos the whole cluster is ours and nothing is recorded): the Helm releases of
 * helmRelease (as namespace/name), the StorageClass of its volumes and whether local-path is ours
 * (storage), the CRDs a release of ours created (helmRelease, CLUSTER=existing). Observability,
 * validate, status and destroy read it.
 */
export interface InstalledRecord {
  /** The releases helmRelease installed or upgraded, as namespace/name. */
  releases?: string[];
  /** The StorageClass of the platform's volumes: local-path, or the cluster's default class. */
  storageClass?: string;
  /** Whether the storage phase installed local-path-provisioner (false: the cluster's default class is used). */
  localPath?: boolean;
  /** CustomResourceDefinitions that did not exist before a release of ours was installed. */
  crds?: string[];
  /** The cluster-scoped objects of local-path-provisioner besides its namespace, as Kind/name (storage). */
  clusterObjects?: string[];
}

const installedLog = (cfg: Config) => statePath(cfg, 'installed.log');
const LISTS = ['releases', 'crds', 'clusterObjects'] as const;

/** Folds a record over another: the lists add up, the other fields are replaced. */
const foldInstalled = (a: InstalledRecord, b: InstalledRecord): InstalledRecord => {
  const out: InstalledRecord = { ...a, ...b };
  for (const list of LISTS) {
    const all = [...new Set([...(a[list] ?? []), ...(b[list] ?? [])])].sort();
    if (all.length) out[list] = all;
  }
  return out;
};

/** What the phases recorded, folded in the order they wrote it. */
export function installedRecord(cfg: Config): InstalledRecord {
  if (!fs.existsSync(installedLog(cfg))) return {};
  return fs.readFileSync(installedLog(cfg), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as InstalledRecord).reduce(foldInstalled, {});
}

/**
 * Records what a phase installed: one line appended to installed.log, only when it adds something.
 * Appended, not rewritten: phases of `task deploy` record side by side (as runPhase's phases.log).
 */
export function recordInstalled(cfg: Config, change: InstalledRecord): void {
  const before = installedRecord(cfg);
  if (isDeepStrictEqual(foldInstalled(before, change), foldInstalled(before, {}))) return;
  fs.mkdirSync(cfg.stateDir, { recursive: true });
  fs.appendFileSync(installedLog(cfg), `${JSON.stringify(change)}\n`);
}

/** The StorageClass of the platform's volumes: the one the storage phase recorded, local-path before it ran. */
export const volumeClass = (cfg: Config) => installedRecord(cfg).storageClass ?? 'local-path';

/** Chart names of the platform's releases (PINNED.charts): a release of another chart is never ours. */
const OUR_CHARTS = Object.values(PINNED.charts).map((c) => c.chart as string);

/** What destroy removes from a cluster the platform did not make: only what it installed there. */
export interface OwnedOnCluster {
  releases: { name: string; namespace: string }[];
  namespaces: string[];
  crds: string[];
  clusterObjects: string[];
}

/**
 * The platform's own things on an existing cluster: releases it recorded (namespace/name in
 * installed.log) of one of its charts; namespaces that carry NAMESPACE_OWNER_LABEL=CLUSTER_NAME;
 * CRDs and cluster-scoped objects (local-path's StorageClass and RBAC) it recorded, and only those
 * still there.
 */
export function ownedOnCluster(input: {
  clusterName: string;
  releases: HelmListEntry[];
  namespaces: { metadata: { name: string; labels?: Record<string, string> } }[];
  crds: string[];
  installed: InstalledRecord;
}): OwnedOnCluster {
  const ofOurChart = (chart: string) => OUR_CHARTS.some((c) => chart.startsWith(`${c}-`) && /^v?\d/.test(chart.slice(c.length + 1)));
  return {
    releases: input.releases
      .filter((r) => (input.installed.releases ?? []).includes(`${r.namespace}/${r.name}`) && ofOurChart(r.chart))
      .map((r) => ({ name: r.name, namespace: r.namespace })),
    namespaces: input.namespaces.filter((n) => n.metadata.labels?.[NAMESPACE_OWNER_LABEL] === input.clusterName).map((n) => n.metadata.name),
    crds: (input.installed.crds ?? []).filter((c) => input.crds.includes(c)),
    clusterObjects: input.installed.localPath ? (input.installed.clusterObjects ?? []) : [],
  };
}

let targetShown = false;

/**
 * Fails unless the target cluster answers; then the phase may write to STATE_DIR, and it returns
 * the cluster's name for a status line (CLUSTER_NAME, or "context <ctx>"). It prints the
 * target once (targetLine) and, with CLUSTER=existing, confirms it (confirmTarget) first. The hint
 * says `task talos` only for CLUSTER=talos; for existing it names the context and server.
 */
export async function requireCluster(cfg: Config): Promise<string> {
  const target = clusterTarget(cfg);
  if (!targetShown) note(targetLine(cfg));
  targetShown = true;
  const hint =
    target.kind === 'talos'
      ? `No reachable cluster "${cfg.CLUSTER_NAME}" (kubeconfig ${kubeconfigPath(cfg)}). Run \`task talos\` first.`
      : `The cluster of context ${target.context} (server ${target.server}) does not answer. Check it with \`${toolHint(cfg, 'kubectl')} get --raw /readyz\`, or set KUBE_CONTEXT in .env to another context.`;
  if (target.kind === 'talos' && !fs.existsSync(kubeconfigPath(cfg))) throw new UserError(hint);
  if (target.kind === 'existing') await confirmTarget(cfg);
  // Under `task deploy`, an earlier phase of the same run that saw the API answer stands for this /readyz.
  if (!runFact(cfg, RUN_FACTS.clusterAnswers)) {
    try {
      await kubectl(cfg, ['get', '--raw', '/readyz'], { hint });
    } catch (err) {
      throw new UserError(`${hint}\n${(err as Error).message}`);
    }
  }
  claimStateDir(cfg);
  recordRunFact(cfg, RUN_FACTS.clusterAnswers, true);
  return target.kind === 'talos' ? cfg.CLUSTER_NAME : `context ${target.context}`;
}

// ---------------------------------------------------------------------------------------------
// Facts reused: within one deploy run, and tool versions by binary
// ---------------------------------------------------------------------------------------------

/** The facts a phase of `task deploy` proves and later phases of the same run reuse (one file each: phases run side by side). */
export const RUN_FACTS = {
  /** The Kubernetes API answered (talos read the nodes, or requireCluster its /readyz). */
  clusterAnswers: 'cluster-answers',
  /** The docker CLI's endpoint and `docker info` passed the Docker checks (talos.ts). */
  docker: 'docker',
  /** CLUSTER_SUBNET overlaps no other network and the cluster network exists (the registry phase made sure). */
  clusterNetwork: 'cluster-network',
} as const;

/** How long a run fact stands for a check of its own: a deploy that waited longer checks again. */
export const RUN_FACT_MAX_AGE_MS = 15 * 60_000;

const runFactPath = (cfg: Pick<Config, 'stateDir'>, name: string) => statePath(cfg, 'run-facts', `${name}.json`);

/**
 * Records what this phase proved, for the later phases of the same `task deploy` (DEPLOY_RUN_ID, set
 * by the Taskfile for each phase of one run). Nothing outside a deploy run, nor into a STATE_DIR that
 * is not ours yet. Written atomically; one file per fact, so phases side by side never race on one.
 */
export function recordRunFact(cfg: Pick<Config, 'stateDir'>, name: string, value: unknown): void {
  const run = process.env.DEPLOY_RUN_ID;
  if (!run || !isOurStateDir(cfg)) return;
  writeFileAtomic(runFactPath(cfg, name), `${JSON.stringify({ run, at: Date.now(), value })}\n`);
}

/**
 * A fact an earlier phase of this deploy run recorded, or undefined: outside a deploy run (a phase
 * run alone checks for itself), from another run, older than RUN_FACT_MAX_AGE_MS, or unreadable.
 */
export function runFact<T = unknown>(cfg: Pick<Config, 'stateDir'>, name: string, now = Date.now()): T | undefined {
  const run = process.env.DEPLOY_RUN_ID;
  const file = runFactPath(cfg, name);
  if (!run || !fs.existsSync(file)) return undefined;
  try {
    const fact = JSON.parse(fs.readFileSync(file, 'utf8')) as { run: string; at: number; value: T };
    return fact.run === run && fact.at <= now && now - fact.at <= RUN_FACT_MAX_AGE_MS ? fact.value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Which binary `tool` runs, as "<resolved path>|<size>|<mtime>": another binary, or the same one
 * replaced, gives another key. Undefined when it is not on PATH, or when it is a link to a binary of
 * another name (a version manager such as mise, whose link stays the same when the tool it runs changes).
 */
export function toolBinaryKey(tool: string): string | undefined {
  const onPath = (process.env.PATH ?? '').split(path.delimiter).map((dir) => dir && path.join(dir, tool)).find((f) => f && fs.existsSync(f));
  const resolved = onPath ? fs.realpathSync(onPath) : undefined;
  if (!resolved || path.basename(resolved) !== tool) return undefined;
  const stat = fs.statSync(resolved);
  return `${resolved}|${stat.size}|${stat.mtimeMs}`;
}

/**
 * The output of `<tool> <args>` (a version command), run once per binary: kept in
 * STATE_DIR/tool-versions/<tool>.json under the binary's resolved path, size and mtime, so another
 * binary (an upgrade, another one first on PATH) is asked again. Kept only in a STATE_DIR that is ours,
 * and only for a binary named as the tool (a link into a version manager such as mise is asked each time).
 */
export async function toolVersionOutput(cfg: Pick<Config, 'stateDir'>, tool: string, args: string[]): Promise<string> {
  const binary = toolBinaryKey(tool);
  const key = binary && `${binary}|${args.join(' ')}`;
  const file = statePath(cfg, 'tool-versions', `${tool}.json`);
  if (key && fs.existsSync(file)) {
    try {
      const cached = JSON.parse(fs.readFileSync(file, 'utf8')) as { key: string; output: string };
      if (cached.key === key) return cached.output;
    } catch {
      // unreadable: ask the tool again
    }
  }
  const { stdout } = await run(tool, args);
  if (key && isOurStateDir(cfg)) writeFileAtomic(file, `${JSON.stringify({ key, output: stdout })}\n`);
  return stdout;
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/** Writes through a temporary file in the same folder and a rename; keeps the old mode. Returns false when unchanged. */
export function writeFileAtomic(file: string, content: string, mode?: number): boolean {
  if (fs.existsSync(file) && fs.readFileSync(file, 'utf8') === content) return false;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const keepMode = fs.existsSync(file) ? fs.statSync(file).mode & 0o777 : undefined;
  fs.writeFileSync(tmp, content, { mode: mode ?? keepMode ?? 0o644 });
  fs.renameSync(tmp, file);
  return true;
}

/** Replaces ${NAME} placeholders; an unknown name throws, so a typo never reaches the cluster. */
export function renderTemplate(text: string, vars: Record<string, string | number | boolean>): string {
  return text.replace(/\$\{([A-Z0-9_]+)\}/g, (_, name: string) => {
    if (!(name in vars)) throw new Error(`template placeholder \${${name}} has no value`);
    return String(vars[name]);
  });
}

/** The Secret (type kubernetes.io/tls) of our certificate for *.<DOMAIN>: Traefik's default, and each route namespace's with INGRESS_CLASS. */
export const PLATFORM_TLS_SECRET = 'platform-tls';

/** Secret platform-tls (type kubernetes.io/tls) in `namespace`, from PEM text. */
export function tlsSecretManifest(namespace: string, certPem: string, keyPem: string): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/tls',
    metadata: { name: PLATFORM_TLS_SECRET, namespace, labels: { 'app.kubernetes.io/part-of': 'talos-local-observability' } },
    data: { 'tls.crt': Buffer.from(certPem).toString('base64'), 'tls.key': Buffer.from(keyPem).toString('base64') },
  });
}

/** One route of ours: https://<host> to port <port> of Service <service>, named <name>, in <namespace>. */
export interface RouteSpec {
  name: string;
  namespace: string;
  host: string;
  service: string;
  port: number;
}

/**
 * The routes of Traefik IngressRoute documents (manifests/traefik/ingressroutes.yaml, the apps'
 * route.yaml.tmpl): each one's Host(`…`) rule and its Kubernetes Service with a port number. Routes
 * to Traefik itself (a TraefikService: its dashboard) and other kinds (Middleware) have none.
 */
export function routeSpecsOf(docs: readonly { kind?: string; metadata?: { name?: string; namespace?: string }; spec?: any }[]): RouteSpec[] {
  const out: RouteSpec[] = [];
  for (const d of docs) {
    if (d.kind !== 'IngressRoute') continue;
    for (const r of d.spec?.routes ?? []) {
      const host = /^Host\(`([^`]+)`\)$/.exec(String(r.match ?? ''))?.[1];
      const service = (r.services ?? [])[0];
      if (!host || !service || (service.kind ?? 'Service') !== 'Service') continue;
      if (typeof service.port !== 'number') throw new Error(`IngressRoute ${d.metadata?.namespace}/${d.metadata?.name}: Service port ${JSON.stringify(service.port)} is not a number`);
      out.push({ name: String(d.metadata?.name), namespace: String(d.metadata?.namespace), host, service: String(service.name), port: service.port });
    }
  }
  return out;
}

/**
 * With INGRESS_CLASS: the routes as networking.k8s.io/v1 Ingresses of that class
 * (manifests/ingress/ingress.yaml.tmpl), and before them Secret platform-tls in each of their
 * namespaces and in `alsoSecretIn` (namespaces whose routes come with their app): one YAML text.
 */
export function ingressManifests(ingressClass: string, routes: readonly RouteSpec[], cert: { crt: string; key: string }, alsoSecretIn: readonly string[] = []): string {
  const template = fs.readFileSync(path.join(PROJECT_DIR, 'manifests', 'ingress', 'ingress.yaml.tmpl'), 'utf8');
  const namespaces = [...new Set([...routes.map((r) => r.namespace), ...alsoSecretIn])];
  return [
    ...namespaces.map((ns) => tlsSecretManifest(ns, cert.crt, cert.key)),
    ...routes.map((r) =>
      renderTemplate(template, { NAME: r.name, NAMESPACE: r.namespace, HOST: r.host, SERVICE: r.service, PORT: r.port, INGRESS_CLASS: ingressClass, TLS_SECRET: PLATFORM_TLS_SECRET }),
    ),
  ].join('---\n');
}

/** INGRESS_SERVICE (<namespace>/<service>[:<port>]) as its parts, the port 443 when not given; undefined when not set. */
export function ingressService(cfg: Pick<Config, 'INGRESS_SERVICE'>): { namespace: string; service: string; port: string } | undefined {
  const m = /^([^/]+)\/([^:]+)(?::(.+))?$/.exec(cfg.INGRESS_SERVICE);
  return m ? { namespace: m[1], service: m[2], port: m[3] ?? '443' } : undefined;
}

/** Where the ingress answers on an existing cluster (Traefik, or the controller of INGRESS_CLASS): an address, its HTTPS port, and how it got them. */
export interface IngressAddress {
  address: string;
  port: number;
  /** What the address is: "LoadBalancer …" or "NodePort … on node …". */
  how: string;
  /** The address is a DNS name (a cloud load balancer): the names need a CNAME, not an /etc/hosts line. */
  isHostname?: boolean;
}

/** An Ingress as `kubectl get ingresses -o json` shows it, as far as its address needs. */
export interface IngressJson {
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: { ingressClassName?: string };
  status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } };
}

/** The namespace of our Ingresses the address is read from (grafana, prometheus, alertmanager: the traefik phase's). */
export const ROUTES_NAMESPACE = 'monitoring';

/**
 * With INGRESS_CLASS: the address the controller published on our Ingresses of that class
 * (status.loadBalancer.ingress[0]: IP, else hostname), HTTPS on 443, or why there is none yet.
 */
export function ingressClassAddressOf(ingresses: readonly IngressJson[], className: string): IngressAddress | { missing: string } {
  const ours = ingresses.filter((i) => i.spec?.ingressClassName === className && i.metadata.labels?.['app.kubernetes.io/part-of'] === 'talos-local-observability');
  if (ours.length === 0) return { missing: `no Ingress of ours with class ${className} in ${ROUTES_NAMESPACE} yet: run \`task traefik\`` };
  for (const i of ours) {
    const lb = i.status?.loadBalancer?.ingress?.[0];
    const address = lb?.ip || lb?.hostname;
    if (address) return { address, port: 443, how: `IngressClass ${className}: ${address}:443 (published on Ingress ${i.metadata.namespace ?? ROUTES_NAMESPACE}/${i.metadata.name})`, isHostname: !lb?.ip };
  }
  return {
    missing:
      `the ${className} controller has published no address on our Ingresses yet (\`kubectl --namespace ${ROUTES_NAMESPACE} get ingress ${ours[0].metadata.name} --watch\`; ` +
      'some controllers never publish one, e.g. on hostNetwork without a published Service): reach it at the address its Service or nodes have, or through a port-forward to its Service (INGRESS_SERVICE)',
  };
}

/** Reads a YAML file of the repository (helm-values/, manifests/ ...). */
export const readProjectYaml = (relPath: string) => YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, relPath), 'utf8'));

// ---------------------------------------------------------------------------------------------
// Cluster actions shared by several phases
// ---------------------------------------------------------------------------------------------

/**
 * Applies manifests only when `kubectl diff` sees a difference. Returns "unchanged" or "applied".
 * One diff of everything first (a re-run ends there); when it sees a difference or fails, namespaces
 * go first, in a diff/apply of their own: the server-side dry run behind `kubectl diff` rejects an
 * object whose Namespace does not exist yet, even when the same input creates it.
 */
export async function applyManifests(cfg: Config, yamlText: string, serverSide = false): Promise<'unchanged' | 'applied'> {
  const ss = serverSide ? ['--server-side', '--force-conflicts'] : [];
  const docs = YAML.parseAllDocuments(yamlText).filter((d) => d.contents !== null);
  const isNamespace = (d: YAML.Document) => d.get('kind') === 'Namespace';
  if (cfg.CLUSTER === 'existing') await labelOwnNamespaces(cfg, docs.filter(isNamespace));
  const batches = [docs.filter(isNamespace), docs.filter((d) => !isNamespace(d))].filter((b) => b.length > 0);
  if (batches.length > 1) {
    // On a re-run every namespace exists, and one diff of everything says nothing differs.
    const whole = await kubectl(cfg, ['diff', ...ss, '-f', '-'], { input: docs.map((d) => d.toString()).join('---\n'), okCodes: [1] }).catch(() => undefined);
    if (whole?.code === 0) return 'unchanged';
  }
  let result: 'unchanged' | 'applied' = 'unchanged';
  for (const batch of batches) {
    const input = batch.map((d) => d.toString()).join('---\n');
    const diff = await kubectl(cfg, ['diff', ...ss, '-f', '-'], { input, okCodes: [1] });
    if (diff.code === 0) continue;
    await kubectl(cfg, ['apply', ...ss, '-f', '-'], { input });
    result = 'applied';
  }
  return result;
}

/**
 * With CLUSTER=existing, marks the Namespaces in these documents with NAMESPACE_OWNER_LABEL=CLUSTER_NAME
 * (destroy deletes only namespaces that carry it), except one that already exists without it: a
 * namespace the user had before the platform stays theirs (and is never deleted by destroy).
 */
async function labelOwnNamespaces(cfg: Config, namespaces: YAML.Document[]): Promise<void> {
  if (namespaces.length === 0) return;
  const names = namespaces.map((d) => String(d.getIn(['metadata', 'name'])));
  const existing: { metadata: { name: string; labels?: Record<string, string> } }[] =
    JSON.parse((await kubectl(cfg, ['get', 'namespaces', '--output', 'json'])).stdout).items ?? [];
  for (const [i, doc] of namespaces.entries()) {
    const found = existing.find((n) => n.metadata.name === names[i]);
    if (found && found.metadata.labels?.[NAMESPACE_OWNER_LABEL] !== cfg.CLUSTER_NAME) continue;
    doc.setIn(['metadata', 'labels', NAMESPACE_OWNER_LABEL], cfg.CLUSTER_NAME);
  }
}

/** The parts of a Pod that say whether, and why not, it is ready. */
export interface PodJson {
  metadata: { name: string; namespace?: string };
  status?: {
    phase?: string;
    conditions?: { type: string; status: string }[];
    initContainerStatuses?: ContainerStatusJson[];
    containerStatuses?: ContainerStatusJson[];
  };
}
interface ContainerStatusJson {
  name: string;
  ready?: boolean;
  restartCount?: number;
  state?: Record<string, { reason?: string; message?: string } | undefined>;
}

/** Pods that are neither Ready nor Succeeded, each with a short reason: "Pending; app: ImagePullBackOff (3 restarts)". */
export function unreadyPods(pods: PodJson[]): { namespace: string; name: string; reason: string }[] {
  return pods
    .filter((p) => p.status?.phase !== 'Succeeded' && p.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True')
    .map((p) => {
      const waiting = [...(p.status?.initContainerStatuses ?? []), ...(p.status?.containerStatuses ?? [])]
        .filter((c) => !c.ready)
        .map((c) => {
          const [stateName, st] = Object.entries(c.state ?? {})[0] ?? ['unknown', undefined];
          return `${c.name}: ${st?.reason ?? stateName}${c.restartCount ? ` (${c.restartCount} restarts)` : ''}`;
        });
      return {
        namespace: p.metadata.namespace ?? 'default',
        name: p.metadata.name,
        reason: `${p.status?.phase ?? 'Unknown'}${waiting.length ? `; ${waiting.join(', ')}` : ''}`,
      };
    });
}

/** A Deployment, StatefulSet or DaemonSet as `kubectl get -o json` shows it. */
export interface WorkloadJson {
  kind?: string;
  metadata: { name: string; namespace?: string; generation?: number };
  spec?: any;
  status?: any;
}

/**
 * Why a workload's rollout is not complete, or undefined when it is: the rules of `kubectl rollout
 * status` (kubectl pkg/polymorphichelpers/rollout_status.go), stricter for a partitioned
 * StatefulSet (every pod at the update revision). A spec change raises metadata.generation in the
 * same write, so a rollout the controller has not seen yet is never complete here.
 */
export function rolloutPending(w: WorkloadJson): string | undefined {
  const st = w.status ?? {};
  const generation = w.metadata.generation ?? 0;
  if (!st.observedGeneration || generation > st.observedGeneration) return 'spec update not observed yet';
  const strategy = w.spec?.updateStrategy?.type ?? 'RollingUpdate';
  switch (w.kind) {
    case 'Deployment': {
      const wanted = w.spec?.replicas ?? 1;
      if ((st.conditions ?? []).some((c: any) => c.type === 'Progressing' && c.reason === 'ProgressDeadlineExceeded')) return 'progress deadline exceeded';
      if ((st.updatedReplicas ?? 0) < wanted) return `${st.updatedReplicas ?? 0} of ${wanted} replicas updated`;
      if ((st.replicas ?? 0) > (st.updatedReplicas ?? 0)) return `${st.replicas - st.updatedReplicas} old replicas pending termination`;
      if ((st.availableReplicas ?? 0) < (st.updatedReplicas ?? 0)) return `${st.availableReplicas ?? 0} of ${st.updatedReplicas} updated replicas available`;
      return undefined;
    }
    case 'DaemonSet':
      if (strategy !== 'RollingUpdate') return `update strategy ${strategy}`;
      if ((st.updatedNumberScheduled ?? 0) < (st.desiredNumberScheduled ?? 0)) return `${st.updatedNumberScheduled ?? 0} of ${st.desiredNumberScheduled} pods updated`;
      if ((st.numberAvailable ?? 0) < (st.desiredNumberScheduled ?? 0)) return `${st.numberAvailable ?? 0} of ${st.desiredNumberScheduled} pods available`;
      return undefined;
    case 'StatefulSet': {
      const wanted = w.spec?.replicas ?? 1;
      if (strategy !== 'RollingUpdate') return `update strategy ${strategy}`;
      if ((st.readyReplicas ?? 0) < wanted) return `${st.readyReplicas ?? 0} of ${wanted} pods ready`;
      if (st.updateRevision !== st.currentRevision) return `pods not all at revision ${st.updateRevision}`;
      return undefined;
    }
    default:
      return `not a workload kind kubectl rolls out: ${w.kind}`;
  }
}

/**
 * Which of these workloads of one namespace still need `kubectl rollout status`: one `kubectl get`
 * of their kinds reads them all; a workload missing or not rolled out (rolloutPending) is returned,
 * one rolled out is not. So a re-run with nothing to roll out makes one read instead of a wait per
 * workload, and a changed one is still waited for.
 */
export async function pendingRollouts(cfg: Config, namespace: string, workloads: readonly { kind: string; name: string }[]): Promise<Set<string>> {
  const kinds = [...new Set(workloads.map((w) => w.kind.toLowerCase()))];
  const items: WorkloadJson[] = JSON.parse((await kubectl(cfg, ['get', kinds.join(','), '--namespace', namespace, '--output', 'json'])).stdout).items ?? [];
  const ref = (kind: string, name: string) => `${kind.toLowerCase()}/${name}`;
  const rolledOut = new Set(items.filter((w) => rolloutPending(w) === undefined).map((w) => ref(w.kind ?? '', w.metadata.name)));
  return new Set(workloads.map((w) => ref(w.kind, w.name)).filter((r) => !rolledOut.has(r)));
}

const lastLines = (text: string, n: number) => text.trim().split('\n').filter(Boolean).slice(-n);

/** What a failed command itself said (kubectl's "Error from server …"), rather than our "command failed" line. */
export const failureReason = (err: unknown) => (err instanceof CommandError && err.output.trim() ? err.output.trim() : (err as Error).message);

/**
 * What a user needs when pods do not become ready: every unready pod of these namespaces with its
 * reason, its last events and its last log lines. Never throws: diagnostics must not hide the failure.
 */
export async function podDiagnostics(cfg: Config, namespaces: readonly string[], maxPods = 8): Promise<string> {
  const out: string[] = [];
  for (const namespace of namespaces) {
    let pods: PodJson[];
    try {
      pods = JSON.parse((await kubectl(cfg, ['get', 'pods', '--namespace', namespace, '--output', 'json'])).stdout).items ?? [];
    } catch (err) {
      out.push(`cannot list pods in ${namespace}: ${failureReason(err)}`);
      continue;
    }
    const bad = unreadyPods(pods);
    if (bad.length === 0) continue;
    type EventJson = { involvedObject?: { name?: string }; reason?: string; message?: string; type?: string };
    const events: EventJson[] = await kubectl(cfg, ['get', 'events', '--namespace', namespace, '--output', 'json']).then(
      (r) => JSON.parse(r.stdout).items ?? [],
      () => [],
    );
    for (const p of bad.slice(0, maxPods)) {
      out.push(`pod ${namespace}/${p.name} is not Ready (${p.reason})`);
      for (const e of events.filter((e) => e.involvedObject?.name === p.name).slice(-5)) {
        out.push(`    event ${e.type ?? ''} ${e.reason ?? ''}: ${e.message ?? ''}`);
      }
      // With --all-containers, kubectl prints the lines of the containers that have a log and
      // fails on the first that has none (waiting to start, kubelet unreachable): show both.
      const logs = await kubectl(cfg, ['logs', p.name, '--namespace', namespace, '--all-containers', '--tail', '10'], { okCodes: [1] }).catch(
        (err: unknown) => ({ code: 1, stdout: '', stderr: failureReason(err) }),
      );
      for (const line of lastLines(logs.stdout, 10)) out.push(`    log: ${line}`);
      if (logs.code !== 0) for (const line of lastLines(logs.stderr, 5)) out.push(`    kubectl logs: ${line}`);
    }
    if (bad.length > maxPods) out.push(`… and ${bad.length - maxPods} more unready pods in ${namespace}`);
  }
  if (out.length === 0) return `every pod in ${namespaces.join(', ')} is Ready`;
  out.push(`More: ${toolHint(cfg, 'kubectl')} --namespace <namespace> describe pod <name>`);
  return out.join('\n');
}

/**
 * `helm list` flags that show a release in whatever state its last revision is (a failed or
 * half-done install too), the same on Helm 3 and 4: Helm 3 lists only deployed and failed releases
 * by default and Helm 4 removed its `--all`, but both take these state filters.
 */
export const HELM_LIST_EVERY_STATE = ['--deployed', '--failed', '--pending', '--uninstalling', '--uninstalled', '--superseded'];

export interface HelmReleaseSpec {
  release: string;
  namespace: string;
  chart: { repo: string; chart: string; version: string };
  /** Values in merge order (later wins), as objects; they are written to one file in the state dir. */
  values: Record<string, unknown>[];
  timeout?: string;
}

/** Deep-merges Helm values objects as Helm does: maps merge, everything else is replaced. */
export function mergeValues(...layers: Record<string, unknown>[]): Record<string, unknown> {
  const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const out: Record<string, unknown> = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      out[k] = isMap(v) && isMap(out[k]) ? mergeValues(out[k] as Record<string, unknown>, v) : v;
    }
  }
  return out;
}

/** A release as `helm list --output json` shows it (revision a number as text; updated when its last revision was deployed). */
export interface HelmListEntry {
  name: string;
  namespace: string;
  revision: string;
  updated: string;
  chart: string;
  status: string;
}

/**
 * The user values of one revision of a release, as Helm answered them (or as we passed them to the
 * upgrade that made that revision), in STATE_DIR/helm/<release>.deployed.json. A revision's values
 * never change; any upgrade or rollback (ours or anyone's) makes a new revision, and a reinstall at the
 * same number has another `updated`: so a record that matches `helm list` in all of these stands for
 * `helm get values`.
 */
interface HelmDeployedRecord {
  namespace: string;
  revision: string;
  updated: string;
  chart: string;
  values: Record<string, unknown>;
}

const helmRecordPath = (cfg: Config, release: string) => statePath(cfg, 'helm', `${release}.deployed.json`);

/** The recorded values of exactly this listed revision, or undefined. */
function recordedValues(cfg: Config, entry: HelmListEntry): Record<string, unknown> | undefined {
  const file = helmRecordPath(cfg, entry.name);
  if (!fs.existsSync(file)) return undefined;
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as HelmDeployedRecord;
    const same = r.namespace === entry.namespace && r.revision === entry.revision && r.updated === entry.updated && r.chart === entry.chart;
    return same ? r.values : undefined;
  } catch {
    return undefined;
  }
}

function recordValues(cfg: Config, entry: HelmListEntry, values: Record<string, unknown>): void {
  const record: HelmDeployedRecord = { namespace: entry.namespace, revision: entry.revision, updated: entry.updated, chart: entry.chart, values };
  writeFileAtomic(helmRecordPath(cfg, entry.name), `${JSON.stringify(record, null, 2)}\n`);
}

// What a phase read from Helm, once per process: the releases of every namespace, and the values of each.
let releasesRead: Promise<HelmListEntry[]> | undefined;
const valuesRead = new Map<string, Promise<Record<string, unknown> | undefined>>();

/** Every release in every state, from one `helm list --all-namespaces` per process (reread after a change). */
export function deployedReleases(cfg: Config): Promise<HelmListEntry[]> {
  releasesRead ??= helm(cfg, ['list', '--all-namespaces', ...HELM_LIST_EVERY_STATE, '--output', 'json']).then((r) => JSON.parse(r.stdout || '[]') as HelmListEntry[]);
  return releasesRead;
}

/**
 * The user values of a deployed release, or undefined when it is not installed: from the record of
 * the revision `helm list` shows (see HelmDeployedRecord), else `helm get values` (once per process),
 * which is then recorded for that revision.
 */
export function deployedValues(cfg: Config, release: string, namespace: string): Promise<Record<string, unknown> | undefined> {
  const key = `${namespace}/${release}`;
  if (!valuesRead.has(key)) {
    const read = async () => {
      const entry = (await deployedReleases(cfg)).find((r) => r.name === release && r.namespace === namespace);
      if (!entry) return undefined;
      const recorded = recordedValues(cfg, entry);
      if (recorded) return recorded;
      const r = await helm(cfg, ['get', 'values', release, '--namespace', namespace, '--output', 'json'], { okCodes: [1] });
      if (r.code !== 0) return undefined;
      const values = (JSON.parse(r.stdout || 'null') ?? {}) as Record<string, unknown>;
      if (isOurStateDir(cfg)) recordValues(cfg, entry, values);
      return values;
    };
    valuesRead.set(key, read());
  }
  return valuesRead.get(key)!;
}

/**
 * The Helm repository to fetch a chart from: its own, or for a pinned chart (PINNED.charts) the
 * environment variable CHART_REPOSITORY_MIRROR (not a .env key) when set: one repository that serves
 * every pinned chart at its pinned version (an internal mirror; the real API server tests' local one).
 */
export function chartRepository(repo: string, env: NodeJS.ProcessEnv = process.env): string {
  const mirror = env.CHART_REPOSITORY_MIRROR;
  if (!mirror || !Object.values(PINNED.charts).some((c) => c.repo === repo)) return repo;
  if (!/^https?:\/\/[^\s/]+/.test(mirror)) {
    throw new UserError(`CHART_REPOSITORY_MIRROR="${mirror}" is not the http(s) URL of a Helm repository (helm --repo takes no oci://). Set it to one, e.g. https://charts.example.internal/helm, or unset it to use the charts' own repositories.`);
  }
  return mirror.replace(/\/+$/, '');
}

/**
 * Installs or upgrades a release only when the deployed one differs in chart version, status or
 * values. Returns what it did and why, for the step's status line.
 */
export async function helmRelease(cfg: Config, spec: HelmReleaseSpec): Promise<string> {
  const repo = chartRepository(spec.chart.repo);
  const values = mergeValues(...spec.values);
  const valuesFile = statePath(cfg, 'helm', `${spec.release}.values.yaml`);
  // Helm reads YAML 1.1, where an unquoted no/on/yes is a boolean: write it so that strings stay strings.
  writeFileAtomic(valuesFile, YAML.stringify(values, { version: '1.1' }));

  const current = (await deployedReleases(cfg)).find((r) => r.name === spec.release && r.namespace === spec.namespace);
  const wantChart = `${spec.chart.chart}-${spec.chart.version}`;
  let reason = 'not installed';
  if (current?.status.startsWith('pending-')) {
    // An earlier run stopped mid-operation; Helm refuses every upgrade until the release is settled.
    const h = `${toolHint(cfg, 'helm')} --namespace ${spec.namespace}`;
    throw new UserError(
      `release ${spec.release} is stuck in status ${current.status} (an earlier run was interrupted), and Helm refuses to change it until that is settled. ` +
        (current.status === 'pending-install'
          ? `Remove the half-installed release (\`${h} uninstall ${spec.release}\`) and run this again.`
          : `Roll back to the last good revision (\`${h} rollback ${spec.release}\`) and run this again.`),
    );
  }
  // On a cluster that is not ours, destroy removes only the releases recorded here.
  if (cfg.CLUSTER === 'existing') recordInstalled(cfg, { releases: [`${spec.namespace}/${spec.release}`] });
  if (current) {
    const deployed = (await deployedValues(cfg, spec.release, spec.namespace)) ?? {};
    if (current.chart !== wantChart) reason = `chart ${current.chart} → ${wantChart}`;
    else if (current.status !== 'deployed') reason = `status ${current.status}`;
    else if (!isDeepStrictEqual(deployed, JSON.parse(JSON.stringify(values)))) reason = 'values changed';
    else return `unchanged (${wantChart})`;
  }
  releasesRead = undefined;
  valuesRead.delete(`${spec.namespace}/${spec.release}`);
  // On a cluster that is not ours, the CRDs this install adds are recorded: destroy removes only those.
  const crdsBefore = cfg.CLUSTER === 'existing' && !current ? await crdNames(cfg) : undefined;
  const upgrade = await helm(cfg, [
    'upgrade', '--install', spec.release, spec.chart.chart,
    '--repo', repo,
    '--version', spec.chart.version,
    '--namespace', spec.namespace, '--create-namespace',
    '--values', valuesFile,
    '--wait', '--timeout', spec.timeout ?? '10m',
  ]);
  // The revision this upgrade made (helm prints "REVISION: n"), as `helm list` shows it now: its values are ours.
  const made = /^REVISION: (\d+)$/m.exec(upgrade.stdout)?.[1];
  releasesRead = undefined;
  const after = (await deployedReleases(cfg)).find((r) => r.name === spec.release && r.namespace === spec.namespace);
  if (after && after.revision === made) recordValues(cfg, after, JSON.parse(JSON.stringify(values)));
  if (crdsBefore) {
    const added = (await crdNames(cfg)).filter((n) => !crdsBefore.includes(n));
    if (added.length) recordInstalled(cfg, { crds: added });
  }
  return `${current ? 'upgraded' : 'installed'} ${wantChart} (${reason})`;
}

/** The names of the cluster's CustomResourceDefinitions. */
export const crdNames = async (cfg: Config): Promise<string[]> =>
  (await kubectl(cfg, ['get', 'customresourcedefinitions', '--output', 'name'])).stdout.split('\n').filter(Boolean).map((l) => l.replace(/^[^/]*\//, ''));

// ---------------------------------------------------------------------------------------------
// Steps and phases
// ---------------------------------------------------------------------------------------------

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/**
 * The phase whose lines this process prints, when phases run side by side: runPhase sets it when
 * PHASE_LABELS=true (the deploy graph in Taskfile.yml sets that). Empty otherwise.
 */
let phaseLabel = '';

/**
 * Lines as one text, each line starting with "[phase] " when phases run side by side. One
 * console.log/console.error call is one write: lines of other phases never land inside it.
 */
export const labelled = (text: string, label = phaseLabel) => (label ? text.replace(/^/gm, `${kleur.gray(`[${label}]`)} `) : text);
const say = (text: string) => console.log(labelled(text));

interface StepRecord {
  title: string;
  ok: boolean;
  ms: number;
  /** Whether the step changed something (a check never does; "unchanged…"/"already…" details do not). */
  changed: boolean;
}

const steps: StepRecord[] = [];

/**
 * Runs one named step. Prints "• title …" when it starts and "✓ title (1.2s) detail" or
 * "✗ title (1.2s)" when it ends, whatever happens, each a line of its own. The step returns its
 * detail line; an action whose detail starts with "unchanged" or "already" changed nothing.
 */
export async function step(title: string, fn: () => Promise<string | void>, kind: 'action' | 'check' = 'action'): Promise<void> {
  say(`${kleur.gray('•')} ${title} …`);
  const start = Date.now();
  try {
    const detail = (await fn()) ?? '';
    const ms = Date.now() - start;
    steps.push({ title, ok: true, ms, changed: kind === 'action' && !/^(unchanged|already)/.test(detail) });
    say(`${kleur.green('✓')} ${title} ${kleur.gray(`(${seconds(ms)})`)}${detail ? ` ${detail}` : ''}`);
  } catch (err) {
    const ms = Date.now() - start;
    steps.push({ title, ok: false, ms, changed: false });
    say(`${kleur.red('✗')} ${title} ${kleur.gray(`(${seconds(ms)})`)}`);
    throw err;
  }
}

/** The parallel() branch the current code runs in: "" outside any, "0.1/" in branch 1 of group 0, nested "0.1/2.0/". */
const branchPath = new AsyncLocalStorage<string>();
let parallelGroups = 0;

/** Runs branches at the same time; waits for all, then fails with the first failure. */
export async function parallel(...branches: (() => Promise<unknown>)[]): Promise<void> {
  const group = `${branchPath.getStore() ?? ''}${parallelGroups++}`;
  const results = await Promise.allSettled(branches.map((branch, i) => branchPath.run(`${group}.${i}/`, branch)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** A step that only reads and verifies: it never counts as a change. */
export const check = (title: string, fn: () => Promise<string | void>) => step(title, fn, 'check');

/** Prints a line that is not a step: a hint, a warning or an instruction. */
export const note = (text: string) => say(`  ${kleur.cyan('›')} ${text}`);
export const warn = (text: string) => say(`  ${kleur.yellow('!')} ${text}`);

/** What phases.log holds per phase run: the closing summary of `task deploy` reads it (scripts/summary.ts). */
export interface PhaseRecord {
  run: string;
  phase: string;
  ok: boolean;
  ms: number;
  changed: number;
  /** When the phase started and ended, in ms since the epoch (records of earlier versions lack them). */
  start?: number;
  end?: number;
  /** The phase's longest step: the wait that held it back most. */
  longest?: { title: string; ms: number };
}

/** The failure block of a phase: what failed, the command's output and what to do, as one text. */
export function failureBlock(phase: string, err: Error): string {
  const expected = err instanceof UserError || err instanceof ConfigError || err instanceof CommandError;
  return kleur.red(`✗ ${phase} failed: ${err.message}`) + (expected ? '' : `\n${kleur.gray(err.stack ?? '')}`);
}

/**
 * Runs a phase: loads config, checks that the state directory is not someone else's
 * (checkStateDir), runs body, prints the summary, and records the phase's result in the state
 * directory's phases.log (read by `task deploy`'s closing summary). Exits non-zero on failure.
 */
export async function runPhase(phase: string, body: (cfg: Config) => Promise<void>): Promise<void> {
  if (process.env.NO_COLOR) kleur.enabled = false;
  if (process.env.PHASE_LABELS === 'true') phaseLabel = phase;
  // The tools this phase runs see which phase called them (run() passes process.env on): the
  // stand-ins' latency log (bench/) attributes their calls by it.
  process.env.PLATFORM_PHASE = phase;
  const start = Date.now();
  let cfg: Config | undefined;
  let ok = false;
  try {
    cfg = loadConfig();
    say(kleur.bold(`▶ ${phase}`));
    checkStateDir(cfg);
    await body(cfg);
    ok = true;
  } catch (err) {
    console.error(labelled(failureBlock(phase, err as Error)));
  }
  const end = Date.now();
  const ms = end - start;
  const changed = steps.filter((s) => s.changed).length;
  const failedStep = steps.find((s) => !s.ok);
  say(
    ok
      ? `${kleur.green('✓')} ${kleur.bold(phase)} done in ${seconds(ms)}: ${steps.length} steps, ${changed === 0 ? 'nothing changed' : `${changed} changed something`}`
      : `${kleur.red('✗')} ${kleur.bold(phase)} failed in ${seconds(ms)}${failedStep ? ` at "${failedStep.title}"` : ''}`,
  );
  if (verbose) note(`${commandsRun} tool calls (docker, talosctl, kubectl, helm …)`);
  // Only into a folder that is ours, and not after `task clean` removed it: a log line is no reason to create it again.
  if (cfg && process.env.DEPLOY_RUN_ID && isOurStateDir(cfg)) {
    const longest = steps.reduce<StepRecord | undefined>((a, s) => (a && a.ms >= s.ms ? a : s), undefined);
    const record: PhaseRecord = { run: process.env.DEPLOY_RUN_ID, phase, ok, ms, changed, start, end, ...(longest ? { longest: { title: longest.title, ms: longest.ms } } : {}) };
    fs.appendFileSync(statePath(cfg, 'phases.log'), `${JSON.stringify(record)}\n`);
  }
  process.exitCode = ok ? 0 : 1;
}

/** True when the script file is the process's entry point (not imported by a test). */
export const isMain = (metaUrl: string) => process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(metaUrl);
