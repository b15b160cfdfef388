// Entry point of the sample app: `node dist/server.js` in the image.
//
// Environment: PORT (default 8080; 0 picks a free port), FAIL_RATE, SLOW_RATE, SLOW_MS, SEED (see
// app.ts), SHUTDOWN_DELAY_MS (how long /readyz answers 503 after SIGTERM before the server stops
// accepting connections, so the Service drops the pod first; default 0), SHUTDOWN_TIMEOUT_MS
// (longest wait for requests in flight; default 10000), and OpenTelemetry's OTEL_* (tracing.ts;
// service.name defaults to sample-app).
// Prints one JSON line {"msg":"listening","port":N} once it accepts connections; on shutdown, sends
// the spans still buffered before it exits.
import { createApp, optionsFromEnv } from './app.js';
import { startTracing } from './tracing.js';

const log = (line: string) => process.stdout.write(`${line}\n`);
const event = (level: 'info' | 'warn' | 'error', msg: string, extra: Record<string, unknown> = {}) =>
  log(JSON.stringify({ time: new Date().toISOString(), level, msg, ...extra }));

function intEnv(name: string, def: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  if (!/^\d+$/.test(raw)) throw new Error(`${name}="${raw}" is not allowed: expected a whole number`);
  return Number(raw);
}

let options;
let port: number;
let shutdownDelay: number;
let shutdownTimeout: number;
try {
  options = optionsFromEnv(process.env);
  port = intEnv('PORT', 8080);
  if (port > 65535) throw new Error(`PORT="${port}" is not allowed: expected a TCP port from 0 to 65535`);
  shutdownDelay = intEnv('SHUTDOWN_DELAY_MS', 0);
  shutdownTimeout = intEnv('SHUTDOWN_TIMEOUT_MS', 10000);
} catch (err) {
  event('error', 'bad configuration', { error: (err as Error).message });
  process.exit(2);
}

const tracing = startTracing('sample-app', event);
const app = createApp({ ...options, log, tracer: tracing.tracer });
const { server } = app;

server.listen(port, () => {
  const address = server.address();
  event('info', 'listening', {
    port: typeof address === 'object' && address ? address.port : port,
    fail_rate: options.failRate,
    slow_rate: options.slowRate,
  });
});

let stopping = false;
function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  app.setNotReady();
  event('info', 'shutting down', { signal });
  setTimeout(() => {
    server.close(async () => {
      await tracing.shutdown().catch((err: Error) => event('warn', 'tracing problem', { error: err.message }));
      event('info', 'stopped');
      process.exit(0);
    });
    server.closeIdleConnections();
    setTimeout(() => {
      event('error', 'requests still in flight at shutdown timeout; exiting');
      process.exit(1);
    }, shutdownTimeout).unref();
  }, shutdownDelay);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
