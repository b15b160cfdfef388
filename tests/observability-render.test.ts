// Renders the four observability releases with the REAL helm and the REAL upstream charts, using the
// exact values scripts/observability.ts would deploy (values file + .env overrides), and checks what
// the rendered objects say. The charts are not in this repository (and CI has no internet), so this
// test is skipped unless OBS_CHARTS_DIR points at unpacked charts at the pinned versions:
//   $OBS_CHARTS_DIR/prometheus       prometheus-community/prometheus 29.27.0 (+ charts/ with its 4 subcharts)
//   $OBS_CHARTS_DIR/loki             grafana-community/loki 18.11.0 (+ charts/minio, charts/rollout-operator)
//   $OBS_CHARTS_DIR/grafana          grafana-community/grafana 12.11.1
//   $OBS_CHARTS_DIR/k8s-monitoring   grafana/k8s-monitoring 4.4.0 (its charts/ as in the repository)
// and HELM names a helm binary (e.g. HELM=$(bash ../shared/tools/helm.sh)).
// `helm template` validates the values against each chart's values.schema.json (grafana has none).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { PINNED, mergeValues, parseConfig } from '../scripts/lib.ts';
import { LOKI_PUSH_URL, PROMETHEUS_REMOTE_WRITE_URL, RELEASES, type ReleaseKey, SERVICE_URLS, releaseSpec } from '../scripts/observability.ts';

const chartsDir = process.env.OBS_CHARTS_DIR ?? '';
const helmBin = process.env.HELM ?? 'helm';
const available = chartsDir !== '' && fs.existsSync(chartsDir);

const chartDir: Record<ReleaseKey, string> = {
  prometheus: 'prometheus',
  loki: 'loki',
  grafana: 'grafana',
  k8sMonitoring: 'k8s-monitoring',
};

// Knobs away from their defaults, so every fact below proves the knob reached the chart.
const cfg = parseConfig({
  STATE_DIR: '/tmp/st',
  HTTP_PORT: '18080',
  HTTPS_PORT: '18443',
  REGISTRY_PORT: '15001',
  PROMETHEUS_RETENTION: '21d',
  PROMETHEUS_STORAGE: '12Gi',
  LOKI_RETENTION: '72h',
  LOKI_STORAGE: '3Gi',
  DOMAIN: 'example.test',
  CLUSTER_NAME: 'render-check',
});

interface K8sObject {
  kind: string;
  metadata: { name: string };
  [k: string]: any;
}

function render(key: ReleaseKey, extraValues?: Record<string, unknown>): K8sObject[] {
  const spec = releaseSpec(cfg, key);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'render-'));
  const file = path.join(dir, 'values.yaml');
  fs.writeFileSync(file, YAML.stringify(mergeValues(...spec.values, extraValues ?? {})));
  const chart = path.join(chartsDir, chartDir[key]);
  const version = YAML.parse(fs.readFileSync(path.join(chart, 'Chart.yaml'), 'utf8')).version;
  expect(version, `${chart} is not the pinned version`).toBe(spec.chart.version);
  const out = execFileSync(helmBin, ['template', spec.release, chart, '--namespace', spec.namespace, '--values', file], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return YAML.parseAllDocuments(out).map((d) => d.toJSON()).filter(Boolean);
}

const find = (objs: K8sObject[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  expect(o, `${kind}/${name}`).toBeDefined();
  return o!;
};

describe.skipIf(!available)('real charts at the pinned versions (OBS_CHARTS_DIR)', { timeout: 60_000 }, () => {
  it('prometheus: retention, volume, remote-write receiver, no scrape jobs, server only', () => {
    const objs = render('prometheus');
    const server = find(objs, 'Deployment', 'prometheus-server').spec.template.spec.containers.find((c: any) => c.name === 'prometheus-server');
    expect(server.args).toEqual(
      expect.arrayContaining([
        '--storage.tsdb.retention.time=21d',
        '--web.enable-remote-write-receiver',
        '--web.enable-lifecycle',
        '--web.external-url=https://prometheus.example.test:18443',
      ]),
    );
    const pvc = find(objs, 'PersistentVolumeClaim', 'prometheus-server');
    expect(pvc.spec.resources.requests.storage).toBe('12Gi');
    expect(pvc.spec.storageClassName).toBe('local-path');
    const promConfig = YAML.parse(find(objs, 'ConfigMap', 'prometheus-server').data['prometheus.yml']);
    expect(promConfig.scrape_configs ?? []).toEqual([]);
    expect(find(objs, 'Service', 'prometheus-server').spec.ports[0].port).toBe(80);
    const workloads = objs.filter((o) => ['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind)).map((o) => o.metadata.name);
    expect(workloads).toEqual(['prometheus-server']);
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
    expect(metrics).toContain('"cluster" = "render-check"');
    expect(logs).toContain(`url = "${LOKI_PUSH_URL}"`);
    // pod stays a stream label: not moved into structured metadata.
    expect(logs).not.toMatch(/"pod" = "pod"/);
    expect(metrics + logs).not.toMatch(/self_report/i);
    const alloys = objs.filter((o) => o.kind === 'Alloy');
    expect(alloys.map((a) => a.metadata.name).sort()).toEqual(['k8s-monitoring-alloy-logs', 'k8s-monitoring-alloy-metrics']);
    for (const a of alloys) expect(a.spec.alloy.enableReporting, a.metadata.name).toBe(false);
    expect(find(objs, 'Alloy', 'k8s-monitoring-alloy-metrics').spec.controller.type).toBe('statefulset');
    expect(find(objs, 'Alloy', 'k8s-monitoring-alloy-logs').spec.controller.type).toBe('daemonset');
    find(objs, 'Deployment', 'k8s-monitoring-kube-state-metrics');
    find(objs, 'DaemonSet', 'k8s-monitoring-node-exporter');
  });

  it('grafana: datasources, anonymous Viewer, no reporting, admin Secret, dashboards folder', () => {
    const objs = render('grafana');
    const cm = find(objs, 'ConfigMap', 'grafana');
    const ds = YAML.parse(cm.data['datasources.yaml']).datasources;
    expect(ds.map((d: any) => [d.name, d.type, d.uid, d.url, Boolean(d.isDefault)])).toEqual([
      ['Prometheus', 'prometheus', 'prometheus', SERVICE_URLS.prometheus, true],
      ['Loki', 'loki', 'loki', SERVICE_URLS.loki, false],
    ]);
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
      PINNED.charts.k8sMonitoring,
      PINNED.charts.grafana,
    ]);
  });
});
