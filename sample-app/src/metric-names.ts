// What the sample app exposes, as data: its routes and the metric families on /metrics.
//
// No imports, so that the platform's tests (the dashboards cross-check, validate) can read it
// without the app's own dependencies. tests/sample-app.test.ts checks that METRIC_FAMILIES is
// exactly the set of families a running app exposes, so this list cannot drift from the code.

/** The routes, as they appear in the `route` label (the pattern, never the raw URL). */
export const ROUTES = {
  root: '/',
  orders: '/api/orders',
  slow: '/api/slow',
  probe: '/api/probe',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
  /** Error injection: POST ?ratio=&seconds= makes a share of /api/* requests fail for a while; DELETE ends it. */
  adminErrors: '/admin/errors',
  /** Any path that matches no route: 404, with this label so the raw URL never becomes a label value. */
  unmatched: 'unmatched',
} as const;

/**
 * Routes that are not traffic: the kubelet's probes, the scrapes and error injection. They are
 * answered and logged, but not counted in the request metrics, so they never pose as requests on
 * the dashboards (nor count against the availability SLO of alerts/sample-app.rules.yaml).
 */
export const UNCOUNTED_ROUTES: readonly string[] = [ROUTES.healthz, ROUTES.readyz, ROUTES.metrics, ROUTES.adminErrors];

/**
 * Synthetic traffic says what it is in this request header: the traffic generator sends
 * `traffic-generator`, `task validate` sends `validate`. The app copies it into the `synthetic`
 * label of the request metrics and the `synthetic` field of the log line; real requests have
 * neither (the label is empty), so `{synthetic=""}` selects real traffic only.
 */
export const SYNTHETIC_HEADER = 'x-synthetic';
/** Header values kept as they are; any other value is recorded as `other`, so labels stay few. */
export const SYNTHETIC_SOURCES = ['traffic-generator', 'validate'] as const;
export type SyntheticSource = (typeof SYNTHETIC_SOURCES)[number] | 'other';

/** The app's own request metrics (without UNCOUNTED_ROUTES). */
export const REQUEST_METRICS = {
  /** Counter, labels method, route, status, synthetic. */
  requests: 'http_requests_total',
  /** Counter of 5xx answers, labels method, route, synthetic. */
  errors: 'http_request_errors_total',
  /** Histogram, labels method, route, status, synthetic; series _bucket (with le), _sum, _count. */
  duration: 'http_request_duration_seconds',
} as const;

/** Histogram buckets of http_request_duration_seconds, in seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

export interface MetricFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary';
  /** Labels besides le (histograms) and the ones the scraper adds (namespace, pod, job ...). */
  labels: string[];
}

/** Every metric family on /metrics: the request metrics and prom-client's default metrics (Linux). */
export const METRIC_FAMILIES: MetricFamily[] = [
  { name: 'http_requests_total', type: 'counter', labels: ['method', 'route', 'status', 'synthetic'] },
  { name: 'http_request_errors_total', type: 'counter', labels: ['method', 'route', 'synthetic'] },
  { name: 'http_request_duration_seconds', type: 'histogram', labels: ['method', 'route', 'status', 'synthetic'] },
  // prom-client 15 collectDefaultMetrics() on Linux. Some have no sample until they happen
  // (nodejs_active_requests while none is in flight, nodejs_gc_duration_seconds before a GC).
  { name: 'process_cpu_user_seconds_total', type: 'counter', labels: [] },
  { name: 'process_cpu_system_seconds_total', type: 'counter', labels: [] },
  { name: 'process_cpu_seconds_total', type: 'counter', labels: [] },
  { name: 'process_start_time_seconds', type: 'gauge', labels: [] },
  { name: 'process_resident_memory_bytes', type: 'gauge', labels: [] },
  { name: 'process_virtual_memory_bytes', type: 'gauge', labels: [] },
  { name: 'process_heap_bytes', type: 'gauge', labels: [] },
  { name: 'process_open_fds', type: 'gauge', labels: [] },
  { name: 'process_max_fds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_min_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_max_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_mean_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_stddev_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_p50_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_p90_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_eventloop_lag_p99_seconds', type: 'gauge', labels: [] },
  { name: 'nodejs_active_resources', type: 'gauge', labels: ['type'] },
  { name: 'nodejs_active_resources_total', type: 'gauge', labels: [] },
  { name: 'nodejs_active_handles', type: 'gauge', labels: ['type'] },
  { name: 'nodejs_active_handles_total', type: 'gauge', labels: [] },
  { name: 'nodejs_active_requests', type: 'gauge', labels: ['type'] },
  { name: 'nodejs_active_requests_total', type: 'gauge', labels: [] },
  { name: 'nodejs_heap_size_total_bytes', type: 'gauge', labels: [] },
  { name: 'nodejs_heap_size_used_bytes', type: 'gauge', labels: [] },
  { name: 'nodejs_external_memory_bytes', type: 'gauge', labels: [] },
  { name: 'nodejs_heap_space_size_total_bytes', type: 'gauge', labels: ['space'] },
  { name: 'nodejs_heap_space_size_used_bytes', type: 'gauge', labels: ['space'] },
  { name: 'nodejs_heap_space_size_available_bytes', type: 'gauge', labels: ['space'] },
  { name: 'nodejs_version_info', type: 'gauge', labels: ['version', 'major', 'minor', 'patch'] },
  { name: 'nodejs_gc_duration_seconds', type: 'histogram', labels: ['kind'] },
];

/**
 * Every sample name a PromQL query can use: counters and gauges by their name, histograms by
 * their _bucket, _sum and _count series.
 */
export function seriesNames(families: MetricFamily[] = METRIC_FAMILIES): string[] {
  return families.flatMap((f) =>
    f.type === 'histogram'
      ? [`${f.name}_bucket`, `${f.name}_sum`, `${f.name}_count`]
      : f.type === 'summary'
        ? [f.name, `${f.name}_sum`, `${f.name}_count`]
        : [f.name],
  );
}
