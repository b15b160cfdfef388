// `task footprint`: what the platform asks of the nodes and what it uses. One line per component
// (pods grouped by namespace and their app.kubernetes.io/name, k8s-app, component or app label)
// with its CPU and memory requests and limits (from the pods' specs) and its current use (from
// Prometheus: cAdvisor's container_memory_working_set_bytes and container_cpu_usage_seconds_total,
// read through the API server's service proxy, so no route or /etc/hosts is needed), then the total
// against the nodes' memory.
//   - CLUSTER=talos: every pod of the cluster (it is ours), against CONTROLPLANE_MEMORY + WORKERS ×
//     WORKER_MEMORY. The kubelet cannot enforce that total (a Talos node in Docker reports the
//     host's RAM), so this is where to see it.
//   - CLUSTER=existing: the context comes first (targetLine); only the platform's pods count: those
//     in the namespaces it created (labelled NAMESPACE_OWNER_LABEL=CLUSTER_NAME, as destroy decides)
//     and in the namespaces its Helm releases went into (installed.log), not other people's
//     workloads; against the nodes' allocatable memory (status.allocatable.memory, summed).
// Changes nothing. Exit code 0 when the pods could be read (use may be missing: it says why), else 1.
//
// .env keys: STATE_DIR (kubeconfig; installed.log with CLUSTER=existing), CLUSTER_NAME (messages, the
//   owner label), CLUSTER, KUBECONFIG, KUBE_CONTEXT (the target), WORKERS, CONTROLPLANE_MEMORY,
//   WORKER_MEMORY (talos).
// Tools: kubectl (talos: get pods -A; existing: get nodes,namespaces,pods -A; get --raw on the
//   prometheus-server service proxy).
import fs from 'node:fs';
import kleur from 'kleur';
import {
  CommandError,
  type Config,
  type InstalledRecord,
  NAMESPACE_OWNER_LABEL,
  installedRecord,
  isMain,
  kubeconfigPath,
  kubectl,
  loadConfig,
  ownedOnCluster,
  parseQuantity,
  statePath,
  targetLine,
} from './lib.ts';

/** prometheus-community/prometheus' Service (the contract in helm-values/prometheus.yaml), through the API server. */
export const PROMETHEUS_PROXY = '/api/v1/namespaces/monitoring/services/prometheus-server:80/proxy';

/** Current use per pod: working set, and CPU averaged over 5 minutes (cAdvisor, as the dashboards). */
export const USE_QUERIES = {
  memoryBytes: 'sum by (namespace, pod) (container_memory_working_set_bytes{container!=""})',
  cpuCores: 'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{container!=""}[5m]))',
} as const;

export interface PodSpecJson {
  metadata: { namespace: string; name: string; labels?: Record<string, string> };
  spec?: { containers?: { name: string; resources?: { requests?: Record<string, string>; limits?: Record<string, string> } }[] };
  status?: { phase?: string };
}

/** Sum of a resource over containers; unbounded when any container has no value for it. */
export interface Amount { value: number; unbounded: number }
export interface ComponentFootprint {
  component: string;
  pods: number;
  cpuRequest: Amount;
  cpuLimit: Amount;
  memoryRequest: Amount;
  memoryLimit: Amount;
  /** undefined when Prometheus could not be asked */
  cpuUsed?: number;
  memoryUsed?: number;
}
/** "namespace/pod" -> use */
export type PodUse = Map<string, { cpuCores?: number; memoryBytes?: number }>;

/** The component a pod belongs to: namespace/ its app name label, else its name. */
export function componentOf(pod: PodSpecJson): string {
  const l = pod.metadata.labels ?? {};
  const name = l['app.kubernetes.io/name'] ?? l['k8s-app'] ?? l.component ?? l.app ?? pod.metadata.name;
  return `${pod.metadata.namespace}/${name}`;
}

const add = (a: Amount, raw: string | undefined): Amount => (raw === undefined ? { ...a, unbounded: a.unbounded + 1 } : { ...a, value: a.value + parseQuantity(raw) });

/** Running and pending pods (not Succeeded or Failed ones: they hold nothing), one row per component. */
export function footprintRows(pods: PodSpecJson[], use: PodUse | undefined): ComponentFootprint[] {
  const rows = new Map<string, ComponentFootprint>();
  const none = (): Amount => ({ value: 0, unbounded: 0 });
  for (const pod of pods) {
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
    const component = componentOf(pod);
    const row = rows.get(component) ?? {
      component, pods: 0, cpuRequest: none(), cpuLimit: none(), memoryRequest: none(), memoryLimit: none(),
      ...(use && { cpuUsed: 0, memoryUsed: 0 }),
    };
    row.pods += 1;
    for (const c of pod.spec?.containers ?? []) {
      const r = c.resources ?? {};
      row.cpuRequest = add(row.cpuRequest, r.requests?.cpu ?? r.limits?.cpu); // the API server defaults a missing request to the limit
      row.cpuLimit = add(row.cpuLimit, r.limits?.cpu);
      row.memoryRequest = add(row.memoryRequest, r.requests?.memory ?? r.limits?.memory);
      row.memoryLimit = add(row.memoryLimit, r.limits?.memory);
    }
    const u = use?.get(`${pod.metadata.namespace}/${pod.metadata.name}`);
    if (use) {
      row.cpuUsed! += u?.cpuCores ?? 0;
      row.memoryUsed! += u?.memoryBytes ?? 0;
    }
    rows.set(component, row);
  }
  return [...rows.values()].sort((a, b) => a.component.localeCompare(b.component));
}

/** Prometheus' /api/v1/query answer (vector) to "namespace/pod" -> value. */
export function vectorByPod(body: string): Map<string, number> {
  const parsed = JSON.parse(body);
  if (parsed.status !== 'success' || parsed.data?.resultType !== 'vector') throw new Error(`Prometheus answered ${body.slice(0, 200)}`);
  return new Map(parsed.data.result.map((s: any) => [`${s.metric.namespace}/${s.metric.pod}`, Number(s.value[1])]));
}

export function podUse(memory: Map<string, number>, cpu: Map<string, number>): PodUse {
  const use: PodUse = new Map();
  for (const [pod, memoryBytes] of memory) use.set(pod, { memoryBytes });
  for (const [pod, cpuCores] of cpu) use.set(pod, { ...use.get(pod), cpuCores });
  return use;
}

/** The nodes' memory in MiB as configured (each node container's Docker limit). */
export const nodesMemoryMiB = (cfg: Pick<Config, 'CONTROLPLANE_MEMORY' | 'WORKER_MEMORY' | 'WORKERS'>) => cfg.CONTROLPLANE_MEMORY + cfg.WORKERS * cfg.WORKER_MEMORY;

/** The memory the total is held against: its MiB, and what it is, for the last line. */
export interface NodesMemory { mib: number; what: string }

/** CLUSTER=talos: the node sizes of .env. */
export const talosNodesMemory = (cfg: Pick<Config, 'CONTROLPLANE_MEMORY' | 'WORKER_MEMORY' | 'WORKERS'>): NodesMemory => ({
  mib: nodesMemoryMiB(cfg),
  what: `nodes' memory: ${cfg.CONTROLPLANE_MEMORY}Mi control plane + ${cfg.WORKERS} × ${cfg.WORKER_MEMORY}Mi workers`,
});

export interface NodeJson { metadata: { name: string }; status?: { allocatable?: Record<string, string> } }

/** CLUSTER=existing: the nodes' allocatable memory (what the kubelets let pods have), summed; a node without it is named. */
export function allocatableMemory(nodes: NodeJson[]): NodesMemory {
  const without = nodes.filter((n) => n.status?.allocatable?.memory === undefined).map((n) => n.metadata.name);
  const bytes = nodes.reduce((t, n) => t + (n.status?.allocatable?.memory === undefined ? 0 : parseQuantity(n.status.allocatable.memory)), 0);
  return {
    mib: Math.round(bytes / 2 ** 20),
    what: `allocatable memory of the ${nodes.length} node${nodes.length === 1 ? '' : 's'}${without.length ? ` (none reported by ${without.join(', ')})` : ''}`,
  };
}

export interface NamespaceJson { metadata: { name: string; labels?: Record<string, string> } }

/**
 * CLUSTER=existing: the namespaces whose pods are the platform's: those it created (labelled
 * NAMESPACE_OWNER_LABEL=CLUSTER_NAME: ownedOnCluster, as destroy decides) and those its Helm
 * releases went into (installed.log: a namespace the user had before counts whole). Sorted.
 */
export function platformNamespaces(clusterName: string, namespaces: NamespaceJson[], installed: InstalledRecord): string[] {
  const labelled = ownedOnCluster({ clusterName, releases: [], namespaces, crds: [], installed }).namespaces;
  const ofReleases = (installed.releases ?? []).map((r) => r.split('/')[0]);
  return [...new Set([...labelled, ...ofReleases])].sort();
}

const cores = (n: number) => (n === 0 ? '0' : n < 1 ? `${Math.round(n * 1000)}m` : `${Number(n.toFixed(2))}`);
const mib = (bytes: number) => `${Math.round(bytes / 2 ** 20)}Mi`;
const amount = (a: Amount, show: (n: number) => string) => (a.unbounded && !a.value ? 'none' : `${show(a.value)}${a.unbounded ? '+' : ''}`);
const percent = (bytes: number, totalMiB: number) => (totalMiB > 0 ? `${Math.round((bytes / 2 ** 20 / totalMiB) * 100)} %` : 'of none');

/** The table, a total line and the line against the nodes' memory. "+" marks a sum with containers that set no value. */
export function formatFootprint(rows: ComponentFootprint[], nodes: NodesMemory, useProblem?: string): string[] {
  const sum = (pick: (r: ComponentFootprint) => Amount): Amount =>
    rows.reduce((t, r) => ({ value: t.value + pick(r).value, unbounded: t.unbounded + pick(r).unbounded }), { value: 0, unbounded: 0 });
  const used = (n: number | undefined, show: (n: number) => string) => (n === undefined ? '-' : show(n));
  const total: ComponentFootprint = {
    component: 'total', pods: rows.reduce((t, r) => t + r.pods, 0),
    cpuRequest: sum((r) => r.cpuRequest), cpuLimit: sum((r) => r.cpuLimit), memoryRequest: sum((r) => r.memoryRequest), memoryLimit: sum((r) => r.memoryLimit),
    ...(!useProblem && { cpuUsed: rows.reduce((t, r) => t + (r.cpuUsed ?? 0), 0), memoryUsed: rows.reduce((t, r) => t + (r.memoryUsed ?? 0), 0) }),
  };
  const table = [
    ['component', 'pods', 'cpu req', 'cpu lim', 'cpu used', 'mem req', 'mem lim', 'mem used'],
    ...[...rows, total].map((r) => [
      r.component, String(r.pods), amount(r.cpuRequest, cores), amount(r.cpuLimit, cores), used(r.cpuUsed, cores),
      amount(r.memoryRequest, mib), amount(r.memoryLimit, mib), used(r.memoryUsed, mib),
    ]),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const lines = table.map((row) => row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd());
  const of = (a: Amount) => `${mib(a.value)}${a.unbounded ? ` + ${a.unbounded} containers without one` : ''} (${percent(a.value, nodes.mib)})`;
  return [
    ...lines,
    `${nodes.what} = ${nodes.mib}Mi; ` +
      `requests ${of(total.memoryRequest)}, limits ${of(total.memoryLimit)}, used ${total.memoryUsed === undefined ? '-' : `${mib(total.memoryUsed)} (${percent(total.memoryUsed, nodes.mib)})`}`,
    ...(useProblem ? [`use: not available, ${useProblem}`] : []),
  ];
}

async function promVector(cfg: Config, expr: string): Promise<Map<string, number>> {
  return vectorByPod((await kubectl(cfg, ['get', '--raw', `${PROMETHEUS_PROXY}/api/v1/query?query=${encodeURIComponent(expr)}`])).stdout);
}

/** What went wrong, in one line: the tool's own words for a failed call, else the message. */
const reason = (err: unknown) => (err instanceof CommandError && err.output.trim() ? err.output.trim().split('\n')[0] : (err as Error).message);

/** The pods to count and the memory to hold them against: CLUSTER=talos all pods and .env's node sizes; existing the platform's pods and the nodes' allocatable memory. */
async function podsAndNodes(cfg: Config): Promise<{ lines: string[]; pods: PodSpecJson[]; nodes: NodesMemory }> {
  if (cfg.CLUSTER === 'talos') {
    if (!fs.existsSync(kubeconfigPath(cfg))) throw new Error(`no cluster "${cfg.CLUSTER_NAME}" (no ${kubeconfigPath(cfg)}): run \`task talos\``);
    const pods = JSON.parse((await kubectl(cfg, ['get', 'pods', '--all-namespaces', '-o', 'json'])).stdout).items as PodSpecJson[];
    return { lines: [], pods, nodes: talosNodesMemory(cfg) };
  }
  const lines = [targetLine(cfg)];
  const items: { kind: string }[] = JSON.parse((await kubectl(cfg, ['get', 'nodes,namespaces,pods', '--all-namespaces', '-o', 'json'])).stdout).items ?? [];
  const ofKind = <T>(kind: string) => items.filter((o) => o.kind === kind) as T[];
  const ours = platformNamespaces(cfg.CLUSTER_NAME, ofKind<NamespaceJson>('Namespace'), installedRecord(cfg));
  const pods = ofKind<PodSpecJson>('Pod');
  const counted = pods.filter((p) => ours.includes(p.metadata.namespace));
  lines.push(
    ours.length
      ? `the platform's namespaces: ${ours.join(', ')} (${pods.length - counted.length} pods in other namespaces not counted)`
      : `the platform's namespaces: none (no namespace labelled ${NAMESPACE_OWNER_LABEL}=${cfg.CLUSTER_NAME}, no release in ${statePath(cfg, 'installed.log')}): run \`task deploy\``,
  );
  return { lines, pods: counted, nodes: allocatableMemory(ofKind<NodeJson>('Node')) };
}

async function footprint(cfg: Config): Promise<string[]> {
  const { lines, pods, nodes } = await podsAndNodes(cfg);
  let use: PodUse | undefined;
  let useProblem: string | undefined;
  try {
    use = podUse(await promVector(cfg, USE_QUERIES.memoryBytes), await promVector(cfg, USE_QUERIES.cpuCores));
  } catch (err) {
    useProblem = `Prometheus (service monitoring/prometheus-server) did not answer: ${reason(err)}. Run \`task observability\`, or wait for its first scrapes.`;
  }
  return [...lines, ...formatFootprint(footprintRows(pods, use), nodes, useProblem)];
}

if (isMain(import.meta.url)) {
  if (process.env.NO_COLOR) kleur.enabled = false;
  try {
    console.log((await footprint(loadConfig())).join('\n'));
  } catch (err) {
    console.error(kleur.red(`✗ footprint: ${reason(err)}`));
    process.exitCode = 1;
  }
}
