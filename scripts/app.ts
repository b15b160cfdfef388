// Phase "app" (`task app`): your own app, built, deployed observed, routed, with a dashboard.
//
//   task app -- <dir> [--name <n>] [--port <p>] [--metrics-port <p>] [--metrics-path <path>]
//                     [--env-file <file>] [--replicas <n>] [--cpu-request <q>] [--cpu-limit <q>]
//                     [--memory-request <q>] [--memory-limit <q>]
//   task app -- --image <ref> --name <n> [same options]
//   task app -- --remove <name>
//   (run directly: npx tsx scripts/app.ts -- <arguments>; the "--" keeps Node 20 from reading
//   --env-file as its own option and failing on it before this script starts)
//
// Every argument is checked before any tool runs (parseAppArgs: the folder has a Dockerfile, the
// name is a DNS label that clashes with none of our routes or namespaces, ports and quantities are
// in range, the env file exists, holds only KEY=value lines and would not be baked into the image).
// Then, in order:
//   1. the image: tag = content hash of the build context (the folder minus its .dockerignore), so
//      a tag names one source; built and pushed to the local registry only when the registry lacks
//      that tag (localhost:<REGISTRY_PORT>/<name>:<tag>). With IMAGE_REGISTRY set: pushed there
//      (<IMAGE_REGISTRY>/<name>:<tag>, the user's own `docker login`) when `docker manifest inspect`
//      does not find it. With CLUSTER=existing and no IMAGE_REGISTRY: on kind `kind load docker-image`,
//      on k3d `k3d image import` (<name>:<tag>) unless every node lists it; any other cluster is
//      refused before anything is built (imageTarget). With --image the reference is used as is;
//   2. namespace <name>, Pod Security "restricted", labelled as ours (manifests/app/namespace.yaml.tmpl);
//   3. Secret <name>-env from --env-file (its values are never printed), Deployment and Service
//      <name> (manifests/app/app.yaml.tmpl; requests/limits default to DEFAULT_RESOURCES), the
//      prometheus.io/scrape|port|path annotations when --metrics-port or --metrics-path is given,
//      OpenTelemetry's OTEL_* env pointing at the OTLP receiver (lib.otlpEndpoint), the
//      IngressRoute https://<name>.<DOMAIN> (route.yaml.tmpl; with INGRESS_CLASS the same route as an
//      Ingress of that class and Secret platform-tls with our certificate, lib ingressManifests), and the dashboard ConfigMap
//      (dashboard.yaml.tmpl), which Grafana's dashboard sidecar provisions into the folder "Apps";
//      steps 2 and 3 applied through one kubectl diff first (lib.applyManifests). The dashboard's panels come from the metric names of the app's job, asked from Prometheus
//      through the API server's service proxy (not asked again while the image and metrics endpoint
//      stay those of the record, which keeps the names); when Prometheus does not answer or has no series of
//      the app yet, from the declared kind (the usual HTTP metrics when it serves metrics), said so;
//   4. the record $STATE_DIR/apps/<name>.json ({ name, namespace, host, image, metricsPort,
//      metricsPath, dashboard, and metricNames when Prometheus gave them }), read by hosts, endpoints, status, traefik, validate and --remove
//      (written before the rollout, so that a deploy that never gets ready can be removed);
//   5. the server certificate: when it does not name the host yet, runs the traefik phase, which
//      re-issues it with every recorded host (*.localhost wildcards are refused by browsers);
//   6. waits for the rollout; when pods are refused or crash because the image runs as root, says
//      to set a numeric non-root USER in the Dockerfile.
// A re-run with unchanged source and options changes nothing and says so; a changed source rolls
// out the new tag. `--remove <name>` deletes what the record lists (the namespace, with everything
// in it: Deployment, Service, Secret, route, dashboard) and the record; it refuses a name without a
// record, and a namespace whose labels do not say it is that app's.
// The sample app (scripts/sample-app.ts) is deployed through deployApp() too.
//
// Reads .env keys: REGISTRY_PORT HOST_IP (the local registry), CLUSTER IMAGE_REGISTRY KUBE_CONTEXT
//   (where the image goes), DOMAIN HTTPS_PORT INGRESS_CLASS (the route and its URL), CLUSTER_NAME STATE_DIR
//   (kubeconfig, the records).
// Tools: docker (image inspect, build, push; manifest inspect with IMAGE_REGISTRY), kind or k3d (an
//   existing kind/k3d cluster), kubectl (get, diff, apply, delete, rollout status,
//   get --raw for Prometheus through the service proxy); node with scripts/traefik.ts (and its
//   tools: openssl, helm, kubectl) only when the certificate must name a new host. Also asks the
//   local registry over HTTP (HEAD /v2/<name>/manifests/<tag>) whether it has the tag.
import crypto, { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import dotenv from 'dotenv';
import YAML from 'yaml';
import {
  type AppRecord,
  appRecordPath,
  type Config,
  INGRESS_HOSTS,
  PROJECT_DIR,
  UserError,
  applyManifests,
  check,
  claimStateDir,
  failureReason,
  ingressManifests,
  ingressUrl,
  isMain,
  kubectl,
  namesAddress,
  note,
  otlpEndpoint,
  parseQuantity,
  pendingRollouts,
  podDiagnostics,
  renderTemplate,
  requireCluster,
  routeSpecsOf,
  run,
  runPhase,
  statePath,
  step,
  writeFileAtomic,
} from './lib.ts';

const TEMPLATE_DIR = path.join(PROJECT_DIR, 'manifests', 'app');
const ROLLOUT_TIMEOUT = '180s';
/** The namespaces this platform owns besides the apps': no app may take their name. */
export const PLATFORM_NAMESPACES = ['monitoring', 'traefik', 'local-path-storage', 'default'] as const;
/** The sample app's name and namespace: only `task sample-app` deploys it. */
export const SAMPLE_APP = 'sample-app';
/** Grafana's dashboard uid may have at most 40 characters: "app-" and the name. */
export const MAX_NAME_LENGTH = 36;
export const DEFAULT_PORT = 8080;
export const DEFAULT_METRICS_PATH = '/metrics';
/** Requests and limits unless overridden: small enough for a 16 GB laptop, enough for a web app. */
export const DEFAULT_RESOURCES = { cpuRequest: '50m', cpuLimit: '500m', memoryRequest: '64Mi', memoryLimit: '256Mi' } as const;

// ---------------------------------------------------------------------------------------------
// The image: build context, content hash, registry
// ---------------------------------------------------------------------------------------------

/**
 * A .dockerignore as a predicate over context-relative paths, as far as is cheap: comments, blank
 * lines, `*`, `?`, `**`, a leading `/`, and `!` exceptions (the last matching line wins); a pattern
 * that matches a folder leaves out everything in it. Docker's character classes ([a-z]) and
 * escapes are not interpreted (such a line matches only itself literally).
 */
export function dockerignoreMatcher(text: string): (rel: string) => boolean {
  const rules = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = path.posix.normalize((negate ? l.slice(1) : l).trim().replace(/^\/+/, '')).replace(/\/+$/, '');
      const re = pattern
        .split('/')
        .map((part) => (part === '**' ? '.*' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?');
      return { negate, re: new RegExp(`^${re}(?:/.*)?$`) };
    });
  return (rel) => {
    let ignored = false;
    for (const r of rules) if (r.re.test(rel)) ignored = !r.negate;
    return ignored;
  };
}

/** Every file of the build context (dir minus its .dockerignore), as sorted paths relative to dir. */
export function contextFiles(dir: string): string[] {
  const ignoreFile = path.join(dir, '.dockerignore');
  const ignored = dockerignoreMatcher(fs.existsSync(ignoreFile) ? fs.readFileSync(ignoreFile, 'utf8') : '');
  // Docker sends the Dockerfile and .dockerignore whatever .dockerignore says; both shape the image.
  const always = new Set(['Dockerfile', '.dockerignore']);
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (ignored(child) && !always.has(child)) continue;
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
export const imageRef = (cfg: Pick<Config, 'REGISTRY_PORT'>, repository: string, tag: string) => `localhost:${cfg.REGISTRY_PORT}/${repository}:${tag}`;

/** Where the host reaches the registry's HTTP API. */
export const registryUrl = (cfg: Pick<Config, 'HOST_IP' | 'REGISTRY_PORT'>) => `http://${namesAddress(cfg.HOST_IP)}:${cfg.REGISTRY_PORT}`;

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

export interface ImageSource {
  /** Repository in the local registry (the app's name). */
  repository: string;
  /** The build context. */
  dir: string;
  /** Added to the error when `docker build` fails. */
  buildHint: string;
}

/** A Node as `kubectl get nodes -o json` shows it, as far as image delivery needs. */
export interface NodeJson {
  metadata: { name: string; labels?: Record<string, string> };
  spec?: { providerID?: string };
  status?: { images?: { names?: string[] }[] };
}

/**
 * How a built image reaches the nodes: the local registry the Talos nodes mirror; a registry the
 * user names (IMAGE_REGISTRY, pushed with their own `docker login`); or, on an existing kind or k3d
 * cluster, loaded into its nodes with kind's or k3d's own command.
 */
export type ImageTarget = { via: 'local-registry' } | { via: 'registry'; registry: string } | { via: 'kind' | 'k3d'; cluster: string };

/**
 * Where the image goes (see ImageTarget): IMAGE_REGISTRY when set; the local registry on Talos; on
 * an existing cluster kind (a node's providerID kind://<provider>/<cluster>/<node>, else a context
 * kind-<cluster>) or k3d (a k3s:// node named k3d-<cluster>-server|agent-<n>, else a context
 * k3d-<cluster>). Neither: a UserError naming IMAGE_REGISTRY, before anything is built.
 */
export function imageTarget(cfg: Pick<Config, 'CLUSTER' | 'IMAGE_REGISTRY' | 'KUBE_CONTEXT'>, nodes: readonly NodeJson[], app: string): ImageTarget {
  if (cfg.IMAGE_REGISTRY) return { via: 'registry', registry: cfg.IMAGE_REGISTRY };
  if (cfg.CLUSTER === 'talos') return { via: 'local-registry' };
  const kindCluster = nodes.map((n) => /^kind:\/\/[^/]+\/([^/]+)\//.exec(n.spec?.providerID ?? '')?.[1]).find(Boolean);
  if (kindCluster) return { via: 'kind', cluster: kindCluster };
  const k3dCluster = nodes
    .filter((n) => n.spec?.providerID?.startsWith('k3s://'))
    .map((n) => /^k3d-(.+)-(?:server|agent)-\d+$/.exec(n.metadata.name)?.[1])
    .find(Boolean);
  if (k3dCluster) return { via: 'k3d', cluster: k3dCluster };
  const context = /^(kind|k3d)-(.+)$/.exec(cfg.KUBE_CONTEXT);
  if (context) return { via: context[1] as 'kind' | 'k3d', cluster: context[2] };
  const seen = [...new Set(nodes.map((n) => n.spec?.providerID?.split('://')[0]).filter(Boolean))];
  throw new UserError(
    `the image of ${app} must reach the nodes of this cluster, and it is neither kind nor k3d ` +
      `(${nodes.length} node(s)${seen.length ? `, providerID ${seen.map((p) => `${p}://`).join(', ')}` : ', no providerID'}${cfg.KUBE_CONTEXT ? `, context ${cfg.KUBE_CONTEXT}` : ''}). ` +
      'Set IMAGE_REGISTRY in .env to a registry the nodes pull from and you can push to (after `docker login <registry>`), such as IMAGE_REGISTRY=ghcr.io/<you>; or give a pushed image with --image <ref>.',
  );
}

/** The image's name for a target: the registry's path, or the bare <name>:<tag> that kind and k3d load. */
export function imageRefFor(cfg: Pick<Config, 'REGISTRY_PORT'>, target: ImageTarget, repository: string, tag: string): string {
  if (target.via === 'local-registry') return imageRef(cfg, repository, tag);
  if (target.via === 'registry') return `${target.registry}/${repository}:${tag}`;
  return `${repository}:${tag}`;
}

/** A reference as containerd (and so a Node's status.images) names it: docker.io/library/app:tag for app:tag. */
export function fullImageName(ref: string): string {
  const first = ref.split('/')[0];
  if (ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost')) return ref;
  return `docker.io/${ref.includes('/') ? ref : `library/${ref}`}`;
}

/** Whether every node lists the image in its status.images (the kubelet reports what its runtime holds). */
export const onEveryNode = (nodes: readonly NodeJson[], ref: string) =>
  nodes.length > 0 && nodes.every((n) => (n.status?.images ?? []).some((i) => i.names?.includes(fullImageName(ref))));

/** The step title of the image: where it goes. */
export const imageStepTitle = (cfg: Pick<Config, 'CLUSTER' | 'IMAGE_REGISTRY'>, name: string) =>
  `Image ${name} ${cfg.IMAGE_REGISTRY ? `in ${cfg.IMAGE_REGISTRY}` : cfg.CLUSTER === 'existing' ? "on the cluster's nodes" : 'in the local registry'}`;

/** Builds the image unless docker has it already; true when it built. */
async function buildIfMissing(ref: string, tag: string, src: ImageSource): Promise<boolean> {
  const local = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', ref], { okCodes: [1] });
  if (local.code === 0) return false;
  await run('docker', ['build', '--tag', ref, '--label', `org.opencontainers.image.revision=${tag}`, src.dir], { hint: src.buildHint });
  return true;
}

/**
 * Makes the image of dir reach the nodes (imageTarget), doing only what is missing: built when
 * docker lacks it; pushed when the registry lacks its content-hash tag; loaded into kind or k3d when
 * a node does not list it. Returns the reference and the step's detail line, which says where it went.
 */
export async function ensureImage(cfg: Config, src: ImageSource): Promise<{ ref: string; detail: string }> {
  const nodes: NodeJson[] = cfg.CLUSTER === 'existing' && !cfg.IMAGE_REGISTRY
    ? JSON.parse((await kubectl(cfg, ['get', 'nodes', '--output', 'json'])).stdout).items ?? []
    : [];
  const target = imageTarget(cfg, nodes, src.repository);
  const tag = contentHash(src.dir);
  const ref = imageRefFor(cfg, target, src.repository, tag);
  /** What happened, for the detail line: "built and <what>" when the image had to be built first. */
  const afterBuild = async (what: string) => ((await buildIfMissing(ref, tag, src)) ? `built and ${what}` : what);
  switch (target.via) {
    case 'local-registry': {
      if (await registryHasTag(registryUrl(cfg), src.repository, tag)) return { ref, detail: `unchanged (${ref} is in the registry)` };
      const what = await afterBuild('pushed');
      await run('docker', ['push', ref], {
        hint: `Pushing to the local registry failed. Is it running (\`docker ps\`), and is ${cfg.HOST_IP}:${cfg.REGISTRY_PORT} reachable as localhost? Run task talos first.`,
      });
      return { ref, detail: `${what} ${ref} (the registry did not have this source's tag)` };
    }
    case 'registry': {
      // Any failure to read it (absent, or not logged in yet) means: push, which says what is wrong.
      if ((await run('docker', ['manifest', 'inspect', ref], { okCodes: [1] })).code === 0) return { ref, detail: `unchanged (${ref} is in ${target.registry})` };
      const what = await afterBuild(`pushed to ${target.registry}`);
      const host = target.registry.split('/')[0];
      await run('docker', ['push', ref], { hint: `Pushing to IMAGE_REGISTRY=${target.registry} failed: log in first (\`docker login ${host}\`), and check that the path exists and you may push there.` });
      return { ref, detail: `${what} (${ref})` };
    }
    case 'kind':
    case 'k3d': {
      if (onEveryNode(nodes, ref)) return { ref, detail: `unchanged (${ref} is on every node of ${target.via} cluster ${target.cluster})` };
      const what = await afterBuild(`loaded into ${target.via} cluster ${target.cluster}`);
      const args = target.via === 'kind' ? ['load', 'docker-image', ref, '--name', target.cluster] : ['image', 'import', ref, '--cluster', target.cluster];
      await run(target.via, args, {
        hint: `\`${target.via}\` loads the image into the ${target.via} cluster ${target.cluster}: install it, or set IMAGE_REGISTRY in .env to a registry the nodes pull from.`,
      });
      return { ref, detail: `${what} (${ref}, with \`${target.via} ${args.slice(0, 2).join(' ')}\`)` };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

export interface Resources {
  cpuRequest: string;
  cpuLimit: string;
  memoryRequest: string;
  memoryLimit: string;
}

/** What `task app` deploys. */
export interface AppSpec {
  name: string;
  namespace: string;
  /** Host name of the route, without DOMAIN: the name, or "app" for the sample app. */
  hostName: string;
  /** Build context, or undefined with an image reference. */
  dir?: string;
  image?: string;
  port: number;
  metricsPort?: number;
  metricsPath?: string;
  /** Variables for the Secret <name>-env (from --env-file); never printed. */
  envFile?: string;
  replicas: number;
  resources: Resources;
}

export type AppCommand = { remove: string } | { deploy: AppSpec };

const DNS_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const VALUE_FLAGS = ['--name', '--port', '--metrics-port', '--metrics-path', '--env-file', '--image', '--remove', '--replicas', '--cpu-request', '--cpu-limit', '--memory-request', '--memory-limit'];

/** Why a name may not be an app's, or undefined when it may. */
export function nameProblem(name: string): string | undefined {
  if (!DNS_LABEL.test(name) || name.length > MAX_NAME_LENGTH) {
    return `--name "${name}" is not allowed: expected a DNS label of at most ${MAX_NAME_LENGTH} characters (lowercase letters, digits and "-", starting with a letter, not ending with "-"; it names the namespace, the host and the dashboard uid app-<name>). Pass --name my-app.`;
  }
  if ((INGRESS_HOSTS as readonly string[]).includes(name)) {
    return `--name "${name}" is not allowed: ${name}.<DOMAIN> is one of the platform's own routes (${INGRESS_HOSTS.join(', ')}). Pass another --name.`;
  }
  if ((PLATFORM_NAMESPACES as readonly string[]).includes(name) || name.startsWith('kube-')) {
    return `--name "${name}" is not allowed: namespace ${name} is the platform's or Kubernetes' own (${PLATFORM_NAMESPACES.join(', ')}, kube-*). Pass another --name.`;
  }
  if (name === SAMPLE_APP) return `--name "${name}" is not allowed: it is the sample app's namespace (\`task sample-app\` deploys it). Pass another --name.`;
  return undefined;
}

const portProblem = (flag: string, raw: string) =>
  /^\d+$/.test(raw) && Number(raw) >= 1 && Number(raw) <= 65535 ? undefined : `${flag} "${raw}" is not allowed: expected a TCP port from 1 to 65535, such as 8080.`;

/** Why a quantity flag is not allowed, or undefined. */
function quantityProblem(flag: string, raw: string, kind: 'cpu' | 'memory'): string | undefined {
  let n: number;
  try {
    n = parseQuantity(raw);
  } catch {
    n = Number.NaN;
  }
  const example = kind === 'cpu' ? 'such as 100m or 0.5' : 'such as 128Mi or 1Gi';
  if (!(n > 0)) return `${flag} "${raw}" is not allowed: expected a positive Kubernetes quantity, ${example}.`;
  if (kind === 'memory' && n < 4 * 2 ** 20) return `${flag} "${raw}" is not allowed: less than 4Mi leaves no room for a process (did you mean ${raw}Mi?).`;
  return undefined;
}

/**
 * Why the env file may not be used, or undefined: it must exist, hold only KEY=value lines
 * (comments and blank lines aside; dotenv's syntax), and, when it lies inside the build context, be
 * left out by .dockerignore: otherwise `docker build` would copy it into the image, pushed to the
 * registry and readable by anyone who pulls it. Values are never part of a message.
 */
export function envFileProblem(file: string, buildDir?: string): string | undefined {
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) return `--env-file "${file}" does not exist or is not a file. Pass the path of a KEY=value file.`;
  const text = fs.readFileSync(file, 'utf8');
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const m = /^(?:export\s+)?([^=\s]+)\s*=/.exec(t);
    if (!m) return `--env-file "${file}" line ${i + 1} is not KEY=value. Fix that line (the values stay unprinted).`;
    if (!ENV_NAME.test(m[1])) return `--env-file "${file}" line ${i + 1}: "${m[1]}" is not a variable name (letters, digits, "_", not starting with a digit). Rename it.`;
  }
  if (buildDir) {
    const rel = path.relative(path.resolve(buildDir), path.resolve(file)).split(path.sep).join('/');
    if (!rel.startsWith('..') && !path.isAbsolute(rel) && contextFiles(buildDir).includes(rel)) {
      return `--env-file "${file}" lies in the build context ${buildDir} and .dockerignore does not leave it out: docker build would copy its secrets into the image. Add "${rel}" to ${path.join(buildDir, '.dockerignore')}, or keep the file outside the folder.`;
    }
  }
  return undefined;
}

/**
 * Parses `task app` arguments into what to do, or throws a UserError naming the flag, the bad value
 * and the fix. Reads only the given folder and files: no tool is called.
 */
export function parseAppArgs(argv: string[]): AppCommand {
  const flags: Record<string, string> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    // "--" ends node's own options: Node 20 reads --env-file even after the script name and dies on
    // a missing file before this script runs, so the Taskfile passes the arguments after "--".
    if (a === '--verbose' || a === '--') continue;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (flag.startsWith('-')) {
      if (!VALUE_FLAGS.includes(flag)) throw new UserError(`unknown option ${flag}. Options: ${VALUE_FLAGS.join(', ')} (each with a value), --verbose.`);
      const value = inline ?? argv[++i];
      if (value === undefined || (inline === undefined && value.startsWith('--'))) throw new UserError(`${flag} needs a value, such as ${flag} ${flag === '--remove' || flag === '--name' ? 'my-app' : '…'}.`);
      if (flag in flags) throw new UserError(`${flag} is given twice (${flags[flag]}, ${value}); give it once.`);
      flags[flag] = value;
    } else positional.push(a);
  }
  const usage = 'Usage: task app -- <folder with a Dockerfile> [--name <n>] …, task app -- --image <ref> --name <n> …, or task app -- --remove <name>.';
  if ('--remove' in flags) {
    const other = [...positional, ...Object.keys(flags).filter((f) => f !== '--remove')];
    if (other.length) throw new UserError(`--remove takes only a name; drop ${other.join(', ')}. ${usage}`);
    const name = flags['--remove'];
    if (!DNS_LABEL.test(name)) throw new UserError(`--remove "${name}" is not an app name (a DNS label such as my-app).`);
    return { remove: name };
  }
  if (positional.length > 1) throw new UserError(`one folder at a time; got ${positional.join(', ')}. ${usage}`);
  const dir = positional[0];
  const image = flags['--image'];
  if (dir && image) throw new UserError(`give a folder or --image, not both (${dir}, --image ${image}). ${usage}`);
  if (!dir && !image) throw new UserError(`no app given. ${usage}`);
  if (dir) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`folder "${dir}" does not exist. Pass the folder of your app (the one with its Dockerfile).`);
    if (!fs.existsSync(path.join(dir, 'Dockerfile'))) throw new UserError(`folder "${dir}" has no Dockerfile. Add one (with a numeric non-root USER, such as USER 1000:1000), or pass a built image with --image <ref> --name <n>.`);
  }
  if (image !== undefined && !/^[a-z0-9][\w.:/-]*(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$/.test(image)) {
    throw new UserError(`--image "${image}" is not an image reference, such as localhost:5001/my-app:1.0 or ghcr.io/me/app:1.0.`);
  }
  if (image !== undefined && !flags['--name']) throw new UserError(`--image needs --name <n> (the name of the namespace, Deployment and host).`);
  const name = flags['--name'] ?? path.basename(path.resolve(dir!));
  const problem = nameProblem(name);
  if (problem) throw new UserError(flags['--name'] ? problem : `${problem.replace('--name', 'the folder name')} (the name comes from the folder unless --name is given)`);
  const problems: string[] = [];
  for (const f of ['--port', '--metrics-port']) if (f in flags) problems.push(portProblem(f, flags[f]) ?? '');
  if ('--replicas' in flags && !/^([1-9]|10)$/.test(flags['--replicas'])) problems.push(`--replicas "${flags['--replicas']}" is not allowed: expected a whole number from 1 to 10.`);
  const metricsPath = flags['--metrics-path'];
  if (metricsPath !== undefined && !/^\/[\w./-]*$/.test(metricsPath)) problems.push(`--metrics-path "${metricsPath}" is not allowed: expected a path such as /metrics.`);
  const resources: Resources = {
    cpuRequest: flags['--cpu-request'] ?? DEFAULT_RESOURCES.cpuRequest,
    cpuLimit: flags['--cpu-limit'] ?? DEFAULT_RESOURCES.cpuLimit,
    memoryRequest: flags['--memory-request'] ?? DEFAULT_RESOURCES.memoryRequest,
    memoryLimit: flags['--memory-limit'] ?? DEFAULT_RESOURCES.memoryLimit,
  };
  const quantities = [['--cpu-request', resources.cpuRequest, 'cpu'], ['--cpu-limit', resources.cpuLimit, 'cpu'], ['--memory-request', resources.memoryRequest, 'memory'], ['--memory-limit', resources.memoryLimit, 'memory']] as const;
  const qProblems = quantities.map(([f, v, kind]) => quantityProblem(f, v, kind));
  problems.push(...qProblems.map((p) => p ?? ''));
  if (!qProblems.some(Boolean)) {
    for (const kind of ['cpu', 'memory'] as const) {
      const [req, lim] = kind === 'cpu' ? [resources.cpuRequest, resources.cpuLimit] : [resources.memoryRequest, resources.memoryLimit];
      if (parseQuantity(req) > parseQuantity(lim)) problems.push(`--${kind}-request ${req} is more than --${kind}-limit ${lim}: Kubernetes refuses that. Raise the limit or lower the request.`);
    }
  }
  if (flags['--env-file'] !== undefined) problems.push(envFileProblem(flags['--env-file'], dir) ?? '');
  const found = problems.filter(Boolean);
  if (found.length) throw new UserError(found.join('\n'));
  const port = flags['--port'] ? Number(flags['--port']) : DEFAULT_PORT;
  const metricsPort = flags['--metrics-port'] ? Number(flags['--metrics-port']) : metricsPath !== undefined ? port : undefined;
  return {
    deploy: {
      name,
      namespace: name,
      hostName: name,
      dir: dir ? path.resolve(dir) : undefined,
      image,
      port,
      metricsPort,
      metricsPath: metricsPort !== undefined ? (metricsPath ?? DEFAULT_METRICS_PATH) : undefined,
      envFile: flags['--env-file'] ? path.resolve(flags['--env-file']) : undefined,
      replicas: flags['--replicas'] ? Number(flags['--replicas']) : 1,
      resources,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/** What the sample app adds to the generic app (scripts/sample-app.ts). */
export interface AppExtras {
  /** Plain environment variables of the container. */
  env?: Record<string, string>;
  /** HTTP probe paths; without them, readiness is a TCP check of the port. */
  probes?: { readiness: string; liveness: string };
  readOnlyRootFilesystem?: boolean;
}

const readTemplate = (file: string, vars: Record<string, string | number | boolean>) =>
  YAML.parseAllDocuments(renderTemplate(fs.readFileSync(path.join(TEMPLATE_DIR, file), 'utf8'), vars))
    .map((d) => d.toJSON())
    .filter(Boolean) as Record<string, any>[];

const toYaml = (docs: Record<string, unknown>[]) => docs.map((d) => YAML.stringify(d)).join('---\n');

/** The Secret of the env file's variables, or undefined without one. */
export function envSecret(spec: AppSpec): Record<string, unknown> | undefined {
  if (!spec.envFile) return undefined;
  const values = dotenv.parse(fs.readFileSync(spec.envFile));
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: `${spec.name}-env`, namespace: spec.namespace, labels: { 'app.kubernetes.io/part-of': 'talos-local-observability' } },
    data: Object.fromEntries(Object.entries(values).sort().map(([k, v]) => [k, Buffer.from(v, 'utf8').toString('base64')])),
  };
}

/** With INGRESS_CLASS: the class, and our certificate for the app's Secret platform-tls. */
export interface AppIngress {
  className: string;
  cert: { crt: string; key: string };
}

/** The app's route: its IngressRoute (Traefik), or with INGRESS_CLASS the same route as an Ingress of that class and its TLS Secret. */
const routeObjects = (ingressRoute: Record<string, any>[], ingress?: AppIngress) =>
  ingress
    ? (YAML.parseAllDocuments(ingressManifests(ingress.className, routeSpecsOf(ingressRoute), ingress.cert)).map((d) => d.toJSON()) as Record<string, any>[])
    : ingressRoute;

/** AppIngress of the config: none without INGRESS_CLASS; the certificate the traefik phase made, which must exist. */
function appIngress(cfg: Config): AppIngress | undefined {
  if (!cfg.INGRESS_CLASS) return undefined;
  const [crt, key] = [statePath(cfg, 'certs', 'tls.crt'), statePath(cfg, 'certs', 'tls.key')];
  if (!fs.existsSync(crt) || !fs.existsSync(key)) {
    throw new UserError(`INGRESS_CLASS=${cfg.INGRESS_CLASS}: ${crt} does not exist yet, and the app's Ingress serves it. Run \`task traefik\` first (it makes the certificate).`);
  }
  return { className: cfg.INGRESS_CLASS, cert: { crt: fs.readFileSync(crt, 'utf8'), key: fs.readFileSync(key, 'utf8') } };
}

/**
 * The app's manifests as YAML text: the namespace apart (applied first), then the app (Secret,
 * Deployment, Service), the route and the dashboard ConfigMap.
 */
export function appManifests(
  spec: AppSpec,
  image: string,
  domain: string,
  dashboard: Record<string, unknown>,
  extras: AppExtras = {},
  ingress?: AppIngress,
): { namespace: string; app: string } {
  const vars = {
    NAME: spec.name,
    NAMESPACE: spec.namespace,
    HOST: `${spec.hostName}.${domain}`,
    IMAGE: image,
    PORT: spec.port,
    REPLICAS: spec.replicas,
    CPU_REQUEST: spec.resources.cpuRequest,
    CPU_LIMIT: spec.resources.cpuLimit,
    MEMORY_REQUEST: spec.resources.memoryRequest,
    MEMORY_LIMIT: spec.resources.memoryLimit,
    READ_ONLY_ROOT: extras.readOnlyRootFilesystem ?? false,
    OTLP_ENDPOINT: otlpEndpoint('http'),
  };
  const [deployment, service] = readTemplate('app.yaml.tmpl', vars);
  const pod = deployment.spec.template;
  const container = pod.spec.containers[0];
  if (spec.metricsPort !== undefined) {
    pod.metadata.annotations = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(spec.metricsPort), 'prometheus.io/path': spec.metricsPath ?? DEFAULT_METRICS_PATH };
  }
  const secret = envSecret(spec);
  // The template's env (OpenTelemetry's) but what the env file sets, which env would override.
  const fromFile = Object.keys((secret?.data as Record<string, string> | undefined) ?? {});
  const env = Object.entries({ PORT: String(spec.port), ...extras.env }).map(([name, value]) => ({ name, value }));
  container.env = [...(container.env as { name: string }[]).filter((e) => !fromFile.includes(e.name)), ...env];
  if (secret) container.envFrom = [{ secretRef: { name: (secret.metadata as { name: string }).name } }];
  if (extras.probes) {
    container.readinessProbe = { httpGet: { path: extras.probes.readiness, port: 'http' }, periodSeconds: 5, failureThreshold: 2 };
    container.livenessProbe = { httpGet: { path: extras.probes.liveness, port: 'http' }, initialDelaySeconds: 5, periodSeconds: 10, failureThreshold: 3 };
  } else {
    container.readinessProbe = { tcpSocket: { port: 'http' }, periodSeconds: 5, failureThreshold: 3 };
  }
  const [configMap] = readTemplate('dashboard.yaml.tmpl', vars);
  configMap.data = { [`${spec.name}.json`]: `${JSON.stringify(dashboard, null, 2)}\n` };
  return {
    namespace: toYaml(readTemplate('namespace.yaml.tmpl', vars)),
    app: toYaml([...(secret ? [secret] : []), deployment, service, ...routeObjects(readTemplate('route.yaml.tmpl', vars), ingress), configMap]),
  };
}

// ---------------------------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------------------------

export function readRecord(cfg: Config, name: string): AppRecord | undefined {
  const file = appRecordPath(cfg, name);
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as AppRecord) : undefined;
}

// ---------------------------------------------------------------------------------------------
// The phase
// ---------------------------------------------------------------------------------------------

/** Prometheus through the API server's service proxy (no route, no port-forward needed). */
export const PROMETHEUS_PROXY = '/api/v1/namespaces/monitoring/services/prometheus-server:80/proxy';

/** The names of the app's series in Prometheus, or why they could not be read. */
export async function scrapedMetricNames(cfg: Config, spec: Pick<AppSpec, 'name' | 'namespace'>): Promise<{ names: string[] } | { unavailable: string }> {
  const match = encodeURIComponent(`{namespace="${spec.namespace}",job="${spec.name}"}`);
  try {
    const res = await kubectl(cfg, ['get', '--raw', `${PROMETHEUS_PROXY}/api/v1/label/__name__/values?match[]=${match}`]);
    const body = JSON.parse(res.stdout) as { status?: string; data?: string[] };
    if (body.status !== 'success' || !Array.isArray(body.data)) return { unavailable: `Prometheus answered ${res.stdout.slice(0, 200)}` };
    return { names: body.data };
  } catch (err) {
    return { unavailable: failureReason(err).split('\n')[0] };
  }
}

/** The metric names a dashboard assumes when Prometheus cannot say: the usual HTTP and process metrics when the app serves metrics. */
export const declaredMetricNames = (servesMetrics: boolean) =>
  servesMetrics
    ? [HTTP_CONVENTIONS[0].requests, ...['_bucket', '_sum', '_count'].map((s) => `${HTTP_CONVENTIONS[0].duration}${s}`), 'process_cpu_seconds_total', 'process_resident_memory_bytes']
    : [];

/**
 * The metric names a dashboard was made from at the last deploy of the same image and metrics
 * endpoint (the record's metricNames), or undefined: another image may serve other metrics, and a
 * dashboard made from the assumed names asks Prometheus again.
 */
export function recordedMetricNames(record: AppRecord | undefined, spec: AppSpec, image: string): string[] | undefined {
  if (!record?.metricNames?.length || spec.metricsPort === undefined) return undefined;
  const same = record.image === image && record.namespace === spec.namespace && record.metricsPort === spec.metricsPort && record.metricsPath === (spec.metricsPath ?? null);
  return same ? record.metricNames : undefined;
}

/**
 * The dashboard for an app and the names it was made from: the names recorded for this image
 * (recordedMetricNames), else those Prometheus has, else from the declared kind (and a note why).
 */
async function dashboardFor(cfg: Config, spec: AppSpec, image: string): Promise<{ dashboard: Record<string, unknown>; metricNames?: string[] }> {
  const recorded = recordedMetricNames(readRecord(cfg, spec.name), spec, image);
  const found = recorded ? { names: recorded } : spec.metricsPort === undefined ? { names: [] } : await scrapedMetricNames(cfg, spec);
  if ('names' in found && found.names.length > 0) {
    return { dashboard: appDashboard({ name: spec.name, namespace: spec.namespace, metricNames: found.names }), metricNames: found.names };
  }
  if (spec.metricsPort === undefined) {
    note(`No --metrics-port: the dashboard shows pods and logs only. If the app serves Prometheus metrics, run again with --metrics-port <port> [--metrics-path /metrics]; Alloy then scrapes it.`);
  } else {
    note(
      `Dashboard: ${'unavailable' in found ? `Prometheus could not be asked (${found.unavailable})` : `Prometheus has no series of job ${spec.name} yet`}, so it assumes the usual HTTP metrics (${HTTP_CONVENTIONS[0].requests}, ${HTTP_CONVENTIONS[0].duration}); run \`task app\` again after the first scrape to match what the app exposes.`,
    );
  }
  return { dashboard: appDashboard({ name: spec.name, namespace: spec.namespace, metricNames: declaredMetricNames(spec.metricsPort !== undefined) }) };
}

/** What pods refused or crashing because of Pod Security / a root user need, or undefined. */
export function rootUserHint(diagnostics: string): string | undefined {
  if (!/runAsNonRoot|non-numeric user|will run as root|violates PodSecurity/i.test(diagnostics)) return undefined;
  return (
    'The image runs as root (or as a user name the kubelet cannot check), which Pod Security "restricted" refuses. ' +
    'Add a numeric non-root user to the Dockerfile, such as `USER 1000:1000` (after the steps that need root), make the files it writes belong to that user, and run `task app` again.'
  );
}

/** Waits for a Deployment's rollout; on a timeout, the error carries the unready pods with their events, logs and a fix. */
export async function waitRollout(cfg: Config, namespace: string, name: string): Promise<void> {
  try {
    await kubectl(cfg, ['rollout', 'status', `deployment/${name}`, '--namespace', namespace, `--timeout=${ROLLOUT_TIMEOUT}`]);
  } catch (err) {
    const diagnostics = await podDiagnostics(cfg, [namespace]);
    const events = await kubectl(cfg, ['get', 'events', '--namespace', namespace, '--output', 'json']).then((r) => r.stdout, () => '');
    throw new UserError(
      `Deployment ${name} did not become ready within ${ROLLOUT_TIMEOUT}.\n${(err as Error).message}\n${diagnostics}\n` +
        (rootUserHint(`${diagnostics}\n${events}`) ??
          'ErrImagePull/ImagePullBackOff means the nodes cannot pull from the local registry (it is set up by task talos), from IMAGE_REGISTRY (a private one needs the nodes to have pull access: the platform sets no imagePullSecret) or from where --image points; CrashLoopBackOff: read the log lines above.'),
    );
  }
}

/** Objects deployed with an app's own (in the same kubectl diff) and the Deployments among them to wait for. */
export interface AppCompanion {
  title: string;
  yaml: string;
  deployments: string[];
}

/**
 * Deploys an app: image (unless given), namespace, app objects, route and dashboard (one kubectl
 * diff for all), rollout, and the record. `extras` and `companion` are the sample app's additions
 * (its settings, its traffic generator); `buildHint` what to say when the image does not build.
 */
export async function deployApp(
  cfg: Config,
  spec: AppSpec,
  opts: { extras?: AppExtras; buildHint?: string; companion?: (image: string) => AppCompanion } = {},
): Promise<AppRecord> {
  await check('Cluster answers', () => requireCluster(cfg));
  let image = spec.image ?? '';
  if (spec.dir) {
    const dir = spec.dir;
    await step(imageStepTitle(cfg, spec.name), async () => {
      const r = await ensureImage(cfg, { repository: spec.name, dir, buildHint: opts.buildHint ?? `The image of ${dir} did not build; the output above says why.` });
      image = r.ref;
      return r.detail;
    });
  }
  const { dashboard, metricNames } = await dashboardFor(cfg, spec, image);
  const manifests = appManifests(spec, image, cfg.DOMAIN, dashboard, opts.extras, appIngress(cfg));
  const companion = opts.companion?.(image);
  await step(
    `Namespace ${spec.namespace} (Pod Security restricted), Deployment, Service, route ${spec.hostName}.${cfg.DOMAIN} and dashboard app-${spec.name}${companion ? `, ${companion.title}` : ''}`,
    async () =>
      (await applyManifests(cfg, [manifests.namespace, manifests.app, ...(companion ? [companion.yaml] : [])].join('---\n'))) === 'unchanged'
        ? 'unchanged'
        : `applied (image ${image}${spec.envFile ? `, env from ${path.basename(spec.envFile)} as Secret ${spec.name}-env` : ''})`,
  );
  // The record before the rollout: a deploy that does not become ready can still be removed.
  const record: AppRecord = {
    name: spec.name,
    namespace: spec.namespace,
    host: `${spec.hostName}.${cfg.DOMAIN}`,
    image,
    metricsPort: spec.metricsPort ?? null,
    metricsPath: spec.metricsPath ?? null,
    dashboard: `app-${spec.name}`,
    ...(metricNames ? { metricNames } : {}),
  };
  await step(`Record ${path.relative(cfg.stateDir, appRecordPath(cfg, spec.name))}`, async () => {
    claimStateDir(cfg);
    return writeFileAtomic(appRecordPath(cfg, spec.name), `${JSON.stringify(record, null, 2)}\n`) ? 'written' : 'unchanged';
  });
  await step(`Certificate names ${record.host}`, () => ensureCertificateCovers(cfg, record.host));
  const waitFor = [spec.name, ...(companion?.deployments ?? [])];
  await check('Rollout', async () => {
    // One read of the Deployments; a wait only for one not rolled out (a changed one always is not).
    const pending = await pendingRollouts(cfg, spec.namespace, waitFor.map((name) => ({ kind: 'deployment', name })));
    for (const d of waitFor) if (pending.has(`deployment/${d}`)) await waitRollout(cfg, spec.namespace, d);
    return `${waitFor.join(', ')} ready${pending.size === 0 ? ' (rolled out already)' : ''}`;
  });
  return record;
}

/**
 * Makes the server certificate name the app's host (browsers and curl refuse *.localhost, so the
 * wildcard is not enough under DOMAIN=localhost): when it does not, runs the traefik phase, which
 * re-issues it with the hosts of every record and updates the Secret Traefik serves.
 */
async function ensureCertificateCovers(cfg: Config, host: string): Promise<string> {
  const crt = statePath(cfg, 'certs', 'tls.crt');
  if (!fs.existsSync(crt)) return `unchanged (no certificate yet: \`task traefik\` makes one that names ${host})`;
  const names = (new X509Certificate(fs.readFileSync(crt)).subjectAltName ?? '').split(', ');
  if (names.includes(`DNS:${host}`)) return `already names ${host}`;
  await run(process.execPath, ['--import', 'tsx', path.join(PROJECT_DIR, 'scripts', 'traefik.ts')], {
    hint: `The traefik phase could not re-issue the certificate for ${host}; run \`task traefik\` to see why.`,
  });
  return `re-issued with ${host} (ran the traefik phase)`;
}

/** Removes what the record of `name` lists: the namespace (only when its labels say it is that app's), then the record. */
export async function removeApp(cfg: Config, name: string): Promise<void> {
  const record = readRecord(cfg, name);
  if (!record) {
    throw new UserError(`no app "${name}": ${appRecordPath(cfg, name)} does not exist, so nothing is removed. The apps \`task app\` deployed are the files in ${statePath(cfg, 'apps')}.`);
  }
  await check('Cluster answers', () => requireCluster(cfg));
  await step(`Namespace ${record.namespace} (app, route, dashboard)`, async () => {
    const got = await kubectl(cfg, ['get', 'namespace', record.namespace, '--output', 'json'], { okCodes: [1] });
    if (got.code !== 0) return 'already absent';
    const labels = (JSON.parse(got.stdout) as { metadata: { labels?: Record<string, string> } }).metadata.labels ?? {};
    if (labels['talos-local-platform/app'] !== record.name || labels['app.kubernetes.io/managed-by'] !== 'talos-local-platform') {
      throw new UserError(
        `namespace ${record.namespace} is not labelled as app ${record.name}'s (talos-local-platform/app=${labels['talos-local-platform/app'] ?? '(none)'}), so it is left alone. ` +
          `Delete it yourself if it is yours, then run this again to drop the record.`,
      );
    }
    await kubectl(cfg, ['delete', 'namespace', record.namespace, '--wait=true', '--timeout=120s']);
    return `deleted (with Deployment, Service, route https://${record.host} and dashboard ${record.dashboard})`;
  });
  await step(`Record ${path.relative(cfg.stateDir, appRecordPath(cfg, name))}`, async () => {
    fs.rmSync(appRecordPath(cfg, name));
    return 'removed';
  });
  if (fs.existsSync(statePath(cfg, 'hosts', 'hosts.block')) && fs.readFileSync(statePath(cfg, 'hosts', 'hosts.block'), 'utf8').includes(` ${record.host}`)) {
    note(`${record.host} is still in the hosts block: \`task hosts\` rewrites it without the name.`);
  }
}

async function app(cfg: Config): Promise<void> {
  const command = parseAppArgs(process.argv.slice(2));
  if ('remove' in command) return removeApp(cfg, command.remove);
  const spec = command.deploy;
  const record = await deployApp(cfg, spec);
  note(`${spec.name}: ${ingressUrl(cfg, spec.hostName, '/')} (in the cluster http://${spec.name}.${spec.namespace}.svc)`);
  note(`Dashboard: ${ingressUrl(cfg, 'grafana', `/d/${record.dashboard}`)} (folder Apps; Grafana picks it up within a minute)`);
  note(`Logs: {namespace="${spec.namespace}"} in Grafana Explore (Loki). Remove it all: task app -- --remove ${spec.name}`);
  const hostsBlock = statePath(cfg, 'hosts', 'hosts.block');
  if (fs.existsSync(hostsBlock) && !fs.readFileSync(hostsBlock, 'utf8').includes(` ${record.host}`)) {
    note(`The hosts block lacks ${record.host}: run \`task hosts\` to add it.`);
  }
}

// ---------------------------------------------------------------------------------------------
// The dashboard generator
// ---------------------------------------------------------------------------------------------

/**
 * The HTTP metric conventions the generator knows, first match wins. `requests` is the counter of
 * requests (a histogram's _count where the client has no counter), `duration` the histogram family
 * (queries use its _bucket, _sum and _count series), `statusLabels` the label that carries the HTTP
 * status in that client (5xx are the errors). Go's promhttp_metric_handler_requests_total is not in
 * the table on purpose: it counts only the scrapes of /metrics, not the app's requests.
 */
export const HTTP_CONVENTIONS = [
  {
    client: 'prom-client (Node.js), Go promhttp.InstrumentHandler*, prometheus-fastapi-instrumentator (Python)',
    requests: 'http_requests_total',
    duration: 'http_request_duration_seconds',
    statusLabels: ['status', 'code', 'status_code'],
  },
  { client: 'express-prom-bundle (Node.js)', requests: 'http_request_duration_seconds_count', duration: 'http_request_duration_seconds', statusLabels: ['status_code'] },
  { client: 'Micrometer (Java, Spring Boot)', requests: 'http_server_requests_seconds_count', duration: 'http_server_requests_seconds', statusLabels: ['status'] },
  { client: 'prometheus_flask_exporter (Python)', requests: 'flask_http_request_total', duration: 'flask_http_request_duration_seconds', statusLabels: ['status'] },
  { client: 'starlette_exporter (Python)', requests: 'starlette_requests_total', duration: 'starlette_request_duration_seconds', statusLabels: ['status_code'] },
  {
    client: 'OpenTelemetry HTTP semantic conventions',
    requests: 'http_server_request_duration_seconds_count',
    duration: 'http_server_request_duration_seconds',
    statusLabels: ['http_response_status_code'],
  },
] as const;
export type HttpConvention = (typeof HTTP_CONVENTIONS)[number];

/** Process metrics of the Prometheus clients (Go, Node.js, Python, Java simpleclient): one panel each when present. */
export const PROCESS_METRICS = [
  { metric: 'process_cpu_seconds_total', title: 'Process CPU (cores)', unit: 'short', rate: true },
  { metric: 'process_resident_memory_bytes', title: 'Process resident memory', unit: 'bytes', rate: false },
  { metric: 'process_open_fds', title: 'Open file descriptors', unit: 'short', rate: false },
  { metric: 'go_goroutines', title: 'Goroutines', unit: 'short', rate: false },
  { metric: 'nodejs_eventloop_lag_p99_seconds', title: 'Event loop lag p99', unit: 's', rate: false },
  { metric: 'nodejs_heap_size_used_bytes', title: 'Node.js heap used', unit: 'bytes', rate: false },
  { metric: 'jvm_memory_used_bytes', title: 'JVM memory used', unit: 'bytes', rate: false },
] as const;

/** The first HTTP convention whose request series is among the names, or undefined. */
export const httpConvention = (metricNames: readonly string[]): HttpConvention | undefined =>
  HTTP_CONVENTIONS.find((c) => metricNames.includes(c.requests));

const PROM = { type: 'prometheus', uid: '${datasource}' };
const LOKI = { type: 'loki', uid: '${loki_datasource}' };

interface PanelSpec {
  title: string;
  description?: string;
  unit: string;
  /** [expr, legend] pairs. */
  queries: [string, string][];
  type?: 'timeseries' | 'stat';
}

function promPanel(spec: PanelSpec, id: number, gridPos: Record<string, number>): Record<string, unknown> {
  const targets = spec.queries.map(([expr, legend], i) => ({
    refId: String.fromCharCode(65 + i),
    datasource: PROM,
    editorMode: 'code',
    expr,
    legendFormat: legend,
    range: true,
    instant: false,
  }));
  const type = spec.type ?? 'timeseries';
  return {
    id,
    type,
    title: spec.title,
    ...(spec.description ? { description: spec.description } : {}),
    datasource: PROM,
    targets,
    fieldConfig: {
      defaults: {
        unit: spec.unit,
        ...(type === 'timeseries'
          ? { min: 0, custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false } }
          : { thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }] } }),
      },
      overrides: [],
    },
    options:
      type === 'timeseries'
        ? { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } }
        : { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', textMode: 'auto' },
    gridPos,
  };
}

/** The RED panels for one convention; selector is the app's label matchers ("namespace=…, job=…"). */
export function redPanels(c: HttpConvention, metricNames: readonly string[], selector: string): PanelSpec[] {
  const rate = (series: string, extra = '') => `sum(rate(${series}{${selector}${extra}}[$__rate_interval]))`;
  // Clients name the status label differently: the 5xx rate over each candidate label, whichever exists.
  const errors = c.statusLabels.map((l) => rate(c.requests, `, ${l}=~"5.."`)).join(' or ');
  const panels: PanelSpec[] = [
    { title: 'Requests/s', unit: 'reqps', queries: [[rate(c.requests), 'requests/s']], description: `${c.requests} (${c.client})` },
    {
      title: 'Error ratio (5xx)',
      unit: 'percentunit',
      description: `Share of requests answered with a 5xx (${c.statusLabels.join(' or ')} label of ${c.requests}); 0 when there were none.`,
      queries: [[`(${errors} or vector(0)) / ${rate(c.requests)}`, '5xx share']],
    },
  ];
  const has = (suffix: string) => metricNames.includes(`${c.duration}${suffix}`);
  if (has('_bucket')) {
    const q = (p: number) => `histogram_quantile(${p}, sum by (le) (rate(${c.duration}_bucket{${selector}}[$__rate_interval])))`;
    panels.push({ title: 'Duration p50 / p95 / p99', unit: 's', queries: [[q(0.5), 'p50'], [q(0.95), 'p95'], [q(0.99), 'p99']] });
  } else if (has('_sum') && has('_count')) {
    panels.push({
      title: 'Mean duration',
      description: `${c.duration} has no buckets here (histograms off in the client), so only the mean: _sum / _count.`,
      unit: 's',
      queries: [[`${rate(`${c.duration}_sum`)} / ${rate(`${c.duration}_count`)}`, 'mean']],
    });
  }
  return panels;
}

/** Panels of the process metrics present in metricNames. */
export function processPanels(metricNames: readonly string[], selector: string): PanelSpec[] {
  return PROCESS_METRICS.filter((m) => metricNames.includes(m.metric)).map((m) => ({
    title: m.title,
    unit: m.unit,
    queries: [[m.rate ? `sum by (pod) (rate(${m.metric}{${selector}}[$__rate_interval]))` : `sum by (pod) (${m.metric}{${selector}})`, '{{pod}}']],
  }));
}

/** Pods' CPU, memory and restarts from cAdvisor and kube-state-metrics (always there, scraped or not). */
export function podPanels(namespace: string): PanelSpec[] {
  const ns = `namespace="${namespace}"`;
  return [
    { title: 'Pod CPU (cores)', unit: 'short', queries: [[`sum by (pod) (rate(container_cpu_usage_seconds_total{${ns}, container!=""}[$__rate_interval]))`, '{{pod}}']] },
    { title: 'Pod memory (working set)', unit: 'bytes', queries: [[`sum by (pod) (container_memory_working_set_bytes{${ns}, container!=""})`, '{{pod}}']] },
    { title: 'Container restarts', unit: 'short', queries: [[`sum by (pod) (kube_pod_container_status_restarts_total{${ns}})`, '{{pod}}']] },
  ];
}

/**
 * A Grafana dashboard for one app (uid app-<name>, tags app and <name>; provisioned into the folder
 * "Apps"): RED panels when metricNames hold an HTTP convention of HTTP_CONVENTIONS, the process
 * metrics present, the pods' CPU, memory and restarts, and the logs of the namespace. Metric queries
 * match namespace and job (Alloy's annotation autodiscovery names the job after the pod label
 * app.kubernetes.io/name, which is the app's name); logs match the namespace stream label.
 */
export function appDashboard({ name, namespace, metricNames }: { name: string; namespace: string; metricNames: string[] }): Record<string, unknown> {
  const selector = `namespace="${namespace}", job="${name}"`;
  const convention = httpConvention(metricNames);
  const rows: [string, PanelSpec[]][] = [
    ['Requests (RED)', convention ? redPanels(convention, metricNames, selector) : []],
    ['Process', processPanels(metricNames, selector)],
    ['Pods', podPanels(namespace)],
  ];
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const [title, specs] of rows) {
    if (specs.length === 0) continue;
    panels.push({ id: id++, type: 'row', title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y: y++ }, panels: [] });
    const w = specs.length >= 3 ? 8 : 12;
    specs.forEach((spec, i) => {
      panels.push(promPanel(spec, id++, { h: 8, w, x: (i % (24 / w)) * w, y: y + Math.floor(i / (24 / w)) * 8 }));
    });
    y += Math.ceil(specs.length / (24 / w)) * 8;
  }
  panels.push({ id: id++, type: 'row', title: 'Logs', collapsed: false, gridPos: { h: 1, w: 24, x: 0, y: y++ }, panels: [] });
  panels.push({
    id: id++,
    type: 'logs',
    title: `Logs of namespace ${namespace}`,
    datasource: LOKI,
    targets: [{ refId: 'A', datasource: LOKI, editorMode: 'code', expr: `{namespace="${namespace}"}`, queryType: 'range' }],
    options: { showTime: true, showLabels: false, showCommonLabels: false, wrapLogMessage: true, prettifyLogMessage: false, enableLogDetails: true, dedupStrategy: 'none', sortOrder: 'Descending' },
    gridPos: { h: 12, w: 24, x: 0, y },
  });
  const datasourceVariable = (variable: string, label: string, type: string) => ({
    name: variable, label, type: 'datasource', query: type, current: {}, hide: 0, includeAll: false, multi: false, options: [], refresh: 1, regex: '', skipUrlSync: false,
  });
  return {
    uid: `app-${name}`,
    title: `App: ${name}`,
    description: convention
      ? `${name} in namespace ${namespace}: RED from ${convention.requests} (${convention.client}), pods and logs. Generated by task app.`
      : `${name} in namespace ${namespace}: no HTTP request metrics known to the generator${metricNames.length ? '' : ' (none scraped)'}, so process metrics, pods and logs. Generated by task app.`,
    tags: ['app', name],
    editable: false,
    graphTooltip: 1,
    schemaVersion: 42,
    version: 1,
    time: { from: 'now-1h', to: 'now' },
    timezone: 'browser',
    refresh: '30s',
    annotations: { list: [] },
    links: [
      { title: 'Apps', type: 'dashboards', tags: ['app'], asDropdown: true, includeVars: false, keepTime: true, icon: 'external link', targetBlank: false, tooltip: '', url: '' },
      { title: 'Platform', type: 'dashboards', tags: ['platform'], asDropdown: true, includeVars: false, keepTime: true, icon: 'external link', targetBlank: false, tooltip: '', url: '' },
    ],
    templating: { list: [datasourceVariable('datasource', 'Prometheus', 'prometheus'), datasourceVariable('loki_datasource', 'Loki', 'loki')] },
    panels,
  };
}

if (isMain(import.meta.url)) await runPhase('app', app);
