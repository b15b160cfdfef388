// validate's metric and log checks against a REAL Prometheus 3 scraping REAL sample app processes
// (sample-app/src/server.ts): two replicas behind a round-robin front (the Service), the real
// traffic generator calling them all along, and a stand-in Grafana whose Loki answers with the
// processes' real log lines. The fixture's relabel rules attach the Kubernetes labels Alloy
// attaches in the cluster. Every check is shown to fail when the thing it names is broken (each
// `it` says which breakage), and to pass on the healthy pair.
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type AppPods,
  checkLogs,
  checkRequestMetrics,
  checkTargetsUp,
  measureFreshness,
  promQuery,
  REQUEST_CHECK,
  SYNTHETIC_HEADER,
  SYNTHETIC_SOURCE,
  type Target,
} from '../scripts/validate.ts';
import {
  FIXTURES,
  type FakeGrafana,
  freePort,
  lokiFromLogs,
  type Proc,
  startFakeGrafana,
  startPrometheus,
  startRoundRobin,
  startSampleApp,
  startTrafficGenerator,
  waitFor,
} from './fixtures/validate/servers.ts';

// Real processes and scrape intervals: give every test room on a loaded CI machine.
vi.setConfig({ testTimeout: 45000 });

type App = Awaited<ReturnType<typeof startSampleApp>>;
const POD_A = 'sample-app-6d4b75cb6d-x7k2p';
const POD_B = 'sample-app-6d4b75cb6d-q9w8e';
const RESTARTED_POD = 'restarted-app-7c8d9e0f1-r4t5y';
const appLabels = (pod: string, node: string) => ({ namespace: 'sample-app', pod, container: 'app', node, job: 'sample-app' });
const APP: AppPods = { deployment: 'Deployment sample-app/sample-app', readyReplicas: 2, pods: [POD_B, POD_A], container: 'app' };
const PASSWORD = 'pw';

let appA: App;
let appB: App;
let stoppedApp: App;
let restartedApp: App;
/** A sample app process Prometheus does not scrape. */
let unscrapedApp: App;
let front: Awaited<ReturnType<typeof startRoundRobin>>;
let traffic: Proc & { logLines: () => any[] };
let prom: Proc & { url: string };
const grafanas: FakeGrafana[] = [];
let promTarget: Target;
let frontTarget: Target;

/** A stand-in Grafana whose Loki holds the log lines of the given processes, each as its own stream. */
async function grafanaWithLogs(sources: { logLines: () => any[]; labels: Record<string, string> }[]): Promise<Target> {
  const g = await startFakeGrafana({ password: PASSWORD, datasources: { loki: { ok: true } }, loki: lokiFromLogs(sources) });
  grafanas.push(g);
  return { url: g.url, auth: { user: 'admin', password: PASSWORD } };
}
const logsOfA = () => ({ logLines: appA.logLines, labels: appLabels(POD_A, 'talos-local-worker-1') });
const logsOfB = () => ({ logLines: appB.logLines, labels: appLabels(POD_B, 'talos-local-worker-2') });
const logsOfTraffic = () => ({
  logLines: traffic.logLines,
  labels: { namespace: 'sample-app', pod: 'sample-app-traffic-7f9c8b6d5-k3j4h', container: 'traffic', node: 'talos-local-worker-1', job: 'sample-app-traffic' },
});

beforeAll(async () => {
  const ports = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  [appA, appB, stoppedApp, restartedApp, unscrapedApp] = await Promise.all(ports.map((p) => startSampleApp(p)));
  const config = fs
    .readFileSync(path.join(FIXTURES, 'prometheus.yml'), 'utf8')
    .replaceAll('${APP_A}', `127.0.0.1:${appA.port}`)
    .replaceAll('${APP_B}', `127.0.0.1:${appB.port}`)
    .replaceAll('${STOPPED}', `127.0.0.1:${stoppedApp.port}`)
    .replaceAll('${RESTARTED}', `127.0.0.1:${restartedApp.port}`);
  prom = await startPrometheus(config);
  front = await startRoundRobin([appA.port, appB.port]);
  // The generator keeps both replicas busy, on / among others, as it does in the cluster.
  traffic = startTrafficGenerator(front.url);
  promTarget = { url: prom.url };
  frontTarget = { url: front.url };
  // Every job has been scraped at least once, and the generator's requests are in Prometheus.
  await waitFor(async () => ((await promQuery(promTarget, 'count(up)'))[0]?.value === 5 ? true : undefined), 20000, 'five scraped targets');
  await waitFor(
    async () => ((await promQuery(promTarget, 'sum(http_requests_total{namespace="sample-app",synthetic="traffic-generator"})'))[0]?.value ?? 0) > 0 || undefined,
    20000,
    "the traffic generator's requests in Prometheus",
  );
}, 90000);

afterAll(async () => {
  await Promise.all([traffic?.stop(), front?.close(), prom?.stop(), ...[appA, appB, stoppedApp, restartedApp, unscrapedApp].map((a) => a?.stop()), ...grafanas.map((g) => g.close())]);
});

describe('checkTargetsUp: every Ready pod scraped (real Prometheus, real app)', () => {
  it('passes when both ready replicas are up with every Kubernetes label', async () => {
    await expect(checkTargetsUp(promTarget, APP)).resolves.toBe(`2 of 2 ready replicas scraped (pods ${POD_B}, ${POD_A})`);
  });

  it('breakage: a Ready pod Alloy does not scrape fails, naming the pod (the other replica is up)', async () => {
    const third = 'sample-app-6d4b75cb6d-z8x7c';
    await expect(checkTargetsUp(promTarget, { ...APP, readyReplicas: 3, pods: [...APP.pods, third] })).rejects.toThrow(
      `pod ${third} is Ready but has no up{namespace="sample-app"} series: Alloy has not discovered or not scraped it`,
    );
  });

  it('breakage: more ready replicas than Ready pods found fails', async () => {
    await expect(checkTargetsUp(promTarget, { ...APP, readyReplicas: 3 })).rejects.toThrow(
      'Deployment sample-app/sample-app has 3 ready replicas, but only 2 Ready pods match its selector',
    );
  });

  it('breakage: a series without the node label fails, naming the label', async () => {
    await expect(checkTargetsUp(promTarget, { ...APP, readyReplicas: 1, pods: [POD_A] }, 'namespace="missing-node"')).rejects.toThrow(
      /^label node missing on \{.*namespace="missing-node".*\}$/,
    );
  });

  it('breakage: the app process stops: its target goes down (up == 0) and the check says so', async () => {
    const stopped: AppPods = { deployment: 'Deployment stopped-app/stopped-app', readyReplicas: 1, pods: ['stopped-app-5f7c9d8b4-q2w3e'], container: 'app' };
    await expect(checkTargetsUp(promTarget, stopped, 'namespace="stopped-app"')).resolves.toMatch(/^1 of 1 ready replicas scraped/);
    await stoppedApp.stop();
    const err = await waitFor(
      () => checkTargetsUp(promTarget, stopped, 'namespace="stopped-app"').then(() => undefined, (e: Error) => e),
      15000,
      'the stopped target to be reported down',
    );
    expect(err.message).toMatch(/^target down \(up=0\): \{.*namespace="stopped-app".*pod="stopped-app-5f7c9d8b4-q2w3e".*\}$/);
  }, 40000);
});

describe("checkRequestMetrics: validate's own requests counted (real Prometheus, real app, generator running)", () => {
  it('passes: the marked requests reach both replicas through the front and are counted on their route', async () => {
    const detail = await checkRequestMetrics(promTarget, frontTarget, { timeoutMs: 20000, pollMs: 300 });
    const m = /^5 requests to \/ counted: http_requests_total\{route="\/",synthetic="validate"\} \+(\d+) \(pods (.+)\)$/.exec(detail);
    expect(m, detail).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(REQUEST_CHECK.count);
    expect(m![2].split(', ').sort()).toEqual([POD_A, POD_B].sort());
    // The app logged them as validate's.
    const marked = [...appA.logLines(), ...appB.logLines()].filter((l) => l.msg === 'request' && l.synthetic === SYNTHETIC_SOURCE && l.route === '/');
    expect(marked.length).toBeGreaterThanOrEqual(REQUEST_CHECK.count);
  });

  it('breakage (the issue): the app address points at a dead port: fails on the first request, although the counters keep growing', async () => {
    const dead = await freePort();
    const before = (await promQuery(promTarget, 'sum(http_requests_total{namespace="sample-app"})'))[0].value;
    await expect(checkRequestMetrics(promTarget, { url: `http://127.0.0.1:${dead}` }, { timeoutMs: 5000, pollMs: 300 })).rejects.toThrow(
      `request 1 of 5 to the app failed: GET http://127.0.0.1:${dead}/ (via 127.0.0.1:${dead}): connect ECONNREFUSED 127.0.0.1:${dead}`,
    );
    // What made the old check pass: the app's counters grow anyway (generator traffic).
    await waitFor(async () => ((await promQuery(promTarget, 'sum(http_requests_total{namespace="sample-app"})'))[0].value > before) || undefined, 10000, 'the counters to grow');
  });

  it('breakage: the requests are answered by an app Prometheus does not scrape: nothing counted, fails naming the series', async () => {
    await expect(checkRequestMetrics(promTarget, { url: `http://127.0.0.1:${unscrapedApp.port}` }, { timeoutMs: 5000, pollMs: 300 })).rejects.toThrow(
      'http_requests_total{namespace="sample-app",route="/",synthetic="validate"} grew by 0, ' +
        'http_request_duration_seconds_count{namespace="sample-app",route="/",synthetic="validate"} grew by 0 within 5s; validate sent 5 requests to / and each was answered',
    );
    // They did reach that app: it counted them itself.
    const own = await (await fetch(`http://127.0.0.1:${unscrapedApp.port}/metrics`)).text();
    expect(own).toMatch(/^http_requests_total\{method="GET",route="\/",status="200",synthetic="validate"\} 5$/m);
  });

  it('breakage: the route answers 502 (Traefik without a healthy backend): fails naming the status', async () => {
    const gateway = http.createServer((_req, res) => res.writeHead(502, { 'content-type': 'text/plain' }).end('Bad Gateway'));
    await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(gateway.address() as net.AddressInfo).port}`;
    try {
      await expect(checkRequestMetrics(promTarget, { url }, { timeoutMs: 2000 })).rejects.toThrow(`request 1 of 5 to the app: ${url}/ answered HTTP 502: Bad Gateway`);
    } finally {
      await new Promise((r) => gateway.close(r));
    }
  });

  it('probes and scrapes are not counted as requests', async () => {
    const uncounted = await promQuery(promTarget, 'http_requests_total{namespace="sample-app",route=~"/healthz|/readyz|/metrics"}');
    expect(uncounted).toEqual([]);
    expect((await promQuery(promTarget, 'count(up{namespace="sample-app"} == 1)'))[0].value).toBe(2);
  });
});

describe('counter restarts between two readings (a pod restarted) do not fail a healthy platform', () => {
  const selector = 'namespace="restarted-app"';
  const restartedTarget = () => ({ url: `http://127.0.0.1:${restartedApp.port}` });
  /** Sends marked requests, waits until Prometheus shows them, then restarts the process right after that scrape. */
  async function restartAfterScrape(pathAndQuery: string, metric: string, count: number) {
    for (let i = 0; i < count; i++) await fetch(`${restartedTarget().url}${pathAndQuery}`, { headers: { [SYNTHETIC_HEADER]: SYNTHETIC_SOURCE } });
    await waitFor(async () => ((await promQuery(promTarget, `sum(${metric})`))[0]?.value ?? 0) >= count || undefined, 25000, `${metric} at ${count}`);
    await restartedApp.stop();
    restartedApp = await startSampleApp(restartedApp.port);
  }

  it('request check: the counter falls from 20 to 5 on the same pod and the check passes, saying so', async () => {
    const metric = `http_requests_total{${selector},route="/",synthetic="validate"}`;
    await restartAfterScrape('/', metric, 20);
    const detail = await checkRequestMetrics(promTarget, restartedTarget(), { selector, timeoutMs: 25000, pollMs: 300 });
    expect(detail).toBe(`5 requests to / counted: http_requests_total{route="/",synthetic="validate"} +5 (pods ${RESTARTED_POD}); counter restarted on ${RESTARTED_POD}`);
  }, 60000);

  it('freshness: the probe counter falls from 3 to 1 and the probe is still measured', async () => {
    const metric = `http_requests_total{${selector},route="/api/probe",synthetic="validate"}`;
    await restartAfterScrape('/api/probe?id=warm-up', metric, 3);
    const grafana = await grafanaWithLogs([{ logLines: () => restartedApp.logLines(), labels: { namespace: 'restarted-app', pod: RESTARTED_POD, container: 'app', node: 'n' } }]);
    const pods: AppPods = { deployment: 'Deployment restarted-app/restarted-app', readyReplicas: 1, pods: [RESTARTED_POD], container: 'app' };
    const f = await measureFreshness(restartedTarget(), promTarget, grafana, pods, { selector, timeoutMs: 25000, pollMs: 250 });
    expect(f.metricSeconds).toBeGreaterThan(0);
    expect((await promQuery(promTarget, `sum(${metric})`))[0].value).toBe(1);
  }, 60000);
});

describe('checkLogs: app container lines of every Ready pod (stand-in Loki holding the real processes\' lines)', () => {
  it('passes when both replicas\' lines (and the generator\'s) are in Loki', async () => {
    const g = await grafanaWithLogs([logsOfA(), logsOfB(), logsOfTraffic()]);
    await expect(checkLogs(g, APP)).resolves.toMatch(new RegExp(`^lines of container app from every Ready pod in the last 5 minutes: ${POD_B} \\d+, ${POD_A} \\d+$`));
  });

  it("breakage: only the traffic generator's lines reach Loki: fails for each app pod", async () => {
    const g = await grafanaWithLogs([logsOfTraffic()]);
    await expect(checkLogs(g, APP)).rejects.toThrow(
      `no log lines of {namespace="sample-app",container="app"} from pod ${POD_B} in Loki in the last 5 minutes; ` +
        `no log lines of {namespace="sample-app",container="app"} from pod ${POD_A} in Loki in the last 5 minutes`,
    );
  });

  it("breakage: one replica's lines are missing: fails naming that pod only", async () => {
    const g = await grafanaWithLogs([logsOfA(), logsOfTraffic()]);
    await expect(checkLogs(g, APP)).rejects.toThrow(new RegExp(`^no log lines of \\{namespace="sample-app",container="app"\\} from pod ${POD_B} in Loki in the last 5 minutes$`));
  });

  it('breakage: a stream without the node label fails naming it', async () => {
    const { node: _node, ...noNode } = appLabels(POD_A, 'x');
    const g = await grafanaWithLogs([{ logLines: appA.logLines, labels: noNode }, logsOfB()]);
    await expect(checkLogs(g, APP)).rejects.toThrow(/^label node missing on stream \{namespace="sample-app",pod="sample-app-6d4b75cb6d-x7k2p",container="app",job="sample-app"\}$/);
  });
});

describe('freshness (real Prometheus, the real app log lines)', () => {
  it('measures seconds until the marked probe is counted and its app log line is queryable', async () => {
    const g = await grafanaWithLogs([logsOfA(), logsOfB(), logsOfTraffic()]);
    const f = await measureFreshness(frontTarget, promTarget, g, APP, { timeoutMs: 20000, pollMs: 250 });
    expect(f.metricSeconds).toBeGreaterThan(0);
    expect(f.metricSeconds).toBeLessThan(20);
    expect(f.logSeconds).toBeLessThan(20);
    const line = [...appA.logLines(), ...appB.logLines()].find((l) => l.probe_id === f.id);
    expect(line).toMatchObject({ route: '/api/probe', status: 200, synthetic: 'validate' });
  });

  it("breakage: the probe's log line never reaches Loki: fails naming the query", async () => {
    const g = await grafanaWithLogs([logsOfTraffic()]);
    await expect(measureFreshness(frontTarget, promTarget, g, APP, { timeoutMs: 3000, pollMs: 250 })).rejects.toThrow(
      /^no log line for \{namespace="sample-app",container="app"\} \|= "[0-9a-f-]{36}": not within 3s$/,
    );
  });

  it('breakage: the probe goes to an app Prometheus does not scrape: the metric never grows', async () => {
    const g = await grafanaWithLogs([{ logLines: unscrapedApp.logLines, labels: appLabels(POD_A, 'n') }]);
    await expect(measureFreshness({ url: `http://127.0.0.1:${unscrapedApp.port}` }, promTarget, g, APP, { timeoutMs: 3000, pollMs: 250 })).rejects.toThrow(
      'http_requests_total{namespace="sample-app",route="/api/probe",synthetic="validate"} did not grow: not within 3s',
    );
  });
});
