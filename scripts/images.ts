// Every image the platform runs, known before the nodes exist, and the pull-through caches filled with them.
//
//   npx tsx scripts/images.ts             list every image: its source (chart, manifest, PINNED, sample
//                                         app), what serves it to the nodes, and whether that already
//                                         holds it (task images); changes nothing
//   npx tsx scripts/images.ts --prefill   fetch every cached image's manifest, config and layers through
//                                         its cache, 4 blobs at a time; the talos phase runs this in the
//                                         background during `talosctl cluster create`. Its last line says
//                                         how many images and bytes were already cached and how many
//                                         were fetched; it exits non-zero when an image could not be
//                                         fetched (the talos phase then says so in one line and goes on)
//   --verbose                             print every command
//
// Where the images come from: `helm template` of each release at its pinned version with the values
// its phase deploys (traefik.ts traefikValues, observability.ts releaseSpec), test hooks left out;
// the Alloy collectors' images from the alloy chart that the Alloy Operator installs for each Alloy
// object k8s-monitoring renders (chart version = the operator's app version, values = the object's
// spec); local-path-provisioner, busybox and the registry from PINNED; the sample app's content-hash
// tag (sample-app.ts). Refs are read as Docker reads them (docker.io and library/ when not named).
//
// How the caches are reached: each cache (registry:2.8.3, a pull-through proxy on the cluster network)
// publishes its port 5000 on 127.0.0.1 at a port Docker picks, read back from `docker ps`. Docker
// Desktop, Colima and OrbStack forward published ports to the Mac's 127.0.0.1, where container IPs
// are out of reach. Whether a cache holds an image is read from its storage (`docker exec <cache>
// find … -name link`: the tags, manifests and layers it stored) and the manifests it holds (GET by
// digest, which a proxy answers from its storage): asking a proxy by tag, or for a blob it lacks,
// makes it fetch from upstream, so the listing never does that.
//
// Reads .env keys: CLUSTER_NAME PULL_THROUGH_CACHE HOST_IP REGISTRY_PORT KUBERNETES_VERSION
//   TALOS_VERSION, and those the charts' values read (see observability.ts and traefik.ts).
// Tools: helm (template, with --repo: it downloads the charts), docker (ps, info, exec, image inspect).
// Imports the pure definitions of the phases it lists (values, cache containers, the sample app's
// tag); those modules do nothing when imported.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import kleur from 'kleur';
import { type Config, PINNED, UserError, failureReason, isMain, loadConfig, mergeValues, run } from './lib.ts';
import { NAMESPACE as MONITORING_NAMESPACE, RELEASES, type ReleaseKey, releaseSpec } from './observability.ts';
import { contentHash, imageRef, registryHasTag, registryUrl } from './app.ts';
import { APP_DIR, SAMPLE_APP_SPEC } from './sample-app.ts';
import { OWNER_LABEL, UPSTREAMS, helperContainers, parsePorts, talosImage } from './talos.ts';
import { TRAEFIK_NAMESPACE, traefikValues } from './traefik.ts';

// ---------------------------------------------------------------------------------------------
// Image references (pure)
// ---------------------------------------------------------------------------------------------

/** An image reference split as Docker reads it (distribution/reference ParseNormalizedNamed). */
export interface ImageRef {
  /** docker.io, ghcr.io, localhost:5001 … */
  registry: string;
  /** The repository path in that registry: library/busybox, grafana/loki … */
  repository: string;
  tag?: string;
  digest?: string;
}

/**
 * Splits a reference: the first path component is a registry when it holds a "." or a ":" or is
 * "localhost", else the registry is docker.io (and a one-component name is under library/); the tag
 * follows the last ":" of the last component, a digest follows "@". Without tag or digest: latest.
 */
export function parseImageRef(ref: string): ImageRef {
  const at = ref.indexOf('@');
  const digest = at >= 0 ? ref.slice(at + 1) : undefined;
  if (digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new Error(`image "${ref}": the digest is not sha256:<64 hex digits>`);
  const named = at >= 0 ? ref.slice(0, at) : ref;
  const slash = named.lastIndexOf('/');
  const colon = named.lastIndexOf(':');
  const tag = colon > slash ? named.slice(colon + 1) : undefined;
  const name = colon > slash ? named.slice(0, colon) : named;
  const first = name.split('/')[0];
  const hasRegistry = name.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  const registry = hasRegistry ? first : 'docker.io';
  let repository = hasRegistry ? name.slice(first.length + 1) : name;
  if (registry === 'docker.io' && !repository.includes('/')) repository = `library/${repository}`;
  if (!/^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-]+[a-z0-9]+)*)*$/.test(repository) || (tag !== undefined && !/^\w[\w.-]{0,127}$/.test(tag))) {
    throw new Error(`"${ref}" is not an image reference`);
  }
  return { registry, repository, tag: tag ?? (digest ? undefined : 'latest'), digest };
}

/** What a registry is asked for: the digest when there is one (a tag beside it is ignored, as by containerd), else the tag. */
export const manifestReference = (r: ImageRef) => r.digest ?? r.tag ?? 'latest';

/** Every container image in rendered objects (containers and initContainers of any pod template, Pod, Job, CronJob …). */
export function imagesInObjects(objects: unknown[]): string[] {
  const found: string[] = [];
  const walk = (node: unknown, key = ''): void => {
    if (Array.isArray(node)) {
      for (const item of node) {
        if (['containers', 'initContainers', 'ephemeralContainers'].includes(key) && typeof (item as { image?: unknown })?.image === 'string') {
          found.push((item as { image: string }).image);
        }
        walk(item);
      }
    } else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) walk(v, k);
    }
  };
  walk(objects);
  return [...new Set(found)];
}

/** The OCI platform of Docker's nodes, from `docker info`'s OSType and Architecture (x86_64, aarch64 …). */
export function nodePlatform(osType: string, architecture: string): { os: string; architecture: string } {
  const arch = { x86_64: 'amd64', amd64: 'amd64', aarch64: 'arm64', arm64: 'arm64' }[architecture];
  if (!arch) throw new Error(`Docker's architecture "${architecture}" is not one Talos runs on (amd64, arm64)`);
  return { os: osType || 'linux', architecture: arch };
}

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
}
export interface ManifestJson {
  mediaType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

/** The entry of an index (or Docker manifest list) for this platform, or undefined when it has none. */
export function platformEntry(index: ManifestJson, platform: { os: string; architecture: string }): Descriptor | undefined {
  return (index.manifests ?? []).find((m) => m.platform?.os === platform.os && m.platform?.architecture === platform.architecture);
}

/** The blobs a pull fetches for an image manifest: its config, then its layers. */
export const blobsOf = (manifest: ManifestJson): Descriptor[] => [...(manifest.config ? [manifest.config] : []), ...(manifest.layers ?? [])];

export const isIndex = (m: ManifestJson) => Array.isArray(m.manifests);

/** What a cache's storage holds, from the paths of its link files (distribution v2.8.3 registry/storage/paths.go). */
export interface CacheStorage {
  /** repository → tag → manifest digests the tag has pointed to (tags/<tag>/index/sha256/<hex>/link). */
  tags: Map<string, Map<string, string[]>>;
  /** "repository@digest" of every manifest stored (_manifests/revisions/sha256/<hex>/link). */
  manifests: Set<string>;
  /** "repository@digest" of every blob linked into a repository (_layers/sha256/<hex>/link). */
  blobs: Set<string>;
}

export const REGISTRY_STORAGE_ROOT = '/var/lib/registry/docker/registry/v2/repositories';

/** Parses `find <REGISTRY_STORAGE_ROOT> -type f -name link` into what the cache holds. */
export function parseStorageLinks(text: string, root = REGISTRY_STORAGE_ROOT): CacheStorage {
  const storage: CacheStorage = { tags: new Map(), manifests: new Set(), blobs: new Set() };
  for (const line of text.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(`${root}/`))) {
    const rel = line.slice(root.length + 1);
    const tag = /^(.+)\/_manifests\/tags\/([^/]+)\/index\/sha256\/([0-9a-f]{64})\/link$/.exec(rel);
    const revision = /^(.+)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/.exec(rel);
    const layer = /^(.+)\/_layers\/sha256\/([0-9a-f]{64})\/link$/.exec(rel);
    if (tag) {
      const byTag = storage.tags.get(tag[1]) ?? new Map<string, string[]>();
      byTag.set(tag[2], [...(byTag.get(tag[2]) ?? []), `sha256:${tag[3]}`]);
      storage.tags.set(tag[1], byTag);
    } else if (revision) storage.manifests.add(`${revision[1]}@sha256:${revision[2]}`);
    else if (layer) storage.blobs.add(`${layer[1]}@sha256:${layer[2]}`);
  }
  return storage;
}

export const formatBytes = (n: number) =>
  n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(0)} MiB` : `${(n / 2 ** 10).toFixed(0)} KiB`;

// ---------------------------------------------------------------------------------------------
// Every image the platform runs
// ---------------------------------------------------------------------------------------------

export interface ChartRef {
  repo: string;
  chart: string;
  version: string;
}

/** Renders a chart as `helm template` does; the tests give the real helm with local charts. */
export type Render = (release: string, chart: ChartRef, values: Record<string, unknown>, namespace: string) => Promise<unknown[]>;

/** What serves an image to the nodes. */
export type Server = { kind: 'cache'; registry: string; container: string } | { kind: 'local-registry' } | { kind: 'host-docker' } | { kind: 'upstream' };

export interface PlatformImage {
  ref: string;
  /** Where it is named: "chart traefik 41.3.0", "manifests/storage (PINNED.busyboxImage)" … (several, comma-separated). */
  source: string;
  server: Server;
}

/** `helm template` through the chart's repository (helm downloads the chart), without test hooks. */
export function helmTemplate(cfg: Config): Render {
  return async (release, chart, values, namespace) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'platform-images-'));
    try {
      const file = path.join(dir, 'values.yaml');
      fs.writeFileSync(file, YAML.stringify(values, { version: '1.1' }));
      const res = await run('helm', [
        'template', release, chart.chart,
        '--repo', chart.repo,
        '--version', chart.version,
        '--namespace', namespace,
        '--kube-version', cfg.KUBERNETES_VERSION,
        '--values', file,
        '--skip-tests',
      ]);
      return YAML.parseAllDocuments(res.stdout).map((d) => d.toJSON()).filter(Boolean);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}

type Obj = { kind?: string; metadata?: { name?: string; labels?: Record<string, string> }; spec?: Record<string, unknown> };

/**
 * The alloy chart version the Alloy Operator installs: the operator's app version, which its chart
 * writes into the app.kubernetes.io/version label of its Deployment.
 */
export function alloyOperatorVersion(objects: unknown[]): string | undefined {
  const operator = (objects as Obj[]).find((o) => o.kind === 'Deployment' && o.metadata?.labels?.['app.kubernetes.io/name'] === 'alloy-operator');
  return operator?.metadata?.labels?.['app.kubernetes.io/version'];
}

/** Where a node gets an image from: the local registry, the cache for its registry, or upstream. */
export function serverFor(cfg: Config, ref: string): Server {
  const { registry } = parseImageRef(ref);
  if (registry === `localhost:${cfg.REGISTRY_PORT}`) return { kind: 'local-registry' };
  const cache = helperContainers(cfg).find((c) => c.role === 'cache' && c.name === cacheName(cfg, registry));
  return cache ? { kind: 'cache', registry, container: cache.name } : { kind: 'upstream' };
}

const cacheName = (cfg: Config, registry: string) =>
  UPSTREAMS.some((u) => u.registry === registry) ? `${cfg.CLUSTER_NAME}-cache-${registry.replace(/\./g, '-')}` : undefined;

/** Every image the platform runs, with its source and what serves it. Renders the charts (helm downloads them). */
export async function platformImages(cfg: Config, render: Render = helmTemplate(cfg)): Promise<PlatformImage[]> {
  const named: { ref: string; source: string; server?: Server }[] = [];
  const add = (refs: string[], source: string, server?: Server) => named.push(...refs.map((ref) => ({ ref, source, server })));

  const traefik = PINNED.charts.traefik;
  add(imagesInObjects(await render('traefik', traefik, mergeValues(...traefikValues(cfg)), TRAEFIK_NAMESPACE)), `chart traefik ${traefik.version}`);
  for (const key of Object.keys(RELEASES) as ReleaseKey[]) {
    const spec = releaseSpec(cfg, key);
    const objects = await render(spec.release, spec.chart, mergeValues(...spec.values), spec.namespace);
    add(imagesInObjects(objects), `chart ${spec.chart.chart} ${spec.chart.version}`);
    const alloys = (objects as Obj[]).filter((o) => o.kind === 'Alloy');
    if (alloys.length === 0) continue;
    const version = alloyOperatorVersion(objects);
    if (!version) throw new Error(`chart ${spec.chart.chart} ${spec.chart.version} renders Alloy objects but no alloy-operator Deployment with an app.kubernetes.io/version label`);
    const alloyChart = { repo: spec.chart.repo, chart: 'alloy', version };
    for (const alloy of alloys) {
      const rendered = await render(alloy.metadata?.name ?? 'alloy', alloyChart, alloy.spec ?? {}, MONITORING_NAMESPACE);
      add(imagesInObjects(rendered), `chart alloy ${version} (the Alloy Operator installs it per Alloy object)`);
    }
  }
  add([`docker.io/rancher/local-path-provisioner:${PINNED.localPathProvisioner}`], 'PINNED.localPathProvisioner (storage)');
  add([PINNED.busyboxImage], 'PINNED.busyboxImage (storage helper pods, smoke test)');
  add([imageRef(cfg, SAMPLE_APP_SPEC.name, contentHash(APP_DIR))], 'sample-app/ (content-hash tag)');
  add([PINNED.registryImage], 'PINNED.registryImage (registry and caches)', { kind: 'host-docker' });
  add([talosImage(cfg)], 'TALOS_VERSION (the nodes)', { kind: 'host-docker' });

  const byRef = new Map<string, PlatformImage>();
  for (const n of named) {
    const seen = byRef.get(n.ref);
    if (seen) {
      if (!seen.source.split(', ').includes(n.source)) seen.source += `, ${n.source}`;
      continue;
    }
    byRef.set(n.ref, { ref: n.ref, source: n.source, server: n.server ?? serverFor(cfg, n.ref) });
  }
  return [...byRef.values()];
}

// ---------------------------------------------------------------------------------------------
// The caches, reached on 127.0.0.1
// ---------------------------------------------------------------------------------------------

interface CacheEndpoint {
  container: string;
  state: string;
  /** http://127.0.0.1:<port>, when it runs and publishes port 5000. */
  url?: string;
}

/** Our cache containers and where this machine reaches them (one `docker ps`). */
async function cacheEndpoints(cfg: Config): Promise<Map<string, CacheEndpoint>> {
  const out = await run('docker', ['ps', '--all', '--filter', `label=${OWNER_LABEL}=${cfg.CLUSTER_NAME}`, '--filter', 'label=talos-local.role=cache', '--format', '{{json .}}']);
  const rows = out.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { Names: string; State: string; Ports: string });
  return new Map(
    rows.map((r) => {
      const port = parsePorts(r.Ports).find((p) => p.containerPort === 5000 && p.hostIp === '127.0.0.1');
      return [r.Names, { container: r.Names, state: r.State, url: r.State === 'running' && port ? `http://127.0.0.1:${port.hostPort}` : undefined }];
    }),
  );
}

async function dockerPlatform(): Promise<{ os: string; architecture: string }> {
  const info = JSON.parse((await run('docker', ['info', '--format', '{{json .}}'])).stdout) as { OSType: string; Architecture: string };
  return nodePlatform(info.OSType, info.Architecture);
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Bytes read from the body (also when the body is not kept). */
  bytes: number;
}

/** One GET (node:http: fetch refuses some ports). keepBody=false counts the bytes and drops them. */
export function httpGet(url: string, headers: Record<string, string>, keepBody = true, timeoutMs = 60_000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (keepBody) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), bytes }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no data for ${timeoutMs / 1000}s from ${url}`)));
    req.on('error', reject);
  });
}

async function getManifest(base: string, repository: string, reference: string): Promise<{ json: ManifestJson; digest?: string }> {
  const url = `${base}/v2/${repository}/manifests/${reference}`;
  const res = await httpGet(url, { accept: MANIFEST_ACCEPT });
  if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status} ${res.body.toString('utf8').slice(0, 200).trim()}`);
  return { json: JSON.parse(res.body.toString('utf8')) as ManifestJson, digest: res.headers['docker-content-digest'] as string | undefined };
}

// ---------------------------------------------------------------------------------------------
// Listing (task images)
// ---------------------------------------------------------------------------------------------

/** Whether a cache holds an image for this platform, from its storage and its stored manifests. */
async function cachedState(base: string, storage: CacheStorage, ref: ImageRef, platform: { os: string; architecture: string }): Promise<string> {
  const candidates = ref.digest ? [ref.digest] : (storage.tags.get(ref.repository)?.get(ref.tag ?? 'latest') ?? []);
  const stored = candidates.filter((d) => storage.manifests.has(`${ref.repository}@${d}`));
  if (stored.length === 0) return 'no';
  let best = 'manifest only';
  for (const digest of stored) {
    // By digest, a proxy answers from its storage (proxymanifeststore.go Get: local first).
    let { json } = await getManifest(base, ref.repository, digest);
    if (isIndex(json)) {
      const entry = platformEntry(json, platform);
      if (!entry) return `no ${platform.os}/${platform.architecture} image`;
      if (!storage.manifests.has(`${ref.repository}@${entry.digest}`)) continue;
      json = (await getManifest(base, ref.repository, entry.digest)).json;
    }
    const blobs = blobsOf(json);
    const have = blobs.filter((b) => storage.blobs.has(`${ref.repository}@${b.digest}`));
    if (have.length === blobs.length) return `yes (${formatBytes(blobs.reduce((n, b) => n + b.size, 0))})`;
    best = `partly (${have.length} of ${blobs.length} blobs)`;
  }
  return best;
}

/** Each image with what holds it now: "yes (…)", "no", "partly (…)" or why that cannot be known. Changes nothing. */
export async function imageStatus(cfg: Config, images: PlatformImage[]): Promise<Map<string, string>> {
  const status = new Map<string, string>();
  const caches = cfg.PULL_THROUGH_CACHE ? await cacheEndpoints(cfg) : new Map<string, CacheEndpoint>();
  const platform = await dockerPlatform();
  const storages = new Map<string, CacheStorage | string>();
  const storageOf = async (container: string) => {
    if (!storages.has(container)) {
      const found = await run('docker', ['exec', container, 'find', REGISTRY_STORAGE_ROOT, '-type', 'f', '-name', 'link'], { okCodes: [1] });
      // find exits 1 on a root that does not exist yet: a cache that has stored nothing.
      const empty = found.code === 1 && /No such file or directory/.test(found.stderr);
      storages.set(container, found.code === 0 || empty ? parseStorageLinks(found.stdout) : `cannot read its storage: ${found.stderr.trim()}`);
    }
    return storages.get(container)!;
  };
  for (const image of images) {
    const s = image.server;
    if (s.kind === 'upstream') status.set(image.ref, 'pulled upstream (no cache for its registry)');
    else if (s.kind === 'host-docker') {
      const res = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', image.ref], { okCodes: [1] });
      status.set(image.ref, res.code === 0 ? 'yes' : 'no');
    } else if (s.kind === 'local-registry') {
      const has = await registryHasTag(registryUrl(cfg), SAMPLE_APP_SPEC.name, parseImageRef(image.ref).tag!).catch((err: Error) => err.message);
      status.set(image.ref, has === true ? 'yes' : has === false ? 'no (task sample-app pushes it)' : has);
    } else {
      const cache = caches.get(s.container);
      if (!cache) status.set(image.ref, 'no cache yet (task talos creates it)');
      else if (!cache.url) {
        status.set(image.ref, cache.state === 'running' ? 'cache publishes no port on 127.0.0.1 (task talos recreates it)' : `cache ${cache.state} (task talos starts it)`);
      } else {
        const storage = await storageOf(s.container);
        status.set(image.ref, typeof storage === 'string' ? storage : await cachedState(cache.url, storage, parseImageRef(image.ref), platform));
      }
    }
  }
  return status;
}

const serverText = (cfg: Config, s: Server) =>
  s.kind === 'cache' ? `cache ${s.registry}` : s.kind === 'local-registry' ? `local registry :${cfg.REGISTRY_PORT}` : s.kind === 'host-docker' ? 'Docker on the host' : 'upstream';

/** The table `task images` prints. */
export function formatImages(cfg: Config, images: PlatformImage[], status: Map<string, string>): string[] {
  const rows = [['IMAGE', 'SERVED BY', 'HELD', 'SOURCE'], ...images.map((i) => [i.ref, serverText(cfg, i.server), status.get(i.ref) ?? '', i.source])];
  const widths = rows[0].map((_, col) => Math.max(...rows.map((r) => r[col].length)));
  const held = [...status.values()].filter((v) => v.startsWith('yes')).length;
  return [...rows.map((r) => r.map((cell, col) => (col === r.length - 1 ? cell : cell.padEnd(widths[col]))).join('  ')), `${held} of ${images.length} images held where the nodes get them`];
}

// ---------------------------------------------------------------------------------------------
// Prefill
// ---------------------------------------------------------------------------------------------

export interface PrefillResult {
  images: number;
  /** Images whose every blob went through its cache. */
  imagesDone: number;
  failed: { ref: string; reason: string }[];
  blobsCached: number;
  bytesCached: number;
  blobsFetched: number;
  bytesFetched: number;
}

/** Runs the tasks, at most `limit` at a time. */
async function pool(limit: number, tasks: (() => Promise<void>)[]): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
}

export const PREFILL_PARALLEL_BLOBS = 4;

/**
 * Pulls each image through its cache as containerd would: the manifest (an index leads to this
 * platform's manifest), then config and layers, PREFILL_PARALLEL_BLOBS blobs at a time, each read to
 * the end (the proxy stores what it serves). A blob the cache served from its storage carries
 * Cache-Control (distribution v2.8.3 registry/storage/blobserver.go); one it fetched upstream does not
 * (registry/proxy/proxyblobstore.go copyContent): that is how "already cached" is told apart.
 */
export async function prefill(
  images: { ref: string; base: string }[],
  platform: { os: string; architecture: string },
  /** Filled as blobs arrive, so that a prefill stopped part-way can say what it did. */
  result: PrefillResult = { images: images.length, imagesDone: 0, failed: [], blobsCached: 0, bytesCached: 0, blobsFetched: 0, bytesFetched: 0 },
): Promise<PrefillResult> {
  const blobTasks: (() => Promise<void>)[] = [];
  const failedRefs = new Map<string, string>();
  const seen = new Set<string>();
  for (const image of images) {
    const ref = parseImageRef(image.ref);
    try {
      let { json } = await getManifest(image.base, ref.repository, manifestReference(ref));
      if (isIndex(json)) {
        const entry = platformEntry(json, platform);
        if (!entry) throw new Error(`no ${platform.os}/${platform.architecture} image in its index`);
        json = (await getManifest(image.base, ref.repository, entry.digest)).json;
      }
      const blobs = blobsOf(json).filter((b) => !seen.has(`${image.base}/${ref.repository}@${b.digest}`));
      let pending = blobs.length;
      if (pending === 0) result.imagesDone++;
      for (const blob of blobs) {
        seen.add(`${image.base}/${ref.repository}@${blob.digest}`);
        blobTasks.push(async () => {
          if (failedRefs.has(image.ref)) return;
          const url = `${image.base}/v2/${ref.repository}/blobs/${blob.digest}`;
          try {
            const res = await httpGet(url, {}, false);
            if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status}`);
            if (res.headers['cache-control']) {
              result.blobsCached++;
              result.bytesCached += res.bytes;
            } else {
              result.blobsFetched++;
              result.bytesFetched += res.bytes;
            }
            if (--pending === 0 && !failedRefs.has(image.ref)) result.imagesDone++;
          } catch (err) {
            failedRefs.set(image.ref, (err as Error).message);
          }
        });
      }
    } catch (err) {
      failedRefs.set(image.ref, (err as Error).message);
    }
  }
  await pool(PREFILL_PARALLEL_BLOBS, blobTasks);
  result.failed = [...failedRefs].map(([ref, reason]) => ({ ref, reason }));
  return result;
}

export const prefillSummary = (r: PrefillResult, seconds: number) =>
  `${r.imagesDone} of ${r.images} images in the caches: ${formatBytes(r.bytesCached)} were cached already (${r.blobsCached} blobs), ` +
  `${formatBytes(r.bytesFetched)} fetched (${r.blobsFetched} blobs) in ${seconds.toFixed(0)}s`;

async function runPrefill(cfg: Config): Promise<void> {
  if (!cfg.PULL_THROUGH_CACHE) {
    console.log('PULL_THROUGH_CACHE=false: no caches to fill');
    return;
  }
  const start = Date.now();
  const images = (await platformImages(cfg)).filter((i) => i.server.kind === 'cache');
  const caches = await cacheEndpoints(cfg);
  const platform = await dockerPlatform();
  const reachable: { ref: string; base: string }[] = [];
  const unreachable: string[] = [];
  for (const image of images) {
    const base = image.server.kind === 'cache' ? caches.get(image.server.container)?.url : undefined;
    if (base) reachable.push({ ref: image.ref, base });
    else unreachable.push(image.ref);
  }
  const result: PrefillResult = { images: reachable.length, imagesDone: 0, failed: [], blobsCached: 0, bytesCached: 0, blobsFetched: 0, bytesFetched: 0 };
  // The talos phase stops a prefill that outlasts the nodes' boot by its grace: say what was done.
  process.once('SIGTERM', () => {
    console.error(`✗ images --prefill: stopped once the nodes were Ready (${prefillSummary(result, (Date.now() - start) / 1000)})`);
    process.exit(1);
  });
  await prefill(reachable, platform, result);
  result.images += unreachable.length;
  result.failed.push(...unreachable.map((ref) => ({ ref, reason: 'its cache publishes no port on 127.0.0.1' })));
  console.log(prefillSummary(result, (Date.now() - start) / 1000));
  if (result.failed.length) {
    throw new UserError(`${result.failed.length} images not prefilled (pods pull them through the caches as usual): ${result.failed.map((f) => `${f.ref}: ${f.reason}`).join('; ')}`);
  }
}

if (isMain(import.meta.url)) {
  if (process.env.NO_COLOR) kleur.enabled = false;
  try {
    const cfg = loadConfig();
    if (process.argv.includes('--prefill')) await runPrefill(cfg);
    else {
      const images = await platformImages(cfg);
      console.log(formatImages(cfg, images, await imageStatus(cfg, images)).join('\n'));
    }
  } catch (err) {
    // One line: the talos phase shows it as the reason a prefill did not finish.
    console.error(kleur.red(`✗ images${process.argv.includes('--prefill') ? ' --prefill' : ''}: ${failureReason(err).split('\n')[0]}`));
    process.exitCode = 1;
  }
}
