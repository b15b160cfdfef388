// `task validate -- --app <name>` as a whole, with the stand-in kubectl and one real HTTPS server
// standing in for Traefik on HOST_IP:HTTPS_PORT (certificate signed by the CA in the state dir),
// routing by Host to a stand-in Prometheus API, a stand-in Grafana with Loki behind its datasource
// proxy, and the app. Passing and failing: no record, pods not ready, route 404 and 502, target
// down, samples stale, no logs; and the record's and the argument's bad values.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type AppRecord, parseConfig } from '../scripts/lib.ts';
import { checkDeploymentReady, parseAppArg, readAppRecord } from '../scripts/validate.ts';
import { isMutating, makeSandbox } from './helpers.ts';
import { deployedCluster, deploymentObj, healthyObjects, podObj } from './fixtures/validate/cluster.ts';
import { applyLogQL, type FakeGrafanaOptions, checkLines, grafanaHandler, makeCerts, startHttpsFront, writeValidateState } from './fixtures/validate/servers.ts';

vi.setConfig({ testTimeout: 60000 });

const DOMAIN = 'local.test';
const PASSWORD = 'Zx9-random-pw';
const NAME = 'go-app';
const PODS = ['go-app-5c9d7b8f6-abcde', 'go-app-5c9d7b8f6-fghij'];
/** As scripts/app.ts deploys an app (manifests/app/app.yaml.tmpl): selector labels, container app. */
const SELECTOR = { 'app.kubernetes.io/name': NAME, 'app.kubernetes.io/component': 'app' };
const LABELS = { namespace: NAME, container: 'app', node: 'talos-local-worker-1', job: NAME };
const RECORD: AppRecord = { name: NAME, namespace: NAME, host: `${NAME}.${DOMAIN}`, image: 'localhost:5001/go-app:0f1e2d3c4b5a', metricsPort: 9090, metricsPath: '/metrics', dashboard: `app-${NAME}` };

let front: Awaited<ReturnType<typeof startHttpsFront>>;
let certs: ReturnType<typeof makeCerts>;
let port: number;
/** What the stand-ins answer; each test sets it. */
let world: {
  /** The app's answer on / through Traefik (404: the ingress has no route for the host). */
  route: 200 | 404 | 502;
  /** up per pod (absent: not scraped). */
  up: Record<string, number>;
  /** Seconds since each pod's newest sample. */
  sampleAge: number;
  /** Pods whose container logged a line a moment ago. */
  logging: string[];
};

function prometheusAnswer(query: string) {
  const vec = (rows: [Record<string, string>, number][]) => ({
    status: 'success',
    data: { resultType: 'vector', result: rows.map(([metric, v]) => ({ metric, value: [Date.now() / 1000, String(v)] })) },
  });
  const scraped = Object.entries(world.up).map(([pod, v]): [Record<string, string>, number] => [{ ...LABELS, pod, instance: '10.244.1.7:9090' }, v]);
  if (query === `up{namespace="${NAME}"}`) return vec(scraped.map(([m, v]) => [{ __name__: 'up', ...m }, v]));
  // timestamp() drops the metric name.
  if (query === `time() - timestamp(up{namespace="${NAME}"})`) return vec(scraped.map(([m]) => [m, world.sampleAge]));
  if (query === 'up == 0') return vec(scraped.filter(([, v]) => v === 0).map(([m, v]) => [{ __name__: 'up', ...m }, v]));
  if (query === 'count by (job) (up)') return vec([[{ job: NAME }, scraped.length]]);
  return { status: 'error', errorType: 'bad_data', error: `stand-in Prometheus does not know ${query}` };
}

function grafana(): FakeGrafanaOptions {
  return {
    password: PASSWORD,
    datasources: { prometheus: { ok: true }, loki: { ok: true } },
    loki: (query) =>
      applyLogQL(
        query,
        world.logging.map((pod) => ({
          stream: { ...LABELS, pod },
          values: [[String(BigInt(Date.now() - 2000) * 1_000_000n), JSON.stringify({ level: 'INFO', msg: 'request', route: '/', status: 200 })]],
        })),
      ),
  };
}

beforeAll(async () => {
  front = await startHttpsFront('validate-app-', DOMAIN, (req, res) => {
    const host = req.headers.host ?? '';
    const u = new URL(req.url!, `https://${host}`);
    if (host === `grafana.${DOMAIN}`) return grafanaHandler(grafana())(req, res);
    if (host === `prometheus.${DOMAIN}` && u.pathname === '/api/v1/query') {
      return res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(prometheusAnswer(u.searchParams.get('query') ?? '')));
    }
    if (host === RECORD.host && u.pathname === '/') {
      if (world.route === 200) return res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"message":"hello from go-app"}\n');
      if (world.route === 502) return res.writeHead(502).end('Bad Gateway');
    }
    res.writeHead(404).end('404 page not found\n');
  });
  ({ certs, port } = front);
});

afterAll(() => front.close());

const healthy = () => ({ route: 200 as const, up: { [PODS[0]]: 1, [PODS[1]]: 1 }, sampleAge: 14, logging: [...PODS] });

/** The platform with go-app deployed by `task app`: its namespace, Deployment, two Ready pods and its record. */
function sandboxWithApp(opts: { readyPods?: string[]; record?: unknown } = {}) {
  const ready = opts.readyPods ?? PODS;
  const sb = makeSandbox();
  deployedCluster(sb, [
    ...healthyObjects(),
    deploymentObj(NAME, NAME, RECORD.image, 2, ready.length, SELECTOR, 'app'),
    ...PODS.map((p) =>
      podObj(NAME, p, ready.includes(p), SELECTOR, ready.includes(p) ? {} : { containerStatuses: [{ name: 'app', state: { waiting: { reason: 'CrashLoopBackOff' } }, restartCount: 4 }] }),
    ),
  ]);
  writeValidateState(sb.stateDir, certs.ca, PASSWORD);
  fs.mkdirSync(path.join(sb.stateDir, 'apps'), { recursive: true });
  if (opts.record !== null) fs.writeFileSync(path.join(sb.stateDir, 'apps', `${NAME}.json`), JSON.stringify(opts.record ?? RECORD));
  return sb;
}

const env = () => ({ DOMAIN, HOST_IP: '127.0.0.1', HTTPS_PORT: String(port) });
const TITLES = [
  `App ${NAME}: pods of Deployment ${NAME}/${NAME} Ready`,
  `App ${NAME}: route https://${NAME}.${DOMAIN}/ via 127.0.0.1:PORT`,
  `App ${NAME}: every Ready pod scraped (up == 1) with namespace, pod, container, node, job, samples fresh`,
  `App ${NAME}: container logs of every Ready pod in Loki (via Grafana) in the last 5 minutes`,
];
const lines = (marks: string) => TITLES.map((t, i) => `${marks[i]} ${t.replace('PORT', String(port))}`);

describe('task validate -- --app <name> (stand-in cluster, HTTPS front with our CA)', () => {
  it("all green: the app's four checks only, with freshness, exit 0, nothing changed", async () => {
    world = healthy();
    const r = await makeRun(sandboxWithApp());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(checkLines(r.stdout)).toEqual(lines('✓✓✓✓'));
    expect(r.stdout).toContain(`2 of 2 Ready (${PODS.join(', ')})`);
    expect(r.stdout).toContain('HTTP 200, certificate trusted');
    expect(r.stdout).toContain(`2 of 2 ready replicas scraped (pods ${PODS.join(', ')}); freshness: newest sample of every pod at most 14s old`);
    expect(r.stdout).toMatch(/lines of container app from every Ready pod in the last 5 minutes: go-app-5c9d7b8f6-abcde 1, go-app-5c9d7b8f6-fghij 1; freshness: newest line \d+\.\ds old/);
    expect(r.calls.filter(isMutating)).toEqual([]);
  });

  it('an app without metrics: the scrape check is left out and the note says how to add it', async () => {
    world = healthy();
    const r = await makeRun(sandboxWithApp({ record: { ...RECORD, metricsPort: null, metricsPath: null } }));
    expect(r.code, r.stdout).toBe(0);
    expect(checkLines(r.stdout)).toEqual([lines('✓✓✓✓')[0], lines('✓✓✓✓')[1], lines('✓✓✓✓')[3]]);
    expect(r.stdout).toContain(`${NAME} serves no metrics (deployed without --metrics-port): no scrape to check. \`task app -- <dir> --name ${NAME} --metrics-port <port>\` adds it.`);
  });

  it('no record: stops before any check, naming the file, the apps there are and how to deploy', async () => {
    world = healthy();
    const sb = sandboxWithApp({ record: null });
    fs.writeFileSync(path.join(sb.stateDir, 'apps', 'sample-app.json'), JSON.stringify({ ...RECORD, name: 'sample-app' }));
    const r = await makeRun(sb);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `no app "${NAME}": ${path.join(sb.stateDir, 'apps', `${NAME}.json`)} is missing. Apps deployed with \`task app\`: sample-app. Deploy it with \`task app -- <dir> --name ${NAME}\`.`,
    );
    expect(checkLines(r.stdout)).toEqual([]);
    expect(r.calls).toEqual([]);
  });

  it('a pod not Ready: fails naming it; diagnostics show its reason for the app namespace only', async () => {
    world = { ...healthy(), up: { [PODS[0]]: 1 }, logging: [PODS[0]] };
    const r = await makeRun(sandboxWithApp({ readyPods: [PODS[0]] }));
    expect(r.code).toBe(1);
    // The Ready pod is scraped and logging: only the Ready check fails, naming the other pod.
    expect(checkLines(r.stdout)).toEqual(lines('✗✓✓✓'));
    expect(r.stdout).toContain(
      `not Ready: ${NAME}/${PODS[1]} (Pending; app: CrashLoopBackOff (4 restarts)); Deployment ${NAME}/${NAME} has 1 of 2 replicas ready`,
    );
    expect(r.stdout.slice(r.stdout.indexOf('Diagnostics:'))).toContain(`pod ${NAME}/${PODS[1]} is not Ready (Pending; app: CrashLoopBackOff (4 restarts))`);
  });

  it('no pod Ready: every check that needs pods fails; exit 1, and the diagnostics name the pods', async () => {
    world = { ...healthy(), up: {}, logging: [] };
    const r = await makeRun(sandboxWithApp({ readyPods: [] }));
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout)).toEqual(lines('✗✓✗✗'));
    expect(r.stdout).toContain(`Deployment ${NAME}/${NAME} has no Ready pods (readyReplicas 0, 0 Ready pods match its selector)`);
    const diag = r.stdout.slice(r.stdout.indexOf('Diagnostics:'));
    expect(diag).toContain(`pod ${NAME}/${PODS[0]} is not Ready (Pending; app: CrashLoopBackOff (4 restarts))`);
    expect(diag).not.toContain('sample-app/');
    expect(r.stderr).toContain(`✗ validate failed: 3 check(s) failed: ${TITLES[0]}; ${TITLES[2]}; ${TITLES[3]}.`);
  });

  it.each([
    [404, `https://${NAME}.${DOMAIN}/ answered HTTP 404 (the ingress has no route for this host, or the service has no such path): 404 page not found`],
    [502, `https://${NAME}.${DOMAIN}/ answered HTTP 502: Bad Gateway`],
  ] as const)('route answers %i: that check fails, naming the status', async (status, message) => {
    world = { ...healthy(), route: status };
    const r = await makeRun(sandboxWithApp());
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout)).toEqual(lines('✓✗✓✓'));
    expect(r.stdout).toContain(message);
  });

  it('target down: fails naming the pod; the diagnostics list it', async () => {
    world = { ...healthy(), up: { [PODS[0]]: 1, [PODS[1]]: 0 } };
    const r = await makeRun(sandboxWithApp());
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout)).toEqual(lines('✓✓✗✓'));
    expect(r.stdout).toMatch(new RegExp(`target down \\(up=0\\): \\{__name__="up",namespace="${NAME}",.*pod="${PODS[1]}".*\\}`));
    expect(r.stdout.slice(r.stdout.indexOf('Diagnostics:'))).toMatch(/targets down:\n\s+\{__name__="up",namespace="go-app"/);
  });

  it('samples stale (remote write stalled): fails naming the pods and their age', async () => {
    world = { ...healthy(), sampleAge: 250 };
    const r = await makeRun(sandboxWithApp());
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout)).toEqual(lines('✓✓✗✓'));
    expect(r.stdout).toContain(`newest sample older than 180s: pod ${PODS[0]} 250s, pod ${PODS[1]} 250s (Alloy stopped scraping it, or its remote write to Prometheus stalls)`);
  });

  it('no logs from one pod: fails naming that pod', async () => {
    world = { ...healthy(), logging: [PODS[0]] };
    const r = await makeRun(sandboxWithApp());
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout)).toEqual(lines('✓✓✓✗'));
    expect(r.stdout).toContain(`no log lines of {namespace="${NAME}",container="app"} from pod ${PODS[1]} in Loki in the last 5 minutes`);
  });
});

/** Runs `validate --app go-app --wait 0`. */
const makeRun = (sb: ReturnType<typeof makeSandbox>, args = ['--app', NAME, '--wait', '0']) => sb.run('validate', args, env());

describe('parseAppArg', () => {
  it.each([
    [[], undefined],
    [['--wait', '0'], undefined],
    [['--app', 'go-app'], 'go-app'],
    [['--wait', '0', '--app=sample-app'], 'sample-app'],
  ])('%j → %s', (argv, want) => expect(parseAppArg(argv)).toBe(want));

  it.each([[['--app']], [['--app', 'Go_App']], [['--app=']], [['--app', '-x']]])('%j is refused, naming the value and the form', (argv) => {
    expect(() => parseAppArg(argv)).toThrow(/^--app ".*" is not allowed: expected the name of an app deployed with `task app` \(lowercase letters, digits and "-", such as --app sample-app\)\.$/);
  });

  it('a bad --app stops the phase before any tool call', async () => {
    const r = await makeRun(sandboxWithApp(), ['--app', 'Go_App']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--app "Go_App" is not allowed');
    expect(r.calls).toEqual([]);
  });
});

describe('readAppRecord: a malformed record names the file, the key, the value and the fix', () => {
  const cfgFor = (stateDir: string) => parseConfig({ STATE_DIR: stateDir, DOMAIN });
  const write = (content: string) => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'app-record-'));
    fs.mkdirSync(path.join(stateDir, 'apps'));
    fs.writeFileSync(path.join(stateDir, 'apps', `${NAME}.json`), content);
    return stateDir;
  };
  const fix = `Deploy it again with \`task app -- <dir> --name ${NAME}\` (it rewrites the record).`;

  it('reads a good record', () => {
    expect(readAppRecord(cfgFor(write(JSON.stringify(RECORD))), NAME)).toEqual(RECORD);
  });

  it.each([
    [{ ...RECORD, name: 'other' }, `name="other" is not allowed: expected "${NAME}", the name of the file`],
    [{ ...RECORD, namespace: 'Bad NS' }, 'namespace="Bad NS" is not allowed: expected a Kubernetes namespace name'],
    [{ ...RECORD, host: undefined }, `host=undefined is not allowed: expected the route's host name, such as ${NAME}.${DOMAIN}`],
    [{ ...RECORD, metricsPort: 70000 }, 'metricsPort=70000 is not allowed: expected a TCP port from 1 to 65535, or null when the app serves no metrics'],
    [{ ...RECORD, metricsPort: '9090' }, 'metricsPort="9090" is not allowed'],
  ])('%j', (record, message) => {
    const stateDir = write(JSON.stringify(record));
    expect(() => readAppRecord(cfgFor(stateDir), NAME)).toThrow(`${path.join(stateDir, 'apps', `${NAME}.json`)}: ${message}`);
    expect(() => readAppRecord(cfgFor(stateDir), NAME)).toThrow(fix);
  });

  it('not JSON', () => {
    const stateDir = write('{"name": ');
    expect(() => readAppRecord(cfgFor(stateDir), NAME)).toThrow(new RegExp(`^${path.join(stateDir, 'apps', NAME)}\\.json is not JSON \\(.+\\)\\. Deploy it again`));
  });
});

describe('checkDeploymentReady: every pod of the Deployment Ready, as many ready replicas as it asks for', () => {
  const dep = (replicas: number, ready: number) => deploymentObj(NAME, NAME, RECORD.image, replicas, ready, SELECTOR, 'app');
  const pod = (name: string, ready: boolean, extra: Record<string, unknown> = {}) => ({ ...podObj(NAME, name, ready, SELECTOR), ...extra });
  it.each([
    ['both Ready', dep(2, 2), [pod(PODS[0], true), pod(PODS[1], true)], `2 of 2 Ready (${PODS.join(', ')})`],
    ['a terminating unready pod of a rollout does not count', dep(1, 1), [pod(PODS[0], true), { ...pod(PODS[1], false), metadata: { ...pod(PODS[1], false).metadata, deletionTimestamp: '2026-11-30T04:00:00Z' } }], `1 of 1 Ready (${PODS[0]})`],
    ['another Deployment\'s unready pod in the namespace does not count', dep(1, 1), [pod(PODS[0], true), { ...podObj(NAME, 'other-1', false, { 'app.kubernetes.io/name': 'other' }) }], `1 of 1 Ready (${PODS[0]})`],
  ])('%s', (_, d, pods, want) => expect(checkDeploymentReady(d, pods)).toBe(want));

  it.each([
    ['one unready pod', dep(2, 1), [pod(PODS[0], true), pod(PODS[1], false)], `not Ready: ${NAME}/${PODS[1]} (Pending); Deployment ${NAME}/${NAME} has 1 of 2 replicas ready`],
    ['fewer pods than replicas', dep(3, 2), [pod(PODS[0], true), pod(PODS[1], true)], `Deployment ${NAME}/${NAME} has 2 of 3 replicas ready`],
    ['none Ready', dep(1, 0), [pod(PODS[0], false)], `Deployment ${NAME}/${NAME} has no Ready pods (readyReplicas 0, 0 Ready pods match its selector)`],
  ])('%s fails', (_, d, pods, message) => expect(() => checkDeploymentReady(d, pods)).toThrow(message));
});
