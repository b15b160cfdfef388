// The Helm values files and Alloy snippets of the observability phase, read as data: they parse,
// they keep the structure the issue asks for, and no .env knob or service URL is written in them
// (scripts/observability.ts layers those in; tests/observability.test.ts checks that it does).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, OTLP_RECEIVER, TEMPO, quantityMiB } from '../scripts/lib.ts';
import { ALLOY_SNIPPETS, DASHBOARDS_CONFIGMAP, RELEASES } from '../scripts/observability.ts';
import { PROJECT_DIR } from './helpers.ts';

const read = (rel: string) => fs.readFileSync(path.join(PROJECT_DIR, rel), 'utf8');
const values = (file: string) => YAML.parse(read(file));
const prometheus = values(RELEASES.prometheus.valuesFile);
const loki = values(RELEASES.loki.valuesFile);
const k8s = values(RELEASES.k8sMonitoring.valuesFile);
const grafana = values(RELEASES.grafana.valuesFile);
const tempo = values(RELEASES.tempo.valuesFile);

describe('every values file', () => {
  it.each(Object.values(RELEASES).map((r) => r.valuesFile))('%s parses to a map without YAML errors', (file) => {
    const doc = YAML.parseDocument(read(file));
    expect(doc.errors).toEqual([]);
    expect(typeof doc.toJSON()).toBe('object');
  });

  // One source per setting: the defaults of the .env knobs and any in-cluster URL stay out of the files.
  const knobDefaults = ['PROMETHEUS_RETENTION', 'PROMETHEUS_STORAGE', 'LOKI_RETENTION', 'LOKI_STORAGE', 'TEMPO_RETENTION', 'TEMPO_STORAGE', 'DOMAIN', 'CLUSTER_NAME'].map(
    (k) => [k, CONFIG_KEYS[k as keyof typeof CONFIG_KEYS].default] as const,
  );
  it.each(Object.values(RELEASES).map((r) => r.valuesFile))('%s hard-codes no .env knob value and no service URL', (file) => {
    const data = JSON.stringify(values(file));
    for (const [key, def] of knobDefaults) {
      // A domain hides inside longer strings (grafana.local.dev); the others are whole values.
      expect(data, `${key} default "${def}" in ${file}`).not.toContain(key === 'DOMAIN' ? def : `"${def}"`);
    }
    expect(data).not.toMatch(/\.svc\b|:\/\/[a-z-]+:\d+/);
  });
});

describe('prometheus.yaml', () => {
  it('turns off every subchart but Alertmanager (Alloy brings kube-state-metrics and node-exporter)', () => {
    for (const sub of ['kube-state-metrics', 'prometheus-node-exporter', 'prometheus-pushgateway']) {
      expect(prometheus[sub], sub).toEqual({ enabled: false });
    }
    expect(prometheus.alertmanager.enabled).toBe(true);
  });
  it('Alertmanager: a small local-path volume for silences, requests and a memory limit, no receiver outside the laptop', () => {
    const am = prometheus.alertmanager;
    expect(am.persistence).toEqual({ enabled: true, storageClass: 'local-path', size: '256Mi' });
    expect(am.resources.requests.cpu).toBeDefined();
    expect(am.resources.limits.memory).toBeDefined();
    expect(am.config.receivers).toEqual([{ name: 'local' }]);
    expect(am.config.route.receiver).toBe('local');
    expect(JSON.stringify(am)).not.toMatch(/https?:\/\//);
  });
  it('disables every default scrape job of the scrapeConfigs map', () => {
    const jobs = Object.entries(prometheus.scrapeConfigs as Record<string, { enabled: boolean }>);
    expect(jobs.length).toBeGreaterThanOrEqual(10);
    expect(jobs.filter(([, j]) => j.enabled !== false).map(([k]) => k)).toEqual([]);
  });
  it('keeps web.enable-lifecycle, adds the remote-write receiver and exemplar storage', () => {
    expect(prometheus.server.extraFlags).toEqual(['web.enable-lifecycle', 'web.enable-remote-write-receiver', 'enable-feature=exemplar-storage']);
  });
  it('stores on local-path and leaves retention and size to the script', () => {
    expect(prometheus.server.persistentVolume).toEqual({ enabled: true, storageClass: 'local-path' });
    expect(prometheus.server.retention).toBeUndefined();
  });
});

describe('loki.yaml', () => {
  it('is one monolithic pod on the filesystem without tenants', () => {
    expect(loki.deploymentMode).toBe('Monolithic');
    expect(loki.singleBinary.replicas).toBe(1);
    expect(loki.loki.auth_enabled).toBe(false);
    expect(loki.loki.storage.type).toBe('filesystem');
  });
  it('uses the tsdb v13 schema on the filesystem', () => {
    expect(loki.loki.schemaConfig.configs).toEqual([
      expect.objectContaining({ store: 'tsdb', schema: 'v13', object_store: 'filesystem' }),
    ]);
  });
  it('retains through the compactor, with a delete-request store', () => {
    expect(loki.loki.compactor).toMatchObject({ retention_enabled: true, delete_request_store: 'filesystem' });
    expect(loki.loki.limits_config.retention_period).toBeUndefined();
    expect(loki.singleBinary.persistence).toEqual({ enabled: true, storageClass: 'local-path' });
  });
  it('runs no gateway, canary, caches, minio or test pod, and no other-mode replicas', () => {
    for (const k of ['gateway', 'lokiCanary', 'test', 'chunksCache', 'resultsCache', 'minio']) expect(loki[k].enabled, k).toBe(false);
    for (const k of ['backend', 'read', 'write', 'ingester', 'querier', 'queryFrontend', 'distributor', 'compactor', 'indexGateway']) {
      expect(loki[k].replicas, k).toBe(0);
    }
  });
});

describe('tempo.yaml', () => {
  it('keeps traces on a local-path volume and leaves retention, size and the remote-write URL to the script', () => {
    expect(tempo.persistence).toEqual({ enabled: true, storageClassName: 'local-path' });
    expect(tempo.tempo.retention).toBeUndefined();
    expect(tempo.tempo.storage.trace.backend).toBe('local');
    expect(tempo.tempo.metricsGenerator.storage).toBeUndefined();
  });
  it('bounds memory: requests, a limit, GOMEMLIMIT below it and no heap ballast', () => {
    const { requests, limits } = tempo.tempo.resources;
    expect(requests.cpu).toBeDefined();
    expect(quantityMiB(requests.memory)).toBeLessThanOrEqual(quantityMiB(limits.memory));
    const goMemLimit = /^(\d+)MiB$/.exec(tempo.tempo.extraEnv.find((e: { name: string }) => e.name === 'GOMEMLIMIT').value);
    expect(Number(goMemLimit?.[1])).toBeLessThan(quantityMiB(limits.memory));
    expect(tempo.tempo.memBallastSizeMbs).toBe(0);
  });
  it('generates service-graph and span metrics, and reports nothing', () => {
    expect(tempo.tempo.metricsGenerator.enabled).toBe(true);
    expect(tempo.tempo.overrides.defaults.metrics_generator.processors).toEqual(['service-graphs', 'span-metrics']);
    expect(tempo.tempo.reportingEnabled).toBe(false);
  });
});

describe('k8s-monitoring.yaml (v4 layout)', () => {
  it('has destinations and collectors as maps and no v3 keys', () => {
    expect(k8s.destinations).toEqual({
      prometheus: { type: 'prometheus' },
      loki: { type: 'loki' },
      tempo: { type: 'otlp', protocol: 'grpc', tls: { insecure: true }, metrics: { enabled: false }, logs: { enabled: false }, traces: { enabled: true } },
    });
    expect(Array.isArray(k8s.collectors)).toBe(false);
    for (const v3 of ['externalServices', 'metrics', 'logs', 'alloy', 'alloy-logs', 'alloy-metrics', 'prometheus-node-exporter', 'kube-state-metrics', 'podLogs']) {
      expect(k8s[v3], v3).toBeUndefined();
    }
  });
  it('assigns every enabled feature to a defined collector', () => {
    const features = ['clusterMetrics', 'hostMetrics', 'annotationAutodiscovery', 'podLogsViaLoki', 'applicationObservability'];
    for (const f of features) {
      expect(k8s[f].enabled, f).toBe(true);
      expect(Object.keys(k8s.collectors), f).toContain(k8s[f].collector);
    }
    expect(Object.keys(k8s.collectors)).toContain(k8s.integrations.collector);
  });
  it("scrapes Alloy's own metrics through the alloy integration", () => {
    expect(k8s.integrations.alloy.instances[0].labelSelectors['app.kubernetes.io/name']).toEqual(Object.keys(k8s.collectors));
  });
  it('discovers with the prometheus.io annotations', () => {
    expect(k8s.annotationAutodiscovery.annotations).toMatchObject({
      scrape: 'prometheus.io/scrape',
      metricsPortNumber: 'prometheus.io/port',
      metricsPath: 'prometheus.io/path',
    });
  });
  it('collects kubelet/cAdvisor (defaults), kube-state-metrics, node-exporter and the control plane', () => {
    for (const c of ['kubeControllerManager', 'kubeScheduler', 'kubeProxy', 'apiServer']) expect(k8s.clusterMetrics[c].enabled, c).toBe(true);
    expect(k8s.clusterMetrics.kubelet?.enabled ?? true).toBe(true);
    expect(k8s.clusterMetrics.cadvisor?.enabled ?? true).toBe(true);
    expect(k8s.hostMetrics.linuxHosts.enabled).toBe(true);
    expect(k8s.telemetryServices['kube-state-metrics'].deploy).toBe(true);
    expect(k8s.telemetryServices['node-exporter'].deploy).toBe(true);
  });
  it('receives OTLP gRPC and HTTP on the ports of lib.ts OTLP_RECEIVER, on the collector its Service is named after', () => {
    const { grpc, http } = k8s.applicationObservability.receivers.otlp;
    expect([grpc.enabled, grpc.port, http.enabled, http.port]).toEqual([true, OTLP_RECEIVER.grpcPort, true, OTLP_RECEIVER.httpPort]);
    // The Alloy Operator names the collector's Service <release>-<collector> (checked on the real charts in observability-render.test.ts).
    expect(`${RELEASES.k8sMonitoring.release}-${k8s.applicationObservability.collector}`).toBe(OTLP_RECEIVER.service);
    expect(k8s.collectors[k8s.applicationObservability.collector].presets).toEqual(['deployment']);
  });
  it('never sends the service-account token to annotated pods (plain HTTP, any pod may be annotated)', () => {
    expect(k8s.annotationAutodiscovery.bearerToken).toEqual({ enabled: false });
  });
  it('reads new log files from the first line, and keeps the read positions on the node', () => {
    expect(k8s.podLogsViaLoki.onlyGatherNewLogLines).toBe(false);
    const logs = k8s.collectors[k8s.podLogsViaLoki.collector];
    const mount = logs.alloy.mounts.extra.find((m: any) => m.mountPath === logs.alloy.storagePath);
    expect(mount, `a volume mounted at alloy.storagePath ${logs.alloy.storagePath}`).toBeDefined();
    const volume = logs.controller.volumes.extra.find((v: any) => v.name === mount.name);
    expect(volume.hostPath).toMatchObject({ path: expect.stringMatching(/^\/var\/lib\//), type: 'DirectoryOrCreate' });
  });
  it('keeps pod a stream label and turns reporting off', () => {
    expect(k8s.podLogsViaLoki.structuredMetadata.pod).toBe('');
    expect(k8s.selfReporting.enabled).toBe(false);
    expect(k8s.collectorCommon.alloy.alloy.enableReporting).toBe(false);
  });
  it('leaves the values fed from alloy/ to the script', () => {
    for (const s of ALLOY_SNIPPETS) {
      const at = s.valuePath.reduce<any>((o, k) => o?.[k], k8s);
      expect(at, s.valuePath.join('.')).toBeUndefined();
    }
  });
});

describe('alloy/*.alloy snippets', () => {
  it.each(ALLOY_SNIPPETS.map((s) => s.file))('%s exists with balanced braces and brackets', (file) => {
    const code = read(file).replace(/\/\/.*$/gm, '').replace(/"(?:[^"\\]|\\.)*"/g, '""');
    for (const [open, close] of [['{', '}'], ['[', ']'], ['(', ')']]) {
      expect(code.split(open).length, `${open} in ${file}`).toBe(code.split(close).length);
    }
  });
  it('add the node label to metrics and logs', () => {
    for (const f of ['alloy/annotation-autodiscovery-rules.alloy', 'alloy/pod-logs-rules.alloy']) {
      expect(read(f)).toMatch(/source_labels\s*=\s*\["__meta_kubernetes_pod_node_name"\]\s*\n\s*target_label\s*=\s*"node"/);
    }
  });
  it('copy pod labels onto metrics', () => {
    expect(read('alloy/annotation-autodiscovery-rules.alloy')).toMatch(/action\s*=\s*"labelmap"\s*\n\s*regex\s*=\s*"__meta_kubernetes_pod_label_\(\.\+\)"/);
  });

  describe('pod labels on metrics: the ones that change on every upgrade or rollout are dropped', () => {
    const m = /action\s*=\s*"labeldrop"\s*\n\s*regex\s*=\s*("(?:[^"\\]|\\.)*")/.exec(read('alloy/annotation-autodiscovery-rules.alloy'));
    // Prometheus relabel regexes are anchored at both ends.
    const dropped = new RegExp(`^(?:${JSON.parse(m?.[1] ?? '"(?!)"')})$`);
    it.each([
      ['helm_sh_chart', 'helm.sh/chart: <chart>-<version>, new on every chart upgrade'],
      ['chart', 'the older Helm convention for the same'],
      ['app_kubernetes_io_version', 'app.kubernetes.io/version, new on every release of the app'],
      ['version', 'a plain version label'],
      ['pod_template_hash', 'Deployment rollouts'],
      ['controller_revision_hash', 'DaemonSet and StatefulSet rollouts'],
      ['pod_template_generation', 'DaemonSet rollouts'],
      ['rollouts_pod_template_hash', 'Argo Rollouts'],
      ['controller_uid', 'one per Job run'],
      ['batch_kubernetes_io_controller_uid', 'one per Job run'],
      ['statefulset_kubernetes_io_pod_name', 'repeats the pod label'],
      ['apps_kubernetes_io_pod_index', 'repeats the pod label'],
    ])('drops %s (%s)', (label) => {
      expect(label).toMatch(dropped);
    });

    // Every label a dashboard uses (dashboards/metrics-catalogue.yaml), and the pod labels users group by, stay.
    const catalogue = YAML.parse(read('dashboards/metrics-catalogue.yaml'));
    const used = [catalogue.sampleApp, ...Object.values(catalogue.sources)].flatMap((source: any) => source.labels as string[]);
    const kept = [...new Set([...used, ...catalogue.loki.streamLabels, 'app_kubernetes_io_name', 'app_kubernetes_io_instance', 'app_kubernetes_io_component', 'app_kubernetes_io_part_of', 'app', 'k8s_app', 'component', 'tier', 'team'])];
    it.each(kept)('keeps %s', (label) => {
      expect(label).not.toMatch(dropped);
    });
  });
  it('send etcd metrics to the remote_write component of a prometheus destination', () => {
    const m = /forward_to\s*=\s*\[prometheus\.remote_write\.([a-z_]+)\.receiver\]/.exec(read('alloy/talos-etcd.alloy'));
    expect(m).not.toBeNull();
    expect(k8s.destinations[m![1]].type).toBe('prometheus');
    expect(read('alloy/talos-etcd.alloy')).toContain('"$1:2381"');
  });
});

describe('grafana.yaml', () => {
  it('allows anonymous viewers only and reports nothing', () => {
    expect(grafana['grafana.ini']['auth.anonymous']).toEqual({ enabled: true, org_role: 'Viewer' });
    expect(grafana['grafana.ini'].analytics).toMatchObject({ reporting_enabled: false, check_for_updates: false });
  });
  it('takes the admin login from the grafana-admin Secret', () => {
    expect(grafana.admin).toEqual({ existingSecret: 'grafana-admin', userKey: 'admin-user', passwordKey: 'admin-password' });
    expect(grafana.adminPassword).toBeUndefined();
  });
  it('provisions Prometheus (default), Loki, Tempo and Alertmanager with fixed uids, URLs left to the script', () => {
    const ds = grafana.datasources['datasources.yaml'].datasources as Record<string, unknown>[];
    expect(ds.map((d) => [d.name, d.type, d.uid, d.isDefault])).toEqual([
      ['Prometheus', 'prometheus', 'prometheus', true],
      ['Loki', 'loki', 'loki', false],
      ['Tempo', 'tempo', TEMPO.datasourceUid, false],
      ['Alertmanager', 'alertmanager', 'alertmanager', false],
    ]);
    expect(ds[3].jsonData).toMatchObject({ implementation: 'prometheus' });
    expect(ds.every((d) => d.url === undefined)).toBe(true);
  });
  it('provisions the dashboards ConfigMap into the Platform folder', () => {
    expect(grafana.dashboardsConfigMaps).toEqual({ platform: DASHBOARDS_CONFIGMAP });
    const [provider] = grafana.dashboardProviders['dashboardproviders.yaml'].providers;
    expect(provider).toMatchObject({ name: 'platform', folder: 'Platform', type: 'file' });
    // The chart mounts dashboardsConfigMaps.<name> at /var/lib/grafana/dashboards/<name>.
    expect(provider.options.path).toBe('/var/lib/grafana/dashboards/platform');
  });
  it('asks Prometheus for exemplars on the Workload RED latency panel, and links them to Tempo', () => {
    const red = JSON.parse(read('dashboards/workload-red.json'));
    const latency = red.panels.find((p: { title: string }) => p.title === 'Latency percentiles');
    const withExemplars = latency.targets.filter((t: { exemplar?: boolean }) => t.exemplar === true);
    expect(withExemplars.map((t: { expr: string }) => t.expr)).toEqual([expect.stringMatching(/^histogram_quantile\(0\.99, .*http_request_duration_seconds_bucket/)]);
    const prom = grafana.datasources['datasources.yaml'].datasources.find((d: { uid: string }) => d.uid === 'prometheus');
    expect(prom.jsonData.exemplarTraceIdDestinations).toEqual([
      { name: 'trace_id', datasourceUid: TEMPO.datasourceUid },
      { name: 'traceID', datasourceUid: TEMPO.datasourceUid },
    ]);
  });
});
