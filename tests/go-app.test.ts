// examples/go-app, the real binary (built by tests/tools/ensure-test-tools.mjs from its sources):
// its routes, what it counts, /metrics through `promtool check metrics`, one JSON log line per
// request, a bad port refused, graceful shutdown; and its Dockerfile: pinned base images, a numeric
// non-root user (what Pod Security `restricted`'s runAsNonRoot can check), only its sources in the
// build context (scripts/app.ts contextFiles).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: plain ESM module without types
import { GO_APP } from './tools/test-tools.mjs';
import { contextFiles } from '../scripts/app.ts';
import { startGoApp } from './fixtures/apps/scrape.ts';
import { freePort } from './fixtures/validate/servers.ts';

let app: Awaited<ReturnType<typeof startGoApp>>;
let base: string;
let metricsUrl: string;

beforeAll(async () => {
  const [port, metricsPort] = await Promise.all([freePort(), freePort()]);
  app = await startGoApp(port, metricsPort);
  base = `http://127.0.0.1:${port}`;
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
});
afterAll(() => app?.stop());

/** The value of one series in the exposition text, or undefined. */
const sample = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe('the Go example app (real binary)', () => {
  it('answers its routes; counts them by method, route and status; 404s as route "unmatched"; probes and scrapes not counted', async () => {
    expect(await (await fetch(`${base}/`)).json()).toEqual({ message: 'hello from go-app' });
    expect((await (await fetch(`${base}/api/items`)).json()).items).toHaveLength(3);
    const missing = await fetch(`${base}/no/such/page`);
    expect(missing.status).toBe(404);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(404); // metrics only on the metrics port
    const text = await (await fetch(metricsUrl)).text();
    expect(sample(text, 'http_requests_total{method="GET",route="/",status="200"}')).toBe(1);
    expect(sample(text, 'http_requests_total{method="GET",route="/api/items",status="200"}')).toBe(1);
    expect(sample(text, 'http_requests_total{method="GET",route="unmatched",status="404"}')).toBe(2);
    expect(sample(text, 'http_request_duration_seconds_count{method="GET",route="/api/items",status="200"}')).toBe(1);
    // /api/items works 5-50 ms: its one observation is above the 5 ms bucket.
    expect(sample(text, 'http_request_duration_seconds_bucket{method="GET",route="/api/items",status="200",le="0.005"}')).toBe(0);
    expect(text).not.toMatch(/route="\/healthz"/);
    for (const m of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'go_goroutines', 'promhttp_metric_handler_requests_total']) expect(text).toContain(`\n${m}`);
  });

  it('/metrics passes promtool check metrics (Prometheus 3.14)', async () => {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: await (await fetch(metricsUrl)).text(), encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}${r.error ?? ''}`).toBe('');
    expect(r.status).toBe(0);
  });

  it('logs one JSON line per counted request, and not for probes', async () => {
    await fetch(`${base}/api/items`);
    const requests = app.logLines().filter((l) => l.msg === 'request');
    expect(requests.at(-1)).toMatchObject({ level: 'INFO', method: 'GET', route: '/api/items', path: '/api/items', status: 200 });
    expect(requests.at(-1).duration_ms).toBeGreaterThanOrEqual(5);
    expect(Number.isNaN(Date.parse(requests.at(-1).time))).toBe(false);
    expect(requests.some((l) => l.path === '/healthz')).toBe(false);
    expect(requests.find((l) => l.path === '/no/such/page')).toMatchObject({ route: 'unmatched', status: 404 });
  });

  it('a bad port is refused with its name and value, exit 2', () => {
    const r = spawnSync(GO_APP.binaryPath(), [], { env: { METRICS_PORT: '70000', PORT: '0' }, encoding: 'utf8', timeout: 10000 });
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({ level: 'ERROR', msg: 'bad configuration', error: 'METRICS_PORT="70000" is not allowed: expected a TCP port from 0 to 65535' });
  });

  it('SIGTERM: stops gracefully, exit 0, saying so', async () => {
    const [port, metricsPort] = await Promise.all([freePort(), freePort()]);
    const other = await startGoApp(port, metricsPort);
    await other.stop();
    expect(other.child.exitCode).toBe(0);
    expect(other.logLines().map((l) => l.msg)).toEqual(['listening', 'shutting down', 'stopped']);
  });
});

describe('its Dockerfile', () => {
  const dockerfile = fs.readFileSync(path.join(GO_APP.dir, 'Dockerfile'), 'utf8');
  const instructions = dockerfile.split('\n').filter((l) => /^[A-Z]+ /.test(l));

  it('every base image pinned to a full version tag', () => {
    const froms = instructions.filter((l) => l.startsWith('FROM '));
    expect(froms).toHaveLength(2);
    for (const f of froms) expect(f, f).toMatch(/^FROM [a-z]+:\d+\.\d+\.\d+(-alpine\d+\.\d+)?( AS \w+)?$/);
  });

  it('runs as a numeric non-root user in the final stage (runAsNonRoot can check it)', () => {
    const lastFrom = instructions.map((l) => l.startsWith('FROM ')).lastIndexOf(true);
    const final = instructions.slice(lastFrom);
    const user = final.filter((l) => l.startsWith('USER ')).at(-1);
    const m = /^USER (\d+):(\d+)$/.exec(user ?? '');
    expect(m, user).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(final.at(-1)).toBe('ENTRYPOINT ["/usr/local/bin/go-app"]');
  });

  it("the build context `task app` hashes for the tag is the sources and the Dockerfile (a README edit does not rebuild)", () => {
    expect(contextFiles(GO_APP.dir)).toEqual(['.dockerignore', 'Dockerfile', 'go.mod', 'go.sum', 'main.go']);
    expect(fs.readFileSync(path.join(GO_APP.dir, 'go.mod'), 'utf8')).toMatch(/^require github\.com\/prometheus\/client_golang v\d+\.\d+\.\d+$/m);
    expect(fs.readFileSync(path.join(GO_APP.dir, 'go.sum'), 'utf8')).toMatch(/^github\.com\/prometheus\/client_golang v\d+\.\d+\.\d+ h1:/m);
  });
});
