// Phase "storage" (`task storage`): installs local-path-provisioner (PINNED.localPathProvisioner) as
// the cluster's default StorageClass `local-path`, and waits until it is ready. With CLUSTER=existing
// and a default StorageClass already in the cluster (kind's standard, k3d's local-path, a cloud
// disk class), it uses that one and installs nothing. With CLUSTER=existing what it chose is
// recorded in STATE_DIR/installed.log (lib recordInstalled): the class of the platform's volumes
// (observability, validate, status), and whether local-path and its cluster-scoped objects are ours
// (destroy). Nothing is recorded for CLUSTER=talos: local-path is the class, and the cluster is ours.
//
//   - The upstream release manifest is taken by URL at the pinned tag (kustomize resource); our own
//     patches live in manifests/storage/: PSA "privileged" labels on local-path-storage (the helper
//     pods mount hostPath volumes; Talos enforces "baseline"), the default-class annotation, the
//     volume path /var/local-path-provisioner (the talos phase binds it into the kubelet), and the
//     helper pods' image pinned to PINNED.busyboxImage (upstream's template names busybox untagged).
//   - Idempotent: `kubectl kustomize` renders (kept in STATE_DIR/storage/render.json while the
//     kustomization and the kubectl binary stay the same), `kubectl diff` decides, `kubectl apply`
//     only when something differs; one read of the StorageClasses and the provisioner's Deployment,
//     and `rollout status` only when that read shows the rollout not complete.
//   - `--smoke` (also run by `task validate`) installs nothing: it creates a claim on the default
//     StorageClass and a pod that writes to it, waits for Bound and for the pod to succeed, and
//     always removes both.
//
// .env keys: CLUSTER (existing: a default StorageClass of the cluster is used), KUBECONFIG and
//   KUBE_CONTEXT (CLUSTER=existing), CLUSTER_NAME, STATE_DIR (kubeconfig, the rendered
//   kustomization, installed.log), nothing else.
// Tools: kubectl (get storageclasses, kustomize, diff, apply, rollout status, wait, delete).
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import YAML from 'yaml';
import {
  PINNED,
  PROJECT_DIR,
  UserError,
  applyManifests,
  check,
  installedRecord,
  recordInstalled,
  volumeClass,
  isMain,
  kubectl,
  note,
  renderTemplate,
  requireCluster,
  rolloutPending,
  runPhase,
  toolHint,
  statePath,
  step,
  toolBinaryKey,
  warn,
  writeFileAtomic,
  type Config,
  type WorkloadJson,
} from './lib.ts';

export const STORAGE_NAMESPACE = 'local-path-storage';
export const STORAGE_CLASS = 'local-path';
export const PROVISIONER_DEPLOYMENT = 'local-path-provisioner';
export const VOLUME_PATH = '/var/local-path-provisioner';
const MANIFEST_DIR = path.join(PROJECT_DIR, 'manifests', 'storage');
const DEFAULT_CLASS_ANNOTATION = 'storageclass.kubernetes.io/is-default-class';

/** Smoke test objects: fixed names, so a run that was interrupted is cleaned up by the next one. */
export const SMOKE = { name: 'storage-smoke', namespace: 'default' } as const;

interface KObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  [k: string]: unknown;
}

/** Copies manifests/storage/ (without the smoke test) into the state dir with the pinned versions filled in. */
export function writeKustomization(cfg: Config): string {
  const dir = statePath(cfg, 'storage', 'kustomize');
  for (const file of fs.readdirSync(MANIFEST_DIR)) {
    if (!file.endsWith('.yaml') || file === 'smoke.yaml') continue;
    const text = fs.readFileSync(path.join(MANIFEST_DIR, file), 'utf8');
    writeFileAtomic(path.join(dir, file), renderTemplate(text, { LOCAL_PATH_PROVISIONER_VERSION: PINNED.localPathProvisioner, HELPER_IMAGE: PINNED.busyboxImage }));
  }
  return dir;
}

/**
 * `kubectl kustomize` of the kustomization, or the render kept from the last time
 * (STATE_DIR/storage/render.json) when its files and the kubectl binary are the same: the render is a
 * function of those alone (the upstream manifest is taken at the pinned tag), and it downloads.
 */
async function renderKustomization(cfg: Config, dir: string): Promise<{ text: string; kept: boolean }> {
  const hash = createHash('sha256');
  for (const file of fs.readdirSync(dir).sort()) hash.update(`${file}\0${fs.readFileSync(path.join(dir, file), 'utf8')}\0`);
  const kubectlBinary = toolBinaryKey('kubectl');
  const key = kubectlBinary && `${hash.digest('hex')}|${kubectlBinary}`;
  const keptFile = statePath(cfg, 'storage', 'render.json');
  const kept = key && fs.existsSync(keptFile) ? (JSON.parse(fs.readFileSync(keptFile, 'utf8')) as { key: string; text: string }) : undefined;
  if (kept && kept.key === key) return { text: kept.text, kept: true };
  const text = (await kubectl(cfg, ['kustomize', dir], {
    hint: 'kustomize downloads the upstream manifest from raw.githubusercontent.com: check the network (or proxy) and retry.',
  })).stdout;
  if (key) writeFileAtomic(keptFile, `${JSON.stringify({ key, text })}\n`);
  return { text, kept: false };
}

/** Whether an image reference names a fixed version: a digest, or a tag other than "latest". */
export function isPinnedImage(image: string): boolean {
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
  // The tag follows the last path segment (a registry's ":port" is not a tag).
  const tag = /:(\w[\w.-]{0,127})$/.exec(image.slice(image.lastIndexOf('/') + 1))?.[1];
  return tag !== undefined && tag !== 'latest';
}

interface ContainerJson {
  name?: string;
  image?: string;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

/**
 * Checks the rendered objects before they reach the cluster: the pinned provisioner and helper pod
 * images, every workload image pinned, every container with requests and a memory limit, our patches
 * applied (PSA labels, default class, Talos volume path). Returns the problems found.
 */
export function checkRendered(objects: KObject[]): string[] {
  const problems: string[] = [];
  const find = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata?.name === name);
  const ns = find('Namespace', STORAGE_NAMESPACE);
  for (const mode of ['enforce', 'audit', 'warn']) {
    if (ns?.metadata.labels?.[`pod-security.kubernetes.io/${mode}`] !== 'privileged') {
      problems.push(`namespace ${STORAGE_NAMESPACE} lacks pod-security.kubernetes.io/${mode}=privileged`);
    }
  }
  const sc = find('StorageClass', STORAGE_CLASS);
  if (sc?.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION] !== 'true') problems.push(`StorageClass ${STORAGE_CLASS} is not marked default`);
  const cm = find('ConfigMap', 'local-path-config') as (KObject & { data?: Record<string, string> }) | undefined;
  let paths: string[] = [];
  try {
    paths = (JSON.parse(cm?.data?.['config.json'] ?? '{}').nodePathMap ?? []).flatMap((m: { paths: string[] }) => m.paths);
  } catch {
    problems.push('local-path-config config.json is not JSON');
  }
  if (paths.length === 0 || paths.some((p) => p !== VOLUME_PATH)) problems.push(`volume paths are ${JSON.stringify(paths)}, want ["${VOLUME_PATH}"]`);
  const deploy = find('Deployment', PROVISIONER_DEPLOYMENT) as any;
  const image: string = deploy?.spec?.template?.spec?.containers?.[0]?.image ?? '';
  if (!image.endsWith(`:${PINNED.localPathProvisioner}`)) problems.push(`provisioner image is "${image}", want tag ${PINNED.localPathProvisioner}`);
  // The helper pods' template is a YAML text inside the ConfigMap; the provisioner starts pods from it.
  let helperContainers: ContainerJson[] = [];
  try {
    helperContainers = YAML.parse(cm?.data?.['helperPod.yaml'] ?? '')?.spec?.containers ?? [];
  } catch {
    problems.push('local-path-config helperPod.yaml is not YAML');
  }
  const helperImages = helperContainers.map((c) => c.image ?? '');
  if (helperImages.length === 0 || helperImages.some((i) => i !== PINNED.busyboxImage)) {
    problems.push(`helper pod images are ${JSON.stringify(helperImages)}, want ["${PINNED.busyboxImage}"] (PINNED.busyboxImage)`);
  }
  // Every image a rendered workload runs names a fixed version.
  const podSpecs = objects.map((o: any) => o.spec?.template?.spec ?? (o.kind === 'Pod' ? o.spec : undefined)).filter(Boolean);
  const containers: ContainerJson[] = podSpecs.flatMap((s: any) => [...(s.initContainers ?? []), ...(s.containers ?? [])]);
  for (const c of containers) {
    if (!isPinnedImage(c.image ?? '')) problems.push(`container ${c.name} runs "${c.image}", which is not pinned to a tag or digest`);
  }
  // Every container, the helper pods' too, has CPU and memory requests and a memory limit: a spike
  // kills the pod that caused it, not the kubelet of a small node.
  for (const c of [...containers, ...helperContainers]) {
    const r = c.resources;
    if (!r?.requests?.cpu || !r.requests.memory || !r.limits?.memory) {
      problems.push(`container ${c.name} has no CPU and memory requests and memory limit (resources: ${JSON.stringify(r ?? {})})`);
    }
  }
  return problems;
}

/** The names of StorageClasses marked default. */
export const defaultClasses = (classes: KObject[]) =>
  classes.filter((c) => c.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION] === 'true').map((c) => c.metadata.name);

/**
 * The cluster's own default StorageClass to use instead of installing local-path, or undefined:
 * with CLUSTER=existing, a class marked default that is not the local-path this platform installed
 * earlier. With several, the newest, as the API server picks for a claim without a class
 * (Kubernetes 1.26+, DefaultStorageClass admission).
 */
export function clusterDefaultClass(classes: (KObject & { metadata: { creationTimestamp?: string } })[], ourLocalPath: boolean): string | undefined {
  const candidates = classes.filter((c) => defaultClasses([c]).length && !(ourLocalPath && c.metadata.name === STORAGE_CLASS));
  candidates.sort((a, b) => (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? '') || a.metadata.name.localeCompare(b.metadata.name));
  return candidates[0]?.metadata.name;
}

/** The cluster-scoped objects of the rendered manifest besides its Namespace (which carries our label), as Kind/name. */
export const clusterScopedObjects = (objects: KObject[]) =>
  objects.filter((o) => ['StorageClass', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind)).map((o) => `${o.kind}/${o.metadata.name}`);

async function install(cfg: Config): Promise<void> {
  await check('Cluster reachable', async () => {
    return `up (${await requireCluster(cfg)})`;
  });

  if (cfg.CLUSTER === 'existing') {
    let theirs: string | undefined;
    await check('Default StorageClass of the cluster', async () => {
      const classes = JSON.parse((await kubectl(cfg, ['get', 'storageclasses', '--output', 'json'])).stdout).items as KObject[];
      theirs = clusterDefaultClass(classes, installedRecord(cfg).localPath === true);
      return theirs ? `${theirs}` : 'none: local-path-provisioner is installed';
    });
    if (theirs) {
      recordInstalled(cfg, { storageClass: theirs, localPath: false });
      note(`using default StorageClass ${theirs}: local-path-provisioner is left out, and the platform's volumes are claimed from ${theirs}`);
      return;
    }
  }

  let rendered = '';
  let clusterObjects: string[] = [];
  await check(`Render local-path-provisioner ${PINNED.localPathProvisioner} (upstream manifest + manifests/storage patches)`, async () => {
    const dir = writeKustomization(cfg);
    const render = await renderKustomization(cfg, dir);
    rendered = render.text;
    const objects = YAML.parseAllDocuments(rendered).map((d) => d.toJSON()).filter(Boolean) as KObject[];
    const problems = checkRendered(objects);
    if (problems.length) throw new Error(`the rendered manifest is not what this phase expects:\n  - ${problems.join('\n  - ')}`);
    clusterObjects = clusterScopedObjects(objects);
    return `${objects.length} objects, patches in place${render.kept ? ' (kept render: same kustomization, same kubectl)' : ''}`;
  });

  await step('Apply local-path-provisioner', async () => {
    // Recorded before the apply: an apply that fails half-way still leaves objects destroy must know.
    if (cfg.CLUSTER === 'existing') recordInstalled(cfg, { storageClass: STORAGE_CLASS, localPath: true, clusterObjects });
    const result = await applyManifests(cfg, rendered);
    return result === 'applied' ? 'applied the difference (kubectl diff found one)' : 'unchanged (matches the cluster)';
  });

  // One read for both checks below: the StorageClasses, and the provisioner's Deployment (after the apply).
  const read = JSON.parse((await kubectl(cfg, ['get', 'storageclasses,deployments', '--namespace', STORAGE_NAMESPACE, '-o', 'json'])).stdout).items as KObject[];
  await check(`StorageClass ${STORAGE_CLASS} is the only default`, async () => {
    const classes = read.filter((o) => o.kind === 'StorageClass');
    const defaults = defaultClasses(classes);
    if (!defaults.includes(STORAGE_CLASS)) throw new Error(`StorageClass ${STORAGE_CLASS} is not marked default in the cluster`);
    const others = defaults.filter((n) => n !== STORAGE_CLASS);
    if (others.length) {
      warn(`other default StorageClasses: ${others.join(', ')}. Claims without storageClassName may get those; ` +
        `unmark them: kubectl annotate storageclass ${others[0]} ${DEFAULT_CLASS_ANNOTATION}-`);
    }
    return `default${others.length ? ` (also default: ${others.join(', ')})` : ''}`;
  });

  await check('Provisioner ready', async () => {
    const deployment = read.find((o) => o.kind === 'Deployment' && o.metadata.name === PROVISIONER_DEPLOYMENT) as WorkloadJson | undefined;
    if (deployment && rolloutPending(deployment) === undefined) return 'ready (rolled out already)';
    await kubectl(cfg, ['rollout', 'status', `deployment/${PROVISIONER_DEPLOYMENT}`, '--namespace', STORAGE_NAMESPACE, '--timeout=180s'], {
      hint: `See: ${toolHint(cfg, 'kubectl')} -n ${STORAGE_NAMESPACE} describe deployment ${PROVISIONER_DEPLOYMENT}`,
    });
    return 'ready';
  });
  note(`Volumes are kept on the nodes under ${VOLUME_PATH}. Test one: npx tsx scripts/storage.ts --smoke`);
}

/** The smoke test's claim and pod, rendered from manifests/storage/smoke.yaml. */
export function smokeManifest(token: string): string {
  return renderTemplate(fs.readFileSync(path.join(MANIFEST_DIR, 'smoke.yaml'), 'utf8'), {
    NAME: SMOKE.name,
    NAMESPACE: SMOKE.namespace,
    IMAGE: PINNED.busyboxImage,
    TOKEN: token,
  });
}

async function smoke(cfg: Config): Promise<void> {
  await check('Cluster reachable', async () => {
    return `up (${await requireCluster(cfg)})`;
  });
  const wanted = volumeClass(cfg);
  await check(`Default StorageClass is ${wanted}`, async () => {
    const classes = JSON.parse((await kubectl(cfg, ['get', 'storageclasses', '-o', 'json'])).stdout).items as KObject[];
    const defaults = defaultClasses(classes);
    if (!defaults.includes(wanted)) {
      throw new UserError(`StorageClass ${wanted} is missing or not the default (defaults: ${defaults.join(', ') || 'none'}). Run \`task storage\` first.`);
    }
    return 'yes';
  });
  const ns = ['--namespace', SMOKE.namespace];
  /** Deletes pod and claim (pod first: the claim is in use until it is gone). Returns whether anything was there. */
  const cleanup = async () => {
    const pod = await kubectl(cfg, ['delete', 'pod', SMOKE.name, ...ns, '--ignore-not-found', '--wait=true', '--timeout=60s']);
    const pvc = await kubectl(cfg, ['delete', 'pvc', SMOKE.name, ...ns, '--ignore-not-found', '--wait=true', '--timeout=60s']);
    return /deleted/.test(pod.stdout + pvc.stdout);
  };
  const diagnose = async () => {
    const out = await kubectl(cfg, ['describe', 'pvc,pod', SMOKE.name, ...ns], { okCodes: [1] });
    return out.stdout.trim().split('\n').slice(-25).join('\n');
  };
  await step('Remove leftovers of an earlier smoke test', async () => ((await cleanup()) ? 'removed them' : 'already none'));
  try {
    await step(`Create claim and writer pod ${SMOKE.namespace}/${SMOKE.name}`, async () => {
      await kubectl(cfg, ['apply', '-f', '-'], { input: smokeManifest(randomBytes(8).toString('hex')) });
      return 'created';
    });
    await step('Claim Bound', async () => {
      await kubectl(cfg, ['wait', `pvc/${SMOKE.name}`, ...ns, '--for=jsonpath={.status.phase}=Bound', '--timeout=120s'])
        .catch(async (err) => { throw new Error(`${(err as Error).message}\n${await diagnose()}`); });
      return 'Bound';
    });
    await step('Pod wrote and read back a file', async () => {
      await kubectl(cfg, ['wait', `pod/${SMOKE.name}`, ...ns, '--for=jsonpath={.status.phase}=Succeeded', '--timeout=180s'])
        .catch(async (err) => { throw new Error(`${(err as Error).message}\n${await diagnose()}`); });
      return 'Succeeded';
    });
  } finally {
    await step('Remove claim and pod', async () => {
      await cleanup();
      return 'removed';
    });
  }
}

if (isMain(import.meta.url)) {
  const smokeOnly = process.argv.includes('--smoke');
  await runPhase(smokeOnly ? 'storage smoke test' : 'storage', smokeOnly ? smoke : install);
}
