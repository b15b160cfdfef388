// The app dashboard generator (scripts/app.ts appDashboard) and `validate --app`'s checks against a
// REAL Prometheus 3 scraping the REAL example apps: the sample app process (sample-app/src/server.ts
// with its traffic generator) and the Go example (examples/go-app, its binary: the app on one port, metrics on another), each as the pod of the
// manifests `task app` renders for it, relabelled as the platform's Alloy relabels pods (tests/fixtures/apps/scrape.ts: the
// chart's pod rules and alloy/annotation-autodiscovery-rules.alloy). After a little traffic, every
// metric panel of each app's generated dashboard returns data over the last 30 seconds, every query
// parses (lezer PromQL, and promtool), and the logs panel parses (lezer LogQL) and selects only
// stream labels Loki has (dashboards/metrics-catalogue.yaml). cAdvisor and kube-state-metrics are
// stand-ins serving the pod series those exporters have.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parser as logqlParser } from '@grafana/lezer-logql';
import { parser as promqlParser } from '@prometheus-io/lezer-promql';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import YAML from 'yaml';
import { appDashboard, appManifests, parseAppArgs } from '../scripts/app.ts';
import { SAMPLE_APP_EXTRAS, SAMPLE_APP_SPEC } from '../scripts/sample-app.ts';
import { type AppPods, checkAppLogs, checkAppTargets, promQuery, substituteVariables, type Target } from '../scripts/validate.ts';
import { PROJECT_DIR } from './helpers.ts';
import { alloyRules, CHART_POD_RULES, CLUSTER_NAME, clusterExporter, type PodSpec, podFromManifests, prometheusConfig, startGoApp } from './fixtures/apps/scrape.ts';
import {
  type FakeGrafana,
  freePort,
  lokiFromLogs,
  type Proc,
  sleep,
  startFakeGrafana,
  startPrometheus,
  startSampleApp,
  startTrafficGenerator,
  waitFor,
} from './fixtures/validate/servers.ts';

vi.setConfig({ testTimeout: 45000 });

interface App {
  name: string;
  namespace: string;
  pod: PodSpec;
}

let sampleApp: Awaited<ReturnType<typeof startSampleApp>>;
let goApp: Awaited<ReturnType<typeof startGoApp>>;
let traffic: Proc;
let goTraffic: NodeJS.Timeout;
let exporter: Awaited<ReturnType<typeof clusterExporter>>;
let prom: Awaited<ReturnType<typeof startPrometheus>>;
let promTarget: Target;
const grafanas: FakeGrafana[] = [];
let apps: App[];

beforeAll(async () => {
  const [samplePort, goPort, goMetricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
  [sampleApp, goApp] = await Promise.all([startSampleApp(samplePort), startGoApp(goPort, goMetricsPort)]);
  // The pods of the manifests `task app` applies for each (the sample app keeps its namespace and
  // its extras); only the ports are the test's free ones.
  const goSpec = parseAppArgs(['examples/go-app', '--port', String(goPort), '--metrics-port', String(goMetricsPort)]);
  if (!('deploy' in goSpec)) throw new Error('parseAppArgs: expected a deploy');
  const specs = [
    { spec: { ...SAMPLE_APP_SPEC, port: samplePort, metricsPort: samplePort }, extras: SAMPLE_APP_EXTRAS, pod: { name: 'sample-app-6d4b75cb6d-x7k2p', templateHash: '6d4b75cb6d', node: 'talos-local-worker-1' } },
    { spec: goSpec.deploy, extras: {}, pod: { name: 'go-app-5c9d7b8f6-abcde', templateHash: '5c9d7b8f6', node: 'talos-local-worker-2' } },
  ];
  apps = specs.map(({ spec, extras, pod }) => ({
    name: spec.name,
    namespace: spec.namespace,
    pod: podFromManifests(appManifests(spec, `localhost:5001/${spec.name}:0f1e2d3c4b5a`, 'localhost', {}, extras).app, pod),
  }));
  exporter = await clusterExporter(apps.map((a) => a.pod));
  prom = await startPrometheus(prometheusConfig(apps.map((a) => a.pod), exporter.address));
  promTarget = { url: prom.url };
  traffic = startTrafficGenerator(`http://127.0.0.1:${samplePort}`);
  let n = 0;
  goTraffic = setInterval(() => {
    const p = ['/', '/api/items', '/api/items', '/no-such-page'][n++ % 4];
    fetch(`http://127.0.0.1:${goPort}${p}`).catch(() => undefined);
  }, 50);
  // Both apps' request series in Prometheus, and enough samples for rate() over them.
  for (const a of apps) {
    await waitFor(async () => ((await promQuery(promTarget, `sum(http_requests_total{namespace="${a.namespace}"})`))[0]?.value ?? 0) > 0 || undefined, 20000, `${a.name}'s requests in Prometheus`);
  }
  await sleep(5000);
}, 90000);

afterAll(async () => {
  clearInterval(goTraffic);
  await Promise.all([traffic?.stop(), prom?.stop(), sampleApp?.stop(), goApp?.stop(), exporter?.close(), ...grafanas.map((g) => g.close())]);
});

/** The metric names Prometheus has for the app (what `task app` detects to pick the panels). */
async function metricNames(a: App): Promise<string[]> {
  const res = await fetch(`${prom.url}/api/v1/label/__name__/values?${new URLSearchParams({ 'match[]': `{namespace="${a.namespace}",job="${a.name}"}` })}`);
  return ((await res.json()) as { data: string[] }).data;
}

interface Query {
  panel: string;
  datasource: string;
  expr: string;
}
const queriesOf = (d: Record<string, unknown>): Query[] =>
  (d.panels as { title: string; targets?: { expr: string; datasource: { uid: string } }[] }[]).flatMap((p) =>
    (p.targets ?? []).map((t) => ({ panel: p.title, datasource: t.datasource.uid, expr: t.expr })),
  );
const PROM_UID = '${datasource}';
const LOKI_UID = '${loki_datasource}';
const parses = (parser: typeof promqlParser, text: string) => {
  let ok = true;
  parser.parse(text).iterate({ enter: (n) => { if (n.type.isError) ok = false; } });
  return ok;
};

/** A range query over the last 30s as a panel runs it; the series with at least one number. */
async function rangeQuery(expr: string): Promise<{ error?: string; series: { metric: Record<string, string>; values: [number, string][] }[] }> {
  const end = Date.now() / 1000;
  const q = new URLSearchParams({ query: expr, start: String(end - 30), end: String(end), step: '2' });
  const body = (await (await fetch(`${prom.url}/api/v1/query_range?${q}`)).json()) as any;
  if (body.status !== 'success') return { error: `${body.errorType}: ${body.error}`, series: [] };
  return { series: body.data.result.filter((s: any) => s.values.some(([, v]: [number, string]) => Number.isFinite(Number(v)))) };
}

/** Why a query has no data: for each metric it reads, the label sets Prometheus has of it. */
async function whyEmpty(expr: string): Promise<string> {
  const names = new Set<string>();
  promqlParser.parse(expr).iterate({
    enter: (n) => {
      if (n.type.name === 'Identifier' && n.node.parent?.type.name === 'VectorSelector') names.add(expr.slice(n.from, n.to));
    },
  });
  const found: string[] = [];
  for (const name of names) {
    const got = await promQuery(promTarget, `count by (namespace, job, pod, container) (${name})`);
    found.push(`${name}: ${got.length ? got.map((s) => JSON.stringify(s.metric)).join(' ') : 'no series at all'}`);
  }
  return found.join('; ');
}

describe('the scrape harness relabels as the platform does', () => {
  it("every app series carries the labels Alloy attaches (namespace, pod, container, node, job, cluster), the pod's own label, and not the dropped ones", async () => {
    for (const a of apps) {
      const up = await promQuery(promTarget, `up{namespace="${a.namespace}"}`);
      expect(up, a.name).toHaveLength(1);
      expect(up[0].value).toBe(1);
      expect(up[0].metric).toMatchObject({
        namespace: a.namespace, pod: a.pod.pod, container: 'app', node: a.pod.node, job: a.name, cluster: CLUSTER_NAME,
        app_kubernetes_io_name: a.name, app_kubernetes_io_component: 'app', instance: `127.0.0.1:${a.pod.annotations['prometheus.io/port']}`,
      });
      expect(up[0].metric.pod_template_hash).toBeUndefined();
    }
  });

  it('alloyRules reads every rule of the repository\'s .alloy rule files, and refuses what it cannot translate', () => {
    const rules = alloyRules(fs.readFileSync(path.join(PROJECT_DIR, 'alloy', 'annotation-autodiscovery-rules.alloy'), 'utf8'));
    expect(rules).toEqual([
      { source_labels: ['__meta_kubernetes_pod_node_name'], target_label: 'node' },
      { action: 'labelmap', regex: '__meta_kubernetes_pod_label_(.+)' },
      expect.objectContaining({ action: 'labeldrop', regex: expect.stringContaining('pod_template_hash') }),
    ]);
    expect(alloyRules(fs.readFileSync(path.join(PROJECT_DIR, 'alloy', 'pod-logs-rules.alloy'), 'utf8'))).toEqual([rules[0]]);
    expect(() => alloyRules('rule {\n  source_labels = ["a"]\n  honor = true\n}')).toThrow('alloyRules: cannot read "honor = true"');
    expect(() => alloyRules('rule { unknown = "x" }')).toThrow('alloyRules: unknown rule attribute unknown');
    expect(CHART_POD_RULES.at(-1)).toMatchObject({ target_label: '__address__', replacement: '$2:$1' });
  });
});

describe.each(['sample-app', 'go-app'])("appDashboard for %s: every panel's query returns data from the real Prometheus", (name) => {
  const app = () => apps.find((a) => a.name === name)!;
  let names: string[];
  let dashboard: Record<string, unknown>;
  beforeAll(async () => {
    names = await metricNames(app());
    dashboard = appDashboard({ name: app().name, namespace: app().namespace, metricNames: names });
  });

  it('the metric names found pick RED and process panels', () => {
    expect(names).toContain('http_requests_total');
    expect(names).toContain('http_request_duration_seconds_bucket');
    const titles = queriesOf(dashboard).map((q) => q.panel);
    for (const t of ['Requests/s', 'Error ratio (5xx)', 'Duration p50 / p95 / p99', 'Process CPU (cores)', 'Process resident memory', 'Pod CPU (cores)', 'Pod memory (working set)', 'Container restarts']) {
      expect(titles, t).toContain(t);
    }
    if (name === 'go-app') expect(titles).toContain('Goroutines');
  });

  it('every PromQL query returns data (a number in the last 30s); an empty one names what Prometheus has of its metrics', async () => {
    const queries = queriesOf(dashboard).filter((q) => q.datasource === PROM_UID);
    expect(queries.length).toBeGreaterThanOrEqual(8);
    const empty: string[] = [];
    for (const q of queries) {
      const expr = substituteVariables(q.expr, {});
      const r = await rangeQuery(expr);
      if (r.error || r.series.length === 0) empty.push(`"${q.panel}": ${expr} → ${r.error ?? `no data; ${await whyEmpty(expr)}`}`);
    }
    expect(empty, empty.join('\n')).toEqual([]);
  });

  it('every PromQL query parses: lezer PromQL and the real Prometheus parser (promtool check rules)', () => {
    const exprs = queriesOf(dashboard).filter((q) => q.datasource === PROM_UID).map((q) => substituteVariables(q.expr, {}));
    for (const e of exprs) expect(parses(promqlParser, e), e).toBe(true);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'app-prom-'));
    const file = path.join(dir, 'rules.yaml');
    fs.writeFileSync(file, YAML.stringify({ groups: [{ name: 'app', rules: exprs.map((expr, i) => ({ record: `app:q_${i}`, expr })) }] }));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(`${r.stdout}${r.stderr}${r.error ?? ''}`).toContain(`SUCCESS: ${exprs.length} rules found`);
  });

  it("the logs panel's LogQL parses (lezer LogQL) and selects the app's namespace with stream labels Loki has", () => {
    const logs = queriesOf(dashboard).filter((q) => q.datasource === LOKI_UID);
    expect(logs).toHaveLength(1);
    expect(parses(logqlParser, logs[0].expr), logs[0].expr).toBe(true);
    const catalogue = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'dashboards', 'metrics-catalogue.yaml'), 'utf8'));
    const matchers = [...logs[0].expr.matchAll(/(\w+)\s*(?:=~|!=|!~|=)\s*"/g)].map((m) => m[1]);
    expect(matchers).toContain('namespace');
    for (const l of matchers) expect(catalogue.loki.streamLabels, l).toContain(l);
    expect(logs[0].expr).toContain(`namespace="${app().namespace}"`);
  });
});

describe("validate --app's checks against the real Prometheus and the Go app's real log lines", () => {
  const goPods = (): AppPods => ({ deployment: 'Deployment go-app/go-app', readyReplicas: 1, pods: ['go-app-5c9d7b8f6-abcde'], container: 'app' });
  const goLabels = { namespace: 'go-app', pod: 'go-app-5c9d7b8f6-abcde', container: 'app', node: 'talos-local-worker-2', job: 'go-app' };
  async function grafanaWithGoLogs(logLines: () => any[]): Promise<Target> {
    const g = await startFakeGrafana({ password: 'pw', datasources: { loki: { ok: true } }, loki: lokiFromLogs([{ logLines, labels: goLabels }]) });
    grafanas.push(g);
    return { url: g.url, auth: { user: 'admin', password: 'pw' } };
  }

  it('checkAppTargets passes with the freshness of the newest sample', async () => {
    await expect(checkAppTargets(promTarget, goPods(), 'namespace="go-app"')).resolves.toMatch(
      /^1 of 1 ready replicas scraped \(pods go-app-5c9d7b8f6-abcde\); freshness: newest sample of every pod at most [0-2]s old$/,
    );
  });

  it('checkAppTargets fails when the newest sample is older than allowed (the age is real: time() - timestamp(up))', async () => {
    await expect(checkAppTargets(promTarget, goPods(), 'namespace="go-app"', 0)).rejects.toThrow(/^newest sample older than 0s: pod go-app-5c9d7b8f6-abcde [0-9]s \(Alloy stopped scraping it/);
  });

  it("checkAppLogs passes on the Go app's real request lines, with the newest line's age", async () => {
    const g = await grafanaWithGoLogs(goApp.logLines);
    await expect(checkAppLogs(g, goPods(), 'namespace="go-app"')).resolves.toMatch(
      /^lines of container app from every Ready pod in the last 5 minutes: go-app-5c9d7b8f6-abcde \d+; freshness: newest line \d+\.\ds old$/,
    );
    expect(goApp.logLines().filter((l) => l.msg === 'request' && l.route === '/api/items' && l.status === 200).length).toBeGreaterThan(0);
  });

  it('checkAppLogs fails when none of its lines reach Loki', async () => {
    const g = await grafanaWithGoLogs(() => []);
    await expect(checkAppLogs(g, goPods(), 'namespace="go-app"')).rejects.toThrow(
      'no log lines of {namespace="go-app",container="app"} from pod go-app-5c9d7b8f6-abcde in Loki in the last 5 minutes',
    );
  });

  it('the Go app stops: its target goes down and checkAppTargets says so', async () => {
    clearInterval(goTraffic);
    await goApp.stop();
    const err = await waitFor(
      () => checkAppTargets(promTarget, goPods(), 'namespace="go-app"').then(() => undefined, (e: Error) => e),
      15000,
      'the stopped Go app to be reported down',
    );
    expect(err.message).toMatch(/^target down \(up=0\): \{.*namespace="go-app".*pod="go-app-5c9d7b8f6-abcde".*\}$/);
  });
});
