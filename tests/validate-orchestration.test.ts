// `task validate` as a whole, with the stand-in tools for kubectl/helm and one real HTTPS server
// standing in for Traefik on HOST_IP:HTTPS_PORT: it presents a certificate signed by the CA in the
// state dir and routes by Host to a stand-in Grafana (with Loki and Tempo behind its datasource proxy), a
// stand-in Prometheus API, a stand-in Alertmanager API, the Traefik dashboard and the app (with the
// error injection of --alerts, which makes the stand-in Alertmanager hold SampleAppErrorRatioHigh). Checks: the order of the check lines,
// the exit code, the diagnostics on failure, and that validate changes nothing in the cluster
// (only `--smoke`'s storage smoke test creates and removes its claim and pod).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readDashboards } from '../scripts/validate.ts';
import { type ToolCall, isMutating, makeSandbox } from './helpers.ts';
import { APP_SELECTOR_LABELS, deployedCluster, deploymentObj, healthyObjects, podObj } from './fixtures/validate/cluster.ts';
import { applyLogQL, type FakeGrafanaOptions, checkLines, grafanaHandler, makeCerts, startHttpsFront, storedTrace, writeValidateState } from './fixtures/validate/servers.ts';

// Each test starts scripts as processes (node + tsx + stand-in tools): room for a loaded CI machine.
vi.setConfig({ testTimeout: 60000 });

const DOMAIN = 'local.test';
const PASSWORD = 'Zx9-random-pw';
const APP_LABELS = { namespace: 'sample-app', container: 'app', node: 'talos-local-worker-1', job: 'sample-app' };
const APP_PODS = ['sample-app-6d4b75cb6d-x7k2p', 'sample-app-6d4b75cb6d-q9w8e'];

let front: Awaited<ReturnType<typeof startHttpsFront>>;
let certs: ReturnType<typeof makeCerts>;
let port: number;
/**
 * What the stand-ins answer; each test sets it. `requests` counts the app's requests marked
 * synthetic="validate" on /, per pod (the stand-in Service sends them round robin); `traced` the
 * trace ids of requests with a traceparent the app continued, after the first `untraced` it did not.
 */
let world: { grafana: FakeGrafanaOptions; down: boolean; probes: string[]; requests: number[]; alerts?: string[]; injections?: string[]; headSeries?: number; traced?: string[]; untraced?: number };

/** Alertmanager's GET /api/v2/alerts answer: the active alerts, SampleAppErrorRatioHigh while errors are injected. */
function alertmanagerAnswer() {
  const names = [...(world.alerts ?? ['Watchdog']), ...(world.injections?.at(-1)?.startsWith('POST') ? ['SampleAppErrorRatioHigh'] : [])];
  return names.map((alertname) => ({ labels: { alertname, severity: 'none' }, status: { state: 'active', silencedBy: [], inhibitedBy: [] }, startsAt: '2026-11-30T04:00:00.000Z' }));
}

/** The stand-in Prometheus: the app's series as Alloy delivers them, per pod. */
function prometheusAnswer(query: string) {
  const vec = (rows: [Record<string, string>, number][]) => ({
    status: 'success',
    data: { resultType: 'vector', result: rows.map(([metric, v]) => ({ metric, value: [Date.now() / 1000, String(v)] })) },
  });
  const perPod = (name: string, route: string, values: number[]) =>
    vec(APP_PODS.map((pod, i): [Record<string, string>, number] => [{ __name__: name, ...APP_LABELS, pod, method: 'GET', route, status: '200', synthetic: 'validate' }, values[i]]).filter(([, v]) => v > 0));
  const marked = /^(http_requests_total|http_request_duration_seconds_count)\{namespace="sample-app",route="([^"]+)",synthetic="validate"\}$/.exec(query);
  if (query === 'up{namespace="sample-app"}') return vec(APP_PODS.map((pod) => [{ __name__: 'up', instance: `10.244.1.5:8080`, ...APP_LABELS, pod }, 1]));
  if (marked?.[2] === '/') return perPod(marked[1], '/', world.requests);
  if (marked?.[2] === '/api/probe') return perPod(marked[1], '/api/probe', [world.probes.length, 0]);
  if (query === 'up == 0') return vec(world.down ? [[{ __name__: 'up', job: 'integrations/kubernetes/kubelet', instance: '10.5.0.3:10250' }, 0]] : []);
  if (query === 'prometheus_tsdb_head_series{job="prometheus"}') return vec([[{ __name__: 'prometheus_tsdb_head_series', job: 'prometheus', namespace: 'monitoring' }, world.headSeries ?? 4211]]);
  if (query === 'count by (job) (up)') return vec([[{ job: 'sample-app' }, 2], [{ job: 'integrations/kubernetes/kubelet' }, 3]]);
  return { status: 'error', errorType: 'bad_data', error: `stand-in Prometheus does not know ${query}` };
}

beforeAll(async () => {
  front = await startHttpsFront('validate-orch-', DOMAIN, (req, res) => {
    const host = req.headers.host ?? '';
    const u = new URL(req.url!, `https://${host}`);
    const json = (status: number, body: unknown) => res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    if (host === `grafana.${DOMAIN}`) return grafanaHandler(world.grafana)(req, res);
    if (host === `prometheus.${DOMAIN}`) {
      if (u.pathname === '/-/ready') return res.writeHead(200).end('Prometheus Server is Ready.\n');
      if (u.pathname === '/api/v1/query') return json(200, prometheusAnswer(u.searchParams.get('query') ?? ''));
    }
    if (host === `alertmanager.${DOMAIN}`) {
      if (u.pathname === '/-/ready') return res.writeHead(200).end('OK');
      if (u.pathname === '/api/v2/alerts' && u.search === '?active=true&silenced=false&inhibited=false') return json(200, alertmanagerAnswer());
    }
    if (host === `traefik.${DOMAIN}` && u.pathname === '/dashboard/') return res.writeHead(200).end('<html>traefik</html>');
    if (host === `app.${DOMAIN}`) {
      const marked = req.headers['x-synthetic'] === 'validate';
      if (u.pathname === '/api/probe') {
        if (marked) world.probes.push(u.searchParams.get('id') ?? '');
        return json(200, { probe_id: u.searchParams.get('id') });
      }
      if (u.pathname === '/') {
        // A request with a traceparent continues its trace: Tempo gets it (the app's spans) and the log line says its trace_id.
        const [, traceId, parentSpanId] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(req.headers.traceparent ?? '')) ?? [];
        if (traceId && world.untraced) world.untraced -= 1;
        else if (traceId) {
          (world.traced ??= []).push(traceId);
          world.grafana.tempo?.traces.set(traceId, storedTrace(traceId, parentSpanId));
        } else if (marked) world.requests[world.requests.reduce((a, b) => a + b, 0) % APP_PODS.length] += 1;
        return json(200, { service: 'sample-app' });
      }
      if (u.pathname === '/healthz') return res.writeHead(200).end('ok\n');
      if (u.pathname === '/admin/errors' && (req.method === 'POST' || req.method === 'DELETE')) {
        (world.injections ??= []).push(`${req.method} ${u.search}`);
        return json(200, req.method === 'POST' ? { ratio: 1, until: new Date(Date.now() + 600000).toISOString() } : { ratio: 0 });
      }
    }
    res.writeHead(404).end('404 page not found\n');
  });
  ({ certs, port } = front);
});

afterAll(() => front.close());

function healthyGrafana(): FakeGrafanaOptions {
  return {
    password: PASSWORD,
    datasources: { prometheus: { ok: true }, loki: { ok: true }, tempo: { ok: true } },
    tempo: { traces: new Map() },
    dashboards: readDashboards().map((d) => d.uid),
    dsQuery: () => 12,
    // Each app pod logged a request a moment ago, and the first one each probe validate sent.
    loki: (query) => {
      const now = () => String(BigInt(Date.now()) * 1_000_000n);
      const line = (route: string, probeId?: string, traceId?: string) =>
        JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'request', route, status: 200, probe_id: probeId, synthetic: 'validate', trace_id: traceId });
      return applyLogQL(query, [
        ...APP_PODS.map((pod, i) => ({
          stream: { ...APP_LABELS, pod },
          values: [
            [now(), line('/')],
            ...(i === 0 ? world.probes.map((id): [string, string] => [now(), line('/api/probe', id)]) : []),
            ...(i === 1 ? (world.traced ?? []).map((id): [string, string] => [now(), line('/', undefined, id)]) : []),
          ] as [string, string][],
        })),
        { stream: { ...APP_LABELS, container: 'traffic', pod: 'sample-app-traffic-7f9c8b6d5-k3j4h' }, values: [[now(), '{"msg":"traffic generator started"}']] },
      ]);
    },
  };
}

function sandboxWithPlatform(objects = healthyObjects()) {
  const sb = makeSandbox();
  deployedCluster(sb, objects);
  writeValidateState(sb.stateDir, certs.ca, PASSWORD);
  return sb;
}

const env = () => ({ DOMAIN, HOST_IP: '127.0.0.1', HTTPS_PORT: String(port) });
const smokeCall = (c: ToolCall) => c.argv.some((a) => a.includes('storage-smoke')) || c.argv.includes('-') /* apply -f - of the smoke manifest */;

describe('task validate (stand-in cluster, HTTPS front with our CA)', () => {
  it('all green: every check in order, freshness printed, exit 0, nothing changed (no smoke test without --smoke)', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40] };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', [], env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const titles = readDashboards().map((d) => `✓ Dashboard "${d.title}": every query runs, panels return data`);
    expect(checkLines(r.stdout)).toEqual([
      '✓ Nodes Ready',
      '✓ Pods Ready in local-path-storage, traefik, monitoring, sample-app',
      '✓ Prometheus and Loki volumes Bound to local-path volumes',
      '✓ Prometheus: writes its TSDB to its volume (prometheus_tsdb_head_series > 0)',
      `✓ Route https://grafana.${DOMAIN}/api/health via 127.0.0.1:${port}`,
      `✓ Route https://prometheus.${DOMAIN}/-/ready via 127.0.0.1:${port}`,
      `✓ Route https://alertmanager.${DOMAIN}/-/ready via 127.0.0.1:${port}`,
      `✓ Route https://traefik.${DOMAIN}/dashboard/ via 127.0.0.1:${port}`,
      `✓ Route https://app.${DOMAIN}/healthz via 127.0.0.1:${port}`,
      '✓ Prometheus: every Ready sample app pod scraped (up == 1) with namespace, pod, container, node, job',
      "✓ Prometheus: validate's requests to the sample app counted",
      '✓ Loki (via Grafana): app container logs of every Ready sample app pod in the last 5 minutes with namespace, pod, container, node',
      "✓ Traces (via Grafana): a request with validate's traceparent → its trace in Tempo (server span of sample-app) and its log line in Loki",
      '✓ Grafana healthy',
      '✓ Grafana datasource "prometheus" healthy',
      '✓ Grafana datasource "loki" healthy',
      '✓ Grafana datasource "tempo" healthy',
      '✓ Grafana has every dashboard of dashboards/',
      ...titles,
      '✓ Freshness: probe request → metric and log line queryable',
      '✓ Alertmanager: Watchdog active (rules → Prometheus → Alertmanager)',
    ]);
    expect(titles.length).toBeGreaterThan(0);
    expect(r.stdout).toContain('Watchdog active since 2026-11-30T04:00:00.000Z; no other alert active');
    expect(r.stdout).toContain('`task validate -- --alerts` also proves that an alert fires');
    expect(world.injections ?? []).toEqual([]);
    expect(r.stdout).toMatch(/Freshness: probe request → metric and log line queryable \(\d+\.\ds\) metric after \d+\.\ds, log line after \d+\.\ds \(probe_id=[0-9a-f-]{36}\); trace after \d+\.\ds \(trace_id=[0-9a-f]{32}\)/);
    expect(world.probes).toHaveLength(1);
    // One traced request; the trace check's line names the trace it found, and the freshness line the same id.
    expect(world.traced).toHaveLength(1);
    expect(r.stdout).toContain(`trace ${world.traced![0]}: 2 spans, server span "GET /" (via datasource proxy /api/v2/traces/); trace after`);
    expect(r.stdout).toContain(`(trace_id=${world.traced![0]})`);
    expect(r.stdout).toMatch(/✓ validate done in .*nothing changed/);
    expect(r.stdout).not.toContain('Diagnostics');
    expect(r.calls.filter(isMutating).map((c) => `${c.tool} ${c.argv.join(' ')}`)).toEqual([]);
    // Nodes, pods, claims, volumes and the app's Deployment: one read for every check.
    expect(r.calls.filter((c) => c.tool === 'kubectl' && c.argv.includes('get') && !c.argv.includes('--raw')).map((c) => c.argv.slice(c.argv.indexOf('get')).join(' '))).toEqual([
      'get nodes,pods,persistentvolumeclaims,persistentvolumes,deployments --all-namespaces -o json',
    ]);
  }, 60000);

  it('--smoke also runs the storage smoke test, whose claim and pod are its only changes', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40] };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--smoke'], env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(checkLines(r.stdout).slice(3, 5)).toEqual(['✓ Storage smoke test (scripts/storage.ts --smoke)', '✓ Prometheus: writes its TSDB to its volume (prometheus_tsdb_head_series > 0)']);
    const mutating = r.calls.filter(isMutating);
    expect(mutating.length).toBeGreaterThan(0); // the smoke test's own claim and pod
    expect(mutating.every(smokeCall), JSON.stringify(mutating)).toBe(true);
  }, 60000);

  it('a volume nobody writes to: Prometheus with an empty head fails the storage check', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40], headSeries: 0 };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--wait', '0'], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('✗ Prometheus: writes its TSDB to its volume (prometheus_tsdb_head_series > 0)');
    expect(r.stdout).toContain('prometheus_tsdb_head_series{job="prometheus"} is 0: Prometheus holds no series');
  }, 60000);

  it('failures: every check still runs, exit 1, diagnostics show unready pods, their events and logs, Alloy errors, down targets', async () => {
    world = {
      grafana: { ...healthyGrafana(), datasources: { prometheus: { ok: true }, loki: { ok: false }, tempo: { ok: true } }, dashboards: readDashboards().slice(1).map((d) => d.uid) },
      down: true,
      probes: [],
      requests: [100, 40],
      alerts: ['KubePodCrashLooping'],
    };
    const objects = [
      ...healthyObjects().filter((o) => o.metadata.name !== 'sample-app-6d4b75cb6d-q9w8e' && !(o.kind === 'Deployment' && o.metadata.name === 'sample-app')),
      deploymentObj('sample-app', 'sample-app', 'localhost:5001/sample-app:3f9a1c2b7d4e', 2, 1, APP_SELECTOR_LABELS, 'app'),
      podObj('sample-app', 'sample-app-6d4b75cb6d-q9w8e', false, APP_SELECTOR_LABELS, {
        // A crash-looping container has run before: kubectl logs shows its last run.
        containerStatuses: [{ name: 'app', state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { exitCode: 1, reason: 'Error' } } }],
      }),
      {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { namespace: 'sample-app', name: 'sample-app-6d4b75cb6d-q9w8e.1' },
        involvedObject: { kind: 'Pod', name: 'sample-app-6d4b75cb6d-q9w8e' },
        type: 'Warning',
        reason: 'BackOff',
        message: 'Back-off restarting failed container app',
      },
    ];
    const sb = sandboxWithPlatform(objects);
    sb.scenario({
      kubectl: {
        logs: {
          'sample-app/sample-app-6d4b75cb6d-q9w8e': '{"level":"error","msg":"bad configuration","error":"FAIL_RATE=\\"2\\" is not allowed"}\n',
          'monitoring/k8s-monitoring-alloy-metrics-0':
            'ts=2026-11-26T06:00:00Z level=info msg="starting"\nts=2026-11-26T06:00:01Z level=error msg="Failed to send batch" component=prometheus.remote_write.metrics err="connection refused"\n',
        },
      },
    });
    const r = await sb.run('validate', ['--wait', '0'], env());
    expect(r.code).toBe(1);
    const lines = checkLines(r.stdout);
    const missing = readDashboards()[0];
    expect(lines).toContain('✗ Pods Ready in local-path-storage, traefik, monitoring, sample-app');
    expect(lines).toContain('✗ Grafana datasource "loki" healthy');
    expect(lines).toContain('✗ Grafana has every dashboard of dashboards/');
    expect(lines).toContain('✓ Freshness: probe request → metric and log line queryable');
    expect(lines.at(-1)).toBe('✗ Alertmanager: Watchdog active (rules → Prometheus → Alertmanager)');
    expect(lines.filter((l) => l.startsWith('✗'))).toHaveLength(4);
    expect(r.stdout).toContain('Watchdog is not active in Alertmanager (active: KubePodCrashLooping)');
    expect(r.stdout).toContain('not Ready: sample-app/sample-app-6d4b75cb6d-q9w8e (Pending; app: CrashLoopBackOff)');
    expect(r.stdout).toContain(`missing in Grafana: ${missing.title} (uid ${missing.uid}, ${missing.file})`);
    // Diagnostics, after the checks.
    const diag = r.stdout.slice(r.stdout.indexOf('Diagnostics:'));
    expect(r.stdout.indexOf('Diagnostics:')).toBeGreaterThan(r.stdout.indexOf('✓ Freshness'));
    expect(diag).toContain('pod sample-app/sample-app-6d4b75cb6d-q9w8e is not Ready (Pending; app: CrashLoopBackOff)');
    expect(diag).toContain('Warning BackOff: Back-off restarting failed container app');
    expect(diag).toContain('FAIL_RATE=\\"2\\" is not allowed');
    expect(diag).toContain('alloy k8s-monitoring-alloy-metrics-0: last error/warning lines:');
    expect(diag).toContain('level=error msg="Failed to send batch"');
    expect(diag).not.toContain('msg="starting"');
    expect(diag).toContain('alloy k8s-monitoring-alloy-logs-abcde: no error or warning lines in the last 300');
    expect(diag).toContain('scrape targets (Alloy → Prometheus): sample-app=2, integrations/kubernetes/kubelet=3');
    expect(diag).toMatch(/targets down:\n\s+\{__name__="up",job="integrations\/kubernetes\/kubelet",instance="10\.5\.0\.3:10250"\}/);
    expect(r.stderr).toContain(
      '✗ validate failed: 4 check(s) failed: Pods Ready in local-path-storage, traefik, monitoring, sample-app; Grafana datasource "loki" healthy; ' +
        'Grafana has every dashboard of dashboards/; Alertmanager: Watchdog active (rules → Prometheus → Alertmanager).',
    );
    expect(r.calls.filter(isMutating)).toEqual([]);
  }, 60000);

  it('nothing answers on HOST_IP:HTTPS_PORT: route, Prometheus, Loki and Grafana checks fail fast; freshness is not measured', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [0, 0] };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--wait=0'], { ...env(), HTTPS_PORT: '1' });
    expect(r.code).toBe(1);
    const lines = checkLines(r.stdout);
    // Nodes, pods and volumes come from the cluster; everything after them needs the routes.
    expect(lines.slice(0, 3).every((l) => l.startsWith('✓'))).toBe(true);
    expect(lines.slice(3).every((l) => l.startsWith('✗'))).toBe(true);
    expect(r.stdout).toContain(`GET https://grafana.${DOMAIN}/api/health (via 127.0.0.1:1): connect ECONNREFUSED 127.0.0.1:1`);
    expect(r.stdout).toContain("not measured: Prometheus: validate's requests to the sample app counted; Loki");
    expect(r.stdout).toContain('scrape targets: Prometheus not reachable');
    expect(world.probes).toEqual([]);
  }, 60000);

  it("an app that does not continue validate's traceparent fails the trace check (waited for, named), and only it; freshness says the trace was not measured", async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40], untraced: Infinity };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--wait', '0'], env());
    expect(r.code).toBe(1);
    const lines = checkLines(r.stdout);
    expect(lines.filter((l) => l.startsWith('✗'))).toEqual([
      "✗ Traces (via Grafana): a request with validate's traceparent → its trace in Tempo (server span of sample-app) and its log line in Loki",
    ]);
    expect(r.stdout).toMatch(/trace ([0-9a-f]{32}) with a server span of sample-app in Tempo: not within 30s \(last error: trace \1 is not in Tempo\)/);
    expect(r.stdout).toMatch(/a log line for \{namespace="sample-app",container="app"\} \|= "\\"trace_id\\":\\"[0-9a-f]{32}\\"" in Loki: not within 30s/);
    expect(r.stdout).toMatch(/✓ Freshness: probe request → metric and log line queryable .*; trace not measured \(the Traces check failed above\)/);
    expect(r.stderr).toContain("1 check(s) failed: Traces (via Grafana): a request with validate's traceparent");
  }, 90000);

  it('--wait: a trace lost on the way is retried with a new trace id, which passes', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40], untraced: 1 };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--wait', '45'], env());
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/› not yet, retrying for up to \d+s: trace [0-9a-f]{32} with a server span of sample-app in Tempo: not within 30s/);
    expect(world.traced).toHaveLength(1);
    expect(r.stdout).toContain(`✓ Traces (via Grafana)`);
    expect(r.stdout).toContain(`trace ${world.traced![0]}: 2 spans`);
  }, 90000);

  it('--wait: a pod that becomes Ready while validate waits passes; the wait is announced once', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40] };
    const late = 'sample-app-6d4b75cb6d-q9w8e';
    const sb = sandboxWithPlatform([
      ...healthyObjects().filter((o) => o.metadata.name !== late),
      podObj('sample-app', late, false, APP_SELECTOR_LABELS, { containerStatuses: [{ name: 'app', state: { waiting: { reason: 'ContainerCreating' } } }] }),
    ]);
    // After 4s the pod turns Ready (written under the stand-ins' lock, as a tool call would).
    const timer = setTimeout(() => {
      const lock = `${sb.fakeState}.lock`;
      for (;;) {
        try {
          fs.mkdirSync(lock);
          break;
        } catch {
          /* a tool call holds it: try again */
        }
      }
      const state = sb.state();
      state.kubectl.objects[`Pod/sample-app/${late}`] = podObj('sample-app', late, true, APP_SELECTOR_LABELS);
      fs.writeFileSync(sb.fakeState, JSON.stringify(state));
      fs.rmSync(lock, { recursive: true });
    }, 4000);
    const r = await sb.run('validate', ['--wait', '60'], env());
    clearTimeout(timer);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/› not yet, retrying for up to \d+s: not Ready: sample-app\/sample-app-6d4b75cb6d-q9w8e \(Pending; app: ContainerCreating\)/);
    expect(r.stdout.match(/not yet, retrying/g)).toHaveLength(1);
    // Seen at the first retry after it turned Ready (every 3 s): each retry reads the cluster afresh,
    // the one read the other checks share is never held over a retry.
    expect(r.stdout).toMatch(/✓ Pods Ready in local-path-storage, traefik, monitoring, sample-app \(([3-9]|1[0-4])\.\ds\) 13 pods Ready/);
  }, 60000);

  it('--alerts: injects errors through the app route, prints the seconds to firing and to resolved, ends the injection', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40], injections: [] };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--alerts'], env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(checkLines(r.stdout).slice(-2)).toEqual([
      '✓ Alertmanager: Watchdog active (rules → Prometheus → Alertmanager)',
      '✓ Alert SampleAppErrorRatioHigh: fires on injected errors, resolves after (--alerts)',
    ]);
    expect(r.stdout).toMatch(/✓ Alert SampleAppErrorRatioHigh: .* active \d+s after the injection, resolved \d+s after it ended/);
    expect(world.injections).toEqual(['POST ?ratio=1&seconds=600', 'DELETE ']);
  }, 60000);

  it('--alerts without Alertmanager: not measured, nothing injected', async () => {
    world = { grafana: healthyGrafana(), down: false, probes: [], requests: [100, 40], alerts: [], injections: [] };
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--alerts', '--wait', '0'], env());
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout).slice(-2)).toEqual([
      '✗ Alertmanager: Watchdog active (rules → Prometheus → Alertmanager)',
      '✗ Alert SampleAppErrorRatioHigh: fires on injected errors, resolves after (--alerts)',
    ]);
    expect(r.stdout).toContain('not measured: the Alertmanager check failed above');
    expect(world.injections).toEqual([]);
  }, 60000);

  it('--wait with a bad value stops before any check', async () => {
    const sb = sandboxWithPlatform();
    const r = await sb.run('validate', ['--wait', 'soon'], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--wait "soon" is not allowed: expected a whole number of seconds, such as --wait 180 (0: every check tries once).');
    expect(checkLines(r.stdout)).toEqual([]);
  });

  it('missing CA certificate: stops before any check and names the task that makes it', async () => {
    const sb = sandboxWithPlatform();
    fs.rmSync(path.join(sb.stateDir, 'certs', 'ca.crt'));
    const r = await sb.run('validate', [], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${path.join(sb.stateDir, 'certs', 'ca.crt')} is missing. Run \`task traefik\` (it generates the certificates).`);
    expect(checkLines(r.stdout)).toEqual([]);
  });

  it('no cluster: says to run task talos', async () => {
    const sb = makeSandbox();
    const r = await sb.run('validate', [], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/No reachable cluster "talos-local" .*Run `task talos` first\./);
  });
});
