// scripts/images.ts: the pure parts (reference parsing, image collection, index and storage reading)
// as tables, and every image the platform runs, rendered with the REAL helm and the REAL charts when
// they are present (skipped otherwise, as in CI; see tests/observability-render.test.ts for the layout):
//   OBS_CHARTS_DIR=/tmp/charts-telemetry HELM=$(bash /work/shared/tools/helm.sh) npx vitest run tests/images.test.ts
// with the traefik chart at $OBS_CHARTS_DIR/traefik-src/traefik.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { PINNED, parseConfig } from '../scripts/lib.ts';
import {
  type ChartRef,
  type ManifestJson,
  type PlatformImage,
  type Render,
  alloyOperatorVersion,
  blobsOf,
  imagesInObjects,
  manifestReference,
  nodePlatform,
  parseImageRef,
  parseStorageLinks,
  platformEntry,
  platformImages,
  serverFor,
} from '../scripts/images.ts';

const cfg = parseConfig({ STATE_DIR: '/tmp/st', REGISTRY_PORT: '15001', HTTP_PORT: '18080', HTTPS_PORT: '18443' });
const D1 = `sha256:${'a'.repeat(64)}`;
const D2 = `sha256:${'b'.repeat(64)}`;
const D3 = `sha256:${'c'.repeat(64)}`;

describe('parseImageRef reads a reference as Docker does', () => {
  it.each([
    ['busybox:1.37.0', { registry: 'docker.io', repository: 'library/busybox', tag: '1.37.0' }],
    ['registry:2.8.3', { registry: 'docker.io', repository: 'library/registry', tag: '2.8.3' }],
    ['grafana/loki:3.7.6', { registry: 'docker.io', repository: 'grafana/loki', tag: '3.7.6' }],
    ['docker.io/grafana/grafana:13.2.0', { registry: 'docker.io', repository: 'grafana/grafana', tag: '13.2.0' }],
    ['docker.io/busybox', { registry: 'docker.io', repository: 'library/busybox', tag: 'latest' }],
    ['quay.io/prometheus/prometheus:v3.14.0', { registry: 'quay.io', repository: 'prometheus/prometheus', tag: 'v3.14.0' }],
    ['registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.19.1', { registry: 'registry.k8s.io', repository: 'kube-state-metrics/kube-state-metrics', tag: 'v2.19.1' }],
    ['localhost:15001/sample-app:0123456789ab', { registry: 'localhost:15001', repository: 'sample-app', tag: '0123456789ab' }],
    ['localhost/x', { registry: 'localhost', repository: 'x', tag: 'latest' }],
    [`quay.io/prometheus-operator/prometheus-config-reloader:v0.91.0@${D1}`, { registry: 'quay.io', repository: 'prometheus-operator/prometheus-config-reloader', tag: 'v0.91.0', digest: D1 }],
    [`ghcr.io/a/b@${D2}`, { registry: 'ghcr.io', repository: 'a/b', tag: undefined, digest: D2 }],
  ])('%s', (ref, want) => {
    expect(parseImageRef(ref)).toEqual({ digest: undefined, ...want });
  });

  it.each(['Busybox:1', 'a/b:c@sha256:short', 'a//b', 'a/b:-x'])('refuses %s', (ref) => {
    expect(() => parseImageRef(ref)).toThrow(/not an image reference|digest/);
  });

  it.each([
    [`a/b:1@${D1}`, D1],
    ['a/b:1', '1'],
    ['a/b', 'latest'],
  ])('asks the registry for %s by %s', (ref, want) => {
    expect(manifestReference(parseImageRef(ref))).toBe(want);
  });
});

describe('imagesInObjects', () => {
  it('finds containers and init containers of every workload kind, once each', () => {
    const pod = (image: string, init?: string) => ({ containers: [{ name: 'c', image }], ...(init ? { initContainers: [{ name: 'i', image: init }] } : {}) });
    const objects = [
      { kind: 'Deployment', spec: { template: { spec: pod('a:1', 'b:1') } } },
      { kind: 'DaemonSet', spec: { template: { spec: pod('a:1') } } },
      { kind: 'CronJob', spec: { jobTemplate: { spec: { template: { spec: pod('c:1') } } } } },
      { kind: 'Pod', spec: pod('d:1') },
      // An image field that is not a container's: not an image the nodes pull.
      { kind: 'Alloy', spec: { image: { repository: 'x' }, alloy: { configMap: {} } } },
      { kind: 'ConfigMap', data: { 'x.yaml': 'containers:\n- image: e:1' } },
    ];
    expect(imagesInObjects(objects)).toEqual(['a:1', 'b:1', 'c:1', 'd:1']);
  });
});

describe('index, platform and blobs', () => {
  const index: ManifestJson = {
    manifests: [
      { digest: D1, size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      { digest: D2, size: 1, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { digest: D3, size: 1, platform: { os: 'unknown', architecture: 'unknown' } },
    ],
  };
  it.each([
    ['linux', 'x86_64', D1],
    ['linux', 'aarch64', D2],
    ['linux', 'arm64', D2],
  ])('docker info %s/%s picks %s', (osType, arch, want) => {
    expect(platformEntry(index, nodePlatform(osType, arch))?.digest).toBe(want);
  });
  it('refuses an architecture Talos does not run on', () => {
    expect(() => nodePlatform('linux', 'riscv64')).toThrow(/riscv64/);
  });
  it('config first, then the layers', () => {
    expect(blobsOf({ config: { digest: D1, size: 2 }, layers: [{ digest: D2, size: 3 }, { digest: D3, size: 4 }] }).map((b) => b.digest)).toEqual([D1, D2, D3]);
  });
});

describe('serverFor maps an image to what serves it to the nodes', () => {
  it.each([
    ['busybox:1.37.0', { kind: 'cache', registry: 'docker.io', container: 'talos-local-cache-docker-io' }],
    ['quay.io/prometheus/prometheus:v3.14.0', { kind: 'cache', registry: 'quay.io', container: 'talos-local-cache-quay-io' }],
    ['registry.k8s.io/x/y:1', { kind: 'cache', registry: 'registry.k8s.io', container: 'talos-local-cache-registry-k8s-io' }],
    ['ghcr.io/grafana/alloy-operator:1.11.1', { kind: 'cache', registry: 'ghcr.io', container: 'talos-local-cache-ghcr-io' }],
    ['gcr.io/x/y:1', { kind: 'cache', registry: 'gcr.io', container: 'talos-local-cache-gcr-io' }],
    ['public.ecr.aws/x/y:1', { kind: 'upstream' }],
    ['localhost:15001/sample-app:abc', { kind: 'local-registry' }],
  ])('%s', (ref, want) => {
    expect(serverFor(cfg, ref)).toEqual(want);
  });
  it('without caches everything but the local registry comes from upstream', () => {
    expect(serverFor({ ...cfg, PULL_THROUGH_CACHE: false }, 'busybox:1.37.0')).toEqual({ kind: 'upstream' });
  });
});

describe('parseStorageLinks reads what a cache stored (distribution v2.8.3 storage layout)', () => {
  it('tags, manifests and layers per repository, nested names included', () => {
    const root = '/var/lib/registry/docker/registry/v2/repositories';
    const hex = (d: string) => d.slice(7);
    const text = [
      `${root}/library/busybox/_manifests/tags/1.37.0/current/link`,
      `${root}/library/busybox/_manifests/tags/1.37.0/index/sha256/${hex(D1)}/link`,
      `${root}/library/busybox/_manifests/revisions/sha256/${hex(D1)}/link`,
      `${root}/library/busybox/_manifests/revisions/sha256/${hex(D2)}/link`,
      `${root}/library/busybox/_layers/sha256/${hex(D3)}/link`,
      `${root}/kube-state-metrics/kube-state-metrics/_manifests/tags/v2.19.1/index/sha256/${hex(D2)}/link`,
      `${root}/library/busybox/_uploads/1234/startedat`,
      '',
    ].join('\n');
    const s = parseStorageLinks(text);
    expect([...s.tags.get('library/busybox')!.entries()]).toEqual([['1.37.0', [D1]]]);
    expect(s.tags.get('kube-state-metrics/kube-state-metrics')!.get('v2.19.1')).toEqual([D2]);
    expect([...s.manifests]).toEqual([`library/busybox@${D1}`, `library/busybox@${D2}`]);
    expect([...s.blobs]).toEqual([`library/busybox@${D3}`]);
  });
});

describe('alloyOperatorVersion', () => {
  it('reads the version label of the operator Deployment, nothing else', () => {
    const labels = (name: string, version: string) => ({ 'app.kubernetes.io/name': name, 'app.kubernetes.io/version': version });
    expect(alloyOperatorVersion([
      { kind: 'ServiceAccount', metadata: { labels: labels('alloy-operator', '9.9.9') } },
      { kind: 'Deployment', metadata: { labels: labels('kube-state-metrics', '2.19.1') } },
      { kind: 'Deployment', metadata: { labels: labels('alloy-operator', '1.11.1') } },
    ])).toBe('1.11.1');
    expect(alloyOperatorVersion([])).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------
// The real charts
// ---------------------------------------------------------------------------------------------------

const chartsDir = process.env.OBS_CHARTS_DIR ?? '';
const helmBin = process.env.HELM ?? 'helm';
const available = chartsDir !== '' && fs.existsSync(path.join(chartsDir, 'k8s-monitoring'));
const localChart: Record<string, string> = {
  traefik: 'traefik-src/traefik',
  prometheus: 'prometheus',
  loki: 'loki',
  tempo: 'tempo',
  grafana: 'grafana',
  'k8s-monitoring': 'k8s-monitoring',
  alloy: 'alloy',
};

/** `helm template` as images.ts runs it, with the chart from OBS_CHARTS_DIR instead of its repository. */
const realRender: Render = async (release: string, chart: ChartRef, values: Record<string, unknown>, namespace: string) => {
  const dir = path.join(chartsDir, localChart[chart.chart]);
  expect(YAML.parse(fs.readFileSync(path.join(dir, 'Chart.yaml'), 'utf8')).version, `${dir}: the version images.ts asks for`).toBe(chart.version);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'images-')), 'values.yaml');
  fs.writeFileSync(file, YAML.stringify(values, { version: '1.1' }));
  const out = execFileSync(helmBin, ['template', release, dir, '--namespace', namespace, '--kube-version', cfg.KUBERNETES_VERSION, '--values', file, '--skip-tests'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return YAML.parseAllDocuments(out).map((d) => d.toJSON()).filter(Boolean);
};

describe.skipIf(!available)('every image, rendered from the real charts at the pinned versions', () => {
  let images: PlatformImage[] = [];
  it('renders every release and the Alloy collectors', async () => {
    images = await platformImages(cfg, realRender);
    // What the charts run with our values (printed so a chart bump shows what changed).
    console.log(images.map((i) => `${i.ref}  <- ${i.source}`).join('\n'));
    expect(images.length).toBeGreaterThan(10);
  }, 120_000);

  it('finds each component the platform runs, and each image parses', () => {
    const repos = images.map((i) => parseImageRef(i.ref)).map((r) => `${r.registry}/${r.repository}`);
    for (const want of [
      'docker.io/library/traefik',
      'quay.io/prometheus/prometheus',
      'docker.io/grafana/loki',
      'docker.io/grafana/tempo',
      'docker.io/grafana/grafana',
      'ghcr.io/grafana/alloy-operator',
      'docker.io/grafana/alloy',
      'quay.io/prometheus-operator/prometheus-config-reloader',
      'registry.k8s.io/kube-state-metrics/kube-state-metrics',
      'quay.io/prometheus/node-exporter',
      'docker.io/rancher/local-path-provisioner',
      'docker.io/library/busybox',
      'localhost:15001/sample-app',
    ]) {
      expect(repos, want).toContain(want);
    }
  });

  it('takes the Alloy chart the bundled operator deploys (its appVersion)', () => {
    const operatorTgz = fs.readdirSync(path.join(chartsDir, 'k8s-monitoring', 'charts')).find((f) => /^alloy-operator-.*\.tgz$/.test(f))!;
    const operator = YAML.parse(execFileSync(helmBin, ['show', 'chart', path.join(chartsDir, 'k8s-monitoring', 'charts', operatorTgz)], { encoding: 'utf8' }));
    const alloy = images.find((i) => parseImageRef(i.ref).repository === 'grafana/alloy')!;
    expect(alloy.source).toContain(`chart alloy ${operator.appVersion}`);
  });

  it('every chart image is served by a cache, pinned to a version', () => {
    for (const i of images.filter((x) => x.source.startsWith('chart'))) {
      expect(i.server.kind, i.ref).toBe('cache');
      const r = parseImageRef(i.ref);
      expect(r.digest ?? r.tag, i.ref).not.toBe('latest');
    }
  });

  it('the PINNED local-path image is the one the upstream manifest runs (when /tmp/lpp.yaml is there)', () => {
    const upstream = process.env.LPP_UPSTREAM ?? '/tmp/lpp.yaml';
    if (!fs.existsSync(upstream)) return;
    const objects = YAML.parseAllDocuments(fs.readFileSync(upstream, 'utf8')).map((d) => d.toJSON()).filter(Boolean);
    const provisioner = imagesInObjects(objects).map((ref) => parseImageRef(ref));
    const ours = images.map((i) => parseImageRef(i.ref)).find((r) => r.repository === 'rancher/local-path-provisioner');
    expect(provisioner).toContainEqual(ours);
    expect(PINNED.localPathProvisioner).toBe(ours?.tag);
  });
});
