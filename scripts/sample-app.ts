// Phase 5: the sample app (task sample-app), deployed through the same code as `task app`
// (scripts/app.ts deployApp): image, namespace sample-app (Pod Security restricted), Deployment and
// Service sample-app, route https://app.<DOMAIN>, dashboard app-sample-app, record
// $STATE_DIR/apps/sample-app.json. On top of that generic app: its settings (failure and slow
// rates, shutdown delay), HTTP probes on /readyz and /healthz, 2 replicas, a read-only root
// filesystem, and, by default, a traffic generator (manifests/sample-app/traffic.yaml), whose
// traced requests send their spans to the OTLP receiver like the app (lib.otlpEndpoint).
//
//   npx tsx scripts/sample-app.ts [--verbose]
//   npx tsx scripts/sample-app.ts --image    builds and pushes the image only (needs only the local
//                                            registry, not the cluster: the deploy graph runs it
//                                            while the nodes boot; with CLUSTER=existing it goes
//                                            where app.ts ensureImage says: IMAGE_REGISTRY, kind, k3d)
//
// Reads .env keys: REGISTRY_PORT HOST_IP (where the local registry listens), CLUSTER IMAGE_REGISTRY
//   KUBE_CONTEXT (where the image goes, app.ts ensureImage), SAMPLE_TRAFFIC,
//   DOMAIN HTTPS_PORT (route and closing hint), CLUSTER_NAME STATE_DIR (the cluster's kubeconfig).
// Tools: docker (image inspect, build, push; manifest inspect with IMAGE_REGISTRY), kind or k3d (an
//   existing kind/k3d cluster), kubectl (diff, apply, get, delete, rollout status).
// Also asks the local registry over HTTP (GET /v2/sample-app/manifests/<tag>) whether it has the tag.
//
// The image tag is a content hash of sample-app/ (every file the Docker build context holds, by
// its .dockerignore), so a tag names exactly one source. When the registry already has that tag
// nothing is built or pushed; when the image is only missing from the registry it is pushed
// without a rebuild. SAMPLE_TRAFFIC=false removes the traffic generator.
import fs from 'node:fs';
import path from 'node:path';
import { type Config, PROJECT_DIR, ingressUrl, isMain, kubectl, note, otlpEndpoint, renderTemplate, runPhase, step } from './lib.ts';
import { type AppCompanion, type AppExtras, type AppSpec, SAMPLE_APP, deployApp, ensureImage, imageStepTitle } from './app.ts';

export const APP_DIR = path.join(PROJECT_DIR, 'sample-app');
export const NAMESPACE = SAMPLE_APP;
export const APP_DEPLOYMENT = SAMPLE_APP;
export const TRAFFIC_DEPLOYMENT = 'sample-app-traffic';
const BUILD_HINT = 'The sample app image did not build; the output above says why (npm needs the internet inside the build).';

/** The sample app as an app of `task app`: host app.<DOMAIN>, scraped on 8080 at /metrics. */
export const SAMPLE_APP_SPEC: AppSpec = {
  name: SAMPLE_APP,
  namespace: NAMESPACE,
  hostName: 'app',
  dir: APP_DIR,
  port: 8080,
  metricsPort: 8080,
  metricsPath: '/metrics',
  replicas: 2,
  resources: { cpuRequest: '50m', cpuLimit: '500m', memoryRequest: '64Mi', memoryLimit: '192Mi' },
};

/** What the sample app adds to a generic app. */
export const SAMPLE_APP_EXTRAS: AppExtras = {
  env: {
    // /api/orders: share of requests that fail (500) and that are slow. 1 % of orders is about
    // 0.6 % of all requests: inside the 99 % availability SLO of alerts/sample-app.rules.yaml
    // (10 % would burn its budget at about 6x, the slow alert's bar).
    FAIL_RATE: '0.01',
    SLOW_RATE: '0.1',
    SLOW_MS: '1200',
    // After SIGTERM, /readyz answers 503 this long before the server closes, so the Service stops
    // sending requests first.
    SHUTDOWN_DELAY_MS: '5000',
  },
  probes: { readiness: '/readyz', liveness: '/healthz' },
  readOnlyRootFilesystem: true,
};

/** The traffic generator's manifest with the image filled in. */
export const trafficManifest = (image: string) =>
  renderTemplate(fs.readFileSync(path.join(PROJECT_DIR, 'manifests', 'sample-app', 'traffic.yaml'), 'utf8'), { IMAGE: image, OTLP_ENDPOINT: otlpEndpoint('http') });

async function deploymentNames(cfg: Config): Promise<string[]> {
  const res = await kubectl(cfg, ['get', 'deployments', '--namespace', NAMESPACE, '--output', 'json']);
  return (JSON.parse(res.stdout || '{"items":[]}').items as { metadata: { name: string } }[]).map((d) => d.metadata.name);
}

/** The traffic generator (SAMPLE_TRAFFIC=true): applied with the app's objects, in the same kubectl diff. */
const trafficGenerator = (image: string): AppCompanion => ({
  title: `traffic generator (SAMPLE_TRAFFIC=true)`,
  yaml: trafficManifest(image),
  deployments: [TRAFFIC_DEPLOYMENT],
});

/** SAMPLE_TRAFFIC=false: removes the traffic generator when it is there. */
async function removeTrafficGenerator(cfg: Config): Promise<void> {
  await step('Traffic generator (SAMPLE_TRAFFIC=false)', async () => {
    if (!(await deploymentNames(cfg)).includes(TRAFFIC_DEPLOYMENT)) return 'unchanged (off)';
    await kubectl(cfg, ['delete', 'deployment', TRAFFIC_DEPLOYMENT, '--namespace', NAMESPACE]);
    return `removed deployment/${TRAFFIC_DEPLOYMENT} (SAMPLE_TRAFFIC=false)`;
  });
}

export async function deploySampleApp(cfg: Config): Promise<void> {
  await deployApp(cfg, SAMPLE_APP_SPEC, { extras: SAMPLE_APP_EXTRAS, buildHint: BUILD_HINT, companion: cfg.SAMPLE_TRAFFIC ? trafficGenerator : undefined });
  if (!cfg.SAMPLE_TRAFFIC) await removeTrafficGenerator(cfg);
  note(`The app: ${ingressUrl(cfg, 'app', '/')}, in the cluster http://${APP_DEPLOYMENT}.${NAMESPACE}.svc`);
}

/** `--image`: the image only, where the nodes get it (app.ts ensureImage); on Talos no cluster needed. */
export async function buildSampleAppImage(cfg: Config): Promise<void> {
  await step(imageStepTitle(cfg, SAMPLE_APP), async () => (await ensureImage(cfg, { repository: SAMPLE_APP, dir: APP_DIR, buildHint: BUILD_HINT })).detail);
}

if (isMain(import.meta.url)) {
  const imageOnly = process.argv.includes('--image');
  await runPhase(imageOnly ? 'sample-app-image' : 'sample-app', imageOnly ? buildSampleAppImage : deploySampleApp);
}
