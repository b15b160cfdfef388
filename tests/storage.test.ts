// Storage phase: the rendered local-path-provisioner checks (pure), and the phase and its smoke
// test against the stand-in tools: install, re-run without a mutating call, missing cluster,
// download failure, smoke test success, failure and cleanup.
import fs from 'node:fs';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { PINNED, parseConfig } from '../scripts/lib.ts';
import { SMOKE, checkRendered, defaultClasses, isPinnedImage, smokeManifest, writeKustomization } from '../scripts/storage.ts';
import { PROJECT_DIR, callsOf, makeSandbox, mutatingLines, type Sandbox } from './helpers.ts';

const objects = (sb: Sandbox) => sb.state().kubectl.objects as Record<string, any>;

const BOUNDED = { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } };
const helperPod = (image: string, resources: unknown = BOUNDED) =>
  YAML.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'helper-pod' }, spec: { containers: [{ name: 'helper-pod', image, imagePullPolicy: 'IfNotPresent', resources }] } });

const good = () => [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'local-path-storage', labels: {
    'pod-security.kubernetes.io/enforce': 'privileged', 'pod-security.kubernetes.io/audit': 'privileged', 'pod-security.kubernetes.io/warn': 'privileged' } } },
  { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'local-path', annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } },
  { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'local-path-config', namespace: 'local-path-storage' },
    data: {
      'config.json': JSON.stringify({ nodePathMap: [{ node: 'DEFAULT_PATH_FOR_NON_LISTED_NODES', paths: ['/var/local-path-provisioner'] }] }),
      'helperPod.yaml': helperPod(PINNED.busyboxImage),
    } },
  { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'local-path-provisioner', namespace: 'local-path-storage' },
    spec: { template: { spec: { containers: [{ name: 'local-path-provisioner', image: `docker.io/rancher/local-path-provisioner:${PINNED.localPathProvisioner}`, resources: BOUNDED }] } } } },
] as any[];

describe('checkRendered', () => {
  it('accepts the patched upstream objects', () => {
    expect(checkRendered(good())).toEqual([]);
  });
  it.each([
    ['PSA label missing', (o: any[]) => delete o[0].metadata.labels['pod-security.kubernetes.io/enforce'], /enforce=privileged/],
    ['not default', (o: any[]) => (o[1].metadata.annotations = {}), /not marked default/],
    ['upstream path', (o: any[]) => (o[2].data['config.json'] = '{"nodePathMap":[{"node":"x","paths":["/opt/local-path-provisioner"]}]}'), /volume paths/],
    ['config not JSON', (o: any[]) => (o[2].data['config.json'] = '{'), /not JSON/],
    ['other image tag', (o: any[]) => (o[3].spec.template.spec.containers[0].image = 'rancher/local-path-provisioner:v0.0.30'), /want tag/],
    ["upstream's unpinned helper image", (o: any[]) => (o[2].data['helperPod.yaml'] = helperPod('docker.io/library/busybox')), /helper pod images are \["docker.io\/library\/busybox"\], want \["busybox:1.37.0"\]/],
    ['a helper image other than PINNED.busyboxImage', (o: any[]) => (o[2].data['helperPod.yaml'] = helperPod('busybox:1.36.1')), /helper pod images are \["busybox:1.36.1"\]/],
    ['no helper template', (o: any[]) => delete o[2].data['helperPod.yaml'], /helper pod images are \[\]/],
    ['an unpinned sidecar', (o: any[]) => o[3].spec.template.spec.containers.push({ name: 'side', image: 'ghcr.io/x/side:latest', resources: BOUNDED }), /container side runs "ghcr.io\/x\/side:latest", which is not pinned/],
    ['an untagged init container', (o: any[]) => (o[3].spec.template.spec.initContainers = [{ name: 'init', image: 'localhost:5001/init', resources: BOUNDED }]), /container init runs "localhost:5001\/init"/],
    ["upstream's provisioner without resources", (o: any[]) => delete o[3].spec.template.spec.containers[0].resources, /container local-path-provisioner has no CPU and memory requests and memory limit/],
    ['a provisioner without a memory limit', (o: any[]) => (o[3].spec.template.spec.containers[0].resources = { requests: BOUNDED.requests }), /container local-path-provisioner has no CPU and memory requests and memory limit/],
    ["upstream's helper pod without resources", (o: any[]) => (o[2].data['helperPod.yaml'] = helperPod(PINNED.busyboxImage, null)), /container helper-pod has no CPU and memory requests and memory limit/],
  ])('reports %s', (_, spoil, want) => {
    const objs = good();
    spoil(objs);
    expect(checkRendered(objs).join('\n')).toMatch(want);
  });
});

describe('isPinnedImage', () => {
  it.each([
    ['busybox:1.37.0', true],
    ['docker.io/library/busybox:1.37.0', true],
    ['localhost:5001/sample-app:0123456789ab', true],
    [`busybox@sha256:${'a'.repeat(64)}`, true],
    ['busybox', false],
    ['docker.io/library/busybox', false],
    ['busybox:latest', false],
    ['localhost:5001/sample-app', false],
    ['', false],
  ])('%s: %s', (image, want) => {
    expect(isPinnedImage(image)).toBe(want);
  });
});

describe('every image in manifests/ is pinned', () => {
  const files = (dir: string): string[] =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : [path.join(dir, e.name)]));
  // Each "image:" line, also inside YAML kept as text (such as local-path-provisioner's helperPod.yaml).
  const images = files(path.join(PROJECT_DIR, 'manifests')).flatMap((f) =>
    [...fs.readFileSync(f, 'utf8').matchAll(/^\s*-?\s*image:\s*(\S+)/gm)].map((m) => [path.relative(PROJECT_DIR, f), m[1].replace(/^["']|["']$/g, '')]),
  );
  it('finds the images (the scan works)', () => {
    expect(images.map(([f]) => f)).toEqual(expect.arrayContaining(['manifests/storage/helper-pod.yaml', 'manifests/storage/smoke.yaml']));
  });
  it.each(images)('%s: %s is a placeholder filled from PINNED or our build, or a pinned reference', (_, image) => {
    expect(/^\$\{[A-Z_]+\}$/.test(image) || isPinnedImage(image)).toBe(true);
  });
  it('the rendered kustomization pins the helper pod image to PINNED.busyboxImage', () => {
    const sb = makeSandbox();
    const dir = writeKustomization(parseConfig({ STATE_DIR: sb.stateDir }));
    const patch = YAML.parse(fs.readFileSync(path.join(dir, 'helper-pod.yaml'), 'utf8'));
    expect(YAML.parse(patch.data['helperPod.yaml']).spec.containers[0].image).toBe(PINNED.busyboxImage);
    expect(YAML.parse(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')).patches).toContainEqual({ path: 'helper-pod.yaml' });
  });
});

describe('defaultClasses', () => {
  it('lists the classes marked default', () => {
    const sc = (name: string, def?: string) => ({ kind: 'StorageClass', metadata: { name, annotations: def ? { 'storageclass.kubernetes.io/is-default-class': def } : {} } });
    expect(defaultClasses([sc('a', 'true'), sc('b'), sc('c', 'false'), sc('local-path', 'true')] as any)).toEqual(['a', 'local-path']);
  });
});

describe('smokeManifest', () => {
  it('is a claim on the default class and a restricted pod that mounts it', () => {
    const [pvc, pod] = YAML.parseAllDocuments(smokeManifest('abc123')).map((d) => d.toJSON());
    expect(pvc).toMatchObject({ kind: 'PersistentVolumeClaim', metadata: { name: SMOKE.name, namespace: SMOKE.namespace } });
    expect(pvc.spec.storageClassName).toBeUndefined();
    expect(pod.spec.volumes[0].persistentVolumeClaim.claimName).toBe(SMOKE.name);
    expect(pod.spec.containers[0].image).toBe(PINNED.busyboxImage);
    expect(pod.spec.containers[0].env).toEqual([{ name: 'TOKEN', value: 'abc123' }]);
    expect(pod.spec.securityContext.runAsNonRoot).toBe(true);
  });
});

describe('storage phase against the stand-in tools', { timeout: 60_000 }, () => {
  let sb: Sandbox;
  beforeEach(() => {
    sb = makeSandbox();
  });

  it('without a cluster: says to run `task talos` first and changes nothing', async () => {
    const r = await sb.run('storage');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Run `task talos` first/);
    expect(mutatingLines(r.calls)).toEqual([]);
  });

  it('installs the patched provisioner, then a re-run makes no mutating call', async () => {
    sb.createCluster();
    const r = await sb.run('storage');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const kustomize = callsOf(r.calls, 'kubectl', '--kubeconfig', path.join(sb.stateDir, 'kubeconfig'), 'kustomize');
    expect(kustomize).toHaveLength(1);
    // The Namespace first, on its own: a real `kubectl diff` rejects objects in a namespace that does not exist yet.
    expect(mutatingLines(r.calls)).toEqual([expect.stringMatching(/^kubectl .* apply -f -$/), expect.stringMatching(/^kubectl .* apply -f -$/)]);
    const applied = r.calls.filter((c) => c.argv.includes('apply'));
    expect(applied).toHaveLength(2);
    const o = objects(sb);
    expect(o['Namespace//local-path-storage'].metadata.labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
    expect(o['StorageClass//local-path'].metadata.annotations['storageclass.kubernetes.io/is-default-class']).toBe('true');
    expect(o['ConfigMap/local-path-storage/local-path-config'].data['config.json']).toContain('/var/local-path-provisioner');
    expect(r.calls.some((c) => c.argv.includes('rollout') && c.argv.includes('deployment/local-path-provisioner'))).toBe(true);

    const again = await sb.run('storage');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/nothing changed/);
  });

  it('re-applies when the cluster drifted (a label removed by hand)', async () => {
    sb.createCluster();
    await sb.run('storage');
    const st = sb.state();
    delete st.kubectl.objects['Namespace//local-path-storage'].metadata.labels;
    fs.writeFileSync(sb.fakeState, JSON.stringify(st));
    const r = await sb.run('storage');
    expect(r.code).toBe(0);
    expect(mutatingLines(r.calls)).toHaveLength(1);
    expect(objects(sb)['Namespace//local-path-storage'].metadata.labels).toBeDefined();
  });

  it('when the upstream manifest cannot be downloaded: fails with a hint and applies nothing', async () => {
    sb.createCluster();
    sb.scenario({ failures: [{ tool: 'kubectl', argv: ['kustomize'], code: 1, stderr: 'error: accumulating resources: dial tcp: lookup raw.githubusercontent.com: no such host\n' }] });
    const r = await sb.run('storage');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/raw\.githubusercontent\.com.*check the network/s);
    expect(mutatingLines(r.calls)).toEqual([]);
  });

  it('warns when another StorageClass is default too', async () => {
    sb.createCluster();
    sb.scenario({ kubectl: { objects: { 'StorageClass//standard': { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'standard', annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } } } } });
    const r = await sb.run('storage');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/other default StorageClasses: standard/);
  });
});

describe('storage --smoke against the stand-in tools', { timeout: 60_000 }, () => {
  let sb: Sandbox;
  beforeEach(() => {
    sb = makeSandbox();
    sb.createCluster();
  });

  it('before `task storage`: says to run it and creates nothing', async () => {
    const r = await sb.run('storage', ['--smoke']);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Run `task storage` first/);
    expect(mutatingLines(r.calls)).toEqual([]);
  });

  it('creates claim and pod, waits for Bound and Succeeded, then removes both', async () => {
    await sb.run('storage');
    const r = await sb.run('storage', ['--smoke']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const waits = r.calls.filter((c) => c.argv.includes('wait')).map((c) => c.argv.find((a) => a.startsWith('--for')));
    expect(waits).toEqual(['--for=jsonpath={.status.phase}=Bound', '--for=jsonpath={.status.phase}=Succeeded']);
    const applied = r.calls.findIndex((c) => c.argv.includes('apply'));
    const lastDelete = r.calls.map((c) => c.argv.includes('delete')).lastIndexOf(true);
    expect(applied).toBeGreaterThan(-1);
    expect(lastDelete).toBeGreaterThan(applied);
    expect(Object.keys(objects(sb)).filter((k) => k.includes(SMOKE.name))).toEqual([]);
  });

  it('when the pod does not succeed: fails, and still removes claim and pod', async () => {
    await sb.run('storage');
    sb.scenario({ failures: [{ tool: 'kubectl', argv: ['wait', '--for=jsonpath={.status.phase}=Succeeded'], code: 1, stderr: 'error: timed out waiting for the condition on pods/storage-smoke\n' }] });
    const r = await sb.run('storage', ['--smoke']);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/timed out waiting/);
    expect(r.calls.some((c) => c.argv.includes('describe'))).toBe(true);
    expect(Object.keys(objects(sb)).filter((k) => k.includes(SMOKE.name))).toEqual([]);
  });
});
