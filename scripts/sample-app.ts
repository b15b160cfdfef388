// Phase 5: the sample app (task sample-app). Builds its image, pushes it to the local registry and
// deploys it with its Service and, by default, a traffic generator.
//
//   npx tsx scripts/sample-app.ts [--verbose]
//
// Reads .env keys: REGISTRY_PORT HOST_IP (where the local registry listens), SAMPLE_TRAFFIC,
//   DOMAIN (for the closing hint), CLUSTER_NAME STATE_DIR (the cluster's kubeconfig).
// Tools: docker (image inspect, build, push), kubectl (diff, apply, get, delete, rollout status).
// Also asks the local registry over HTTP (GET /v2/sample-app/manifests/<tag>) whether it has the tag.
//
// The image tag is a content hash of sample-app/ (every file the Docker build context can hold),
// so a tag names exactly one source. When the registry already has that tag nothing is built or
// pushed; when the image is only missing from the registry it is pushed without a rebuild.
// Manifests come from manifests/sample-app/ and are applied only when `kubectl diff` sees a
// difference. SAMPLE_TRAFFIC=false removes the traffic generator. The route app.<DOMAIN> is the
// traefik phase's IngressRoute to Service sample-app (port 80) in namespace sample-app.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import YAML from 'yaml';
import {
  type Config,
  PROJECT_DIR,
  UserError,
  applyManifests,
  check,
  isMain,
  kubectl,
  namesAddress,
  note,
  podDiagnostics,
  renderTemplate,
  requireCluster,
  run,
  runPhase,
  step,
} from './lib.ts';

export const APP_DIR = path.join(PROJECT_DIR, 'sample-app');
export const NAMESPACE = 'sample-app';
export const REPOSITORY = 'sample-app';
export const APP_DEPLOYMENT = 'sample-app';
export const TRAFFIC_DEPLOYMENT = 'sample-app-traffic';
const ROLLOUT_TIMEOUT = '180s';

/** Top-level entries the build context leaves out; sample-app/.dockerignore lists the same. */
export const IGNORED = ['node_modules', 'dist'];

/** Every file of the build context, as paths relative to dir, sorted. */
export function contextFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (!rel && IGNORED.includes(entry.name)) continue;
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile()) out.push(child);
    }
  };
  walk('');
  return out.sort();
}

/** The image tag: 12 hex digits of a SHA-256 over the context's file names and contents. */
export function contentHash(dir: string): string {
  const hash = crypto.createHash('sha256');
  for (const rel of contextFiles(dir)) {
    hash.update(`${rel}\0`);
    hash.update(fs.readFileSync(path.join(dir, rel)));
    hash.update('\0');
  }
  return hash.digest('hex').slice(0, 12);
}

/** The name the host pushes and the nodes pull (the talos phase mirrors localhost:<port>). */
export const imageRef = (cfg: Pick<Config, 'REGISTRY_PORT'>, tag: string) => `localhost:${cfg.REGISTRY_PORT}/${REPOSITORY}:${tag}`;

/** Where the host reaches the registry's HTTP API. */
export const registryUrl = (cfg: Pick<Config, 'HOST_IP' | 'REGISTRY_PORT'>) => `http://${namesAddress(cfg.HOST_IP)}:${cfg.REGISTRY_PORT}`;

/**
 * The manifests with the image filled in: the namespace, the app (Deployment, Service) and the
 * traffic generator, each as YAML text. The namespace comes apart from the rest because
 * `kubectl diff` fails on objects in a namespace that does not exist yet (kubernetes#114141).
 */
export function renderManifests(image: string): { namespace: string; app: string; traffic: string } {
  const read = (file: string) => renderTemplate(fs.readFileSync(path.join(PROJECT_DIR, 'manifests', 'sample-app', file), 'utf8'), { IMAGE: image });
  const docs = YAML.parseAllDocuments(read('app.yaml')).filter((d) => d.contents !== null);
  const text = (list: typeof docs) => list.map((d) => YAML.stringify(d.toJSON())).join('---\n');
  const isNamespace = (d: (typeof docs)[number]) => d.get('kind') === 'Namespace';
  return { namespace: text(docs.filter(isNamespace)), app: text(docs.filter((d) => !isNamespace(d))), traffic: read('traffic.yaml') };
}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

/**
 * Whether the registry has repository:tag, from the Docker Registry HTTP API v2
 * (HEAD /v2/<name>/manifests/<tag>: 200 when present, 404 when not).
 */
export async function registryHasTag(baseUrl: string, repository: string, tag: string): Promise<boolean> {
  const url = `${baseUrl}/v2/${repository}/manifests/${tag}`;
  // node:http rather than fetch(): fetch refuses some ports (6000, 6665-6669 ...) that REGISTRY_PORT may be.
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(url, { method: 'HEAD', headers: { accept: MANIFEST_TYPES.join(', ') }, timeout: 10000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10s')));
    req.on('error', reject);
    req.end();
  }).catch((err: NodeJS.ErrnoException) => {
    throw new UserError(`The local registry at ${baseUrl} does not answer (${err.code ?? err.message}). \`task talos\` starts it: run task talos first.`);
  });
  if (status === 200) return true;
  if (status === 404) return false;
  throw new UserError(`The local registry at ${baseUrl} answered HTTP ${status} to HEAD ${url}; expected 200 or 404. Is another service on that port? Check REGISTRY_PORT in .env.`);
}

/** Builds (only when the local image is missing) and pushes the image, unless the registry has it. */
async function ensureImage(cfg: Config, tag: string): Promise<string> {
  const ref = imageRef(cfg, tag);
  if (await registryHasTag(registryUrl(cfg), REPOSITORY, tag)) return `unchanged (${ref} is in the registry)`;
  const local = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', ref], { okCodes: [1] });
  const done: string[] = [];
  if (local.code !== 0) {
    await run('docker', ['build', '--tag', ref, '--label', `org.opencontainers.image.revision=${tag}`, APP_DIR], {
      hint: 'The sample app image did not build; the output above says why (npm needs the internet inside the build).',
    });
    done.push('built');
  }
  await run('docker', ['push', ref], {
    hint: `Pushing to the local registry failed. Is it running (\`docker ps\`), and is ${cfg.HOST_IP}:${cfg.REGISTRY_PORT} reachable as localhost? Run task talos first.`,
  });
  done.push('pushed');
  return `${done.join(' and ')} ${ref} (the registry did not have this source's tag)`;
}

async function deploymentNames(cfg: Config): Promise<string[]> {
  const res = await kubectl(cfg, ['get', 'deployments', '--namespace', NAMESPACE, '--output', 'json']);
  return (JSON.parse(res.stdout || '{"items":[]}').items as { metadata: { name: string } }[]).map((d) => d.metadata.name);
}

/** Waits for a Deployment's rollout; on a timeout, the error carries the unready pods with their events and logs. */
async function waitRollout(cfg: Config, name: string): Promise<void> {
  try {
    await kubectl(cfg, ['rollout', 'status', `deployment/${name}`, '--namespace', NAMESPACE, `--timeout=${ROLLOUT_TIMEOUT}`]);
  } catch (err) {
    throw new UserError(
      `Deployment ${name} did not become ready within ${ROLLOUT_TIMEOUT}.\n${(err as Error).message}\n` +
        `${await podDiagnostics(cfg, [NAMESPACE])}\n` +
        `ErrImagePull/ImagePullBackOff means the nodes cannot pull from the local registry (it is set up by task talos).`,
    );
  }
}

export async function deploySampleApp(cfg: Config): Promise<void> {
  await check('Cluster answers', async () => {
    await requireCluster(cfg);
    return `${cfg.CLUSTER_NAME}`;
  });

  const tag = contentHash(APP_DIR);
  const ref = imageRef(cfg, tag);
  await step(`Image ${REPOSITORY}:${tag} in the local registry`, () => ensureImage(cfg, tag));

  const manifests = renderManifests(ref);
  await step(`Namespace ${NAMESPACE} (Pod Security restricted)`, async () => {
    const result = await applyManifests(cfg, manifests.namespace);
    return result === 'unchanged' ? 'unchanged' : 'applied';
  });
  await step(`Deployment and Service ${APP_DEPLOYMENT} in namespace ${NAMESPACE}`, async () => {
    const result = await applyManifests(cfg, manifests.app);
    return result === 'unchanged' ? 'unchanged' : `applied (image ${ref})`;
  });

  await step(`Traffic generator (SAMPLE_TRAFFIC=${cfg.SAMPLE_TRAFFIC})`, async () => {
    if (cfg.SAMPLE_TRAFFIC) {
      const result = await applyManifests(cfg, manifests.traffic);
      return result === 'unchanged' ? 'unchanged' : `applied deployment/${TRAFFIC_DEPLOYMENT}`;
    }
    if (!(await deploymentNames(cfg)).includes(TRAFFIC_DEPLOYMENT)) return 'unchanged (off)';
    await kubectl(cfg, ['delete', 'deployment', TRAFFIC_DEPLOYMENT, '--namespace', NAMESPACE]);
    return `removed deployment/${TRAFFIC_DEPLOYMENT} (SAMPLE_TRAFFIC=false)`;
  });

  await check('Rollout', async () => {
    const names = [APP_DEPLOYMENT, ...(cfg.SAMPLE_TRAFFIC ? [TRAFFIC_DEPLOYMENT] : [])];
    for (const name of names) await waitRollout(cfg, name);
    return `${names.join(', ')} ready`;
  });

  note(`The app: https://app.${cfg.DOMAIN} (route from the traefik phase), in the cluster http://${APP_DEPLOYMENT}.${NAMESPACE}.svc`);
}

if (isMain(import.meta.url)) await runPhase('sample-app', deploySampleApp);
