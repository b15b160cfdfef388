// scripts/app.ts (`task app`): argument checks (every bad input refused before any tool runs), the
// build context (.dockerignore), the manifests (kubernetes-models schemas and the Pod Security
// "restricted" profile, checked field by field as the Pod Security Standards list them), and the
// phase against the stand-in tools and a stand-in registry: order, re-run quiet, a changed source
// rolls out the new tag, remove exact.
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigMap, Namespace, Secret, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { IngressRoute } from '@kubernetes-models/traefik/traefik.io/v1alpha1';
import YAML from 'yaml';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { type AppSpec, DEFAULT_RESOURCES, appDashboard, appManifests, contentHash, contextFiles, dockerignoreMatcher, parseAppArgs, rootUserHint } from '../scripts/app.ts';
import { type ToolCall, type Sandbox, callsOf, closedPort, makeSandbox, mutatingLines, startStandInRegistry } from './helpers.ts';

const tmp = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix));
/** A folder named `name` with a Dockerfile, a source file and the given extra files. */
function appFolder(name = 'shop', files: Record<string, string> = {}): string {
  const dir = path.join(tmp('app-src-'), name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM busybox:1.37.0\nUSER 1000:1000\nCOPY server.sh /server.sh\nCMD ["/server.sh"]\n');
  fs.writeFileSync(path.join(dir, 'server.sh'), '#!/bin/sh\n');
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  }
  return dir;
}

describe('parseAppArgs: every bad input is refused with the flag, the value and the fix', () => {
  const dir = appFolder();
  const noDockerfile = tmp('app-empty-');
  const envOutside = path.join(tmp('app-env-'), 'shop.env');
  fs.writeFileSync(envOutside, 'DB_PASSWORD=s3cret-value\n# comment\n\nexport API_KEY="k"\n');
  const envBadLine = path.join(tmp('app-env-'), 'bad.env');
  fs.writeFileSync(envBadLine, 'GOOD=1\nthis line has the s3cret-value but no equals sign\n');
  const envBadName = path.join(tmp('app-env-'), 'badname.env');
  fs.writeFileSync(envBadName, '1ABC=s3cret-value\n');
  const leaky = appFolder('leaky', { '.env': 'TOKEN=s3cret-value\n' });
  const ignored = appFolder('ignored', { '.env': 'TOKEN=s3cret-value\n', '.dockerignore': '.env\n' });

  it.each<[string, string[], RegExp]>([
    ['no app at all', [], /no app given\. Usage: task app -- <folder/],
    ['a folder that does not exist', ['/nonexistent/shop'], /folder "\/nonexistent\/shop" does not exist/],
    ['a folder without a Dockerfile', [noDockerfile], /has no Dockerfile\. Add one \(with a numeric non-root USER/],
    ['two folders', [dir, dir], /one folder at a time/],
    ['a folder and --image', [dir, '--image', 'localhost:5001/x:1'], /a folder or --image, not both/],
    ['--image without --name', ['--image', 'localhost:5001/x:1'], /--image needs --name/],
    ['a malformed image reference', ['--image', 'Not An Image', '--name', 'x'], /--image "Not An Image" is not an image reference/],
    ['an upper-case name', [dir, '--name', 'Shop'], /--name "Shop" is not allowed: expected a DNS label/],
    ['a name too long for the dashboard uid', [dir, '--name', 'a'.repeat(37)], /at most 36 characters/],
    ['a name ending in "-"', [dir, '--name', 'shop-'], /expected a DNS label/],
    ['a folder name that is no DNS label', [appFolder('My_App')], /the folder name "My_App" is not allowed.*unless --name is given/],
    ...(['grafana', 'prometheus', 'traefik', 'app'].map((n) => [`the platform route ${n}`, [dir, '--name', n], new RegExp(`${n}\\.<DOMAIN> is one of the platform's own routes`)]) as [string, string[], RegExp][]),
    ...(['monitoring', 'traefik-x', 'local-path-storage', 'kube-system', 'kube-anything', 'default'].filter((n) => n !== 'traefik-x').map((n) => [`the namespace ${n}`, [dir, '--name', n], new RegExp(`namespace ${n} is the platform's or Kubernetes' own`)]) as [string, string[], RegExp][]),
    ['the sample app\'s name', [dir, '--name', 'sample-app'], /the sample app's namespace \(`task sample-app` deploys it\)/],
    ['port 0', [dir, '--port', '0'], /--port "0" is not allowed: expected a TCP port from 1 to 65535/],
    ['port 65536', [dir, '--port', '65536'], /--port "65536" is not allowed/],
    ['a metrics port that is no number', [dir, '--metrics-port', 'http'], /--metrics-port "http" is not allowed/],
    ['a metrics path without "/"', [dir, '--metrics-path', 'metrics'], /--metrics-path "metrics" is not allowed: expected a path such as \/metrics/],
    ['a CPU request that is no quantity', [dir, '--cpu-request', 'lots'], /--cpu-request "lots" is not allowed: expected a positive Kubernetes quantity, such as 100m/],
    ['a memory limit without unit (bytes)', [dir, '--memory-limit', '512'], /--memory-limit "512" is not allowed: less than 4Mi .*did you mean 512Mi/],
    ['a request above its limit', [dir, '--memory-request', '1Gi', '--memory-limit', '512Mi'], /--memory-request 1Gi is more than --memory-limit 512Mi/],
    ['replicas 0', [dir, '--replicas', '0'], /--replicas "0" is not allowed/],
    ['an env file that does not exist', [dir, '--env-file', '/nonexistent/.env'], /--env-file "\/nonexistent\/.env" does not exist/],
    ['an env file with a line that is not KEY=value', [dir, '--env-file', envBadLine], /line 2 is not KEY=value/],
    ['an env file with a bad variable name', [dir, '--env-file', envBadName], /line 1: "1ABC" is not a variable name/],
    ['an env file that docker build would copy into the image', [leaky, '--env-file', path.join(leaky, '.env')], /lies in the build context .* docker build would copy its secrets into the image\. Add "\.env" to .*\.dockerignore/],
    ['an unknown option', [dir, '--nmae', 'x'], /unknown option --nmae/],
    ['an option without its value', [dir, '--name'], /--name needs a value/],
    ['an option twice', [dir, '--port', '1', '--port', '2'], /--port is given twice/],
    ['--remove with other arguments', ['--remove', 'shop', dir], /--remove takes only a name/],
  ])('%s', (_case, argv, message) => {
    let err: Error | undefined;
    try {
      parseAppArgs(argv);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toMatch(message);
    expect(err?.message).not.toContain('s3cret-value');
  });

  it('a folder: name from the folder, defaults, metrics only when asked, env file outside the folder', () => {
    const got = parseAppArgs([dir, '--env-file', envOutside]);
    expect(got).toEqual({
      deploy: {
        name: 'shop', namespace: 'shop', hostName: 'shop', dir, image: undefined, port: 8080, metricsPort: undefined, metricsPath: undefined,
        envFile: envOutside, replicas: 1, resources: { ...DEFAULT_RESOURCES },
      },
    });
  });

  it('every option, and --metrics-path alone meaning metrics on the app port', () => {
    const full = parseAppArgs([dir, '--name=web', '--port', '3000', '--metrics-port', '9100', '--metrics-path', '/prom', '--replicas', '2', '--cpu-request', '100m', '--cpu-limit', '1', '--memory-request', '128Mi', '--memory-limit', '1Gi']);
    expect(full).toMatchObject({ deploy: { name: 'web', port: 3000, metricsPort: 9100, metricsPath: '/prom', replicas: 2, resources: { cpuRequest: '100m', cpuLimit: '1', memoryRequest: '128Mi', memoryLimit: '1Gi' } } });
    expect(parseAppArgs([dir, '--metrics-path', '/metrics'])).toMatchObject({ deploy: { metricsPort: 8080, metricsPath: '/metrics' } });
    expect(parseAppArgs([dir, '--metrics-port', '9100'])).toMatchObject({ deploy: { metricsPort: 9100, metricsPath: '/metrics' } });
    expect(parseAppArgs(['--image', 'ghcr.io/me/app:1.0', '--name', 'web'])).toMatchObject({ deploy: { name: 'web', image: 'ghcr.io/me/app:1.0', dir: undefined } });
    expect(parseAppArgs([ignored, '--env-file', path.join(ignored, '.env')])).toMatchObject({ deploy: { name: 'ignored' } });
    expect(parseAppArgs(['--remove', 'shop'])).toEqual({ remove: 'shop' });
  });
});

describe('the build context honours .dockerignore', () => {
  it.each<[string, string, string[], string[]]>([
    ['a top-level name', 'node_modules\ndist\n', ['src/a.ts', 'lib/node_modules/x'], ['node_modules/x/i.js', 'dist/a.js']],
    ['a glob and a folder glob', '*.log\n**/tmp\n', ['logs/a.txt'], ['a.log', 'tmp/x', 'src/tmp/y']],
    ['an exception (last match wins)', '*.md\n!README.md\n', ['README.md'], ['NOTES.md']],
    ['a leading slash and comments', '# build output\n/build\n', ['src/build/x'], ['build/x']],
  ])('%s', (_case, ignore, kept, left) => {
    const ignored = dockerignoreMatcher(ignore);
    for (const f of kept) expect(ignored(f), f).toBe(false);
    for (const f of left) expect(ignored(f), f).toBe(true);
  });

  it('the tag changes with the source and not with what .dockerignore leaves out; Dockerfile and .dockerignore always count', () => {
    const dir = appFolder('shop', { '.dockerignore': 'Dockerfile\n.dockerignore\n*.log\n' });
    const tag = contentHash(dir);
    fs.writeFileSync(path.join(dir, 'debug.log'), 'x');
    expect(contentHash(dir)).toBe(tag);
    expect(contextFiles(dir)).toEqual(['.dockerignore', 'Dockerfile', 'server.sh']);
    fs.appendFileSync(path.join(dir, 'Dockerfile'), 'EXPOSE 8080\n');
    expect(contentHash(dir)).not.toBe(tag);
  });
});

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

const docsOf = (text: string) => YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean);
const spec = (over: Partial<AppSpec> = {}): AppSpec => ({
  name: 'shop', namespace: 'shop', hostName: 'shop', port: 3000, replicas: 1, resources: { ...DEFAULT_RESOURCES }, ...over,
});
const render = (s: AppSpec) => {
  const m = appManifests(s, 'localhost:5001/shop:0123456789ab', 'localhost', appDashboard({ name: s.name, namespace: s.namespace, metricNames: [] }));
  return [...docsOf(m.namespace), ...docsOf(m.app)];
};

/**
 * What the Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards/)
 * check for the baseline and restricted profiles, one entry per control: the violations of a pod spec.
 */
type PodSpec = Record<string, any>;
const containersOf = (pod: PodSpec) => [...(pod.initContainers ?? []), ...(pod.containers ?? []), ...(pod.ephemeralContainers ?? [])];
const ALLOWED_VOLUME_TYPES = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret'];
const RESTRICTED_CONTROLS: [string, (pod: PodSpec) => boolean][] = [
  ['HostProcess', (p) => p.securityContext?.windowsOptions?.hostProcess !== true && containersOf(p).every((c) => c.securityContext?.windowsOptions?.hostProcess !== true)],
  ['Host Namespaces', (p) => !p.hostNetwork && !p.hostPID && !p.hostIPC],
  ['Privileged Containers', (p) => containersOf(p).every((c) => !c.securityContext?.privileged)],
  ['Capabilities (baseline)', (p) => containersOf(p).every((c) => (c.securityContext?.capabilities?.add ?? []).every((a: string) => a === 'NET_BIND_SERVICE'))],
  ['HostPath Volumes', (p) => (p.volumes ?? []).every((v: any) => !v.hostPath)],
  ['Host Ports', (p) => containersOf(p).every((c) => (c.ports ?? []).every((port: any) => !port.hostPort))],
  ['/proc Mount Type', (p) => containersOf(p).every((c) => [undefined, 'Default'].includes(c.securityContext?.procMount))],
  ['Sysctls', (p) => (p.securityContext?.sysctls ?? []).length === 0],
  ['Volume Types', (p) => (p.volumes ?? []).every((v: any) => Object.keys(v).filter((k) => k !== 'name').every((k) => ALLOWED_VOLUME_TYPES.includes(k)))],
  ['Privilege Escalation', (p) => containersOf(p).every((c) => c.securityContext?.allowPrivilegeEscalation === false)],
  ['Running as Non-root', (p) => containersOf(p).every((c) => (c.securityContext?.runAsNonRoot ?? p.securityContext?.runAsNonRoot) === true)],
  ['Running as Non-root user', (p) => p.securityContext?.runAsUser !== 0 && containersOf(p).every((c) => c.securityContext?.runAsUser !== 0)],
  ['Seccomp', (p) => containersOf(p).every((c) => ['RuntimeDefault', 'Localhost'].includes(c.securityContext?.seccompProfile?.type ?? p.securityContext?.seccompProfile?.type))],
  ['Capabilities (restricted)', (p) => containersOf(p).every((c) => (c.securityContext?.capabilities?.drop ?? []).includes('ALL'))],
];
const restrictedViolations = (pod: PodSpec) => RESTRICTED_CONTROLS.filter(([, ok]) => !ok(pod)).map(([name]) => name);

describe('manifests', () => {
  const envFile = path.join(tmp('app-env-'), 'shop.env');
  fs.writeFileSync(envFile, 'DB_PASSWORD=s3cret\n');
  const all = render(spec({ metricsPort: 9100, metricsPath: '/metrics', envFile }));
  const find = (kind: string) => all.find((d) => d.kind === kind);

  it('are valid Kubernetes and Traefik objects, in the app\'s namespace', () => {
    expect(all.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(['Namespace/shop', 'Secret/shop-env', 'Deployment/shop', 'Service/shop', 'IngressRoute/app', 'ConfigMap/shop-dashboard']);
    const models: Record<string, new (o: any) => { validate(): void }> = { Namespace, Secret, Deployment, Service, IngressRoute, ConfigMap };
    for (const d of all) expect(() => new models[d.kind](d).validate(), d.kind).not.toThrow();
    for (const d of all.filter((x) => x.kind !== 'Namespace')) expect(d.metadata.namespace).toBe('shop');
  });

  it('the names other code relies on: namespace labels, pod label, Service port 80, route host, scrape annotations, env Secret', () => {
    expect(find('Namespace').metadata.labels).toMatchObject({
      'app.kubernetes.io/managed-by': 'talos-local-platform', 'talos-local-platform/app': 'shop', 'pod-security.kubernetes.io/enforce': 'restricted',
    });
    const d = find('Deployment');
    expect(d.spec.template.metadata.labels['app.kubernetes.io/name']).toBe('shop');
    expect(d.spec.template.metadata.annotations).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9100', 'prometheus.io/path': '/metrics' });
    expect(find('Service').spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }]);
    expect(find('IngressRoute').spec.routes[0]).toMatchObject({ match: 'Host(`shop.localhost`)', services: [{ name: 'shop', port: 80 }] });
    const c = d.spec.template.spec.containers[0];
    expect(c.envFrom).toEqual([{ secretRef: { name: 'shop-env' } }]);
    expect(c.resources).toEqual({ requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '500m', memory: '256Mi' } });
    expect(find('Secret').data).toEqual({ DB_PASSWORD: Buffer.from('s3cret').toString('base64') });
    expect(JSON.stringify(d)).not.toContain('s3cret');
    const cm = find('ConfigMap');
    expect(cm.metadata.labels['talos-local-platform/dashboard']).toBe('app');
    expect(JSON.parse(cm.data['shop.json']).uid).toBe('app-shop');
  });

  it('no metrics port: no scrape annotations', () => {
    expect(render(spec()).find((x) => x.kind === 'Deployment').spec.template.metadata.annotations).toBeUndefined();
  });

  it('pass every control of Pod Security "restricted"', () => {
    expect(restrictedViolations(find('Deployment').spec.template.spec)).toEqual([]);
  });

  // Each control must be able to fail: break the rendered pod one field at a time.
  it.each<[string, (p: PodSpec) => void]>([
    ['Host Namespaces', (p) => { p.hostNetwork = true; }],
    ['Privileged Containers', (p) => { p.containers[0].securityContext.privileged = true; }],
    ['Capabilities (baseline)', (p) => { p.containers[0].securityContext.capabilities.add = ['SYS_ADMIN']; }],
    ['HostPath Volumes', (p) => { p.volumes = [{ name: 'h', hostPath: { path: '/' } }]; }],
    ['Host Ports', (p) => { p.containers[0].ports[0].hostPort = 80; }],
    ['Privilege Escalation', (p) => { delete p.containers[0].securityContext.allowPrivilegeEscalation; }],
    ['Running as Non-root', (p) => { delete p.containers[0].securityContext.runAsNonRoot; delete p.securityContext.runAsNonRoot; }],
    ['Running as Non-root user', (p) => { p.securityContext.runAsUser = 0; }],
    ['Seccomp', (p) => { delete p.containers[0].securityContext.seccompProfile; p.securityContext.seccompProfile = { type: 'Unconfined' }; }],
    ['Capabilities (restricted)', (p) => { p.containers[0].securityContext.capabilities.drop = ['NET_RAW']; }],
  ])('a pod breaking "%s" is caught', (control, breakIt) => {
    const pod = structuredClone(find('Deployment').spec.template.spec);
    breakIt(pod);
    expect(restrictedViolations(pod)).toContain(control);
  });

  it('a refused or crashing root image gets the USER fix', () => {
    expect(rootUserHint('Error: container has runAsNonRoot and image will run as root (pod: "shop-1")')).toMatch(/USER 1000:1000/);
    expect(rootUserHint('Error: container has runAsNonRoot and image has non-numeric user (node), cannot verify user is non-root')).toMatch(/numeric non-root user/);
    expect(rootUserHint('pod shop/shop-1 is not Ready (Pending; app: ImagePullBackOff)')).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// The phase, with the stand-in tools
// ---------------------------------------------------------------------------------------------

describe('task app (stand-in tools)', { timeout: 90000 }, () => {
  let sb: Sandbox;
  let env: Record<string, string>;
  const registries: Awaited<ReturnType<typeof startStandInRegistry>>[] = [];
  afterAll(async () => {
    for (const r of registries) await r.close();
  });
  beforeEach(async () => {
    sb = makeSandbox();
    const registry = await startStandInRegistry(() => sb.state().docker.pushed ?? {});
    registries.push(registry);
    env = { REGISTRY_PORT: String(registry.port) };
  });
  const kube = (argv: string[]) => argv.filter((a, i) => a !== '--kubeconfig' && argv[i - 1] !== '--kubeconfig');
  const record = (name: string) => JSON.parse(fs.readFileSync(path.join(sb.stateDir, 'apps', `${name}.json`), 'utf8'));

  it('deploys a folder: build, push, namespace, app objects, rollout, record; a re-run changes nothing; a changed source rolls out', async () => {
    sb.createCluster();
    const dir = appFolder('shop');
    const tag = contentHash(dir);
    const ref = `localhost:${env.REGISTRY_PORT}/shop:${tag}`;
    const r = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutatingLines(r.calls).map((l) => l.replace(/--kubeconfig \S+ /, ''))).toEqual([
      `docker build --tag ${ref} --label org.opencontainers.image.revision=${tag} ${dir}`,
      `docker push ${ref}`,
      'kubectl apply -f -',
      'kubectl apply -f -',
    ]);
    const o = sb.state().kubectl.objects;
    expect(o['Namespace//shop'].metadata.labels['talos-local-platform/app']).toBe('shop');
    expect(o['Deployment/shop/shop'].spec.template.spec.containers[0].image).toBe(ref);
    expect(o['IngressRoute/shop/app'].spec.routes[0].match).toBe('Host(`shop.localhost`)');
    expect(o['ConfigMap/shop/shop-dashboard']).toBeTruthy();
    expect(callsOf(r.calls, 'kubectl').map((c) => kube(c.argv)).find((a) => a[0] === 'rollout')).toEqual(['rollout', 'status', 'deployment/shop', '--namespace', 'shop', '--timeout=180s']);
    expect(record('shop')).toEqual({ name: 'shop', namespace: 'shop', host: 'shop.localhost', image: ref, metricsPort: 8080, metricsPath: '/metrics', dashboard: 'app-shop' });
    // Prometheus does not answer (no endpoints): the dashboard of the declared kind, said so.
    expect(r.stdout).toMatch(/Dashboard: Prometheus could not be asked .*so it assumes the usual HTTP metrics/);
    expect(r.stdout).toContain(`https://shop.localhost:${sb.ports.HTTPS_PORT}/`);

    const again = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/nothing changed/);

    fs.appendFileSync(path.join(dir, 'server.sh'), 'echo v2\n');
    const changed = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(changed.code, changed.stdout + changed.stderr).toBe(0);
    const ref2 = `localhost:${env.REGISTRY_PORT}/shop:${contentHash(dir)}`;
    expect(ref2).not.toBe(ref);
    expect(sb.state().kubectl.objects['Deployment/shop/shop'].spec.template.spec.containers[0].image).toBe(ref2);
    expect(record('shop').image).toBe(ref2);
  });

  it('uses the metric names Prometheus has for the app, and asks again only for another image or after assumed names', async () => {
    sb.createCluster();
    const match = encodeURIComponent('{namespace="shop",job="shop"}');
    const namesPath = `/api/v1/namespaces/monitoring/services/prometheus-server:80/proxy/api/v1/label/__name__/values?match[]=${match}`;
    const prometheusHas = (names: string[]) => sb.scenario({ kubectl: { raw: { [namesPath]: JSON.stringify({ status: 'success', data: names }) } } });
    const dashboardText = () => sb.state().kubectl.objects['ConfigMap/shop/shop-dashboard'].data['shop.json'] as string;
    const asked = (r: { calls: ToolCall[] }) => callsOf(r.calls, 'kubectl').filter((c) => c.argv.includes(namesPath)).length;
    const dir = appFolder('shop');
    // Prometheus has no series yet: assumed names, not recorded, so the next run asks again.
    const first = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(first.stdout).toMatch(/assumes the usual HTTP metrics/);
    expect(record('shop').metricNames).toBeUndefined();
    const names = ['flask_http_request_total', 'flask_http_request_duration_seconds_bucket', 'process_resident_memory_bytes'];
    prometheusHas(names);
    const r = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(asked(r)).toBe(1);
    expect(dashboardText()).toContain('flask_http_request_total');
    expect(r.stdout).not.toMatch(/assumes the usual HTTP metrics/);
    expect(record('shop').metricNames).toEqual(names);
    // The same image again: the recorded names, no question to Prometheus, nothing changes.
    const again = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(asked(again)).toBe(0);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/nothing changed/);
    // Another image may serve other metrics: asked again, and the dashboard follows.
    prometheusHas(['django_http_requests_total_by_view_transport_method_total', 'process_resident_memory_bytes']);
    fs.appendFileSync(path.join(dir, 'server.sh'), 'echo v2\n');
    const changed = await sb.run('app', [dir, '--metrics-port', '8080'], env);
    expect(changed.code, changed.stdout + changed.stderr).toBe(0);
    expect(asked(changed)).toBe(1);
    expect(dashboardText()).not.toContain('flask_http_request_total');
    expect(record('shop').metricNames).toEqual(['django_http_requests_total_by_view_transport_method_total', 'process_resident_memory_bytes']);
  });

  it('without --metrics-port: no scrape annotations, and it says how to enable scraping', async () => {
    sb.createCluster();
    const r = await sb.run('app', [appFolder('shop')], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(sb.state().kubectl.objects['Deployment/shop/shop'].spec.template.metadata.annotations).toBeUndefined();
    expect(r.stdout).toMatch(/run again with --metrics-port <port>/);
    expect(callsOf(r.calls, 'kubectl', 'get', '--raw')).toEqual([]);
  });

  it('the server certificate: re-issued by the traefik phase to name the new host, then left alone', async () => {
    sb.createCluster();
    expect((await sb.run('traefik')).code).toBe(0);
    const crt = path.join(sb.stateDir, 'certs', 'tls.crt');
    const names = () => new X509Certificate(fs.readFileSync(crt)).subjectAltName ?? '';
    expect(names()).not.toContain('DNS:shop.localhost');
    const dir = appFolder('shop');
    const r = await sb.run('app', [dir], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Certificate names shop\.localhost .* re-issued with shop\.localhost \(ran the traefik phase\)/);
    expect(names()).toContain('DNS:shop.localhost');
    expect(Buffer.from(sb.state().kubectl.objects['Secret/traefik/platform-tls'].data['tls.crt'], 'base64').toString()).toBe(fs.readFileSync(crt, 'utf8'));
    const again = await sb.run('app', [dir], env);
    expect(again.stdout).toMatch(/already names shop\.localhost/);
    expect(mutatingLines(again.calls)).toEqual([]);
  });

  it('--remove deletes exactly the recorded namespace and the record; a second --remove is refused; other namespaces stay', async () => {
    sb.createCluster();
    expect((await sb.run('app', [appFolder('shop')], env)).code).toBe(0);
    const other = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'sample-app', labels: { 'talos-local-platform/app': 'sample-app' } } };
    sb.scenario({ kubectl: { objects: { 'Namespace//sample-app': other } } });
    const r = await sb.run('app', ['--remove', 'shop'], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutatingLines(r.calls).map((l) => l.replace(/--kubeconfig \S+ /, ''))).toEqual(['kubectl delete namespace shop --wait=true --timeout=120s']);
    expect(sb.state().kubectl.objects['Namespace//shop']).toBeUndefined();
    expect(sb.state().kubectl.objects['Namespace//sample-app']).toEqual(other);
    expect(fs.existsSync(path.join(sb.stateDir, 'apps', 'shop.json'))).toBe(false);
    const again = await sb.run('app', ['--remove', 'shop'], env);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/no app "shop": .*apps\/shop\.json does not exist, so nothing is removed/);
    expect(again.calls).toEqual([]);
  });

  it('--remove leaves a namespace alone whose labels are not the app\'s', async () => {
    sb.createCluster();
    expect((await sb.run('app', [appFolder('shop')], env)).code).toBe(0);
    const state = sb.state();
    state.kubectl.objects['Namespace//shop'] = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { team: 'x' } } };
    fs.writeFileSync(sb.fakeState, JSON.stringify(state)); // replaces (scenario() would merge the labels)
    const r = await sb.run('app', ['--remove', 'shop'], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/namespace shop is not labelled as app shop's .* left alone/);
    expect(mutatingLines(r.calls)).toEqual([]);
    expect(fs.existsSync(path.join(sb.stateDir, 'apps', 'shop.json'))).toBe(true);
  });

  it.each<[string, (dir: string) => string[]]>([
    ['no Dockerfile', () => [tmp('app-empty-')]],
    ['a name of the platform', (dir) => [dir, '--name', 'grafana']],
    ['a port out of range', (dir) => [dir, '--port', '70000']],
    ['a missing env file', (dir) => [dir, '--env-file', '/nonexistent.env']],
  ])('bad input (%s): non-zero, and not one tool call', async (_case, argv) => {
    sb.createCluster();
    // As the Taskfile passes them: after "--" (Node 20 would read a later --env-file itself).
    const r = await sb.run('app', ['--', ...argv(appFolder('shop'))], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/✗ app failed: /);
    expect(r.calls).toEqual([]);
  });

  it('registry not answering: says to run task talos first, applies nothing', async () => {
    sb.createCluster();
    const r = await sb.run('app', [appFolder('shop')], { REGISTRY_PORT: String(await closedPort()) });
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/does not answer.*run task talos first/);
    expect(mutatingLines(r.calls)).toEqual([]);
  });
});
