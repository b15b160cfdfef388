// Phase "observability" (`task observability`): Prometheus (with its Alertmanager subchart), Loki,
// Tempo, Alloy (grafana/k8s-monitoring, with the OTLP receiver apps send traces, metrics and logs
// to) and Grafana in namespace `monitoring`, each a pinned Helm release (versions in PINNED.charts,
// lib.ts).
//
// What it does, in order:
//   0. reads dashboards/*.json, alerts/*.rules.yaml and helm-values/*.yaml: a broken one stops the
//      phase before any tool is called, naming the file;
//   1. checks that the cluster in the state directory answers, and that PROMETHEUS_STORAGE,
//      LOKI_STORAGE and TEMPO_STORAGE match the deployed volumes (local-path volumes cannot be
//      resized: it stops and says how to proceed);
//   2. namespace `monitoring` with Pod Security "privileged" (the log collector reads /var/log/pods,
//      node-exporter uses the host's namespaces) and Grafana's admin Secret `grafana-admin` (random
//      password, generated once, also kept in <STATE_DIR>/grafana-admin-password), in one kubectl diff;
//   3. server-side, in one kubectl diff: the Secret alertmanager-webhook holding ALERT_WEBHOOK_URL
//      (empty when unset; Alertmanager reads it from a file, so the URL is never in values, a command
//      line or the output) and the ConfigMap of dashboards/*.json (Grafana's pods mount both);
//   4. Prometheus (every alerts/*.rules.yaml as a rule file, and Alertmanager), Loki, Tempo, Alloy
//      (k8s-monitoring, then waits for its collectors) and Grafana, all at once: none needs another
//      to be up (Alloy and Tempo retry their writes, Grafana its datasources; the charts' hooks only
//      touch their own release).
// Every release is `helm upgrade --install --wait --timeout` through lib.helmRelease, which does
// nothing when chart version and values are unchanged (one `helm list`; a revision's values are
// recorded in STATE_DIR/helm, so an unchanged release needs no `helm get values`). When a release fails, the pods of
// `monitoring` that are not ready are shown with their recent events and log lines; when the Alloy
// collectors do not appear, also the Alloy objects' status and the Alloy Operator's log.
//
// Values: helm-values/<release>.yaml hold everything structural; this script layers on top the
// settings that have one source elsewhere: .env knobs (below), the service URLs (SERVICE_URLS,
// defined once here), the Alloy snippets in alloy/*.alloy and the rule files in alerts/.
//
// .env keys: PROFILE (cluster: the sizes of CLUSTER_PROFILE_SIZES), CLUSTER, KUBECONFIG, KUBE_CONTEXT
//            (the target, lib), PROMETHEUS_RETENTION, PROMETHEUS_STORAGE (volume, and 80 % of it as size retention),
//            LOKI_RETENTION (retention, and the oldest line Loki accepts), LOKI_STORAGE,
//            TEMPO_RETENTION (the compactor's block retention), TEMPO_STORAGE, DOMAIN,
//            HTTPS_PORT (public URLs), CLUSTER_NAME (cluster label), STATE_DIR, ALERT_WEBHOOK_URL
//            (Alertmanager's receiver: Slack for hooks.slack.com, else a webhook).
// Tools: kubectl, helm.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import {
  type Config,
  type HelmReleaseSpec,
  PART_OF_LABEL,
  PINNED,
  PROJECT_DIR,
  TEMPO,
  UserError,
  applyManifests,
  check,
  deployedValues,
  failureReason,
  helmRelease,
  ingressUrl,
  isMain,
  kubectl,
  mergeValues,
  note,
  otlpEndpoint,
  parallel,
  pendingRollouts,
  podDiagnostics,
  quantityMiB,
  readProjectYaml,
  requireCluster,
  runPhase,
  statePath,
  step,
  toolHint,
  volumeClass,
  writeFileAtomic,
} from './lib.ts';

export const NAMESPACE = 'monitoring';

/** In-cluster addresses between the components: the one place they are written down. */
export const SERVICE_URLS = {
  /** prometheus-community/prometheus: Service prometheus-server, port 80 (chart default). */
  prometheus: `http://prometheus-server.${NAMESPACE}.svc:80`,
  /** grafana-community/loki, Monolithic: Service loki, port 3100. */
  loki: `http://loki.${NAMESPACE}.svc:3100`,
  /** grafana-community/grafana: Service grafana, port 80. */
  grafana: `http://grafana.${NAMESPACE}.svc:80`,
  /** The prometheus chart's alertmanager subchart: Service prometheus-alertmanager, port 9093. */
  alertmanager: `http://prometheus-alertmanager.${NAMESPACE}.svc:9093`,
  /** grafana-community/tempo, release tempo: Service tempo, HTTP API (Grafana, validate) on 3200. */
  tempo: `http://${TEMPO.service}.${TEMPO.namespace}.svc:${TEMPO.httpPort}`,
} as const;
export const PROMETHEUS_REMOTE_WRITE_URL = `${SERVICE_URLS.prometheus}/api/v1/write`;
export const LOKI_PUSH_URL = `${SERVICE_URLS.loki}/loki/api/v1/push`;
/** Tempo's OTLP gRPC receiver (the same Service, port 4317): Alloy's traces destination. */
export const TEMPO_OTLP_GRPC_URL = `http://${TEMPO.service}.${TEMPO.namespace}.svc:4317`;

/** Grafana's admin login: Secret name and keys (contract with validate). */
export const GRAFANA_ADMIN = { secret: 'grafana-admin', userKey: 'admin-user', passwordKey: 'admin-password', user: 'admin' } as const;
export const GRAFANA_PASSWORD_FILE = 'grafana-admin-password';

/** The ConfigMap of dashboards, mounted by the grafana chart through dashboardsConfigMaps. */
export const DASHBOARDS_CONFIGMAP = 'grafana-dashboards-platform';
export const DASHBOARDS_DIR = path.join(PROJECT_DIR, 'dashboards');
/** ConfigMaps hold at most 1 MiB; keep room for metadata. */
const CONFIGMAP_LIMIT = 1000 * 1024;

/** The five releases; they are installed side by side (see observability()). */
export const RELEASES = {
  prometheus: { release: 'prometheus', chart: PINNED.charts.prometheus, valuesFile: 'helm-values/prometheus.yaml', timeout: '10m' },
  loki: { release: 'loki', chart: PINNED.charts.loki, valuesFile: 'helm-values/loki.yaml', timeout: '10m' },
  tempo: { release: TEMPO.release, chart: PINNED.charts.tempo, valuesFile: 'helm-values/tempo.yaml', timeout: '10m' },
  k8sMonitoring: {
    release: 'k8s-monitoring',
    chart: PINNED.charts.k8sMonitoring,
    valuesFile: 'helm-values/k8s-monitoring.yaml',
    timeout: '15m',
  },
  grafana: { release: 'grafana', chart: PINNED.charts.grafana, valuesFile: 'helm-values/grafana.yaml', timeout: '10m' },
} as const;
export type ReleaseKey = keyof typeof RELEASES;

/**
 * The sizes of PROFILE=cluster, one table: what it layers over helm-values/ (which hold the laptop
 * sizes: PROFILE=laptop layers nothing). One row per workload: its release, its values path, its
 * requests and limits, and its replicas where the chart runs more than one safely. Left at one:
 * Prometheus (two would each get half of Alloy's remote writes; HA needs a pair with a remote store
 * such as Mimir or Thanos), Loki (its single binary keeps data on its own volume; more need object
 * storage) and Grafana (more need a shared database). Retention and volume defaults of the cluster
 * profile are .env defaults (lib CONFIG_KEYS clusterDefault).
 */
export const CLUSTER_PROFILE_SIZES: {
  key: ReleaseKey;
  path: string[];
  requests: { cpu: string; memory: string };
  limits: { memory: string };
  replicas?: { key: string; count: number };
}[] = [
  { key: 'prometheus', path: ['server'], requests: { cpu: '500m', memory: '2Gi' }, limits: { memory: '4Gi' } },
  // The alertmanager subchart clusters its replicas (--cluster.peer per replica when replicaCount > 1).
  { key: 'prometheus', path: ['alertmanager'], requests: { cpu: '20m', memory: '64Mi' }, limits: { memory: '256Mi' }, replicas: { key: 'replicaCount', count: 2 } },
  { key: 'loki', path: ['singleBinary'], requests: { cpu: '250m', memory: '1Gi' }, limits: { memory: '4Gi' } },
  { key: 'tempo', path: ['tempo'], requests: { cpu: '100m', memory: '512Mi' }, limits: { memory: '2Gi' } },
  { key: 'grafana', path: [], requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } },
];

/** What production would still need beyond PROFILE=cluster: printed by the phase, and in the README. */
export const PRODUCTION_NEEDS =
  'PROFILE=cluster is still one Prometheus, one Loki and one Grafana: production would add object storage for Loki (S3, GCS: ' +
  'its simple-scalable mode), an HA Prometheus pair or a remote store (Mimir, Thanos), and a shared database for more Grafana replicas.';

/**
 * The layers over the values files that depend on the cluster, per release: the PROFILE=cluster
 * sizes, and the StorageClass the storage phase recorded when it is not local-path (an existing
 * cluster's default class). Empty for PROFILE=laptop on local-path, so those values stay as they are.
 */
export function clusterLayers(cfg: Config, storageClass = volumeClass(cfg)): Record<ReleaseKey, Record<string, unknown>[]> {
  const layers: Record<ReleaseKey, Record<string, unknown>[]> = { prometheus: [], loki: [], tempo: [], k8sMonitoring: [], grafana: [] };
  if (cfg.PROFILE === 'cluster') {
    for (const row of CLUSTER_PROFILE_SIZES) {
      const body = { resources: { requests: row.requests, limits: row.limits }, ...(row.replicas && { [row.replicas.key]: row.replicas.count }) };
      layers[row.key].push(row.path.length ? nest(row.path, body) : body);
    }
  }
  if (storageClass !== 'local-path') {
    layers.prometheus.push({ server: { persistentVolume: { storageClass } }, alertmanager: { persistence: { storageClass } } });
    layers.loki.push({ singleBinary: { persistence: { storageClass } } });
    layers.tempo.push({ persistence: { storageClassName: storageClass } });
  }
  return layers;
}

/** Alloy snippets (alloy/*.alloy) and the k8s-monitoring value each one is fed into. */
export const ALLOY_SNIPPETS = [
  { file: 'alloy/annotation-autodiscovery-rules.alloy', valuePath: ['annotationAutodiscovery', 'extraDiscoveryRules'] },
  { file: 'alloy/pod-logs-rules.alloy', valuePath: ['podLogsViaLoki', 'extraDiscoveryRules'] },
  { file: 'alloy/talos-etcd.alloy', valuePath: ['collectors', 'alloy-metrics', 'extraConfig'] },
] as const;

/** Names of the Alloy workloads the Alloy Operator creates (collector names in k8s-monitoring.yaml). */
export const ALLOY_WORKLOADS = [
  { kind: 'statefulset', name: 'k8s-monitoring-alloy-metrics' },
  { kind: 'daemonset', name: 'k8s-monitoring-alloy-logs' },
  { kind: 'deployment', name: 'k8s-monitoring-alloy-receiver' },
] as const;

// ---------------------------------------------------------------------------------------------
// Pure parts (tested)
// ---------------------------------------------------------------------------------------------

/** Share of the Prometheus volume its data may use: the rest is room for compaction and the WAL. */
const PROMETHEUS_VOLUME_SHARE = 0.8;

/**
 * Prometheus' --storage.tsdb.retention.size for a volume of PROMETHEUS_STORAGE (10Gi, 512Mi): 80 % of
 * it, in Prometheus' units (MB = 2^20 bytes). local-path volumes have no quota, so this is the bound.
 */
export function prometheusRetentionSize(storage: string): string {
  return `${Math.floor(quantityMiB(storage) * PROMETHEUS_VOLUME_SHARE)}MB`;
}

/** Alert and recording rules: every alerts/*.rules.yaml, loaded unchanged into Prometheus. */
export const ALERTS_DIR = path.join(PROJECT_DIR, 'alerts');
/** Where the prometheus chart mounts its ConfigMap (serverFiles) in the server: its config-volume. */
const PROMETHEUS_CONFIG_DIR = '/etc/config';

/** A rule file: its name (the ConfigMap key) and its parsed content. */
export type RuleFiles = Record<string, unknown>;

/**
 * Reads alerts/*.rules.yaml (sorted). Each must be YAML with a list of `groups` (Prometheus' rule
 * file format); a broken one stops the phase before anything changes, naming the file.
 */
export function alertRuleFiles(dir: string = ALERTS_DIR): RuleFiles {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.rules.yaml')).sort() : [];
  const out: RuleFiles = {};
  for (const f of files) {
    const where = `alerts/${f}`;
    if (!/^[-._a-zA-Z0-9]+$/.test(f)) throw new UserError(`${where}: a ConfigMap key allows only letters, digits, "-", "_" and "."; rename the file.`);
    let content: unknown;
    try {
      content = YAML.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    } catch (err) {
      throw new UserError(`${where} is not valid YAML (${(err as Error).message.split('\n')[0]}); fix the file and run again.`);
    }
    const groups = (content as { groups?: unknown } | null)?.groups;
    if (!Array.isArray(groups)) {
      throw new UserError(`${where} has no list of "groups": a Prometheus rule file starts with "groups:" (see the existing files); fix it and run again.`);
    }
    out[f] = content;
  }
  return out;
}

/** Alertmanager's receiver of ALERT_WEBHOOK_URL: a Secret mounted into its pod (the URL never sits in values or a ConfigMap). */
export const ALERT_WEBHOOK = {
  secret: 'alertmanager-webhook',
  key: 'url',
  /** The secret's mount in the alertmanager container: helm-values/prometheus.yaml alertmanager.extraSecretMounts. */
  dir: '/etc/alertmanager-webhook',
  receiver: 'webhook',
} as const;

/** The Secret holding ALERT_WEBHOOK_URL (empty when unset, so a removed URL leaves nothing behind). */
export function webhookSecretManifest(url: string): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: ALERT_WEBHOOK.secret, namespace: NAMESPACE, labels: { ...PART_OF_LABEL } },
    data: { [ALERT_WEBHOOK.key]: Buffer.from(url, 'utf8').toString('base64') },
  });
}

/**
 * The receiver for ALERT_WEBHOOK_URL, reading the URL from the mounted Secret at each notification:
 * a Slack incoming webhook (hooks.slack.com) gets Slack messages (slack_configs), any other URL
 * Alertmanager's webhook JSON (webhook_configs). Undefined when the key is not set.
 */
export function webhookReceiver(url: string): Record<string, unknown> | undefined {
  if (!url) return undefined;
  const file = `${ALERT_WEBHOOK.dir}/${ALERT_WEBHOOK.key}`;
  return new URL(url).hostname === 'hooks.slack.com'
    ? { name: ALERT_WEBHOOK.receiver, slack_configs: [{ api_url_file: file, send_resolved: true }] }
    : { name: ALERT_WEBHOOK.receiver, webhook_configs: [{ url_file: file, send_resolved: true }] };
}

/** Builds a nested object from a key path: ['a','b'] + v -> {a: {b: v}}. */
const nest = (keys: readonly string[], value: unknown): Record<string, unknown> =>
  keys.reduceRight<unknown>((acc, k) => ({ [k]: acc }), value) as Record<string, unknown>;

const readText = (relPath: string) => fs.readFileSync(path.join(PROJECT_DIR, relPath), 'utf8');

/**
 * The values layered over helm-values/<release>.yaml: every .env knob, URL, Alloy snippet and rule
 * file (alerts/*.rules.yaml, each a serverFiles key listed in rule_files).
 */
export function overrides(
  cfg: Config,
  read: (relPath: string) => string = readText,
  rules: RuleFiles = alertRuleFiles(),
): Record<ReleaseKey, Record<string, unknown>> {
  const alloy = ALLOY_SNIPPETS.map((s) => nest(s.valuePath, read(s.file)));
  const prometheusFile = YAML.parse(read(RELEASES.prometheus.valuesFile)) as {
    alertmanager?: { config?: { receivers?: { name: string }[] } };
  };
  const webhook = webhookReceiver(cfg.ALERT_WEBHOOK_URL);
  const grafanaFile = YAML.parse(read(RELEASES.grafana.valuesFile)) as {
    datasources?: { 'datasources.yaml'?: { datasources?: { type: string }[] } };
  };
  const urlFor: Record<string, string> = { prometheus: SERVICE_URLS.prometheus, loki: SERVICE_URLS.loki, alertmanager: SERVICE_URLS.alertmanager, tempo: SERVICE_URLS.tempo };
  const datasources = (grafanaFile.datasources?.['datasources.yaml']?.datasources ?? []).map((ds) => {
    if (!urlFor[ds.type]) throw new Error(`${RELEASES.grafana.valuesFile}: datasource type "${ds.type}" has no service URL`);
    return { ...ds, url: urlFor[ds.type] };
  });
  return {
    prometheus: {
      server: {
        retention: cfg.PROMETHEUS_RETENTION,
        retentionSize: prometheusRetentionSize(cfg.PROMETHEUS_STORAGE),
        persistentVolume: { size: cfg.PROMETHEUS_STORAGE },
        baseURL: ingressUrl(cfg, 'prometheus'),
      },
      serverFiles: {
        ...rules,
        'prometheus.yml': { rule_files: Object.keys(rules).map((f) => `${PROMETHEUS_CONFIG_DIR}/${f}`) },
      },
      alertmanager: {
        baseURL: ingressUrl(cfg, 'alertmanager'),
        // Without ALERT_WEBHOOK_URL the file's receivers and route stand; with it, alerts go to the webhook.
        ...(webhook && {
          config: {
            receivers: [...(prometheusFile.alertmanager?.config?.receivers ?? []), webhook],
            route: { receiver: ALERT_WEBHOOK.receiver },
          },
        }),
      },
    },
    loki: {
      // Lines older than the retention would be deleted by the compactor anyway: this bounds the
      // backfill of whole log files on the first deploy.
      loki: { limits_config: { retention_period: cfg.LOKI_RETENTION, reject_old_samples: true, reject_old_samples_max_age: cfg.LOKI_RETENTION } },
      singleBinary: { persistence: { size: cfg.LOKI_STORAGE } },
    },
    tempo: {
      tempo: {
        retention: cfg.TEMPO_RETENTION,
        // Service graph and span metrics, with their exemplars (trace ids), into Prometheus.
        metricsGenerator: { storage: { remote_write: [{ url: PROMETHEUS_REMOTE_WRITE_URL, send_exemplars: true }] } },
      },
      persistence: { size: cfg.TEMPO_STORAGE },
    },
    k8sMonitoring: mergeValues(
      {
        cluster: { name: cfg.CLUSTER_NAME },
        destinations: { prometheus: { url: PROMETHEUS_REMOTE_WRITE_URL }, loki: { url: LOKI_PUSH_URL }, tempo: { url: TEMPO_OTLP_GRPC_URL } },
      },
      ...alloy,
    ),
    grafana: {
      'grafana.ini': { server: { domain: `grafana.${cfg.DOMAIN}`, root_url: ingressUrl(cfg, 'grafana') } },
      datasources: { 'datasources.yaml': { apiVersion: 1, datasources } },
    },
  };
}

/** Everything helmRelease needs for one release: values file, then the overrides. */
export function releaseSpec(
  cfg: Config,
  key: ReleaseKey,
  read: (relPath: string) => string = readText,
  rules: RuleFiles = alertRuleFiles(),
): HelmReleaseSpec {
  const r = RELEASES[key];
  const fileValues = (YAML.parse(read(r.valuesFile)) ?? {}) as Record<string, unknown>;
  return { release: r.release, namespace: NAMESPACE, chart: r.chart, values: [fileValues, overrides(cfg, read, rules)[key], ...clusterLayers(cfg)[key]], timeout: r.timeout };
}

/**
 * Volumes on local-path cannot grow or shrink: a changed size needs the old volume removed first.
 * Who owns the claim decides how: the prometheus chart templates its claim (templates/pvc.yaml), so
 * `helm uninstall` deletes it; Loki's and Tempo's come from their StatefulSet's volumeClaimTemplates
 * and outlive the release, so they are deleted after the uninstall.
 */
export const VOLUMES = {
  prometheus: { key: 'PROMETHEUS_STORAGE', path: ['server', 'persistentVolume', 'size'], pvc: 'prometheus-server', claimOwner: 'release' },
  loki: { key: 'LOKI_STORAGE', path: ['singleBinary', 'persistence', 'size'], pvc: 'storage-loki-0', claimOwner: 'statefulset' },
  tempo: { key: 'TEMPO_STORAGE', path: ['persistence', 'size'], pvc: 'storage-tempo-0', claimOwner: 'statefulset' },
} as const;

/**
 * The problem, if any, with changing the size of a deployed volume: local-path volumes cannot be
 * resized, and the charts' upgrade would fail half-way. Returns the message with both ways out.
 */
export function volumeSizeProblem(
  cfg: Config,
  key: keyof typeof VOLUMES,
  deployedValues: Record<string, unknown> | null,
): string | undefined {
  const v = VOLUMES[key];
  const deployed = v.path.reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], deployedValues ?? undefined);
  const wanted = cfg[v.key];
  if (typeof deployed !== 'string' || deployed === wanted) return undefined;
  const release = RELEASES[key].release;
  const [helmCmd, kubectlCmd] = [toolHint(cfg, 'helm'), toolHint(cfg, 'kubectl')];
  return (
    `${v.key}="${wanted}" differs from the size of the deployed ${release} volume (${deployed}), and local-path volumes cannot be resized.\n` +
    `Either set ${v.key}=${deployed} in .env again, or drop the ${release} data and recreate it at the new size:\n` +
    (v.claimOwner === 'release'
      ? `  ${helmCmd} uninstall ${release} --namespace ${NAMESPACE} --wait   (also deletes its volume claim ${v.pvc})\n`
      : `  ${helmCmd} uninstall ${release} --namespace ${NAMESPACE} --wait\n` +
        `  ${kubectlCmd} delete pvc ${v.pvc} --namespace ${NAMESPACE}   (the StatefulSet's claim outlives the release)\n`) +
    '  task observability'
  );
}

export function namespaceManifest(): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: NAMESPACE,
      labels: {
        'pod-security.kubernetes.io/enforce': 'privileged',
        'pod-security.kubernetes.io/audit': 'privileged',
        'pod-security.kubernetes.io/warn': 'privileged',
      },
    },
  });
}

export function adminSecretManifest(password: string): string {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: GRAFANA_ADMIN.secret, namespace: NAMESPACE, labels: { ...PART_OF_LABEL } },
    data: { [GRAFANA_ADMIN.userKey]: b64(GRAFANA_ADMIN.user), [GRAFANA_ADMIN.passwordKey]: b64(password) },
  });
}

/** A new random admin password: 24 random bytes, URL-safe base64 (32 characters). */
export const newPassword = () => crypto.randomBytes(24).toString('base64url');

/** Reads dashboards/*.json (sorted) into a ConfigMap; bad JSON or names fail with the file to fix. */
export function dashboardsConfigMap(dir: string = DASHBOARDS_DIR): { yaml: string; files: string[] } {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort() : [];
  const data: Record<string, string> = {};
  for (const f of files) {
    if (!/^[-._a-zA-Z0-9]+$/.test(f)) {
      throw new UserError(`dashboards/${f}: a ConfigMap key allows only letters, digits, "-", "_" and "."; rename the file.`);
    }
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    try {
      JSON.parse(text);
    } catch (err) {
      throw new UserError(`dashboards/${f} is not valid JSON (${(err as Error).message}); fix the file and run again.`);
    }
    data[f] = text;
  }
  const size = Object.entries(data).reduce((n, [k, v]) => n + k.length + Buffer.byteLength(v), 0);
  if (size > CONFIGMAP_LIMIT) {
    throw new UserError(`dashboards/*.json add up to ${Math.round(size / 1024)} KiB; a ConfigMap holds at most 1 MiB. Make them smaller.`);
  }
  const yaml = YAML.stringify({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: DASHBOARDS_CONFIGMAP,
      namespace: NAMESPACE,
      labels: { ...PART_OF_LABEL, 'app.kubernetes.io/component': 'dashboards' },
    },
    data,
  });
  return { yaml, files };
}

/** helmRelease, with the pods' own story added when it fails. */
async function install(cfg: Config, key: ReleaseKey, rules: RuleFiles): Promise<string> {
  const spec = releaseSpec(cfg, key, readText, rules);
  try {
    return await helmRelease(cfg, spec);
  } catch (err) {
    const diagnostics = await podDiagnostics(cfg, [NAMESPACE]);
    throw new UserError(
      `release ${spec.release} (${spec.chart.chart}-${spec.chart.version}) did not become ready.\n${(err as Error).message}\n${diagnostics}\n` +
        'Fix the cause shown above (often: image pull, volume not bound, too little memory), then run `task observability` again.',
    );
  }
}

/** Stops before any change when a volume size knob differs from the deployed volume. */
async function checkVolumeSizes(cfg: Config): Promise<string> {
  const sizes: string[] = [];
  for (const key of Object.keys(VOLUMES) as (keyof typeof VOLUMES)[]) {
    const deployed = await deployedValues(cfg, RELEASES[key].release, NAMESPACE);
    const problem = deployed ? volumeSizeProblem(cfg, key, deployed) : undefined;
    if (problem) throw new UserError(problem);
    sizes.push(`${RELEASES[key].release} ${cfg[VOLUMES[key].key]}`);
  }
  return sizes.join(', ');
}

/**
 * The namespace, and the Grafana admin Secret with the password kept in the state dir (generated only
 * once): one kubectl diff for both, an apply only when it sees a difference.
 */
async function ensureNamespaceAndAdminPassword(cfg: Config): Promise<string> {
  const file = statePath(cfg, GRAFANA_PASSWORD_FILE);
  let password = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '';
  let source = 'kept';
  if (!password) {
    // The state file may be gone while the cluster still has the Secret: keep the cluster's password.
    const got = await kubectl(cfg, ['get', 'secret', GRAFANA_ADMIN.secret, '--namespace', NAMESPACE, '--output', 'json'], { okCodes: [1] });
    const existing = got.code === 0 ? (JSON.parse(got.stdout) as { data?: Record<string, string> }).data?.[GRAFANA_ADMIN.passwordKey] : undefined;
    password = existing ? Buffer.from(existing, 'base64').toString('utf8') : newPassword();
    source = existing ? 'recovered from the cluster' : 'generated';
    writeFileAtomic(file, `${password}\n`, 0o600);
  }
  const applied = await applyManifests(cfg, `${namespaceManifest()}---\n${adminSecretManifest(password)}`);
  if (applied === 'unchanged' && source === 'kept') return `unchanged (Secret ${GRAFANA_ADMIN.secret})`;
  return `${source} password, ${applied} (${file})`;
}

/** The Alloy Operator (a subchart of k8s-monitoring): its pods' label and the Alloy custom resource it reconciles. */
export const ALLOY_OPERATOR = { podSelector: 'app.kubernetes.io/name=alloy-operator', resource: 'alloys.collectors.grafana.com' } as const;

interface AlloyJson {
  metadata: { name: string; namespace?: string };
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

/**
 * One line per Alloy object: its failing condition (the operator is built on the Operator SDK's
 * Helm operator: Initialized, Deployed, ReleaseFailed, Irreconcilable), "deployed", or no status.
 */
export function alloyStatusLines(alloys: AlloyJson[]): string[] {
  if (alloys.length === 0) return [`no Alloy objects in ${NAMESPACE}: the k8s-monitoring release created none`];
  return alloys.map((a) => {
    const name = `Alloy ${a.metadata.namespace ?? NAMESPACE}/${a.metadata.name}`;
    const conditions = a.status?.conditions ?? [];
    const bad = conditions.filter((c) => ['ReleaseFailed', 'Irreconcilable'].includes(c.type) && c.status === 'True');
    if (bad.length) return `${name}: ${bad.map((c) => `${c.type} (${c.reason ?? 'no reason'}): ${c.message ?? ''}`).join('; ')}`;
    if (conditions.some((c) => c.type === 'Deployed' && c.status === 'True')) return `${name}: deployed`;
    return `${name}: no status yet (the operator has not reconciled it)`;
  });
}

/** What the operator made of the Alloy objects: their status and its last log lines. Never throws. */
async function alloyOperatorDiagnostics(cfg: Config): Promise<string> {
  const lines = await kubectl(cfg, ['get', ALLOY_OPERATOR.resource, '--namespace', NAMESPACE, '--output', 'json']).then(
    (r) => alloyStatusLines(JSON.parse(r.stdout).items ?? []),
    (err: unknown) => [`cannot read the Alloy objects: ${failureReason(err)}`],
  );
  const log = await kubectl(cfg, ['logs', '--selector', ALLOY_OPERATOR.podSelector, '--namespace', NAMESPACE, '--tail', '20']).then(
    (r) => r.stdout.trim().split('\n').filter(Boolean).map((l) => `alloy-operator log: ${l}`),
    (err: unknown) => [`alloy-operator log unavailable: ${failureReason(err)}`],
  );
  return [...lines, ...(log.length ? log : ['alloy-operator log: (empty; is the operator running? see the pods below)'])].join('\n');
}

/**
 * Waits for the Alloy workloads the operator creates from the release's Alloy objects: one read of
 * both, then a wait (creation, rollout) only for one missing or not rolled out.
 */
async function waitForAlloy(cfg: Config): Promise<string> {
  const pending = await pendingRollouts(cfg, NAMESPACE, ALLOY_WORKLOADS);
  if (pending.size === 0) return `${ALLOY_WORKLOADS.map((w) => w.name).join(', ')} (rolled out already)`;
  for (const w of ALLOY_WORKLOADS) {
    const ref = `${w.kind}/${w.name}`;
    if (!pending.has(ref)) continue;
    const hint = `The Alloy Operator did not create or roll out ${ref}.`;
    try {
      await kubectl(cfg, ['wait', '--for=create', ref, '--namespace', NAMESPACE, '--timeout=5m']);
      await kubectl(cfg, ['rollout', 'status', ref, '--namespace', NAMESPACE, '--timeout=10m']);
    } catch (err) {
      const diagnostics = [await alloyOperatorDiagnostics(cfg), await podDiagnostics(cfg, [NAMESPACE])];
      throw new UserError(`${hint}\n${(err as Error).message}\n${diagnostics.join('\n')}`);
    }
  }
  return ALLOY_WORKLOADS.map((w) => w.name).join(', ');
}

export async function observability(cfg: Config): Promise<void> {
  // Read our own files first: a broken dashboard, rule or values file stops before anything is touched.
  const dashboards = dashboardsConfigMap();
  const rules = alertRuleFiles();
  for (const key of Object.keys(RELEASES) as ReleaseKey[]) readProjectYaml(RELEASES[key].valuesFile);

  await check('Cluster reachable', async () => {
    return requireCluster(cfg);
  });
  await check('Volume sizes can be honoured', () => checkVolumeSizes(cfg));
  await step(`Namespace ${NAMESPACE} (Pod Security privileged) and Grafana admin password`, () => ensureNamespaceAndAdminPassword(cfg));
  // Server-side, in one kubectl diff: the webhook Secret and the dashboards ConfigMap.
  await step(
    `Alertmanager webhook Secret ${ALERT_WEBHOOK.secret} (ALERT_WEBHOOK_URL ${cfg.ALERT_WEBHOOK_URL ? 'set' : 'not set'}) and dashboards ConfigMap (${dashboards.files.length} from dashboards/)`,
    async () => {
      const r = await applyManifests(cfg, `${webhookSecretManifest(cfg.ALERT_WEBHOOK_URL)}---\n${dashboards.yaml}`, true);
      return r === 'unchanged' ? `unchanged (${dashboards.files.join(', ') || 'no dashboards'})` : `applied (${dashboards.files.join(', ') || 'no dashboards yet'})`;
    },
  );
  await parallel(
    () =>
      step(`Prometheus ${PINNED.charts.prometheus.version} with Alertmanager and ${Object.keys(rules).length} rule files from alerts/`, () =>
        install(cfg, 'prometheus', rules),
      ),
    () => step(`Loki ${PINNED.charts.loki.version}`, () => install(cfg, 'loki', rules)),
    () => step(`Tempo ${PINNED.charts.tempo.version}`, () => install(cfg, 'tempo', rules)),
    async () => {
      await step(`Alloy: k8s-monitoring ${PINNED.charts.k8sMonitoring.version}`, () => install(cfg, 'k8sMonitoring', rules));
      await check('Alloy collectors running', () => waitForAlloy(cfg));
    },
    () => step(`Grafana ${PINNED.charts.grafana.version}`, () => install(cfg, 'grafana', rules)),
  );
  note(`Grafana: ${ingressUrl(cfg, 'grafana')} (anonymous Viewer; admin password in ${statePath(cfg, GRAFANA_PASSWORD_FILE)})`);
  note(`Prometheus: ${ingressUrl(cfg, 'prometheus')}; retention ${cfg.PROMETHEUS_RETENTION}, volume ${cfg.PROMETHEUS_STORAGE}`);
  note(`Loki: ${SERVICE_URLS.loki} (in-cluster); retention ${cfg.LOKI_RETENTION}, volume ${cfg.LOKI_STORAGE}`);
  note(`Tempo: ${SERVICE_URLS.tempo} (in-cluster); retention ${cfg.TEMPO_RETENTION}, volume ${cfg.TEMPO_STORAGE}`);
  note(`OTLP in: OTEL_EXPORTER_OTLP_ENDPOINT=${otlpEndpoint('http')} (gRPC: ${otlpEndpoint('grpc')}) for pods in the cluster`);
  if (cfg.PROFILE === 'cluster') note(PRODUCTION_NEEDS);
  note(
    `Alertmanager: ${ingressUrl(cfg, 'alertmanager')}; rules: ${Object.keys(rules).join(', ') || 'none'}; ` +
      (cfg.ALERT_WEBHOOK_URL ? `alerts also go to ALERT_WEBHOOK_URL (${webhookReceiver(cfg.ALERT_WEBHOOK_URL)?.slack_configs ? 'Slack' : 'webhook'})` : 'alerts stay in Alertmanager and Grafana (ALERT_WEBHOOK_URL not set)'),
  );
}

if (isMain(import.meta.url)) await runPhase('observability', observability);
