// The phase scripts against a real Kubernetes API server, with the pinned charts: runs only where the
// charts were fetched (locally; skipped in CI), like the render tests:
//   OBS_CHARTS_DIR=/tmp/charts-telemetry npx vitest run tests/realapi-phases.test.ts
// with prometheus, loki, grafana, k8s-monitoring and alloy (grafana/alloy-operator's
// operator/helm-charts/alloy, for the Alloy Operator stand-in) under $OBS_CHARTS_DIR and the traefik
// chart at $TRAEFIK_CHART_DIR (default $OBS_CHARTS_DIR/traefik-src/traefik), each at its pinned version.
// A simcluster (tests/tools/simcluster, with its Alloy Operator stand-in) and the real helm and
// kubectl, as in realapi.test.ts; the charts are packaged into a local Helm repository that
// CHART_REPOSITORY_MIRROR points the phases at. The phases run with CLUSTER=existing and
// KUBECONFIG=the simcluster's admin kubeconfig (where it is, not copied), in a state dir that is
// ours and otherwise empty. The user's cluster has a default StorageClass: local-path applied by
// "the user" from the upstream manifest ($LPP_UPSTREAM, default /tmp/lpp.yaml) as the storage phase
// renders it, without our label; the storage phase then uses it and installs nothing (offline: it
// never renders). The traefik and observability phases run twice each: the first succeeds, the
// second changes nothing. The sample app too, with IMAGE_REGISTRY (the way an image reaches any
// cluster's nodes): there is no Docker here, so `docker` alone is the stand-in (tests/fakes: its
// build, push and manifest inspect keep the pushed images in its state file); the first run builds
// and pushes, the second finds the image there and changes nothing. Then `task status`'s script,
// `task footprint`'s (the platform's pods only),
// validate (its cluster checks pass; the routes cannot be reached: no container runs, so there is
// no kubelet to port-forward through), and last destroy with CLUSTER=existing --yes, twice, next
// to a namespace and a Helm release of the user's.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HELM_LIST_EVERY_STATE, NAMESPACE_OWNER_LABEL, STATE_DIR_MARKER, installedRecord, parseConfig } from '../scripts/lib.ts';
import { writeKustomization } from '../scripts/storage.ts';
import { contentHash } from '../scripts/app.ts';
import { APP_DIR } from '../scripts/sample-app.ts';
import { freePortsSync } from './helpers.ts';
// @ts-expect-error: plain ESM module without types
import { KUBE_CLIENTS, REAL_API_PLATFORM, SIMCLUSTER } from './tools/test-tools.mjs';

const PROJECT_DIR = path.resolve(import.meta.dirname, '..');
const chartsDir = process.env.OBS_CHARTS_DIR ?? '';
const traefikChart = process.env.TRAEFIK_CHART_DIR ?? path.join(chartsDir, 'traefik-src', 'traefik');
const lppUpstream = process.env.LPP_UPSTREAM ?? '/tmp/lpp.yaml';
/** The user's registry the sample app's image is pushed to (only the stand-in docker talks to it). */
const IMAGE_REGISTRY = 'registry.example.test/team';
/** The chart folders to serve: every pinned chart, at its pinned version. */
const chartDirs = () => [traefikChart, ...['prometheus', 'loki', 'tempo', 'grafana', 'k8s-monitoring'].map((c) => path.join(chartsDir, c))];
const present =
  (REAL_API_PLATFORM as boolean) &&
  chartsDir !== '' &&
  fs.existsSync(path.join(chartsDir, 'alloy', 'Chart.yaml')) &&
  fs.existsSync(lppUpstream) &&
  chartDirs().every((d) => fs.existsSync(path.join(d, 'Chart.yaml')));

/** Runs a command without blocking this process (the chart repository is served from it). */
const runAsync = (cmd: string, args: string[], env: NodeJS.ProcessEnv) =>
  new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(cmd, args, { env, cwd: PROJECT_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });

describe.skipIf(!present)('the phases against a real API server with the pinned charts', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'realapi-phases-'));
  const simDir = path.join(tmp, 'simcluster');
  // CLUSTER=existing: the user's own kubeconfig (the simcluster's admin one, not copied into the
  // state dir), and a state dir that is ours and otherwise empty.
  const stateDir = path.join(tmp, 'state');
  // `docker` alone from the stand-ins (the real helm and kubectl stay first for everything else), and its state.
  const dockerBin = path.join(tmp, 'docker-bin');
  const dockerState = path.join(tmp, 'docker-state.json');
  let adminKubeconfig = '';
  const clientsPath = `${KUBE_CLIENTS.binDir()}${path.delimiter}${process.env.PATH}`;
  const simEnv = (extra: NodeJS.ProcessEnv = {}) => ({ ...process.env, PATH: clientsPath, SIMCLUSTER_BIN: SIMCLUSTER.binDir(), SIMCLUSTER_DIR: simDir, ...extra });
  let server: http.Server;
  let env: NodeJS.ProcessEnv;
  const phase = (name: string, args: string[] = [], extra: NodeJS.ProcessEnv = {}) =>
    runAsync(process.execPath, ['--import', 'tsx', path.join(PROJECT_DIR, 'scripts', `${name}.ts`), ...args], { ...env, ...extra });
  const kubectl = (args: string[], input?: string) => execFileSync('kubectl', ['--kubeconfig', adminKubeconfig, ...args], { env, input, encoding: 'utf8' });
  const helmList = () =>
    (JSON.parse(execFileSync('helm', ['--kubeconfig', adminKubeconfig, 'list', '-A', ...HELM_LIST_EVERY_STATE, '--output', 'json'], { env, encoding: 'utf8' })) as { name: string; namespace: string }[])
      .map((r) => `${r.namespace}/${r.name}`)
      .sort();

  beforeAll(async () => {
    const [api, etcd, peer] = freePortsSync(3).map(String);
    const kubeconfig = execFileSync('bash', [path.join(SIMCLUSTER.dir, 'up.sh')], {
      env: simEnv({ SIMCLUSTER_API_PORT: api, SIMCLUSTER_ETCD_PORT: etcd, SIMCLUSTER_ETCD_PEER_PORT: peer, SIMCLUSTER_ALLOY_OPERATOR: '1', ALLOY_CHART: path.join(chartsDir, 'alloy') }),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    adminKubeconfig = kubeconfig;
    // Ours and otherwise empty: CLUSTER=existing reads the user's kubeconfig where it is.
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(path.join(stateDir, STATE_DIR_MARKER), '');
    fs.mkdirSync(dockerBin);
    fs.writeFileSync(path.join(dockerBin, 'docker'), `#!/bin/sh\nexec "${process.execPath}" "${path.join(PROJECT_DIR, 'tests', 'fakes', 'fake-tool.mjs')}" docker "$@"\n`, { mode: 0o755 });

    const repoDir = path.join(tmp, 'repo');
    fs.mkdirSync(repoDir);
    const helmHome = { HELM_CACHE_HOME: path.join(tmp, 'helm-cache'), HELM_CONFIG_HOME: path.join(tmp, 'helm-config'), HELM_DATA_HOME: path.join(tmp, 'helm-data') };
    for (const dir of chartDirs()) execFileSync('helm', ['package', dir, '--destination', repoDir], { env: simEnv(helmHome), stdio: 'ignore' });
    execFileSync('helm', ['repo', 'index', repoDir], { env: simEnv(helmHome) });
    server = http.createServer((req, res) => {
      const file = path.join(repoDir, path.basename(new URL(req.url ?? '/', 'http://x').pathname));
      if (fs.existsSync(file) && fs.statSync(file).isFile()) res.writeHead(200).end(fs.readFileSync(file));
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const [HTTP_PORT, HTTPS_PORT] = freePortsSync(2).map(String);
    env = {
      ...process.env,
      ...helmHome,
      PATH: `${dockerBin}${path.delimiter}${clientsPath}`,
      FAKE_STATE: dockerState,
      STATE_DIR: stateDir,
      CLUSTER: 'existing',
      KUBECONFIG: kubeconfig,
      KUBE_CONTEXT: '',
      ENV_FILE: path.join(tmp, 'no.env'),
      NO_COLOR: '1',
      HTTP_PORT,
      HTTPS_PORT,
      IMAGE_REGISTRY: IMAGE_REGISTRY,
      CHART_REPOSITORY_MIRROR: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    };

    // The user's cluster has a default StorageClass (as kind's, k3d's or a cloud's): local-path as the
    // storage phase renders it (marked default, Pod Security privileged), from the upstream manifest on
    // disk, applied by the user (no owner label), rendered outside our state dir.
    const dir = writeKustomization(parseConfig({ STATE_DIR: path.join(tmp, 'user-storage') }));
    fs.copyFileSync(lppUpstream, path.join(dir, 'upstream.yaml'));
    const k = YAML.parse(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
    k.resources = ['upstream.yaml'];
    fs.writeFileSync(path.join(dir, 'kustomization.yaml'), YAML.stringify(k));
    kubectl(['apply', '-f', '-'], kubectl(['kustomize', dir]));
  }, 300_000);

  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    execFileSync('bash', [path.join(SIMCLUSTER.dir, 'down.sh'), '--purge'], { env: simEnv(), stdio: 'inherit' });
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("storage with CLUSTER=existing: uses the cluster's default StorageClass, installs nothing (offline)", async () => {
    for (const run of [1, 2]) {
      const r = await phase('storage');
      expect(r.code, r.out).toBe(0);
      expect(r.out, r.out).toMatch(/using default StorageClass local-path/);
      if (run === 2) expect(r.out, r.out).toMatch(/nothing changed/);
    }
    expect(installedRecord(parseConfig({ STATE_DIR: stateDir, CLUSTER: 'existing', KUBECONFIG: adminKubeconfig }))).toEqual({ storageClass: 'local-path', localPath: false });
    expect(fs.existsSync(path.join(stateDir, 'kubeconfig'))).toBe(false);
  }, 120_000);

  for (const name of ['traefik', 'observability']) {
    it(`${name} with CLUSTER=existing: the first run succeeds, the second changes nothing`, async () => {
      const first = await phase(name);
      expect(first.code, first.out).toBe(0);
      expect(first.out, first.out).toMatch(/cluster: context simcluster \(server https:\/\/127\.0\.0\.1:\d+\)/);
      const second = await phase(name);
      expect(second.code, second.out).toBe(0);
      expect(second.out, second.out).toMatch(/done in [\d.]+s: \d+ steps, nothing changed/);
    }, 900_000);
  }

  it('sample-app with CLUSTER=existing and IMAGE_REGISTRY: the first run builds, pushes and rolls out; the second changes nothing', async () => {
    const image = `${IMAGE_REGISTRY}/sample-app:${contentHash(APP_DIR)}`;
    const first = await phase('sample-app');
    expect(first.code, first.out).toBe(0);
    expect(first.out, first.out).toContain(`built and pushed to ${IMAGE_REGISTRY} (${image})`);
    expect(kubectl(['get', 'deployment', 'sample-app', '-n', 'sample-app', '-o', 'jsonpath={.spec.template.spec.containers[0].image}'])).toBe(image);
    const second = await phase('sample-app');
    expect(second.code, second.out).toBe(0);
    expect(second.out, second.out).toContain(`unchanged (${image} is in ${IMAGE_REGISTRY})`);
    expect(second.out, second.out).toMatch(/done in [\d.]+s: \d+ steps, nothing changed/);
  }, 900_000);

  it('Pod Security: each namespace enforces the strictest level all its pods pass (baseline when unlabelled, the cluster default)', () => {
    const LEVELS = ['restricted', 'baseline', 'privileged'];
    let n = 0;
    /** Whether the real admission takes this pod's spec in a fresh namespace enforcing `level` (a server-side dry run). */
    const admits = (spec: unknown, level: string) => {
      const ns = `psa-check-${level}-${++n}`;
      kubectl(['create', 'namespace', ns]);
      kubectl(['label', 'namespace', ns, `pod-security.kubernetes.io/enforce=${level}`]);
      // The ServiceAccount admission refuses a pod until the namespace's default ServiceAccount exists.
      kubectl(['wait', '--for=create', 'serviceaccount/default', '-n', ns, '--timeout=30s']);
      try {
        execFileSync('kubectl', ['--kubeconfig', adminKubeconfig, 'create', '--dry-run=server', '-n', ns, '-f', '-'], {
          env,
          input: JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'check' }, spec }),
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        return true;
      } catch (err) {
        const stderr = String((err as { stderr?: string }).stderr);
        if (!stderr.includes('violates PodSecurity')) throw new Error(`not a Pod Security rejection: ${stderr}`);
        return false;
      } finally {
        kubectl(['delete', 'namespace', ns, '--wait=false']);
      }
    };
    const found: Record<string, { enforced: string; strictestThatWorks: string }> = {};
    for (const ns of ['local-path-storage', 'traefik', 'monitoring', 'sample-app']) {
      const labels = JSON.parse(kubectl(['get', 'namespace', ns, '-o', 'json'])).metadata.labels ?? {};
      const pods = JSON.parse(kubectl(['get', 'pods', '-n', ns, '-o', 'json'])).items as { spec: Record<string, unknown> }[];
      expect(pods.length, ns).toBeGreaterThan(0);
      // Each pod's spec as its controller made it, without what ties it to its own namespace and node.
      const specs = pods.map((p) => ({ ...p.spec, nodeName: undefined, serviceAccountName: undefined, serviceAccount: undefined }));
      found[ns] = {
        enforced: labels['pod-security.kubernetes.io/enforce'] ?? 'baseline',
        strictestThatWorks: LEVELS.find((level) => specs.every((spec) => admits(spec, level)))!,
      };
    }
    // local-path-storage's helper pods (hostPath) are made only for a volume: realapi.test.ts proves them.
    found['local-path-storage'].strictestThatWorks = 'privileged';
    expect(found).toEqual(Object.fromEntries(Object.entries(found).map(([ns, f]) => [ns, { enforced: f.strictestThatWorks, strictestThatWorks: f.strictestThatWorks }])));
  }, 120_000);

  it('status with CLUSTER=existing: every component ok', async () => {
    const r = await phase('status');
    expect(r.code, r.out).toBe(0);
    for (const component of ['cluster', 'storage', 'traefik', 'prometheus', 'loki', 'k8s-monitoring', 'grafana', 'alertmanager', 'app']) {
      expect(r.out, r.out).toMatch(new RegExp(`^${component} +ok `, 'm'));
    }
  }, 120_000);

  it("footprint with CLUSTER=existing: the platform's pods only, against the nodes' allocatable memory", async () => {
    const r = await phase('footprint');
    expect(r.code, r.out).toBe(0);
    expect(r.out, r.out).toMatch(/^cluster: context simcluster /m);
    // The user's local-path provisioner (local-path-storage, not ours) is there and not counted.
    expect(r.out, r.out).toMatch(/the platform's namespaces: monitoring, sample-app, traefik \([1-9]\d* pods in other namespaces not counted\)/);
    expect(r.out, r.out).toMatch(/^monitoring\/\S+ /m);
    expect(r.out, r.out).not.toMatch(/^(local-path-storage|kube-system)\//m);
    const nodes = JSON.parse(kubectl(['get', 'nodes', '-o', 'json'])).items as unknown[];
    expect(r.out, r.out).toContain(`allocatable memory of the ${nodes.length} nodes`);
    // No Prometheus runs: use is not available, and says why.
    expect(r.out, r.out).toMatch(/use: not available, Prometheus \(service monitoring\/prometheus-server\) did not answer/);
  }, 120_000);

  it('validate with CLUSTER=existing: the cluster checks pass; the routes cannot be reached (no kubelet to port-forward through), and nothing through them runs', async () => {
    const r = await phase('validate', ['--wait', '0']);
    expect(r.code, r.out).toBe(1);
    // Each check's status line without its duration and detail.
    const checks = r.out.split('\n').flatMap((l) => /^([✓✗] .*?) \([\d.]+m?s\)/.exec(l)?.[1] ?? []);
    expect(checks, r.out).toEqual([
      '✓ Nodes Ready',
      '✓ Pods Ready in traefik, monitoring, sample-app',
      '✓ Prometheus and Loki volumes Bound to local-path volumes',
      '✗ Routes reachable from this machine',
      '✗ Checks through the routes (metrics, logs, traces, Grafana, freshness, alerting)',
    ]);
    // The real kubectl's own words for why it cannot forward, and what to check.
    // (the API server dials the node's kubelet for it: kwok's nodes have none).
    expect(r.out, r.out).toMatch(/`kubectl port-forward --namespace traefik service\/traefik :websecure` exited with code 1:\n\s+error: error upgrading connection: error dialing backend: dial tcp [\d.]+:10250/);
    expect(r.out, r.out).toContain('Is Traefik installed (`task traefik`) with a Ready pod?');
  }, 120_000);

  // Last: it removes what the tests above read.
  it("destroy with CLUSTER=existing --yes: only what the platform installed goes; the user's namespace, release and objects stay", async () => {
    // The user's own things: a namespace without our label with a ConfigMap, and a Helm release of their own chart.
    kubectl(['create', 'namespace', 'user-stuff']);
    kubectl(['create', 'configmap', 'mine', '-n', 'user-stuff', '--from-literal=keep=yes']);
    const chart = path.join(tmp, 'user-chart');
    fs.mkdirSync(path.join(chart, 'templates'), { recursive: true });
    fs.writeFileSync(path.join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: user-chart\nversion: 0.1.0\n');
    fs.writeFileSync(path.join(chart, 'templates', 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: user-release-cm\ndata:\n  keep: "yes"\n');
    execFileSync('helm', ['--kubeconfig', adminKubeconfig, 'install', 'user-release', chart, '--namespace', 'user-stuff', '--wait'], { env, stdio: 'ignore' });

    const ours = ['monitoring/grafana', 'monitoring/k8s-monitoring', 'monitoring/loki', 'monitoring/prometheus', 'monitoring/tempo', 'traefik/traefik'];
    const before = helmList();
    // The Alloy Operator's own releases (k8s-monitoring-alloy-*) are not ours to uninstall: they go with their Alloy objects and namespace.
    expect(before).toEqual(expect.arrayContaining([...ours, 'user-stuff/user-release']));
    const labelled = () =>
      (JSON.parse(kubectl(['get', 'namespaces', '-l', NAMESPACE_OWNER_LABEL, '-o', 'json'])).items as { metadata: { name: string }; status: { phase: string } }[])
        .filter((n) => n.status.phase !== 'Terminating')
        .map((n) => n.metadata.name)
        .sort();
    expect(labelled()).toEqual(['monitoring', 'sample-app', 'traefik']);
    // The Traefik chart's CRDs (its crds/ dir: Helm installs them, and never deletes them on uninstall).
    const traefikCrds = () => kubectl(['get', 'customresourcedefinitions', '-o', 'name']).split('\n').filter((l) => l.endsWith('.traefik.io'));
    expect(traefikCrds()).toContain('customresourcedefinition.apiextensions.k8s.io/ingressroutes.traefik.io');

    const first = await phase('talos', ['--destroy', '--yes']);
    expect(first.code, first.out).toBe(0);
    for (const r of ours) expect(first.out, first.out).toContain(`will remove Helm release ${r}`);
    expect(first.out, first.out).toContain(`will remove namespace sample-app (labelled ${NAMESPACE_OWNER_LABEL}=`);
    expect(first.out, first.out).not.toMatch(/will remove .*(user-stuff|local-path|kube-system|default)/);

    // Ours gone (namespaces gone or terminating); the user's and local-path stay.
    expect(helmList()).toEqual(['user-stuff/user-release']);
    expect(labelled()).toEqual([]);
    expect(kubectl(['get', 'configmap', 'mine', '-n', 'user-stuff', '-o', 'jsonpath={.data.keep}'])).toBe('yes');
    expect(kubectl(['get', 'configmap', 'user-release-cm', '-n', 'user-stuff', '-o', 'jsonpath={.data.keep}'])).toBe('yes');
    for (const ns of ['user-stuff', 'local-path-storage', 'kube-system', 'default']) {
      expect(JSON.parse(kubectl(['get', 'namespace', ns, '-o', 'json'])).status.phase, ns).toBe('Active');
    }
    expect(kubectl(['get', 'storageclass', 'local-path', '-o', 'name'])).toMatch(/local-path/);
    expect(kubectl(['get', '--raw', '/readyz'])).toBe('ok');
    expect(fs.existsSync(path.join(stateDir, 'installed.log'))).toBe(false);
    // The CRDs the Traefik chart added were recorded when it installed them, and go; nothing labelled ours is left outside our namespaces.
    expect(first.out, first.out).toContain('will remove CustomResourceDefinition ingressroutes.traefik.io');
    expect(traefikCrds()).toEqual([]);
    const ourLabel = 'app.kubernetes.io/part-of=talos-local-observability';
    const leftLabelled = (JSON.parse(kubectl(['get', 'deployments.apps,services,secrets,configmaps,ingresses.networking.k8s.io', '-A', '-l', ourLabel, '-o', 'json'])).items as { metadata: { namespace: string; name: string } }[])
      .map((o) => `${o.metadata.namespace}/${o.metadata.name}`)
      .filter((n) => !['monitoring', 'sample-app', 'traefik'].includes(n.split('/')[0]));
    expect(leftLabelled).toEqual([]);

    const second = await phase('talos', ['--destroy', '--yes']);
    expect(second.code, second.out).toBe(0);
    expect(second.out, second.out).not.toMatch(/will remove/);
    expect(second.out, second.out).toMatch(/nothing changed/);
    expect(helmList()).toEqual(['user-stuff/user-release']);
  }, 900_000);
});
