// Renders the four observability releases with the REAL helm and the REAL upstream charts, using the
// exact values scripts/observability.ts would deploy (values file + .env overrides), and checks what
// the rendered objects say. The charts are not in this repository (and CI has no internet), so this
// test is skipped unless OBS_CHARTS_DIR points at unpacked charts at the pinned versions:
//   $OBS_CHARTS_DIR/prometheus       prometheus-community/prometheus 29.27.0 (+ charts/ with its 4 subcharts)
//   $OBS_CHARTS_DIR/loki             grafana-community/loki 18.11.0 (+ charts/minio, charts/rollout-operator)
//   $OBS_CHARTS_DIR/grafana          grafana-community/grafana 12.11.1
//   $OBS_CHARTS_DIR/tempo            grafana-community/tempo 2.2.4 (charts/tempo at tag tempo-2.2.4); the tests
//                                    that need it, the resource totals among them, are skipped without it
//   $OBS_CHARTS_DIR/k8s-monitoring   grafana/k8s-monitoring 4.4.0 (its charts/ as in the repository)
//   $OBS_CHARTS_DIR/alloy            grafana/alloy's chart (operations/helm/charts/alloy, tag helm-chart/<v>) at the
//                                    version the bundled alloy-operator deploys (its appVersion: 1.11.1)
// and HELM names a helm binary (e.g. HELM=$(bash ../shared/tools/helm.sh)).
// `helm template` validates the values against each chart's values.schema.json (grafana has none).
// The Alloy workloads do not come from k8s-monitoring itself: it renders Alloy objects, and the Alloy
// Operator (a Helm operator) installs the alloy chart with each object's spec as values and its name as
// release name. The tests do the same with the real alloy chart, so they see the pods the operator creates.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { PROJECT_DIR } from './helpers.ts';
import { type K8sObject, WORKLOADS, containersOf, podSpec, quantity, unboundedContainers } from './workloads.ts';
import { OTLP_RECEIVER, PINNED, TEMPO, mergeValues, parseConfig } from '../scripts/lib.ts';
import { CHART_POD_RULES, alloyRules } from './fixtures/apps/scrape.ts';
import {
  ALERT_WEBHOOK,
  LOKI_PUSH_URL,
  NAMESPACE,
  PROMETHEUS_REMOTE_WRITE_URL,
  RELEASES,
  type ReleaseKey,
  SERVICE_URLS,
  TEMPO_OTLP_GRPC_URL,
  alertRuleFiles,
  releaseSpec,
} from '../scripts/observability.ts';

const chartsDir = process.env.OBS_CHARTS_DIR ?? '';
const helmBin = process.env.HELM ?? 'helm';
const available = chartsDir !== '' && fs.existsSync(chartsDir);
const tempoAvailable = available && fs.existsSync(path.join(chartsDir, 'tempo', 'Chart.yaml'));

const chartDir: Record<ReleaseKey, string> = {
  prometheus: 'prometheus',
  loki: 'loki',
  grafana: 'grafana',
  k8sMonitoring: 'k8s-monitoring',
  tempo: 'tempo',
};

// Knobs away from their defaults, so every fact below proves the knob reached the chart.
const RENDER_ENV = {
  STATE_DIR: '/tmp/st',
  HTTP_PORT: '18080',
  HTTPS_PORT: '18443',
  REGISTRY_PORT: '15001',
  PROMETHEUS_RETENTION: '21d',
  PROMETHEUS_STORAGE: '12Gi',
  LOKI_RETENTION: '72h',
  LOKI_STORAGE: '3Gi',
  TEMPO_RETENTION: '48h',
  TEMPO_STORAGE: '4Gi',
  DOMAIN: 'example.test',
  CLUSTER_NAME: 'render-check',
};
const cfg = parseConfig(RENDER_ENV);

function render(key: ReleaseKey, extraValues?: Record<string, unknown>): K8sObject[] {
  const spec = releaseSpec(cfg, key);
  const chart = path.join(chartsDir, chartDir[key]);
  const version = YAML.parse(fs.readFileSync(path.join(chart, 'Chart.yaml'), 'utf8')).version;
  expect(version, `${chart} is not the pinned version`).toBe(spec.chart.version);
  return helmTemplate(spec.release, chart, mergeValues(...spec.values, extraValues ?? {}));
}

const find = (objs: K8sObject[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  expect(o, `${kind}/${name}`).toBeDefined();
  return o!;
};

function helmTemplate(release: string, chart: string, values: unknown): K8sObject[] {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'render-')), 'values.yaml');
  fs.writeFileSync(file, YAML.stringify(values));
  const out = execFileSync(helmBin, ['template', release, chart, '--namespace', NAMESPACE, '--values', file], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return YAML.parseAllDocuments(out).map((d) => d.toJSON()).filter(Boolean);
}

/**
 * Grafana's provisioning expansion of a string value (pkg/services/provisioning/values, interpolateValue):
 * split on "$$", expand $VAR and ${VAR} in each part (empty here: no such variables in Grafana's pod),
 * join with "$".
 */
function grafanaProvisioningExpand(value: string): string {
  return value
    .split('$$')
    .map((part) => part.replace(/\$\{[^}]*\}|\$[A-Za-z0-9_]+/g, ''))
    .join('$');
}

/** What the Alloy Operator creates from the Alloy objects: the alloy chart, release = object name, values = spec. */
function renderAlloyWorkloads(k8sMonitoring: K8sObject[]): K8sObject[] {
  const operatorChart = fs.readdirSync(path.join(chartsDir, 'k8s-monitoring', 'charts')).find((f) => /^alloy-operator-.*\.tgz$/.test(f));
  const operator = YAML.parse(execFileSync(helmBin, ['show', 'chart', path.join(chartsDir, 'k8s-monitoring', 'charts', operatorChart!)], { encoding: 'utf8' }));
  const alloyChart = path.join(chartsDir, 'alloy');
  expect(fs.existsSync(path.join(alloyChart, 'Chart.yaml')), `${alloyChart}: the alloy chart ${operator.appVersion} (see the header)`).toBe(true);
  expect(YAML.parse(fs.readFileSync(path.join(alloyChart, 'Chart.yaml'), 'utf8')).version, 'the alloy chart the operator deploys').toBe(operator.appVersion);
  return k8sMonitoring.filter((o) => o.kind === 'Alloy').flatMap((a) => helmTemplate(a.metadata.name, alloyChart, a.spec));
}

// --- Alloy configuration, read as blocks -----------------------------------------------------------

interface AlloyBlock {
  name: string;
  label: string;
  /** The block's own text: attributes only, nested blocks cut out. */
  own: string;
  children: AlloyBlock[];
  parent?: AlloyBlock;
}

/** Parses the block structure of an Alloy configuration (`name "label" { ... }`); object literals stay text. */
function parseAlloy(text: string): AlloyBlock {
  const root: AlloyBlock = { name: '', label: '', own: '', children: [] };
  // Stack entries: a block, or null for a brace that opens an object literal.
  const stack: (AlloyBlock | null)[] = [root];
  const current = () => stack.filter(Boolean).at(-1)!;
  let line = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"' || ch === '`') {
      let end = i + 1;
      while (end < text.length && text[end] !== ch) end += ch === '"' && text[end] === '\\' ? 2 : 1;
      const str = text.slice(i, end + 1);
      current().own += str;
      line += str;
      i = end;
    } else if (ch === '/' && text[i + 1] === '/') {
      i = text.indexOf('\n', i) - 1;
      if (i < 0) break;
    } else if (ch === '{') {
      const header = /^\s*([A-Za-z_][\w.]*)(?:\s+"([^"]*)")?\s*$/.exec(line);
      if (header) {
        const b: AlloyBlock = { name: header[1], label: header[2] ?? '', own: '', children: [], parent: current() };
        b.parent!.own = b.parent!.own.slice(0, b.parent!.own.length - line.length);
        b.parent!.children.push(b);
        stack.push(b);
      } else {
        current().own += ch;
        stack.push(null);
      }
      line = '';
    } else if (ch === '}') {
      if (stack.pop() === null) current().own += ch;
      line = '';
    } else {
      current().own += ch;
      line = ch === '\n' ? '' : line + ch;
    }
  }
  return root;
}

const allBlocks = (b: AlloyBlock): AlloyBlock[] => b.children.flatMap((c) => [c, ...allBlocks(c)]);
const attr = (b: AlloyBlock, key: string) => new RegExp(`^\\s*${key}\\s*=\\s*(.+?)\\s*$`, 'm').exec(b.own)?.[1];
const blockPath = (b: AlloyBlock): string =>
  (b.parent?.name ? `${blockPath(b.parent)} > ` : '') + `${b.name}${b.label ? ` "${b.label}"` : ''}`;

/** The block a reference such as discovery.relabel.pods.output names, looked up from `from` outwards. */
function resolve(from: AlloyBlock, name: string, label: string): AlloyBlock | undefined {
  for (let scope: AlloyBlock | undefined = from.parent; scope; scope = scope.parent) {
    const hit = scope.children.find((c) => c.name === name && c.label === label);
    if (hit) return hit;
  }
  return undefined;
}

/** The discovery.kubernetes blocks a component's targets come from (undefined: not traceable, e.g. a module argument). */
function discoveryRoots(b: AlloyBlock): AlloyBlock[] | undefined {
  const expr = attr(b, 'targets') ?? '';
  const refs = [...expr.matchAll(/\b(discovery\.(?:relabel|kubernetes))\.(\w+)\.(?:output|targets)\b/g)];
  if (refs.length === 0) return undefined;
  const roots: AlloyBlock[] = [];
  for (const [, name, label] of refs) {
    const target = resolve(b, name, label);
    if (!target) return undefined;
    if (name === 'discovery.kubernetes') roots.push(target);
    else {
      const up = discoveryRoots(target);
      if (!up) return undefined;
      roots.push(...up);
    }
  }
  return roots;
}

/** Discovery of the control plane only: nodes (kubelet), or a label-selected set in default / kube-system. */
function controlPlaneOnly(d: AlloyBlock): boolean {
  if (attr(d, 'role') === '"node"') return true;
  const names = d.children.find((c) => c.name === 'namespaces');
  const listed = names ? [...(attr(names, 'names') ?? '').matchAll(/"([^"]*)"/g)].map((m) => m[1]) : [];
  const selected = d.children.some((c) => c.name === 'selectors' && /\S/.test(attr(c, 'label') ?? ''));
  return listed.length > 0 && listed.every((n) => n === 'default' || n === 'kube-system') && selected;
}

/** Scrape components that would send credentials to a target that is not provably the control plane. */
function credentialLeaks(config: string): string[] {
  return allBlocks(parseAlloy(config))
    .filter((b) => b.name === 'prometheus.scrape')
    .filter((b) => {
      const tokenFile = attr(b, 'bearer_token_file');
      return (tokenFile !== undefined && tokenFile !== '""') || attr(b, 'bearer_token') !== undefined ||
        b.children.some((c) => ['authorization', 'basic_auth', 'oauth2'].includes(c.name));
    })
    .filter((b) => {
      const roots = discoveryRoots(b);
      return !roots || !roots.every(controlPlaneOnly);
    })
    .map(blockPath);
}

describe('the resource check itself (runs without charts)', () => {
  const deployment = (resources: unknown): K8sObject => ({
    kind: 'Deployment',
    metadata: { name: 'd' },
    spec: { template: { spec: { initContainers: [{ name: 'init', resources }], containers: [{ name: 'c', resources }] } } },
  });
  it.each([
    ['requests and a memory limit', { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '64Mi' } }, 0],
    ['a whole CPU and Gi', { requests: { cpu: '1', memory: '1Gi' }, limits: { memory: '1Gi' } }, 0],
    ['no resources', undefined, 2],
    ['no memory limit', { requests: { cpu: '10m', memory: '32Mi' } }, 2],
    ['no CPU request', { requests: { memory: '32Mi' }, limits: { memory: '64Mi' } }, 2],
    ['a request above the limit', { requests: { cpu: '10m', memory: '128Mi' }, limits: { memory: '64Mi' } }, 2],
  ])('%s: %i containers flagged (init containers count)', (_what, resources, flagged) => {
    expect(unboundedContainers([deployment(resources)])).toHaveLength(flagged);
  });
  it.each([
    ['100m', 'cpu', 100],
    ['2', 'cpu', 2000],
    ['0.5', 'cpu', 500],
    ['512Mi', 'memory', 512],
    ['1Gi', 'memory', 1024],
    ['65536Ki', 'memory', 64],
  ] as const)('quantity(%s, %s) = %i', (raw, unit, want) => {
    expect(quantity(raw, unit)).toBe(want);
  });
});

describe.skipIf(!available)('real charts at the pinned versions (OBS_CHARTS_DIR)', { timeout: 60_000 }, () => {
  it('prometheus: retention, volume, remote-write receiver, no scrape jobs, server only', () => {
    const objs = render('prometheus');
    const server = find(objs, 'Deployment', 'prometheus-server').spec.template.spec.containers.find((c: any) => c.name === 'prometheus-server');
    expect(server.args).toEqual(
      expect.arrayContaining([
        '--storage.tsdb.retention.time=21d',
        '--web.enable-remote-write-receiver',
        '--web.enable-lifecycle',
        // Exemplars (trace ids on latency samples) are kept: Grafana's exemplar links need them.
        '--enable-feature=exemplar-storage',
        '--web.external-url=https://prometheus.example.test:18443',
        // 80 % of PROMETHEUS_STORAGE=12Gi, in Prometheus' base-2 MB: the oldest blocks go before the volume fills.
        '--storage.tsdb.retention.size=9830MB',
      ]),
    );
    const pvc = find(objs, 'PersistentVolumeClaim', 'prometheus-server');
    expect(pvc.spec.resources.requests.storage).toBe('12Gi');
    expect(pvc.spec.storageClassName).toBe('local-path');
    const promConfig = YAML.parse(find(objs, 'ConfigMap', 'prometheus-server').data['prometheus.yml']);
    expect(promConfig.scrape_configs ?? []).toEqual([]);
    expect(find(objs, 'Service', 'prometheus-server').spec.ports[0].port).toBe(80);
    const workloads = objs.filter((o) => ['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind)).map((o) => o.metadata.name);
    expect(workloads).toEqual(['prometheus-server', 'prometheus-alertmanager']);
  });

  it('prometheus: every alerts/*.rules.yaml is a rule file of the server, unchanged, and the chart sends alerts to its Alertmanager', () => {
    const objs = render('prometheus');
    const cm = find(objs, 'ConfigMap', 'prometheus-server');
    const rules = alertRuleFiles();
    expect(Object.keys(rules).length).toBeGreaterThan(0);
    for (const [file, content] of Object.entries(rules)) expect(YAML.parse(cm.data[file]), file).toEqual(content);
    const promConfig = YAML.parse(cm.data['prometheus.yml']);
    expect(promConfig.rule_files).toEqual(Object.keys(rules).map((f) => `/etc/config/${f}`));
    // The server mounts that ConfigMap at /etc/config (the config reloader watches it).
    const server = find(objs, 'Deployment', 'prometheus-server').spec.template.spec;
    const mount = server.containers.find((c: any) => c.name === 'prometheus-server').volumeMounts.find((m: any) => m.mountPath === '/etc/config');
    expect(server.volumes.find((v: any) => v.name === mount.name).configMap.name).toBe('prometheus-server');
    // alerting.alertmanagers: the pods of the alertmanager subchart of this release, in this namespace, on 9093.
    const [am] = promConfig.alerting.alertmanagers;
    expect(am.kubernetes_sd_configs).toEqual([{ role: 'pod' }]);
    const keep = Object.fromEntries(am.relabel_configs.map((r: any) => [r.source_labels[0], r.regex]));
    const pod = find(objs, 'StatefulSet', 'prometheus-alertmanager').spec.template;
    expect(keep).toEqual({
      __meta_kubernetes_namespace: NAMESPACE,
      __meta_kubernetes_pod_label_app_kubernetes_io_instance: pod.metadata.labels['app.kubernetes.io/instance'],
      __meta_kubernetes_pod_label_app_kubernetes_io_name: pod.metadata.labels['app.kubernetes.io/name'],
      __meta_kubernetes_pod_container_port_number: '9093',
    });
    expect(pod.spec.containers[0].ports[0].containerPort).toBe(9093);
    // Prometheus may discover those pods: its ClusterRole lists pods.
    const role = find(objs, 'ClusterRole', 'prometheus-server');
    expect(role.rules.some((r: any) => r.resources.includes('pods') && r.verbs.includes('list') && r.verbs.includes('watch'))).toBe(true);
  });

  it('alertmanager: StatefulSet and Service of the contract, silences on a local-path volume, external URL, webhook only from the Secret', () => {
    const objs = render('prometheus');
    const sts = find(objs, 'StatefulSet', 'prometheus-alertmanager');
    const c = sts.spec.template.spec.containers.find((x: any) => x.name === 'alertmanager');
    expect(c.image).toBe('quay.io/prometheus/alertmanager:v0.34.0');
    expect(c.args).toEqual(expect.arrayContaining(['--storage.path=/alertmanager', '--web.external-url=https://alertmanager.example.test:18443']));
    expect(sts.spec.volumeClaimTemplates[0].spec).toMatchObject({ storageClassName: 'local-path', resources: { requests: { storage: '256Mi' } } });
    expect(c.volumeMounts.find((m: any) => m.mountPath === '/alertmanager').name).toBe('storage');
    const svc = find(objs, 'Service', 'prometheus-alertmanager');
    expect(svc.spec.ports[0].port).toBe(9093);
    expect(`http://${svc.metadata.name}.${NAMESPACE}.svc:${svc.spec.ports[0].port}`).toBe(SERVICE_URLS.alertmanager);
    // The webhook URL's Secret, mounted where the receiver reads it; the pod starts without a URL too (the Secret is always written).
    const mount = c.volumeMounts.find((m: any) => m.mountPath === ALERT_WEBHOOK.dir);
    expect(sts.spec.template.spec.volumes.find((v: any) => v.name === mount.name).secret.secretName).toBe(ALERT_WEBHOOK.secret);
    const config = YAML.parse(find(objs, 'ConfigMap', 'prometheus-alertmanager').data['alertmanager.yml']);
    expect(config.route.receiver).toBe('local');
    expect(config.receivers).toEqual([{ name: 'local' }]);

    const url = 'https://hooks.slack.com/services/T000/B000/RENDERSECRET';
    const withHook = helmTemplate('prometheus', path.join(chartsDir, 'prometheus'), mergeValues(...releaseSpec(parseConfig({ ...RENDER_ENV, ALERT_WEBHOOK_URL: url }), 'prometheus').values));
    const hookConfig = YAML.parse(find(withHook, 'ConfigMap', 'prometheus-alertmanager').data['alertmanager.yml']);
    expect(hookConfig.route.receiver).toBe('webhook');
    expect(hookConfig.receivers[1]).toEqual({ name: 'webhook', slack_configs: [{ api_url_file: `${ALERT_WEBHOOK.dir}/${ALERT_WEBHOOK.key}`, send_resolved: true }] });
    expect(JSON.stringify(withHook)).not.toContain('RENDERSECRET');
  });

  it('loki: monolithic, filesystem, retention by the compactor, volume size, nothing extra', () => {
    const objs = render('loki');
    const config = YAML.parse(find(objs, 'ConfigMap', 'loki').data['config.yaml']);
    expect(config.auth_enabled).toBe(false);
    expect(config.limits_config.retention_period).toBe('72h');
    expect(config.compactor).toMatchObject({ retention_enabled: true, delete_request_store: 'filesystem' });
    expect(config.schema_config.configs).toEqual([expect.objectContaining({ store: 'tsdb', schema: 'v13', object_store: 'filesystem' })]);
    expect(config.common.storage.filesystem).toBeDefined();
    const sts = find(objs, 'StatefulSet', 'loki');
    expect(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('3Gi');
    expect(sts.spec.volumeClaimTemplates[0].spec.storageClassName).toBe('local-path');
    const svc = find(objs, 'Service', 'loki');
    expect(svc.spec.ports.find((p: any) => p.name === 'http-metrics').port).toBe(3100);
    expect(`http://${svc.metadata.name}.monitoring.svc:3100`).toBe(SERVICE_URLS.loki);
    const workloads = objs.filter((o) => ['Deployment', 'StatefulSet', 'DaemonSet', 'Pod'].includes(o.kind)).map((o) => o.metadata.name);
    expect(workloads).toEqual(['loki']);
  });

  it("k8s-monitoring: the pod relabel rules tests/app-prometheus.test.ts applies are the rendered chart's, in its order", () => {
    const metrics = find(render('k8sMonitoring'), 'ConfigMap', 'k8s-monitoring-alloy-metrics').data['config.alloy'] as string;
    const block = /discovery\.relabel "annotation_autodiscovery_pods" \{([\s\S]*?)\} \/\/ discovery\.relabel "annotation_autodiscovery_pods"/.exec(metrics);
    expect(block, 'discovery.relabel "annotation_autodiscovery_pods" in alloy-metrics').not.toBeNull();
    const rendered = alloyRules(block![1]);
    const repoRules = alloyRules(fs.readFileSync(path.join(PROJECT_DIR, 'alloy', 'annotation-autodiscovery-rules.alloy'), 'utf8'));
    // The chart's rules, then ours (extraDiscoveryRules).
    expect(rendered.slice(-repoRules.length)).toEqual(repoRules);
    const chart = rendered.slice(0, -repoRules.length);
    // CHART_POD_RULES is the chart's list in order, without the rules that act on what our apps
    // never set: IPv6 pod addresses, prometheus.io/scheme, k8s.grafana.com/metrics.param_* and the
    // per-pod scrape interval and timeout (the test scrapes every second).
    const left = chart.filter((r) => !CHART_POD_RULES.some((c) => JSON.stringify(c) === JSON.stringify(r)));
    expect(chart.filter((r) => CHART_POD_RULES.some((c) => JSON.stringify(c) === JSON.stringify(r)))).toEqual(CHART_POD_RULES);
    expect(left.map((r) => `${r.action ?? 'replace'} ${r.target_label ?? r.replacement ?? ''}`)).toEqual([
      'labelmap __param_$1',
      'replace __address__', // the IPv6 form; CHART_POD_RULES has the IPv4 one
      'replace __scheme__',
      'replace __scrape_interval__',
      'replace __scrape_interval__',
      'replace __scrape_timeout__',
      'replace __scrape_timeout__',
    ]);
    expect(left.find((r) => r.target_label === '__address__')?.replacement).toBe('[$2]:$1');
  });

  it('k8s-monitoring: prometheus.io annotations, node label, etcd, destinations, no reporting', () => {
    const objs = render('k8sMonitoring');
    const metrics = find(objs, 'ConfigMap', 'k8s-monitoring-alloy-metrics').data['config.alloy'] as string;
    const logs = find(objs, 'ConfigMap', 'k8s-monitoring-alloy-logs').data['config.alloy'] as string;
    for (const a of ['scrape', 'port', 'path']) expect(metrics).toContain(`__meta_kubernetes_pod_annotation_prometheus_io_${a}`);
    expect(metrics).not.toContain('__meta_kubernetes_pod_annotation_k8s_grafana_com_scrape');
    for (const config of [metrics, logs]) {
      expect(config).toMatch(/source_labels = \["__meta_kubernetes_pod_node_name"\]\s*\n\s*target_label\s*=\s*"node"/);
    }
    expect(metrics).toContain('regex  = "__meta_kubernetes_pod_label_(.+)"');
    expect(metrics).toContain('prometheus.scrape "talos_etcd"');
    expect(metrics).toContain('prometheus.remote_write "prometheus"');
    expect(metrics).toContain(`url = "${PROMETHEUS_REMOTE_WRITE_URL}"`);
    for (const job of ['kube-controller-manager', 'kube-scheduler', 'integrations/kubernetes/kube-proxy', 'integrations/kubernetes/cadvisor', 'integrations/kubernetes/kubelet', 'integrations/kubernetes/kube-state-metrics', 'integrations/node_exporter', 'integrations/alloy', 'integrations/etcd']) {
      expect(metrics, job).toContain(`"${job}"`);
    }
    // Every series and every stream carries cluster=<CLUSTER_NAME> (external labels), as the catalogue says.
    expect(metrics).toContain('"cluster" = "render-check"');
    expect(logs).toMatch(/external_labels = \{\s*"cluster" = "render-check"/);
    expect(logs).toContain(`url = "${LOKI_PUSH_URL}"`);
    // pod stays a stream label: not moved into structured metadata.
    expect(logs).not.toMatch(/"pod" = "pod"/);
    expect(metrics + logs).not.toMatch(/self_report/i);
    const alloys = objs.filter((o) => o.kind === 'Alloy');
    expect(alloys.map((a) => a.metadata.name).sort()).toEqual(['k8s-monitoring-alloy-logs', 'k8s-monitoring-alloy-metrics', 'k8s-monitoring-alloy-receiver']);
    for (const a of alloys) expect(a.spec.alloy.enableReporting, a.metadata.name).toBe(false);
    expect(find(objs, 'Alloy', 'k8s-monitoring-alloy-metrics').spec.controller.type).toBe('statefulset');
    expect(find(objs, 'Alloy', 'k8s-monitoring-alloy-logs').spec.controller.type).toBe('daemonset');
    find(objs, 'Deployment', 'k8s-monitoring-kube-state-metrics');
    find(objs, 'DaemonSet', 'k8s-monitoring-node-exporter');
  });

  it("k8s-monitoring: kube-state-metrics' allow list keeps every metric dashboards/metrics-catalogue.yaml lists for it", () => {
    const metrics = find(render('k8sMonitoring'), 'ConfigMap', 'k8s-monitoring-alloy-metrics').data['config.alloy'] as string;
    const keep = [...metrics.matchAll(/regex\s*=\s*"([^"]*kube_pod_owner[^"]*)"/g)].map((m) => m[1]);
    expect(keep).toHaveLength(1);
    const kept = new RegExp(`^(?:${keep[0]})$`);
    const listed = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'dashboards', 'metrics-catalogue.yaml'), 'utf8')).sources['kube-state-metrics'].metrics as { name: string }[];
    expect(listed.map((m) => m.name)).toContain('kube_pod_status_ready');
    expect(listed.filter((m) => !kept.test(m.name)).map((m) => m.name)).toEqual([]);
    expect(kept.test('kube_pod_status_ready_time')).toBe(false);
  });

  it('pod logs: whole files from the first line, positions on the node, backfill bounded by Loki', () => {
    const objs = render('k8sMonitoring');
    const logs = parseAlloy(find(objs, 'ConfigMap', 'k8s-monitoring-alloy-logs').data['config.alloy']);
    const sources = allBlocks(logs).filter((b) => b.name === 'loki.source.file');
    expect(sources.map(blockPath)).toEqual(['declare "pod_logs_via_loki" > loki.source.file "pod_logs"']);
    // A new pod, a restarted container, a short Job: read from the first line, not from the end.
    expect(attr(sources[0], 'tail_from_end')).toBe('false');

    // loki.source.file keeps positions.yml under Alloy's --storage.path: that path must be on the node.
    const ds = find(renderAlloyWorkloads(objs), 'DaemonSet', 'k8s-monitoring-alloy-logs');
    const pod = podSpec(ds);
    const alloy = pod.containers.find((c: any) => c.name === 'alloy');
    const storage = alloy.args.map((a: string) => /^--storage\.path=(.+)$/.exec(a)?.[1]).find(Boolean);
    expect(storage).toBeDefined();
    const mount = alloy.volumeMounts.find((m: any) => storage === m.mountPath || storage.startsWith(`${m.mountPath}/`));
    expect(mount, `a volume mounted at ${storage}`).toBeDefined();
    expect(mount.readOnly).toBeFalsy();
    const volume = pod.volumes.find((v: any) => v.name === mount.name);
    // Talos keeps /var across reboots and lets pods write there (the rest of its root is read-only).
    expect(volume.hostPath).toMatchObject({ path: expect.stringMatching(/^\/var\/lib\/.+/), type: 'DirectoryOrCreate' });

    // The first deploy backfills whole files: Loki rejects what it would delete anyway (older than LOKI_RETENTION=72h).
    const loki = YAML.parse(find(render('loki'), 'ConfigMap', 'loki').data['config.yaml']);
    expect(loki.limits_config).toMatchObject({ reject_old_samples: true, reject_old_samples_max_age: '72h', retention_period: '72h' });
  });

  it('pod logs: the structured metadata rendered is what dashboards/metrics-catalogue.yaml lists (pod stays a stream label)', () => {
    const text = find(render('k8sMonitoring'), 'ConfigMap', 'k8s-monitoring-alloy-logs').data['config.alloy'] as string;
    const rendered = [...text.matchAll(/stage\.structured_metadata \{\s*values = \{([^}]*)\}/g)]
      .flatMap((m) => [...m[1].matchAll(/"([^"]+)"\s*=/g)].map((k) => k[1]));
    const catalogue = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'dashboards', 'metrics-catalogue.yaml'), 'utf8')).loki;
    expect(rendered.sort()).toEqual([...catalogue.structuredMetadata].sort());
    expect(rendered).not.toContain('pod');
  });

  it('no scrape sends credentials to pods: only to the control plane (kubelet, API server, scheduler, controller-manager)', () => {
    const objs = render('k8sMonitoring');
    const metrics = find(objs, 'ConfigMap', 'k8s-monitoring-alloy-metrics').data['config.alloy'] as string;
    const scrapes = allBlocks(parseAlloy(metrics)).filter((b) => b.name === 'prometheus.scrape');
    expect(scrapes.length).toBeGreaterThanOrEqual(10);
    expect(credentialLeaks(metrics)).toEqual([]);
    // The kubelet still authenticates (it refuses anonymous scrapes): the check does not pass by finding nothing.
    expect(attr(scrapes.find((b) => b.label === 'kubelet')!, 'bearer_token_file')).toBe('"/var/run/secrets/kubernetes.io/serviceaccount/token"');
    // Negative control: the chart default sends the token to every annotated pod, and the check says so.
    const leaky = find(render('k8sMonitoring', { annotationAutodiscovery: { bearerToken: { enabled: true } } }), 'ConfigMap', 'k8s-monitoring-alloy-metrics');
    expect(credentialLeaks(leaky.data['config.alloy'])).toEqual([
      'declare "annotation_autodiscovery" > prometheus.scrape "annotation_autodiscovery_http"',
      'declare "annotation_autodiscovery" > prometheus.scrape "annotation_autodiscovery_https"',
    ]);
  });

  it('annotation autodiscovery drops the pod labels that change on every upgrade or rollout', () => {
    const metrics = find(render('k8sMonitoring'), 'ConfigMap', 'k8s-monitoring-alloy-metrics').data['config.alloy'] as string;
    const pods = allBlocks(parseAlloy(metrics)).find((b) => b.name === 'discovery.relabel' && b.label === 'annotation_autodiscovery_pods')!;
    const rules = pods.children.filter((r) => r.name === 'rule');
    const labelmap = rules.findIndex((r) => attr(r, 'action') === '"labelmap"' && attr(r, 'regex') === '"__meta_kubernetes_pod_label_(.+)"');
    expect(labelmap).toBeGreaterThanOrEqual(0);
    // Dropped after the pod labels are copied (the chart's own labeldrop rules come before).
    const labeldrop = rules.findIndex((r, i) => i > labelmap && attr(r, 'action') === '"labeldrop"');
    expect(labeldrop).toBeGreaterThan(labelmap);
    const dropped = new RegExp(`^(?:${JSON.parse(attr(rules[labeldrop], 'regex')!)})$`);
    for (const churner of ['helm_sh_chart', 'app_kubernetes_io_version', 'pod_template_hash', 'controller_revision_hash']) {
      expect(churner).toMatch(dropped);
    }
    expect('app_kubernetes_io_name').not.toMatch(dropped);
  });

  it.skipIf(!tempoAvailable)('every container has CPU and memory requests and a memory limit, and the README has the totals', () => {
    const k8s = render('k8sMonitoring');
    const objs = [...render('prometheus'), ...render('loki'), ...render('tempo'), ...render('grafana'), ...k8s, ...renderAlloyWorkloads(k8s)];
    const kinds = new Set(objs.filter((o) => WORKLOADS.includes(o.kind)).map((o) => `${o.kind}/${o.metadata.name}`));
    for (const w of ['Deployment/prometheus-server', 'StatefulSet/prometheus-alertmanager', 'StatefulSet/loki', 'StatefulSet/tempo', 'Deployment/grafana', 'Deployment/k8s-monitoring-alloy-operator',
      'Deployment/k8s-monitoring-kube-state-metrics', 'DaemonSet/k8s-monitoring-node-exporter', 'StatefulSet/k8s-monitoring-alloy-metrics',
      'DaemonSet/k8s-monitoring-alloy-logs', 'Deployment/k8s-monitoring-alloy-receiver']) {
      expect(kinds, w).toContain(w);
    }
    expect(unboundedContainers(objs)).toEqual([]);

    // Totals on the default cluster (1 control plane with its NoSchedule taint, WORKERS=2); the Helm hook Jobs run only briefly.
    const tolerated = (o: K8sObject) =>
      (podSpec(o).tolerations ?? []).some((t: any) => t.operator === 'Exists' && (!t.key || t.key === 'node-role.kubernetes.io/control-plane') && (!t.effect || t.effect === 'NoSchedule'));
    const pods = (o: K8sObject) => (o.kind === 'DaemonSet' ? (tolerated(o) ? 3 : 2) : (o.spec.replicas ?? 1));
    const total = { cpu: 0, memory: 0, limit: 0 };
    for (const o of objs.filter((x) => ['Deployment', 'StatefulSet', 'DaemonSet'].includes(x.kind))) {
      for (const c of containersOf(o)) {
        total.cpu += pods(o) * quantity(c.resources!.requests!.cpu, 'cpu');
        total.memory += pods(o) * quantity(c.resources!.requests!.memory, 'memory');
        total.limit += pods(o) * quantity(c.resources!.limits!.memory, 'memory');
      }
    }
    const readme = fs.readFileSync(path.join(PROJECT_DIR, 'README.md'), 'utf8').replace(/\s+/g, ' ');
    const stated = /requests add up to (\d+)m CPU and (\d+) MiB of memory, the memory limits to (\d+) MiB/.exec(readme);
    expect(stated?.slice(1).map(Number), 'the totals in the README "Phase 3: observability"').toEqual([total.cpu, total.memory, total.limit]);
  });

  it('grafana: datasources, anonymous Viewer, no reporting, admin Secret, dashboards folder', () => {
    const objs = render('grafana');
    const cm = find(objs, 'ConfigMap', 'grafana');
    const ds = YAML.parse(cm.data['datasources.yaml']).datasources;
    expect(ds.map((d: any) => [d.name, d.type, d.uid, d.url, Boolean(d.isDefault)])).toEqual([
      ['Prometheus', 'prometheus', 'prometheus', SERVICE_URLS.prometheus, true],
      ['Loki', 'loki', 'loki', SERVICE_URLS.loki, false],
      ['Tempo', 'tempo', 'tempo', SERVICE_URLS.tempo, false],
      ['Alertmanager', 'alertmanager', 'alertmanager', SERVICE_URLS.alertmanager, false],
    ]);
    expect(ds[3].jsonData).toEqual({ implementation: 'prometheus', handleGrafanaManagedAlerts: false });
    const ini = cm.data['grafana.ini'] as string;
    expect(ini).toMatch(/\[auth\.anonymous\]\s*\nenabled = true\s*\norg_role = Viewer/);
    expect(ini).toMatch(/\[analytics\][^[]*reporting_enabled = false/);
    expect(ini).toContain('root_url = https://grafana.example.test:18443');
    expect(YAML.parse(cm.data['dashboardproviders.yaml']).providers[0]).toMatchObject({ folder: 'Platform' });
    const pod = find(objs, 'Deployment', 'grafana').spec.template.spec;
    const env = pod.containers.find((c: any) => c.name === 'grafana').env;
    expect(env.find((e: any) => e.name === 'GF_SECURITY_ADMIN_PASSWORD').valueFrom.secretKeyRef).toEqual({ name: 'grafana-admin', key: 'admin-password' });
    expect(env.find((e: any) => e.name === 'GF_SECURITY_ADMIN_USER').valueFrom.secretKeyRef).toEqual({ name: 'grafana-admin', key: 'admin-user' });
    expect(pod.volumes.find((v: any) => v.configMap?.name === 'grafana-dashboards-platform')).toBeDefined();
    expect(find(objs, 'Service', 'grafana').spec.ports[0].port).toBe(80);
  });

  it('grafana: the dashboard sidecar provisions the apps\' labelled ConfigMaps of every namespace into the folder "Apps"', () => {
    const objs = render('grafana');
    const pod = find(objs, 'Deployment', 'grafana').spec.template.spec;
    const sidecar = pod.containers.find((c: any) => c.name === 'grafana-sc-dashboard');
    expect(sidecar, 'sidecar container').toBeDefined();
    const env = Object.fromEntries(sidecar.env.filter((e: any) => 'value' in e).map((e: any) => [e.name, e.value]));
    // The labels manifests/app/dashboard.yaml.tmpl puts on each app's dashboard ConfigMap.
    const template = fs.readFileSync(path.join(PROJECT_DIR, 'manifests', 'app', 'dashboard.yaml.tmpl'), 'utf8');
    expect(template.split('\n').map((l) => l.trim())).toContain(`${env.LABEL}: ${env.LABEL_VALUE}`);
    expect(env).toMatchObject({ NAMESPACE: 'ALL', RESOURCE: 'configmap' });
    const providers = find(objs, 'ConfigMap', 'grafana-config-dashboards').data['provider.yaml'] as string;
    expect(providers).toMatch(new RegExp(`folder: 'Apps'[\\s\\S]*path: ${env.FOLDER}`));
    const rules = find(objs, 'ClusterRole', 'grafana-clusterrole').rules;
    expect(rules[0].resources).toContain('configmaps');
  });

  it.skipIf(!tempoAvailable)('tempo: retention and volume from .env, the contract Service, span metrics into Prometheus, bounded memory', () => {
    const objs = render('tempo');
    const config = YAML.parse(find(objs, 'ConfigMap', 'tempo').data['tempo.yaml']);
    expect(config.compactor.compaction.block_retention).toBe('48h');
    expect(config.storage.trace).toMatchObject({ backend: 'local', local: { path: '/var/tempo/traces' }, wal: { path: '/var/tempo/wal' } });
    expect(config.usage_report.reporting_enabled).toBe(false);
    expect(config.distributor.receivers.otlp.protocols).toEqual({ grpc: { endpoint: '0.0.0.0:4317' }, http: { endpoint: '0.0.0.0:4318' } });
    expect(config.metrics_generator.storage.remote_write).toEqual([{ url: PROMETHEUS_REMOTE_WRITE_URL, send_exemplars: true }]);
    expect(config.overrides.defaults.metrics_generator.processors).toEqual(['service-graphs', 'span-metrics']);

    const sts = find(objs, 'StatefulSet', 'tempo');
    expect(sts.spec.volumeClaimTemplates[0].spec).toMatchObject({ storageClassName: 'local-path', resources: { requests: { storage: '4Gi' } } });
    const tempo = podSpec(sts).containers.find((c: any) => c.name === 'tempo');
    expect(tempo.image).toBe('docker.io/grafana/tempo:2.10.8');
    // The data directories are on the claim: traces survive a restart.
    expect(tempo.volumeMounts.find((m: any) => m.mountPath === '/var/tempo').name).toBe(sts.spec.volumeClaimTemplates[0].metadata.name);
    expect(tempo.args).toContain('-mem-ballast-size-mbs=0');
    expect(tempo.resources).toEqual({ requests: { cpu: '50m', memory: '256Mi' }, limits: { memory: '1Gi' } });
    expect(tempo.env.find((e: any) => e.name === 'GOMEMLIMIT').value).toBe('800MiB');
    // Only one container: tempo-query (the Jaeger UI) stays off.
    expect(podSpec(sts).containers.map((c: any) => c.name)).toEqual(['tempo']);

    // The contract: Service tempo, HTTP API on 3200 (Grafana, validate), OTLP gRPC on 4317 (Alloy).
    const svc = find(objs, 'Service', TEMPO.service);
    const port = (n: number) => svc.spec.ports.find((p: any) => p.port === n);
    expect(port(TEMPO.httpPort)?.targetPort).toBe(TEMPO.httpPort);
    expect(port(4317)?.targetPort).toBe(4317);
    expect(`http://${svc.metadata.name}.${NAMESPACE}.svc:${TEMPO.httpPort}`).toBe(SERVICE_URLS.tempo);
    expect(`http://${svc.metadata.name}.${NAMESPACE}.svc:4317`).toBe(TEMPO_OTLP_GRPC_URL);
    expect(svc.spec.selector).toEqual(sts.spec.template.metadata.labels);
    const workloads = objs.filter((o) => WORKLOADS.includes(o.kind)).map((o) => `${o.kind}/${o.metadata.name}`);
    expect(workloads).toEqual(['StatefulSet/tempo']);
  });

  it('k8s-monitoring: the OTLP receiver, its Service as lib.ts OTLP_RECEIVER says, traces to Tempo, OTLP metrics and logs to Prometheus and Loki', () => {
    const objs = render('k8sMonitoring');
    const config = parseAlloy(find(objs, 'ConfigMap', 'k8s-monitoring-alloy-receiver').data['config.alloy']);
    const blocks = allBlocks(config);
    const receiver = blocks.find((b) => b.name === 'otelcol.receiver.otlp')!;
    expect(attr(receiver.children.find((c) => c.name === 'grpc')!, 'endpoint')).toBe(`"0.0.0.0:${OTLP_RECEIVER.grpcPort}"`);
    expect(attr(receiver.children.find((c) => c.name === 'http')!, 'endpoint')).toBe(`"0.0.0.0:${OTLP_RECEIVER.httpPort}"`);
    const exporter = blocks.find((b) => b.name === 'otelcol.exporter.otlp' && b.label === 'tempo')!;
    const client = exporter.children.find((c) => c.name === 'client')!;
    expect(attr(client, 'endpoint')).toBe(`"${TEMPO_OTLP_GRPC_URL}"`);
    expect(attr(client.children.find((c) => c.name === 'tls')!, 'insecure')).toBe('true');
    // The feature's three outputs: traces to the tempo destination only, metrics to Prometheus, logs to Loki.
    const feature = blocks.find((b) => b.name === 'application_observability' && b.label === 'feature')!;
    const list = (key: string) => [...new RegExp(`${key}\\s*=\\s*\\[([^\\]]*)\\]`).exec(feature.own)![1].matchAll(/([\w.]+)\.input/g)].map((m) => m[1]);
    expect(list('traces_destinations')).toEqual(['otelcol.processor.attributes.tempo']);
    expect(list('metrics_destinations')).toEqual(['otelcol.exporter.prometheus.prometheus']);
    expect(list('logs_destinations')).toEqual(['otelcol.exporter.loki.loki']);
    // Exemplars reach Prometheus: Alloy's remote write sends them unless told not to (send_exemplars defaults to true).
    const remoteWrite = blocks.find((b) => b.name === 'prometheus.remote_write' && b.label === 'prometheus')!;
    expect(attr(remoteWrite.children.find((c) => c.name === 'endpoint')!, 'send_exemplars')).toBeUndefined();

    // What the Alloy Operator makes of it: a Deployment and the Service apps send to.
    const made = renderAlloyWorkloads(objs);
    const deployment = find(made, 'Deployment', 'k8s-monitoring-alloy-receiver');
    const svc = find(made, 'Service', OTLP_RECEIVER.service);
    expect((svc.metadata as { namespace?: string }).namespace).toBe(OTLP_RECEIVER.namespace);
    const ports = Object.fromEntries(svc.spec.ports.map((p: any) => [p.name, [p.port, p.targetPort]]));
    expect(ports).toMatchObject({ 'otlp-grpc': [OTLP_RECEIVER.grpcPort, OTLP_RECEIVER.grpcPort], 'otlp-http': [OTLP_RECEIVER.httpPort, OTLP_RECEIVER.httpPort] });
    const pod = deployment.spec.template;
    expect(Object.entries(svc.spec.selector).every(([k, v]) => pod.metadata.labels[k] === v)).toBe(true);
    const alloy = pod.spec.containers.find((c: any) => c.name === 'alloy');
    expect(alloy.ports.map((p: any) => p.containerPort)).toEqual(expect.arrayContaining([OTLP_RECEIVER.grpcPort, OTLP_RECEIVER.httpPort]));
  });

  it('grafana: the datasources lead from metric to trace to logs and back, after Grafana\'s own $-expansion', () => {
    const cm = find(render('grafana'), 'ConfigMap', 'grafana');
    const ds = YAML.parse(cm.data['datasources.yaml']).datasources as any[];
    const byUid = Object.fromEntries(ds.map((d) => [d.uid, d]));
    expect(byUid[TEMPO.datasourceUid]).toMatchObject({ type: 'tempo', url: SERVICE_URLS.tempo });
    // Grafana expands $VAR / ${VAR} in provisioning files and turns $$ into $ (pkg/services/provisioning/values).
    const expanded = (v: string) => grafanaProvisioningExpand(v);
    const prom = byUid.prometheus.jsonData;
    expect(prom.exemplarTraceIdDestinations.map((d: any) => [d.name, d.datasourceUid])).toEqual([['trace_id', 'tempo'], ['traceID', 'tempo']]);
    const [field] = byUid.loki.jsonData.derivedFields;
    expect(field.datasourceUid).toBe('tempo');
    expect(expanded(field.url)).toBe('${__value.raw}');
    const re = new RegExp(expanded(field.matcherRegex));
    const line = '{"level":"info","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","msg":"GET /api/slow 200"}';
    expect(re.exec(line)?.[1]).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    const tempo = byUid.tempo.jsonData;
    expect(tempo.tracesToLogsV2).toMatchObject({ datasourceUid: 'loki', filterByTraceID: true });
    // The tag maps a span resource attribute (set by Alloy's k8sattributes) onto a Loki stream label.
    expect(tempo.tracesToLogsV2.tags).toEqual([{ key: 'k8s.namespace.name', value: 'namespace' }]);
    expect(tempo.tracesToMetrics.datasourceUid).toBe('prometheus');
    for (const q of tempo.tracesToMetrics.queries) expect(expanded(q.query)).toContain('{$__tags}');
    expect(tempo.serviceMap).toEqual({ datasourceUid: 'prometheus' });
    // Negative control: without $$ the expansion eats the link.
    expect(grafanaProvisioningExpand('${__value.raw}')).toBe('');
  });

  it('the schemas are enforced (negative control)', () => {
    expect(() => render('k8sMonitoring', { collectors: [] })).toThrow(/schema/);
    expect(() => render('loki', { loki: { auth_enabled: 'nope' } })).toThrow(/schema/);
    expect(() => render('prometheus', { server: { retention: 15 } })).toThrow(/schema/);
  });

  it('covers every release the phase installs', () => {
    expect(Object.keys(chartDir).sort()).toEqual(Object.keys(RELEASES).sort());
    expect(Object.values(RELEASES).map((r) => r.chart)).toEqual([
      PINNED.charts.prometheus,
      PINNED.charts.loki,
      PINNED.charts.tempo,
      PINNED.charts.k8sMonitoring,
      PINNED.charts.grafana,
    ]);
  });
});
