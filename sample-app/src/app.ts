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
import http from 'node:http';
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
  const duration = new client.Histogram({
    name: REQUEST_METRICS.duration,
    help: 'Time to answer an HTTP request, in seconds, by method, route pattern, status code and synthetic source.',
    labelNames: ['method', 'route', 'status', 'synthetic'] as const,
    buckets: [...DURATION_BUCKETS],
    registers: [registry],
  });

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

  async function handle(method: string, route: string, url: URL): Promise<Answer> {
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
        if (random() < opts.slowRate) await sleep(opts.slowMs * (0.5 + random() / 2));
        if (random() < opts.failRate) throw new HttpError(500, 'orders backend unavailable: connection reset by peer');
        const count = 1 + Math.floor(random() * 5);
        return json(200, { orders: Array.from({ length: count }, (_, i) => ({ id: i + 1, total: Math.round(random() * 10000) / 100 })) });
      }
      case ROUTES.slow:
        await sleep(opts.slowMs * (0.5 + random() / 2));
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
        return { status: 200, body: await registry.metrics(), type: registry.contentType };
      default:
        return json(404, { error: 'not found' });
    }
  }

  const server = http.createServer(async (req, res) => {
    const start = process.hrtime.bigint();
    const method = METHODS.has(req.method ?? '') ? (req.method as string) : 'OTHER';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      url = new URL('http://localhost/');
    }
    const route = routeOf(url.pathname);
    const synthetic = syntheticSource(req.headers[SYNTHETIC_HEADER]);
    let answer: Answer;
    let failure: Error | undefined;
    try {
      answer = await handle(method, route, url);
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
      const status = err instanceof HttpError ? err.status : 500;
      answer = json(status, { error: failure.message });
    }
    res.writeHead(answer.status, { 'content-type': answer.type ?? 'text/plain' });
    res.end(method === 'HEAD' ? undefined : answer.body);

    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const status = String(answer.status);
    if (!UNCOUNTED_ROUTES.includes(route)) {
      const labels = { method, route, status, synthetic: synthetic ?? '' };
      requests.inc(labels);
      duration.observe(labels, seconds);
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
    opts.log(JSON.stringify(line));
  });

  return { server, registry, setNotReady: () => (ready = false) };
}
