// The alert path with real parts: the sample app (its real handler, in this process) with errors
// injected through POST /admin/errors, a real Prometheus 3.14 that scrapes it and evaluates every
// alerts/*.rules.yaml as shipped, a real Alertmanager 0.34.0 (the chart's version) that Prometheus
// sends to, and a webhook receiver in this test that Alertmanager posts to. It proves: Watchdog
// arrives; SampleAppErrorRatioHigh fires when the app fails most /api/* requests, with the labels the
// rule promises, and resolves after the injection ends; Alertmanager's API lists the active alerts.
// Only the intervals are short (scrape and evaluation every second, Alertmanager groups at once,
// Prometheus resends a firing alert after 5 s: servers.ts TEST_RESEND_DELAY);
// the rules are the files in alerts/.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { createApp } from '../sample-app/src/app.ts';
import { ROUTES } from '../sample-app/src/metric-names.ts';
import { TEST_RESEND_DELAY } from './fixtures/validate/servers.ts';
import { PROJECT_DIR } from './helpers.ts';

interface WebhookAlert { status: 'firing' | 'resolved'; labels: Record<string, string>; annotations: Record<string, string>; startsAt: string; endsAt: string }
interface WebhookMessage { version: string; status: string; receiver: string; alerts: WebhookAlert[] }

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alert-path-'));
const children: ChildProcess[] = [];
const servers: http.Server[] = [];
const messages: WebhookMessage[] = [];

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function listen(server: http.Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** Starts a tool from PATH; its output goes to <dir>/<name>.log (shown when a wait times out). */
function startTool(name: string, args: string[]): ChildProcess {
  const log = fs.openSync(path.join(dir, `${name}.log`), 'w');
  const child = spawn(name, args, { cwd: dir, stdio: ['ignore', log, log] });
  children.push(child);
  return child;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await probe().catch(() => undefined);
    if (got !== undefined) return got;
    if (Date.now() > deadline) {
      const logs = fs.readdirSync(dir).filter((f) => f.endsWith('.log')).map((f) => `--- ${f}\n${fs.readFileSync(path.join(dir, f), 'utf8').slice(-3000)}`);
      throw new Error(`${what}: not within ${ms / 1000}s\n${logs.join('\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const ready = (base: string) => async () => ((await fetch(`${base}/-/ready`)).ok ? true : undefined);
const received = (pred: (a: WebhookAlert) => boolean) => async () => messages.flatMap((m) => m.alerts).find(pred);

let app = '';
let alertmanager = '';
let traffic: NodeJS.Timeout | undefined;

beforeAll(async () => {
  // The webhook receiver: every POST body, as Alertmanager sends it.
  const hookPort = await listen(http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/hook') messages.push(JSON.parse(body) as WebhookMessage);
      res.writeHead(200).end();
    });
  }));

  // The sample app: no failures or slow answers of its own, so every 500 is injected.
  const sample = createApp({ failRate: 0, slowRate: 0, slowMs: 0, seed: 1, log: () => {} });
  app = `http://127.0.0.1:${await listen(sample.server)}`;

  const amPort = await freePort();
  alertmanager = `http://127.0.0.1:${amPort}`;
  fs.writeFileSync(path.join(dir, 'alertmanager.yml'), YAML.stringify({
    route: { receiver: 'webhook', group_by: ['alertname'], group_wait: '1s', group_interval: '1s', repeat_interval: '1h' },
    receivers: [{ name: 'webhook', webhook_configs: [{ url: `http://127.0.0.1:${hookPort}/hook`, send_resolved: true }] }],
  }));
  startTool('alertmanager', [
    '--config.file=alertmanager.yml', '--storage.path=am-data', `--web.listen-address=127.0.0.1:${amPort}`,
    '--cluster.listen-address=', // no HA peers: a single instance, as the chart runs it
  ]);

  const promPort = await freePort();
  const ruleFiles = fs.readdirSync(path.join(PROJECT_DIR, 'alerts')).filter((f) => f.endsWith('.rules.yaml')).map((f) => path.join(PROJECT_DIR, 'alerts', f));
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), YAML.stringify({
    global: { scrape_interval: '1s', evaluation_interval: '1s' },
    rule_files: ruleFiles,
    alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
    // The labels Alloy's annotation autodiscovery gives the app's series (job from app.kubernetes.io/name).
    scrape_configs: [{ job_name: 'sample-app', static_configs: [{ targets: [new URL(app).host], labels: { namespace: 'sample-app', pod: 'sample-app-test' } }] }],
  }));
  startTool('prometheus', ['--config.file=prometheus.yml', '--storage.tsdb.path=prom-data', `--web.listen-address=127.0.0.1:${promPort}`, TEST_RESEND_DELAY]);

  await waitFor('Alertmanager ready', ready(alertmanager), 30000);
  await waitFor('Prometheus ready', ready(`http://127.0.0.1:${promPort}`), 30000);
  const loaded = await waitFor('Prometheus loaded the rule files', async () => {
    const res = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/rules`)).json()) as { data: { groups: { file: string }[] } };
    return res.data.groups.length ? res.data.groups.map((g) => g.file) : undefined;
  }, 30000);
  expect(loaded.sort()).toEqual(ruleFiles.sort());

  // Traffic like the generator's: 40 requests a second to /api/orders and /.
  let n = 0;
  traffic = setInterval(() => {
    n += 1;
    fetch(`${app}${n % 3 === 0 ? '/' : '/api/orders'}`, { headers: { 'x-synthetic': 'traffic-generator' } }).then((r) => r.arrayBuffer()).catch(() => {});
  }, 25);
}, 90000);

afterAll(async () => {
  if (traffic) clearInterval(traffic);
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((resolve) => c.on('exit', resolve)) : null)));
  for (const s of servers) s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('Prometheus -> Alertmanager -> webhook with the shipped rules', { timeout: 120000 }, () => {
  it('delivers Watchdog, and Alertmanager lists it as active', async () => {
    const watchdog = await waitFor('Watchdog at the webhook', received((a) => a.labels.alertname === 'Watchdog'), 30000);
    expect(watchdog).toMatchObject({ status: 'firing', labels: { alertname: 'Watchdog', severity: 'none' } });
    expect(watchdog.annotations.runbook).toMatch(/\S/);
    expect(messages[0]).toMatchObject({ version: '4', receiver: 'webhook' });
    const active = (await (await fetch(`${alertmanager}/api/v2/alerts?active=true&silenced=false&inhibited=false`)).json()) as { labels: Record<string, string>; status: { state: string }; startsAt: string }[];
    const listed = active.find((a) => a.labels.alertname === 'Watchdog');
    expect(listed?.status.state).toBe('active');
    expect(Number.isNaN(Date.parse(listed!.startsAt))).toBe(false);
    // Healthy traffic: the error-ratio alert has not fired.
    expect(messages.flatMap((m) => m.alerts).filter((a) => a.labels.alertname === 'SampleAppErrorRatioHigh')).toEqual([]);
  });

  it('fires SampleAppErrorRatioHigh when errors are injected, and resolves it after they end', async () => {
    const injected = await fetch(`${app}${ROUTES.adminErrors}?ratio=1&seconds=120`, { method: 'POST' });
    expect(injected.status).toBe(200);
    const t0 = Date.now();
    const firing = await waitFor('SampleAppErrorRatioHigh firing at the webhook', received((a) => a.labels.alertname === 'SampleAppErrorRatioHigh' && a.status === 'firing'), 60000);
    expect(firing.labels).toEqual({ alertname: 'SampleAppErrorRatioHigh', severity: 'warning', job: 'sample-app', namespace: 'sample-app' });
    expect(firing.annotations.summary).toMatch(/^\d+(\.\d+)?% of the sample app's requests fail\.$/);
    console.log(`SampleAppErrorRatioHigh reached the webhook ${((Date.now() - t0) / 1000).toFixed(1)}s after the injection (1s scrape and evaluation intervals)`);

    expect((await fetch(`${app}${ROUTES.adminErrors}`, { method: 'DELETE' })).status).toBe(200);
    const resolved = await waitFor('SampleAppErrorRatioHigh resolved at the webhook', received((a) => a.labels.alertname === 'SampleAppErrorRatioHigh' && a.status === 'resolved'), 90000);
    expect(resolved.labels).toEqual(firing.labels);
    expect(Date.parse(resolved.endsAt)).toBeGreaterThan(Date.parse(resolved.startsAt));
    // Nothing else in the shipped rules fired on this healthy-but-for-the-injection target.
    expect([...new Set(messages.flatMap((m) => m.alerts).map((a) => a.labels.alertname))].sort()).toEqual(['SampleAppErrorRatioHigh', 'Watchdog']);
  });
});
