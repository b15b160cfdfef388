// Tracing for the sample app and its traffic generator: OpenTelemetry's Node SDK, configured by
// the SDK's standard environment (the platform sets it on every app's pod, manifests/app/app.yaml.tmpl):
//   OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)  where spans go, OTLP/HTTP
//     protobuf (<endpoint>/v1/traces). Unset: spans are still made (their trace ids go into the log
//     lines and the exemplars) but not sent, and one log line says so.
//   OTEL_SERVICE_NAME             service.name (default: the name the caller gives)
//   OTEL_RESOURCE_ATTRIBUTES      more resource attributes (the manifest sets k8s.namespace.name and
//                                 k8s.pod.name from the downward API)
//   OTEL_BSP_SCHEDULE_DELAY ...   the batch span processor's settings
// W3C trace context (traceparent) is the propagator, so an incoming traceparent continues its trace.
// Problems of the SDK (a failed export) become one "tracing problem" log line a minute at most.
import { DiagLogLevel, diag, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

export type LogEvent = (level: 'info' | 'warn' | 'error', msg: string, extra?: Record<string, unknown>) => void;

export interface Tracing {
  tracer: Tracer;
  /** Sends the spans still buffered and stops the exporter. */
  shutdown(): Promise<void>;
}

/** Least time between two "tracing problem" log lines, in ms. */
const PROBLEM_INTERVAL_MS = 60000;

/** The message of an error the SDK logs as JSON (its stack and fields), or the text as it is. */
function errorMessage(text: string): string {
  try {
    const parsed = JSON.parse(text);
    return typeof parsed?.message === 'string' ? parsed.message : text;
  } catch {
    return text;
  }
}

/** Starts the SDK and registers it globally (tracer provider, context manager, propagator). */
export function startTracing(serviceName: string, log: LogEvent): Tracing {
  const endpoint = process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  let lastProblem = 0;
  let suppressed = 0;
  const problem = (message: string, ...args: unknown[]) => {
    if (Date.now() - lastProblem < PROBLEM_INTERVAL_MS) {
      suppressed += 1;
      return;
    }
    lastProblem = Date.now();
    log('warn', 'tracing problem', { error: [errorMessage(message), ...args.map(String)].join(' '), endpoint, suppressed_since_last: suppressed });
    suppressed = 0;
  };
  diag.setLogger({ error: problem, warn: problem, info: () => {}, debug: () => {}, verbose: () => {} }, DiagLogLevel.WARN);

  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: endpoint ? [new BatchSpanProcessor(new OTLPTraceExporter())] : [],
  });
  provider.register();
  const service = String(resource.attributes[ATTR_SERVICE_NAME]);
  if (endpoint) log('info', 'exporting traces', { endpoint, service });
  else log('info', 'traces not exported: OTEL_EXPORTER_OTLP_ENDPOINT is not set (trace ids still go into log lines and exemplars)', { service });
  return { tracer: provider.getTracer(serviceName), shutdown: () => provider.shutdown() };
}
