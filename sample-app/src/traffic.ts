// Traffic generator: `node dist/traffic.js` in the same image. Keeps the dashboards busy by
// calling the app's routes (never /api/probe, which validate uses to measure freshness). Every
// request carries `x-synthetic: traffic-generator`, so its metrics and log lines can be told apart.
// Each request is a CLIENT span whose context goes to the app in a W3C `traceparent` header, so
// the app's spans join the generator's traces.
//
// Environment: TARGET_URL (default http://sample-app.sample-app.svc), RATE (requests per second,
// default 5), MAX_REQUESTS (stop after that many; default 0 = run until SIGTERM), SEED, and
// OpenTelemetry's OTEL_* (tracing.ts; service.name defaults to sample-app-traffic).
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_URL_FULL } from '@opentelemetry/semantic-conventions';
import { seededRandom } from './app.js';
import { ROUTES, SYNTHETIC_HEADER } from './metric-names.js';
import { startTracing } from './tracing.js';

const log = (level: 'info' | 'warn' | 'error', msg: string, extra: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...extra })}\n`);

/** Weighted mix of routes: mostly orders, some root, a few slow ones and a few unknown paths. */
export const MIX: [path: string, weight: number][] = [
  [ROUTES.orders, 6],
  [ROUTES.root, 3],
  [ROUTES.slow, 1],
  ['/does-not-exist', 0.5],
];

export function pick(r: number): string {
  const total = MIX.reduce((s, [, w]) => s + w, 0);
  let x = r * total;
  for (const [p, w] of MIX) {
    if ((x -= w) < 0) return p;
  }
  return MIX[0][0];
}

const target = (process.env.TARGET_URL ?? 'http://sample-app.sample-app.svc').replace(/\/$/, '');
const rate = Number(process.env.RATE ?? 5);
const max = Number(process.env.MAX_REQUESTS ?? 0);
const random = seededRandom(Number(process.env.SEED ?? Date.now() % 2 ** 31));
if (!(rate > 0 && rate <= 1000) || !(max >= 0)) {
  log('error', 'bad configuration: RATE must be from 0 to 1000 (exclusive of 0), MAX_REQUESTS 0 or more');
  process.exit(2);
}

let stopping = false;
process.on('SIGTERM', () => (stopping = true));
process.on('SIGINT', () => (stopping = true));

const { tracer, shutdown } = startTracing('sample-app-traffic', log);
log('info', 'traffic generator started', { target, rate, max_requests: max });
const counts: Record<string, number> = {};
let sent = 0;
let lastReport = Date.now();
const inFlight = new Set<Promise<void>>();
while (!stopping && (max === 0 || sent < max)) {
  const path = pick(random());
  sent += 1;
  const url = `${target}${path}`;
  const span = tracer.startSpan(`GET ${path}`, { kind: SpanKind.CLIENT, attributes: { [ATTR_HTTP_REQUEST_METHOD]: 'GET', [ATTR_URL_FULL]: url } });
  const headers: Record<string, string> = { [SYNTHETIC_HEADER]: 'traffic-generator' };
  propagation.inject(trace.setSpan(context.active(), span), headers);
  const p: Promise<void> = fetch(url, { headers, signal: AbortSignal.timeout(15000) })
    .then(async (res) => {
      await res.arrayBuffer();
      counts[res.status] = (counts[res.status] ?? 0) + 1;
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, res.status);
      if (res.status >= 400) span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${res.status}` });
    })
    .catch((err: Error) => {
      counts.failed = (counts.failed ?? 0) + 1;
      span.recordException(err);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    })
    .finally(() => {
      span.end();
      inFlight.delete(p);
    });
  inFlight.add(p);
  if (Date.now() - lastReport >= 60000) {
    log('info', 'traffic summary', { sent, by_status: counts });
    lastReport = Date.now();
  }
  await new Promise((resolve) => setTimeout(resolve, 1000 / rate));
}
await Promise.all(inFlight);
await shutdown().catch((err: Error) => log('warn', 'tracing problem', { error: err.message }));
log('info', 'traffic generator stopped', { sent, by_status: counts });
