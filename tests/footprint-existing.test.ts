// `task footprint` with CLUSTER=existing, against the stand-in kubectl: a kind-like cluster in the
// user's kubeconfig (no STATE_DIR/kubeconfig), shared with other people's workloads. Only the
// platform's pods count (the namespaces it labelled as its own and those its releases went into),
// the total is held against the nodes' allocatable memory, and the context comes first.
// The pure parts (which namespaces count, the nodes' memory line) are table-tested in footprint.test.ts.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig, recordInstalled } from '../scripts/lib.ts';
import { isMutating, makeSandbox, type Sandbox } from './helpers.ts';

const CONTEXT = 'kind-demo';
const SERVER = 'https://127.0.0.1:41234';
const PROXY = '/api/v1/namespaces/monitoring/services/prometheus-server:80/proxy';
const MEMORY_QUERY = 'sum by (namespace, pod) (container_memory_working_set_bytes{container!=""})';
const CPU_QUERY = 'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{container!=""}[5m]))';
const queryPath = (expr: string) => `${PROXY}/api/v1/query?query=${encodeURIComponent(expr)}`;
const Mi = 2 ** 20;

const namespace = (name: string, labels: Record<string, string> = {}) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const pod = (ns: string, name: string, app: string, memory: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { namespace: ns, name, labels: { 'app.kubernetes.io/name': app } },
  spec: { containers: [{ name: 'main', resources: { requests: { cpu: '100m', memory }, limits: { memory } } }] },
  status: { phase: 'Running' },
});
const node = (name: string, memory: string) => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name, labels: {} },
  spec: { providerID: `kind://docker/demo/${name}` },
  status: { conditions: [{ type: 'Ready', status: 'True' }], allocatable: { cpu: '4', memory, pods: '110' } },
});
const keyed = (objects: { kind: string; metadata: { name: string; namespace?: string } }[]) =>
  Object.fromEntries(objects.map((o) => [`${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`, o]));

/** The platform's pods (monitoring: the user had that namespace, our releases went into it; sample-app: ours, labelled) beside other people's. */
const PODS = [
  pod('monitoring', 'prometheus-server-0', 'prometheus', '512Mi'),
  pod('monitoring', 'loki-0', 'loki', '256Mi'),
  pod('sample-app', 'sample-app-7c9d-abcde', 'sample-app', '64Mi'),
  pod('team-a', 'billing-5f6d-xxxxx', 'billing', '2Gi'),
  pod('kube-system', 'coredns-6b7d-yyyyy', 'kube-dns', '70Mi'),
  pod('other-copy', 'prometheus-server-0', 'prometheus', '1Gi'),
];
const NAMESPACES = [
  namespace('monitoring'),
  namespace('sample-app', { 'talos-local.platform/owner': 'talos-local' }),
  namespace('team-a'),
  namespace('kube-system'),
  // Another copy of the platform (another CLUSTER_NAME) on the same cluster: not ours.
  namespace('other-copy', { 'talos-local.platform/owner': 'someone-else' }),
];
const vector = (values: Record<string, number>) =>
  JSON.stringify({
    status: 'success',
    data: { resultType: 'vector', result: Object.entries(values).map(([p, v]) => ({ metric: { namespace: p.split('/')[0], pod: p.split('/')[1] }, value: [1760000000, String(v)] })) },
  });

/** A sandbox whose user has a kind cluster (current context) in ~/.kube/config, with two nodes of 8 GiB and 4 GiB allocatable. */
function existingSandbox(namespaces = NAMESPACES): Sandbox {
  const sb = makeSandbox();
  fs.mkdirSync(path.join(sb.home, '.kube'));
  fs.writeFileSync(
    path.join(sb.home, '.kube', 'config'),
    `apiVersion: v1\nkind: Config\ncurrent-context: ${CONTEXT}\ncontexts:\n- name: ${CONTEXT}\n  context: {cluster: ${CONTEXT}, user: ${CONTEXT}}\nclusters:\n- name: ${CONTEXT}\n  cluster: {server: "${SERVER}"}\nusers:\n- name: ${CONTEXT}\n  user: {token: t}\n`,
  );
  sb.scenario({
    kubectl: {
      existingClusters: { [SERVER]: { nodes: ['demo-control-plane', 'demo-worker'] } },
      nodes: [node('demo-control-plane', '8Gi'), node('demo-worker', '4194304Ki')],
      objects: keyed([...namespaces, ...PODS]),
    },
  });
  return sb;
}
const EXISTING = { CLUSTER: 'existing' };
const line = (c: { tool: string; argv: string[] }) => `${c.tool} ${c.argv.join(' ')}`;
const squeeze = (out: string) => out.trim().split('\n').map((l) => l.replace(/\s+/g, ' '));

describe('task footprint with CLUSTER=existing', { timeout: 60_000 }, () => {
  it("counts only the platform's pods, against the nodes' allocatable memory; the context first; read-only, no STATE_DIR/kubeconfig", async () => {
    const sb = existingSandbox();
    recordInstalled(parseConfig({ ...EXISTING, STATE_DIR: sb.stateDir }), { releases: ['monitoring/loki', 'monitoring/prometheus'] });
    sb.scenario({
      kubectl: {
        raw: {
          [queryPath(MEMORY_QUERY)]: vector({ 'monitoring/prometheus-server-0': 300 * Mi, 'monitoring/loki-0': 100 * Mi, 'sample-app/sample-app-7c9d-abcde': 20 * Mi, 'team-a/billing-5f6d-xxxxx': 1500 * Mi }),
          [queryPath(CPU_QUERY)]: vector({ 'monitoring/prometheus-server-0': 0.05, 'team-a/billing-5f6d-xxxxx': 1.5 }),
        },
      },
    });
    const r = await sb.run('footprint', [], EXISTING);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = squeeze(r.stdout);
    expect(out[0]).toBe(`cluster: context ${CONTEXT} (server ${SERVER}) from ${path.join(sb.home, '.kube', 'config')}`);
    expect(out[1]).toBe("the platform's namespaces: monitoring, sample-app (3 pods in other namespaces not counted)");
    expect(out.slice(2)).toEqual([
      'component pods cpu req cpu lim cpu used mem req mem lim mem used',
      'monitoring/loki 1 100m none 0 256Mi 256Mi 100Mi',
      'monitoring/prometheus 1 100m none 50m 512Mi 512Mi 300Mi',
      'sample-app/sample-app 1 100m none 0 64Mi 64Mi 20Mi',
      'total 3 300m none 50m 832Mi 832Mi 420Mi',
      'allocatable memory of the 2 nodes = 12288Mi; requests 832Mi (7 %), limits 832Mi (7 %), used 420Mi (3 %)',
    ]);
    expect(fs.existsSync(path.join(sb.stateDir, 'kubeconfig'))).toBe(false);
    expect(r.calls.filter(isMutating)).toEqual([]);
    expect(r.calls.map(line)).toEqual([
      `kubectl --kubeconfig ${path.join(sb.home, '.kube', 'config')} --context ${CONTEXT} get nodes,namespaces,pods --all-namespaces -o json`,
      `kubectl --kubeconfig ${path.join(sb.home, '.kube', 'config')} --context ${CONTEXT} get --raw ${queryPath(MEMORY_QUERY)}`,
      `kubectl --kubeconfig ${path.join(sb.home, '.kube', 'config')} --context ${CONTEXT} get --raw ${queryPath(CPU_QUERY)}`,
    ]);
  });

  it('nothing of the platform on the cluster: says so and what to run, counts nothing, exit 0', async () => {
    // Every namespace is someone else's: none carries our label, no release of ours is recorded.
    const sb = existingSandbox(NAMESPACES.map((n) => namespace(n.metadata.name, n.metadata.name === 'sample-app' ? {} : n.metadata.labels)));
    const r = await sb.run('footprint', [], EXISTING);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = squeeze(r.stdout);
    expect(out[1]).toBe(
      `the platform's namespaces: none (no namespace labelled talos-local.platform/owner=talos-local, no release in ${path.join(sb.stateDir, 'installed.log')}): run \`task deploy\``,
    );
    expect(out).toContain('total 0 0 0 - 0Mi 0Mi -');
    expect(r.stdout).not.toMatch(/team-a|kube-system|other-copy/);
  });

  it('a KUBE_CONTEXT that is not in the kubeconfig: names the key, exit 1, no tool called', async () => {
    const sb = existingSandbox();
    const r = await sb.run('footprint', [], { ...EXISTING, KUBE_CONTEXT: 'prod' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('KUBE_CONTEXT="prod" is not a context in');
    expect(r.calls).toEqual([]);
  });
});
