// CLUSTER=existing, the cluster target of every phase: the pure parts table by table (which context
// and server a run goes to, what looks remote, the tool arguments, the profile and storage layers,
// what destroy may remove), then the phases against the stand-ins with a kind-like cluster in the
// user's kubeconfig: no Docker and no talosctl at all, every call names the context, a second run
// changes nothing, a remote context is never touched unconfirmed, destroy removes only ours.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { type ClusterTarget, clusterTarget, installedRecord, isLocalTarget, mergeValues, ownedOnCluster, parseConfig, recordInstalled, resolveContext, targetArgs, toolHint } from '../scripts/lib.ts';
import { CLUSTER_PROFILE_SIZES, clusterLayers, releaseSpec } from '../scripts/observability.ts';
import { clusterDefaultClass } from '../scripts/storage.ts';
import { ourObjectsElsewhere } from '../scripts/talos.ts';
import { type Sandbox, type ToolCall, isMutating, makeSandbox } from './helpers.ts';

describe('isLocalTarget: deploy without asking only to a cluster on this machine or its LAN', () => {
  it.each([
    ['kind-demo', 'https://127.0.0.1:41234', true],
    ['k3d-dev', 'https://0.0.0.0:6550', true], // k3d's own context name
    ['docker-desktop', 'https://kubernetes.docker.internal:6443', true],
    ['orbstack', 'https://127.0.0.1:26443', true],
    ['colima', 'https://127.0.0.1:6443', true],
    ['minikube', 'https://192.168.49.2:8443', true],
    ['rancher-desktop', 'https://127.0.0.1:6443', true],
    ['dev', 'https://localhost:6443', true],
    ['dev', 'https://[::1]:6443', true],
    ['lab', 'https://10.20.0.5:6443', true],
    ['lab', 'https://172.16.0.1:6443', true],
    ['lab', 'https://172.31.255.254:6443', true],
    ['lab', 'https://192.168.1.10:6443', true],
    ['lab', 'https://k8s.home.local:6443', true],
    ['lab', 'https://host.docker.internal:6443', true],
    ['admin@talos-local', 'https://127.0.0.1:50000', true],
    ['prod', 'https://k8s.example.com', false],
    ['prod', 'https://172.32.0.1:6443', false], // just outside 172.16/12
    ['prod', 'https://11.0.0.1:6443', false],
    ['gke_project_europe-west1_main', 'https://34.76.1.2', false],
    ['arn:aws:eks:eu-west-1:123456789012:cluster/main', 'https://ABC.gr7.eu-west-1.eks.amazonaws.com', false],
    ['kindly-prod', 'https://k8s.example.com', false], // "kind-" is a prefix, not a substring
    ['prod', 'not a url', false],
  ])('%s at %s: %s', (context, server, local) => {
    expect(isLocalTarget(context, server)).toBe(local);
  });
});

const kubeconfig = (current: string, contexts: [name: string, cluster: string][], clusters: [name: string, server: string][]) =>
  YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': current,
    contexts: contexts.map(([name, cluster]) => ({ name, context: { cluster, user: name } })),
    clusters: clusters.map(([name, server]) => ({ name, cluster: { server } })),
    users: contexts.map(([name]) => ({ name, user: { token: 'x' } })),
  });

describe('resolveContext: the context of a run, merged over KUBECONFIG as kubectl merges it', () => {
  const a = { file: '/a', text: kubeconfig('kind-demo', [['kind-demo', 'kind-demo'], ['prod', 'prod']], [['kind-demo', 'https://127.0.0.1:41234'], ['prod', 'https://k8s.example.com']]) };
  const b = { file: '/b', text: kubeconfig('other', [['other', 'other'], ['prod', 'elsewhere']], [['other', 'https://10.0.0.9:6443'], ['elsewhere', 'https://x.example.org']]) };
  const missing = { file: '/missing', text: undefined };
  it.each([
    ['the current context', [a], '', { context: 'kind-demo', server: 'https://127.0.0.1:41234' }],
    ['KUBE_CONTEXT over the current one', [a], 'prod', { context: 'prod', server: 'https://k8s.example.com' }],
    ['the first file that sets current-context wins', [b, a], '', { context: 'other', server: 'https://10.0.0.9:6443' }],
    ['the first file that defines a context wins', [b, a], 'prod', { context: 'prod', server: 'https://x.example.org' }],
    ['a context from a later file', [a, b], 'other', { context: 'other', server: 'https://10.0.0.9:6443' }],
    ['missing files are skipped', [missing, a], '', { context: 'kind-demo', server: 'https://127.0.0.1:41234' }],
  ] as const)('%s', (_, files, wanted, want) => {
    expect(resolveContext([...files], wanted)).toEqual(want);
  });
  it.each([
    ['no file exists', [missing], '', /KUBECONFIG names no kubeconfig file that exists \(\/missing\)\. Set KUBECONFIG in \.env/],
    ['an unknown KUBE_CONTEXT', [a], 'staging', /KUBE_CONTEXT="staging" is not a context in \/a \(contexts there: kind-demo, prod\)\. Set KUBE_CONTEXT in \.env/],
    ['no current context', [{ file: '/c', text: kubeconfig('', [['x', 'x']], [['x', 'https://127.0.0.1']]) }], '', /KUBE_CONTEXT is empty and \/c sets no current context \(contexts there: x\)/],
    ['a current context that is not defined', [{ file: '/d', text: kubeconfig('gone', [['x', 'x']], [['x', 'https://127.0.0.1']]) }], '', /the current context "gone" is not a context in \/d/],
    ['a context whose cluster has no server', [{ file: '/e', text: kubeconfig('x', [['x', 'nowhere']], []) }], '', /context "x" names cluster "nowhere", which has no server in \/e/],
  ] as const)('says what to fix when %s', (_, files, wanted, problem) => {
    expect(resolveContext([...files], wanted)).toEqual({ problem: expect.stringMatching(problem) });
  });
});

describe('clusterTarget: resolved once per process', () => {
  it('switching the current context mid-run changes nothing: every later call goes to the first one', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'target-'));
    const file = path.join(dir, 'config');
    const clusters: [string, string][] = [['kind-demo', 'https://127.0.0.1:41234'], ['prod', 'https://k8s.example.com']];
    const contexts: [string, string][] = [['kind-demo', 'kind-demo'], ['prod', 'prod']];
    fs.writeFileSync(file, kubeconfig('kind-demo', contexts, clusters));
    const cfg = parseConfig({ CLUSTER: 'existing', KUBECONFIG: file, STATE_DIR: path.join(dir, 'state') });
    expect(clusterTarget(cfg)).toEqual({ kind: 'existing', files: [file], context: 'kind-demo', server: 'https://127.0.0.1:41234' });
    fs.writeFileSync(file, kubeconfig('prod', contexts, clusters)); // `kubectl config use-context prod` in another terminal
    expect(clusterTarget(parseConfig({ CLUSTER: 'existing', KUBECONFIG: file, STATE_DIR: path.join(dir, 'state') })).context).toBe('kind-demo');
    expect(toolHint(cfg, 'helm')).toBe(`helm --kubeconfig ${file} --kube-context kind-demo`);
  });
});

describe('targetArgs: how kubectl and helm are pointed at the target', () => {
  const existing = (files: string[]): ClusterTarget => ({ kind: 'existing', files, context: 'kind-demo', server: 'https://127.0.0.1:1' });
  it.each([
    ['talos, kubectl', { kind: 'talos', files: ['/s/kubeconfig'], context: 'admin@talos-local', server: '' } as ClusterTarget, 'kubectl', ['--kubeconfig', '/s/kubeconfig'], {}],
    ['talos, helm', { kind: 'talos', files: ['/s/kubeconfig'], context: 'admin@talos-local', server: '' } as ClusterTarget, 'helm', ['--kubeconfig', '/s/kubeconfig'], {}],
    ['one file, kubectl', existing(['/k']), 'kubectl', ['--kubeconfig', '/k', '--context', 'kind-demo'], {}],
    ['one file, helm', existing(['/k']), 'helm', ['--kubeconfig', '/k', '--kube-context', 'kind-demo'], {}],
    ['several files, kubectl: KUBECONFIG', existing(['/a', '/b']), 'kubectl', ['--context', 'kind-demo'], { KUBECONFIG: '/a:/b' }],
    ['several files, helm: KUBECONFIG', existing(['/a', '/b']), 'helm', ['--kube-context', 'kind-demo'], { KUBECONFIG: '/a:/b' }],
  ] as const)('%s', (_, target, tool, args, env) => {
    expect(targetArgs(target, tool)).toEqual({ args, env });
  });
});

describe('PROFILE', () => {
  it.each([
    ['laptop', {}, { PROMETHEUS_RETENTION: '15d', PROMETHEUS_STORAGE: '10Gi', LOKI_RETENTION: '168h', LOKI_STORAGE: '5Gi' }],
    ['cluster', {}, { PROMETHEUS_RETENTION: '30d', PROMETHEUS_STORAGE: '50Gi', LOKI_RETENTION: '720h', LOKI_STORAGE: '50Gi' }],
    ['cluster, a value set wins', { LOKI_STORAGE: '8Gi' }, { PROMETHEUS_RETENTION: '30d', PROMETHEUS_STORAGE: '50Gi', LOKI_RETENTION: '720h', LOKI_STORAGE: '8Gi' }],
  ])('%s: the retention and volume defaults', (name, set, want) => {
    const cfg = parseConfig({ PROFILE: name.split(',')[0], ...set });
    expect({ PROMETHEUS_RETENTION: cfg.PROMETHEUS_RETENTION, PROMETHEUS_STORAGE: cfg.PROMETHEUS_STORAGE, LOKI_RETENTION: cfg.LOKI_RETENTION, LOKI_STORAGE: cfg.LOKI_STORAGE }).toEqual(want);
  });

  it('laptop on local-path layers nothing: the values of every release are what they were', () => {
    const cfg = parseConfig({ STATE_DIR: '/nonexistent-state' });
    expect(clusterLayers(cfg, 'local-path')).toEqual({ prometheus: [], loki: [], tempo: [], k8sMonitoring: [], grafana: [] });
    for (const key of ['prometheus', 'loki', 'k8sMonitoring', 'grafana'] as const) expect(releaseSpec(cfg, key).values).toHaveLength(2);
  });

  it('cluster: every row of the sizes table lands on its workload, above the laptop sizes', () => {
    const laptop = parseConfig({ STATE_DIR: '/nonexistent-state' });
    const cluster = parseConfig({ STATE_DIR: '/nonexistent-state', PROFILE: 'cluster' });
    for (const row of CLUSTER_PROFILE_SIZES) {
      const at = (cfg: typeof laptop) => row.path.reduce((o: any, k) => o?.[k], mergeValues(...releaseSpec(cfg, row.key).values));
      expect(at(cluster).resources, `${row.key} ${row.path.join('.')}`).toEqual({ requests: row.requests, limits: row.limits });
      const mib = (q: string) => Number(q.replace(/Gi$/, '')) * (q.endsWith('Gi') ? 1024 : 1) || Number(q.replace(/Mi$/, ''));
      expect(mib(row.limits.memory)).toBeGreaterThan(mib(at(laptop).resources.limits.memory));
      if (row.replicas) expect(at(cluster)[row.replicas.key]).toBe(row.replicas.count);
    }
  });

  it("another StorageClass goes to every volume of Prometheus, Alertmanager and Loki", () => {
    const cfg = parseConfig({ STATE_DIR: '/nonexistent-state' });
    const layers = clusterLayers(cfg, 'standard');
    const v = (key: 'prometheus' | 'loki') => mergeValues(...layers[key]) as any;
    expect(v('prometheus').server.persistentVolume.storageClass).toBe('standard');
    expect(v('prometheus').alertmanager.persistence.storageClass).toBe('standard');
    expect(v('loki').singleBinary.persistence.storageClass).toBe('standard');
  });
});

describe('clusterDefaultClass: the StorageClass of an existing cluster to use instead of local-path', () => {
  const sc = (name: string, isDefault: boolean, created = '2026-01-01T00:00:00Z') => ({
    apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass',
    metadata: { name, creationTimestamp: created, annotations: isDefault ? { 'storageclass.kubernetes.io/is-default-class': 'true' } : {} },
  });
  it.each([
    ['no class', [], false, undefined],
    ['a class not marked default', [sc('slow', false)], false, undefined],
    ["kind's standard", [sc('standard', true)], false, 'standard'],
    ["k3d's own local-path (not ours)", [sc('local-path', true)], false, 'local-path'],
    ['the local-path we installed earlier', [sc('local-path', true)], true, undefined],
    ['the newest of two defaults, as the API server picks', [sc('old', true, '2025-01-01T00:00:00Z'), sc('new', true, '2026-02-01T00:00:00Z')], false, 'new'],
  ] as const)('%s', (_, classes, ours, want) => {
    expect(clusterDefaultClass([...classes] as any, ours)).toBe(want);
  });
});

describe('ownedOnCluster: what destroy may remove from a cluster that is not ours', () => {
  const ns = (name: string, owner?: string) => ({ metadata: { name, labels: (owner ? { 'talos-local.platform/owner': owner } : {}) as Record<string, string> } });
  const rel = (name: string, namespace: string, chart: string) => ({ name, namespace, chart, status: 'deployed', revision: '1', updated: '2026-01-01 00:00:00.000000000 +0000 UTC' });
  it('only recorded releases (namespace and name) of our charts, labelled namespaces, recorded CRDs still there, local-path objects when ours', () => {
    expect(
      ownedOnCluster({
        clusterName: 'talos-local',
        releases: [rel('prometheus', 'monitoring', 'prometheus-29.27.0'), rel('prometheus', 'team', 'prometheus-29.27.0'), rel('grafana', 'team', 'grafana-operator-5.0.0'), rel('loki', 'monitoring', 'loki-18.11.0')],
        namespaces: [ns('monitoring', 'talos-local'), ns('team'), ns('traefik', 'other-name'), ns('sample-app', 'talos-local')],
        crds: ['alloys.collectors.grafana.com', 'certificates.cert-manager.io'],
        installed: { releases: ['monitoring/prometheus', 'team/grafana', 'monitoring/loki'], crds: ['alloys.collectors.grafana.com', 'gone.example.com'], localPath: true, clusterObjects: ['StorageClass/local-path'] },
      }),
    ).toEqual({
      releases: [{ name: 'prometheus', namespace: 'monitoring' }, { name: 'loki', namespace: 'monitoring' }],
      namespaces: ['monitoring', 'sample-app'],
      crds: ['alloys.collectors.grafana.com'],
      clusterObjects: ['StorageClass/local-path'],
    });
  });
  it("nothing of local-path when the cluster's own class was used", () => {
    expect(ownedOnCluster({ clusterName: 'x', releases: [], namespaces: [], crds: [], installed: { localPath: false, storageClass: 'standard', clusterObjects: ['StorageClass/x'] } }).clusterObjects).toEqual([]);
  });
});

describe("ourObjectsElsewhere: what destroy removes from namespaces that are not ours", () => {
  const ours = { 'app.kubernetes.io/part-of': 'talos-local-observability' };
  const obj = (apiVersion: string, kind: string, namespace: string, name: string, labels: Record<string, string> = ours) => ({ apiVersion, kind, metadata: { name, namespace, labels } });
  it.each([
    ['a Secret of ours in their namespace', [obj('v1', 'Secret', 'monitoring', 'platform-tls')], [], [{ type: 'secret', kind: 'Secret', namespace: 'monitoring', name: 'platform-tls' }]],
    ['an Ingress: kind.group for kubectl', [obj('networking.k8s.io/v1', 'Ingress', 'monitoring', 'grafana')], [], [{ type: 'ingress.networking.k8s.io', kind: 'Ingress', namespace: 'monitoring', name: 'grafana' }]],
    ['an IngressRoute', [obj('traefik.io/v1alpha1', 'IngressRoute', 'shop', 'shop')], [], [{ type: 'ingressroute.traefik.io', kind: 'IngressRoute', namespace: 'shop', name: 'shop' }]],
    ['in a namespace of ours: it goes with the namespace', [obj('v1', 'Secret', 'monitoring', 'platform-tls')], ['monitoring'], []],
    ['without our label (whatever the selector returned)', [obj('v1', 'Secret', 'monitoring', 'team', { 'app.kubernetes.io/part-of': 'kube-prometheus-stack' }), obj('v1', 'ConfigMap', 'monitoring', 'x', {})], [], []],
    ['cluster-scoped (no namespace)', [{ apiVersion: 'networking.k8s.io/v1', kind: 'IngressClass', metadata: { name: 'traefik', labels: ours } }], [], []],
  ] as const)('%s', (_, items, namespaces, want) => {
    expect(ourObjectsElsewhere(items as any, [...namespaces])).toEqual(want);
  });
});

// ---------------------------------------------------------------------------------------------
// Phases against the stand-ins
// ---------------------------------------------------------------------------------------------

const KIND = { context: 'kind-demo', server: 'https://127.0.0.1:41234' };
const PROD = { context: 'prod', server: 'https://k8s.example.com' };

/** A sandbox whose user has a kind cluster (current context) and a remote one in ~/.kube/config. */
function existingSandbox(): Sandbox {
  const sb = makeSandbox();
  fs.mkdirSync(path.join(sb.home, '.kube'));
  fs.writeFileSync(path.join(sb.home, '.kube', 'config'), kubeconfig(KIND.context, [[KIND.context, KIND.context], [PROD.context, PROD.context]], [[KIND.context, KIND.server], [PROD.context, PROD.server]]));
  sb.scenario({ kubectl: { existingClusters: { [KIND.server]: { nodes: ['demo-control-plane'] }, [PROD.server]: { nodes: ['prod-1'] } } } });
  return sb;
}
const EXISTING = { CLUSTER: 'existing' };
const cfgOf = (sb: Sandbox) => parseConfig({ ...EXISTING, STATE_DIR: sb.stateDir });
const line = (c: ToolCall) => `${c.tool} ${c.argv.join(' ')}`;
const namespaceObject = (name: string, labels: Record<string, string> = {}) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });

describe('phases with CLUSTER=existing', { timeout: 240_000 }, () => {
  it('talos, registry, preflight and kubeconfig are skipped in one line, without a single tool call', async () => {
    const sb = existingSandbox();
    for (const args of [[], ['--registry'], ['--preflight'], ['--kubeconfig']]) {
      const r = await sb.run('talos', args, EXISTING);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`skipped: CLUSTER=existing (the cluster of context ${KIND.context}: no Docker, no Talos)`);
      expect(r.calls).toEqual([]);
    }
    expect(fs.existsSync(sb.stateDir)).toBe(false);
  });

  it('target, storage, observability: no docker or talosctl call, every call names the context, and a second run changes nothing', async () => {
    const sb = existingSandbox();
    sb.scenario({ kubectl: { objects: { 'StorageClass//standard': { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'standard', annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } } } } });
    const phases = [['talos', ['--target']], ['talos', ['--registry']], ['talos', []], ['storage', []], ['observability', []]] as const;
    const deploy = async (run: string) => {
      const calls: ToolCall[] = [];
      for (const [script, args] of phases) {
        const r = await sb.run(script, [...args], { ...EXISTING, DEPLOY_RUN_ID: run });
        expect(r.code, `${script} ${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(0);
        if (script !== 'talos' || args[0] === '--target') expect(r.stdout).toContain(`cluster: context ${KIND.context} (server ${KIND.server}) from ${path.join(sb.home, '.kube', 'config')}`);
        if (script === 'storage') expect(r.stdout).toContain('using default StorageClass standard');
        calls.push(...r.calls);
      }
      return calls;
    };
    const first = await deploy('first');
    expect(first.filter((c) => c.tool === 'docker' || c.tool === 'talosctl').map(line)).toEqual([]);
    expect(first.filter((c) => c.tool === 'kubectl' && !line(c).includes(` --context ${KIND.context} `)).map(line)).toEqual([]);
    expect(first.filter((c) => c.tool === 'helm' && !line(c).includes(` --kube-context ${KIND.context} `)).map(line)).toEqual([]);
    // local-path is left out; the volumes are claimed from the cluster's class.
    expect(first.filter((c) => line(c).includes('kustomize'))).toEqual([]);
    const state = sb.state();
    expect(Object.keys(state.kubectl.objects).filter((k) => k.includes('local-path'))).toEqual([]);
    expect(installedRecord(cfgOf(sb))).toMatchObject({ storageClass: 'standard', localPath: false, releases: ['monitoring/grafana', 'monitoring/k8s-monitoring', 'monitoring/loki', 'monitoring/prometheus', 'monitoring/tempo'] });
    const prometheusValues = YAML.parse(fs.readFileSync(path.join(sb.stateDir, 'helm', 'prometheus.values.yaml'), 'utf8'));
    expect(prometheusValues.server.persistentVolume.storageClass).toBe('standard');
    // The namespaces the platform created carry its owner label.
    expect(state.kubectl.objects['Namespace//monitoring'].metadata.labels['talos-local.platform/owner']).toBe('talos-local');

    const second = await deploy('second');
    expect(second.filter(isMutating).map(line)).toEqual([]);
    expect(second.filter((c) => c.tool === 'docker' || c.tool === 'talosctl')).toEqual([]);
  });

  it('without a default StorageClass, storage installs local-path and records it as ours', async () => {
    const sb = existingSandbox();
    const r = await sb.run('storage', [], EXISTING);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('none: local-path-provisioner is installed');
    const installed = installedRecord(cfgOf(sb));
    expect(installed).toMatchObject({ storageClass: 'local-path', localPath: true });
    expect(installed.clusterObjects).toEqual(expect.arrayContaining(['StorageClass/local-path']));
    expect(sb.state().kubectl.objects['Namespace//local-path-storage'].metadata.labels['talos-local.platform/owner']).toBe('talos-local');
    // A re-run keeps using it (it is now the default class, but ours).
    const again = await sb.run('storage', [], EXISTING);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls.filter(isMutating).map(line)).toEqual([]);
  });

  it('a namespace that was there before keeps no owner label of ours', async () => {
    const sb = existingSandbox();
    sb.scenario({ kubectl: { objects: { 'Namespace//monitoring': namespaceObject('monitoring', { team: 'ops' }) } } });
    const r = await sb.run('observability', [], EXISTING);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(sb.state().kubectl.objects['Namespace//monitoring'].metadata.labels).not.toHaveProperty(['talos-local.platform/owner']);
  });

  it('a remote-looking context without a terminal and without --yes: refused with the command, nothing touched', async () => {
    const sb = existingSandbox();
    const env = { ...EXISTING, KUBE_CONTEXT: PROD.context };
    const r = await sb.run('storage', [], env);
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toContain(`context ${PROD.context} (server ${PROD.server}) looks like a remote cluster, and there is no terminal to ask "Deploy to ${PROD.context} (${PROD.server})?". Nothing was changed. Confirm with: npx tsx scripts/storage.ts --yes`);
    expect(r.calls).toEqual([]);
    expect(fs.existsSync(sb.stateDir)).toBe(false);
    // In `task deploy`, the command is the deploy's.
    const inDeploy = await sb.run('storage', [], { ...env, DEPLOY_RUN_ID: 'r1', PHASE_LABELS: 'true' });
    expect(inDeploy.stdout + inDeploy.stderr).toContain('Confirm with: task deploy -- --yes');
    expect(inDeploy.calls).toEqual([]);
  });

  it('confirmed once per deploy run: the target phase with --yes, then the later phases of that run only', async () => {
    const sb = existingSandbox();
    const env = { ...EXISTING, KUBE_CONTEXT: PROD.context, DEPLOY_RUN_ID: 'run-1' };
    const target = await sb.run('talos', ['--target', '--yes'], env);
    expect(target.code, target.stdout + target.stderr).toBe(0);
    expect(target.calls.map(line)).toEqual([`kubectl --kubeconfig ${path.join(sb.home, '.kube', 'config')} --context prod get --raw /readyz`]);
    const storage = await sb.run('storage', [], env);
    expect(storage.code, storage.stdout + storage.stderr).toBe(0);
    // Another run is asked again.
    const nextRun = await sb.run('storage', [], { ...env, DEPLOY_RUN_ID: 'run-2' });
    expect(nextRun.code).toBe(1);
    expect(nextRun.calls).toEqual([]);
  });

  it('a context kubectl cannot find: the key, the value and the contexts there, before any tool call', async () => {
    const sb = existingSandbox();
    const r = await sb.run('storage', [], { ...EXISTING, KUBE_CONTEXT: 'staging' });
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toContain(`KUBE_CONTEXT="staging" is not a context in ${path.join(sb.home, '.kube', 'config')} (contexts there: kind-demo, prod). Set KUBE_CONTEXT in .env to one of them.`);
    expect(r.calls).toEqual([]);
  });

  it('several kubeconfig files reach kubectl and helm through KUBECONFIG, with the context named', async () => {
    const sb = existingSandbox();
    const extra = path.join(sb.dir, 'extra.yaml');
    fs.writeFileSync(extra, kubeconfig('', [['team', 'team']], [['team', 'https://10.1.2.3:6443']]));
    const r = await sb.run('storage', [], { ...EXISTING, KUBECONFIG: `${extra}:${path.join(sb.home, '.kube', 'config')}` });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`cluster: context ${KIND.context} (server ${KIND.server}) from ${extra}:${path.join(sb.home, '.kube', 'config')}`);
    expect(r.calls.filter((c) => c.tool === 'kubectl').every((c) => c.argv[0] === '--context' && c.argv[1] === KIND.context && !c.argv.includes('--kubeconfig'))).toBe(true);
  });

  it('destroy removes only what the platform installed, asks first, and a second destroy changes nothing', async () => {
    const sb = existingSandbox();
    sb.scenario({ kubectl: { objects: { 'StorageClass//standard': { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'standard', annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } } } } });
    for (const phase of ['storage', 'observability']) expect((await sb.run(phase, [], EXISTING)).code).toBe(0);
    // The user's own things on the same cluster: a namespace, a release of the same chart, a CRD.
    sb.scenario({
      kubectl: { objects: { 'Namespace//team-a': namespaceObject('team-a'), 'CustomResourceDefinition//certificates.cert-manager.io': { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'certificates.cert-manager.io' } }, 'CustomResourceDefinition//alloys.collectors.grafana.com': { apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'alloys.collectors.grafana.com' } } } },
      helm: { releases: { 'team-a/prometheus': { name: 'prometheus', namespace: 'team-a', chart: 'prometheus-29.27.0', status: 'deployed', revision: 1, values: {} } } },
    });
    // A CRD a release of ours created (the stand-in helm creates none).
    recordInstalled(cfgOf(sb), { crds: ['alloys.collectors.grafana.com'] });

    const refused = await sb.run('talos', ['--destroy'], EXISTING);
    expect(refused.code).toBe(1);
    expect(refused.stdout + refused.stderr).toContain('not asking without a terminal: pass --yes');
    expect(refused.stdout).toContain('will remove Helm release monitoring/prometheus');
    expect(refused.calls.filter(isMutating)).toEqual([]);

    const r = await sb.run('talos', ['--destroy', '--yes'], EXISTING);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.calls.filter((c) => c.tool === 'docker' || c.tool === 'talosctl')).toEqual([]);
    const objects = sb.state().kubectl.objects;
    const releases = sb.state().helm.releases;
    expect(Object.keys(releases)).toEqual(['team-a/prometheus']);
    expect(objects).not.toHaveProperty(['Namespace//monitoring']);
    expect(objects).toHaveProperty(['Namespace//team-a']);
    expect(objects).toHaveProperty(['CustomResourceDefinition//certificates.cert-manager.io']);
    expect(objects).not.toHaveProperty(['CustomResourceDefinition//alloys.collectors.grafana.com']);
    expect(objects).toHaveProperty(['StorageClass//standard']);
    expect(fs.existsSync(path.join(sb.stateDir, 'installed.log'))).toBe(false);

    const again = await sb.run('talos', ['--destroy', '--yes'], EXISTING);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls.filter(isMutating).map(line)).toEqual([]);
  });

  it("destroy, in a namespace that was the user's before: our objects go (the Ingresses, Secret platform-tls with our key, Grafana's Secret, the dashboards), theirs stay", async () => {
    const sb = existingSandbox();
    const ours = (o: { metadata: { labels?: Record<string, string> } }) => o.metadata.labels?.['app.kubernetes.io/part-of'] === 'talos-local-observability';
    // The user's monitoring (kube-prometheus-stack's usual home) with their own Secret and Ingress, and their ingress controller.
    const theirs = {
      'Namespace//monitoring': namespaceObject('monitoring', { team: 'ops' }),
      'Secret/monitoring/team-creds': { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: 'team-creds', namespace: 'monitoring' }, data: { token: 'eA==' } },
      'Ingress/monitoring/team-dash': { apiVersion: 'networking.k8s.io/v1', kind: 'Ingress', metadata: { name: 'team-dash', namespace: 'monitoring', labels: { team: 'ops' } }, spec: { ingressClassName: 'nginx' } },
      'ConfigMap/monitoring/team-dashboards': { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'team-dashboards', namespace: 'monitoring', labels: { 'app.kubernetes.io/part-of': 'kube-prometheus-stack' } }, data: {} },
    };
    sb.scenario({
      kubectl: {
        objects: {
          ...theirs,
          'StorageClass//standard': { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'standard', annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } },
          'IngressClass//nginx': { apiVersion: 'networking.k8s.io/v1', kind: 'IngressClass', metadata: { name: 'nginx' }, spec: { controller: 'k8s.io/ingress-nginx' } },
        },
      },
    });
    const env = { ...EXISTING, INGRESS_CLASS: 'nginx' };
    for (const phase of ['storage', 'observability', 'traefik']) {
      const r = await sb.run(phase, [], env);
      expect(r.code, `${phase}: ${r.stdout}${r.stderr}`).toBe(0);
    }
    const inMonitoring = () => Object.entries(sb.state().kubectl.objects).filter(([k]) => k.split('/')[1] === 'monitoring');
    const ourKeys = inMonitoring().filter(([, o]) => ours(o as never)).map(([k]) => k).sort();
    // What the phases applied there with kubectl, every one labelled ours.
    expect(ourKeys).toEqual(expect.arrayContaining(['Ingress/monitoring/grafana', 'Secret/monitoring/platform-tls', 'Secret/monitoring/grafana-admin', 'ConfigMap/monitoring/grafana-dashboards-platform', 'Secret/monitoring/alertmanager-webhook']));
    expect(inMonitoring().map(([k]) => k).filter((k) => !k.startsWith('Namespace/') && !(k in theirs) && !ourKeys.includes(k))).toEqual([]);

    const plan = await sb.run('talos', ['--destroy'], env);
    expect(plan.code).toBe(1);
    expect(plan.stdout).toContain('will remove Secret monitoring/platform-tls (labelled app.kubernetes.io/part-of=talos-local-observability, in namespace monitoring, which is not ours)');
    expect(plan.stdout).toContain('will remove Ingress monitoring/grafana (labelled');
    expect(plan.stdout).not.toMatch(/team-/);
    expect(plan.calls.filter(isMutating)).toEqual([]);

    const r = await sb.run('talos', ['--destroy', '--yes'], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(inMonitoring().filter(([, o]) => ours(o as never)).map(([k]) => k)).toEqual([]);
    // Their namespace stays (the stand-in's apply replaced its labels with ours: the real one merges them), and everything of theirs in it.
    expect(sb.state().kubectl.objects).toHaveProperty(['Namespace//monitoring']);
    for (const [key, object] of Object.entries(theirs).filter(([k]) => !k.startsWith('Namespace/'))) expect(sb.state().kubectl.objects[key]).toEqual(object);

    const again = await sb.run('talos', ['--destroy', '--yes'], env);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls.filter(isMutating).map(line)).toEqual([]);
  });

  it("destroy with Traefik, in the user's monitoring: our IngressRoutes there go (the Traefik CRDs are the user's and stay), their IngressRoute stays", async () => {
    const sb = existingSandbox();
    const crd = (name: string) => ({ apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name } });
    const theirs = {
      'Namespace//monitoring': namespaceObject('monitoring', { team: 'ops' }),
      'IngressRoute/monitoring/team-route': { apiVersion: 'traefik.io/v1alpha1', kind: 'IngressRoute', metadata: { name: 'team-route', namespace: 'monitoring' }, spec: { routes: [] } },
      'CustomResourceDefinition//ingressroutes.traefik.io': crd('ingressroutes.traefik.io'),
      'CustomResourceDefinition//middlewares.traefik.io': crd('middlewares.traefik.io'),
      'CustomResourceDefinition//tlsstores.traefik.io': crd('tlsstores.traefik.io'),
    };
    sb.scenario({ kubectl: { objects: { ...theirs, 'StorageClass//standard': { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'standard', annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } } } } });
    const t = await sb.run('traefik', [], EXISTING);
    expect(t.code, t.stdout + t.stderr).toBe(0);
    expect(Object.keys(sb.state().kubectl.objects).filter((k) => k.startsWith('IngressRoute/monitoring/')).sort()).toEqual(['IngressRoute/monitoring/alertmanager', 'IngressRoute/monitoring/grafana', 'IngressRoute/monitoring/prometheus', 'IngressRoute/monitoring/team-route']);

    const r = await sb.run('talos', ['--destroy', '--yes'], EXISTING);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('will remove IngressRoute monitoring/grafana (labelled app.kubernetes.io/part-of=talos-local-observability, in namespace monitoring, which is not ours)');
    const objects = sb.state().kubectl.objects;
    expect(Object.keys(objects).filter((k) => k.split('/')[1] === 'monitoring')).toEqual(['IngressRoute/monitoring/team-route']);
    for (const [key, object] of Object.entries(theirs).filter(([k]) => !k.startsWith('Namespace/'))) expect(objects[key]).toEqual(object);
    expect(objects).not.toHaveProperty(['Namespace//traefik']);

    const again = await sb.run('talos', ['--destroy', '--yes'], EXISTING);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls.filter(isMutating).map(line)).toEqual([]);
  });
});
