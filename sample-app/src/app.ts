// The sample app's HTTP handler: routes, Prometheus metrics and one JSON log line per request.
// Probes and scrapes (UNCOUNTED_ROUTES) are logged but not counted in the request metrics; a request
// with the SYNTHETIC_HEADER is counted and logged with its `synthetic` source.
//
// Behaviour that is random in production (failures and slow answers of /api/orders, the delay of
// /api/slow) comes from a seeded generator and rates given in the options, so tests can make it
// certain (rate 0 or 1) or repeatable (same seed).
//
// Error injection (what `task validate` uses to trip the SampleAppErrorRatioHigh alert):
// POST /admin/errors?ratio=<0..1>&seconds=<1..900> makes that share of /api/* requests answer 500
// until the time runs out, and answers {"ratio":..,"until":"<ISO time>"}; DELETE /admin/errors
// ends it early. The state is per process: each replica behind the Service keeps its own.
//
// Traces: each request but the probes and scrapes (UNTRACED_ROUTES) is a SERVER span "<method>
// <route>" with the route and status code, status error on a 5xx; the slow path of /api/orders and
// /api/slow is a child span "slow path". An incoming W3C `traceparent` header continues its trace.
// The request's log line carries the span's trace_id and span_id, and its observation in the
// duration histogram carries trace_id and span_id as an exemplar (when the span is sampled).
// /metrics answers in OpenMetrics (exemplars included) to a scraper that prefers it (Prometheus and
// Alloy do), and in the Prometheus text format (no exemplars) otherwise.
import http from 'node:http';
import { context, isSpanContextValid, propagation, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace, TraceFlags, type Tracer } from '@opentelemetry/api';
import { ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE, ATTR_URL_PATH } from '@opentelemetry/semantic-conventions';
import client from 'prom-client';
import { DURATION_BUCKETS, REQUEST_METRICS, ROUTES, SYNTHETIC_HEADER, SYNTHETIC_SOURCES, type SyntheticSource, UNCOUNTED_ROUTES } from './metric-names.js';

export interface AppOptions {
  /** Share of /api/orders requests that fail with a 500, 0..1. */
  failRate: number;
  /** Share of /api/orders requests that are slow, 0..1. */
  slowRate: number;
  /** How long a slow answer takes at most, in ms (/api/slow always, /api/orders when slow). */
  slowMs: number;
  /** Seed of the random generator. */
  seed: number;
  /** Where log lines go (stdout in production). */
  log: (line: string) => void;
  /** Where spans go; default the global tracer provider's (a no-op one until tracing.ts starts the SDK). */
  tracer?: Tracer;
}

export type Level = 'info' | 'warn' | 'error';

export interface RequestLog {
  time: string;
  level: Level;
  msg: 'request';
  method: string;
  route: string;
  status: number;
  duration_ms: number;
  probe_id?: string;
  /** Present when the request carried the SYNTHETIC_HEADER. */
  synthetic?: SyntheticSource;
  error?: { name: string; message: string; stack?: string };
  /** The request's span (absent for UNTRACED_ROUTES): what Loki's derived field links to Tempo. */
  trace_id?: string;
  span_id?: string;
}

/** mulberry32: a small seeded generator of numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Reads the options from the environment; a bad value throws with the variable named. */
export function optionsFromEnv(env: NodeJS.ProcessEnv): Omit<AppOptions, 'log'> {
  const num = (name: string, def: number, min: number, max: number) => {
    const raw = env[name];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new Error(`${name}="${raw}" is not allowed: expected a number from ${min} to ${max}`);
    }
    return n;
  };
  return {
    failRate: num('FAIL_RATE', 0.1, 0, 1),
    slowRate: num('SLOW_RATE', 0.1, 0, 1),
    slowMs: num('SLOW_MS', 1200, 0, 60000),
    seed: num('SEED', Date.now() % 2 ** 31, 0, 2 ** 32 - 1),
  };
}

/** Maps a path to its route pattern; anything else is `unmatched`. */
export function routeOf(pathname: string): string {
  const known: string[] = Object.values(ROUTES);
  return known.includes(pathname) && pathname !== ROUTES.unmatched ? pathname : ROUTES.unmatched;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A failure a handler throws: it becomes a 5xx answer and an `error` in the log line. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** The synthetic source a request declares in its header, or undefined for real traffic. */
export function syntheticSource(header: string | string[] | undefined): SyntheticSource | undefined {
  const value = (Array.isArray(header) ? header[0] : header)?.trim().toLowerCase();
  if (!value) return undefined;
  return (SYNTHETIC_SOURCES as readonly string[]).includes(value) ? (value as SyntheticSource) : 'other';
}

/** Methods kept as label values; anything else is counted as OTHER, so labels stay few. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

const PROBE_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** Longest error injection, in seconds. */
export const MAX_INJECTION_SECONDS = 900;

/**
 * Reads POST /admin/errors' parameters; a missing or bad one gives an error message that names it.
 */
export function injectionFromQuery(params: URLSearchParams): { ratio: number; seconds: number } | { error: string } {
  const ratioRaw = params.get('ratio');
  const secondsRaw = params.get('seconds');
  const ratio = Number(ratioRaw);
  if (ratioRaw === null || ratioRaw.trim() === '' || !Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
    return { error: `ratio=${JSON.stringify(ratioRaw ?? '')} is not allowed: give the share of /api/* requests to fail, a number from 0 to 1 (ratio=0.9)` };
  }
  if (secondsRaw === null || !/^\d+$/.test(secondsRaw) || Number(secondsRaw) < 1 || Number(secondsRaw) > MAX_INJECTION_SECONDS) {
    return { error: `seconds=${JSON.stringify(secondsRaw ?? '')} is not allowed: give how long to fail, a whole number from 1 to ${MAX_INJECTION_SECONDS} (seconds=300)` };
  }
  return { ratio, seconds: Number(secondsRaw) };
}

/** Routes without a span: the kubelet's probes and the scrapes, which would only bury the traffic's traces. */
export const UNTRACED_ROUTES: readonly string[] = [ROUTES.healthz, ROUTES.readyz, ROUTES.metrics];

/** q of each media range of an Accept header (1 when not given); ranges it cannot read are left out. */
function acceptQualities(accept: string): { type: string; q: number }[] {
  return accept.split(',').flatMap((range) => {
    const [type, ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    const q = params.find((p) => p.startsWith('q='));
    const value = q === undefined ? 1 : Number(q.slice(2));
    return type && Number.isFinite(value) ? [{ type, q: value }] : [];
  });
}

/**
 * Whether /metrics answers in OpenMetrics: when the Accept header ranks application/openmetrics-text
 * above text/plain (Prometheus and Alloy send OpenMetrics first, q=0.6 against 0.4); a tie, no
 * header or only *\/* gets the Prometheus text format, as before.
 */
export function prefersOpenMetrics(accept: string | undefined): boolean {
  const ranges = acceptQualities(accept ?? '');
  const best = (types: string[]) => Math.max(0, ...ranges.filter((r) => types.includes(r.type)).map((r) => r.q));
  const openMetrics = best(['application/openmetrics-text', 'application/*', '*/*']);
  const text = best(['text/plain', 'text/*', '*/*']);
  return openMetrics > 0 && openMetrics > text;
}

/**
 * The registry's metrics in OpenMetrics, exemplars included. prom-client renders OpenMetrics only
 * through Registry.metrics() of an OpenMetrics registry, which also renames every counter in place
 * (drops its _total) so that the next Prometheus-format answer would lose the suffix; so each
 * family is rendered here from a copy with the OpenMetrics name.
 */
async function openMetricsText(registry: client.Registry): Promise<string> {
  const renderer = new client.Registry<client.OpenMetricsContentType>() as client.Registry<client.OpenMetricsContentType> & { getMetricsAsString(m: unknown): Promise<string> };
  renderer.setContentType(client.Registry.OPENMETRICS_CONTENT_TYPE);
  const families = await Promise.all(
    registry.getMetricsAsArray().map(async (metric) => {
      const m = metric as unknown as { get(): Promise<{ name: string; type: string }>; getForPromString?(): Promise<{ name: string; type: string }> };
      const data = m.getForPromString ? await m.getForPromString() : await m.get();
      const name = data.type === 'counter' ? data.name.replace(/_total$/, '') : data.name;
      return renderer.getMetricsAsString({ get: async () => ({ ...data, name }) });
    }),
  );
  return `${families.join('\n')}\n# EOF\n`;
}

export interface App {
  server: http.Server;
  registry: client.Registry;
  /** Makes /readyz answer 503 (called on SIGTERM, before the server closes). */
  setNotReady(): void;
}

export function createApp(opts: AppOptions): App {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const requests = new client.Counter({
    name: REQUEST_METRICS.requests,
    help: 'HTTP requests answered (probes and scrapes not counted), by method, route pattern, status code and synthetic source.',
    labelNames: ['method', 'route', 'status', 'synthetic'] as const,
    registers: [registry],
  });
  const errors = new client.Counter({
    name: REQUEST_METRICS.errors,
    help: 'HTTP requests answered with a 5xx status, by method, route pattern and synthetic source.',
    labelNames: ['method', 'route', 'synthetic'] as const,
    registers: [registry],
  });
  // With exemplars, which prom-client refuses to register in a Prometheus-format registry at
  // construction; it is added to the registry after, and openMetricsText renders the exemplars.
  const duration = new client.Histogram({
    name: REQUEST_METRICS.duration,
    help: 'Time to answer an HTTP request, in seconds, by method, route pattern, status code and synthetic source.',
    labelNames: ['method', 'route', 'status', 'synthetic'] as const,
    buckets: [...DURATION_BUCKETS],
    enableExemplars: true,
    registers: [],
  });
  registry.registerMetric(duration);
  const tracer = opts.tracer ?? trace.getTracer('sample-app');

  const random = seededRandom(opts.seed);
  let ready = true;
  /** The running error injection, if any: share of /api/* requests to fail, and until when (ms). */
  let injection: { ratio: number; until: number } | undefined;
  const injecting = () => injection !== undefined && Date.now() < injection.until;

  type Answer = { status: number; body: string; type?: string; probeId?: string };
  const json = (status: number, value: unknown): Answer => ({ status, body: `${JSON.stringify(value)}\n`, type: 'application/json' });

  function adminErrors(method: string, url: URL): Answer {
    if (method === 'DELETE') {
      injection = undefined;
      return json(200, { ratio: 0, until: null });
    }
    if (method !== 'POST') return json(405, { error: 'method not allowed: POST ?ratio=&seconds= starts an error injection, DELETE ends it' });
    const parsed = injectionFromQuery(url.searchParams);
    if ('error' in parsed) return json(400, { error: parsed.error });
    injection = { ratio: parsed.ratio, until: Date.now() + parsed.seconds * 1000 };
    return json(200, { ratio: injection.ratio, until: new Date(injection.until).toISOString() });
  }

  /** The slow answer: a child span of the request's. */
  const slowPath = (ms: number) =>
    tracer.startActiveSpan('slow path', { attributes: { 'app.delay_ms': Math.round(ms) } }, async (span) => {
      await sleep(ms);
      span.end();
    });

  async function handle(method: string, route: string, url: URL, accept: string | undefined): Promise<Answer> {
    if (route === ROUTES.unmatched) return json(404, { error: 'not found' });
    if (route === ROUTES.adminErrors) return adminErrors(method, url);
    if (method !== 'GET' && method !== 'HEAD') return json(405, { error: 'method not allowed' });
    if (route.startsWith('/api/') && injecting() && random() < injection!.ratio) {
      throw new HttpError(500, 'injected error (POST /admin/errors)');
    }
    switch (route) {
      case ROUTES.root:
        return json(200, { service: 'sample-app', routes: Object.values(ROUTES).filter((r) => r.startsWith('/')) });
      case ROUTES.orders: {
        if (random() < opts.slowRate) await slowPath(opts.slowMs * (0.5 + random() / 2));
        if (random() < opts.failRate) throw new HttpError(500, 'orders backend unavailable: connection reset by peer');
        const count = 1 + Math.floor(random() * 5);
        return json(200, { orders: Array.from({ length: count }, (_, i) => ({ id: i + 1, total: Math.round(random() * 10000) / 100 })) });
      }
      case ROUTES.slow:
        await slowPath(opts.slowMs * (0.5 + random() / 2));
        return json(200, { slow: true });
      case ROUTES.probe: {
        const id = url.searchParams.get('id') ?? '';
        if (!PROBE_ID.test(id)) return json(400, { error: 'id must be 1-64 characters of A-Z a-z 0-9 _ . -' });
        return { ...json(200, { probe_id: id }), probeId: id };
      }
      case ROUTES.healthz:
        return { status: 200, body: 'ok\n', type: 'text/plain' };
      case ROUTES.readyz:
        return ready ? { status: 200, body: 'ready\n', type: 'text/plain' } : { status: 503, body: 'shutting down\n', type: 'text/plain' };
      case ROUTES.metrics:
        return prefersOpenMetrics(accept)
          ? { status: 200, body: await openMetricsText(registry), type: client.Registry.OPENMETRICS_CONTENT_TYPE }
          : { status: 200, body: await registry.metrics(), type: registry.contentType };
      default:
        return json(404, { error: 'not found' });
    }
  }

  /** Answers a request, counts it, logs it and ends its span (if it has one). */
  async function serve(req: http.IncomingMessage, res: http.ServerResponse, method: string, url: URL, route: string, span: Span | undefined) {
    const start = process.hrtime.bigint();
    const synthetic = syntheticSource(req.headers[SYNTHETIC_HEADER]);
    let answer: Answer;
    let failure: Error | undefined;
    try {
      answer = await handle(method, route, url, req.headers.accept);
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
      const status = err instanceof HttpError ? err.status : 500;
      answer = json(status, { error: failure.message });
    }
    res.writeHead(answer.status, { 'content-type': answer.type ?? 'text/plain' });
    res.end(method === 'HEAD' ? undefined : answer.body);

    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const status = String(answer.status);
    const spanContext = span?.spanContext();
    const traced = spanContext !== undefined && isSpanContextValid(spanContext);
    if (!UNCOUNTED_ROUTES.includes(route)) {
      const labels = { method, route, status, synthetic: synthetic ?? '' };
      requests.inc(labels);
      // An exemplar only for a sampled span: an unsampled trace never reaches Tempo.
      const sampled = traced && (spanContext.traceFlags & TraceFlags.SAMPLED) !== 0;
      const exemplarLabels = sampled ? ({ trace_id: spanContext.traceId, span_id: spanContext.spanId } as Record<string, string>) : {};
      duration.observe({ labels, value: seconds, exemplarLabels });
      if (answer.status >= 500) errors.inc({ method, route, synthetic: synthetic ?? '' });
    }
    const line: RequestLog = {
      time: new Date().toISOString(),
      level: answer.status >= 500 ? 'error' : answer.status >= 400 ? 'warn' : 'info',
      msg: 'request',
      method,
      route,
      status: answer.status,
      duration_ms: Math.round(seconds * 1e6) / 1e3,
    };
    if (answer.probeId) line.probe_id = answer.probeId;
    if (synthetic) line.synthetic = synthetic;
    if (failure) line.error = { name: failure.name, message: failure.message, stack: failure.stack };
    if (traced) {
      line.trace_id = spanContext.traceId;
      line.span_id = spanContext.spanId;
    }
    opts.log(JSON.stringify(line));
    if (span) {
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, answer.status);
      if (answer.status >= 500) {
        span.setAttribute(ATTR_ERROR_TYPE, status);
        if (failure) span.recordException(failure);
        span.setStatus({ code: SpanStatusCode.ERROR, message: failure?.message ?? `HTTP ${status}` });
      }
      span.end();
    }
  }

  const server = http.createServer((req, res) => {
    const method = METHODS.has(req.method ?? '') ? (req.method as string) : 'OTHER';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      url = new URL('http://localhost/');
    }
    const route = routeOf(url.pathname);
    if (UNTRACED_ROUTES.includes(route)) return serve(req, res, method, url, route, undefined);
    // A SERVER span named by the route pattern (the method alone when no route matched), child of
    // the caller's span when the request carries a traceparent.
    const parent = propagation.extract(ROOT_CONTEXT, req.headers);
    const span = tracer.startSpan(
      route === ROUTES.unmatched ? method : `${method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_HTTP_REQUEST_METHOD]: method === 'OTHER' ? '_OTHER' : method,
          [ATTR_URL_PATH]: url.pathname,
          ...(route === ROUTES.unmatched ? {} : { [ATTR_HTTP_ROUTE]: route }),
        },
      },
      parent,
    );
    return context.with(trace.setSpan(parent, span), () => serve(req, res, method, url, route, span));
  });

  return { server, registry, setNotReady: () => (ready = false) };
}
