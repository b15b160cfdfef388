// The observability phase: pure parts (table-driven) and the orchestration against the stand-in tools.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { beforeEach, describe, expect, it } from 'vitest';
import { PINNED, UserError, mergeValues, parseConfig } from '../scripts/lib.ts';
import {
  ALERT_WEBHOOK,
  ALLOY_SNIPPETS,
  DASHBOARDS_CONFIGMAP,
  GRAFANA_ADMIN,
  LOKI_PUSH_URL,
  PROMETHEUS_REMOTE_WRITE_URL,
  TEMPO_OTLP_GRPC_URL,
  RELEASES,
  SERVICE_URLS,
  adminSecretManifest,
  alertRuleFiles,
  alloyStatusLines,
  dashboardsConfigMap,
  namespaceManifest,
  newPassword,
  prometheusRetentionSize,
  releaseSpec,
  volumeSizeProblem,
  webhookReceiver,
  webhookSecretManifest,
} from '../scripts/observability.ts';
import { PROJECT_DIR, type Sandbox, type ToolCall, isMutating, makeSandbox } from './helpers.ts';

const baseEnv = { STATE_DIR: '/tmp/st', HTTP_PORT: '18080', HTTPS_PORT: '18443', REGISTRY_PORT: '15001' };
const cfgWith = (env: Record<string, string> = {}) => parseConfig({ ...baseEnv, ...env });
const merged = (env: Record<string, string>, key: keyof typeof RELEASES) => mergeValues(...releaseSpec(cfgWith(env), key).values) as any;

describe('every .env knob reaches the Helm values', () => {
  const cases: [string, string, keyof typeof RELEASES, (v: any) => unknown, unknown][] = [
    ['PROMETHEUS_RETENTION', '36h', 'prometheus', (v) => v.server.retention, '36h'],
    ['PROMETHEUS_STORAGE', '20Gi', 'prometheus', (v) => v.server.persistentVolume.size, '20Gi'],
    ['PROMETHEUS_STORAGE', '20Gi', 'prometheus', (v) => v.server.retentionSize, '16384MB'],
    ['LOKI_RETENTION', '72h', 'loki', (v) => v.loki.limits_config.retention_period, '72h'],
    ['LOKI_RETENTION', '72h', 'loki', (v) => v.loki.limits_config.reject_old_samples_max_age, '72h'],
    ['LOKI_STORAGE', '512Mi', 'loki', (v) => v.singleBinary.persistence.size, '512Mi'],
    ['TEMPO_RETENTION', '24h', 'tempo', (v) => v.tempo.retention, '24h'],
    ['TEMPO_STORAGE', '5Gi', 'tempo', (v) => v.persistence.size, '5Gi'],
    ['DOMAIN', 'example.test', 'grafana', (v) => v['grafana.ini'].server.root_url, 'https://grafana.example.test:18443'],
    ['DOMAIN', 'example.test', 'prometheus', (v) => v.server.baseURL, 'https://prometheus.example.test:18443'],
    ['HTTPS_PORT', '443', 'grafana', (v) => v['grafana.ini'].server.root_url, 'https://grafana.localhost'],
    ['CLUSTER_NAME', 'dev-box', 'k8sMonitoring', (v) => v.cluster.name, 'dev-box'],
  ];
  it.each(cases)('%s=%s lands in %s', (key, value, release, pick, want) => {
    expect(pick(merged({ [key]: value }, release))).toEqual(want);
    // ...and the default differs, so the assertion is about the knob, not a constant.
    expect(pick(merged({}, release))).not.toEqual(want);
  });

  it('keeps the structural values of the files under the overrides', () => {
    const v = merged({ PROMETHEUS_STORAGE: '20Gi' }, 'prometheus');
    expect(v.server.persistentVolume).toEqual({ enabled: true, storageClass: 'local-path', size: '20Gi' });
    expect(v.server.extraFlags).toContain('web.enable-remote-write-receiver');
  });
});

describe('prometheusRetentionSize: 80 % of the volume, in Prometheus units (MB = MiB)', () => {
  it.each([
    ['10Gi', '8192MB'],
    ['12Gi', '9830MB'],
    ['1Gi', '819MB'],
    ['512Mi', '409MB'],
    ['100Mi', '80MB'],
  ])('%s -> %s', (storage, want) => {
    expect(prometheusRetentionSize(storage)).toBe(want);
  });
});

describe('service URLs, defined once', () => {
  it('are the contract services', () => {
    expect(SERVICE_URLS).toEqual({
      prometheus: 'http://prometheus-server.monitoring.svc:80',
      loki: 'http://loki.monitoring.svc:3100',
      grafana: 'http://grafana.monitoring.svc:80',
      alertmanager: 'http://prometheus-alertmanager.monitoring.svc:9093',
      tempo: 'http://tempo.monitoring.svc:3200',
    });
    expect(TEMPO_OTLP_GRPC_URL).toBe('http://tempo.monitoring.svc:4317');
  });
  it('feed Alloy destinations and Grafana datasources', () => {
    const k8s = merged({}, 'k8sMonitoring');
    expect(k8s.destinations.prometheus).toEqual({ type: 'prometheus', url: PROMETHEUS_REMOTE_WRITE_URL });
    expect(k8s.destinations.loki).toEqual({ type: 'loki', url: LOKI_PUSH_URL });
    expect(PROMETHEUS_REMOTE_WRITE_URL).toBe(`${SERVICE_URLS.prometheus}/api/v1/write`);
    expect(LOKI_PUSH_URL).toBe(`${SERVICE_URLS.loki}/loki/api/v1/push`);
    expect(k8s.destinations.tempo).toMatchObject({ type: 'otlp', protocol: 'grpc', url: TEMPO_OTLP_GRPC_URL, traces: { enabled: true } });
    // Tempo's span metrics go where Alloy writes, with their exemplars.
    expect(merged({}, 'tempo').tempo.metricsGenerator.storage.remote_write).toEqual([{ url: PROMETHEUS_REMOTE_WRITE_URL, send_exemplars: true }]);
    const ds = merged({}, 'grafana').datasources['datasources.yaml'].datasources;
    expect(ds.map((d: any) => [d.uid, d.url, d.isDefault])).toEqual([
      ['prometheus', SERVICE_URLS.prometheus, true],
      ['loki', SERVICE_URLS.loki, false],
      ['tempo', SERVICE_URLS.tempo, false],
      ['alertmanager', SERVICE_URLS.alertmanager, false],
    ]);
  });
  it('reject a datasource type without a URL', () => {
    const read = (rel: string) =>
      rel === RELEASES.grafana.valuesFile
        ? YAML.stringify({ datasources: { 'datasources.yaml': { datasources: [{ name: 'J', type: 'jaeger' }] } } })
        : fs.readFileSync(path.join(PROJECT_DIR, rel), 'utf8');
    expect(() => releaseSpec(cfgWith(), 'grafana', read)).toThrow(/jaeger/);
  });
});

describe('alert rules from alerts/*.rules.yaml', () => {
  const dir = (files: Record<string, string>) => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'alerts-'));
    for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(d, f), text);
    return d;
  };
  const watchdog = 'groups:\n  - name: platform\n    rules:\n      - alert: Watchdog\n        expr: vector(1)\n';

  it('reads every *.rules.yaml (sorted), parsed, and nothing else', () => {
    const rules = alertRuleFiles(dir({ 'b.rules.yaml': watchdog, 'a.rules.yaml': 'groups: []\n', 'notes.md': '# no', 'x.yaml': 'groups: []' }));
    expect(Object.keys(rules)).toEqual(['a.rules.yaml', 'b.rules.yaml']);
    expect((rules['b.rules.yaml'] as any).groups[0].rules[0]).toEqual({ alert: 'Watchdog', expr: 'vector(1)' });
  });

  it.each([
    ['broken.rules.yaml', 'groups:\n  - name: x\n   rules: [', /^alerts\/broken\.rules\.yaml is not valid YAML \(.+\); fix the file/],
    ['nogroups.rules.yaml', 'rules:\n  - alert: X\n', /^alerts\/nogroups\.rules\.yaml has no list of "groups"/],
    ['empty.rules.yaml', '', /^alerts\/empty\.rules\.yaml has no list of "groups"/],
    ['map.rules.yaml', 'groups:\n  platform: {}\n', /^alerts\/map\.rules\.yaml has no list of "groups"/],
    ['bad name.rules.yaml', watchdog, /^alerts\/bad name\.rules\.yaml: a ConfigMap key allows only/],
  ])('refuses %s, naming the file', (file, text, want) => {
    const d = dir({ 'good.rules.yaml': watchdog, [file]: text });
    expect(() => alertRuleFiles(d)).toThrow(UserError);
    expect(() => alertRuleFiles(d)).toThrow(want);
  });

  it('no folder: no rule files', () => {
    expect(alertRuleFiles(path.join(os.tmpdir(), 'no-such-alerts-dir'))).toEqual({});
  });

  it('each file is a serverFiles key of its own, unchanged, and listed in rule_files; a new file needs no code', () => {
    const rules = { 'platform.rules.yaml': { groups: [{ name: 'p', rules: [] }] }, 'mine.rules.yaml': { groups: [] } };
    const v = mergeValues(...releaseSpec(cfgWith(), 'prometheus', undefined, rules).values) as any;
    expect(v.serverFiles['platform.rules.yaml']).toEqual(rules['platform.rules.yaml']);
    expect(v.serverFiles['mine.rules.yaml']).toEqual(rules['mine.rules.yaml']);
    expect(v.serverFiles['prometheus.yml'].rule_files).toEqual(['/etc/config/platform.rules.yaml', '/etc/config/mine.rules.yaml']);
  });

  it("the repository's alerts/ load, with Watchdog", () => {
    const rules = alertRuleFiles();
    expect(Object.keys(rules)).toContain('platform.rules.yaml');
    const alerts = Object.values(rules).flatMap((r: any) => r.groups.flatMap((g: any) => g.rules.map((x: any) => x.alert)));
    expect(alerts).toContain('Watchdog');
    expect(merged({}, 'prometheus').serverFiles['prometheus.yml'].rule_files).toEqual(Object.keys(rules).map((f) => `/etc/config/${f}`));
  });
});

describe('Alertmanager receivers and ALERT_WEBHOOK_URL', () => {
  const file = `${ALERT_WEBHOOK.dir}/${ALERT_WEBHOOK.key}`;
  it.each([
    ['', undefined],
    ['https://hooks.slack.com/services/T000/B000/XXXX', { name: 'webhook', slack_configs: [{ api_url_file: file, send_resolved: true }] }],
    ['https://example.com/alerts?token=abc', { name: 'webhook', webhook_configs: [{ url_file: file, send_resolved: true }] }],
    ['http://10.0.0.5:9000/hook', { name: 'webhook', webhook_configs: [{ url_file: file, send_resolved: true }] }],
  ])('webhookReceiver(%j)', (url, want) => {
    expect(webhookReceiver(url)).toEqual(want);
  });

  it('without the key: one receiver with no target, Watchdog included', () => {
    const am = merged({}, 'prometheus').alertmanager;
    expect(am.enabled).toBe(true);
    expect(am.config.receivers).toEqual([{ name: 'local' }]);
    expect(am.config.route.receiver).toBe('local');
    expect(am.baseURL).toBe('https://alertmanager.localhost:18443');
  });

  it('with the key: the default route goes to the webhook, Watchdog stays local, the URL is in no value', () => {
    const url = 'https://example.com/hook/SECRET-TOKEN';
    const v = merged({ ALERT_WEBHOOK_URL: url }, 'prometheus');
    expect(v.alertmanager.config.receivers).toEqual([{ name: 'local' }, webhookReceiver(url)]);
    expect(v.alertmanager.config.route.receiver).toBe('webhook');
    expect(v.alertmanager.config.route.routes).toEqual([{ receiver: 'local', matchers: ['alertname="Watchdog"'] }]);
    expect(v.alertmanager.extraSecretMounts).toEqual([
      { name: 'webhook', secretName: ALERT_WEBHOOK.secret, mountPath: ALERT_WEBHOOK.dir, readOnly: true },
    ]);
    expect(JSON.stringify(v)).not.toContain('SECRET-TOKEN');
  });

  it('the Secret holds the URL, or an empty value when the key is not set', () => {
    const s = YAML.parse(webhookSecretManifest('https://example.com/x'));
    expect(s.metadata).toMatchObject({ name: 'alertmanager-webhook', namespace: 'monitoring' });
    expect(Buffer.from(s.data.url, 'base64').toString()).toBe('https://example.com/x');
    expect(YAML.parse(webhookSecretManifest('')).data.url).toBe('');
  });
});

describe('Alloy snippets from alloy/', () => {
  it.each(ALLOY_SNIPPETS.map((s) => [s.file, s.valuePath.join('.')]))('%s is fed into %s', (file, dotted) => {
    const at = dotted.split('.').reduce<any>((o, k) => o?.[k], merged({}, 'k8sMonitoring'));
    expect(at).toBe(fs.readFileSync(path.join(PROJECT_DIR, file), 'utf8'));
  });
});

describe('manifests', () => {
  it('namespace monitoring is privileged for Pod Security', () => {
    const ns = YAML.parse(namespaceManifest());
    expect(ns.metadata.name).toBe('monitoring');
    for (const mode of ['enforce', 'audit', 'warn']) expect(ns.metadata.labels[`pod-security.kubernetes.io/${mode}`]).toBe('privileged');
  });
  it('the admin Secret has the contract keys, base64-encoded', () => {
    const s = YAML.parse(adminSecretManifest('s3cr3t'));
    expect(s.metadata).toEqual({ name: 'grafana-admin', namespace: 'monitoring', labels: { 'app.kubernetes.io/part-of': 'talos-local-observability' } });
    expect(Buffer.from(s.data['admin-user'], 'base64').toString()).toBe('admin');
    expect(Buffer.from(s.data['admin-password'], 'base64').toString()).toBe('s3cr3t');
  });
  it('passwords are long, URL-safe and different each time', () => {
    const a = newPassword();
    expect(a).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(newPassword()).not.toBe(a);
  });
});

describe('dashboards ConfigMap', () => {
  const dir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'dash-'));
  it('holds every *.json file, sorted, and nothing else', () => {
    const d = dir();
    fs.writeFileSync(path.join(d, 'b.json'), '{"title":"B"}');
    fs.writeFileSync(path.join(d, 'a.json'), '{"title":"A"}');
    fs.writeFileSync(path.join(d, 'notes.md'), '# no');
    const { yaml, files } = dashboardsConfigMap(d);
    expect(files).toEqual(['a.json', 'b.json']);
    const cm = YAML.parse(yaml);
    expect(cm.metadata).toMatchObject({ name: DASHBOARDS_CONFIGMAP, namespace: 'monitoring' });
    expect(cm.data).toEqual({ 'a.json': '{"title":"A"}', 'b.json': '{"title":"B"}' });
  });
  it('names the file with broken JSON', () => {
    const d = dir();
    fs.writeFileSync(path.join(d, 'broken.json'), '{"title":');
    expect(() => dashboardsConfigMap(d)).toThrow(UserError);
    expect(() => dashboardsConfigMap(d)).toThrow(/dashboards\/broken\.json is not valid JSON/);
  });
  it('rejects a file name that cannot be a ConfigMap key', () => {
    const d = dir();
    fs.writeFileSync(path.join(d, 'my board.json'), '{}');
    expect(() => dashboardsConfigMap(d)).toThrow(/rename the file/);
  });
  it('is empty, not an error, when there are no dashboards', () => {
    expect(dashboardsConfigMap(path.join(dir(), 'missing')).files).toEqual([]);
  });
});

describe('volumeSizeProblem', () => {
  const c = cfgWith({ PROMETHEUS_STORAGE: '10Gi' });
  it.each([
    ['not installed', null, false],
    ['installed at the same size', { server: { persistentVolume: { size: '10Gi' } } }, false],
    ['installed before sizes were set', { server: {} }, false],
    ['installed at another size', { server: { persistentVolume: { size: '20Gi' } } }, true],
  ])('%s', (_, deployed, problem) => {
    const msg = volumeSizeProblem(c, 'prometheus', deployed as Record<string, unknown> | null);
    expect(Boolean(msg)).toBe(problem);
    if (problem) expect(msg).toMatch(/^PROMETHEUS_STORAGE="10Gi" differs .*\(20Gi\)/);
  });

  // The way out must work against a real API server: the prometheus chart templates its claim
  // (templates/pvc.yaml), so `helm uninstall` deletes it and a `kubectl delete pvc` after it fails
  // NotFound; Loki's claim comes from its StatefulSet's volumeClaimTemplates and outlives the release.
  const kc = `${cfgWith({}).stateDir}/kubeconfig`;
  it.each([
    ['prometheus', { PROMETHEUS_STORAGE: '10Gi' }, { server: { persistentVolume: { size: '20Gi' } } }, [
      `  helm --kubeconfig ${kc} uninstall prometheus --namespace monitoring --wait   (also deletes its volume claim prometheus-server)`,
      '  task observability',
    ]],
    ['loki', { LOKI_STORAGE: '8Gi' }, { singleBinary: { persistence: { size: '5Gi' } } }, [
      `  helm --kubeconfig ${kc} uninstall loki --namespace monitoring --wait`,
      `  kubectl --kubeconfig ${kc} delete pvc storage-loki-0 --namespace monitoring   (the StatefulSet's claim outlives the release)`,
      '  task observability',
    ]],
    ['tempo', { TEMPO_STORAGE: '4Gi' }, { persistence: { size: '2Gi' } }, [
      `  helm --kubeconfig ${kc} uninstall tempo --namespace monitoring --wait`,
      `  kubectl --kubeconfig ${kc} delete pvc storage-tempo-0 --namespace monitoring   (the StatefulSet's claim outlives the release)`,
      '  task observability',
    ]],
  ] as const)('%s: the commands that drop the volume, each of which succeeds', (key, env, deployed, commands) => {
    const msg = volumeSizeProblem(cfgWith(env), key, deployed)!;
    const lines = msg.split('\n');
    expect(lines.slice(lines.findIndex((l) => l.includes(' uninstall ')))).toEqual(commands);
  });
});

describe('alloyStatusLines', () => {
  const alloy = (conditions?: { type: string; status: string; reason?: string; message?: string }[]) => ({
    metadata: { name: 'k8s-monitoring-alloy-logs', namespace: 'monitoring' },
    ...(conditions ? { status: { conditions } } : {}),
  });
  it.each([
    ['no Alloy object', [], 'no Alloy objects in monitoring: the k8s-monitoring release created none'],
    ['not reconciled yet', [alloy()], 'Alloy monitoring/k8s-monitoring-alloy-logs: no status yet (the operator has not reconciled it)'],
    ['deployed', [alloy([{ type: 'Initialized', status: 'True' }, { type: 'Deployed', status: 'True' }])], 'Alloy monitoring/k8s-monitoring-alloy-logs: deployed'],
    ['irreconcilable', [alloy([{ type: 'Irreconcilable', status: 'True', reason: 'ReconcileError', message: 'bad values' }])],
      'Alloy monitoring/k8s-monitoring-alloy-logs: Irreconcilable (ReconcileError): bad values'],
    ['a failure that has cleared', [alloy([{ type: 'ReleaseFailed', status: 'False' }])], 'Alloy monitoring/k8s-monitoring-alloy-logs: no status yet (the operator has not reconciled it)'],
  ])('%s', (_, alloys, want) => {
    expect(alloyStatusLines(alloys)).toEqual([want]);
  });
});

// ---------------------------------------------------------------------------------------------
// Orchestration with the stand-in tools
// ---------------------------------------------------------------------------------------------

const upgrades = (calls: ToolCall[]) => calls.filter((c) => c.tool === 'helm' && c.argv.includes('upgrade'));
const releaseOf = (c: ToolCall) => c.argv[c.argv.indexOf('--install') + 1];
const flag = (c: ToolCall, name: string) => c.argv[c.argv.indexOf(name) + 1];
const line = (c: ToolCall) => `${c.tool} ${c.argv.join(' ')}`;

describe('phase against the stand-in tools', { timeout: 30_000 }, () => {
  let sandbox: Sandbox;
  beforeEach(() => {
    sandbox = makeSandbox();
    sandbox.createCluster();
  });

  it('installs the five pinned releases together, with --wait, in monitoring, from the pinned repos', async () => {
    const res = await sandbox.run('observability');
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const ups = upgrades(res.calls);
    expect(ups.map(releaseOf).sort()).toEqual(['grafana', 'k8s-monitoring', 'loki', 'prometheus', 'tempo']);
    const want = {
      prometheus: PINNED.charts.prometheus,
      loki: PINNED.charts.loki,
      tempo: PINNED.charts.tempo,
      'k8s-monitoring': PINNED.charts.k8sMonitoring,
      grafana: PINNED.charts.grafana,
    } as Record<string, { repo: string; chart: string; version: string }>;
    for (const c of ups) {
      const w = want[releaseOf(c)];
      expect(c.argv[c.argv.indexOf('--install') + 2]).toBe(w.chart);
      expect(flag(c, '--repo')).toBe(w.repo);
      expect(flag(c, '--version')).toBe(w.version);
      expect(flag(c, '--namespace')).toBe('monitoring');
      expect(c.argv).toContain('--wait');
      expect(flag(c, '--timeout')).toMatch(/^\d+m$/);
    }
    // Order: the namespace and Grafana's admin Secret (client-side: the namespace first), then
    // Alertmanager's webhook Secret and the dashboards (server-side, one apply) first (the pods mount
    // them); then the five releases, none waiting for another's release.
    const idx = (pred: (c: ToolCall) => boolean) => res.calls.findIndex(pred);
    const applies = res.calls.filter((c) => c.tool === 'kubectl' && c.argv.includes('apply'));
    const lastApply = res.calls.lastIndexOf(applies.at(-1)!);
    const at = (r: string) => idx((c) => c.tool === 'helm' && c.argv.includes('upgrade') && releaseOf(c) === r);
    expect(applies.length).toBe(3);
    expect(lastApply).toBeLessThan(Math.min(at('prometheus'), at('loki'), at('tempo'), at('k8s-monitoring'), at('grafana')));
    // The releases exist in the stand-in cluster with the charts asked for.
    const releases = sandbox.state().helm.releases;
    expect(releases['monitoring/prometheus'].chart).toBe('prometheus-29.27.0');
    expect(releases['monitoring/loki'].repo).toBe('https://grafana-community.github.io/helm-charts');
    expect(releases['monitoring/grafana'].repo).toBe('https://grafana-community.github.io/helm-charts');
    expect(releases['monitoring/k8s-monitoring'].chart).toBe('k8s-monitoring-4.4.0');
    expect(releases['monitoring/tempo'].chart).toBe('tempo-2.2.4');
    expect(releases['monitoring/tempo'].repo).toBe('https://grafana-community.github.io/helm-charts');
    expect(sandbox.state().kubectl.objects['Namespace//monitoring'].metadata.labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });

  it('generates the Grafana password once, keeps it in the state dir (0600) and the Secret', async () => {
    const res = await sandbox.run('observability');
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const file = path.join(sandbox.stateDir, 'grafana-admin-password');
    const password = fs.readFileSync(file, 'utf8').trim();
    expect(password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const secret = sandbox.state().kubectl.objects[`Secret/monitoring/${GRAFANA_ADMIN.secret}`];
    expect(Buffer.from(secret.data['admin-password'], 'base64').toString()).toBe(password);
    expect(res.stdout).not.toContain(password);

    // The state file lost, the cluster keeps its password: it is recovered, not replaced.
    fs.rmSync(file);
    const again = await sandbox.run('observability');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(fs.readFileSync(file, 'utf8').trim()).toBe(password);
    expect(again.calls.filter(isMutating).map(line)).toEqual([]);
  });

  it('a re-run with nothing changed makes no mutating call', async () => {
    expect((await sandbox.run('observability')).code).toBe(0);
    const res = await sandbox.run('observability');
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.calls.filter(isMutating).map(line)).toEqual([]);
    expect(res.stdout).toMatch(/nothing changed/);
  });

  it('every .env knob reaches the deployed values on a first install', async () => {
    const env = {
      PROMETHEUS_RETENTION: '30d', PROMETHEUS_STORAGE: '20Gi', LOKI_RETENTION: '48h', LOKI_STORAGE: '2Gi',
      TEMPO_RETENTION: '24h', TEMPO_STORAGE: '3Gi', DOMAIN: 'example.test', CLUSTER_NAME: 'talos-local',
    };
    const res = await sandbox.run('observability', [], env);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const r = sandbox.state().helm.releases;
    expect(r['monitoring/prometheus'].values.server).toMatchObject({ retention: '30d', persistentVolume: { size: '20Gi' } });
    expect(r['monitoring/loki'].values.loki.limits_config.retention_period).toBe('48h');
    expect(r['monitoring/loki'].values.singleBinary.persistence.size).toBe('2Gi');
    expect(r['monitoring/tempo'].values).toMatchObject({ tempo: { retention: '24h' }, persistence: { size: '3Gi' } });
    expect(r['monitoring/grafana'].values['grafana.ini'].server.root_url).toBe(`https://grafana.example.test:${sandbox.ports.HTTPS_PORT}`);
    expect(r['monitoring/k8s-monitoring'].values.cluster.name).toBe('talos-local');
  });

  it('a changed retention upgrades only its release', async () => {
    expect((await sandbox.run('observability')).code).toBe(0);
    const res = await sandbox.run('observability', [], { PROMETHEUS_RETENTION: '30d' });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(upgrades(res.calls).map(releaseOf)).toEqual(['prometheus']);
    expect(res.stdout).toMatch(/upgraded prometheus-29\.27\.0 \(values changed\)/);
  });

  it.each([
    ['pending-install', /stuck in status pending-install .*helm --kubeconfig \S+ --namespace monitoring uninstall grafana/],
    ['pending-upgrade', /stuck in status pending-upgrade .*helm --kubeconfig \S+ --namespace monitoring rollback grafana/],
  ])('a release left %s by an interrupted run: says how to settle it, changes nothing', async (status, want) => {
    expect((await sandbox.run('observability')).code).toBe(0);
    const state = sandbox.state();
    state.helm.releases['monitoring/grafana'].status = status;
    sandbox.scenario(state);
    const res = await sandbox.run('observability');
    expect(res.code).toBe(1);
    expect(res.stdout + res.stderr).toMatch(want);
    expect(upgrades(res.calls).map(releaseOf)).toEqual([]);
  });

  it('ALERT_WEBHOOK_URL: into the Secret only (never an argument, the values file or the output, even --verbose); a changed URL changes only the Secret', async () => {
    const url = 'https://example.com/hooks/SECRET-TOKEN-1';
    const res = await sandbox.run('observability', ['--verbose'], { ALERT_WEBHOOK_URL: url });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const secret = sandbox.state().kubectl.objects[`Secret/monitoring/${ALERT_WEBHOOK.secret}`];
    expect(Buffer.from(secret.data.url, 'base64').toString()).toBe(url);
    expect(res.stdout).toContain('$ helm'); // --verbose printed the command lines
    expect(res.stdout + res.stderr).not.toContain('SECRET-TOKEN');
    expect(JSON.stringify(res.calls)).not.toContain('SECRET-TOKEN');
    const valuesFile = fs.readFileSync(path.join(sandbox.stateDir, 'helm', 'prometheus.values.yaml'), 'utf8');
    expect(valuesFile).not.toContain('SECRET-TOKEN');
    expect(YAML.parse(valuesFile).alertmanager.config.route.receiver).toBe('webhook');
    // The Secret comes before the release that mounts it.
    const secretApply = res.calls.findIndex((c) => c.tool === 'kubectl' && c.argv.includes('apply') && c.argv.includes('--server-side'));
    const promUpgrade = res.calls.findIndex((c) => c.tool === 'helm' && c.argv.includes('upgrade') && releaseOf(c) === 'prometheus');
    expect(secretApply).toBeGreaterThanOrEqual(0);
    expect(secretApply).toBeLessThan(promUpgrade);

    const same = await sandbox.run('observability', [], { ALERT_WEBHOOK_URL: url });
    expect(same.calls.filter(isMutating).map(line)).toEqual([]);
    const other = await sandbox.run('observability', [], { ALERT_WEBHOOK_URL: 'https://example.com/hooks/SECRET-TOKEN-2' });
    expect(other.code, other.stdout + other.stderr).toBe(0);
    expect(other.calls.filter(isMutating).map((c) => c.argv.slice(2, 4).join(' '))).toEqual(['apply --server-side']);
    expect(upgrades(other.calls)).toEqual([]);
    // Unset again: the Secret is emptied and the route goes back to the local receiver.
    const unset = await sandbox.run('observability');
    expect(unset.code, unset.stdout + unset.stderr).toBe(0);
    expect(sandbox.state().kubectl.objects[`Secret/monitoring/${ALERT_WEBHOOK.secret}`].data.url).toBe('');
    expect(upgrades(unset.calls).map(releaseOf)).toEqual(['prometheus']);
    expect(sandbox.state().helm.releases['monitoring/prometheus'].values.alertmanager.config.route.receiver).toBe('local');
  }, 150_000); // four runs of the phase

  it.each([
    ['LOKI_STORAGE', 'loki', '5Gi', 'storage-loki-0'],
    ['TEMPO_STORAGE', 'tempo', '2Gi', 'storage-tempo-0'],
  ])('a changed %s stops before any change, with both ways out', async (key, release, deployed, pvc) => {
    expect((await sandbox.run('observability')).code).toBe(0);
    const res = await sandbox.run('observability', [], { [key]: '8Gi' });
    expect(res.code).toBe(1);
    const out = res.stdout + res.stderr;
    expect(out).toContain(`${key}="8Gi" differs from the size of the deployed ${release} volume (${deployed})`);
    expect(out).toContain(`set ${key}=${deployed} in .env again`);
    expect(out).toContain(`delete pvc ${pvc} --namespace monitoring`);
    expect(res.calls.filter(isMutating).map(line)).toEqual([]);
  });

  it('on a failed release shows the unready pods with their events and why they have no log, and stops', async () => {
    sandbox.scenario({
      failures: [{ tool: 'helm', argv: ['upgrade', 'loki'], code: 1, stderr: 'Error: context deadline exceeded' }],
      kubectl: {
        objects: {
          'Pod/monitoring/loki-0': {
            apiVersion: 'v1', kind: 'Pod', metadata: { name: 'loki-0', namespace: 'monitoring' },
            status: { phase: 'Pending', conditions: [{ type: 'Ready', status: 'False' }],
              containerStatuses: [{ name: 'loki', ready: false, state: { waiting: { reason: 'ImagePullBackOff' } } }] },
          },
          'Pod/monitoring/prometheus-server-abc': {
            apiVersion: 'v1', kind: 'Pod', metadata: { name: 'prometheus-server-abc', namespace: 'monitoring' },
            status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
          },
          'Event/monitoring/loki-0.1': {
            apiVersion: 'v1', kind: 'Event', metadata: { name: 'loki-0.1', namespace: 'monitoring' },
            involvedObject: { kind: 'Pod', name: 'loki-0' }, type: 'Warning', reason: 'Failed',
            message: 'Failed to pull image "docker.io/grafana/loki:3.7.6"',
          },
        },
      },
    });
    const res = await sandbox.run('observability');
    expect(res.code).toBe(1);
    const out = res.stdout + res.stderr;
    expect(out).toMatch(/release loki .*did not become ready/);
    expect(out).toContain('context deadline exceeded');
    expect(out).toContain('pod monitoring/loki-0 is not Ready (Pending; loki: ImagePullBackOff)');
    expect(out).toContain('Failed to pull image "docker.io/grafana/loki:3.7.6"');
    // No log from a container that never started: kubectl's reason instead.
    expect(out).toContain('kubectl logs: Error from server (BadRequest): container "loki" in pod "loki-0" is waiting to start: trying and failing to pull image');
    expect(out).not.toContain('prometheus-server-abc');
    // The releases start together: Loki's failure stopped none of the others.
    expect(upgrades(res.calls).map(releaseOf).sort()).toEqual(['grafana', 'k8s-monitoring', 'loki', 'prometheus', 'tempo']);
  });

  it('when the Alloy Operator creates no collector, shows the Alloy objects\' status and the operator\'s log', async () => {
    const failed = 'failed to install release: rendered manifests contain a resource that already exists';
    sandbox.scenario({
      failures: [{ tool: 'kubectl', argv: ['wait', '--for=create', 'statefulset/k8s-monitoring-alloy-metrics'], code: 1, stderr: 'error: timed out waiting for the condition\n' }],
      kubectl: {
        objects: {
          'Alloy/monitoring/k8s-monitoring-alloy-metrics': {
            apiVersion: 'collectors.grafana.com/v1alpha1', kind: 'Alloy', metadata: { name: 'k8s-monitoring-alloy-metrics', namespace: 'monitoring' },
            status: { conditions: [
              { type: 'Initialized', status: 'True' },
              { type: 'ReleaseFailed', status: 'True', reason: 'InstallError', message: failed },
            ] },
          },
          'Alloy/monitoring/k8s-monitoring-alloy-logs': {
            apiVersion: 'collectors.grafana.com/v1alpha1', kind: 'Alloy', metadata: { name: 'k8s-monitoring-alloy-logs', namespace: 'monitoring' },
          },
          'Pod/monitoring/k8s-monitoring-alloy-operator-5f7-abcde': {
            apiVersion: 'v1', kind: 'Pod',
            metadata: { name: 'k8s-monitoring-alloy-operator-5f7-abcde', namespace: 'monitoring', labels: { 'app.kubernetes.io/name': 'alloy-operator' } },
            status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ name: 'alloy-operator', ready: true, state: { running: {} } }] },
          },
        },
        logs: { 'monitoring/k8s-monitoring-alloy-operator-5f7-abcde': `{"level":"error","msg":"Reconciler error","error":"${failed}"}\n` },
      },
    });
    const res = await sandbox.run('observability');
    expect(res.code).toBe(1);
    const out = res.stdout + res.stderr;
    expect(out).toContain('The Alloy Operator did not create or roll out statefulset/k8s-monitoring-alloy-metrics.');
    expect(out).toContain(`Alloy monitoring/k8s-monitoring-alloy-metrics: ReleaseFailed (InstallError): ${failed}`);
    expect(out).toContain('Alloy monitoring/k8s-monitoring-alloy-logs: no status yet (the operator has not reconciled it)');
    expect(out).toContain(`alloy-operator log: {"level":"error","msg":"Reconciler error","error":"${failed}"}`);
  });

  it('Alloy: waits only for a workload missing or not rolled out, one read when all are rolled out', async () => {
    const workload = (kind: string, name: string) => ({ apiVersion: 'apps/v1', kind, metadata: { namespace: 'monitoring', name }, spec: {} });
    const waits = (calls: ToolCall[]) => calls.filter((c) => c.tool === 'kubectl' && (c.argv.includes('wait') || c.argv.includes('rollout'))).map((c) => c.argv.find((a) => /^(statefulset|daemonset|deployment)\//.test(a)));
    // None exists yet (the operator has not created them): wait for each, creation and rollout.
    const fresh = await sandbox.run('observability');
    expect(fresh.code, fresh.stdout + fresh.stderr).toBe(0);
    expect(waits(fresh.calls)).toEqual([
      'statefulset/k8s-monitoring-alloy-metrics', 'statefulset/k8s-monitoring-alloy-metrics',
      'daemonset/k8s-monitoring-alloy-logs', 'daemonset/k8s-monitoring-alloy-logs',
      'deployment/k8s-monitoring-alloy-receiver', 'deployment/k8s-monitoring-alloy-receiver',
    ]);
    // All rolled out (the stand-in controller's default for objects it was given): no wait.
    sandbox.scenario({ kubectl: { objects: {
      'StatefulSet/monitoring/k8s-monitoring-alloy-metrics': workload('StatefulSet', 'k8s-monitoring-alloy-metrics'),
      'DaemonSet/monitoring/k8s-monitoring-alloy-logs': workload('DaemonSet', 'k8s-monitoring-alloy-logs'),
      'Deployment/monitoring/k8s-monitoring-alloy-receiver': workload('Deployment', 'k8s-monitoring-alloy-receiver'),
    } } });
    const done = await sandbox.run('observability');
    expect(done.code, done.stdout + done.stderr).toBe(0);
    expect(waits(done.calls)).toEqual([]);
    expect(done.stdout).toContain('(rolled out already)');
    // The DaemonSet's pods on one node not updated yet: only it is waited for.
    sandbox.scenario({ kubectl: { objects: { 'DaemonSet/monitoring/k8s-monitoring-alloy-logs': {
      ...workload('DaemonSet', 'k8s-monitoring-alloy-logs'),
      metadata: { namespace: 'monitoring', name: 'k8s-monitoring-alloy-logs', generation: 2 },
      status: { observedGeneration: 2, desiredNumberScheduled: 3, updatedNumberScheduled: 2, numberAvailable: 3 },
    } } } });
    const rolling = await sandbox.run('observability');
    expect(rolling.code, rolling.stdout + rolling.stderr).toBe(0);
    expect(waits(rolling.calls)).toEqual(['daemonset/k8s-monitoring-alloy-logs', 'daemonset/k8s-monitoring-alloy-logs']);
  });

  it('without a cluster it says to run task talos and touches nothing', async () => {
    const bare = makeSandbox();
    const res = await bare.run('observability');
    expect(res.code).toBe(1);
    expect(res.stdout + res.stderr).toMatch(/task talos/);
    expect(res.calls.filter(isMutating).map(line)).toEqual([]);
  });
});
