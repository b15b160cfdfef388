// The sample app's traces, against real parts: the app process (sample-app/src/server.ts) and its
// traffic generator, configured with the env of the Deployment `task sample-app` renders
// (manifests/app/app.yaml.tmpl, resolved as the kubelet would: downward API, $(VAR)), send their
// spans over OTLP/HTTP to a REAL OTLP receiver: the OpenTelemetry Collector's otlpreceiver
// (tests/tools/otlp-sink, writing each batch it accepted as OTLP JSON). A REAL Prometheus 3 with
// exemplar storage scrapes the app, and its exemplars must name spans the receiver got. Also: the
// trace id of a request's log line, the W3C traceparent continuation validate relies on, and
// /metrics' content negotiation (OpenMetrics with exemplars for Prometheus, plain text otherwise).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { prefersOpenMetrics } from '../sample-app/src/app.ts';
import { REQUEST_METRICS, ROUTES } from '../sample-app/src/metric-names.ts';
import { appManifests, parseAppArgs } from '../scripts/app.ts';
import { otlpEndpoint } from '../scripts/lib.ts';
import { SAMPLE_APP_EXTRAS, SAMPLE_APP_SPEC, trafficManifest } from '../scripts/sample-app.ts';
import { PROJECT_DIR } from './helpers.ts';
import { freePort, type Proc, SAMPLE_APP_SERVER, sleep, startProcess, waitFor } from './fixtures/validate/servers.ts';

const TRAFFIC = path.join(PROJECT_DIR, 'sample-app', 'src', 'traffic.ts');
/** OTLP's enums as the JSON encoding writes them. */
const KIND = { internal: 1, server: 2, client: 3 } as const;
const STATUS_ERROR = 2;
const POD = { name: 'sample-app-6d4b75cb6d-x7k2p', namespace: 'sample-app' };

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

/** A container's env as the kubelet makes it: fieldRefs of the pod's name and namespace, $(VAR) of earlier variables. */
function resolveEnv(env: EnvVar[], pod: { name: string; namespace: string }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env) {
    const field = e.valueFrom?.fieldRef?.fieldPath;
    if (field !== undefined) {
      const fields: Record<string, string> = { 'metadata.name': pod.name, 'metadata.namespace': pod.namespace };
      if (!(field in fields)) throw new Error(`${e.name}: fieldRef ${field} not known to this test`);
      out[e.name] = fields[field];
    } else {
      out[e.name] = (e.value ?? '').replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref, name: string) => out[name] ?? ref);
    }
  }
  return out;
}

const containerEnv = (manifests: string, kind = 'Deployment'): EnvVar[] => {
  const doc = YAML.parseAllDocuments(manifests).map((d) => d.toJSON()).find((d) => d?.kind === kind);
  return doc.spec.template.spec.containers[0].env;
};

/** The sample app's pod env, from the Deployment `task sample-app` applies. */
const sampleAppEnv = () => resolveEnv(containerEnv(appManifests(SAMPLE_APP_SPEC, 'registry/sample-app:tag', 'localhost', {}, SAMPLE_APP_EXTRAS).app), POD);

interface ReceivedSpan {
  resource: Record<string, unknown>;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status: { code?: number; message?: string };
  events: { name: string }[];
}

type OtlpAttribute = { key: string; value: { stringValue?: string; intValue?: string; boolValue?: boolean; doubleValue?: number } };
const attributes = (list: OtlpAttribute[] = []) =>
  Object.fromEntries(list.map(({ key, value }) => [key, value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : (value.boolValue ?? value.doubleValue))]));

/** The real OTLP receiver; spans() reads every span it has written so far. */
async function startSink(): Promise<Proc & { endpoint: string; spans: () => ReceivedSpan[] }> {
  const port = await freePort();
  const p = startProcess('otlp-sink', ['--http', `127.0.0.1:${port}`]);
  await waitFor(() => (p.child.exitCode !== null ? Promise.reject(new Error(p.output())) : p.output().includes('"listening"') || undefined), 15000, 'otlp-sink to listen');
  const spans = () =>
    p
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{"resourceSpans"'))
      .flatMap((l) =>
        JSON.parse(l).resourceSpans.flatMap((rs: any) =>
          rs.scopeSpans.flatMap((ss: any) =>
            ss.spans.map((s: any) => ({
              resource: attributes(rs.resource?.attributes),
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? '',
              name: s.name,
              kind: s.kind,
              attributes: attributes(s.attributes),
              status: s.status ?? {},
              events: s.events ?? [],
            })),
          ),
        ),
      );
  return { ...p, endpoint: `http://127.0.0.1:${port}`, spans };
}

type App = Proc & { base: string; logLines: () => Record<string, any>[] };

const procs: Proc[] = [];
async function startApp(env: Record<string, string>): Promise<App> {
  const p = startProcess(process.execPath, ['--import', 'tsx', SAMPLE_APP_SERVER], { PORT: '0', SEED: '42', ...env });
  procs.push(p);
  const logLines = () =>
    p
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
  const listening = await waitFor(
    () => (p.child.exitCode !== null ? Promise.reject(new Error(p.output())) : logLines().find((l) => l.msg === 'listening')),
    20000,
    'the sample app to listen',
  );
  return { ...p, base: `http://127.0.0.1:${listening.port}`, logLines };
}

/** A W3C traceparent of a new sampled trace, as validate sends. */
function traceparent() {
  const hex = (bytes: number) => [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
  const traceId = hex(16);
  const parentId = hex(8);
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
}

const requestLog = (app: App, traceId: string) => app.logLines().find((l) => l.msg === 'request' && l.trace_id === traceId);

let sink: Awaited<ReturnType<typeof startSink>>;
let app: App;
beforeAll(async () => {
  sink = await startSink();
  // The env of the pod, but the receiver's address (the cluster's Service name resolves only in the
  // cluster), a free port, a short batch delay, and certain outcomes.
  app = await startApp({ ...sampleAppEnv(), OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, PORT: '0', OTEL_BSP_SCHEDULE_DELAY: '100', FAIL_RATE: '1', SLOW_RATE: '1', SLOW_MS: '200' });
}, 60000);
afterAll(async () => {
  await Promise.all([...procs, sink].map((p) => p?.stop()));
});

describe('the OpenTelemetry env every app gets (manifests/app/app.yaml.tmpl)', () => {
  it("points at the cluster's OTLP receiver, names the service after the app, and gives pod and namespace as resource attributes", () => {
    expect(sampleAppEnv()).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint('http'),
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_SERVICE_NAME: 'sample-app',
      OTEL_RESOURCE_ATTRIBUTES: `k8s.namespace.name=${POD.namespace},k8s.pod.name=${POD.name}`,
    });
    // A `task app` app gets the same, under its own name and namespace.
    const goApp = parseAppArgs(['examples/go-app', '--port', '8080']);
    if (!('deploy' in goApp)) throw new Error('parseAppArgs: expected a deploy');
    const env = resolveEnv(containerEnv(appManifests(goApp.deploy, 'registry/go-app:tag', 'localhost', {}).app), { name: 'go-app-5c9d7b8f6-abcde', namespace: goApp.deploy.namespace });
    expect(env).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint('http'),
      OTEL_SERVICE_NAME: goApp.deploy.name,
      OTEL_RESOURCE_ATTRIBUTES: `k8s.namespace.name=${goApp.deploy.namespace},k8s.pod.name=go-app-5c9d7b8f6-abcde`,
      PORT: '8080',
    });
    // So does the traffic generator, as its own service.
    expect(resolveEnv(containerEnv(trafficManifest('registry/sample-app:tag')), { name: 'sample-app-traffic-1', namespace: 'sample-app' })).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint('http'),
      OTEL_SERVICE_NAME: 'sample-app-traffic',
      OTEL_RESOURCE_ATTRIBUTES: 'k8s.namespace.name=sample-app,k8s.pod.name=sample-app-traffic-1',
    });
  });

  it('leaves a variable the --env-file sets to the file (env would override envFrom)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'traces-app-'));
    const envFile = path.join(dir, 'app.env');
    fs.writeFileSync(envFile, 'OTEL_SERVICE_NAME=checkout\nAPI_KEY=secret\n');
    const parsed = parseAppArgs(['examples/go-app', '--port', '8080', '--env-file', envFile]);
    if (!('deploy' in parsed)) throw new Error('parseAppArgs: expected a deploy');
    const env = containerEnv(appManifests(parsed.deploy, 'registry/go-app:tag', 'localhost', {}).app);
    expect(env.map((e) => e.name)).not.toContain('OTEL_SERVICE_NAME');
    expect(env.map((e) => e.name)).toContain('OTEL_EXPORTER_OTLP_ENDPOINT');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('sample app spans at a real OTLP receiver (otlp-sink: the Collector otlpreceiver)', { timeout: 60000 }, () => {
  it('continues an incoming traceparent: SERVER span with route and status, a child span for the slow path, the ids in the log line', async () => {
    const tp = traceparent();
    const res = await fetch(`${app.base}${ROUTES.slow}`, { headers: { traceparent: tp.header } });
    expect(res.status).toBe(200);
    const spans = await waitFor(() => {
      const got = sink.spans().filter((s) => s.traceId === tp.traceId);
      return got.length >= 2 ? got : undefined;
    }, 15000, 'the request spans at the receiver');
    const server = spans.find((s) => s.kind === KIND.server)!;
    expect(server).toMatchObject({
      name: `GET ${ROUTES.slow}`,
      parentSpanId: tp.parentId,
      attributes: { 'http.request.method': 'GET', 'http.route': ROUTES.slow, 'http.response.status_code': 200, 'url.path': ROUTES.slow },
    });
    expect(server.status.code).not.toBe(STATUS_ERROR);
    expect(server.resource).toMatchObject({ 'service.name': 'sample-app', 'k8s.pod.name': POD.name, 'k8s.namespace.name': POD.namespace });
    const slow = spans.find((s) => s.name === 'slow path')!;
    expect(slow).toMatchObject({ kind: KIND.internal, parentSpanId: server.spanId });
    expect(slow.attributes['app.delay_ms']).toBeGreaterThanOrEqual(100);
    expect(spans).toHaveLength(2);
    // The request's log line names the same trace and the server span.
    const line = await waitFor(() => requestLog(app, tp.traceId), 5000, 'the log line');
    expect(line).toMatchObject({ route: ROUTES.slow, status: 200, trace_id: tp.traceId, span_id: server.spanId });
    // Loki's derived field (traces-deploy) finds the id with this pattern in the raw line.
    const raw = app.output().split('\n').find((l) => l.includes(tp.traceId))!;
    expect(/"trace_id":"(\w+)"/.exec(raw)?.[1]).toBe(tp.traceId);
  });

  it('marks a 5xx answer as an error (status, error.type, the exception), a 404 not; a request without traceparent starts its own trace', async () => {
    expect((await fetch(`${app.base}${ROUTES.orders}`)).status).toBe(500);
    expect((await fetch(`${app.base}/no/such/path`)).status).toBe(404);
    const failedLine = await waitFor(() => app.logLines().find((l) => l.route === ROUTES.orders && l.status === 500), 5000, 'the failed request log line');
    const missingLine = await waitFor(() => app.logLines().find((l) => l.route === ROUTES.unmatched), 5000, 'the 404 log line');
    const failed = await waitFor(() => sink.spans().find((s) => s.spanId === failedLine.span_id), 15000, 'the failed request span');
    expect(failed).toMatchObject({
      name: `GET ${ROUTES.orders}`,
      kind: KIND.server,
      parentSpanId: '',
      traceId: failedLine.trace_id,
      attributes: { 'http.route': ROUTES.orders, 'http.response.status_code': 500, 'error.type': '500' },
      status: { code: STATUS_ERROR, message: 'orders backend unavailable: connection reset by peer' },
    });
    expect(failed.events.map((e) => e.name)).toContain('exception');
    // Its slow path (SLOW_RATE=1) is its child.
    expect(sink.spans().find((s) => s.parentSpanId === failed.spanId)?.name).toBe('slow path');
    const missing = await waitFor(() => sink.spans().find((s) => s.spanId === missingLine.span_id), 15000, 'the 404 span');
    expect(missing.name).toBe('GET');
    expect(missing.attributes).not.toHaveProperty('http.route');
    expect(missing.attributes['http.response.status_code']).toBe(404);
    expect(missing.status.code).not.toBe(STATUS_ERROR);
  });

  it('an unsampled traceparent (flags 00): no span sent and no exemplar (Tempo would never have it), but the trace id in the log line', async () => {
    const tp = traceparent();
    const unsampled = tp.header.replace(/-01$/, '-00');
    expect((await fetch(`${app.base}${ROUTES.slow}`, { headers: { traceparent: unsampled, 'x-synthetic': 'other-test' } })).status).toBe(200);
    const line = await waitFor(() => requestLog(app, tp.traceId), 5000, 'the log line');
    expect(line.span_id).toMatch(/^[0-9a-f]{16}$/);
    // A sampled request after it: once its span is at the receiver, the unsampled one would be too.
    const after = traceparent();
    await fetch(`${app.base}${ROUTES.root}`, { headers: { traceparent: after.header } });
    await waitFor(() => sink.spans().some((s) => s.traceId === after.traceId) || undefined, 15000, 'the sampled span');
    expect(sink.spans().filter((s) => s.traceId === tp.traceId)).toEqual([]);
    const om = await (await fetch(`${app.base}${ROUTES.metrics}`, { headers: { accept: 'application/openmetrics-text' } })).text();
    const slowOther = om.split('\n').filter((l) => l.startsWith(`${REQUEST_METRICS.duration}_bucket{`) && l.includes('synthetic="other"'));
    expect(slowOther.length).toBeGreaterThan(0);
    expect(slowOther.filter((l) => l.includes(' # {'))).toEqual([]);
  });

  it('does not trace probes and scrapes, and logs them without a trace id', async () => {
    const before = sink.spans().length;
    for (const p of [ROUTES.healthz, ROUTES.readyz, ROUTES.metrics]) expect((await fetch(`${app.base}${p}`)).status).toBe(200);
    const tp = traceparent();
    await fetch(`${app.base}${ROUTES.root}`, { headers: { traceparent: tp.header } });
    // Spans leave in order: once the root request's is there, the probes' would be too.
    await waitFor(() => sink.spans().some((s) => s.traceId === tp.traceId) || undefined, 15000, 'the root request span');
    expect(sink.spans().slice(before).map((s) => s.name)).toEqual([`GET ${ROUTES.root}`]);
    const probes = app.logLines().filter((l) => [ROUTES.healthz, ROUTES.readyz, ROUTES.metrics].includes(l.route));
    expect(probes.length).toBeGreaterThanOrEqual(3);
    for (const l of probes) expect(l).not.toHaveProperty('trace_id');
  });

  it("joins the traffic generator's CLIENT spans and the app's SERVER spans in one trace per request", async () => {
    const gen = spawnSync(process.execPath, ['--import', 'tsx', TRAFFIC], {
      env: { PATH: process.env.PATH, TARGET_URL: app.base, RATE: '100', MAX_REQUESTS: '8', SEED: '3', OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint },
      encoding: 'utf8',
      timeout: 30000,
    });
    expect(gen.status, gen.stderr).toBe(0);
    expect(gen.stdout).not.toContain('tracing problem');
    // The generator sent its spans before it exited; the receiver's output arrives here after.
    const clients = await waitFor(() => {
      const got = sink.spans().filter((s) => s.resource['service.name'] === 'sample-app-traffic');
      return got.length >= 8 ? got : undefined;
    }, 15000, "the generator's spans");
    expect(clients).toHaveLength(8);
    for (const c of clients) {
      expect(c.kind).toBe(KIND.client);
      expect(c.name).toMatch(/^GET \//);
      const server = await waitFor(() => sink.spans().find((s) => s.parentSpanId === c.spanId), 15000, `the app span of ${c.name}`);
      expect(server).toMatchObject({ kind: KIND.server, traceId: c.traceId });
      expect(server.resource['service.name']).toBe('sample-app');
      expect(c.attributes['http.response.status_code']).toBe(server.attributes['http.response.status_code']);
    }
  });
});

describe('sample app shutdown', { timeout: 60000 }, () => {
  it('on SIGTERM sends the spans still buffered before it exits', async () => {
    // A batch delay far beyond the test: only the shutdown can send the span.
    const short = await startApp({ ...sampleAppEnv(), PORT: '0', OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, OTEL_BSP_SCHEDULE_DELAY: '600000', SHUTDOWN_DELAY_MS: '0' });
    const tp = traceparent();
    expect((await fetch(`${short.base}${ROUTES.root}`, { headers: { traceparent: tp.header } })).status).toBe(200);
    await sleep(300);
    expect(sink.spans().filter((s) => s.traceId === tp.traceId)).toEqual([]);
    const exited = new Promise((r) => short.child.once('exit', r));
    short.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    await waitFor(() => sink.spans().find((s) => s.traceId === tp.traceId), 10000, 'the buffered span');
    expect(short.logLines().at(-1)).toMatchObject({ msg: 'stopped' });
  });
});

describe('sample app exemplars in a real Prometheus 3 (exemplar storage)', { timeout: 60000 }, () => {
  let prom: Proc & { url: string };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'traces-app-prom-'));
  beforeAll(async () => {
    const port = await freePort();
    fs.writeFileSync(
      path.join(dir, 'prometheus.yml'),
      YAML.stringify({ global: { scrape_interval: '1s', scrape_timeout: '1s' }, scrape_configs: [{ job_name: 'sample-app', static_configs: [{ targets: [new URL(app.base).host] }] }] }),
    );
    const p = startProcess('prometheus', [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--enable-feature=exemplar-storage',
      '--log.level=warn',
    ]);
    prom = { ...p, url: `http://127.0.0.1:${port}` };
    procs.push(prom);
    await waitFor(async () => (p.child.exitCode !== null ? Promise.reject(new Error(p.output())) : (await fetch(`${prom.url}/-/ready`)).ok || undefined), 30000, 'Prometheus to be ready');
  }, 60000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const api = async (p: string) => {
    const body = (await (await fetch(`${prom.url}${p}`)).json()) as { status: string; data: any };
    if (body.status !== 'success') throw new Error(`${p}: ${JSON.stringify(body)}`);
    return body.data;
  };

  it("scrapes OpenMetrics cleanly, and the exemplar of a request's bucket is that request's trace, which the receiver got", async () => {
    const tp = traceparent();
    expect((await fetch(`${app.base}${ROUTES.slow}`, { headers: { traceparent: tp.header, 'x-synthetic': 'validate' } })).status).toBe(200);
    const series = `${REQUEST_METRICS.duration}_bucket{route="${ROUTES.slow}",synthetic="validate"}`;
    const exemplars = await waitFor(async () => {
      const now = Date.now() / 1000;
      const data = (await api(`/api/v1/query_exemplars?query=${encodeURIComponent(series)}&start=${now - 300}&end=${now + 60}`)) as { seriesLabels: Record<string, string>; exemplars: { labels: Record<string, string>; value: string }[] }[];
      const found = data.flatMap((d) => d.exemplars.map((e) => ({ ...e, le: d.seriesLabels.le })));
      return found.length ? found : undefined;
    }, 20000, 'the exemplar in Prometheus');
    // One slow request (SLOW_MS=200: 100-200 ms): one exemplar, on its bucket, naming its trace and server span.
    expect(exemplars).toHaveLength(1);
    expect(exemplars[0].le).toBe('0.25');
    expect(exemplars[0].labels.trace_id).toBe(tp.traceId);
    const server = await waitFor(() => sink.spans().find((s) => s.traceId === tp.traceId && s.kind === KIND.server), 15000, 'the span');
    expect(exemplars[0].labels.span_id).toBe(server.spanId);
    expect(Number(exemplars[0].value)).toBeGreaterThanOrEqual(0.1);

    // The scrape was OpenMetrics, and healthy: the target is up, and the counters kept their names.
    const targets = (await api('/api/v1/targets')).activeTargets as { health: string; lastError: string; scrapeUrl: string }[];
    expect(targets.map((t) => [t.health, t.lastError])).toEqual([['up', '']]);
    const requests = await api(`/api/v1/query?query=${encodeURIComponent(`${REQUEST_METRICS.requests}{route="${ROUTES.slow}",synthetic="validate"}`)}`);
    expect(requests.result.map((r: any) => r.value[1])).toEqual(['1']);
    // Every exemplar Prometheus holds names a trace the receiver got (only sampled spans give one).
    const now = Date.now() / 1000;
    const all = (await api(`/api/v1/query_exemplars?query=${encodeURIComponent(`${REQUEST_METRICS.duration}_bucket`)}&start=${now - 300}&end=${now + 60}`)) as { exemplars: { labels: Record<string, string> }[] }[];
    const traceIds = all.flatMap((d) => d.exemplars.map((e) => e.labels.trace_id));
    expect(traceIds.length).toBeGreaterThan(1);
    await waitFor(() => traceIds.every((id) => sink.spans().some((s) => s.traceId === id)) || undefined, 15000, 'every exemplar trace at the receiver');
  });

  it('serves /metrics in OpenMetrics with exemplars to Prometheus, and in the plain text format without them otherwise, after OpenMetrics scrapes too', async () => {
    // Prometheus 3.14's Accept header (scrape/scrape.go acceptHeader with the default scrape protocols).
    const prometheusAccept =
      'application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2';
    const om = await fetch(`${app.base}${ROUTES.metrics}`, { headers: { accept: prometheusAccept } });
    expect(om.headers.get('content-type')).toBe('application/openmetrics-text; version=1.0.0; charset=utf-8');
    const omText = await om.text();
    expect(omText.endsWith('# EOF\n')).toBe(true);
    expect(omText).toMatch(/^http_request_duration_seconds_bucket\{.*\} \d+ # \{trace_id="[0-9a-f]{32}",span_id="[0-9a-f]{16}"\} [\d.e-]+ [\d.]+$/m);
    expect(omText).toMatch(/^# TYPE http_requests counter$/m);
    expect(omText).toMatch(/^http_requests_total\{/m);

    const plain = await fetch(`${app.base}${ROUTES.metrics}`);
    expect(plain.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await plain.text();
    expect(text).not.toContain('trace_id');
    expect(text).not.toContain('# EOF');
    expect(text).toMatch(/^# TYPE http_requests_total counter$/m);
    expect(text).toMatch(/^http_requests_total\{/m);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`).not.toMatch(/parsing error|error while linting/);
  });
});

describe('sample app without a receiver', { timeout: 60000 }, () => {
  it('without OTEL_EXPORTER_OTLP_ENDPOINT: one notice line, no export errors, and trace ids still in the log lines', async () => {
    const { OTEL_EXPORTER_OTLP_ENDPOINT: _, ...env } = sampleAppEnv();
    const bare = await startApp({ ...env, PORT: '0', OTEL_BSP_SCHEDULE_DELAY: '50' });
    const tp = traceparent();
    await fetch(`${bare.base}${ROUTES.root}`, { headers: { traceparent: tp.header } });
    await fetch(`${bare.base}${ROUTES.root}`);
    await waitFor(() => bare.logLines().filter((l) => l.msg === 'request').length === 2 || undefined, 5000, 'the log lines');
    await sleep(300);
    const lines = bare.logLines();
    expect(lines.filter((l) => /OTEL_EXPORTER_OTLP_ENDPOINT is not set/.test(l.msg))).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'tracing problem')).toEqual([]);
    const [continued, own] = lines.filter((l) => l.msg === 'request');
    expect(continued.trace_id).toBe(tp.traceId);
    expect(own.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(own.trace_id).not.toBe('0'.repeat(32));
    expect(bare.output().split('\n').filter((l) => l && !l.startsWith('{'))).toEqual([]);
  });

  it('with an endpoint nobody answers: the export failure is one warn line a minute, naming the endpoint', async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const lost = await startApp({ ...sampleAppEnv(), PORT: '0', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_EXPORTER_OTLP_TIMEOUT: '300' });
    const problems = () => lost.logLines().filter((l) => l.msg === 'tracing problem');
    for (let i = 0; i < 5; i++) await fetch(`${lost.base}${ROUTES.root}`);
    await waitFor(() => problems().length > 0 || undefined, 20000, 'the tracing problem line');
    for (let i = 0; i < 5; i++) {
      await fetch(`${lost.base}${ROUTES.root}`);
      await sleep(200);
    }
    await sleep(1500);
    expect(problems()).toHaveLength(1);
    expect(problems()[0]).toMatchObject({ level: 'warn', endpoint, error: expect.stringMatching(/^connect ECONNREFUSED 127.0.0.1:\d+$/) });
  });
});

describe('prefersOpenMetrics (Accept negotiation of /metrics)', () => {
  it.each([
    ['Prometheus 3 / Alloy default scrape protocols', 'application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2', true],
    ['Prometheus with scrape_protocols [PrometheusText0.0.4]', 'text/plain;version=0.0.4;q=0.2,*/*;q=0.1', false],
    ['OpenMetrics only', 'application/openmetrics-text', true],
    ['curl (*/*)', '*/*', false],
    ['no header', undefined, false],
    ['text/plain first', 'text/plain;q=0.9,application/openmetrics-text;q=0.5', false],
    ['a tie', 'application/openmetrics-text,text/plain', false],
    ['OpenMetrics refused', 'application/openmetrics-text;q=0,*/*;q=0.1', false],
    ['a browser', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', false],
  ])('%s', (_name, accept, expected) => {
    expect(prefersOpenMetrics(accept)).toBe(expected);
  });
});
