// Phase "validate" (`task validate`): proves, end to end, that the platform works and that metrics,
// logs and traces of the sample app flow. One status line per check; every check runs even when an
// earlier one failed; the exit code is non-zero when any check failed, and diagnostics are printed then.
//
// Checks, in order:
//   1. all nodes Ready; every pod in local-path-storage (when the storage phase installed it:
//      lib installedRecord), traefik, monitoring, sample-app Ready;
//      the PersistentVolumeClaims of Prometheus and Loki Bound, each to a PersistentVolume of the
//      local-path StorageClass (or the cluster's default class the storage phase recorded, lib
//      volumeClass) that names it as its claim;
//   2. storage: with `--smoke` the storage smoke test (`scripts/storage.ts --smoke`: it creates and
//      deletes a claim and a pod, so a plain validate, and a no-op `task deploy`, changes nothing);
//      then, read-only, Prometheus writes to its volume (prometheus_tsdb_head_series > 0 through its
//      route);
//   3. every route (grafana, prometheus, alertmanager, traefik, app .<DOMAIN>) answers through Traefik on
//      HOST_IP:HTTPS_PORT over HTTPS with our certificate (<stateDir>/certs/ca.crt is the only CA
//      trusted; SNI and Host are the route's name, the connection goes to HOST_IP: no /etc/hosts).
//      With CLUSTER=existing (its LoadBalancer or NodePort may not be reachable from here) every
//      check dials 127.0.0.1:<port> of one `kubectl port-forward service/traefik :websecure` instead,
//      with the same names and CA, started once and stopped at the end (failure and signals too).
//      With INGRESS_CLASS (the cluster's own controller, no Traefik): through a port-forward to
//      INGRESS_SERVICE when it is set, else at the address the controller published on our
//      Ingresses, port 443. No traefik dashboard route then, and no traefik namespace in check 1.
//      With CLUSTER=existing, reaching the routes is a check of its own ("Routes reachable from
//      this machine", after 1 and the smoke test; a port-forward that exits is retried within
//      --wait, unless kubectl says the Service or port does not exist or is forbidden; a published
//      address must accept a TCP connection; neither INGRESS_SERVICE nor an address fails it naming
//      INGRESS_SERVICE; a forward that stops mid-run is reported); when it
//      fails, one failed line stands for every check that needs the routes (they are not run), so
//      the cluster checks above still say what they saw;
//   4. Prometheus (https://prometheus.<DOMAIN>): every Ready pod of the sample app's Deployment has
//      an up == 1 series with the namespace, pod, container, node and job labels; validate sends 5
//      GET / marked `x-synthetic: validate` (each must answer 2xx) and http_requests_total and the
//      latency histogram's count of exactly those (route="/", synthetic="validate") grow by 5,
//      series by series (a restarted pod's counter counts from 0 again);
//   5. Loki, through Grafana's datasource proxy (or /api/ds/query when Grafana does not proxy; Loki
//      itself is never exposed): log lines of the app container (not the traffic generator's) from
//      every Ready app pod in the last 5 minutes, with namespace, pod, container and node labels;
//   5b. traces: one marked GET / to the app with a W3C `traceparent` of validate's own (a random trace
//      id, sampled), then that trace in Tempo through Grafana's datasource proxy (Tempo's
//      /api/v2/traces/<id>, /api/traces/<id> when v2 is 404, or /api/ds/query with a traceId query
//      when Grafana does not proxy; Tempo itself is never exposed) holding a server span of the app's
//      service, and a log line of the app container in Loki with "trace_id":"<id>" (each retry
//      within --wait sends a new trace id: a span sent before the OTLP path was up is lost);
//   6. Grafana: /api/health, the health checks of the prometheus, loki and tempo datasources, every
//      dashboard of dashboards/*.json present, and for each dashboard every query runs without error
//      and at least one panel returns data (/api/ds/query);
//   7. freshness: a unique marked GET /api/probe?id=<uuid> to the app, then the seconds until its
//      metric (http_requests_total{route="/api/probe",synthetic="validate"} grows) and its log line
//      (probe_id=<uuid>, app container) can be queried; with them the seconds 5b's trace took to be
//      queryable in Tempo;
//   8. alerting: `Watchdog` (always firing, alerts/platform.rules.yaml) is active in Alertmanager
//      (https://alertmanager.<DOMAIN>/api/v2/alerts), which proves rules → Prometheus → Alertmanager;
//   9. with `--alerts` (slow: a few minutes): POST /admin/errors?ratio=1&seconds=<n> to the app
//      (https://app.<DOMAIN>), the seconds until SampleAppErrorRatioHigh is active in Alertmanager,
//      then DELETE /admin/errors (also when it does not fire) and the seconds until it resolves.
//
// `task validate -- --app <name>` checks one app of `task app` instead, from its record
// <stateDir>/apps/<name>.json (scripts/app.ts): its Deployment's pods Ready, its route
// https://<host>/ answering over HTTPS (as in 3), every Ready pod scraped with up == 1 and the
// labels of 4 (when it serves metrics) and its container's lines in Loki (as in 5); freshness is
// the age of the newest sample (it fails past APP_SAMPLE_MAX_AGE_SECONDS) and of the newest line.
//
// A freshly deployed platform needs a minute or two (pods starting, Alloy's first scrape): until
// `--wait N` seconds (default 180) have passed, a failing check is retried every few seconds; after
// that every check tries once. `task validate -- --wait 0` fails fast. On failure the diagnostics
// follow the checks: unready pods with their events and last log lines, Alloy's error and warning
// lines, and the scrape targets Prometheus has (down ones listed).
//
// Assumed contracts: Grafana datasource uids `prometheus`, `loki` and `tempo` (DATASOURCE_UIDS below;
// lib TEMPO.datasourceUid); Grafana user admin with the password in <stateDir>/grafana-admin-password;
// the sample app continues an incoming `traceparent`, names its spans' service after its Deployment
// (OTEL_SERVICE_NAME, APP_SERVICE below) and writes "trace_id":"<id>" in the JSON log line of a request.
// .env keys: CLUSTER, DOMAIN, HOST_IP, HTTPS_PORT, STATE_DIR, CLUSTER_NAME (in messages), INGRESS_CLASS, INGRESS_SERVICE.
// Arguments: --wait N (see above), --alerts (step 9), --smoke (step 2).
// Tools: kubectl (port-forward with CLUSTER=existing; get ingresses with INGRESS_CLASS and no INGRESS_SERVICE; one read of nodes, pods, claims, volumes and Deployments, again only after a check
// failed and retries or after CLUSTER_READ_MAX_AGE_MS; diagnostics), node (`--smoke`: the storage
// smoke test through tsx).
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import https from 'node:https';
import path from 'node:path';
import {
  type AppRecord,
  CommandError,
  type Config,
  PROJECT_DIR,
  UserError,
  appRecordPath,
  appRecords,
  ROUTES_NAMESPACE,
  check,
  ingressClassAddressOf,
  ingressService,
  isMain,
  kubectl,
  installedRecord,
  kubectlTarget,
  namesAddress,
  note,
  podDiagnostics,
  requireCluster,
  run,
  runPhase,
  statePath,
  TEMPO,
  unreadyPods,
  volumeClass,
  warn,
} from './lib.ts';

/** Namespaces whose pods must all be Ready. */
export const OUR_NAMESPACES = ['local-path-storage', 'traefik', 'monitoring', 'sample-app'] as const;
/** Grafana datasource uids, as provisioned by the observability phase. */
export const DATASOURCE_UIDS = { prometheus: 'prometheus', loki: 'loki', tempo: TEMPO.datasourceUid } as const;
/** Where the sample app runs (its Deployment), and the selector of its series in Prometheus and streams in Loki. */
export const APP_NAMESPACE = 'sample-app';
export const APP_DEPLOYMENT = 'sample-app';
export const APP_SELECTOR = `namespace="${APP_NAMESPACE}"`;
/**
 * validate's own requests say so (the sample app's SYNTHETIC_HEADER, sample-app/src/metric-names.ts):
 * the app counts them under synthetic="validate", apart from real and generated traffic.
 */
export const SYNTHETIC_HEADER = 'x-synthetic';
export const SYNTHETIC_SOURCE = 'validate';
/** The route the request check calls, and how many times. */
export const REQUEST_CHECK = { route: '/', count: 5 } as const;
/** Labels Alloy must attach to every scraped series / log stream of a pod. */
export const METRIC_LABELS = ['namespace', 'pod', 'container', 'node', 'job'] as const;
export const LOG_LABELS = ['namespace', 'pod', 'container', 'node'] as const;

export class CheckError extends Error {}

// ---------------------------------------------------------------------------------------------
// HTTP: one small client for every check, with TLS pinned to our CA and the address overridden
// ---------------------------------------------------------------------------------------------

/** Where a service answers. `url` carries the name (Host, SNI); `connect` the address to dial. */
export interface Target {
  url: string;
  /** PEM of the only CA to trust (HTTPS). */
  ca?: string;
  /** Dial this host:port instead of resolving the URL's host name (no /etc/hosts needed). */
  connect?: { host: string; port: number };
  /** Basic auth. */
  auth?: { user: string; password: string };
}

export interface HttpResult {
  status: number;
  body: string;
}

/** One HTTP(S) request; rejects on network or TLS errors, resolves with any HTTP status. */
export function request(
  target: Target,
  pathAndQuery: string,
  opts: { method?: string; json?: unknown; timeoutMs?: number; headers?: Record<string, string> } = {},
): Promise<HttpResult> {
  const url = new URL(pathAndQuery, target.url);
  const secure = url.protocol === 'https:';
  const body = opts.json === undefined ? undefined : JSON.stringify(opts.json);
  const headers: Record<string, string> = { Host: url.host, Accept: 'application/json', ...opts.headers };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (target.auth) headers.Authorization = `Basic ${Buffer.from(`${target.auth.user}:${target.auth.password}`).toString('base64')}`;
  const options: https.RequestOptions = {
    method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
    host: target.connect?.host ?? url.hostname,
    port: target.connect?.port ?? (url.port || (secure ? 443 : 80)),
    path: `${url.pathname}${url.search}`,
    headers,
    agent: false,
    timeout: opts.timeoutMs ?? 15000,
  };
  if (secure) {
    // Verify the chain against our CA only, and the certificate's names against the route's name.
    options.servername = url.hostname;
    if (target.ca) options.ca = target.ca;
  }
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request(options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${options.timeout}ms`)));
    req.on('error', (err) => reject(new CheckError(`${options.method} ${url.href} (via ${options.host}:${options.port}): ${err.message}`)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A request whose answer must be 2xx JSON. */
export async function getJson<T = any>(target: Target, pathAndQuery: string, json?: unknown): Promise<T> {
  const res = await request(target, pathAndQuery, { json });
  if (res.status < 200 || res.status > 299) {
    throw new CheckError(`${new URL(pathAndQuery, target.url).href} answered HTTP ${res.status}: ${res.body.trim().slice(0, 300)}`);
  }
  try {
    return JSON.parse(res.body) as T;
  } catch {
    throw new CheckError(`${new URL(pathAndQuery, target.url).href} answered no JSON: ${res.body.slice(0, 200)}`);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Calls fn until it returns a value other than undefined, or throws the last reason at the deadline. */
export async function poll<T>(fn: () => Promise<T | undefined>, timeoutMs: number, intervalMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() >= deadline) throw new CheckError(`${what}: not within ${Math.round(timeoutMs / 1000)}s${last ? ` (last error: ${last})` : ''}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Cluster state (pure functions over `kubectl get -o json` lists)
// ---------------------------------------------------------------------------------------------

interface KObject {
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  status?: any;
  spec?: any;
}

const readyCondition = (o: KObject) => (o.status?.conditions ?? []).find((c: any) => c.type === 'Ready');

/** Nodes not Ready; throws when there are none at all. */
export function checkNodes(items: KObject[]): string {
  if (items.length === 0) throw new CheckError('the cluster has no nodes');
  const bad = items.filter((n) => readyCondition(n)?.status !== 'True');
  if (bad.length) {
    throw new CheckError(`not Ready: ${bad.map((n) => `${n.metadata.name} (${readyCondition(n)?.reason ?? 'no Ready condition'})`).join(', ')}`);
  }
  return `${items.length} nodes Ready`;
}

export function checkPods(items: KObject[], namespaces: readonly string[] = OUR_NAMESPACES): string {
  const ours = items.filter((p) => namespaces.includes(p.metadata.namespace ?? ''));
  const empty = namespaces.filter((ns) => !ours.some((p) => p.metadata.namespace === ns));
  const bad = unreadyPods(ours);
  const problems: string[] = [];
  if (empty.length) problems.push(`no pods in namespace ${empty.join(', ')}`);
  if (bad.length) problems.push(`not Ready: ${bad.map((p) => `${p.namespace}/${p.name} (${p.reason})`).join(', ')}`);
  if (problems.length) throw new CheckError(problems.join('; '));
  const counted = ours.filter((p) => p.status?.phase !== 'Succeeded');
  return `${counted.length} pods Ready in ${namespaces.join(', ')}`;
}

/** The StorageClass of the storage phase (scripts/storage.ts STORAGE_CLASS): the workloads' volumes must be of it. */
export const VOLUME_CLASS = 'local-path';

/**
 * The claims in monitoring whose name contains "prometheus" and "loki" exist and are Bound, each to
 * a PersistentVolume (`volumes`) of `storageClass` whose claimRef is that claim: the real workloads
 * write to the volumes the storage phase provides (what the storage smoke test proves with a claim
 * of its own): VOLUME_CLASS, or the cluster's default class it recorded (lib volumeClass).
 */
export function checkVolumes(claimsIn: KObject[], volumes: KObject[], storageClass: string = VOLUME_CLASS): string {
  const problems: string[] = [];
  const found: string[] = [];
  const items = claimsIn.filter((c) => c.metadata.namespace === 'monitoring');
  for (const app of ['prometheus', 'loki']) {
    const claims = items.filter((c) => c.metadata.name.includes(app));
    if (claims.length === 0) problems.push(`no PersistentVolumeClaim for ${app}`);
    for (const c of claims) {
      const name = `${c.metadata.namespace}/${c.metadata.name}`;
      const pv = volumes.find((v) => v.metadata.name === c.spec?.volumeName);
      const ref = pv?.spec?.claimRef;
      if (c.status?.phase !== 'Bound') problems.push(`${name} is ${c.status?.phase ?? 'without status'}`);
      else if (!pv) problems.push(`${name} is Bound to PersistentVolume "${c.spec?.volumeName ?? ''}", which does not exist`);
      else if (pv.spec?.storageClassName !== storageClass) problems.push(`${name} is on PersistentVolume ${pv.metadata.name} of StorageClass "${pv.spec?.storageClassName ?? ''}", not ${storageClass}`);
      else if (ref?.namespace !== c.metadata.namespace || ref?.name !== c.metadata.name) problems.push(`PersistentVolume ${pv.metadata.name} is claimed by ${ref?.namespace}/${ref?.name}, not ${name}`);
      else found.push(`${c.metadata.name} ${c.status?.capacity?.storage ?? ''}`.trim());
    }
  }
  if (problems.length) throw new CheckError(problems.join('; '));
  return `Bound: ${found.join(', ')}`;
}

/** The sample app as its Deployment runs it: the Ready pods the checks expect metrics and logs of. */
export interface AppPods {
  deployment: string;
  /** The Deployment's status.readyReplicas. */
  readyReplicas: number;
  /** Names of the Ready, not terminating pods its selector matches. */
  pods: string[];
  /** The app's container (the first of the pod template): its logs, not a sidecar's, must reach Loki. */
  container: string;
}

/** The pods the Deployment's selector matches (appPods checks it has one), terminating ones left out. */
function selectedPods(deployment: KObject, pods: KObject[]): KObject[] {
  const matchLabels: Record<string, string> = deployment.spec?.selector?.matchLabels ?? {};
  return pods.filter((p) => !p.metadata.deletionTimestamp && Object.entries(matchLabels).every(([k, v]) => p.metadata.labels?.[k] === v));
}

/**
 * Every pod of the Deployment is Ready and it has as many ready replicas as it asks for (`task
 * validate -- --app`): one crash-looping replica fails, though the others serve.
 */
export function checkDeploymentReady(deployment: KObject, pods: KObject[]): string {
  const app = appPods(deployment, pods);
  const wanted = Number(deployment.spec?.replicas ?? 1);
  const problems: string[] = [];
  const bad = unreadyPods(selectedPods(deployment, pods));
  if (bad.length) problems.push(`not Ready: ${bad.map((p) => `${p.namespace}/${p.name} (${p.reason})`).join(', ')}`);
  if (app.readyReplicas < wanted) problems.push(`${app.deployment} has ${app.readyReplicas} of ${wanted} replicas ready`);
  if (problems.length) throw new CheckError(problems.join('; '));
  return `${app.pods.length} of ${wanted} Ready (${app.pods.join(', ')})`;
}

/** Reads the app's Ready pods from its Deployment and the pods of its namespace; throws when none is Ready. */
export function appPods(deployment: KObject, pods: KObject[]): AppPods {
  const name = `Deployment ${deployment.metadata.namespace}/${deployment.metadata.name}`;
  const container: string | undefined = deployment.spec?.template?.spec?.containers?.[0]?.name;
  if (Object.keys(deployment.spec?.selector?.matchLabels ?? {}).length === 0 || !container) {
    throw new CheckError(`${name} has no spec.selector.matchLabels or no container`);
  }
  const readyReplicas = Number(deployment.status?.readyReplicas ?? 0);
  const ready = selectedPods(deployment, pods)
    .filter((p) => readyCondition(p)?.status === 'True')
    .map((p) => p.metadata.name)
    .sort();
  if (readyReplicas === 0 || ready.length === 0) {
    throw new CheckError(`${name} has no Ready pods (readyReplicas ${readyReplicas}, ${ready.length} Ready pods match its selector)`);
  }
  return { deployment: name, readyReplicas, pods: ready, container };
}

// ---------------------------------------------------------------------------------------------
// 3. Routes through Traefik
// ---------------------------------------------------------------------------------------------

/** The hosts Traefik routes, and a path on each that answers 2xx/3xx when the service behind it works. */
export const ROUTES = [
  { name: 'grafana', path: '/api/health' },
  { name: 'prometheus', path: '/-/ready' },
  { name: 'alertmanager', path: '/-/ready' },
  { name: 'traefik', path: '/dashboard/' },
  { name: 'app', path: '/healthz' },
] as const;
export type RouteName = (typeof ROUTES)[number]['name'];

/** The route answers over HTTPS, with a certificate our CA signed for its name, and a 2xx/3xx status. */
export async function checkRoute(target: Target, pathName: string): Promise<string> {
  const res = await request(target, pathName);
  if (res.status >= 400) {
    throw new CheckError(
      `${new URL(pathName, target.url).href} answered HTTP ${res.status}` +
        (res.status === 404 ? ' (the ingress has no route for this host, or the service has no such path)' : '') +
        `: ${res.body.trim().slice(0, 200)}`,
    );
  }
  return `HTTP ${res.status}, certificate trusted`;
}

// ---------------------------------------------------------------------------------------------
// 4. Prometheus
// ---------------------------------------------------------------------------------------------

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

/** An instant query; returns the vector. */
export async function promQuery(prom: Target, expr: string): Promise<Sample[]> {
  const res = await getJson(prom, `/api/v1/query?query=${encodeURIComponent(expr)}`);
  if (res.status !== 'success') throw new CheckError(`Prometheus query ${expr} failed: ${res.error ?? JSON.stringify(res)}`);
  if (res.data?.resultType !== 'vector') throw new CheckError(`Prometheus query ${expr}: expected a vector, got ${res.data?.resultType}`);
  return (res.data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({
    metric: r.metric,
    value: Number(r.value[1]),
  }));
}

const seriesName = (m: Record<string, string>) =>
  `{${Object.entries(m)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;

/**
 * Every Ready pod of the app is scraped: an `up` series of the selector with its pod label, value 1
 * and every required label, for as many pods as the Deployment has ready replicas.
 */
export async function checkTargetsUp(prom: Target, app: AppPods, selector = APP_SELECTOR, labels: readonly string[] = METRIC_LABELS): Promise<string> {
  const up = await promQuery(prom, `up{${selector}}`);
  const problems: string[] = [];
  for (const pod of app.pods) {
    const series = up.filter((s) => s.metric.pod === pod);
    if (series.length === 0) problems.push(`pod ${pod} is Ready but has no up{${selector}} series: Alloy has not discovered or not scraped it`);
    for (const s of series) {
      if (s.value !== 1) problems.push(`target down (up=${s.value}): ${seriesName(s.metric)}`);
      const missing = labels.filter((l) => !s.metric[l]);
      if (missing.length) problems.push(`label ${missing.join(', ')} missing on ${seriesName(s.metric)}`);
    }
  }
  if (app.pods.length < app.readyReplicas) {
    problems.push(`${app.deployment} has ${app.readyReplicas} ready replicas, but only ${app.pods.length} Ready pods match its selector`);
  }
  if (problems.length) throw new CheckError(problems.join('; '));
  return `${app.pods.length} of ${app.readyReplicas} ready replicas scraped (pods ${app.pods.join(', ')})`;
}

/** A series' identity: its labels without __name__. */
const seriesKey = (m: Record<string, string>) =>
  JSON.stringify(Object.entries(m).filter(([k]) => k !== '__name__').sort(([a], [b]) => (a < b ? -1 : 1)));

/**
 * How much a counter grew between two readings of the same selector, series by series: a series
 * that is new counts from 0, a series whose value fell was restarted (a pod or container restart
 * resets the app's counters) and counts from 0 again. A series that is gone counts nothing.
 */
export function counterIncrease(before: Sample[], after: Sample[]): { increase: number; restarted: string[] } {
  const previous = new Map(before.map((s) => [seriesKey(s.metric), s.value]));
  let increase = 0;
  const restarted: string[] = [];
  for (const s of after) {
    const prev = previous.get(seriesKey(s.metric));
    if (prev !== undefined && s.value < prev) restarted.push(s.metric.pod ?? seriesName(s.metric));
    increase += prev === undefined || s.value < prev ? s.value : s.value - prev;
  }
  return { increase, restarted };
}

/**
 * Sends `count` marked requests to the app (each must answer 2xx), then waits until the counter of
 * exactly those requests (route and synthetic="validate") and the latency histogram's count have
 * grown by at least `count`. Probes, scrapes and the traffic generator are other series, so they
 * cannot stand in for requests that never reached the app Prometheus scrapes.
 */
export async function checkRequestMetrics(
  prom: Target,
  app: Target,
  opts: { selector?: string; timeoutMs?: number; pollMs?: number } = {},
): Promise<string> {
  const { route, count } = REQUEST_CHECK;
  const mine = `${opts.selector ?? APP_SELECTOR},route="${route}",synthetic="${SYNTHETIC_SOURCE}"`;
  const metrics = [`http_requests_total{${mine}}`, `http_request_duration_seconds_count{${mine}}`];
  const before = await Promise.all(metrics.map((m) => promQuery(prom, m)));
  await sendMarked(app, route, count);
  const timeoutMs = opts.timeoutMs ?? 150000;
  let state = '';
  try {
    const grown = await poll(
      async () => {
        const now = await Promise.all(metrics.map((m) => promQuery(prom, m)));
        const inc = now.map((n, i) => counterIncrease(before[i], n));
        state = metrics.map((m, i) => `${m} grew by ${inc[i].increase}`).join(', ');
        return inc.every((x) => x.increase >= count) ? { inc: inc[0], pods: [...new Set(now[0].map((x) => x.metric.pod))] } : undefined;
      },
      timeoutMs,
      opts.pollMs ?? 2000,
      'request metrics',
    );
    const restarts = grown.inc.restarted.length ? `; counter restarted on ${grown.inc.restarted.join(', ')}` : '';
    return `${count} requests to ${route} counted: http_requests_total{route="${route}",synthetic="${SYNTHETIC_SOURCE}"} +${grown.inc.increase} (pods ${grown.pods.join(', ')})${restarts}`;
  } catch (err) {
    throw new CheckError(
      state ? `${state} within ${Math.round(timeoutMs / 1000)}s; validate sent ${count} requests to ${route} and each was answered` : (err as Error).message,
    );
  }
}

/** GETs the path `count` times with validate's synthetic header (and `headers`); a network error or a non-2xx answer fails. */
async function sendMarked(app: Target, pathAndQuery: string, count: number, headers: Record<string, string> = {}): Promise<HttpResult[]> {
  const answers: HttpResult[] = [];
  for (let i = 1; i <= count; i++) {
    const res = await request(app, pathAndQuery, { headers: { ...headers, [SYNTHETIC_HEADER]: SYNTHETIC_SOURCE } }).catch((err: Error) => {
      throw new CheckError(`request ${i} of ${count} to the app failed: ${err.message}`);
    });
    if (res.status < 200 || res.status > 299) {
      throw new CheckError(`request ${i} of ${count} to the app: ${new URL(pathAndQuery, app.url).href} answered HTTP ${res.status}: ${res.body.trim().slice(0, 200)}`);
    }
    answers.push(res);
  }
  return answers;
}

// ---------------------------------------------------------------------------------------------
// 5. Loki, through Grafana's datasource proxy
// ---------------------------------------------------------------------------------------------

/** POST /api/ds/query with one query (refId A): the answer, its body parsed ({} when not JSON) and the query's result. */
async function dsQueryA(grafana: Target, from: string, to: string, query: Record<string, unknown>): Promise<{ ds: HttpResult; body: any; result: any }> {
  const ds = await request(grafana, '/api/ds/query', { json: { from, to, queries: [query] } });
  let body: any;
  try {
    body = JSON.parse(ds.body);
  } catch {
    body = {};
  }
  return { ds, body, result: body.results?.A };
}

export interface LogStream {
  stream: Record<string, string>;
  values: [string, string, ...unknown[]][];
}

/**
 * A LogQL range query over the last `sinceSeconds`, through Grafana: first Loki's own API behind the
 * datasource proxy (/api/datasources/proxy/uid/<uid>/loki/api/v1/query_range); when Grafana refuses
 * to proxy (a status other than 200/401/403), the same query through /api/ds/query, whose log
 * frames are turned back into streams. Loki itself is never exposed.
 */
export async function lokiQuery(grafana: Target, expr: string, sinceSeconds: number, lokiUid: string = DATASOURCE_UIDS.loki): Promise<LogStream[]> {
  const endMs = Date.now();
  const startMs = endMs - sinceSeconds * 1000;
  const ns = (ms: number) => String(BigInt(ms) * 1_000_000n);
  const q = new URLSearchParams({ query: expr, start: ns(startMs), end: ns(endMs), limit: '100', direction: 'backward' });
  const proxyPath = `/api/datasources/proxy/uid/${encodeURIComponent(lokiUid)}/loki/api/v1/query_range?${q}`;
  const res = await request(grafana, proxyPath);
  if (res.status === 200) {
    const body = JSON.parse(res.body);
    if (body.status !== 'success') throw new CheckError(`Loki query ${expr} failed: ${res.body.slice(0, 300)}`);
    if (body.data?.resultType !== 'streams') throw new CheckError(`Loki query ${expr}: expected streams, got ${body.data?.resultType}`);
    return body.data.result as LogStream[];
  }
  if (res.status === 401 || res.status === 403) {
    throw new CheckError(`${new URL(proxyPath, grafana.url).href} answered HTTP ${res.status}: ${res.body.trim().slice(0, 200)}`);
  }
  const query = { refId: 'A', datasource: { type: 'loki', uid: lokiUid }, expr, queryType: 'range', maxLines: 100 };
  const { ds, body, result } = await dsQueryA(grafana, String(startMs), String(endMs), query);
  if (ds.status !== 200 || result?.error) {
    throw new CheckError(
      `Loki query ${expr}: the datasource proxy answered HTTP ${res.status} (${res.body.trim().slice(0, 120)}) and /api/ds/query HTTP ${ds.status} (${result?.error ?? body.message ?? ds.body.slice(0, 120)})`,
    );
  }
  return framesToStreams(result?.frames ?? []);
}

/**
 * Grafana's Loki log frames (fields labels, Time/timestamp, Line/body, tsNs; one row per line) as
 * Loki streams: one per distinct label set.
 */
export function framesToStreams(frames: any[]): LogStream[] {
  const streams = new Map<string, LogStream>();
  for (const f of frames) {
    const fields: any[] = f.schema?.fields ?? [];
    const values: unknown[][] = f.data?.values ?? [];
    const col = (...names: string[]) => {
      const i = fields.findIndex((x) => names.includes(x.name));
      return i < 0 ? undefined : values[i];
    };
    const labels = col('labels');
    const lines = col('Line', 'body');
    const tsNs = col('tsNs');
    const time = col('Time', 'timestamp');
    if (!lines) continue;
    lines.forEach((line, row) => {
      const raw = labels?.[row] ?? fields.find((x) => x.name === 'Line' || x.name === 'body')?.labels ?? {};
      const stream: Record<string, string> = typeof raw === 'string' ? JSON.parse(raw) : (raw as Record<string, string>);
      const ts = tsNs?.[row] !== undefined ? String(tsNs[row]) : String(BigInt(Math.trunc(Number(time?.[row] ?? 0))) * 1_000_000n);
      const key = JSON.stringify(Object.entries(stream).sort());
      if (!streams.has(key)) streams.set(key, { stream, values: [] });
      streams.get(key)!.values.push([ts, String(line)]);
    });
  }
  return [...streams.values()];
}

/** The LogQL selector of the app container's lines: never a sidecar's or the traffic generator's. */
export const appLogSelector = (app: AppPods, selector = APP_SELECTOR) => `{${selector},container="${app.container}"}`;

/**
 * Every Ready pod of the app has log lines of the app container in Loki from the last window, and
 * every stream carries the required labels. One query per pod (`| pod="<name>"` works whether pod
 * is a stream label or structured metadata), so a busy pod cannot hide a silent one.
 */
export async function checkLogs(
  grafana: Target,
  app: AppPods,
  opts: { selector?: string; sinceSeconds?: number; lokiUid?: string; labels?: readonly string[] } = {},
): Promise<string> {
  const selector = appLogSelector(app, opts.selector);
  const since = opts.sinceSeconds ?? 300;
  const labels = opts.labels ?? LOG_LABELS;
  const problems: string[] = [];
  const counts: string[] = [];
  for (const pod of app.pods) {
    const streams = (await lokiQuery(grafana, `${selector} | pod="${pod}"`, since, opts.lokiUid)).filter((s) => s.stream.pod === pod);
    const lines = streams.reduce((n, s) => n + s.values.length, 0);
    if (lines === 0) problems.push(`no log lines of ${selector} from pod ${pod} in Loki in the last ${since / 60} minutes`);
    else counts.push(`${pod} ${lines}`);
    for (const s of streams) {
      const missing = labels.filter((l) => !s.stream[l]);
      if (missing.length) problems.push(`label ${missing.join(', ')} missing on stream ${seriesName(s.stream)}`);
    }
  }
  if (problems.length) throw new CheckError(problems.join('; '));
  return `lines of container ${app.container} from every Ready pod in the last ${since / 60} minutes: ${counts.join(', ')}`;
}

// ---------------------------------------------------------------------------------------------
// 5b. Traces: a request with validate's own trace id, its trace in Tempo and its log line in Loki
// ---------------------------------------------------------------------------------------------

/**
 * The service.name of the sample app's spans: its OTEL_SERVICE_NAME, which the app manifest sets to
 * the app's name (the contract with the app's instrumentation).
 */
export const APP_SERVICE = APP_DEPLOYMENT;
/**
 * The route the trace check calls, and how long one try waits for the trace and the log line: the
 * app's span batches (5s), Alloy's and Loki's batching take seconds; until --wait has passed a
 * failed try is retried with a new trace id (a span sent before the OTLP path was up is lost).
 */
export const TRACE_CHECK = { route: '/', timeoutMs: 30_000 } as const;

/** A W3C trace context (https://www.w3.org/TR/trace-context/#traceparent-header): version 00, sampled. */
export interface TraceContext {
  traceId: string;
  spanId: string;
  traceparent: string;
}

/** A trace context of validate's own: random trace id (16 bytes) and parent span id (8 bytes), never all zeros (invalid). */
export function newTraceContext(random: (bytes: number) => Buffer = randomBytes): TraceContext {
  const id = (bytes: number) => {
    for (;;) {
      const hex = random(bytes).toString('hex');
      if (!/^0+$/.test(hex)) return hex;
    }
  };
  const traceId = id(16);
  const spanId = id(8);
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

/** One span of a trace, as the checks compare it: ids as lowercase hex, kind as OTLP names it without prefix. */
export interface Span {
  traceId: string;
  spanId: string;
  name: string;
  service: string;
  kind: string;
}

const SPAN_KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'];

/**
 * A span kind: OTLP JSON's number (2), Tempo's JSON enum name (SPAN_KIND_SERVER) or Grafana's trace
 * frame ("server"), as "server". Absent is unspecified (proto3 JSON leaves out the default, 0).
 */
export function spanKind(raw: unknown): string {
  if (typeof raw === 'number') return SPAN_KINDS[raw] ?? `kind ${raw}`;
  if (typeof raw === 'string' && raw !== '') return raw.replace(/^SPAN_KIND_/, '').toLowerCase();
  return 'unspecified';
}

/**
 * A trace or span id as lowercase hex: OTLP JSON carries hex; Tempo's JSON (gogo jsonpb of the
 * bytes) base64; Grafana's trace frame hex without the 16 leading zeros of a 64-bit id. Anything
 * else is kept as it is (it then matches no id validate sent).
 */
export function idHex(raw: unknown, bytes: 16 | 8): string {
  if (typeof raw !== 'string') return '';
  if (/^[0-9a-fA-F]+$/.test(raw) && (raw.length === bytes * 2 || (bytes === 16 && raw.length === 16))) return raw.toLowerCase().padStart(bytes * 2, '0');
  const decoded = Buffer.from(raw, 'base64');
  return decoded.length === bytes && decoded.toString('base64') === raw ? decoded.toString('hex') : raw;
}

/**
 * The spans of a trace as Tempo's HTTP API answers it in JSON: /api/v2/traces/<id> as
 * {trace: {resourceSpans}} (tempopb.TraceByIDResponse; an unknown id is {trace: {}}),
 * /api/traces/<id> as {batches} (tempopb.MarshalToJSONV1), plain OTLP JSON as {resourceSpans}.
 */
export function otlpSpans(body: any): Span[] {
  const resourceSpans: any[] = body?.trace?.resourceSpans ?? body?.batches ?? body?.resourceSpans ?? [];
  return resourceSpans.flatMap((rs) => {
    const service = (rs.resource?.attributes ?? []).find((a: any) => a.key === 'service.name')?.value?.stringValue ?? '';
    // scopeSpans since OTLP 0.19; instrumentationLibrarySpans before.
    return (rs.scopeSpans ?? rs.instrumentationLibrarySpans ?? []).flatMap((ss: any) =>
      (ss.spans ?? []).map((s: any): Span => ({ traceId: idHex(s.traceId, 16), spanId: idHex(s.spanId, 8), name: s.name ?? '', service, kind: spanKind(s.kind) })),
    );
  });
}

/**
 * The spans of Grafana's trace frame, the answer of /api/ds/query to a tempo traceId query (pkg/tsdb/
 * tempo TraceToFrame: one row per span, fields traceID, spanID, operationName, serviceName, kind).
 */
export function traceFrameSpans(frames: any[]): Span[] {
  return frames.flatMap((f) => {
    const fields: any[] = f.schema?.fields ?? [];
    const values: unknown[][] = f.data?.values ?? [];
    const col = (name: string) => values[fields.findIndex((x) => x.name === name)] ?? [];
    const traceIds = col('traceID');
    return traceIds.map((t, row): Span => ({
      traceId: idHex(t, 16),
      spanId: idHex(col('spanID')[row], 8),
      name: String(col('operationName')[row] ?? ''),
      service: String(col('serviceName')[row] ?? ''),
      kind: spanKind(col('kind')[row]),
    }));
  });
}

/**
 * A trace through Grafana: Tempo's API behind the datasource proxy, /api/v2/traces/<id> (Tempo 2.x),
 * or /api/traces/<id> when v2 answers 404 (a Tempo without it), as Grafana's own Tempo datasource
 * asks; when neither answers 200 (Grafana does not proxy, or Tempo has no trace by that id on v1)
 * the same through /api/ds/query with a traceId query, whose 404 means "no such trace". 401/403
 * fail at once. No spans: Tempo does not have the trace (yet).
 */
export async function tempoTrace(grafana: Target, traceId: string, tempoUid: string = DATASOURCE_UIDS.tempo): Promise<{ spans: Span[]; via: string }> {
  const proxy = `/api/datasources/proxy/uid/${encodeURIComponent(tempoUid)}`;
  const answers: string[] = [];
  for (const api of ['/api/v2/traces/', '/api/traces/']) {
    const res = await request(grafana, `${proxy}${api}${traceId}`);
    if (res.status === 200) {
      try {
        return { spans: otlpSpans(JSON.parse(res.body)), via: `datasource proxy ${api}` };
      } catch {
        throw new CheckError(`${new URL(`${proxy}${api}${traceId}`, grafana.url).href} answered no JSON: ${res.body.slice(0, 200)}`);
      }
    }
    if (res.status === 401 || res.status === 403) throw new CheckError(`${new URL(`${proxy}${api}${traceId}`, grafana.url).href} answered HTTP ${res.status}: ${res.body.trim().slice(0, 200)}`);
    answers.push(`${api}<id> HTTP ${res.status}${res.body.trim() ? ` (${res.body.trim().slice(0, 120)})` : ''}`);
    if (res.status !== 404) break;
  }
  const query = { refId: 'A', datasource: { type: 'tempo', uid: tempoUid }, queryType: 'traceId', query: traceId };
  const { ds, body, result } = await dsQueryA(grafana, 'now-15m', 'now', query);
  // Grafana's Tempo datasource: an unknown id is status 404, "failed to get trace with id: <id> Status: 404 …".
  if (result?.error && (result.status === 404 || /Status: 404/.test(String(result.error)))) return { spans: [], via: '/api/ds/query' };
  if (ds.status !== 200 || result?.error) {
    throw new CheckError(
      `trace ${traceId}: the datasource proxy answered ${answers.join(', ')} and /api/ds/query HTTP ${ds.status} (${result?.error ?? body.message ?? ds.body.slice(0, 120)})`,
    );
  }
  return { spans: traceFrameSpans(result?.frames ?? []), via: '/api/ds/query' };
}

const spanList = (spans: Span[]) => spans.map((s) => `"${s.name}" (${s.kind}) of ${s.service || 'no service'}`).join(', ');

/**
 * The app's server span in what Tempo answered for traceId: a span with that trace id, of service
 * `service`, kind server. Throws naming what the trace holds instead (nothing, other trace ids, only
 * other services' spans), so a trace of the traffic generator or of another app cannot stand in.
 */
export function appServerSpan(spans: Span[], traceId: string, service: string = APP_SERVICE): Span {
  if (spans.length === 0) throw new CheckError(`trace ${traceId} is not in Tempo`);
  const ours = spans.filter((s) => s.traceId === traceId);
  if (ours.length === 0) {
    throw new CheckError(`Tempo answered trace ${traceId} with spans of other traces only (${[...new Set(spans.map((s) => s.traceId))].join(', ')})`);
  }
  const server = ours.find((s) => s.service === service && s.kind === 'server');
  if (!server) {
    throw new CheckError(
      `trace ${traceId} has no server span of service "${service}" (spans: ${spanList(ours)}): the app did not continue validate's traceparent, or names its service otherwise (OTEL_SERVICE_NAME)`,
    );
  }
  return server;
}

export interface TraceProof {
  traceId: string;
  /** The app's server span. */
  span: Span;
  /** Spans of the trace in Tempo. */
  spans: number;
  /** Seconds from the request until the trace (with the app's server span) could be queried. */
  traceSeconds: number;
  /** Seconds from the request until its log line could be queried. */
  logSeconds: number;
  via: string;
}

/**
 * Sends one marked GET to the app with a traceparent of validate's own, then waits (in parallel)
 * until Tempo has that trace with the app's server span (appServerSpan) and Loki has the app
 * container's log line with "trace_id":"<id>". Fails naming every part that did not arrive.
 */
export async function checkTrace(
  app: Target,
  grafana: Target,
  pods: AppPods,
  opts: { selector?: string; service?: string; timeoutMs?: number; pollMs?: number; tempoUid?: string; lokiUid?: string } = {},
): Promise<TraceProof> {
  const ctx = newTraceContext();
  const timeoutMs = opts.timeoutMs ?? TRACE_CHECK.timeoutMs;
  const pollMs = opts.pollMs ?? 1000;
  const start = Date.now();
  await sendMarked(app, TRACE_CHECK.route, 1, { traceparent: ctx.traceparent });
  const logQuery = `${appLogSelector(pods, opts.selector)} |= ${JSON.stringify(`"trace_id":"${ctx.traceId}"`)}`;
  const [trace, log] = await Promise.allSettled([
    poll(
      async () => {
        const answer = await tempoTrace(grafana, ctx.traceId, opts.tempoUid);
        const span = appServerSpan(answer.spans, ctx.traceId, opts.service);
        return { span, spans: answer.spans.length, via: answer.via, seconds: (Date.now() - start) / 1000 };
      },
      timeoutMs,
      pollMs,
      `trace ${ctx.traceId} with a server span of ${opts.service ?? APP_SERVICE} in Tempo`,
    ),
    poll(
      async () => ((await lokiQuery(grafana, logQuery, 300, opts.lokiUid)).some((s) => s.values.length > 0) ? (Date.now() - start) / 1000 : undefined),
      timeoutMs,
      pollMs,
      `a log line for ${logQuery} in Loki`,
    ),
  ]);
  const problems = [trace, log].filter((r) => r.status === 'rejected').map((r) => ((r as PromiseRejectedResult).reason as Error).message);
  if (trace.status === 'rejected' || log.status === 'rejected') {
    throw new CheckError(`${problems.join('; ')} (validate sent GET ${TRACE_CHECK.route} with traceparent ${ctx.traceparent}; the app answered)`);
  }
  return { traceId: ctx.traceId, span: trace.value.span, spans: trace.value.spans, traceSeconds: trace.value.seconds, logSeconds: log.value, via: trace.value.via };
}

// ---------------------------------------------------------------------------------------------
// 6. Grafana
// ---------------------------------------------------------------------------------------------

export async function checkGrafanaHealth(grafana: Target): Promise<string> {
  const h = await getJson(grafana, '/api/health');
  if (h.database !== 'ok') throw new CheckError(`Grafana /api/health: database is ${h.database ?? 'unknown'}`);
  return `database ok, version ${h.version ?? 'unknown'}`;
}

/** /api/datasources/uid/<uid>/health answers 200 with status OK (400 with status ERROR otherwise). */
export async function checkDatasourceHealth(grafana: Target, uid: string): Promise<string> {
  const res = await request(grafana, `/api/datasources/uid/${encodeURIComponent(uid)}/health`);
  let body: any = {};
  try {
    body = JSON.parse(res.body);
  } catch {
    /* keep the raw text in the message */
  }
  if (res.status !== 200 || body.status !== 'OK') {
    const why = [body.status, body.message ?? res.body.trim().slice(0, 200)].filter(Boolean).join(' ');
    throw new CheckError(`datasource ${uid}: HTTP ${res.status} ${why}`.trim());
  }
  return body.message ?? 'OK';
}

export interface DashboardQuery {
  refId: string;
  datasource: { type: string; uid: string };
  expr: string;
  panel: string;
}
export interface DashboardFile {
  file: string;
  uid: string;
  title: string;
  queries: DashboardQuery[];
}

/** Replaces Grafana template variables with values a plain API query understands. */
export function substituteVariables(expr: string, vars: Record<string, string>): string {
  const builtins: Record<string, string> = {
    __rate_interval: '2m', __interval: '1m', __range: '5m', __auto: '1m', __interval_ms: '60000', __range_s: '300', __range_ms: '300000',
  };
  // Unknown variables and "All" become ".+": a regex matcher every present label satisfies, and one
  // that Loki accepts (it refuses a selector whose matchers all match the empty string, like ".*").
  const value = (name: string) => builtins[name] ?? vars[name] ?? '.+';
  return expr
    .replace(/\$\{(\w+)(?::[^}]*)?\}/g, (_, n: string) => value(n))
    .replace(/\[\[(\w+)(?::[^\]]*)?\]\]/g, (_, n: string) => value(n))
    .replace(/\$(\w+)/g, (_, n: string) => value(n));
}

/** Reads a dashboard file: uid, title and every query with its datasource resolved to a uid. */
export function parseDashboard(file: string, json: any, uids: Record<string, string> = DATASOURCE_UIDS): DashboardFile {
  const dash = json.dashboard ?? json;
  if (!dash.uid) throw new CheckError(`${file} has no uid`);
  const templ: any[] = dash.templating?.list ?? [];
  const dsVars = new Map<string, string>(templ.filter((v) => v.type === 'datasource').map((v) => [v.name, String(v.query)]));
  const vars: Record<string, string> = {};
  for (const v of templ) {
    if (v.type === 'datasource') continue;
    const cur = v.current?.value ?? v.options?.find((o: any) => o.selected)?.value;
    const first = Array.isArray(cur) ? cur[0] : cur;
    vars[v.name] = first === undefined || first === '$__all' || first === '' ? '.+' : String(first);
  }
  const resolve = (ds: any): { type: string; uid: string } | undefined => {
    if (!ds) return undefined;
    if (typeof ds === 'string') {
      const m = /^\$\{?(\w+)\}?$/.exec(ds);
      const type = m ? dsVars.get(m[1]) : undefined;
      return type && uids[type] ? { type, uid: uids[type] } : undefined;
    }
    const m = /^\$\{?(\w+)\}?$/.exec(ds.uid ?? '');
    const type: string | undefined = m ? dsVars.get(m[1]) ?? ds.type : ds.type;
    if (!type) return undefined;
    const uid = m || !ds.uid ? uids[type] : ds.uid;
    return uid ? { type, uid } : undefined;
  };
  const queries: DashboardQuery[] = [];
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      walk(p.panels);
      for (const t of p.targets ?? []) {
        const ds = resolve(t.datasource) ?? resolve(p.datasource);
        if (!t.expr || !ds || t.hide) continue;
        queries.push({ refId: t.refId ?? 'A', datasource: ds, expr: substituteVariables(t.expr, vars), panel: p.title ?? `panel ${p.id}` });
      }
    }
  };
  walk(dash.panels);
  return { file, uid: dash.uid, title: dash.title ?? dash.uid, queries };
}

/** Every dashboards/*.json of the repository. */
export function readDashboards(dir = path.join(PROJECT_DIR, 'dashboards')): DashboardFile[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => parseDashboard(f, JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))));
}

/** Every dashboard is in Grafana (/api/dashboards/uid/<uid>). */
export async function checkDashboardsPresent(grafana: Target, dashboards: DashboardFile[]): Promise<string> {
  if (dashboards.length === 0) throw new CheckError('no dashboards/*.json in the repository');
  const missing: string[] = [];
  for (const d of dashboards) {
    const res = await request(grafana, `/api/dashboards/uid/${encodeURIComponent(d.uid)}`);
    if (res.status === 404) missing.push(`${d.title} (uid ${d.uid}, ${d.file})`);
    else if (res.status !== 200) throw new CheckError(`dashboard ${d.uid}: HTTP ${res.status} ${res.body.slice(0, 200)}`);
  }
  if (missing.length) throw new CheckError(`missing in Grafana: ${missing.join(', ')}`);
  return `${dashboards.length} dashboards: ${dashboards.map((d) => d.title).join(', ')}`;
}

/** Number of data rows in a /api/ds/query answer for one refId, or an error text. */
export function framesRows(result: any): { rows: number; error?: string } {
  if (!result) return { rows: 0, error: 'no result' };
  if (result.error) return { rows: 0, error: String(result.error) };
  let rows = 0;
  for (const f of result.frames ?? []) {
    const values: unknown[][] = f.data?.values ?? [];
    rows += Math.max(0, ...values.map((v) => (Array.isArray(v) ? v.length : 0)));
  }
  return { rows };
}

/** Runs one query through /api/ds/query over the last 15 minutes. */
export async function dsQuery(grafana: Target, q: DashboardQuery): Promise<{ rows: number; error?: string }> {
  const query: Record<string, unknown> = { refId: 'A', datasource: q.datasource, expr: q.expr, intervalMs: 15000, maxDataPoints: 100 };
  if (q.datasource.type === 'loki') Object.assign(query, { queryType: 'range', maxLines: 10 });
  else Object.assign(query, { range: true, instant: false });
  const res = await request(grafana, '/api/ds/query', { json: { from: 'now-15m', to: 'now', queries: [query] } });
  let body: any;
  try {
    body = JSON.parse(res.body);
  } catch {
    return { rows: 0, error: `HTTP ${res.status} ${res.body.slice(0, 200)}` };
  }
  const r = framesRows(body.results?.A);
  if (res.status !== 200 && !r.error) r.error = `HTTP ${res.status} ${body.message ?? ''}`.trim();
  return r;
}

/**
 * Every query of the dashboard runs without error (a broken query fails, whatever panel it is in),
 * and at least one panel returns data. Panels may be empty on a healthy platform (no target down,
 * no restarts), so an empty panel alone does not fail; the detail counts the panels with data.
 */
export async function checkDashboardData(grafana: Target, d: DashboardFile): Promise<string> {
  if (d.queries.length === 0) throw new CheckError(`${d.file} has no queries with a prometheus or loki datasource`);
  const errors: string[] = [];
  const withData = new Set<string>();
  for (const q of d.queries) {
    const r = await dsQuery(grafana, q);
    if (r.error) errors.push(`"${q.panel}" (${q.refId}): ${r.error}`);
    else if (r.rows > 0) withData.add(q.panel);
  }
  const panels = new Set(d.queries.map((q) => q.panel)).size;
  if (errors.length) throw new CheckError(`${errors.length} of ${d.queries.length} queries failed: ${errors.slice(0, 5).join('; ')}${errors.length > 5 ? '; …' : ''}`);
  if (withData.size === 0) throw new CheckError(`none of ${panels} panels returned data (${d.queries.length} queries, no errors)`);
  return `${withData.size} of ${panels} panels returned data, all ${d.queries.length} queries ran`;
}

// ---------------------------------------------------------------------------------------------
// 7. Freshness
// ---------------------------------------------------------------------------------------------

export interface Freshness {
  id: string;
  metricSeconds: number;
  logSeconds: number;
}

/**
 * Sends a marked GET /api/probe?id=<uuid> and measures when its metric (the probe counter grows
 * by one, series by series, so a restarted pod does not hide it) and its log line of the app
 * container can be queried.
 */
export async function measureFreshness(
  app: Target,
  prom: Target,
  grafana: Target,
  pods: AppPods,
  opts: { selector?: string; timeoutMs?: number; pollMs?: number; lokiUid?: string } = {},
): Promise<Freshness> {
  const metric = `http_requests_total{${opts.selector ?? APP_SELECTOR},route="/api/probe",synthetic="${SYNTHETIC_SOURCE}"}`;
  const before = await promQuery(prom, metric);
  const id = randomUUID();
  const start = Date.now();
  await sendMarked(app, `/api/probe?id=${id}`, 1);
  const timeout = opts.timeoutMs ?? 180000;
  const pollMs = opts.pollMs ?? 1000;
  const logQuery = `${appLogSelector(pods, opts.selector)} |= "${id}"`;
  const [metricSeconds, logSeconds] = await Promise.all([
    poll(
      async () => (counterIncrease(before, await promQuery(prom, metric)).increase >= 1 ? (Date.now() - start) / 1000 : undefined),
      timeout,
      pollMs,
      `${metric} did not grow`,
    ),
    poll(
      async () => ((await lokiQuery(grafana, logQuery, 300, opts.lokiUid)).some((s) => s.values.length > 0) ? (Date.now() - start) / 1000 : undefined),
      timeout,
      pollMs,
      `no log line for ${logQuery}`,
    ),
  ]);
  return { id, metricSeconds, logSeconds };
}

// ---------------------------------------------------------------------------------------------
// One app of `task app` (`task validate -- --app <name>`)
// ---------------------------------------------------------------------------------------------

/** A Kubernetes name as `task app` accepts it (a DNS label). */
const APP_NAME = /^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/;
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

/** Reads `--app <name>` / `--app=<name>` from the arguments; undefined without it. */
export function parseAppArg(argv: string[]): string | undefined {
  const i = argv.findIndex((a) => a === '--app' || a.startsWith('--app='));
  if (i < 0) return undefined;
  const raw = argv[i].includes('=') ? argv[i].slice('--app='.length) : argv[i + 1];
  if (raw === undefined || !APP_NAME.test(raw)) {
    throw new UserError(
      `--app "${raw ?? ''}" is not allowed: expected the name of an app deployed with \`task app\` (lowercase letters, digits and "-", such as --app sample-app).`,
    );
  }
  return raw;
}

/** The record of one app; a missing or malformed record is a UserError naming the file, the key and the fix. */
export function readAppRecord(cfg: Config, name: string): AppRecord {
  const file = appRecordPath(cfg, name);
  const redeploy = `Deploy it again with \`task app -- <dir> --name ${name}\` (it rewrites the record).`;
  if (!fs.existsSync(file)) {
    let known: string[] = [];
    try {
      known = appRecords(cfg).map((r) => r.name);
    } catch {
      /* another record is unreadable: name none rather than hide the answer */
    }
    throw new UserError(
      `no app "${name}": ${file} is missing. ${known.length ? `Apps deployed with \`task app\`: ${known.join(', ')}.` : 'No app has been deployed with `task app` yet.'} ` +
        `Deploy it with \`task app -- <dir> --name ${name}\`.`,
    );
  }
  let rec: any;
  try {
    rec = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UserError(`${file} is not JSON (${(err as Error).message}). ${redeploy}`);
  }
  const bad = (key: string, expected: string) =>
    new UserError(`${file}: ${key}=${JSON.stringify(rec?.[key])} is not allowed: expected ${expected}. ${redeploy}`);
  if (typeof rec !== 'object' || rec === null) throw new UserError(`${file} holds no JSON object. ${redeploy}`);
  if (rec.name !== name) throw bad('name', `"${name}", the name of the file`);
  if (typeof rec.namespace !== 'string' || !APP_NAME.test(rec.namespace)) throw bad('namespace', 'a Kubernetes namespace name');
  if (typeof rec.host !== 'string' || !HOST_NAME.test(rec.host)) throw bad('host', `the route's host name, such as ${name}.${cfg.DOMAIN}`);
  if (rec.metricsPort != null && !(Number.isInteger(rec.metricsPort) && rec.metricsPort >= 1 && rec.metricsPort <= 65535)) {
    throw bad('metricsPort', 'a TCP port from 1 to 65535, or null when the app serves no metrics');
  }
  return rec as AppRecord;
}

/** How old the newest sample may be: Alloy scrapes every 60s (the chart's default), so three missed scrapes. */
export const APP_SAMPLE_MAX_AGE_SECONDS = 180;

/**
 * Every Ready pod of the app scraped (checkTargetsUp), and fresh: the newest `up` sample of each
 * pod is at most maxAgeSeconds old. An instant query still answers a sample up to 5 minutes old, so
 * a stalled scrape or remote write would pass checkTargetsUp alone.
 */
export async function checkAppTargets(prom: Target, app: AppPods, selector: string, maxAgeSeconds = APP_SAMPLE_MAX_AGE_SECONDS): Promise<string> {
  const scraped = await checkTargetsUp(prom, app, selector);
  const ages = (await promQuery(prom, `time() - timestamp(up{${selector}})`)).filter((s) => app.pods.includes(s.metric.pod));
  const oldest = Math.max(...ages.map((s) => s.value));
  const stale = ages.filter((s) => s.value > maxAgeSeconds);
  if (stale.length) {
    throw new CheckError(
      `newest sample older than ${maxAgeSeconds}s: ${stale.map((s) => `pod ${s.metric.pod} ${Math.round(s.value)}s`).join(', ')} (Alloy stopped scraping it, or its remote write to Prometheus stalls)`,
    );
  }
  return `${scraped}; freshness: newest sample of every pod at most ${Math.round(oldest)}s old`;
}

/** The app container's lines of every Ready pod in Loki (checkLogs), and the age of the newest one. */
export async function checkAppLogs(grafana: Target, app: AppPods, selector: string, lokiUid?: string): Promise<string> {
  const detail = await checkLogs(grafana, app, { selector, lokiUid });
  const streams = await lokiQuery(grafana, appLogSelector(app, selector), 300, lokiUid);
  const newestNs = streams.flatMap((s) => s.values.map((v) => BigInt(v[0]))).reduce((a, b) => (b > a ? b : a), 0n);
  const ageSeconds = Math.max(0, (Date.now() - Number(newestNs / 1_000_000n)) / 1000);
  return `${detail}; freshness: newest line ${ageSeconds.toFixed(1)}s old`;
}

// ---------------------------------------------------------------------------------------------
// 8, 9. Alerting: Alertmanager's API (v2), and the sample app's error injection
// ---------------------------------------------------------------------------------------------

/** Alert names other code relies on (alerts/*.rules.yaml; the contract between the alerting parts). */
export const ALERTS = { watchdog: 'Watchdog', appErrors: 'SampleAppErrorRatioHigh' } as const;
/** Alerts Alertmanager would notify about now: firing, neither silenced nor inhibited. */
export const ACTIVE_ALERTS_PATH = '/api/v2/alerts?active=true&silenced=false&inhibited=false';

interface AmAlert {
  labels: Record<string, string>;
  status?: { state?: string };
  startsAt?: string;
}

/** The active alerts Alertmanager holds (GET /api/v2/alerts), each with its labels and state. */
export async function activeAlerts(am: Target): Promise<AmAlert[]> {
  const list = await getJson<AmAlert[]>(am, ACTIVE_ALERTS_PATH);
  if (!Array.isArray(list)) throw new CheckError(`${new URL(ACTIVE_ALERTS_PATH, am.url).href} answered no list of alerts`);
  return list.filter((a) => a.status?.state === 'active');
}

const alertNames = (alerts: AmAlert[]) => [...new Set(alerts.map((a) => a.labels?.alertname ?? '?'))].sort();

/** Watchdog is active in Alertmanager: Prometheus evaluates the rules and its alerts reach Alertmanager. */
export async function checkWatchdog(am: Target): Promise<string> {
  const alerts = await activeAlerts(am);
  const watchdog = alerts.find((a) => a.labels?.alertname === ALERTS.watchdog);
  if (!watchdog) {
    throw new CheckError(
      `${ALERTS.watchdog} is not active in Alertmanager (active: ${alertNames(alerts).join(', ') || 'none'}): Prometheus does not evaluate ` +
        "alerts/platform.rules.yaml, or does not reach Alertmanager, or Watchdog is silenced. See Prometheus' /alerts and /rules pages " +
        'and `task status`.',
    );
  }
  const others = alertNames(alerts).filter((n) => n !== ALERTS.watchdog);
  return `${ALERTS.watchdog} active since ${watchdog.startsAt ?? '?'}; ${others.length ? `also active: ${others.join(', ')}` : 'no other alert active'}`;
}

export interface AlertTiming {
  /** Seconds from the injection's answer to the alert being active in Alertmanager. */
  firingSeconds: number;
  /** Seconds from the end of the injection to the alert leaving Alertmanager's active alerts. */
  resolvedSeconds: number;
}

/** Seconds of an error injection that validate --alerts asks for: it ends by itself if validate is stopped. */
export const INJECTION_SECONDS = 600;

/**
 * Makes the sample app answer every /api/* request with 500 (POST /admin/errors?ratio=1&seconds=N,
 * through its route), measures the seconds until SampleAppErrorRatioHigh is active in Alertmanager,
 * ends the injection (DELETE /admin/errors, whatever happened) and measures the seconds until the
 * alert is no longer active. The traffic generator's requests are what raise the error ratio.
 */
export async function measureAlert(
  app: Target,
  am: Target,
  opts: { injectSeconds?: number; fireTimeoutMs?: number; resolveTimeoutMs?: number; pollMs?: number; alertname?: string } = {},
): Promise<AlertTiming> {
  const alertname = opts.alertname ?? ALERTS.appErrors;
  const pollMs = opts.pollMs ?? 5000;
  const isActive = async () => (await activeAlerts(am)).some((a) => a.labels?.alertname === alertname);
  if (await isActive()) throw new CheckError(`${alertname} is already active before any injection: wait until it resolves, then run validate --alerts again`);
  const injectSeconds = opts.injectSeconds ?? INJECTION_SECONDS;
  const injected = await request(app, `/admin/errors?ratio=1&seconds=${injectSeconds}`, { method: 'POST' });
  if (injected.status !== 200) {
    throw new CheckError(`POST ${new URL('/admin/errors', app.url).href} answered HTTP ${injected.status}: ${injected.body.trim().slice(0, 200)}`);
  }
  const start = Date.now();
  let firingSeconds: number;
  try {
    const fireTimeoutMs = opts.fireTimeoutMs ?? 360000;
    firingSeconds = await poll(async () => ((await isActive()) ? (Date.now() - start) / 1000 : undefined), fireTimeoutMs, pollMs, `${alertname} active in Alertmanager after errors were injected`);
  } finally {
    const ended = await request(app, '/admin/errors', { method: 'DELETE' }).catch((err: Error) => ({ status: 0, body: err.message }));
    if (ended.status < 200 || ended.status > 299) {
      warn(`DELETE ${new URL('/admin/errors', app.url).href} answered ${ended.status ? `HTTP ${ended.status}` : 'nothing'} (${ended.body.trim().slice(0, 200)}): the injection ends by itself ${injectSeconds}s after it started`);
    }
  }
  const stopped = Date.now();
  const resolvedSeconds = await poll(
    async () => ((await isActive()) ? undefined : (Date.now() - stopped) / 1000),
    opts.resolveTimeoutMs ?? 600000,
    pollMs,
    `${alertname} resolved after the injection ended`,
  );
  return { firingSeconds, resolvedSeconds };
}

/** Reads `--alerts` from the arguments. */
export const parseAlerts = (argv: string[]) => argv.includes('--alerts');

// ---------------------------------------------------------------------------------------------
// Diagnostics (kubectl), printed when a check failed
// ---------------------------------------------------------------------------------------------

const indentLines = (text: string, n = 6) => text.replace(/^/gm, ' '.repeat(n));

/** Unready pods (of our namespaces, or the given ones) with their events and last log lines; Alloy's error lines; down targets. */
export async function diagnostics(cfg: Config, prom: Target | undefined, namespaces: readonly string[] = OUR_NAMESPACES): Promise<string[]> {
  const out: string[] = [];
  const get = async (args: string[]) => JSON.parse((await kubectl(cfg, [...args, '-o', 'json'])).stdout).items as KObject[];
  out.push(await podDiagnostics(cfg, namespaces));
  let pods: KObject[] = [];
  try {
    pods = await get(['get', 'pods', '--namespace', 'monitoring']);
  } catch (err) {
    out.push(`cannot list pods in monitoring: ${(err as Error).message.split('\n')[0]}`);
  }
  // Alloy: its pods, their error/warning lines, and the scrape targets it reports down.
  const alloy = pods.filter((p) => p.metadata.namespace === 'monitoring' && p.metadata.name.includes('alloy'));
  if (alloy.length === 0) out.push('no Alloy pods in namespace monitoring');
  for (const p of alloy) {
    try {
      const logs = (await kubectl(cfg, ['logs', '--namespace', 'monitoring', p.metadata.name, '--all-containers', '--tail', '300'])).stdout;
      const errors = logs.split('\n').filter((l) => /level=(error|warn)|"level":"(error|warn)"/i.test(l)).slice(-15);
      out.push(`alloy ${p.metadata.name}: ${errors.length ? `last error/warning lines:\n${indentLines(errors.join('\n'))}` : 'no error or warning lines in the last 300'}`);
    } catch (err) {
      // kubectl's own words (the last line it printed), not only the command that failed.
      const said = err instanceof CommandError ? err.output.trim().split('\n').at(-1) : undefined;
      out.push(`alloy ${p.metadata.name}: ${said ? `kubectl logs: ${said}` : (err as Error).message.split('\n')[0]}`);
    }
  }
  if (prom) {
    try {
      const down = await promQuery(prom, 'up == 0');
      const all = await promQuery(prom, 'count by (job) (up)');
      out.push(`scrape targets (Alloy → Prometheus): ${all.map((s) => `${s.metric.job ?? '?'}=${s.value}`).join(', ') || 'none'}`);
      out.push(down.length ? `targets down:\n${indentLines(down.map((s) => seriesName(s.metric)).join('\n'))}` : 'no target is down');
    } catch (err) {
      out.push(`scrape targets: Prometheus not reachable (${(err as Error).message.split('\n')[0]})`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------------------

/** Where the routes are dialled: Traefik's address, and how the check lines name it ("via …"). */
export interface RouteAccess {
  connect: { host: string; port: number };
  via: string;
  /** Ends what was started to reach the routes (the port-forward); nothing on Talos. */
  stop: () => void;
}

/** The route targets: https://<name>.<DOMAIN>, dialled at `connect` (routeAccess), trusting only our CA. */
export function routeTargets(cfg: Config, ca: string, connect: RouteAccess['connect']): Record<RouteName, Target> {
  const t = (name: string): Target => ({ url: `https://${name}.${cfg.DOMAIN}`, ca, connect });
  return { grafana: t('grafana'), prometheus: t('prometheus'), alertmanager: t('alertmanager'), traefik: t('traefik'), app: t('app') };
}

/** Traefik's Service and the port (by its name in the chart) validate forwards to with CLUSTER=existing. */
export const FORWARDED_SERVICE = { namespace: 'traefik', service: 'traefik', port: 'websecure' } as const;
/**
 * kubectl port-forward's answers that no retry changes: the Service is not there, it has no such
 * port (cmd/portforward translateServicePortToTargetPort), or the user may not forward (RBAC).
 */
export const PERMANENT_FORWARD_ERROR = /Error from server \((NotFound|Forbidden)\)|does not have a (service|named) port/;

/** How long `kubectl port-forward` may take to say where it listens. */
export const PORT_FORWARD_READY_MS = 30_000;

/** The local port of kubectl port-forward's first "Forwarding from 127.0.0.1:<port> -> <port>" line (client-go portforward.go), or undefined. */
export const forwardedPort = (output: string) => {
  const m = /^Forwarding from 127\.0\.0\.1:(\d+) -> \d+$/m.exec(output);
  return m ? Number(m[1]) : undefined;
};

/** The Service validate forwards to: Traefik's, or with INGRESS_CLASS the controller's of INGRESS_SERVICE. */
export type ForwardedService = { namespace: string; service: string; port: string };

/**
 * `kubectl port-forward service/traefik :websecure` (or `forwarded`) on a free local port, running
 * until stop() (also when this process exits or is interrupted): the routes are then checked through
 * 127.0.0.1:<port> with the same names (Host, SNI) and CA, so the ingress's routing and TLS are still
 * proven where its LoadBalancer or NodePort cannot be reached from this machine.
 */
export async function startPortForward(cfg: Config, readyMs = PORT_FORWARD_READY_MS, forwarded: ForwardedService = FORWARDED_SERVICE): Promise<RouteAccess> {
  const target = kubectlTarget(cfg);
  const { namespace, service, port } = forwarded;
  const notRunningHint = forwarded === FORWARDED_SERVICE ? 'Is Traefik installed (`task traefik`) with a Ready pod?' : `Is INGRESS_SERVICE=${cfg.INGRESS_SERVICE} your ${cfg.INGRESS_CLASS} controller's Service, with a Ready pod?`;
  const args = [...target.args, 'port-forward', '--namespace', namespace, `service/${service}`, `:${port}`];
  const child = spawn('kubectl', args, { env: { ...process.env, ...target.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stopping = false;
  const stop = () => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  const onSignal = (signal: NodeJS.Signals) => {
    stop();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('exit', stop);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const stopAll = () => {
    stop();
    process.removeListener('exit', stop);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  };
  let stdout = '';
  let stderr = '';
  let forwarding = false;
  const local = await new Promise<number>((resolve, reject) => {
    // Not starting at all (no kubectl), or kubectl's answer that the Service or its port does not
    // exist or may not be forwarded, is final; exiting otherwise (no Ready pod yet) or not forwarding
    // yet is retried within --wait.
    const fail = (why: string, final = false) => {
      stopAll();
      const message = `\`kubectl ${args.slice(target.args.length).join(' ')}\` ${why}${stderr.trim() ? `:\n${stderr.trim()}` : ''}\n${notRunningHint}`;
      reject(final ? new UserError(message) : new CheckError(message));
    };
    const timer = setTimeout(() => fail(`did not start forwarding within ${readyMs / 1000}s`), readyMs);
    // Read on after the first line too ("Handling connection for …" per connection), so the pipe never fills.
    child.stdout.on('data', (d) => {
      stdout += d;
      const found = forwardedPort(stdout);
      if (found !== undefined && !forwarding) {
        forwarding = true;
        clearTimeout(timer);
        resolve(found);
      }
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      fail(`did not start (${err.message})`, true);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!forwarding) return fail(`exited with code ${code}`, PERMANENT_FORWARD_ERROR.test(stderr));
      // It ended while validate still ran (the pod went away, the connection to it broke): say so,
      // or the checks after this would only see a refused connection on 127.0.0.1.
      if (stopping) return;
      stopAll();
      warn(`\`kubectl ${args.slice(target.args.length).join(' ')}\` stopped forwarding (exit code ${code})${stderr.trim() ? `: ${stderr.trim().split('\n').at(-1)}` : ''}; the checks after this cannot reach the routes. Run \`task validate\` again.`);
    });
  });
  return { connect: { host: '127.0.0.1', port: local }, via: `kubectl port-forward 127.0.0.1:${local}`, stop: stopAll };
}

/**
 * How validate reaches the routes: HOST_IP:HTTPS_PORT on Talos; through a port-forward to Traefik with
 * CLUSTER=existing; with INGRESS_CLASS through a port-forward to INGRESS_SERVICE when it is set, else
 * the address the controller published on our Ingresses, port 443 (neither: a UserError naming
 * INGRESS_SERVICE).
 */
export async function routeAccess(cfg: Config): Promise<RouteAccess> {
  if (cfg.CLUSTER !== 'existing') {
    const connect = { host: namesAddress(cfg.HOST_IP), port: cfg.HTTPS_PORT };
    return { connect, via: `${connect.host}:${connect.port}`, stop: () => {} };
  }
  if (cfg.INGRESS_CLASS) return ingressClassAccess(cfg);
  const access = await startPortForward(cfg);
  note(`CLUSTER=existing: the routes are checked through ${access.via} → service/${FORWARDED_SERVICE.service} (${FORWARDED_SERVICE.port}) in ${FORWARDED_SERVICE.namespace}, with their names and our CA; it stops when validate ends`);
  return access;
}

/** INGRESS_CLASS: the routes through a port-forward to INGRESS_SERVICE, else at the address on our Ingresses (routeAccess). */
async function ingressClassAccess(cfg: Config): Promise<RouteAccess> {
  const forwarded = ingressService(cfg);
  if (forwarded) {
    const access = await startPortForward(cfg, PORT_FORWARD_READY_MS, forwarded);
    note(`INGRESS_CLASS=${cfg.INGRESS_CLASS}: the routes are checked through ${access.via} → service/${forwarded.service} (${forwarded.port}) in ${forwarded.namespace} (INGRESS_SERVICE), with their names and our CA; it stops when validate ends`);
    return access;
  }
  const ingresses = JSON.parse((await kubectl(cfg, ['get', 'ingresses', '--namespace', ROUTES_NAMESPACE, '-o', 'json'])).stdout).items ?? [];
  const reached = ingressClassAddressOf(ingresses, cfg.INGRESS_CLASS);
  if ('missing' in reached) {
    // The controller may publish an address a little later: retried within --wait.
    throw new CheckError(
      `INGRESS_CLASS=${cfg.INGRESS_CLASS}: the routes cannot be reached: INGRESS_SERVICE is not set, and ${reached.missing}. ` +
        `Set INGRESS_SERVICE=<namespace>/<service>[:<port>] in .env to your ${cfg.INGRESS_CLASS} controller's Service (such as ingress-nginx/ingress-nginx-controller:https): validate then port-forwards to it.`,
    );
  }
  // A published address is not always one this machine reaches: ingress-nginx behind a NodePort
  // Service publishes that Service's ClusterIP (statusAddressFromService), which answers only inside the cluster.
  const refused = await tcpProblem(reached.address, reached.port, ADDRESS_CONNECT_MS);
  if (refused) {
    throw new CheckError(
      `INGRESS_CLASS=${cfg.INGRESS_CLASS}: the address the controller published on our Ingresses, ${reached.address}:${reached.port}, does not answer from this machine (${refused}); ` +
        `a controller behind a NodePort or ClusterIP Service may publish an in-cluster address. Set INGRESS_SERVICE=<namespace>/<service>[:<port>] in .env to the controller's Service (such as ingress-nginx/ingress-nginx-controller:https): validate then port-forwards to it.`,
    );
  }
  note(`INGRESS_CLASS=${cfg.INGRESS_CLASS}: the routes are checked at ${reached.how}, with their names and our CA (set INGRESS_SERVICE to go through a port-forward instead)`);
  return { connect: { host: reached.address, port: reached.port }, via: `${reached.address}:${reached.port}`, stop: () => {} };
}

/** How long validate waits for a TCP connection to an ingress address it was given. */
export const ADDRESS_CONNECT_MS = 5000;

/** Why a TCP connection to host:port cannot be made within `ms` (refused, unreachable, timed out), or undefined when it can. */
export function tcpProblem(host: string, port: number, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (problem?: string) => {
      socket.destroy();
      resolve(problem);
    };
    socket.setTimeout(ms, () => done(`no answer within ${ms / 1000}s`));
    socket.once('connect', () => done());
    socket.once('error', (err) => done(err.message));
  });
}

/** The routes validate checks: ROUTES without Traefik's dashboard when INGRESS_CLASS serves them (no Traefik). */
export const checkedRoutes = (cfg: Pick<Config, 'INGRESS_CLASS'>) => ROUTES.filter((r) => !(cfg.INGRESS_CLASS && r.name === 'traefik'));

/**
 * The namespaces whose pods validate expects: OUR_NAMESPACES without local-path-storage when the
 * storage phase used the cluster's own default StorageClass (lib installedRecord: localPath false),
 * and without traefik when INGRESS_CLASS serves the routes (no Traefik was installed).
 */
export function ourNamespaces(cfg: Config): readonly string[] {
  return OUR_NAMESPACES.filter((n) => !(n === 'local-path-storage' && installedRecord(cfg).localPath === false) && !(n === 'traefik' && cfg.INGRESS_CLASS));
}

function readStateFile(cfg: Config, name: string, fix: string): string {
  const file = statePath(cfg, name);
  if (!fs.existsSync(file)) throw new UserError(`${file} is missing. ${fix}`);
  return fs.readFileSync(file, 'utf8').trim();
}

/**
 * Prometheus writes its TSDB (head and WAL) on its volume: prometheus_tsdb_head_series of the server
 * (scraped by Alloy, job="prometheus"; dashboards/metrics-catalogue.yaml) is above 0.
 */
export async function checkPrometheusWrites(prom: Target): Promise<string> {
  const series = await promQuery(prom, PROMETHEUS_HEAD_SERIES);
  const top = Math.max(0, ...series.map((s) => s.value));
  if (top <= 0) throw new CheckError(series.length ? `${PROMETHEUS_HEAD_SERIES} is 0: Prometheus holds no series` : `no ${PROMETHEUS_HEAD_SERIES} series: Prometheus is not scraped yet`);
  return `${top} series in its head`;
}
export const PROMETHEUS_HEAD_SERIES = 'prometheus_tsdb_head_series{job="prometheus"}';

/** What validate's cluster checks read, by kind: one `kubectl get` of CLUSTER_KINDS. */
export interface ClusterRead {
  nodes: KObject[];
  pods: KObject[];
  claims: KObject[];
  volumes: KObject[];
  deployments: KObject[];
}
export const CLUSTER_KINDS = 'nodes,pods,persistentvolumeclaims,persistentvolumes,deployments';
/** Splits the List of `kubectl get CLUSTER_KINDS --all-namespaces -o json` by kind. */
export function splitClusterRead(items: KObject[]): ClusterRead {
  const of = (kind: string) => items.filter((o) => o.kind === kind);
  return { nodes: of('Node'), pods: of('Pod'), claims: of('PersistentVolumeClaim'), volumes: of('PersistentVolume'), deployments: of('Deployment') };
}
/** A cluster read older than this is read again (checks in between take seconds to a scrape interval). */
export const CLUSTER_READ_MAX_AGE_MS = 30_000;

/** The sample app's Deployment (and its pods) from a cluster read. */
export function sampleAppPods(read: ClusterRead): AppPods {
  const deployment = read.deployments.find((d) => d.metadata.namespace === APP_NAMESPACE && d.metadata.name === APP_DEPLOYMENT);
  if (!deployment) throw new CheckError(`no Deployment ${APP_NAMESPACE}/${APP_DEPLOYMENT}: run \`task sample-app\``);
  return appPods(deployment, read.pods.filter((p) => p.metadata.namespace === APP_NAMESPACE));
}

/** Seconds the platform may take to settle (pods Ready, targets discovered, first scrape): `--wait N`. */
export const DEFAULT_WAIT_SECONDS = 180;
const RETRY_MS = 3000;

/** Reads `--wait N` / `--wait=N` from the arguments. */
export function parseWait(argv: string[]): number {
  const i = argv.findIndex((a) => a === '--wait' || a.startsWith('--wait='));
  if (i < 0) return DEFAULT_WAIT_SECONDS;
  const raw = argv[i].includes('=') ? argv[i].split('=')[1] : argv[i + 1];
  if (raw === undefined || !/^\d+$/.test(raw)) {
    throw new UserError(`--wait "${raw ?? ''}" is not allowed: expected a whole number of seconds, such as --wait 180 (0: every check tries once).`);
  }
  return Number(raw);
}

interface CheckRunner {
  verify: (title: string, fn: () => Promise<string | void>, retry?: boolean) => Promise<void>;
  failed: string[];
}

/**
 * Runs checks (steps that change nothing) and keeps the titles of those that failed. Until the
 * settle deadline (`--wait`) a failing check is retried (a freshly deployed platform needs a scrape
 * interval or two); after it, a failure is noted and the next check runs.
 */
function checkRunner(waitSeconds: number, onRetry: () => void = () => {}): CheckRunner {
  const settleUntil = Date.now() + waitSeconds * 1000;
  const failed: string[] = [];
  const verify = async (title: string, fn: () => Promise<string | void>, retry = true) => {
    try {
      await check(title, async () => {
        let told = false;
        for (;;) {
          try {
            return await fn();
          } catch (err) {
            if (!retry || err instanceof UserError || Date.now() + RETRY_MS > settleUntil) throw err;
            if (!told) note(`not yet, retrying for up to ${Math.round((settleUntil - Date.now()) / 1000)}s: ${(err as Error).message.split('\n')[0]}`);
            told = true;
            await sleep(RETRY_MS);
            onRetry();
          }
        }
      });
    } catch (err) {
      failed.push(title);
      warn((err as Error).message.replace(/\n/g, '\n    '));
    }
  };
  return { verify, failed };
}

/** The route access reachRoutes started in this process: validatePhase stops it at the end. */
let routeAccessStarted: RouteAccess | undefined;

/** Our CA (the traefik phase makes it) and Grafana's admin password (the observability phase makes it), from the state dir. */
function platformSecrets(cfg: Config) {
  const ca = readStateFile(cfg, 'certs/ca.crt', 'Run `task traefik` (it generates the certificates).');
  const password = readStateFile(cfg, 'grafana-admin-password', 'Run `task observability` (it generates the Grafana admin password).');
  return { ca, password };
}

/** A title of the check that stands for every check through the routes when they cannot be reached. */
export const UNREACHED_ROUTES_CHECK = 'Checks through the routes (metrics, logs, traces, Grafana, freshness, alerting)';

/**
 * The route targets (routeAccess: started here, stopped by validatePhase) and Grafana with its admin
 * password. On Talos they are HOST_IP:HTTPS_PORT, nothing to start. With CLUSTER=existing reaching
 * them is a check of its own, after the cluster checks (the port-forward needs a Ready Traefik pod,
 * so it is retried within --wait); when it fails, one more failed line stands for the checks that
 * need the routes, and there are no targets.
 */
async function reachRoutes(cfg: Config, ca: string, password: string, verify: CheckRunner['verify']) {
  let access: RouteAccess | undefined;
  if (cfg.CLUSTER !== 'existing') access = await routeAccess(cfg);
  else {
    await verify('Routes reachable from this machine', async () => {
      access = await routeAccess(cfg);
      return access.via;
    });
  }
  if (!access) {
    await verify(UNREACHED_ROUTES_CHECK, async () => {
      throw new UserError('not run: the routes cannot be reached from this machine (see above)');
    });
    return undefined;
  }
  routeAccessStarted = access;
  const routes = routeTargets(cfg, ca, access.connect);
  const grafana: Target = { ...routes.grafana, auth: { user: 'admin', password } };
  return { routes, grafana, access };
}

/** Prints the diagnostics and fails the phase when a check failed. */
async function reportFailures(cfg: Config, failed: string[], prom: Target | undefined, namespaces?: readonly string[]): Promise<void> {
  if (failed.length === 0) return;
  note('Diagnostics:');
  for (const line of await diagnostics(cfg, prom, namespaces)) console.log(indentLines(line, 4));
  throw new UserError(`${failed.length} check(s) failed: ${failed.join('; ')}. See the messages and diagnostics above.`);
}

/** `task validate -- --app <name>`: the checks of one app of `task app` (header). */
async function validateApp(cfg: Config, name: string, waitSeconds: number): Promise<void> {
  const app = readAppRecord(cfg, name);
  const { verify, failed } = checkRunner(waitSeconds);
  await requireCluster(cfg);
  const { ca, password } = platformSecrets(cfg);
  const selector = `namespace="${app.namespace}"`;
  const readDeployment = async (): Promise<[KObject, KObject[]]> => [
    JSON.parse((await kubectl(cfg, ['get', 'deployment', app.name, '--namespace', app.namespace, '-o', 'json'])).stdout),
    JSON.parse((await kubectl(cfg, ['get', 'pods', '--namespace', app.namespace, '-o', 'json'])).stdout).items,
  ];
  const readPods = async () => appPods(...(await readDeployment()));
  await verify(`App ${name}: pods of Deployment ${app.namespace}/${app.name} Ready`, async () => checkDeploymentReady(...(await readDeployment())));
  const reached = await reachRoutes(cfg, ca, password, verify);
  if (!reached) return reportFailures(cfg, failed, undefined, [app.namespace]);
  const { routes, grafana, access } = reached;
  const route: Target = { url: `https://${app.host}`, ca, connect: access.connect };
  await verify(`App ${name}: route https://${app.host}/ via ${access.via}`, () => checkRoute(route, '/'));
  if (app.metricsPort == null) {
    note(`${name} serves no metrics (deployed without --metrics-port): no scrape to check. \`task app -- <dir> --name ${name} --metrics-port <port>\` adds it.`);
  } else {
    await verify(`App ${name}: every Ready pod scraped (up == 1) with ${METRIC_LABELS.join(', ')}, samples fresh`, async () =>
      checkAppTargets(routes.prometheus, await readPods(), selector),
    );
  }
  await verify(`App ${name}: container logs of every Ready pod in Loki (via Grafana) in the last 5 minutes`, async () =>
    checkAppLogs(grafana, await readPods(), selector),
  );
  await reportFailures(cfg, failed, routes.prometheus, [app.namespace]);
}

async function validate(cfg: Config): Promise<void> {
  const argv = process.argv.slice(2);
  const waitSeconds = parseWait(argv);
  const withAlerts = parseAlerts(argv);
  const withSmoke = argv.includes('--smoke');
  const appName = parseAppArg(argv);
  if (appName) return validateApp(cfg, appName, waitSeconds);
  // One read of the cluster serves every check; read again when a check retries (what it read may
  // be what it waits for) or when older than CLUSTER_READ_MAX_AGE_MS (pods come and go).
  let cached: { at: number; read: Promise<ClusterRead> } | undefined;
  const cluster = () => {
    if (!cached || Date.now() - cached.at > CLUSTER_READ_MAX_AGE_MS) {
      const read = kubectl(cfg, ['get', CLUSTER_KINDS, '--all-namespaces', '-o', 'json']).then((r) => splitClusterRead(JSON.parse(r.stdout).items));
      cached = { at: Date.now(), read };
      read.catch(() => (cached = undefined));
    }
    return cached.read;
  };
  const { verify, failed } = checkRunner(waitSeconds, () => (cached = undefined));
  await requireCluster(cfg);
  const { ca, password } = platformSecrets(cfg);
  const namespaces = ourNamespaces(cfg);
  const readAppPods = async () => sampleAppPods(await cluster());

  // 1. Cluster state
  await verify('Nodes Ready', async () => checkNodes((await cluster()).nodes));
  await verify(`Pods Ready in ${namespaces.join(', ')}`, async () => checkPods((await cluster()).pods, namespaces));
  await verify(`Prometheus and Loki volumes Bound to ${volumeClass(cfg)} volumes`, async () => {
    const { claims, volumes } = await cluster();
    return checkVolumes(claims, volumes, volumeClass(cfg));
  });
  // 2. Storage: read-only unless --smoke
  if (withSmoke) {
    await verify('Storage smoke test (scripts/storage.ts --smoke)', async () => {
      // Its own phase record would count as a phase of `task deploy`: DEPLOY_RUN_ID is cleared.
      await run(process.execPath, ['--import', 'tsx', path.join(PROJECT_DIR, 'scripts', 'storage.ts'), '--smoke'], { env: { DEPLOY_RUN_ID: '' } });
      return `a pod wrote and read back a file on a ${volumeClass(cfg)} volume`;
    }, false);
  }
  const reached = await reachRoutes(cfg, ca, password, verify);
  if (!reached) return reportFailures(cfg, failed, undefined, namespaces);
  const { routes, grafana, access } = reached;
  await verify('Prometheus: writes its TSDB to its volume (prometheus_tsdb_head_series > 0)', () => checkPrometheusWrites(routes.prometheus));
  // 3. Routes
  for (const r of checkedRoutes(cfg)) {
    await verify(`Route https://${r.name}.${cfg.DOMAIN}${r.path} via ${access.via}`, () => checkRoute(routes[r.name], r.path));
  }
  // 4. Prometheus
  await verify('Prometheus: every Ready sample app pod scraped (up == 1) with namespace, pod, container, node, job', async () =>
    checkTargetsUp(routes.prometheus, await readAppPods()),
  );
  // These two wait by themselves (for the next scrape): no retry around them.
  await verify("Prometheus: validate's requests to the sample app counted", () => checkRequestMetrics(routes.prometheus, routes.app), false);
  // 5. Loki
  await verify('Loki (via Grafana): app container logs of every Ready sample app pod in the last 5 minutes with namespace, pod, container, node', async () =>
    checkLogs(grafana, await readAppPods()),
  );
  // 5b. Traces (each try sends a request with a new trace id and waits for it by itself)
  let traced: TraceProof | undefined;
  await verify(`Traces (via Grafana): a request with validate's traceparent → its trace in Tempo (server span of ${APP_SERVICE}) and its log line in Loki`, async () => {
    traced = await checkTrace(routes.app, grafana, await readAppPods());
    return `trace ${traced.traceId}: ${traced.spans} spans, server span "${traced.span.name}" (via ${traced.via}); trace after ${traced.traceSeconds.toFixed(1)}s, log line after ${traced.logSeconds.toFixed(1)}s`;
  });
  // 6. Grafana
  await verify('Grafana healthy', () => checkGrafanaHealth(grafana));
  for (const uid of Object.values(DATASOURCE_UIDS)) {
    await verify(`Grafana datasource "${uid}" healthy`, () => checkDatasourceHealth(grafana, uid));
  }
  let dashboards: DashboardFile[] = [];
  await verify('Grafana has every dashboard of dashboards/', async () => {
    dashboards = readDashboards();
    return checkDashboardsPresent(grafana, dashboards);
  });
  for (const d of dashboards) {
    await verify(`Dashboard "${d.title}": every query runs, panels return data`, () => checkDashboardData(grafana, d));
  }
  // 7. Freshness
  await verify('Freshness: probe request → metric and log line queryable', async () => {
    // Without queryable metrics or logs it can only time out: say so at once.
    const blocked = failed.filter((t) => t.startsWith("Prometheus: validate's requests") || t.startsWith('Loki'));
    if (blocked.length) throw new CheckError(`not measured: ${blocked.join('; ')} failed above`);
    const f = await measureFreshness(routes.app, routes.prometheus, grafana, await readAppPods());
    const trace = traced ? `trace after ${traced.traceSeconds.toFixed(1)}s (trace_id=${traced.traceId})` : 'trace not measured (the Traces check failed above)';
    return `metric after ${f.metricSeconds.toFixed(1)}s, log line after ${f.logSeconds.toFixed(1)}s (probe_id=${f.id}); ${trace}`;
  }, false);
  // 8, 9. Alerting
  await verify(`Alertmanager: ${ALERTS.watchdog} active (rules → Prometheus → Alertmanager)`, () => checkWatchdog(routes.alertmanager));
  if (withAlerts) {
    await verify(`Alert ${ALERTS.appErrors}: fires on injected errors, resolves after (--alerts)`, async () => {
      if (failed.some((t) => t.startsWith('Alertmanager:'))) throw new CheckError('not measured: the Alertmanager check failed above');
      note(`injecting errors into the sample app (up to ${INJECTION_SECONDS}s), waiting for ${ALERTS.appErrors}: usually 2-3 minutes, then a few to resolve`);
      const t = await measureAlert(routes.app, routes.alertmanager);
      return `active ${t.firingSeconds.toFixed(0)}s after the injection, resolved ${t.resolvedSeconds.toFixed(0)}s after it ended`;
    }, false);
  } else {
    note('`task validate -- --alerts` also proves that an alert fires on injected app errors and resolves (a few minutes)');
  }

  await reportFailures(cfg, failed, routes.prometheus, namespaces);
}

/** validate, then the end of what reachRoutes started to reach the routes (the port-forward), whatever happened. */
async function validatePhase(cfg: Config): Promise<void> {
  try {
    await validate(cfg);
  } finally {
    routeAccessStarted?.stop();
  }
}

if (isMain(import.meta.url)) await runPhase('validate', validatePhase);
