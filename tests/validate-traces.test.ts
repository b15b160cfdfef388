// validate's trace check (step 5b): the pure parts table-driven (trace context, span kinds and ids,
// Tempo's v2/v1 JSON and Grafana's trace frame as spans, the app's server span), and checkTrace
// against local servers: a stand-in app that continues (or not) the traceparent it gets, Tempo's
// documented answers (grafana/tempo v2.10.8: /api/v2/traces and /api/traces; the stored trace is
// tests/fixtures/validate/tempo-trace-v2.json) behind a stand-in Grafana's datasource proxy or
// its /api/ds/query, and Loki's answers built from the app's log lines. Passing, and each way it fails.
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APP_SERVICE,
  DATASOURCE_UIDS,
  type AppPods,
  type Span,
  type Target,
  appServerSpan,
  checkTrace,
  idHex,
  newTraceContext,
  otlpSpans,
  spanKind,
  traceFrameSpans,
} from '../scripts/validate.ts';
import { TEMPO } from '../scripts/lib.ts';
import { type FakeGrafana, type FakeGrafanaOptions, type StandInTempo, TEMPO_TRACE_FIXTURE, applyLogQL, startFakeGrafana, storedTrace } from './fixtures/validate/servers.ts';

const FIXTURE = JSON.parse(fs.readFileSync(TEMPO_TRACE_FIXTURE, 'utf8'));
const FIXTURE_TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const APP: AppPods = { deployment: 'Deployment sample-app/sample-app', readyReplicas: 1, pods: ['sample-app-6d4b75cb6d-x7k2p'], container: 'app' };
const LABELS = { namespace: 'sample-app', pod: 'sample-app-6d4b75cb6d-x7k2p', container: 'app', node: 'talos-local-worker-1' };

describe('trace context, span kinds and ids', () => {
  it('newTraceContext: random 16-byte trace id and 8-byte span id, sampled; all-zero ids (invalid) are drawn again', () => {
    const draws = [Buffer.alloc(16), Buffer.from(FIXTURE_TRACE_ID, 'hex'), Buffer.alloc(8), Buffer.from('00f067aa0ba902b7', 'hex')];
    expect(newTraceContext(() => draws.shift()!)).toEqual({
      traceId: FIXTURE_TRACE_ID,
      spanId: '00f067aa0ba902b7',
      traceparent: `00-${FIXTURE_TRACE_ID}-00f067aa0ba902b7-01`,
    });
    const a = newTraceContext();
    const b = newTraceContext();
    expect(a.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(a.traceId).not.toBe(b.traceId);
  });

  it.each([
    [2, 'server'],
    [3, 'client'],
    [1, 'internal'],
    [0, 'unspecified'],
    ['SPAN_KIND_SERVER', 'server'],
    ['SPAN_KIND_CONSUMER', 'consumer'],
    ['server', 'server'],
    ['', 'unspecified'],
    [undefined, 'unspecified'],
    [9, 'kind 9'],
  ])('spanKind(%j) = %s', (raw, want) => expect(spanKind(raw)).toBe(want));

  it.each([
    { raw: 'S/kvNXezTaajzpKdDg5HNg==', bytes: 16, want: FIXTURE_TRACE_ID, why: "Tempo's JSON: base64 of the bytes" },
    { raw: '4BF92F3577B34DA6A3CE929D0E0E4736', bytes: 16, want: FIXTURE_TRACE_ID, why: 'OTLP JSON: hex, any case' },
    { raw: 'a3ce929d0e0e4736', bytes: 16, want: '0000000000000000a3ce929d0e0e4736', why: "Grafana's frame: a 64-bit id without its leading zeros" },
    { raw: 'APBnqgupArc=', bytes: 8, want: '00f067aa0ba902b7', why: 'span id in base64' },
    { raw: '00f067aa0ba902b7', bytes: 8, want: '00f067aa0ba902b7', why: 'span id in hex' },
    { raw: 'not an id', bytes: 16, want: 'not an id', why: 'kept, so it matches nothing' },
    { raw: undefined, bytes: 16, want: '', why: 'absent' },
  ] as const)('idHex: $why', ({ raw, bytes, want }) => expect(idHex(raw, bytes)).toBe(want));
});

describe("Tempo's answers and Grafana's trace frame as spans", () => {
  const appSpans: Span[] = [
    { traceId: FIXTURE_TRACE_ID, spanId: 'b7ad6b7169203331', name: 'GET /', service: 'sample-app', kind: 'server' },
    { traceId: FIXTURE_TRACE_ID, spanId: 'ae3d1b6c5e0f7a21', name: 'slow path', service: 'sample-app', kind: 'internal' },
  ];
  it.each([
    { name: '/api/v2/traces: {trace: {resourceSpans}} (the fixture)', body: FIXTURE, want: appSpans },
    { name: '/api/traces: {batches} (MarshalToJSONV1)', body: JSON.parse(JSON.stringify(FIXTURE.trace).replace('"resourceSpans":', '"batches":')), want: appSpans },
    {
      name: 'OTLP JSON: hex ids, numeric kinds, instrumentationLibrarySpans',
      body: {
        resourceSpans: [
          {
            resource: { attributes: [{ key: 'service.name', value: { stringValue: 'traffic' } }] },
            instrumentationLibrarySpans: [{ spans: [{ traceId: FIXTURE_TRACE_ID.toUpperCase(), spanId: '00F067AA0BA902B7', name: 'GET', kind: 3 }] }],
          },
        ],
      },
      want: [{ traceId: FIXTURE_TRACE_ID, spanId: '00f067aa0ba902b7', name: 'GET', service: 'traffic', kind: 'client' }],
    },
    { name: '/api/v2/traces of an unknown id: {trace: {}}', body: { trace: {}, metrics: { inspectedBytes: '512' } }, want: [] },
    { name: 'a resource without service.name', body: { resourceSpans: [{ resource: {}, scopeSpans: [{ spans: [{ traceId: FIXTURE_TRACE_ID, name: 'x' }] }] }] }, want: [{ traceId: FIXTURE_TRACE_ID, spanId: '', name: 'x', service: '', kind: 'unspecified' }] },
  ])('otlpSpans: $name', ({ body, want }) => expect(otlpSpans(body)).toEqual(want));

  it("traceFrameSpans: Grafana's Trace frame (/api/ds/query of a traceId query)", () => {
    const frame = {
      schema: { name: 'Trace', refId: 'A', fields: ['traceID', 'spanID', 'parentSpanID', 'operationName', 'serviceName', 'kind'].map((name) => ({ name, type: 'string' })) },
      data: { values: [[FIXTURE_TRACE_ID, FIXTURE_TRACE_ID], ['b7ad6b7169203331', 'ae3d1b6c5e0f7a21'], ['00f067aa0ba902b7', 'b7ad6b7169203331'], ['GET /', 'slow path'], ['sample-app', 'sample-app'], ['server', 'internal']] },
    };
    expect(traceFrameSpans([frame])).toEqual(appSpans);
    expect(traceFrameSpans([])).toEqual([]);
  });

  const server = appSpans[0];
  it.each([
    { name: "the app's server span", spans: appSpans, want: server },
    { name: 'nothing', spans: [], err: `trace ${FIXTURE_TRACE_ID} is not in Tempo` },
    { name: 'spans of another trace only', spans: [{ ...server, traceId: 'ffffffffffffffffffffffffffffffff' }], err: 'with spans of other traces only (ffffffffffffffffffffffffffffffff)' },
    {
      name: "another service's spans only",
      spans: [{ ...server, service: 'traffic', kind: 'client', name: 'GET' }],
      err: `trace ${FIXTURE_TRACE_ID} has no server span of service "sample-app" (spans: "GET" (client) of traffic): the app did not continue`,
    },
    { name: "the app's span, but not a server span", spans: [appSpans[1]], err: 'has no server span of service "sample-app" (spans: "slow path" (internal) of sample-app)' },
    { name: 'a server span of another trace next to a client span of ours', spans: [{ ...server, traceId: '1'.repeat(32) }, { ...server, kind: 'client' }], err: 'has no server span' },
  ])('appServerSpan: $name', ({ spans, want, err }) => {
    if (err) expect(() => appServerSpan(spans, FIXTURE_TRACE_ID)).toThrow(err);
    else expect(appServerSpan(spans, FIXTURE_TRACE_ID)).toEqual(want);
  });

  it("the app's service is its Deployment's name; the datasource uid is lib's TEMPO contract", () => {
    expect(APP_SERVICE).toBe('sample-app');
    expect(DATASOURCE_UIDS.tempo).toBe(TEMPO.datasourceUid);
  });
});

/**
 * What the stand-in app does with validate's request: continue its traceparent (the trace reaches
 * Tempo and the log line Loki after `delayMs`), or get it wrong in one way.
 */
type AppBehaviour = 'continue' | 'new-trace' | 'other-service' | 'client-span' | 'other-trace-ids' | 'no-log' | 'http-500';

describe('checkTrace against a stand-in app, Tempo behind a stand-in Grafana, Loki', () => {
  let app: http.Server;
  let appTarget: Target;
  let grafana: FakeGrafana;
  let tempo: StandInTempo;
  let logLines: [string, string][];
  let received: { traceparent?: string; synthetic?: string; path: string }[];
  let behaviour: AppBehaviour;
  let delayMs: number;
  let grafanaOpts: FakeGrafanaOptions;

  beforeAll(async () => {
    app = http.createServer((req, res) => {
      const traceparent = req.headers.traceparent as string | undefined;
      received.push({ traceparent, synthetic: req.headers['x-synthetic'] as string | undefined, path: req.url! });
      if (behaviour === 'http-500') return res.writeHead(500).end('{"error":"injected"}');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"service":"sample-app"}');
      const [, parentTrace, parentSpan] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(traceparent ?? '') ?? [];
      const traceId = behaviour === 'new-trace' || !parentTrace ? newTraceContext().traceId : parentTrace;
      setTimeout(() => {
        const change =
          behaviour === 'other-service' ? { service: 'traffic' } : behaviour === 'client-span' ? { serverKind: 'SPAN_KIND_CLIENT' } : behaviour === 'other-trace-ids' ? { spansTraceId: 'f'.repeat(32) } : {};
        tempo.traces.set(traceId, storedTrace(traceId, parentSpan ?? '1'.repeat(16), change));
        const line = { time: new Date().toISOString(), level: 'info', msg: 'request', method: 'GET', route: '/', status: 200, duration_ms: 0.4, synthetic: 'validate', trace_id: traceId, span_id: 'b7ad6b7169203331' };
        if (behaviour !== 'no-log') logLines.unshift([String(BigInt(Date.now()) * 1_000_000n), JSON.stringify(line)]);
      }, delayMs);
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    appTarget = { url: `http://127.0.0.1:${(app.address() as net.AddressInfo).port}` };
    grafanaOpts = { password: 'pw', datasources: { tempo: { ok: true }, loki: { ok: true } } };
    grafana = await startFakeGrafana(grafanaOpts);
  });
  afterAll(async () => {
    await grafana.close();
    await new Promise((r) => app.close(r));
  });

  /** One run: the world reset, the app behaving as told, Tempo and Grafana as given. */
  function world(b: AppBehaviour, opts: { tempo?: Partial<StandInTempo>; tempoProxy?: boolean; delayMs?: number } = {}) {
    behaviour = b;
    delayMs = opts.delayMs ?? 0;
    received = [];
    logLines = [[String(BigInt(Date.now()) * 1_000_000n), '{"msg":"listening","port":8080}']];
    tempo = { traces: new Map(), ...opts.tempo };
    Object.assign(grafanaOpts, { tempo, tempoProxy: opts.tempoProxy, loki: (query: string) => applyLogQL(query, [{ stream: LABELS, values: logLines }]) });
    grafana.requests.length = 0;
  }
  const target = (): Target => ({ url: grafana.url, auth: { user: 'admin', password: 'pw' } });
  const tempoPaths = () => grafana.requests.map((r) => new URL(r.url, 'http://g').pathname).filter((p) => !p.includes('/loki/'));
  const run = (timeoutMs = 2500) => checkTrace(appTarget, target(), APP, { timeoutMs, pollMs: 100 });

  it("passes: the app continued validate's traceparent; the trace (v2 API through the proxy) and the log line arrive after a while", async () => {
    world('continue', { delayMs: 600 });
    const proof = await run();
    expect(received).toHaveLength(1);
    expect(received[0]).toEqual({ traceparent: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/), synthetic: 'validate', path: '/' });
    expect(received[0].traceparent).toContain(`00-${proof.traceId}-`);
    expect(proof).toMatchObject({ spans: 2, via: 'datasource proxy /api/v2/traces/', span: { name: 'GET /', service: 'sample-app', kind: 'server', traceId: proof.traceId } });
    expect(proof.traceSeconds).toBeGreaterThanOrEqual(0.6);
    expect(proof.logSeconds).toBeGreaterThanOrEqual(0.6);
    // Polled the v2 API until the trace was there; never needed v1 or /api/ds/query.
    expect(new Set(tempoPaths())).toEqual(new Set([`/api/datasources/proxy/uid/tempo/api/v2/traces/${proof.traceId}`]));
    const logQueries = grafana.requests.filter((r) => r.url.includes('/loki/')).map((r) => new URL(r.url, 'http://g').searchParams.get('query'));
    expect(logQueries[0]).toBe(`{namespace="sample-app",container="app"} |= "\\"trace_id\\":\\"${proof.traceId}\\""`);
  });

  it('passes with a Tempo without the v2 API: /api/traces/<id> ({batches}) after the 404', async () => {
    world('continue', { tempo: { api: 'v1' }, delayMs: 300 });
    const proof = await run();
    expect(proof.via).toBe('datasource proxy /api/traces/');
    // Until the trace was there v1 answered 404 too: /api/ds/query then said "not found" (its 404).
    expect(tempoPaths()).toContain(`/api/datasources/proxy/uid/tempo/api/traces/${proof.traceId}`);
    expect(tempoPaths().at(-1)).toBe(`/api/datasources/proxy/uid/tempo/api/traces/${proof.traceId}`);
  });

  it("passes when Grafana does not proxy to Tempo: /api/ds/query's traceId query and its Trace frame", async () => {
    world('continue', { tempoProxy: false, delayMs: 300 });
    const proof = await run();
    expect(proof).toMatchObject({ via: '/api/ds/query', spans: 2, span: { name: 'GET /', kind: 'server' } });
    const ds = grafana.requests.filter((r) => r.url === '/api/ds/query');
    expect(ds.at(-1)!.body.queries).toEqual([{ refId: 'A', datasource: { type: 'tempo', uid: 'tempo' }, queryType: 'traceId', query: proof.traceId }]);
  });

  it.each([
    { b: 'new-trace' as const, trace: /trace [0-9a-f]{32} with a server span of sample-app in Tempo: not within 1s \(last error: trace [0-9a-f]{32} is not in Tempo\)/, log: true },
    { b: 'other-service' as const, trace: /has no server span of service "sample-app" \(spans: "GET \/" \(server\) of traffic, "slow path" \(internal\) of traffic\)/, log: false },
    { b: 'client-span' as const, trace: /has no server span of service "sample-app" \(spans: "GET \/" \(client\) of sample-app/, log: false },
    { b: 'other-trace-ids' as const, trace: /with spans of other traces only \(f{32}\)/, log: false },
  ])('fails: the app $b (the trace Tempo has is not the one validate sent)', async ({ b, trace, log }) => {
    world(b);
    const err = await run(1200).then(() => undefined, (e: Error) => e.message);
    expect(err).toMatch(trace);
    // A new trace id also means no log line with validate's id.
    expect(err?.includes('a log line for {namespace="sample-app",container="app"} |= ')).toBe(log);
    expect(err).toMatch(/\(validate sent GET \/ with traceparent 00-[0-9a-f]{32}-[0-9a-f]{16}-01; the app answered\)$/);
  });

  it.each([
    { name: 'a Tempo without the v2 API (v1 404, /api/ds/query 404)', opts: { tempo: { api: 'v1' as const } } },
    { name: 'a Grafana that does not proxy (/api/ds/query 404)', opts: { tempoProxy: false } },
  ])('fails: a trace Tempo does not have is "not in Tempo" through $name too', async ({ opts }) => {
    world('new-trace', opts);
    const err = await run(800).then(() => undefined, (e: Error) => e.message);
    expect(err).toMatch(/^trace ([0-9a-f]{32}) with a server span of sample-app in Tempo: not within 1s \(last error: trace \1 is not in Tempo\)/);
    expect(grafana.requests.some((r) => r.url === '/api/ds/query')).toBe(true);
  });

  it('fails: the trace is in Tempo, but the app wrote no log line with its trace_id', async () => {
    world('no-log');
    const err = await run(1200).then(() => undefined, (e: Error) => e.message);
    expect(err).toMatch(/^a log line for \{namespace="sample-app",container="app"\} \|= "\\"trace_id\\":\\"[0-9a-f]{32}\\"" in Loki: not within 1s \(validate sent/);
    expect(err).not.toContain('in Tempo');
  });

  it("fails: Tempo down — the datasource proxy answers 502 and /api/ds/query fails; both answers named", async () => {
    world('continue', { tempo: { down: true } });
    const err = await run(800).then(() => undefined, (e: Error) => e.message);
    expect(err).toMatch(/: the datasource proxy answered \/api\/v2\/traces\/<id> HTTP 502 and \/api\/ds\/query HTTP 500 \(Query data error\)\)/);
    // 502 is not "a Tempo without v2": v1 is not asked.
    expect(tempoPaths().some((p) => p.includes('/api/traces/'))).toBe(false);
  });

  it('fails: the app answers 500 to the request — nothing is waited for', async () => {
    world('http-500');
    const started = Date.now();
    const err = await run(5000).then(() => undefined, (e: Error) => e.message);
    expect(err).toMatch(/^request 1 of 1 to the app: http:\/\/127\.0\.0\.1:\d+\/ answered HTTP 500/);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("fails: a wrong Grafana password is Grafana's 401, named", async () => {
    world('continue');
    const err = await checkTrace(appTarget, { url: grafana.url, auth: { user: 'admin', password: 'wrong' } }, APP, { timeoutMs: 300, pollMs: 100 }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toContain(`/api/datasources/proxy/uid/tempo/api/v2/traces/`);
    expect(err).toContain('answered HTTP 401: {"message":"Invalid username or password"');
  });
});
