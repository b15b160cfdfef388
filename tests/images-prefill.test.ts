// The cache prefill during `talosctl cluster create`, and `task images`, against the stand-in tools and
// stand-in caches (tests/fakes/stand-in-cache.ts: local HTTP servers answering the registry API as a
// registry:2.8.3 pull-through proxy does).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { PINNED } from '../scripts/lib.ts';
import { UPSTREAMS } from '../scripts/talos.ts';
import { type Sandbox, callsOf, makeSandbox, mutatingLines } from './helpers.ts';
import { type Blob, StandInCache, type StoredImage, makeImage } from './fakes/stand-in-cache.ts';

// What the charts render, as the stand-in helm prints it for each chart at its pinned version.
const deployment = (image: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name: 'RELEASE-NAME', labels },
  spec: { template: { spec: { containers: [{ name: 'main', image }] } } },
});
const yamlDocs = (...docs: unknown[]) => docs.map((d) => YAML.stringify(d)).join('---\n');
const chartKey = (c: { repo: string; chart: string; version: string }) => `${c.repo}|${c.chart}|${c.version}`;
const CHARTS = {
  [chartKey(PINNED.charts.traefik)]: yamlDocs(deployment('docker.io/traefik:v3.7.11')),
  [chartKey(PINNED.charts.prometheus)]: yamlDocs(deployment('quay.io/prometheus/prometheus:v3.14.0')),
  [chartKey(PINNED.charts.loki)]: yamlDocs(deployment('docker.io/grafana/loki:3.7.6')),
  [chartKey(PINNED.charts.tempo)]: yamlDocs(deployment('docker.io/grafana/tempo:2.10.8')),
  [chartKey(PINNED.charts.grafana)]: yamlDocs(deployment('docker.io/grafana/grafana:13.2.0')),
  [chartKey(PINNED.charts.k8sMonitoring)]: yamlDocs(
    deployment('ghcr.io/grafana/alloy-operator:1.11.1', { 'app.kubernetes.io/name': 'alloy-operator', 'app.kubernetes.io/version': '1.11.1' }),
    deployment('registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.19.1'),
    { apiVersion: 'collectors.grafana.com/v1alpha1', kind: 'Alloy', metadata: { name: 'k8s-monitoring-alloy-logs' }, spec: { controller: { type: 'daemonset' } } },
  ),
  [chartKey({ repo: PINNED.charts.k8sMonitoring.repo, chart: 'alloy', version: '1.11.1' })]: yamlDocs(deployment('docker.io/grafana/alloy:v1.18.1')),
};

/** The stand-in caches in UPSTREAMS order (the order talos.ts creates them, so they get these ports), with the images each serves. */
function standInCaches(): Record<string, StandInCache> {
  const images: Record<string, StoredImage[]> = {
    'docker.io': [
      makeImage('library/traefik', 'v3.7.11'),
      makeImage('grafana/loki', '3.7.6'),
      makeImage('grafana/tempo', '2.10.8'),
      makeImage('grafana/grafana', '13.2.0'),
      makeImage('grafana/alloy', 'v1.18.1'),
      makeImage('rancher/local-path-provisioner', PINNED.localPathProvisioner),
      makeImage('library/busybox', '1.37.0', 1),
    ],
    'registry.k8s.io': [makeImage('kube-state-metrics/kube-state-metrics', 'v2.19.1')],
    'ghcr.io': [makeImage('grafana/alloy-operator', '1.11.1')],
    'quay.io': [makeImage('prometheus/prometheus', 'v3.14.0', 3)],
    'gcr.io': [],
  };
  return Object.fromEntries(UPSTREAMS.map((u) => [u.registry, new StandInCache(images[u.registry])]));
}

const running: StandInCache[] = [];
afterEach(() => running.splice(0).forEach((c) => c.stop()));

async function startCaches(sandbox: Sandbox): Promise<Record<string, StandInCache>> {
  const caches = standInCaches();
  const ports: number[] = [];
  for (const u of UPSTREAMS) {
    ports.push(await caches[u.registry].start());
    running.push(caches[u.registry]);
  }
  sandbox.scenario({ docker: { ephemeralPorts: ports }, helm: { charts: CHARTS } });
  return caches;
}

const blobRequests = (c: StandInCache) => c.requests.filter((r) => r.url.includes('/blobs/'));
const allAmd64Blobs = (c: StandInCache) => c.images.flatMap((i) => i.platforms.amd64.blobs.map((b) => `/v2/${i.repository}/blobs/${b.digest}`));

describe('the cache prefill during talosctl cluster create', () => {
  it('fetches every image through its cache while create runs, and says what was cached already', async () => {
    const sandbox = makeSandbox();
    const caches = await startCaches(sandbox);
    // An earlier pull left busybox whole and two blobs of prometheus in the caches.
    const busybox = caches['docker.io'].images.find((i) => i.repository === 'library/busybox')!;
    const prometheus = caches['quay.io'].images[0];
    caches['docker.io'].preStore(busybox);
    caches['quay.io'].preStore(prometheus, 2);
    // create boots its nodes until the prefill has served the last blob: it can only end once the prefill is done.
    const booted = path.join(sandbox.dir, 'prefill-served-everything');
    sandbox.scenario({ talosctl: { createWaitsFor: booted } });
    const expected = Object.values(caches).reduce((n, c) => n + allAmd64Blobs(c).length, 0);
    let served = 0;
    for (const c of Object.values(caches)) c.onBlob = () => ++served === expected && fs.writeFileSync(booted, '');

    const res = await sandbox.run('talos');
    expect(res.code, res.stderr + res.stdout).toBe(0);

    // Every amd64 blob of every image, once, from the cache of its registry; nothing of arm64.
    for (const c of Object.values(caches)) {
      expect(blobRequests(c).map((r) => r.url).sort()).toEqual(allAmd64Blobs(c).sort());
      for (const image of c.images) {
        expect(c.requests.map((r) => r.url)).toContain(`/v2/${image.repository}/manifests/${image.tag}`);
        expect(c.requests.map((r) => r.url)).toContain(`/v2/${image.repository}/manifests/${image.platforms.amd64.digest}`);
        expect(c.requests.map((r) => r.url)).not.toContain(`/v2/${image.repository}/manifests/${image.platforms.arm64.digest}`);
      }
    }
    // It ran while create ran: create saw the prefill finished before its nodes were up, and the
    // prefill's own calls come after create's start and before the next step's.
    expect(sandbox.state().talosctl.createSawFile).toBe(true);
    const order = res.calls.map((c) => `${c.tool} ${c.argv.slice(0, 3).join(' ')}`);
    const create = order.indexOf('talosctl cluster create docker');
    const firstTemplate = order.findIndex((c) => c.startsWith('helm template'));
    const nodesReady = order.findIndex((c, i) => i > create && c.startsWith('kubectl --kubeconfig'));
    expect(create).toBeGreaterThan(-1);
    expect(firstTemplate).toBeGreaterThan(create);
    expect(nodesReady).toBeGreaterThan(firstTemplate);
    expect(callsOf(res.calls, 'helm', 'template')).toHaveLength(7);
    // Nothing the prefill does changes the machine.
    expect(mutatingLines(res.calls).filter((l) => !l.startsWith('docker ') && !l.startsWith('talosctl '))).toEqual([]);

    const cachedBlobs = busybox.platforms.amd64.blobs.length + 2;
    const bytesOf = (blobs: Blob[]) => blobs.reduce((n, b) => n + b.data.length, 0);
    expect(bytesOf([...busybox.platforms.amd64.blobs, ...prometheus.platforms.amd64.blobs.slice(0, 2)])).toBeGreaterThan(0);
    expect(res.stdout).toMatch(
      new RegExp(`✓ Pull-through caches prefilled while the nodes booted \\(\\d+\\.\\ds\\) 10 of 10 images in the caches: \\d+ KiB were cached already \\(${cachedBlobs} blobs\\), \\d+ KiB fetched \\(${expected - cachedBlobs} blobs\\)`),
    );
  }, 120_000);

  it.each([
    ['a registry error on one manifest', (c: Record<string, StandInCache>) => c['quay.io'].failing.set('/manifests/v3.14.0', 500), /1 images not prefilled .*quay\.io\/prometheus\/prometheus:v3\.14\.0: GET .*HTTP 500/],
    ['a chart repository out of reach', (_: Record<string, StandInCache>, s: Sandbox) => fs.writeFileSync(s.fakeState, JSON.stringify({ ...s.state(), helm: { ...s.state().helm, charts: {} } })), /looks like "https:\/\/traefik\.github\.io\/charts" is not a valid chart repository or cannot be reached/],
    ['a cache that does not answer', (c: Record<string, StandInCache>) => c['ghcr.io'].stop(), /grafana\/alloy-operator:1\.11\.1: .*ECONNREFUSED/],
  ])('%s never fails the phase: one line says so and the deploy goes on', async (_, breakIt, reason) => {
    const sandbox = makeSandbox();
    const caches = await startCaches(sandbox);
    breakIt(caches, sandbox);
    const res = await sandbox.run('talos');
    expect(res.code, res.stderr + res.stdout).toBe(0);
    const lines = res.stdout.split('\n').filter((l) => l.includes('prefilled while the nodes booted') && l.startsWith('✓'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/not finished, the deploy goes on \(pods pull through the caches as usual\)/);
    expect(lines[0]).toMatch(reason);
    expect(res.stdout).toMatch(/✓ Nodes Ready/);
    expect(res.stdout).toMatch(/talos done in/);
  }, 120_000);

  it('a prefill still running a grace after the nodes are Ready is stopped, saying what it did; the phase passes', async () => {
    const sandbox = makeSandbox();
    const caches = await startCaches(sandbox);
    caches['docker.io'].stalling.push('/blobs/');
    // The nodes boot once the prefill has fetched a blob, so the grace decides when it is stopped, not
    // how fast a loaded machine starts it (stopped before it began, it has nothing to say).
    const fetchedOne = path.join(sandbox.dir, 'prefill-fetched-a-blob');
    sandbox.scenario({ talosctl: { createWaitsFor: fetchedOne } });
    for (const c of Object.values(caches)) c.onBlob = () => fs.writeFileSync(fetchedOne, '');
    const res = await sandbox.run('talos', [], { PREFILL_GRACE_SECONDS: '2' });
    expect(res.code, res.stderr + res.stdout).toBe(0);
    expect(res.stdout).toMatch(
      /✓ Pull-through caches prefilled while the nodes booted \(\d+\.\ds\) not finished, the deploy goes on \(pods pull through the caches as usual\): stopped once the nodes were Ready \([0-9] of 10 images in the caches: .* fetched \(\d+ blobs\)/,
    );
    // What it fetched before it was stopped is in the caches, and counted.
    const fetched = Object.values(caches).reduce((n, c) => n + c.stored.size, 0);
    expect(fetched).toBeGreaterThan(0);
    expect(res.stdout).toContain(`fetched (${fetched} blobs)`);
    expect(res.stdout).toMatch(/talos done in/);
  }, 120_000);

  it('is not started when the cluster exists, nor without caches', async () => {
    const sandbox = makeSandbox();
    await startCaches(sandbox);
    expect((await sandbox.run('talos')).code).toBe(0);
    const again = await sandbox.run('talos');
    expect(again.code).toBe(0);
    expect(callsOf(again.calls, 'helm', 'template')).toEqual([]);
    expect(again.stdout).not.toContain('prefilled');

    const noCaches = makeSandbox();
    const res = await noCaches.run('talos', [], { PULL_THROUGH_CACHE: 'false' });
    expect(res.code).toBe(0);
    expect(callsOf(res.calls, 'helm', 'template')).toEqual([]);
  }, 120_000);

  it('upgrades caches of an earlier version (no published port): recreates only them, keeps their volumes', async () => {
    const sandbox = makeSandbox();
    await startCaches(sandbox);
    expect((await sandbox.run('talos')).code).toBe(0);
    // As the earlier version left them: the caches published nothing.
    const state = sandbox.state();
    for (const c of Object.values(state.docker.containers) as { name: string; ports: unknown[]; labels: Record<string, string> }[]) {
      if (c.labels['talos-local.role'] === 'cache') c.ports = [];
    }
    fs.writeFileSync(sandbox.fakeState, JSON.stringify(state));
    const volumesBefore = Object.keys(state.docker.volumes).sort();

    const res = await sandbox.run('talos');
    expect(res.code, res.stderr).toBe(0);
    const changed = mutatingLines(res.calls);
    const caches = UPSTREAMS.map((u) => `talos-local-cache-${u.registry.replace(/\./g, '-')}`);
    for (const name of caches) {
      expect(changed).toContain(`docker rm --force ${name}`);
      expect(changed.find((l) => l.startsWith(`docker run --detach --name ${name} `))).toContain(`--volume ${name}:/var/lib/registry --publish 127.0.0.1::5000`);
      expect(changed).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`^docker network connect --ip 10\\.5\\.0\\.\\d+ talos-local ${name}$`))]));
    }
    expect(changed).toHaveLength(caches.length * 3);
    expect(changed.filter((l) => /talos-local-registry\b|volume rm|talosctl/.test(l))).toEqual([]);
    expect(Object.keys(sandbox.state().docker.volumes).sort()).toEqual(volumesBefore);
    expect(res.stdout).toContain('now published on 127.0.0.1::5000, for the prefill; its volume is kept');

    // And the run after that changes nothing.
    const third = await sandbox.run('talos');
    expect(mutatingLines(third.calls)).toEqual([]);
  }, 120_000);
});

describe('task images', () => {
  it('lists every image with its source, what serves it and whether that holds it, reading only', async () => {
    const sandbox = makeSandbox();
    const caches = await startCaches(sandbox);
    expect((await sandbox.run('talos', [], { PULL_THROUGH_CACHE: 'true' })).code).toBe(0);
    // What the caches hold now (the prefill fetched everything): loki only in part, busybox not at all.
    const loki = caches['docker.io'].images.find((i) => i.repository === 'grafana/loki')!;
    const busybox = caches['docker.io'].images.find((i) => i.repository === 'library/busybox')!;
    for (const b of loki.platforms.amd64.blobs.slice(1)) caches['docker.io'].stored.delete(`${loki.repository}@${b.digest}`);
    for (const b of busybox.platforms.amd64.blobs) caches['docker.io'].stored.delete(`${busybox.repository}@${b.digest}`);
    const state = sandbox.state();
    for (const u of UPSTREAMS) state.docker.containers[`talos-local-cache-${u.registry.replace(/\./g, '-')}`].files = caches[u.registry].storageFiles();
    fs.writeFileSync(sandbox.fakeState, JSON.stringify(state));
    for (const c of Object.values(caches)) c.requests.length = 0;

    const res = await sandbox.run('images');
    expect(res.code, res.stderr).toBe(0);
    const row = (ref: string) => res.stdout.split('\n').find((l) => l.startsWith(`${ref} `)) ?? '';
    expect(row('docker.io/grafana/grafana:13.2.0')).toMatch(/cache docker\.io\s+yes \(\d+ KiB\)\s+chart grafana 12\.11\.1$/);
    expect(row('quay.io/prometheus/prometheus:v3.14.0')).toMatch(/cache quay\.io\s+yes/);
    expect(row('docker.io/grafana/alloy:v1.18.1')).toMatch(/yes .*chart alloy 1\.11\.1 \(the Alloy Operator installs it per Alloy object\)$/);
    expect(row('docker.io/grafana/loki:3.7.6')).toMatch(/partly \(1 of 3 blobs\)/);
    expect(row('busybox:1.37.0')).toMatch(/cache docker\.io\s+no\s+PINNED\.busyboxImage/);
    expect(row('ghcr.io/siderolabs/talos:v1.13.9')).toMatch(/Docker on the host\s+yes/);
    expect(row(PINNED.registryImage)).toMatch(/Docker on the host\s+no/);
    const registry = sandbox.ports.REGISTRY_PORT;
    expect(res.stdout).toMatch(new RegExp(`^localhost:${registry}/sample-app:[0-9a-f]{12} +local registry :${registry} +The local registry at http://127\\.0\\.0\\.1:${registry} does not answer`, 'm'));
    expect(res.stdout).toMatch(/9 of 13 images held where the nodes get them/);
    // Read only: no mutating call; of the caches, only manifests by digest (a proxy answers those
    // from its storage), never a tag or a blob, which a proxy fetches upstream.
    expect(mutatingLines(res.calls)).toEqual([]);
    const asked = Object.values(caches).flatMap((c) => c.requests.map((r) => r.url));
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.filter((u) => !/\/manifests\/sha256:[0-9a-f]{64}$/.test(u))).toEqual([]);
  }, 120_000);

  it('says where nothing can be known yet: no caches, no cluster', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ helm: { charts: CHARTS } });
    const res = await sandbox.run('images');
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^docker\.io\/grafana\/loki:3\.7\.6 +cache docker\.io +no cache yet \(task talos creates it\)/m);
    const off = await sandbox.run('images', [], { PULL_THROUGH_CACHE: 'false' });
    expect(off.stdout).toMatch(/^docker\.io\/grafana\/loki:3\.7\.6 +upstream +pulled upstream \(no cache for its registry\)/m);
  }, 120_000);
});
