// A stand-in pull-through cache for the tests and the bench: a local HTTP server answering the
// registry API as a registry:2.8.3 pull-through proxy does (distribution v2.8.3:
// registry/handlers/manifests.go and blob.go; a blob served from its storage carries Cache-Control
// (registry/storage/blobserver.go), one fetched upstream does not (registry/proxy/proxyblobstore.go
// copyContent), and the proxy keeps what it served).
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { REGISTRY_STORAGE_ROOT } from '../../scripts/images.ts';

const sha = (data: Buffer | string) => `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;
const INDEX = 'application/vnd.oci.image.index.v1+json';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

export interface Blob {
  digest: string;
  data: Buffer;
}
export interface StoredImage {
  repository: string;
  tag: string;
  indexText: string;
  indexDigest: string;
  /** Per architecture: manifest text and digest, and its blobs (config first). */
  platforms: Record<string, { text: string; digest: string; blobs: Blob[] }>;
}

/**
 * An image with an index of amd64 and arm64, each with a config and `layers` layers of a few KiB.
 * `pinnedDigest`: the digest a chart pins the image by (repo:tag@sha256:…), under which the index is
 * served; the stand-in cannot make content with that digest, and the prefill does not check it.
 */
export function makeImage(repository: string, tag: string, layers = 2, pinnedDigest?: string): StoredImage {
  const platforms: StoredImage['platforms'] = {};
  for (const arch of ['amd64', 'arm64']) {
    const blobs = Array.from({ length: layers + 1 }, (_, i) => {
      const data = Buffer.from(`${repository}:${tag}/${arch}/${i}/`.repeat(200 + i * 50));
      return { digest: sha(data), data };
    });
    const text = JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: blobs[0].digest, size: blobs[0].data.length },
      layers: blobs.slice(1).map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: b.digest, size: b.data.length })),
    });
    platforms[arch] = { text, digest: sha(text), blobs };
  }
  const indexText = JSON.stringify({
    schemaVersion: 2,
    mediaType: INDEX,
    manifests: Object.entries(platforms).map(([arch, p]) => ({ mediaType: MANIFEST, digest: p.digest, size: p.text.length, platform: { os: 'linux', architecture: arch } })),
  });
  return { repository, tag, indexText, indexDigest: pinnedDigest ?? sha(indexText), platforms };
}

export interface Request {
  method: string;
  url: string;
  at: number;
}

/** A stand-in pull-through cache: serves its images, remembers what it served (its storage) and every request. */
export class StandInCache {
  readonly requests: Request[] = [];
  readonly stored = new Set<string>();
  /** Paths that answer this HTTP status instead (a registry error upstream). */
  readonly failing = new Map<string, number>();
  /** Requests under these paths are never answered (a stalled upstream). */
  readonly stalling: string[] = [];
  /** Called after each blob served: which image, and whether it came from the cache's storage. */
  onBlob?: (image: StoredImage, blob: Blob, fromStorage: boolean) => void;
  private server = http.createServer((req, res) => this.answer(req, res));
  port = 0;
  constructor(readonly images: StoredImage[]) {}

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this.port;
  }
  stop() {
    this.server.closeAllConnections();
    this.server.close();
  }

  /** Marks an image's amd64 blobs (all, or the first n) as stored, as an earlier pull would have left them. */
  preStore(image: StoredImage, n = Infinity) {
    image.platforms.amd64.blobs.slice(0, n).forEach((b) => this.stored.add(`${image.repository}@${b.digest}`));
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse) {
    const url = req.url ?? '';
    this.requests.push({ method: req.method ?? '', url, at: Date.now() });
    if (this.stalling.some((p) => url.includes(p))) return;
    const failure = [...this.failing].find(([p]) => url.includes(p));
    if (failure) {
      res.writeHead(failure[1], { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNKNOWN","message":"upstream said no"}]}');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url);
    const [, repository, kind, ref] = m ?? [];
    // A repository may hold several of the images (two tags of one image).
    const images = this.images.filter((i) => i.repository === repository);
    if (images.length === 0) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NAME_UNKNOWN"}]}');
      return;
    }
    if (kind === 'manifests') {
      const index = images.find((i) => ref === i.tag || ref === i.indexDigest);
      const platform = images.flatMap((i) => Object.values(i.platforms)).find((p) => p.digest === ref);
      const [text, digest, type] = index ? [index.indexText, index.indexDigest, INDEX] : platform ? [platform.text, platform.digest, MANIFEST] : [];
      if (!text) {
        res.writeHead(404).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
        return;
      }
      res.writeHead(200, { 'content-type': type, 'docker-content-digest': digest, 'content-length': Buffer.byteLength(text!) }).end(req.method === 'HEAD' ? undefined : text);
      return;
    }
    const image = images.find((i) => Object.values(i.platforms).some((p) => p.blobs.some((b) => b.digest === ref)));
    const blob = image && Object.values(image.platforms).flatMap((p) => p.blobs).find((b) => b.digest === ref);
    if (!image || !blob) {
      res.writeHead(404).end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
      return;
    }
    const key = `${repository}@${blob.digest}`;
    const local = this.stored.has(key);
    this.stored.add(key);
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': blob.data.length,
      'docker-content-digest': blob.digest,
      ...(local ? { 'cache-control': 'max-age=31536000', etag: `"${blob.digest}"` } : { etag: blob.digest }),
    });
    res.end(blob.data);
    this.onBlob?.(image, blob, local);
  }

  /** The files `find … -name link` lists in a registry storing what this cache served (paths.go layout). */
  storageFiles(): string[] {
    const files: string[] = [];
    for (const image of this.images) {
      const repo = `${REGISTRY_STORAGE_ROOT}/${image.repository}`;
      const amd64 = image.platforms.amd64;
      const blobs = amd64.blobs.filter((b) => this.stored.has(`${image.repository}@${b.digest}`));
      if (blobs.length === 0) continue;
      const hex = (d: string) => d.slice('sha256:'.length);
      files.push(
        `${repo}/_manifests/tags/${image.tag}/current/link`,
        `${repo}/_manifests/tags/${image.tag}/index/sha256/${hex(image.indexDigest)}/link`,
        `${repo}/_manifests/revisions/sha256/${hex(image.indexDigest)}/link`,
        `${repo}/_manifests/revisions/sha256/${hex(amd64.digest)}/link`,
        ...blobs.map((b) => `${repo}/_layers/sha256/${hex(b.digest)}/link`),
      );
    }
    return files;
  }
}

