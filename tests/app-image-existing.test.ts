// The sample app's image on an existing cluster (scripts/app.ts ensureImage): where it goes
// (imageTarget over nodes and KUBE_CONTEXT, table-driven) and what each way runs against the
// stand-in tools (docker, kind, k3d, kubectl): pushed to IMAGE_REGISTRY, loaded into kind or k3d,
// or refused before anything is built; a re-run changes nothing.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { type NodeJson, fullImageName, imageRefFor, imageTarget, onEveryNode } from '../scripts/app.ts';
import { UserError } from '../scripts/lib.ts';
import { FAKE_BIN, makeSandbox, mutatingLines, type Sandbox, existingClusterEnv } from './helpers.ts';

const node = (name: string, providerID?: string, images: string[] = []): NodeJson => ({
  metadata: { name },
  ...(providerID ? { spec: { providerID } } : {}),
  status: { images: images.map((n) => ({ names: [n] })) },
});
const existing = { CLUSTER: 'existing' as const, IMAGE_REGISTRY: '', KUBE_CONTEXT: '' };

describe('imageTarget', () => {
  it.each([
    ['Talos: the local registry', { ...existing, CLUSTER: 'talos' as const }, [], { via: 'local-registry' }],
    ['IMAGE_REGISTRY wins over kind', { ...existing, IMAGE_REGISTRY: 'ghcr.io/me' }, [node('dev-control-plane', 'kind://docker/dev/dev-control-plane')], { via: 'registry', registry: 'ghcr.io/me' }],
    ['kind by providerID (podman provider too)', existing, [node('ci-control-plane', 'kind://podman/ci/ci-control-plane'), node('ci-worker', 'kind://podman/ci/ci-worker')], { via: 'kind', cluster: 'ci' }],
    ['kind by context when nodes carry no providerID', { ...existing, KUBE_CONTEXT: 'kind-dev' }, [node('dev-control-plane')], { via: 'kind', cluster: 'dev' }],
    ['k3d by node name and k3s providerID', existing, [node('k3d-my-lab-server-0', 'k3s://k3d-my-lab-server-0'), node('k3d-my-lab-agent-1', 'k3s://k3d-my-lab-agent-1')], { via: 'k3d', cluster: 'my-lab' }],
    ['k3d by context', { ...existing, KUBE_CONTEXT: 'k3d-dev' }, [node('whatever')], { via: 'k3d', cluster: 'dev' }],
  ])('%s', (_name, cfg, nodes, want) => {
    expect(imageTarget(cfg, nodes as NodeJson[], 'sample-app')).toEqual(want);
  });

  it.each([
    ['plain k3s (not k3d): no k3d command reaches it', [node('pi-1', 'k3s://pi-1')], /providerID k3s:\/\//],
    ['EKS', [node('ip-10-0-1-2', 'aws:///eu-west-1a/i-0abc')], /providerID aws:\/\//],
    ['kubeadm, context prod-admin', [node('cp-1')], /no providerID/],
  ])('refuses %s, naming IMAGE_REGISTRY and how to set it', (_name, nodes, detail) => {
    const attempt = () => imageTarget({ ...existing, KUBE_CONTEXT: 'prod-admin' }, nodes, 'sample-app');
    expect(attempt).toThrow(UserError);
    expect(attempt).toThrow(/neither kind nor k3d/);
    expect(attempt).toThrow(detail);
    expect(attempt).toThrow(/Set IMAGE_REGISTRY in \.env .*docker login .*IMAGE_REGISTRY=ghcr\.io\/<you>/);
  });
});

describe('image names', () => {
  it.each([
    ['sample-app:abc', 'docker.io/library/sample-app:abc'],
    ['me/app:1', 'docker.io/me/app:1'],
    ['ghcr.io/me/app:1', 'ghcr.io/me/app:1'],
    ['localhost:5001/app:1', 'localhost:5001/app:1'],
    ['registry.example.com:5000/team/app:1', 'registry.example.com:5000/team/app:1'],
  ])('%s is %s on the nodes', (ref, full) => expect(fullImageName(ref)).toBe(full));

  it('the reference per target', () => {
    const cfg = { REGISTRY_PORT: 5001 };
    expect(imageRefFor(cfg, { via: 'local-registry' }, 'app', 'abc')).toBe('localhost:5001/app:abc');
    expect(imageRefFor(cfg, { via: 'registry', registry: 'ghcr.io/me' }, 'app', 'abc')).toBe('ghcr.io/me/app:abc');
    expect(imageRefFor(cfg, { via: 'kind', cluster: 'dev' }, 'app', 'abc')).toBe('app:abc');
  });

  it('on every node only when each lists it', () => {
    const have = 'docker.io/library/app:abc';
    expect(onEveryNode([node('a', undefined, [have]), node('b', undefined, [have])], 'app:abc')).toBe(true);
    expect(onEveryNode([node('a', undefined, [have]), node('b')], 'app:abc')).toBe(false);
    expect(onEveryNode([], 'app:abc')).toBe(false);
  });
});

const kindNodes = ['dev-control-plane', 'dev-worker'].map((n) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: n, labels: {} }, spec: { providerID: `kind://docker/dev/${n}` }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }));
const k3dNodes = ['k3d-lab-server-0', 'k3d-lab-agent-0'].map((n) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: n, labels: {} }, spec: { providerID: `k3s://${n}` }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }));
const eksNodes = [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'ip-10-0-1-2', labels: {} }, spec: { providerID: 'aws:///eu-west-1a/i-0abc' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }];

describe('the sample app image with CLUSTER=existing, against the stand-in tools', { timeout: 60_000 }, () => {
  let sb: Sandbox;
  beforeEach(() => {
    sb = makeSandbox();
    sb.createCluster();
  });
  const image = (env: Record<string, string>) => sb.run('sample-app', ['--image'], { ...existingClusterEnv(sb), ...env });

  it('kind: builds, loads with `kind load docker-image --name dev`, says so; a re-run changes nothing', async () => {
    sb.scenario({ kubectl: { nodes: kindNodes } });
    const r = await image({});
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const lines = mutatingLines(r.calls).filter((l) => !l.startsWith('kubectl'));
    expect(lines.some((l) => /^docker build --tag sample-app:[0-9a-f]{12} /.test(l))).toBe(true);
    expect(r.calls.filter((c) => c.tool === 'kind').map((c) => c.argv.join(' '))).toEqual([expect.stringMatching(/^load docker-image sample-app:[0-9a-f]{12} --name dev$/)]);
    expect(r.stdout).toMatch(/Image sample-app on the cluster's nodes .*built and loaded into kind cluster dev \(sample-app:[0-9a-f]{12}/);
    expect(sb.state().kubectl.nodes.every((n: NodeJson) => n.status?.images?.some((i) => i.names?.[0]?.startsWith('docker.io/library/sample-app:')))).toBe(true);
    const again = await image({});
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls.filter((c) => c.tool === 'kind' || (c.tool === 'docker' && c.argv[0] === 'build'))).toEqual([]);
    expect(again.stdout).toMatch(/unchanged \(sample-app:[0-9a-f]{12} is on every node of kind cluster dev\)/);
  });

  it('k3d: imports with `k3d image import --cluster lab`', async () => {
    sb.scenario({ kubectl: { nodes: k3dNodes } });
    const r = await image({});
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.calls.filter((c) => c.tool === 'k3d').map((c) => c.argv.join(' '))).toEqual([expect.stringMatching(/^image import sample-app:[0-9a-f]{12} --cluster lab$/)]);
    expect(r.stdout).toMatch(/loaded into k3d cluster lab/);
  });

  it('IMAGE_REGISTRY: pushes <registry>/sample-app:<tag> and says where; a re-run finds it there and pushes nothing', async () => {
    sb.scenario({ kubectl: { nodes: eksNodes } });
    const r = await image({ IMAGE_REGISTRY: 'ghcr.io/me' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.calls.filter((c) => c.tool === 'docker' && c.argv[0] === 'push').map((c) => c.argv[1])).toEqual([expect.stringMatching(/^ghcr\.io\/me\/sample-app:[0-9a-f]{12}$/)]);
    expect(r.stdout).toMatch(/Image sample-app in ghcr\.io\/me .*built and pushed to ghcr\.io\/me \(ghcr\.io\/me\/sample-app:/);
    expect(r.calls.some((c) => c.tool === 'kind' || c.tool === 'k3d')).toBe(false);
    const again = await image({ IMAGE_REGISTRY: 'ghcr.io/me' });
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls.filter((c) => c.tool === 'docker' && ['push', 'build'].includes(c.argv[0]))).toEqual([]);
    expect(again.stdout).toMatch(/unchanged \(ghcr\.io\/me\/sample-app:[0-9a-f]{12} is in ghcr\.io\/me\)/);
  });

  it('neither kind nor k3d, no IMAGE_REGISTRY: a clear error before anything is built or changed', async () => {
    sb.scenario({ kubectl: { nodes: eksNodes } });
    const r = await image({});
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/neither kind nor k3d .*providerID aws:\/\/.*Set IMAGE_REGISTRY in \.env/s);
    expect(mutatingLines(r.calls)).toEqual([]);
    expect(r.calls.some((c) => c.tool === 'docker')).toBe(false);
  });

  it('kind load failing (image refused): the step fails with kind\'s own words', async () => {
    sb.scenario({ kubectl: { nodes: kindNodes }, failures: [{ tool: 'kind', argv: ['load'], code: 1, stderr: 'ERROR: failed to load image: command "docker exec --privileged -i dev-control-plane ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1\n' }] });
    const r = await image({});
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/ERROR: failed to load image/);
  });
});

describe('the stand-in kind and k3d take only their real flags', () => {
  it.each([
    ['kind', ['load', 'docker-image', 'app:1', '--cluster', 'dev'], 'ERROR: unknown flag: --cluster'],
    ['kind', ['load', 'docker-image', '--name', 'dev'], 'ERROR: a list of image names is required'],
    ['kind', ['load', 'docker-image', 'app:1', '--name', 'nope'], 'ERROR: no nodes found for cluster "nope"'],
    ['k3d', ['image', 'import', 'app:1', '--name', 'lab'], 'FATA[0000] unknown flag: --name'],
    ['k3d', ['image', 'import', 'app:1', '--mode', 'tools'], "FATA[0000] Unknown image loading mode 'tools'"],
    ['k3d', ['image', 'import', 'app:1'], 'FATA[0000] failed to get cluster k3s-default: No nodes found for given cluster'],
  ])('%s %j', (tool, argv, message) => {
    const sb = makeSandbox();
    sb.scenario({ kubectl: { nodes: [...kindNodes, ...k3dNodes] }, docker: { images: { 'app:1': { id: 'sha256:1' } } } });
    const r = spawnSync(path.join(FAKE_BIN, tool), argv, { env: sb.env(path.join(sb.dir, 'calls.jsonl')), encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(message);
  });
});
