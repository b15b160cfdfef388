// Phase "app" (`task app`): your own app, built, deployed observed, routed and with a dashboard.
// (Work in progress on this branch: the dashboard generator comes first.)
//
// Reads .env keys: none yet.
// Tools: none yet.
// ---------------------------------------------------------------------------------------------
// The dashboard generator
// ---------------------------------------------------------------------------------------------

/**
 * The HTTP metric conventions the generator knows, first match wins. `requests` is the counter of
 * requests (a histogram's _count where the client has no counter), `duration` the histogram family
 * (queries use its _bucket, _sum and _count series), `statusLabels` the label that carries the HTTP
 * status in that client (5xx are the errors). Go's promhttp_metric_handler_requests_total is not in
 * the table on purpose: it counts only the scrapes of /metrics, not the app's requests.
 */
export const HTTP_CONVENTIONS = [
  {
    client: 'prom-client (Node.js), Go promhttp.InstrumentHandler*, prometheus-fastapi-instrumentator (Python)',
    requests: 'http_requests_total',
    duration: 'http_request_duration_seconds',
    statusLabels: ['status', 'code', 'status_code'],
  },
  { client: 'express-prom-bundle (Node.js)', requests: 'http_request_duration_seconds_count', duration: 'http_request_duration_seconds', statusLabels: ['status_code'] },
  { client: 'Micrometer (Java, Spring Boot)', requests: 'http_server_requests_seconds_count', duration: 'http_server_requests_seconds', statusLabels: ['status'] },
  { client: 'prometheus_flask_exporter (Python)', requests: 'flask_http_request_total', duration: 'flask_http_request_duration_seconds', statusLabels: ['status'] },
  { client: 'starlette_exporter (Python)', requests: 'starlette_requests_total', duration: 'starlette_request_duration_seconds', statusLabels: ['status_code'] },
  {
    client: 'OpenTelemetry HTTP semantic conventions',
    requests: 'http_server_request_duration_seconds_count',
    duration: 'http_server_request_duration_seconds',
    statusLabels: ['http_response_status_code'],
  },
] as const;
export type HttpConvention = (typeof HTTP_CONVENTIONS)[number];

/** Process metrics of the Prometheus clients (Go, Node.js, Python, Java simpleclient): one panel each when present. */
export const PROCESS_METRICS = [
  { metric: 'process_cpu_seconds_total', title: 'Process CPU (cores)', unit: 'short', rate: true },
  { metric: 'process_resident_memory_bytes', title: 'Process resident memory', unit: 'bytes', rate: false },
  { metric: 'process_open_fds', title: 'Open file descriptors', unit: 'short', rate: false },
  { metric: 'go_goroutines', title: 'Goroutines', unit: 'short', rate: false },
  { metric: 'nodejs_eventloop_lag_p99_seconds', title: 'Event loop lag p99', unit: 's', rate: false },
  { metric: 'nodejs_heap_size_used_bytes', title: 'Node.js heap used', unit: 'bytes', rate: false },
  { metric: 'jvm_memory_used_bytes', title: 'JVM memory used', unit: 'bytes', rate: false },
] as const;

/** The first HTTP convention whose request series is among the names, or undefined. */
export const httpConvention = (metricNames: readonly string[]): HttpConvention | undefined =>
  HTTP_CONVENTIONS.find((c) => metricNames.includes(c.requests));

const PROM = { type: 'prometheus', uid: '${datasource}' };
const LOKI = { type: 'loki', uid: '${loki_datasource}' };

interface PanelSpec {
  title: string;
  description?: string;
  unit: string;
  /** [expr, legend] pairs. */
  queries: [string, string][];
  type?: 'timeseries' | 'stat';
}

function promPanel(spec: PanelSpec, id: number, gridPos: Record<string, number>): Record<string, unknown> {
  const targets = spec.queries.map(([expr, legend], i) => ({
    refId: String.fromCharCode(65 + i),
    datasource: PROM,
    editorMode: 'code',
    expr,
    legendFormat: legend,
    range: true,
    instant: false,
  }));
  const type = spec.type ?? 'timeseries';
  return {
    id,
    type,
    title: spec.title,
    ...(spec.description ? { description: spec.description } : {}),
    datasource: PROM,
    targets,
    fieldConfig: {
      defaults: {
        unit: spec.unit,
        ...(type === 'timeseries'
          ? { min: 0, custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false } }
          : { thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }] } }),
      },
      overrides: [],
    },
    options:
      type === 'timeseries'
        ? { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } }
        : { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', textMode: 'auto' },
    gridPos,
  };
}

/** The RED panels for one convention; selector is the app's label matchers ("namespace=…, job=…"). */
export function redPanels(c: HttpConvention, metricNames: readonly string[], selector: string): PanelSpec[] {
  const rate = (series: string, extra = '') => `sum(rate(${series}{${selector}${extra}}[$__rate_interval]))`;
  // Clients name the status label differently: the 5xx rate over each candidate label, whichever exists.
  const errors = c.statusLabels.map((l) => rate(c.requests, `, ${l}=~"5.."`)).join(' or ');
  const panels: PanelSpec[] = [
    { title: 'Requests/s', unit: 'reqps', queries: [[rate(c.requests), 'requests/s']], description: `${c.requests} (${c.client})` },
    {
      title: 'Error ratio (5xx)',
      unit: 'percentunit',
      description: `Share of requests answered with a 5xx (${c.statusLabels.join(' or ')} label of ${c.requests}); 0 when there were none.`,
      queries: [[`(${errors} or vector(0)) / ${rate(c.requests)}`, '5xx share']],
    },
  ];
  const has = (suffix: string) => metricNames.includes(`${c.duration}${suffix}`);
  if (has('_bucket')) {
    const q = (p: number) => `histogram_quantile(${p}, sum by (le) (rate(${c.duration}_bucket{${selector}}[$__rate_interval])))`;
    panels.push({ title: 'Duration p50 / p95 / p99', unit: 's', queries: [[q(0.5), 'p50'], [q(0.95), 'p95'], [q(0.99), 'p99']] });
  } else if (has('_sum') && has('_count')) {
    panels.push({
      title: 'Mean duration',
      description: `${c.duration} has no buckets here (histograms off in the client), so only the mean: _sum / _count.`,
      unit: 's',
      queries: [[`${rate(`${c.duration}_sum`)} / ${rate(`${c.duration}_count`)}`, 'mean']],
    });
  }
  return panels;
}

/** Panels of the process metrics present in metricNames. */
export function processPanels(metricNames: readonly string[], selector: string): PanelSpec[] {
  return PROCESS_METRICS.filter((m) => metricNames.includes(m.metric)).map((m) => ({
    title: m.title,
    unit: m.unit,
    queries: [[m.rate ? `sum by (pod) (rate(${m.metric}{${selector}}[$__rate_interval]))` : `sum by (pod) (${m.metric}{${selector}})`, '{{pod}}']],
  }));
}

/** Pods' CPU, memory and restarts from cAdvisor and kube-state-metrics (always there, scraped or not). */
export function podPanels(namespace: string): PanelSpec[] {
  const ns = `namespace="${namespace}"`;
  return [
    { title: 'Pod CPU (cores)', unit: 'short', queries: [[`sum by (pod) (rate(container_cpu_usage_seconds_total{${ns}, container!=""}[$__rate_interval]))`, '{{pod}}']] },
    { title: 'Pod memory (working set)', unit: 'bytes', queries: [[`sum by (pod) (container_memory_working_set_bytes{${ns}, container!=""})`, '{{pod}}']] },
    { title: 'Container restarts', unit: 'short', queries: [[`sum by (pod) (kube_pod_container_status_restarts_total{${ns}})`, '{{pod}}']] },
  ];
}

/**
 * A Grafana dashboard for one app (uid app-<name>, tags app and <name>; provisioned into the folder
 * "Apps"): RED panels when metricNames hold an HTTP convention of HTTP_CONVENTIONS, the process
 * metrics present, the pods' CPU, memory and restarts, and the logs of the namespace. Metric queries
 * match namespace and job (Alloy's annotation autodiscovery names the job after the pod label
 * app.kubernetes.io/name, which is the app's name); logs match the namespace stream label.
 */
export function appDashboard({ name, namespace, metricNames }: { name: string; namespace: string; metricNames: string[] }): Record<string, unknown> {
  const selector = `namespace="${namespace}", job="${name}"`;
  const convention = httpConvention(metricNames);
  const rows: [string, PanelSpec[]][] = [
    ['Requests (RED)', convention ? redPanels(convention, metricNames, selector) : []],
    ['Process', processPanels(metricNames, selector)],
    ['Pods', podPanels(namespace)],
  ];
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const [title, specs] of rows) {
    if (specs.length === 0) continue;
    panels.push({ id: id++, type: 'row', title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y: y++ }, panels: [] });
    const w = specs.length >= 3 ? 8 : 12;
    specs.forEach((spec, i) => {
      panels.push(promPanel(spec, id++, { h: 8, w, x: (i % (24 / w)) * w, y: y + Math.floor(i / (24 / w)) * 8 }));
    });
    y += Math.ceil(specs.length / (24 / w)) * 8;
  }
  panels.push({ id: id++, type: 'row', title: 'Logs', collapsed: false, gridPos: { h: 1, w: 24, x: 0, y: y++ }, panels: [] });
  panels.push({
    id: id++,
    type: 'logs',
    title: `Logs of namespace ${namespace}`,
    datasource: LOKI,
    targets: [{ refId: 'A', datasource: LOKI, editorMode: 'code', expr: `{namespace="${namespace}"}`, queryType: 'range' }],
    options: { showTime: true, showLabels: false, showCommonLabels: false, wrapLogMessage: true, prettifyLogMessage: false, enableLogDetails: true, dedupStrategy: 'none', sortOrder: 'Descending' },
    gridPos: { h: 12, w: 24, x: 0, y },
  });
  const datasourceVariable = (variable: string, label: string, type: string) => ({
    name: variable, label, type: 'datasource', query: type, current: {}, hide: 0, includeAll: false, multi: false, options: [], refresh: 1, regex: '', skipUrlSync: false,
  });
  return {
    uid: `app-${name}`,
    title: `App: ${name}`,
    description: convention
      ? `${name} in namespace ${namespace}: RED from ${convention.requests} (${convention.client}), pods and logs. Generated by task app.`
      : `${name} in namespace ${namespace}: no HTTP request metrics known to the generator${metricNames.length ? '' : ' (none scraped)'}, so process metrics, pods and logs. Generated by task app.`,
    tags: ['app', name],
    editable: false,
    graphTooltip: 1,
    schemaVersion: 42,
    version: 1,
    time: { from: 'now-1h', to: 'now' },
    timezone: 'browser',
    refresh: '30s',
    annotations: { list: [] },
    links: [
      { title: 'Apps', type: 'dashboards', tags: ['app'], asDropdown: true, includeVars: false, keepTime: true, icon: 'external link', targetBlank: false, tooltip: '', url: '' },
      { title: 'Platform', type: 'dashboards', tags: ['platform'], asDropdown: true, includeVars: false, keepTime: true, icon: 'external link', targetBlank: false, tooltip: '', url: '' },
    ],
    templating: { list: [datasourceVariable('datasource', 'Prometheus', 'prometheus'), datasourceVariable('loki_datasource', 'Loki', 'loki')] },
    panels,
  };
}
