// validate's pure checks: cluster state from kubectl JSON (table-driven), dashboards parsing, the
// Loki and Grafana checks against a stand-in Grafana that answers the documented shapes of its API
// (with failures: empty result, datasource unhealthy, dashboard missing, wrong password), and the
// route check against a real HTTPS server with certificates made by openssl.
import fs from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkDashboardData,
  checkDashboardsPresent,
  checkDatasourceHealth,
  checkGrafanaHealth,
  checkLogs,
  checkNodes,
  checkPods,
  checkRoute,
  checkVolumes,
  VOLUME_CLASS,
  appPods,
  counterIncrease,
  framesRows,
  framesToStreams,
  parseDashboard,
  readDashboards,
  substituteVariables,
  ROUTES,
  parseWait,
  APP_DEPLOYMENT,
  APP_NAMESPACE,
  REQUEST_CHECK,
  SYNTHETIC_HEADER,
  SYNTHETIC_SOURCE,
  type AppPods,
  type DashboardFile,
  type Target,
} from '../scripts/validate.ts';
import YAML from 'yaml';
import { STORAGE_CLASS } from '../scripts/storage.ts';
import { INGRESS_HOSTS, PROJECT_DIR } from '../scripts/lib.ts';
import { applyLogQL, type FakeGrafana, type FakeGrafanaOptions, makeCerts, startFakeGrafana } from './fixtures/validate/servers.ts';

const ready = (ok: boolean, extra: Record<string, unknown> = {}) => ({ conditions: [{ type: 'Ready', status: ok ? 'True' : 'False', reason: ok ? 'KubeletReady' : 'KubeletNotReady' }], ...extra });
const pod = (ns: string, name: string, ok: boolean, status: Record<string, unknown> = {}) => ({
  metadata: { namespace: ns, name },
  status: { phase: ok ? 'Running' : 'Pending', ...ready(ok), ...status },
});
const allNs = ['local-path-storage', 'traefik', 'monitoring', 'sample-app'].map((ns) => pod(ns, `${ns}-a`, true));

describe('cluster state checks', () => {
  it.each([
    { name: 'all nodes ready', nodes: [{ metadata: { name: 'cp' }, status: ready(true) }, { metadata: { name: 'w1' }, status: ready(true) }], want: '2 nodes Ready' },
    { name: 'one not ready', nodes: [{ metadata: { name: 'cp' }, status: ready(true) }, { metadata: { name: 'w1' }, status: ready(false) }], err: 'not Ready: w1 (KubeletNotReady)' },
    { name: 'no condition', nodes: [{ metadata: { name: 'w2' }, status: {} }], err: 'not Ready: w2 (no Ready condition)' },
    { name: 'no nodes', nodes: [], err: 'the cluster has no nodes' },
  ])('nodes: $name', ({ nodes, want, err }) => {
    if (err) expect(() => checkNodes(nodes)).toThrow(err);
    else expect(checkNodes(nodes)).toBe(want);
  });

  it.each([
    { name: 'all ready', pods: allNs, want: '4 pods Ready in local-path-storage, traefik, monitoring, sample-app' },
    {
      name: 'finished job pods and other namespaces do not count',
      pods: [...allNs, { metadata: { namespace: 'monitoring', name: 'job-x' }, status: { phase: 'Succeeded', ...ready(false) } }, pod('kube-system', 'coredns', false)],
      want: '4 pods Ready in local-path-storage, traefik, monitoring, sample-app',
    },
    {
      name: 'unready pod with its reason',
      pods: [...allNs, pod('sample-app', 'sample-app-1', false, { containerStatuses: [{ name: 'app', state: { waiting: { reason: 'ImagePullBackOff' } } }] })],
      err: 'not Ready: sample-app/sample-app-1 (Pending; app: ImagePullBackOff)',
    },
    { name: 'empty namespace', pods: allNs.slice(0, 3), err: 'no pods in namespace sample-app' },
  ])('pods: $name', ({ pods, want, err }) => {
    if (err) expect(() => checkPods(pods)).toThrow(err);
    else expect(checkPods(pods)).toBe(want);
  });

  const pvc = (name: string, phase?: string, namespace = 'monitoring') => ({
    metadata: { namespace, name },
    spec: { storageClassName: 'local-path', volumeName: `pvc-${name}` },
    status: phase ? { phase, capacity: { storage: '5Gi' } } : undefined,
  });
  const pv = (claim: string, storageClassName = 'local-path', claimNamespace = 'monitoring') => ({
    metadata: { name: `pvc-${claim}` },
    spec: { storageClassName, claimRef: { namespace: claimNamespace, name: claim } },
    status: { phase: 'Bound' },
  });
  const bothPvs = [pv('prometheus-server'), pv('storage-loki-0')];
  it.each([
    { name: 'both bound', pvcs: [pvc('prometheus-server', 'Bound'), pvc('storage-loki-0', 'Bound')], pvs: bothPvs, want: 'Bound: prometheus-server 5Gi, storage-loki-0 5Gi' },
    { name: 'loki pending', pvcs: [pvc('prometheus-server', 'Bound'), pvc('storage-loki-0', 'Pending')], pvs: bothPvs, err: 'monitoring/storage-loki-0 is Pending' },
    { name: 'prometheus missing', pvcs: [pvc('storage-loki-0', 'Bound')], pvs: bothPvs, err: 'no PersistentVolumeClaim for prometheus' },
    { name: 'a claim in another namespace does not count', pvcs: [pvc('prometheus-server', 'Bound', 'default'), pvc('storage-loki-0', 'Bound')], pvs: bothPvs, err: 'no PersistentVolumeClaim for prometheus' },
    { name: 'its volume is gone', pvcs: [pvc('prometheus-server', 'Bound'), pvc('storage-loki-0', 'Bound')], pvs: [pv('storage-loki-0')], err: 'monitoring/prometheus-server is Bound to PersistentVolume "pvc-prometheus-server", which does not exist' },
    { name: 'volume of another class', pvcs: [pvc('prometheus-server', 'Bound'), pvc('storage-loki-0', 'Bound')], pvs: [pv('prometheus-server'), pv('storage-loki-0', 'hostpath')], err: 'monitoring/storage-loki-0 is on PersistentVolume pvc-storage-loki-0 of StorageClass "hostpath", not local-path' },
    { name: 'volume claimed by another claim', pvcs: [pvc('prometheus-server', 'Bound'), pvc('storage-loki-0', 'Bound')], pvs: [pv('prometheus-server', 'local-path', 'default'), pv('storage-loki-0')], err: 'PersistentVolume pvc-prometheus-server is claimed by default/prometheus-server, not monitoring/prometheus-server' },
  ])('volumes: $name', ({ pvcs, pvs, want, err }) => {
    if (err) expect(() => checkVolumes(pvcs, pvs)).toThrow(err);
    else expect(checkVolumes(pvcs, pvs)).toBe(want);
  });
  it('the volumes class is the storage phase\'s', () => expect(VOLUME_CLASS).toBe(STORAGE_CLASS));
});

describe('appPods: the Ready pods of the app Deployment', () => {
  const selector = { 'app.kubernetes.io/name': 'sample-app', 'app.kubernetes.io/component': 'app' };
  const deployment = (readyReplicas?: number) => ({
    metadata: { namespace: 'sample-app', name: 'sample-app' },
    spec: { selector: { matchLabels: selector }, template: { spec: { containers: [{ name: 'app' }] } } },
    status: readyReplicas === undefined ? {} : { readyReplicas },
  });
  const appPod = (name: string, ok: boolean, extra: Record<string, unknown> = {}) => ({ ...pod('sample-app', name, ok), metadata: { namespace: 'sample-app', name, labels: selector, ...extra } });
  const generator = { ...pod('sample-app', 'sample-app-traffic-1', true), metadata: { namespace: 'sample-app', name: 'sample-app-traffic-1', labels: { 'app.kubernetes.io/name': 'sample-app-traffic', 'app.kubernetes.io/component': 'traffic' } } };
  it.each([
    { name: 'two Ready replicas; the generator is not an app pod', ready: 2, pods: [appPod('b', true), appPod('a', true), generator], want: { readyReplicas: 2, pods: ['a', 'b'] } },
    { name: 'an unready pod is left out', ready: 1, pods: [appPod('a', true), appPod('b', false)], want: { readyReplicas: 1, pods: ['a'] } },
    { name: 'a terminating pod is left out', ready: 2, pods: [appPod('a', true), appPod('old', true, { deletionTimestamp: '2026-11-26T06:00:00Z' })], want: { readyReplicas: 2, pods: ['a'] } },
    { name: 'no ready replicas', ready: undefined, pods: [appPod('a', false)], err: 'Deployment sample-app/sample-app has no Ready pods (readyReplicas 0, 0 Ready pods match its selector)' },
    { name: 'only the generator', ready: 2, pods: [generator], err: 'Deployment sample-app/sample-app has no Ready pods (readyReplicas 2, 0 Ready pods match its selector)' },
  ])('$name', ({ ready, pods, want, err }) => {
    if (err) expect(() => appPods(deployment(ready), pods)).toThrow(err);
    else expect(appPods(deployment(ready), pods)).toEqual({ deployment: 'Deployment sample-app/sample-app', container: 'app', ...want });
  });
  it('refuses a Deployment without a selector', () => {
    expect(() => appPods({ metadata: { namespace: 'sample-app', name: 'x' }, spec: {} }, [])).toThrow('Deployment sample-app/x has no spec.selector.matchLabels or no container');
  });
});

describe('counterIncrease: series by series, restarts count from 0', () => {
  const s = (pod: string, value: number, extra: Record<string, string> = {}) => ({ metric: { __name__: 'http_requests_total', pod, route: '/', ...extra }, value });
  it.each([
    { name: 'both pods grow', before: [s('a', 10), s('b', 4)], after: [s('a', 13), s('b', 6)], want: { increase: 5, restarted: [] } },
    { name: 'no change', before: [s('a', 10)], after: [s('a', 10)], want: { increase: 0, restarted: [] } },
    { name: 'a new series counts from 0 (first request, or a new pod)', before: [s('a', 10)], after: [s('a', 10), s('c', 3)], want: { increase: 3, restarted: [] } },
    { name: 'a restarted container: the value fell, counted from 0', before: [s('a', 20), s('b', 4)], after: [s('a', 5), s('b', 4)], want: { increase: 5, restarted: ['a'] } },
    { name: 'a pod gone (its series stale) counts nothing', before: [s('a', 20), s('b', 4)], after: [s('b', 6)], want: { increase: 2, restarted: [] } },
    { name: 'series told apart by every label, not by pod alone', before: [s('a', 9, { status: '500' })], after: [s('a', 9, { status: '500' }), s('a', 2, { status: '200' })], want: { increase: 2, restarted: [] } },
    { name: 'nothing before or after', before: [], after: [], want: { increase: 0, restarted: [] } },
  ])('$name', ({ before, after, want }) => {
    expect(counterIncrease(before, after)).toEqual(want);
  });
});

describe('dashboards', () => {
  it.each([
    ['rate(http_requests_total{namespace=~"$namespace"}[$__rate_interval])', 'rate(http_requests_total{namespace=~"sample-app"}[2m])'],
    ['sum by (route) (rate(x{pod=~"${pod:regex}"}[${__rate_interval}]))', 'sum by (route) (rate(x{pod=~".+"}[2m]))'],
    ['{namespace="[[namespace]]"} |= "error"', '{namespace="sample-app"} |= "error"'],
    ['up', 'up'],
  ])('substituteVariables(%s)', (expr, want) => {
    expect(substituteVariables(expr, { namespace: 'sample-app' })).toBe(want);
  });

  const dashboard = {
    uid: 'red',
    title: 'RED',
    templating: {
      list: [
        { name: 'datasource', type: 'datasource', query: 'prometheus' },
        { name: 'logs', type: 'datasource', query: 'loki' },
        { name: 'namespace', type: 'query', current: { value: 'sample-app' } },
        { name: 'pod', type: 'query', current: { value: ['$__all'] } },
      ],
    },
    panels: [
      { id: 1, title: 'Rate', datasource: { type: 'prometheus', uid: '${datasource}' }, targets: [{ refId: 'A', expr: 'sum(rate(http_requests_total{namespace="$namespace",pod=~"$pod"}[$__rate_interval]))' }] },
      {
        id: 2,
        type: 'row',
        title: 'Logs row',
        collapsed: true,
        panels: [{ id: 3, title: 'Logs', datasource: { uid: '$logs' }, targets: [{ refId: 'A', expr: '{namespace="$namespace"}' }] }],
      },
      { id: 4, title: 'Hidden', datasource: { type: 'prometheus', uid: '${datasource}' }, targets: [{ refId: 'A', expr: 'up', hide: true }] },
      { id: 5, title: 'Text', type: 'text' },
    ],
  };

  it('parseDashboard resolves datasource variables to uids, walks rows, substitutes variables', () => {
    expect(parseDashboard('red.json', dashboard)).toEqual({
      file: 'red.json',
      uid: 'red',
      title: 'RED',
      queries: [
        { refId: 'A', datasource: { type: 'prometheus', uid: 'prometheus' }, expr: 'sum(rate(http_requests_total{namespace="sample-app",pod=~".+"}[2m]))', panel: 'Rate' },
        { refId: 'A', datasource: { type: 'loki', uid: 'loki' }, expr: '{namespace="sample-app"}', panel: 'Logs' },
      ],
    });
  });

  it('parseDashboard refuses a dashboard without uid', () => {
    expect(() => parseDashboard('x.json', { title: 'x' })).toThrow('x.json has no uid');
  });

  it('every dashboards/*.json of the repository parses, has a uid and at least one query', () => {
    const all = readDashboards();
    expect(all.length).toBeGreaterThan(0);
    for (const d of all) expect(d.queries.length, d.file).toBeGreaterThan(0);
    expect(new Set(all.map((d) => d.uid)).size).toBe(all.length);
  });

  it('framesToStreams: dataplane log frames (labels as JSON text, timestamp/body fields) group by label set', () => {
    const frame = {
      schema: { fields: [{ name: 'labels' }, { name: 'timestamp' }, { name: 'body' }] },
      data: { values: [['{"pod":"a"}', '{"pod":"b"}', '{"pod":"a"}'], [1000, 2000, 3000], ['l1', 'l2', 'l3']] },
    };
    expect(framesToStreams([frame])).toEqual([
      { stream: { pod: 'a' }, values: [['1000000000', 'l1'], ['3000000000', 'l3']] },
      { stream: { pod: 'b' }, values: [['2000000000', 'l2']] },
    ]);
    expect(framesToStreams([{ schema: { fields: [] }, data: { values: [] } }])).toEqual([]);
  });

  it.each([
    [{ frames: [{ data: { values: [[1, 2, 3], [4, 5, 6]] } }] }, { rows: 3 }],
    [{ frames: [{ schema: {}, data: { values: [[], []] } }] }, { rows: 0 }],
    [{ frames: [] }, { rows: 0 }],
    [{ error: 'bad_data: parse error', status: 400 }, { rows: 0, error: 'bad_data: parse error' }],
    [undefined, { rows: 0, error: 'no result' }],
  ])('framesRows(%j)', (result, want) => {
    expect(framesRows(result)).toEqual(want);
  });
});

describe('Grafana and Loki checks (stand-in Grafana answering the API shapes)', () => {
  const servers: FakeGrafana[] = [];
  const base: FakeGrafanaOptions = {
    password: 's3cret',
    datasources: { prometheus: { ok: true, message: 'Successfully queried the Prometheus API.' }, loki: { ok: true, message: 'Data source successfully connected.' } },
    dashboards: ['red', 'logs'],
  };
  const grafana = async (over: Partial<FakeGrafanaOptions> = {}, password = 's3cret'): Promise<Target & { server: FakeGrafana }> => {
    const server = await startFakeGrafana({ ...base, ...over });
    servers.push(server);
    return { url: server.url, auth: { user: 'admin', password }, server };
  };
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  const labels = { namespace: 'sample-app', pod: 'sample-app-6d4-x', container: 'app', node: 'talos-local-worker-1', job: 'sample-app' };
  const podY = { ...labels, pod: 'sample-app-6d4-y', node: 'talos-local-worker-2' };
  const app: AppPods = { deployment: 'Deployment sample-app/sample-app', readyReplicas: 2, pods: ['sample-app-6d4-x', 'sample-app-6d4-y'], container: 'app' };
  const nowNs = () => String(BigInt(Date.now()) * 1_000_000n);
  const line = '{"time":"2026-11-26T06:00:00.000Z","level":"info","msg":"request","method":"GET","route":"/","status":200,"duration_ms":1.2}';
  /** Loki holding these streams, answering each query as Loki would (tests/fixtures/validate/servers.ts applyLogQL). */
  const lokiOf = (...streams: { stream: Record<string, string>; values: [string, string][] }[]) => (query: string) => applyLogQL(query, streams);

  it('logs: passes with lines of every pod and every label, one query per pod through the datasource proxy', async () => {
    const g = await grafana({ loki: lokiOf({ stream: labels, values: [[nowNs(), line], [nowNs(), line]] }, { stream: podY, values: [[nowNs(), line]] }) });
    await expect(checkLogs(g, app)).resolves.toBe('lines of container app from every Ready pod in the last 5 minutes: sample-app-6d4-x 2, sample-app-6d4-y 1');
    const queries = g.server.requests.filter((r) => r.url.includes('query_range')).map((r) => new URL(r.url, 'http://x'));
    expect(queries.map((u) => u.pathname)).toEqual(Array(2).fill('/api/datasources/proxy/uid/loki/loki/api/v1/query_range'));
    expect(queries.map((u) => u.searchParams.get('query'))).toEqual([
      '{namespace="sample-app",container="app"} | pod="sample-app-6d4-x"',
      '{namespace="sample-app",container="app"} | pod="sample-app-6d4-y"',
    ]);
    const span = BigInt(queries[0].searchParams.get('end')!) - BigInt(queries[0].searchParams.get('start')!);
    expect(span).toBe(300n * 1_000_000_000n);
  });

  it('logs: when Grafana does not proxy to Loki, the same queries go through /api/ds/query log frames', async () => {
    const g = await grafana({ lokiProxy: false, loki: lokiOf({ stream: labels, values: [[nowNs(), line]] }, { stream: podY, values: [[nowNs(), line], [nowNs(), line]] }) });
    await expect(checkLogs(g, app)).resolves.toBe('lines of container app from every Ready pod in the last 5 minutes: sample-app-6d4-x 1, sample-app-6d4-y 2');
    const post = g.server.requests.find((r) => r.url === '/api/ds/query')!;
    expect(post.body.queries[0]).toEqual({
      refId: 'A', datasource: { type: 'loki', uid: 'loki' }, expr: '{namespace="sample-app",container="app"} | pod="sample-app-6d4-x"', queryType: 'range', maxLines: 100,
    });
    expect(Number(post.body.to) - Number(post.body.from)).toBe(300000);
  });

  it('logs: proxy refused and /api/ds/query failing: both answers in the message', async () => {
    const g = await grafana({ lokiProxy: false, dsQuery: () => ({ error: 'parse error at line 1, col 2' }) });
    await expect(checkLogs(g, app)).rejects.toThrow(
      'Loki query {namespace="sample-app",container="app"} | pod="sample-app-6d4-x": the datasource proxy answered HTTP 404 ({"message":"Not found"}) and /api/ds/query HTTP 400 (parse error at line 1, col 2)',
    );
  });

  it.each([
    ['empty Loki', [], ['sample-app-6d4-x', 'sample-app-6d4-y']],
    ["only the traffic generator's container", [{ stream: { ...labels, container: 'traffic', pod: 'sample-app-traffic-1' }, values: [[nowNs(), line]] }], ['sample-app-6d4-x', 'sample-app-6d4-y']],
    ['one replica silent', [{ stream: labels, values: [[nowNs(), line]] }], ['sample-app-6d4-y']],
    ['lines of the app container in another namespace', [{ stream: { ...labels, namespace: 'default' }, values: [[nowNs(), line]] }, { stream: podY, values: [[nowNs(), line]] }], ['sample-app-6d4-x']],
  ] as const)('logs: %s fails naming each pod without lines', async (_name, streams, silent) => {
    for (const lokiProxy of [true, false]) {
      const g = await grafana({ lokiProxy, loki: lokiOf(...(streams as any)) });
      await expect(checkLogs(g, app)).rejects.toThrow(
        silent.map((p) => `no log lines of {namespace="sample-app",container="app"} from pod ${p} in Loki in the last 5 minutes`).join('; '),
      );
    }
  });

  it('logs: a Loki that ignores the pod filter cannot pass a silent pod off with another pod\'s lines', async () => {
    const g = await grafana({ loki: () => [{ stream: labels, values: [[nowNs(), line]] }] });
    await expect(checkLogs(g, app)).rejects.toThrow(/^no log lines of \{namespace="sample-app",container="app"\} from pod sample-app-6d4-y in Loki/);
  });

  it('logs: a stream without the node label fails naming it', async () => {
    const { node: _node, ...noNode } = labels;
    const g = await grafana({ loki: lokiOf({ stream: noNode, values: [[nowNs(), line]] }, { stream: podY, values: [[nowNs(), line]] }) });
    await expect(checkLogs(g, app)).rejects.toThrow(/^label node missing on stream \{namespace="sample-app",pod="sample-app-6d4-x",container="app",job="sample-app"\}$/);
  });

  it('logs: wrong admin password fails with Grafana\'s answer', async () => {
    const g = await grafana({ loki: lokiOf({ stream: labels, values: [[nowNs(), line]] }) }, 'wrong');
    await expect(checkLogs(g, app)).rejects.toThrow(/answered HTTP 401: .*Invalid username or password/);
  });

  it('health: ok and failing database', async () => {
    await expect(checkGrafanaHealth(await grafana())).resolves.toBe('database ok, version 12.1.1');
    await expect(checkGrafanaHealth(await grafana({ database: 'failing' }))).rejects.toThrow(/\/api\/health answered HTTP 503/);
  });

  it('datasource health: OK, unhealthy (400 ERROR) and unknown uid', async () => {
    const g = await grafana({ datasources: { prometheus: { ok: true, message: 'Successfully queried the Prometheus API.' }, loki: { ok: false } } });
    await expect(checkDatasourceHealth(g, 'prometheus')).resolves.toBe('Successfully queried the Prometheus API.');
    await expect(checkDatasourceHealth(g, 'loki')).rejects.toThrow('datasource loki: HTTP 400 ERROR Post "http://loki.monitoring.svc:3100/loki/api/v1/query": dial tcp: connection refused');
    await expect(checkDatasourceHealth(g, 'tempo')).rejects.toThrow('datasource tempo: HTTP 404 Data source not found');
  });

  const dash = (uid: string, exprs: string[]): DashboardFile => ({
    file: `${uid}.json`,
    uid,
    title: uid.toUpperCase(),
    queries: exprs.map((expr, i) => ({ refId: 'A', datasource: { type: 'prometheus', uid: 'prometheus' }, expr, panel: `p${i}` })),
  });

  it('dashboards present: passes, and fails naming the missing one', async () => {
    const g = await grafana();
    await expect(checkDashboardsPresent(g, [dash('red', ['up']), dash('logs', ['up'])])).resolves.toBe('2 dashboards: RED, LOGS');
    await expect(checkDashboardsPresent(g, [dash('red', ['up']), dash('cluster', ['up'])])).rejects.toThrow('missing in Grafana: CLUSTER (uid cluster, cluster.json)');
    await expect(checkDashboardsPresent(g, [])).rejects.toThrow('no dashboards/*.json in the repository');
  });

  it('dashboard data: every query runs; passes when a panel has data, counting panels; /api/ds/query gets the documented request', async () => {
    const g = await grafana({ dsQuery: (expr) => (expr === 'b' ? 7 : 0) });
    await expect(checkDashboardData(g, dash('red', ['a', 'b', 'c']))).resolves.toBe('1 of 3 panels returned data, all 3 queries ran');
    const posts = g.server.requests.filter((r) => r.url === '/api/ds/query');
    expect(posts.map((p) => p.body.queries[0].expr)).toEqual(['a', 'b', 'c']);
    expect(posts[1].body).toMatchObject({ from: 'now-15m', to: 'now', queries: [{ refId: 'A', datasource: { type: 'prometheus', uid: 'prometheus' }, expr: 'b', range: true }] });
  });

  it('dashboard data: a broken query fails even when another panel has data', async () => {
    const g = await grafana({ dsQuery: (expr) => (expr === 'bad(' ? { error: 'bad_data: 1:5: parse error: unclosed left parenthesis' } : 5) });
    await expect(checkDashboardData(g, dash('red', ['a', 'bad(']))).rejects.toThrow(
      '1 of 2 queries failed: "p1" (A): bad_data: 1:5: parse error: unclosed left parenthesis',
    );
  });

  it('dashboard data: no panel with data fails', async () => {
    const g = await grafana({ dsQuery: () => 0 });
    await expect(checkDashboardData(g, dash('red', ['a', 'b']))).rejects.toThrow('none of 2 panels returned data (2 queries, no errors)');
  });

  it('dashboard data: a Loki query is sent as a range log query', async () => {
    const g = await grafana({ dsQuery: (_e, uid) => (uid === 'loki' ? 3 : 0) });
    const d: DashboardFile = { file: 'l.json', uid: 'l', title: 'L', queries: [{ refId: 'A', datasource: { type: 'loki', uid: 'loki' }, expr: '{namespace="sample-app"}', panel: 'Logs' }] };
    await expect(checkDashboardData(g, d)).resolves.toBe('1 of 1 panels returned data, all 1 queries ran');
    expect(g.server.requests.at(-1)!.body.queries[0]).toMatchObject({ queryType: 'range', datasource: { uid: 'loki', type: 'loki' } });
  });
});

it.each([
  [[], 180],
  [['--wait', '0'], 0],
  [['--verbose', '--wait=45'], 45],
])('parseWait(%j) = %i', (argv, want) => {
  expect(parseWait(argv)).toBe(want);
});
it.each([[['--wait']], [['--wait', '-1']], [['--wait=1.5']]])('parseWait(%j) refuses', (argv) => {
  expect(() => parseWait(argv)).toThrow(/^--wait ".*" is not allowed: expected a whole number of seconds/);
});

it('validate checks exactly the hosts Traefik routes (INGRESS_HOSTS)', () => {
  expect(ROUTES.map((r) => r.name)).toEqual([...INGRESS_HOSTS]);
});

describe('checkRoute: HTTPS through an address, trusting only our CA (real TLS, openssl certificates)', () => {
  let dir: string;
  let server: https.Server;
  let port: number;
  let ours: ReturnType<typeof makeCerts>;
  let other: ReturnType<typeof makeCerts>;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'validate-tls-'));
    ours = makeCerts(dir, 'local.test', 'ours');
    other = makeCerts(dir, 'local.test', 'other');
    server = https.createServer({ cert: ours.cert, key: ours.key }, (req, res) => {
      // Like Traefik: a route per Host; unknown hosts answer 404.
      const known = ['grafana.local.test', 'app.local.test'].includes(req.headers.host ?? '');
      res.writeHead(known ? 200 : 404).end(known ? 'ok' : '404 page not found');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const target = (host: string, ca: string): Target => ({ url: `https://${host}`, ca, connect: { host: '127.0.0.1', port } });

  it('passes for a routed host with our CA (no DNS: the name only goes into SNI and Host)', async () => {
    await expect(checkRoute(target('grafana.local.test', ours.ca), '/api/health')).resolves.toBe('HTTP 200, certificate trusted');
  });
  it('fails when the certificate is not signed by our CA', async () => {
    await expect(checkRoute(target('grafana.local.test', other.ca), '/')).rejects.toThrow(/self[- ]signed|unable to verify|unable to get local issuer/i);
  });
  it('fails when the certificate does not cover the name', async () => {
    await expect(checkRoute(target('grafana.elsewhere.test', ours.ca), '/')).rejects.toThrow(/Hostname\/IP does not match certificate's altnames/);
  });
  it('fails when the ingress has no route for the host (404)', async () => {
    await expect(checkRoute(target('prometheus.local.test', ours.ca), '/-/ready')).rejects.toThrow(
      'https://prometheus.local.test/-/ready answered HTTP 404 (the ingress has no route for this host, or the service has no such path): 404 page not found',
    );
  });
  it('fails when nothing listens', async () => {
    await expect(checkRoute({ url: 'https://app.local.test', ca: ours.ca, connect: { host: '127.0.0.1', port: 1 } }, '/healthz')).rejects.toThrow(
      /GET https:\/\/app\.local\.test\/healthz \(via 127\.0\.0\.1:1\): connect ECONNREFUSED/,
    );
  });
});

it("validate's contract with the sample app: its header and source are the app's, its Deployment is the manifest's", async () => {
  const appNames = await import('../sample-app/src/metric-names.ts');
  expect(SYNTHETIC_HEADER).toBe(appNames.SYNTHETIC_HEADER);
  expect(appNames.SYNTHETIC_SOURCES).toContain(SYNTHETIC_SOURCE);
  expect(appNames.UNCOUNTED_ROUTES).not.toContain(REQUEST_CHECK.route);
  // The Deployment as the sample-app phase renders it (through scripts/app.ts).
  const { appDashboard, appManifests } = await import('../scripts/app.ts');
  const { SAMPLE_APP_EXTRAS, SAMPLE_APP_SPEC } = await import('../scripts/sample-app.ts');
  const rendered = appManifests(SAMPLE_APP_SPEC, 'localhost:5001/sample-app:0123456789ab', 'localhost', appDashboard({ name: 'sample-app', namespace: 'sample-app', metricNames: [] }), SAMPLE_APP_EXTRAS);
  const docs = YAML.parseAllDocuments(rendered.app).map((d) => d.toJS());
  const deployment = docs.find((d) => d?.kind === 'Deployment');
  expect([deployment.metadata.namespace, deployment.metadata.name]).toEqual([APP_NAMESPACE, APP_DEPLOYMENT]);
  // The traffic generator's pods are not the app's: the app Deployment's selector leaves them out.
  const traffic = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'manifests', 'sample-app', 'traffic.yaml'), 'utf8'));
  const selector: Record<string, string> = deployment.spec.selector.matchLabels;
  expect(Object.entries(selector).every(([k, v]) => traffic.spec.template.metadata.labels[k] === v)).toBe(false);
});
