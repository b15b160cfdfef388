// validate's Prometheus checks against a REAL Prometheus (/usr/bin/prometheus) scraping the REAL
// sample app process (sample-app/src/server.ts). The fixture's relabel rules attach the Kubernetes
// labels Alloy attaches in the cluster. Failing cases: an app process stopped (target down), a
// label missing, nothing scraped. Freshness runs against the real Prometheus for the metric and a
// stand-in Grafana whose Loki answers with the real app's log lines.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  checkLogs,
  checkRequestMetrics,
  checkTargetsUp,
  counterSum,
  measureFreshness,
  promQuery,
  type Target,
} from '../scripts/validate.ts';
import {
  FIXTURES,
  type FakeGrafana,
  freePort,
  lokiFromAppLogs,
  type Proc,
  startFakeGrafana,
  startPrometheus,
  startSampleApp,
  waitFor,
} from './fixtures/validate/servers.ts';

// Real processes and scrape intervals: give every test room on a loaded CI machine.
vi.setConfig({ testTimeout: 45000 });

let app: Awaited<ReturnType<typeof startSampleApp>>;
let stoppedApp: Awaited<ReturnType<typeof startSampleApp>>;
let prom: Proc & { url: string };
let grafana: FakeGrafana;
let promTarget: Target;
let appTarget: Target;

beforeAll(async () => {
  const [appPort, stoppedPort] = [await freePort(), await freePort()];
  app = await startSampleApp(appPort);
  stoppedApp = await startSampleApp(stoppedPort);
  const config = fs
    .readFileSync(path.join(FIXTURES, 'prometheus.yml'), 'utf8')
    .replaceAll('${APP_TARGET}', `127.0.0.1:${appPort}`)
    .replaceAll('${STOPPED_TARGET}', `127.0.0.1:${stoppedPort}`);
  prom = await startPrometheus(config);
  promTarget = { url: prom.url };
  appTarget = { url: `http://127.0.0.1:${appPort}` };
  grafana = await startFakeGrafana({
    password: 'pw',
    datasources: { loki: { ok: true } },
    loki: lokiFromAppLogs(app.logLines, {
      namespace: 'sample-app',
      pod: 'sample-app-6d4b75cb6d-x7k2p',
      container: 'sample-app',
      node: 'talos-local-worker-1',
    }),
  });
  // Every job has been scraped at least once.
  await waitFor(async () => ((await promQuery(promTarget, 'count(up)'))[0]?.value === 3 ? true : undefined), 20000, 'three scraped targets');
}, 60000);

afterAll(async () => {
  await Promise.all([prom?.stop(), app?.stop(), stoppedApp?.stop(), grafana?.close()]);
});

describe('checkTargetsUp (real Prometheus, real app)', () => {
  it('passes when the app is up and every Kubernetes label is present', async () => {
    const detail = await checkTargetsUp(promTarget);
    expect(detail).toBe('1 targets up (pods sample-app-6d4b75cb6d-x7k2p)');
  });

  it('fails naming the label when a series has no node label', async () => {
    await expect(checkTargetsUp(promTarget, 'namespace="missing-node"')).rejects.toThrow(
      /label node missing on \{.*namespace="missing-node".*\}/,
    );
  });

  it('fails when nothing of the app is scraped', async () => {
    await expect(checkTargetsUp(promTarget, 'namespace="no-such-app"')).rejects.toThrow(/no up\{namespace="no-such-app"\} series/);
  });
});

describe('checkRequestMetrics (real Prometheus, real app)', () => {
  it('passes: http_requests_total exists and grows after requests to the app', async () => {
    const detail = await checkRequestMetrics(promTarget, appTarget, { timeoutMs: 20000, pollMs: 500 });
    const m = /^http_requests_total (\d+) → (\d+) \((\d+) series\)$/.exec(detail);
    expect(m, detail).not.toBeNull();
    expect(Number(m![2])).toBeGreaterThan(Number(m![1]));
  });

  it('fails when the series do not exist', async () => {
    await expect(checkRequestMetrics(promTarget, appTarget, { selector: 'namespace="no-such-app"', timeoutMs: 2000, pollMs: 500 })).rejects.toThrow(
      'no http_requests_total, http_request_duration_seconds_count{namespace="no-such-app"} series in Prometheus within 2s after 5 requests to the app',
    );
  });
});

describe('freshness (real Prometheus and the real app log lines)', () => {
  it('measures seconds until the probe metric and the probe log line are queryable', async () => {
    const f = await measureFreshness(appTarget, promTarget, { url: grafana.url, auth: { user: 'admin', password: 'pw' } }, { timeoutMs: 20000, pollMs: 250 });
    expect(f.metricSeconds).toBeGreaterThan(0);
    expect(f.metricSeconds).toBeLessThan(20);
    expect(f.logSeconds).toBeLessThan(20);
    // The probe really went through: the app logged its id, Prometheus counted it.
    expect(app.logLines().some((l) => l.probe_id === f.id && l.route === '/api/probe')).toBe(true);
    expect((await counterSum(promTarget, 'http_requests_total{namespace="sample-app",route="/api/probe"}')).value).toBeGreaterThanOrEqual(1);
  });

  it('the app logs reach the Loki check with their labels', async () => {
    const detail = await checkLogs({ url: grafana.url, auth: { user: 'admin', password: 'pw' } });
    expect(detail).toMatch(/^\d+ lines in 1 streams \(pods sample-app-6d4b75cb6d-x7k2p\) in the last 5 minutes$/);
  });
});

describe('app stopped', () => {
  it('its target goes down (up == 0) and the checks fail; its request series go stale', async () => {
    await expect(checkTargetsUp(promTarget, 'namespace="stopped-app"')).resolves.toMatch(/1 targets up/);
    await stoppedApp.stop();
    const err = await waitFor(
      () => checkTargetsUp(promTarget, 'namespace="stopped-app"').then(() => undefined, (e: Error) => e),
      15000,
      'the stopped target to be reported down',
    );
    expect(err.message).toMatch(/^target down \(up=0\): \{.*namespace="stopped-app".*pod="stopped-app-5f7c9d8b4-q2w3e".*\}$/);
    await expect(
      checkRequestMetrics(promTarget, { url: `http://127.0.0.1:${stoppedApp.port}` }, { selector: 'namespace="stopped-app"', timeoutMs: 4000, pollMs: 500 }),
    ).rejects.toThrow(/^no http_requests_total, http_request_duration_seconds_count\{namespace="stopped-app"\} series in Prometheus within 4s/);
  }, 40000);
});
