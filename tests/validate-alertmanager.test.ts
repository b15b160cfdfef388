// validate's alert checks against a REAL Alertmanager v0.34.0 (the subchart's app version) fed by a
// REAL Prometheus 3 that evaluates the repository's alerts/*.rules.yaml: Watchdog fires, Prometheus
// sends it, Alertmanager holds it, checkWatchdog finds it through /api/v2/alerts. The Alertmanager
// configuration is the one the observability phase deploys (helm-values/prometheus.yaml + overrides).
// `--alerts` (measureAlert) runs against a stand-in app that plays the sample app's error injection
// contract (POST/DELETE /admin/errors) and exposes its error ratio; a test rule on it fires and
// resolves in the real pair. With ALERT_WEBHOOK_URL set, the deployed routing sends that alert to
// the webhook (read from the mounted file, as in the pod) and keeps Watchdog local; a Slack URL gets
// Slack messages from the same file.
// Every check is shown to fail when the thing it names is broken.
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mergeValues, parseConfig } from '../scripts/lib.ts';
import { ALERT_WEBHOOK, alertRuleFiles, releaseSpec } from '../scripts/observability.ts';
import { ACTIVE_ALERTS_PATH, activeAlerts, checkWatchdog, measureAlert, type Target } from '../scripts/validate.ts';
import { type Proc, freePort, startAlertmanager, startPrometheus, waitFor } from './fixtures/validate/servers.ts';

// Real processes and evaluation intervals: room for a loaded machine.
vi.setConfig({ testTimeout: 60000, hookTimeout: 60000 });

const TEST_ALERT = 'StandInErrorRatioHigh';

/** The sample app's error injection, as the contract describes it, and the ratio as a metric. */
async function startStandInApp() {
  const calls: string[] = [];
  let until = 0;
  const server = http.createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    if (u.pathname === '/metrics') {
      return res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(`stand_in_error_ratio ${Date.now() < until ? 1 : 0}\n`);
    }
    calls.push(`${req.method} ${u.pathname}${u.search}`);
    if (u.pathname === '/admin/errors' && req.method === 'POST') {
      const ratio = Number(u.searchParams.get('ratio'));
      const seconds = Number(u.searchParams.get('seconds'));
      if (!(ratio >= 0 && ratio <= 1)) return res.writeHead(400).end('{"error":"ratio must be 0..1"}');
      if (!(seconds >= 1 && seconds <= 900)) return res.writeHead(400).end('{"error":"seconds must be 1..900"}');
      until = Date.now() + seconds * 1000;
      return res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ ratio, until: new Date(until).toISOString() }));
    }
    if (u.pathname === '/admin/errors' && req.method === 'DELETE') {
      until = 0;
      return res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"ratio":0}');
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return { port, calls, url: `http://127.0.0.1:${port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A receiver for Alertmanager's webhook: every alert name it was sent, with its status. */
async function startWebhookReceiver() {
  const received: { alertname: string; status: string }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      for (const a of JSON.parse(body).alerts ?? []) received.push({ alertname: a.labels.alertname, status: a.status });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return { received, url: `http://127.0.0.1:${port}/hook/SECRET`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/**
 * alertmanager.yml as the phase deploys it for these .env values (the subchart writes
 * alertmanager.config as the file), with the webhook URL file moved to `urlFile` and, for a quick
 * test, the first notification of a group sent after 1s instead of 30s.
 */
function deployedAlertmanagerConfig(env: Record<string, string>, urlFile: string): string {
  const cfg = parseConfig({ STATE_DIR: '/tmp/st', ...env });
  const config = (mergeValues(...releaseSpec(cfg, 'prometheus').values) as any).alertmanager.config;
  config.route.group_wait = '1s';
  return YAML.stringify(config).replaceAll(`${ALERT_WEBHOOK.dir}/${ALERT_WEBHOOK.key}`, urlFile);
}

/** Prometheus evaluating every alerts/*.rules.yaml of the repository and a rule on the stand-in app, sending to `amPort`. */
async function prometheusFor(amPort: number, appPort: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'am-rules-'));
  const ruleFiles = Object.entries(alertRuleFiles()).map(([name, content]) => {
    fs.writeFileSync(path.join(dir, name), YAML.stringify(content));
    return path.join(dir, name);
  });
  const testRule = { groups: [{ name: 'stand-in', rules: [{ alert: TEST_ALERT, expr: 'stand_in_error_ratio > 0.5', labels: { severity: 'warning' } }] }] };
  fs.writeFileSync(path.join(dir, 'stand-in.rules.yaml'), YAML.stringify(testRule));
  const config = {
    global: { scrape_interval: '1s', evaluation_interval: '1s' },
    rule_files: [...ruleFiles, path.join(dir, 'stand-in.rules.yaml')],
    alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
    scrape_configs: [{ job_name: 'stand-in-app', static_configs: [{ targets: [`127.0.0.1:${appPort}`] }] }],
  };
  return startPrometheus(YAML.stringify(config));
}

let dir: string;
let app: Awaited<ReturnType<typeof startStandInApp>>;
let webhook: Awaited<ReturnType<typeof startWebhookReceiver>>;
let am: Proc & { url: string; port: number };
let quietAm: Proc & { url: string; port: number };
let prom: Proc & { url: string };
let amTarget: Target;
let appTarget: Target;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'validate-am-test-'));
  fs.writeFileSync(path.join(dir, 'platform-only.rules.yaml'), YAML.stringify(alertRuleFiles()['platform.rules.yaml']));
  [app, webhook] = await Promise.all([startStandInApp(), startWebhookReceiver()]);
  const urlFile = path.join(dir, 'webhook-url');
  fs.writeFileSync(urlFile, `${webhook.url}\n`); // as the Secret's key is mounted into the pod
  // The Alertmanager Prometheus sends to: ALERT_WEBHOOK_URL set (an http URL that is not Slack's).
  am = await startAlertmanager(deployedAlertmanagerConfig({ ALERT_WEBHOOK_URL: 'http://receiver.example/hook' }, urlFile));
  // One that nothing sends to: no Watchdog there. Without ALERT_WEBHOOK_URL.
  quietAm = await startAlertmanager(deployedAlertmanagerConfig({}, urlFile));
  prom = await prometheusFor(am.port, app.port);
  amTarget = { url: am.url };
  appTarget = { url: app.url };
  // Prometheus' first evaluations and its first send.
  await waitFor(async () => (await activeAlerts(amTarget)).some((a) => a.labels.alertname === 'Watchdog'), 30000, 'Watchdog in Alertmanager').catch(async (err: Error) => {
    // What Prometheus evaluated and where it sends, and what both processes said: why it did not arrive.
    const read = async (url: string) => (await fetch(url).then((r) => r.text()).catch((e: Error) => e.message)).slice(0, 1500);
    throw new Error(
      `${err.message}\nPrometheus alerts: ${await read(`${prom.url}/api/v1/alerts`)}\nPrometheus alertmanagers: ${await read(`${prom.url}/api/v1/alertmanagers`)}\n` +
        `Prometheus output: ${prom.output().slice(-1500)}\nAlertmanager (${am.url}) output: ${am.output().slice(-1500)}`,
    );
  });
});

afterAll(async () => {
  await Promise.all([prom?.stop(), am?.stop(), quietAm?.stop(), app?.close(), webhook?.close()]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('checkWatchdog (real Prometheus → real Alertmanager)', () => {
  it("passes: the repository's Watchdog is active in Alertmanager", async () => {
    await expect(checkWatchdog(amTarget)).resolves.toMatch(/^Watchdog active since \d{4}-\d\d-\d\dT[\d:.]+Z; /);
  });

  it('fails when Watchdog is not there (nothing sends to this Alertmanager), naming what to look at', async () => {
    await expect(checkWatchdog({ url: quietAm.url })).rejects.toThrow(/^Watchdog is not active in Alertmanager \(active: none\): Prometheus does not evaluate alerts\/platform\.rules\.yaml/);
  });

  it('fails when Watchdog is silenced (the check reads what Alertmanager would notify)', async () => {
    const silenced = await startAlertmanager(deployedAlertmanagerConfig({}, '/nonexistent'));
    try {
      const now = Date.now();
      const post = (p: string, body: unknown) => fetch(`${silenced.url}${p}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      const alert = { labels: { alertname: 'Watchdog', severity: 'none' }, startsAt: new Date(now).toISOString(), endsAt: new Date(now + 600000).toISOString() };
      expect((await post('/api/v2/alerts', [alert])).status).toBe(200);
      await expect(checkWatchdog({ url: silenced.url })).resolves.toMatch(/^Watchdog active/);
      const silence = { matchers: [{ name: 'alertname', value: 'Watchdog', isRegex: false, isEqual: true }], startsAt: new Date(now).toISOString(), endsAt: new Date(now + 600000).toISOString(), createdBy: 'test', comment: 'test' };
      expect((await post('/api/v2/silences', silence)).status).toBe(200);
      await expect(checkWatchdog({ url: silenced.url })).rejects.toThrow(/Watchdog is not active in Alertmanager/);
    } finally {
      await silenced.stop();
    }
  });

  it('the test Prometheus resends: Watchdog whose first sends found no Alertmanager (not discovered yet) still arrives within 30 s', async () => {
    // The race a loaded machine can lose: evaluations before the discovery's first update. Here the
    // Alertmanager is named (file_sd) only after Prometheus has Watchdog firing, so its first sends
    // went nowhere; at Prometheus' default resend delay (1m) it would arrive after about a minute.
    const amFile = path.join(dir, 'alertmanagers.json');
    fs.writeFileSync(amFile, '[]');
    const late = await startAlertmanager(deployedAlertmanagerConfig({}, '/nonexistent'));
    const lateProm = await startPrometheus(
      YAML.stringify({
        global: { evaluation_interval: '1s' },
        rule_files: [path.join(dir, 'platform-only.rules.yaml')],
        alerting: { alertmanagers: [{ file_sd_configs: [{ files: [amFile], refresh_interval: '1s' }] }] },
      }),
    );
    try {
      await waitFor(async () => ((await (await fetch(`${lateProm.url}/api/v1/alerts`)).json()) as any).data.alerts.some((a: any) => a.labels.alertname === 'Watchdog' && a.state === 'firing'), 30000, 'Watchdog firing in Prometheus');
      fs.writeFileSync(`${amFile}.tmp`, JSON.stringify([{ targets: [`127.0.0.1:${late.port}`] }]));
      fs.renameSync(`${amFile}.tmp`, amFile);
      await waitFor(async () => (await activeAlerts({ url: late.url })).some((a) => a.labels.alertname === 'Watchdog'), 30000, 'Watchdog in the Alertmanager named late');
    } finally {
      await Promise.all([lateProm.stop(), late.stop()]);
    }
  });

  it('fails when Alertmanager is down (nothing listens), naming the URL', async () => {
    const port = await freePort();
    await expect(checkWatchdog({ url: `http://127.0.0.1:${port}` })).rejects.toThrow(`GET http://127.0.0.1:${port}${ACTIVE_ALERTS_PATH}`);
  });

  it('fails when something else answers on the route (an error page, no alert list)', async () => {
    await expect(checkWatchdog({ url: app.url })).rejects.toThrow(/answered HTTP 404/);
  });
});

describe('measureAlert (validate --alerts): injection → firing → resolved, in the real pair', () => {
  it('measures the seconds to firing and to resolving, and ends the injection', async () => {
    app.calls.length = 0;
    const t = await measureAlert(appTarget, amTarget, { alertname: TEST_ALERT, injectSeconds: 120, fireTimeoutMs: 30000, resolveTimeoutMs: 30000, pollMs: 250 });
    expect(t.firingSeconds).toBeGreaterThan(0);
    expect(t.firingSeconds).toBeLessThan(30);
    expect(t.resolvedSeconds).toBeGreaterThanOrEqual(0);
    expect(t.resolvedSeconds).toBeLessThan(30);
    expect(app.calls).toEqual(['POST /admin/errors?ratio=1&seconds=120', 'DELETE /admin/errors']);
    expect((await activeAlerts(amTarget)).map((a) => a.labels.alertname)).not.toContain(TEST_ALERT);
  });

  it('ALERT_WEBHOOK_URL: the deployed route sends a firing alert to the webhook (URL read from the mounted file); Watchdog stays local', async () => {
    const inject = await fetch(`${app.url}/admin/errors?ratio=1&seconds=60`, { method: 'POST' });
    expect(inject.status).toBe(200);
    try {
      await waitFor(() => webhook.received.some((r) => r.alertname === TEST_ALERT && r.status === 'firing'), 20000, `${TEST_ALERT} at the webhook`);
    } finally {
      await fetch(`${app.url}/admin/errors`, { method: 'DELETE' });
    }
    expect(webhook.received.map((r) => r.alertname)).not.toContain('Watchdog');
  });

  it('ALERT_WEBHOOK_URL of Slack: the deployed config loads and sends Slack messages (attachments) to the URL in the mounted file', async () => {
    const bodies: any[] = [];
    const slack = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        bodies.push(JSON.parse(body));
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((r) => slack.listen(0, '127.0.0.1', () => r()));
    const urlFile = path.join(dir, 'slack-url');
    fs.writeFileSync(urlFile, `http://127.0.0.1:${(slack.address() as net.AddressInfo).port}/services/T000/B000/XXXX\n`);
    const slackAm = await startAlertmanager(deployedAlertmanagerConfig({ ALERT_WEBHOOK_URL: 'https://hooks.slack.com/services/T000/B000/XXXX' }, urlFile));
    try {
      const now = Date.now();
      const alert = { labels: { alertname: TEST_ALERT, severity: 'warning' }, startsAt: new Date(now).toISOString(), endsAt: new Date(now + 600000).toISOString() };
      const post = await fetch(`${slackAm.url}/api/v2/alerts`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify([alert]) });
      expect(post.status).toBe(200);
      await waitFor(() => bodies.length > 0 || undefined, 20000, 'a Slack message');
      expect(bodies[0].attachments[0].title).toContain(TEST_ALERT);
    } finally {
      await slackAm.stop();
      await new Promise<void>((r) => slack.close(() => r()));
    }
  });

  it('an alert that never fires: fails after the timeout and still ends the injection', async () => {
    app.calls.length = 0;
    await expect(
      measureAlert(appTarget, amTarget, { alertname: 'NoSuchAlert', injectSeconds: 60, fireTimeoutMs: 2000, resolveTimeoutMs: 2000, pollMs: 250 }),
    ).rejects.toThrow(/^NoSuchAlert active in Alertmanager after errors were injected: not within 2s/);
    expect(app.calls).toEqual(['POST /admin/errors?ratio=1&seconds=60', 'DELETE /admin/errors']);
  });

  it('an alert already active before the injection: refuses to measure, injects nothing', async () => {
    app.calls.length = 0;
    await expect(measureAlert(appTarget, amTarget, { alertname: 'Watchdog', pollMs: 250 })).rejects.toThrow(/^Watchdog is already active before any injection/);
    expect(app.calls).toEqual([]);
  });

  it('Alertmanager down: fails before injecting anything', async () => {
    app.calls.length = 0;
    const port = await freePort();
    await expect(measureAlert(appTarget, { url: `http://127.0.0.1:${port}` }, { pollMs: 250 })).rejects.toThrow(/ECONNREFUSED/);
    expect(app.calls).toEqual([]);
  });

  it('the app refuses the injection (no such endpoint): fails naming its answer', async () => {
    const port = await freePort();
    const noInjection = http.createServer((_req, res) => res.writeHead(404).end('404 page not found'));
    await new Promise<void>((r) => noInjection.listen(port, '127.0.0.1', () => r()));
    try {
      await expect(measureAlert({ url: `http://127.0.0.1:${port}` }, amTarget, { alertname: 'NoSuchAlert' })).rejects.toThrow(/POST http:\/\/127\.0\.0\.1:\d+\/admin\/errors answered HTTP 404/);
    } finally {
      await new Promise<void>((r) => noInjection.close(() => r()));
    }
  });
});
