// The sample app as a real process: its routes, its /metrics checked by the real exposition
// parser (`promtool check metrics` of Prometheus 3), its JSON log lines, graceful
// SIGTERM, the traffic generator, and the build the image runs (tsc to dist/, node dist/server.js).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { METRIC_FAMILIES, REQUEST_METRICS, ROUTES, SYNTHETIC_HEADER, seriesNames } from '../sample-app/src/metric-names.ts';
import { PROJECT_DIR } from './helpers.ts';

const APP_DIR = path.join(PROJECT_DIR, 'sample-app');

interface Running {
  child: ChildProcess;
  port: number;
  base: string;
  /** Every stdout line so far. */
  lines: string[];
  stderr: () => string;
  exited: Promise<number | null>;
}

const running: Running[] = [];
afterAll(() => {
  for (const r of running) if (r.child.exitCode === null) r.child.kill('SIGKILL');
});

/** Starts an entry point of the app with PORT=0 and resolves once it printed its port. */
function start(env: Record<string, string> = {}, args = ['--import', 'tsx', path.join(APP_DIR, 'src', 'server.ts')]): Promise<Running> {
  const child = spawn(process.execPath, args, {
    cwd: PROJECT_DIR,
    env: { PATH: process.env.PATH, PORT: '0', SEED: '42', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stderr = '';
  let buf = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`app did not start: ${stderr}`)), 15000);
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdout!.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        const parsed = JSON.parse(line);
        if (parsed.msg === 'listening') {
          clearTimeout(timer);
          const r = { child, port: parsed.port, base: `http://127.0.0.1:${parsed.port}`, lines, stderr: () => stderr, exited };
          running.push(r);
          resolve(r);
        }
      }
    });
    exited.then((code) => reject(new Error(`app exited with ${code} before listening: ${stderr} ${lines.join('\n')}`)));
  });
}

const get = async (r: Running, p: string, headers: Record<string, string> = {}) => {
  const res = await fetch(`${r.base}${p}`, { headers });
  return { status: res.status, body: await res.text() };
};

/** Request log lines (msg "request") parsed; fails the test on any line that is not JSON. */
const requestLogs = (r: Running) => r.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');

const waitFor = async (cond: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((res) => setTimeout(res, 20));
  }
};

/** promtool's verdict on an exposition text: exit 0 clean, 3 lint problems, 1 parse error. */
function promtool(text: string) {
  const res = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { code: res.status, output: `${res.stdout}${res.stderr}` };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Reads samples and # TYPE lines (run only on text promtool accepted). */
function parseExposition(text: string) {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1], t[2]);
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsed sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { types, samples };
}

const value = (samples: Sample[], name: string, labels: Record<string, string>) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);

// prom-client 15's default metrics that promtool's linter flags (gauges named *_total). Nothing else may be flagged.
const KNOWN_LINT = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

describe('sample app (real process)', { timeout: 60000 }, () => {
  it('answers its routes, counts them by route pattern and status, and /metrics passes promtool', async () => {
    const app = await start({ FAIL_RATE: '1', SLOW_RATE: '0', SLOW_MS: '200' });
    const answers = {
      root: await get(app, '/'),
      orders1: await get(app, '/api/orders'),
      orders2: await get(app, '/api/orders?page=2'),
      slow: await get(app, '/api/slow'),
      probe: await get(app, '/api/probe?id=probe-123'),
      probeBad: await get(app, '/api/probe'),
      unknown: await get(app, '/no/such/path?x=1'),
      healthz: await get(app, '/healthz'),
      readyz: await get(app, '/readyz'),
    };
    expect(Object.fromEntries(Object.entries(answers).map(([k, v]) => [k, v.status]))).toEqual({
      root: 200, orders1: 500, orders2: 500, slow: 200, probe: 200, probeBad: 400, unknown: 404, healthz: 200, readyz: 200,
    });
    expect(JSON.parse(answers.probe.body)).toEqual({ probe_id: 'probe-123' });
    const post = await fetch(`${app.base}/api/orders`, { method: 'POST' });
    expect(post.status).toBe(405);

    const metrics = await get(app, '/metrics');
    expect(metrics.status).toBe(200);
    const verdict = promtool(metrics.body);
    expect(verdict.output).not.toMatch(/parsing error|error while linting/);
    expect([0, 3]).toContain(verdict.code);
    const flagged = verdict.output.split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
    expect(flagged.filter((n) => !KNOWN_LINT.includes(n))).toEqual([]);

    const { types, samples } = parseExposition(metrics.body);
    // Exactly the families metric-names.ts declares, with their types.
    expect(Object.fromEntries(types)).toEqual(Object.fromEntries(METRIC_FAMILIES.map((f) => [f.name, f.type])));
    // Labels as declared (histograms also carry le).
    for (const f of METRIC_FAMILIES) {
      for (const s of samples.filter((x) => seriesNames([f]).includes(x.name))) {
        expect(Object.keys(s.labels).filter((l) => l !== 'le').sort(), s.name).toEqual([...f.labels].sort());
      }
    }

    const R = REQUEST_METRICS;
    expect(value(samples, R.requests, { method: 'GET', route: '/api/orders', status: '500' })).toBe(2);
    expect(value(samples, R.errors, { method: 'GET', route: '/api/orders' })).toBe(2);
    expect(value(samples, R.requests, { method: 'POST', route: '/api/orders', status: '405' })).toBe(1);
    expect(value(samples, R.requests, { method: 'GET', route: '/api/slow', status: '200' })).toBe(1);
    expect(value(samples, R.requests, { method: 'GET', route: '/api/probe', status: '200' })).toBe(1);
    expect(value(samples, R.requests, { method: 'GET', route: 'unmatched', status: '404' })).toBe(1);
    expect(value(samples, R.errors, { route: '/api/slow' })).toBe(0);
    // route is always a pattern: no raw path or query string becomes a label value.
    const routes = new Set(samples.filter((s) => s.name.startsWith('http_request')).map((s) => s.labels.route));
    expect([...routes].every((r) => (Object.values(ROUTES) as string[]).includes(r))).toBe(true);
    // The histogram counts every request; /api/slow (SLOW_MS=200: 100-200 ms) lands above 0.1 s.
    expect(value(samples, `${R.duration}_count`, { method: 'GET', route: '/api/orders' })).toBe(2);
    expect(value(samples, `${R.duration}_count`, {})).toBe(value(samples, R.requests, {}));
    // The requests above but the probes (/healthz, /readyz) and scrapes (/metrics): they are not traffic.
    expect(value(samples, R.requests, {})).toBe(8);
    for (const route of [ROUTES.healthz, ROUTES.readyz, ROUTES.metrics]) {
      expect(samples.filter((s) => s.name.startsWith('http_request') && s.labels.route === route), route).toEqual([]);
    }
    // No request above declared itself synthetic: every request series has an empty synthetic label.
    expect(samples.filter((s) => s.name.startsWith('http_request') && s.labels.synthetic !== '')).toEqual([]);
    const slowBucket = (le: string) => value(samples, `${R.duration}_bucket`, { route: '/api/slow', le });
    expect(slowBucket('0.05')).toBe(0);
    expect(slowBucket('0.25')).toBe(1);
    expect(slowBucket('+Inf')).toBe(1);
    expect(value(samples, `${R.duration}_sum`, { route: '/api/slow' })).toBeGreaterThanOrEqual(0.1);
    // Default metrics are there with values.
    expect(value(samples, 'process_resident_memory_bytes', {})).toBeGreaterThan(0);
    expect(samples.some((s) => s.name === 'nodejs_version_info' && s.labels.major)).toBe(true);
  });

  it('logs one JSON line per request with the contract fields, probe_id and the error stack', async () => {
    const app = await start({ FAIL_RATE: '1', SLOW_RATE: '0' });
    await get(app, '/');
    await get(app, '/api/orders');
    await get(app, '/api/probe?id=fresh-42');
    await get(app, '/missing');
    await waitFor(() => requestLogs(app).length === 4);
    // Every stdout line is JSON (JSON.parse throws otherwise) with time, level and msg.
    for (const line of app.lines) {
      const parsed = JSON.parse(line);
      expect(Number.isNaN(Date.parse(parsed.time))).toBe(false);
      expect(['info', 'warn', 'error']).toContain(parsed.level);
      expect(typeof parsed.msg).toBe('string');
    }
    const [root, orders, probe, missing] = requestLogs(app);
    for (const l of [root, orders, probe, missing]) {
      expect(Object.keys(l)).toEqual(expect.arrayContaining(['time', 'level', 'msg', 'method', 'route', 'status', 'duration_ms']));
      expect(typeof l.duration_ms).toBe('number');
      expect(l.duration_ms).toBeGreaterThanOrEqual(0);
    }
    expect(root).toMatchObject({ level: 'info', method: 'GET', route: '/', status: 200 });
    expect(root).not.toHaveProperty('error');
    expect(root).not.toHaveProperty('probe_id');
    expect(orders).toMatchObject({ level: 'error', route: '/api/orders', status: 500 });
    expect(orders.error.message).toMatch(/orders backend unavailable/);
    expect(orders.error.stack).toMatch(/^HttpError: orders backend unavailable[\s\S]*\n\s+at /);
    expect(probe).toMatchObject({ level: 'info', route: '/api/probe', status: 200, probe_id: 'fresh-42' });
    expect(missing).toMatchObject({ level: 'warn', route: 'unmatched', status: 404 });
    expect(app.stderr()).toBe('');
  });

  it(`marks synthetic traffic (${SYNTHETIC_HEADER} header) in the synthetic label and log field; probes and scrapes are logged, not counted`, async () => {
    const app = await start({ FAIL_RATE: '1', SLOW_RATE: '0' });
    await get(app, '/', { [SYNTHETIC_HEADER]: 'validate' });
    await get(app, '/api/orders', { [SYNTHETIC_HEADER]: 'traffic-generator' });
    await get(app, '/', { [SYNTHETIC_HEADER]: 'My-Load-Test' });
    await get(app, '/');
    await get(app, '/healthz', { [SYNTHETIC_HEADER]: 'validate' });
    const { samples } = parseExposition((await get(app, '/metrics')).body);
    const R = REQUEST_METRICS;
    expect(value(samples, R.requests, { route: '/', synthetic: 'validate' })).toBe(1);
    expect(value(samples, R.requests, { route: '/api/orders', status: '500', synthetic: 'traffic-generator' })).toBe(1);
    expect(value(samples, R.errors, { route: '/api/orders', synthetic: 'traffic-generator' })).toBe(1);
    expect(value(samples, `${R.duration}_count`, { route: '/', synthetic: 'validate' })).toBe(1);
    // An unknown source is kept as "other" (the header never becomes an arbitrary label value).
    expect(value(samples, R.requests, { route: '/', synthetic: 'other' })).toBe(1);
    expect(value(samples, R.requests, { route: '/', synthetic: '' })).toBe(1);
    expect(value(samples, R.requests, {})).toBe(4);
    await waitFor(() => requestLogs(app).length === 6);
    expect(requestLogs(app).map((l) => [l.route, l.synthetic])).toEqual([
      ['/', 'validate'],
      ['/api/orders', 'traffic-generator'],
      ['/', 'other'],
      ['/', undefined],
      ['/healthz', 'validate'],
      ['/metrics', undefined],
    ]);
  });

  it('fails and slows /api/orders by FAIL_RATE and SLOW_RATE, repeatably for one SEED', async () => {
    const statuses = async (env: Record<string, string>) => {
      const app = await start(env);
      const out: number[] = [];
      for (let i = 0; i < 30; i++) out.push((await get(app, '/api/orders')).status);
      app.child.kill('SIGTERM');
      return out;
    };
    expect(new Set(await statuses({ FAIL_RATE: '0', SLOW_RATE: '0' }))).toEqual(new Set([200]));
    const a = await statuses({ FAIL_RATE: '0.5', SLOW_RATE: '0', SEED: '7' });
    const b = await statuses({ FAIL_RATE: '0.5', SLOW_RATE: '0', SEED: '7' });
    expect(a).toEqual(b);
    expect(new Set(a)).toEqual(new Set([200, 500]));

    const slow = await start({ FAIL_RATE: '0', SLOW_RATE: '1', SLOW_MS: '300' });
    const t0 = Date.now();
    expect((await get(slow, '/api/orders')).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });

  it('POST /admin/errors fails that share of /api/* requests for that long, uncounted itself; DELETE ends it', async () => {
    const app = await start({ FAIL_RATE: '0', SLOW_RATE: '0', SLOW_MS: '50' });
    const admin = async (method: string, query = '') => {
      const res = await fetch(`${app.base}${ROUTES.adminErrors}${query}`, { method });
      return { status: res.status, body: await res.json() };
    };
    expect((await get(app, '/api/orders')).status).toBe(200);

    const before = Date.now();
    const started = await admin('POST', '?ratio=1&seconds=60');
    expect(started.status).toBe(200);
    expect(Object.keys(started.body)).toEqual(['ratio', 'until']);
    expect(started.body.ratio).toBe(1);
    const until = Date.parse(started.body.until);
    expect(new Date(until).toISOString()).toBe(started.body.until);
    expect(until).toBeGreaterThanOrEqual(before + 60000);
    expect(until).toBeLessThanOrEqual(Date.now() + 60000);

    // /api/* fails; the rest does not.
    expect((await get(app, '/api/orders')).status).toBe(500);
    expect((await get(app, '/api/slow')).status).toBe(500);
    expect((await get(app, '/')).status).toBe(200);
    expect((await get(app, '/healthz')).status).toBe(200);

    expect(await admin('DELETE')).toEqual({ status: 200, body: { ratio: 0, until: null } });
    expect((await get(app, '/api/orders')).status).toBe(200);

    const { samples } = parseExposition((await get(app, '/metrics')).body);
    const R = REQUEST_METRICS;
    expect(value(samples, R.requests, { route: '/api/orders', status: '500' })).toBe(1);
    expect(value(samples, R.errors, { route: '/api/slow' })).toBe(1);
    expect(value(samples, R.requests, {})).toBe(5);
    expect(samples.filter((s) => s.name.startsWith('http_request') && s.labels.route === ROUTES.adminErrors)).toEqual([]);
    await waitFor(() => requestLogs(app).filter((l) => l.route === ROUTES.adminErrors).length === 2);
    const failed = requestLogs(app).find((l) => l.route === '/api/slow')!;
    expect(failed).toMatchObject({ level: 'error', status: 500 });
    expect(failed.error.message).toMatch(/injected error/);
  });

  it('error injection ends by itself after its seconds, and fails about its ratio of requests', async () => {
    const app = await start({ FAIL_RATE: '0', SLOW_RATE: '0' });
    expect((await fetch(`${app.base}${ROUTES.adminErrors}?ratio=1&seconds=1`, { method: 'POST' })).status).toBe(200);
    expect((await get(app, '/api/orders')).status).toBe(500);
    await new Promise((res) => setTimeout(res, 1100));
    expect((await get(app, '/api/orders')).status).toBe(200);

    expect((await fetch(`${app.base}${ROUTES.adminErrors}?ratio=0.5&seconds=60`, { method: 'POST' })).status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < 200; i++) statuses.push((await get(app, '/api/orders')).status);
    const failures = statuses.filter((s) => s === 500).length;
    expect(failures).toBeGreaterThan(70);
    expect(failures).toBeLessThan(130);
    expect(statuses.filter((s) => s !== 500 && s !== 200)).toEqual([]);
  });

  it.each([
    ['?seconds=60', 'ratio', /ratio="" is not allowed/],
    ['?ratio=&seconds=60', 'ratio', /ratio="" is not allowed/],
    ['?ratio=1.5&seconds=60', 'ratio', /ratio="1.5" is not allowed: .* from 0 to 1/],
    ['?ratio=-0.1&seconds=60', 'ratio', /ratio="-0.1" is not allowed/],
    ['?ratio=half&seconds=60', 'ratio', /ratio="half" is not allowed/],
    ['?ratio=0.9', 'seconds', /seconds="" is not allowed/],
    ['?ratio=0.9&seconds=0', 'seconds', /seconds="0" is not allowed: .* from 1 to 900/],
    ['?ratio=0.9&seconds=901', 'seconds', /seconds="901" is not allowed/],
    ['?ratio=0.9&seconds=1.5', 'seconds', /seconds="1.5" is not allowed/],
  ])('POST /admin/errors%s answers 400 naming %s, and injects nothing', async (query, _param, message) => {
    const app = await start({ FAIL_RATE: '0', SLOW_RATE: '0' });
    const res = await fetch(`${app.base}${ROUTES.adminErrors}${query}`, { method: 'POST' });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toMatch(message);
    expect((await get(app, '/api/orders')).status).toBe(200);
    app.child.kill('SIGTERM');
  });

  it('GET /admin/errors is refused (405): only POST and DELETE', async () => {
    const app = await start({ FAIL_RATE: '0', SLOW_RATE: '0' });
    expect((await get(app, ROUTES.adminErrors)).status).toBe(405);
    expect((await get(app, '/api/orders')).status).toBe(200);
    app.child.kill('SIGTERM');
  });

  it('refuses a bad setting with the variable named', async () => {
    const res = spawnSync(process.execPath, ['--import', 'tsx', path.join(APP_DIR, 'src', 'server.ts')], {
      cwd: PROJECT_DIR,
      env: { PATH: process.env.PATH, PORT: '0', FAIL_RATE: '2' },
      encoding: 'utf8',
      timeout: 15000,
    });
    expect(res.status).toBe(2);
    expect(JSON.parse(res.stdout.trim()).error).toMatch(/FAIL_RATE="2" is not allowed/);
  });

  it('on SIGTERM answers /readyz 503, finishes requests in flight, then exits 0', async () => {
    const app = await start({ SHUTDOWN_DELAY_MS: '400', SLOW_MS: '300' });
    const inFlight = get(app, '/api/slow');
    await new Promise((res) => setTimeout(res, 30)); // the request is now being served
    app.child.kill('SIGTERM');
    await waitFor(() => app.lines.some((l) => l.includes('"shutting down"')));
    expect((await get(app, '/readyz')).status).toBe(503);
    expect((await get(app, '/healthz')).status).toBe(200);
    expect((await inFlight).status).toBe(200);
    expect(await app.exited).toBe(0);
    expect(app.lines.at(-1)).toMatch(/"msg":"stopped"/);
  });

  it('traffic generator calls the app routes, never /api/probe, and stops after MAX_REQUESTS', async () => {
    const app = await start({ FAIL_RATE: '0.2', SLOW_RATE: '0', SLOW_MS: '50' });
    const gen = spawnSync(process.execPath, ['--import', 'tsx', path.join(APP_DIR, 'src', 'traffic.ts')], {
      cwd: PROJECT_DIR,
      env: { PATH: process.env.PATH, TARGET_URL: app.base, RATE: '200', MAX_REQUESTS: '40', SEED: '3' },
      encoding: 'utf8',
      timeout: 30000,
    });
    expect(gen.status).toBe(0);
    const last = JSON.parse(gen.stdout.trim().split('\n').at(-1)!);
    expect(last).toMatchObject({ msg: 'traffic generator stopped', sent: 40 });
    await waitFor(() => requestLogs(app).length === 40);
    // Every request says it is the traffic generator's, in its log line and in the metrics.
    expect(requestLogs(app).every((l) => l.synthetic === 'traffic-generator')).toBe(true);
    const routes = new Set(requestLogs(app).map((l) => l.route));
    expect(routes.has('/api/orders')).toBe(true);
    expect(routes.has('/')).toBe(true);
    expect(routes.has('/api/probe')).toBe(false);
    const { samples } = parseExposition((await get(app, '/metrics')).body);
    expect(value(samples, REQUEST_METRICS.requests, { method: 'GET', synthetic: 'traffic-generator' })).toBe(40);
  });

  it('builds as the image does (tsc to dist/, node dist/server.js) and serves from the compiled code', async () => {
    const tsc = path.join(APP_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
    const build = spawnSync(process.execPath, [tsc, '-p', APP_DIR], { encoding: 'utf8', timeout: 120000 });
    expect(build.status, `${build.stdout}${build.stderr}`).toBe(0);
    for (const f of ['server.js', 'app.js', 'traffic.js', 'metric-names.js']) expect(fs.existsSync(path.join(APP_DIR, 'dist', f))).toBe(true);
    const app = await start({}, [path.join(APP_DIR, 'dist', 'server.js')]);
    expect((await get(app, '/healthz')).status).toBe(200);
    expect(promtool((await get(app, '/metrics')).body).output).not.toMatch(/error/);
    app.child.kill('SIGTERM');
    expect(await app.exited).toBe(0);
  }, 120000);
});
