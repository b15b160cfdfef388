// `task footprint`: requests and limits from the pods' specs, use from Prometheus through the API
// server's service proxy, and the total against CONTROLPLANE_MEMORY + WORKERS × WORKER_MEMORY
// (CLUSTER=existing: the nodes' allocatable memory, and only the platform's namespaces).
// Pure parts table-tested; the script run against the stand-in tools (CLUSTER=existing: footprint-existing.test.ts).
import { describe, expect, it, vi } from 'vitest';
import {
  type NamespaceJson,
  type NodeJson,
  type PodSpecJson,
  PROMETHEUS_PROXY,
  USE_QUERIES,
  allocatableMemory,
  componentOf,
  footprintRows,
  formatFootprint,
  nodesMemoryMiB,
  platformNamespaces,
  podUse,
  talosNodesMemory,
  vectorByPod,
} from '../scripts/footprint.ts';
import { type InstalledRecord, NAMESPACE_OWNER_LABEL } from '../scripts/lib.ts';
import { isMutating, makeSandbox } from './helpers.ts';
import { deployedCluster } from './fixtures/validate/cluster.ts';

vi.setConfig({ testTimeout: 60000 });

const Mi = 2 ** 20;
const cfg = { CONTROLPLANE_MEMORY: 4096, WORKER_MEMORY: 4096, WORKERS: 2 };

type Resources = { requests?: Record<string, string>; limits?: Record<string, string> };
const pod = (ns: string, name: string, labels: Record<string, string>, containers: Resources[], phase = 'Running'): PodSpecJson & { apiVersion: string; kind: string } => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { namespace: ns, name, labels },
  spec: { containers: containers.map((resources, i) => ({ name: `c${i}`, resources })) },
  status: { phase },
});
const bounded = (cpu: string, mem: string, limit: string): Resources => ({ requests: { cpu, memory: mem }, limits: { memory: limit } });

const PODS = [
  pod('monitoring', 'prometheus-server-5d8f-abcde', { 'app.kubernetes.io/name': 'prometheus' }, [bounded('100m', '512Mi', '1Gi'), bounded('10m', '32Mi', '64Mi')]),
  pod('monitoring', 'loki-0', { 'app.kubernetes.io/name': 'loki' }, [bounded('100m', '256Mi', '1Gi')]),
  pod('monitoring', 'k8s-monitoring-alloy-logs-aaaaa', { 'app.kubernetes.io/name': 'alloy-logs' }, [bounded('60m', '178Mi', '576Mi')]),
  pod('monitoring', 'k8s-monitoring-alloy-logs-bbbbb', { 'app.kubernetes.io/name': 'alloy-logs' }, [bounded('60m', '178Mi', '576Mi')]),
  pod('kube-system', 'coredns-6b7d-xxxxx', { 'k8s-app': 'kube-dns' }, [{ requests: { cpu: '100m', memory: '70Mi' }, limits: { memory: '170Mi' } }]),
  pod('kube-system', 'kube-apiserver-talos-local-controlplane-1', { component: 'kube-apiserver', tier: 'control-plane' }, [{ requests: { cpu: '200m', memory: '512Mi' } }]),
  pod('local-path-storage', 'smoke-test', {}, [bounded('10m', '16Mi', '32Mi')], 'Succeeded'),
];

const vector = (values: Record<string, number>) =>
  JSON.stringify({
    status: 'success',
    data: { resultType: 'vector', result: Object.entries(values).map(([p, v]) => ({ metric: { namespace: p.split('/')[0], pod: p.split('/')[1] }, value: [1760000000, String(v)] })) },
  });
const MEMORY_USE = {
  'monitoring/prometheus-server-5d8f-abcde': 400 * Mi,
  'monitoring/loki-0': 150 * Mi,
  'monitoring/k8s-monitoring-alloy-logs-aaaaa': 100 * Mi,
  'monitoring/k8s-monitoring-alloy-logs-bbbbb': 90 * Mi,
  'kube-system/coredns-6b7d-xxxxx': 20 * Mi,
  'kube-system/kube-apiserver-talos-local-controlplane-1': 600 * Mi,
};
const CPU_USE = { 'monitoring/prometheus-server-5d8f-abcde': 0.05, 'monitoring/loki-0': 0.02, 'kube-system/kube-apiserver-talos-local-controlplane-1': 0.15 };
const queryPath = (expr: string) => `${PROMETHEUS_PROXY}/api/v1/query?query=${encodeURIComponent(expr)}`;

describe('componentOf', () => {
  it.each<[Record<string, string>, string]>([
    [{ 'app.kubernetes.io/name': 'grafana', 'app.kubernetes.io/instance': 'grafana' }, 'monitoring/grafana'],
    [{ 'k8s-app': 'kube-dns' }, 'monitoring/kube-dns'],
    [{ component: 'kube-apiserver' }, 'monitoring/kube-apiserver'],
    [{ app: 'sample-app' }, 'monitoring/sample-app'],
    [{}, 'monitoring/some-pod'],
  ])('labels %j -> %s', (labels, want) => {
    expect(componentOf(pod('monitoring', 'some-pod', labels, []))).toBe(want);
  });
});

describe('footprintRows and formatFootprint', () => {
  const use = podUse(vectorByPod(vector(MEMORY_USE)), vectorByPod(vector(CPU_USE)));
  const rows = footprintRows(PODS, use);

  it('groups pods into components, sums requests, limits and use; finished pods hold nothing', () => {
    expect(rows.map((r) => [r.component, r.pods, r.memoryRequest.value / Mi, r.memoryLimit.value / Mi, r.memoryLimit.unbounded, Math.round(r.memoryUsed! / Mi)])).toEqual([
      ['kube-system/kube-apiserver', 1, 512, 0, 1, 600],
      ['kube-system/kube-dns', 1, 70, 170, 0, 20],
      ['monitoring/alloy-logs', 2, 356, 1152, 0, 190],
      ['monitoring/loki', 1, 256, 1024, 0, 150],
      ['monitoring/prometheus', 1, 544, 1088, 0, 400],
    ]);
    expect(rows.find((r) => r.component === 'monitoring/prometheus')!.cpuRequest.value).toBeCloseTo(0.11);
  });

  it('prints a table, the total and the total against the nodes\' memory', () => {
    const out = formatFootprint(rows, talosNodesMemory(cfg));
    expect(out.map((l) => l.replace(/\s+/g, ' '))).toEqual([
      'component pods cpu req cpu lim cpu used mem req mem lim mem used',
      'kube-system/kube-apiserver 1 200m none 150m 512Mi none 600Mi',
      'kube-system/kube-dns 1 100m none 0 70Mi 170Mi 20Mi',
      'monitoring/alloy-logs 2 120m none 0 356Mi 1152Mi 190Mi',
      'monitoring/loki 1 100m none 20m 256Mi 1024Mi 150Mi',
      'monitoring/prometheus 1 110m none 50m 544Mi 1088Mi 400Mi',
      'total 6 630m none 220m 1738Mi 3434Mi+ 1360Mi',
      "nodes' memory: 4096Mi control plane + 2 × 4096Mi workers = 12288Mi; requests 1738Mi (14 %), limits 3434Mi + 1 containers without one (28 %), used 1360Mi (11 %)",
    ]);
  });

  it('without use (Prometheus did not answer) the use columns say "-" and the reason follows', () => {
    const out = formatFootprint(footprintRows(PODS, undefined), talosNodesMemory(cfg), 'no endpoints');
    expect(out.at(-3)!.replace(/\s+/g, ' ')).toBe('total 6 630m none - 1738Mi 3434Mi+ -');
    expect(out.at(-2)).toMatch(/used -$/);
    expect(out.at(-1)).toBe('use: not available, no endpoints');
  });

  it.each<[typeof cfg, number]>([
    [{ CONTROLPLANE_MEMORY: 4096, WORKER_MEMORY: 4096, WORKERS: 2 }, 12288],
    [{ CONTROLPLANE_MEMORY: 2048, WORKER_MEMORY: 3072, WORKERS: 1 }, 5120],
    [{ CONTROLPLANE_MEMORY: 3072, WORKER_MEMORY: 1024, WORKERS: 5 }, 8192],
  ])('nodes\' memory of %j is %d MiB', (c, want) => {
    expect(nodesMemoryMiB(c)).toBe(want);
  });

  it('vectorByPod refuses an error answer', () => {
    expect(() => vectorByPod(JSON.stringify({ status: 'error', error: 'bad_data' }))).toThrow(/Prometheus answered/);
  });
});

describe('CLUSTER=existing: which namespaces count, and the nodes\' allocatable memory', () => {
  const ns = (name: string, owner?: string): NamespaceJson => ({ metadata: { name, labels: { team: 'x', ...(owner && { [NAMESPACE_OWNER_LABEL]: owner }) } } });
  const CLUSTER_NS = [ns('monitoring'), ns('sample-app', 'talos-local'), ns('traefik', 'talos-local'), ns('team-a'), ns('kube-system'), ns('other-copy', 'someone-else')];
  it.each<[string, InstalledRecord, string[]]>([
    ['labelled ours only (no release recorded)', {}, ['sample-app', 'traefik']],
    ['plus a namespace the user had, where our releases went', { releases: ['monitoring/prometheus', 'monitoring/loki'] }, ['monitoring', 'sample-app', 'traefik']],
    ['a release namespace that is labelled too counts once', { releases: ['traefik/traefik'] }, ['sample-app', 'traefik']],
    ['storage and CRDs recorded add no namespace', { storageClass: 'standard', localPath: false, crds: ['alloys.collectors.grafana.com'] }, ['sample-app', 'traefik']],
  ])('%s', (_name, installed, want) => {
    expect(platformNamespaces('talos-local', CLUSTER_NS, installed)).toEqual(want);
  });
  it('another CLUSTER_NAME owns other namespaces', () => {
    expect(platformNamespaces('someone-else', CLUSTER_NS, {})).toEqual(['other-copy']);
  });

  const node = (name: string, memory?: string): NodeJson => ({ metadata: { name }, status: { allocatable: { cpu: '4', ...(memory && { memory }) } } });
  it.each<[string, NodeJson[], number, string]>([
    ['kind: one node, in Ki', [node('demo-control-plane', '16331452Ki')], 15949, 'allocatable memory of the 1 node'],
    ['three nodes, mixed units', [node('a', '8Gi'), node('b', '4194304Ki'), node('c', '2147483648')], 14336, 'allocatable memory of the 3 nodes'],
    ['a node that reports none is named', [node('a', '8Gi'), node('b')], 8192, 'allocatable memory of the 2 nodes (none reported by b)'],
    ['no nodes', [], 0, 'allocatable memory of the 0 nodes'],
  ])('%s', (_name, nodes, mib, what) => {
    expect(allocatableMemory(nodes)).toEqual({ mib, what });
  });
  it('the last line holds the total against the allocatable memory; with none, it says so instead of a share', () => {
    const rows = footprintRows(PODS.filter((p) => p.metadata.namespace === 'monitoring'), undefined);
    expect(formatFootprint(rows, allocatableMemory([node('a', '8Gi'), node('b', '4Gi')]), 'no endpoints').at(-2)).toBe(
      'allocatable memory of the 2 nodes = 12288Mi; requests 1156Mi (9 %), limits 3264Mi (27 %), used -',
    );
    expect(formatFootprint(rows, allocatableMemory([]), 'no endpoints').at(-2)).toBe(
      'allocatable memory of the 0 nodes = 0Mi; requests 1156Mi (of none), limits 3264Mi (of none), used -',
    );
  });
});

describe('task footprint', () => {
  it('healthy platform: per component and the total against the nodes, read-only, Prometheus through the service proxy', async () => {
    const sb = makeSandbox();
    deployedCluster(sb, PODS);
    sb.scenario({ kubectl: { raw: { [queryPath(USE_QUERIES.memoryBytes)]: vector(MEMORY_USE), [queryPath(USE_QUERIES.cpuCores)]: vector(CPU_USE) } } });
    const r = await sb.run('footprint');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = r.stdout.trim().split('\n').map((l) => l.replace(/\s+/g, ' '));
    expect(out).toContain('monitoring/prometheus 1 110m none 50m 544Mi 1088Mi 400Mi');
    expect(out.at(-1)).toBe("nodes' memory: 4096Mi control plane + 2 × 4096Mi workers = 12288Mi; requests 1738Mi (14 %), limits 3434Mi + 1 containers without one (28 %), used 1360Mi (11 %)");
    expect(r.calls.filter(isMutating)).toEqual([]);
    expect(r.calls.map((c) => c.argv.filter((a) => !a.startsWith('--kubeconfig') && !a.includes('/kubeconfig')).join(' '))).toEqual([
      'get pods --all-namespaces -o json',
      `get --raw ${queryPath(USE_QUERIES.memoryBytes)}`,
      `get --raw ${queryPath(USE_QUERIES.cpuCores)}`,
    ]);
  });

  it('the node sizes come from .env', async () => {
    const sb = makeSandbox();
    deployedCluster(sb, PODS);
    const r = await sb.run('footprint', [], { CONTROLPLANE_MEMORY: '2GiB', WORKER_MEMORY: '3072MiB', WORKERS: '1' });
    expect(r.stdout).toContain("nodes' memory: 2048Mi control plane + 1 × 3072Mi workers = 5120Mi;");
  });

  it('Prometheus not answering: requests and limits still shown, exit 0, the reason said', async () => {
    const sb = makeSandbox();
    deployedCluster(sb, PODS);
    const r = await sb.run('footprint');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('total');
    expect(r.stdout.trim().split('\n').at(-1)).toBe(
      'use: not available, Prometheus (service monitoring/prometheus-server) did not answer: Error from server (ServiceUnavailable): no endpoints available for service "prometheus-server". Run `task observability`, or wait for its first scrapes.',
    );
  });

  it('no cluster: says to run task talos, exit 1, no tool called', async () => {
    const sb = makeSandbox();
    const r = await sb.run('footprint');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/✗ footprint: no cluster "talos-local" \(no .*kubeconfig\): run `task talos`/);
    expect(r.calls).toEqual([]);
  });

  it('a bad .env value: names the key, exit 1, no tool called', async () => {
    const sb = makeSandbox();
    deployedCluster(sb, PODS);
    const r = await sb.run('footprint', [], { WORKERS: 'many' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/WORKERS/);
    expect(r.calls).toEqual([]);
  });
});
