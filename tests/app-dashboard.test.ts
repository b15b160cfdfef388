// The app dashboard generator (scripts/app.ts appDashboard): which panels a set of metric names
// gives (table over the HTTP conventions and the process metrics), that every query parses (lezer
// PromQL and LogQL, and the real Prometheus parser through promtool), and the dashboard's shape
// (uid, tags, unique ids, panels inside the 24-column grid without overlaps).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { parser as promqlParser } from '@prometheus-io/lezer-promql';
import { parser as logqlParser } from '@grafana/lezer-logql';
import { seriesNames } from '../sample-app/src/metric-names.ts';
import { HTTP_CONVENTIONS, appDashboard, httpConvention } from '../scripts/app.ts';

interface Panel { id: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; targets?: { expr: string; datasource: { uid: string } }[] }
const panelsOf = (d: Record<string, unknown>) => d.panels as Panel[];
const titles = (d: Record<string, unknown>) => panelsOf(d).filter((p) => p.type !== 'row').map((p) => p.title);
const exprs = (d: Record<string, unknown>, uid: string) => panelsOf(d).flatMap((p) => p.targets ?? []).filter((t) => t.datasource.uid === uid).map((t) => t.expr);
const parses = (parser: typeof promqlParser, text: string) => {
  let ok = true;
  parser.parse(text).iterate({ enter: (n) => { if (n.type.isError) ok = false; } });
  return ok;
};

const sampleApp = seriesNames();
const go = ['http_requests_total', 'http_request_duration_seconds_bucket', 'http_request_duration_seconds_sum', 'http_request_duration_seconds_count', 'go_goroutines', 'process_cpu_seconds_total', 'promhttp_metric_handler_requests_total'];
const springNoBuckets = ['http_server_requests_seconds_count', 'http_server_requests_seconds_sum', 'http_server_requests_seconds_max', 'jvm_memory_used_bytes', 'process_cpu_usage'];
const flask = ['flask_http_request_total', 'flask_http_request_duration_seconds_bucket', 'flask_http_request_duration_seconds_count', 'flask_http_request_duration_seconds_sum', 'process_resident_memory_bytes'];
const onlyScrapes = ['promhttp_metric_handler_requests_total', 'go_goroutines', 'process_cpu_seconds_total'];

describe('which panels a set of metric names gives', () => {
  it.each<[string, string[], string | undefined, string[], string[]]>([
    ['the sample app (prom-client)', sampleApp, 'http_requests_total', ['Requests/s', 'Error ratio (5xx)', 'Duration p50 / p95 / p99', 'Process CPU (cores)', 'Process resident memory', 'Event loop lag p99'], []],
    ['Go with promhttp.InstrumentHandler*', go, 'http_requests_total', ['Requests/s', 'Duration p50 / p95 / p99', 'Goroutines'], ['Mean duration']],
    ['Spring Boot (Micrometer) without histogram buckets', springNoBuckets, 'http_server_requests_seconds_count', ['Requests/s', 'Mean duration', 'JVM memory used'], ['Duration p50 / p95 / p99']],
    ['Flask (prometheus_flask_exporter)', flask, 'flask_http_request_total', ['Requests/s', 'Duration p50 / p95 / p99', 'Process resident memory'], []],
    ['Go counting only its scrapes: process metrics, no RED', onlyScrapes, undefined, ['Process CPU (cores)', 'Goroutines'], ['Requests/s', 'Error ratio (5xx)']],
    ['nothing scraped (no metrics port, or not yet): pods and logs', [], undefined, ['Pod CPU (cores)', 'Pod memory (working set)', 'Container restarts', 'Logs of namespace shop'], ['Requests/s', 'Process CPU (cores)']],
  ])('%s', (_case, metricNames, requests, present, absent) => {
    expect(httpConvention(metricNames)?.requests).toBe(requests);
    const d = appDashboard({ name: 'shop', namespace: 'shop', metricNames });
    for (const t of [...present, 'Pod CPU (cores)', 'Container restarts', 'Logs of namespace shop']) expect(titles(d)).toContain(t);
    for (const t of absent) expect(titles(d)).not.toContain(t);
  });

  it('the error ratio looks at every status label of the convention and is 0, not empty, without 5xx', () => {
    const d = appDashboard({ name: 'shop', namespace: 'shop', metricNames: go });
    const ratio = panelsOf(d).find((p) => p.title === 'Error ratio (5xx)')!.targets![0].expr;
    for (const l of HTTP_CONVENTIONS[0].statusLabels) expect(ratio).toContain(`${l}=~"5.."`);
    expect(ratio).toMatch(/or vector\(0\)\) \/ sum\(rate\(http_requests_total/);
  });
});

describe('the dashboard', () => {
  const cases = [sampleApp, go, springNoBuckets, flask, onlyScrapes, []].map((metricNames) => appDashboard({ name: 'sample-app', namespace: 'sample-app', metricNames }));

  it('uid app-<name>, tags app and <name>, datasource variables only', () => {
    const d = cases[0];
    expect(d.uid).toBe('app-sample-app');
    expect(d.tags).toEqual(['app', 'sample-app']);
    const uids = new Set(panelsOf(d).flatMap((p) => (p.targets ?? []).map((t) => t.datasource.uid)));
    expect([...uids].sort()).toEqual(['${datasource}', '${loki_datasource}']);
  });

  it('every metric query selects the app by namespace and job; logs by namespace', () => {
    for (const d of cases) {
      for (const e of exprs(d, '${datasource}')) expect(e).toMatch(/namespace="sample-app"/);
      const appSeries = exprs(d, '${datasource}').filter((e) => !/container_|kube_pod_/.test(e));
      for (const e of appSeries) expect(e).toContain('job="sample-app"');
      expect(exprs(d, '${loki_datasource}')).toEqual(['{namespace="sample-app"}']);
    }
  });

  it('every query parses (lezer PromQL / LogQL)', () => {
    for (const d of cases) {
      for (const e of exprs(d, '${datasource}')) expect(parses(promqlParser, e.replaceAll('$__rate_interval', '5m')), e).toBe(true);
      for (const e of exprs(d, '${loki_datasource}')) expect(parses(logqlParser, e), e).toBe(true);
    }
    expect(parses(promqlParser, 'sum(rate(x[5m])')).toBe(false);
  });

  it('every PromQL query parses in the real Prometheus (promtool check rules)', () => {
    const all = [...new Set(cases.flatMap((d) => exprs(d, '${datasource}')))].map((e) => e.replaceAll('$__rate_interval', '5m'));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'app-dashboard-'));
    const file = path.join(dir, 'rules.yaml');
    fs.writeFileSync(file, YAML.stringify({ groups: [{ name: 'app', rules: all.map((expr, i) => ({ record: `app:q_${i}`, expr })) }] }));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(`${r.stdout}${r.stderr}${r.error ?? ''}`).toContain(`SUCCESS: ${all.length} rules found`);
  });

  it('unique panel ids; every panel inside the grid, none overlapping', () => {
    for (const d of cases) {
      const ps = panelsOf(d);
      expect(new Set(ps.map((p) => p.id)).size).toBe(ps.length);
      for (const p of ps) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
      for (const [i, a] of ps.entries()) {
        for (const b of ps.slice(i + 1)) {
          const apart = a.gridPos.x + a.gridPos.w <= b.gridPos.x || b.gridPos.x + b.gridPos.w <= a.gridPos.x || a.gridPos.y + a.gridPos.h <= b.gridPos.y || b.gridPos.y + b.gridPos.h <= a.gridPos.y;
          expect(apart, `${a.title} / ${b.title}`).toBe(true);
        }
      }
    }
  });
});
