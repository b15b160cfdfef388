// INGRESS_CLASS (CLUSTER=existing): our routes on an ingress controller the cluster already runs.
// Pure parts table-driven (the keys' validation, the Ingresses rendered from the IngressRoutes, the
// class check, the address on the Ingresses, the status line, what validate expects), then the
// phases against the stand-in tools: traefik twice (applies, then changes nothing), a missing class
// refused before any change, endpoints, and validate through a port-forward to INGRESS_SERVICE.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_APP_SPEC } from '../scripts/sample-app.ts';
import { appManifests } from '../scripts/app.ts';
import { endpointLines } from '../scripts/endpoints.ts';
import {
  ConfigError,
  PLATFORM_TLS_SECRET,
  PROJECT_DIR,
  ingressClassAddressOf,
  ingressManifests,
  ingressService,
  parseConfig,
  renderTemplate,
} from '../scripts/lib.ts';
import { ingressClassStatus } from '../scripts/status.ts';
import { ingressClassProblem, ingressClassRoutes } from '../scripts/traefik.ts';
import { ROUTES, checkedRoutes, ourNamespaces } from '../scripts/validate.ts';
import { closedPort, existingClusterEnv, makeSandbox, mutatingLines, type Sandbox } from './helpers.ts';
import { SHOP, shopSandbox, startShopFront } from './fixtures/validate/app-front.ts';
import { checkLines } from './fixtures/validate/servers.ts';

const EXISTING = { CLUSTER: 'existing' };

describe('INGRESS_CLASS and INGRESS_SERVICE in .env', () => {
  it.each([
    ['not set: Traefik as today', {}, { INGRESS_CLASS: '', INGRESS_SERVICE: '' }],
    ['a class on an existing cluster', { ...EXISTING, INGRESS_CLASS: 'nginx' }, { INGRESS_CLASS: 'nginx', INGRESS_SERVICE: '' }],
    ['a dotted class name', { ...EXISTING, INGRESS_CLASS: 'public.example.com' }, { INGRESS_CLASS: 'public.example.com', INGRESS_SERVICE: '' }],
    ['with the Service and a port name', { ...EXISTING, INGRESS_CLASS: 'nginx', INGRESS_SERVICE: 'ingress-nginx/ingress-nginx-controller:https' }, { INGRESS_CLASS: 'nginx', INGRESS_SERVICE: 'ingress-nginx/ingress-nginx-controller:https' }],
    ['with the Service and a port number', { ...EXISTING, INGRESS_CLASS: 'haproxy', INGRESS_SERVICE: 'haproxy/kubernetes-ingress:8443' }, { INGRESS_CLASS: 'haproxy', INGRESS_SERVICE: 'haproxy/kubernetes-ingress:8443' }],
  ])('%s', (_name, raw, want) => {
    const cfg = parseConfig(raw);
    expect({ INGRESS_CLASS: cfg.INGRESS_CLASS, INGRESS_SERVICE: cfg.INGRESS_SERVICE }).toEqual(want);
  });

  it.each([
    ['a class with CLUSTER=talos (its own Traefik serves the routes)', { INGRESS_CLASS: 'nginx' }, ['INGRESS_CLASS="nginx"', 'CLUSTER=existing', 'Remove INGRESS_CLASS']],
    ['an uppercase class', { ...EXISTING, INGRESS_CLASS: 'Nginx' }, ['INGRESS_CLASS="Nginx"', 'IngressClass', 'Fix it in .env']],
    ['a class with a space', { ...EXISTING, INGRESS_CLASS: 'my class' }, ['INGRESS_CLASS="my class"']],
    ['a Service without its namespace', { ...EXISTING, INGRESS_CLASS: 'nginx', INGRESS_SERVICE: 'ingress-nginx-controller' }, ['INGRESS_SERVICE="ingress-nginx-controller"', '<namespace>/<service>']],
    ['a Service with an empty port', { ...EXISTING, INGRESS_CLASS: 'nginx', INGRESS_SERVICE: 'ingress-nginx/ctrl:' }, ['INGRESS_SERVICE="ingress-nginx/ctrl:"']],
    ['a Service without a class', { ...EXISTING, INGRESS_SERVICE: 'ingress-nginx/ingress-nginx-controller' }, ['INGRESS_SERVICE="ingress-nginx/ingress-nginx-controller"', 'INGRESS_CLASS is not set', 'remove INGRESS_SERVICE']],
  ])('refuses %s, naming the key, the value and the fix', (_name, raw, parts) => {
    let err: unknown;
    try {
      parseConfig(raw);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    for (const p of parts) expect((err as Error).message).toContain(p);
  });

  it.each([
    ['', undefined],
    ['ingress-nginx/ingress-nginx-controller', { namespace: 'ingress-nginx', service: 'ingress-nginx-controller', port: '443' }],
    ['ingress-nginx/ingress-nginx-controller:https', { namespace: 'ingress-nginx', service: 'ingress-nginx-controller', port: 'https' }],
    ['haproxy/kubernetes-ingress:8443', { namespace: 'haproxy', service: 'kubernetes-ingress', port: '8443' }],
  ])('ingressService(%j)', (value, want) => {
    expect(ingressService({ INGRESS_SERVICE: value })).toEqual(want);
  });
});

// ---------------------------------------------------------------------------------------------
// Rendering: the Ingresses carry the IngressRoutes' hosts, Services and ports
// ---------------------------------------------------------------------------------------------

const DOMAIN = 'obs.test';
const CERT = { crt: '-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n', key: '-----BEGIN EC PRIVATE KEY-----\nKEY\n-----END EC PRIVATE KEY-----\n' };
const docs = (text: string) => YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean) as any[];

/** What an IngressRoute file routes, read here on its own: [namespace, host, service, port] of each rule to a Kubernetes Service. */
function routedBy(file: string, vars: Record<string, string>): [string, string, string, number][] {
  const text = renderTemplate(fs.readFileSync(path.join(PROJECT_DIR, file), 'utf8'), vars);
  return docs(text)
    .filter((d) => d.kind === 'IngressRoute')
    .flatMap((d) => d.spec.routes.map((r: any) => [d, r]))
    .filter(([, r]) => (r.services[0].kind ?? 'Service') === 'Service')
    .map(([d, r]) => [d.metadata.namespace, /Host\(`(.+)`\)/.exec(r.match)![1], r.services[0].name, r.services[0].port]);
}
/** The same four of each Ingress. */
const ingressed = (objects: any[]) =>
  objects
    .filter((o) => o.kind === 'Ingress')
    .map((o) => [o.metadata.namespace, o.spec.rules[0].host, o.spec.rules[0].http.paths[0].backend.service.name, o.spec.rules[0].http.paths[0].backend.service.port.number]);

describe('the Ingresses of INGRESS_CLASS', () => {
  const platform = docs(ingressManifests('nginx', ingressClassRoutes(DOMAIN), CERT, ['sample-app']));

  it("carry exactly the hosts, Services and ports of Traefik's IngressRoutes that reach a Service (its dashboard goes)", () => {
    const want = routedBy('manifests/traefik/ingressroutes.yaml', { DOMAIN });
    expect(want.length).toBeGreaterThan(0);
    expect(ingressed(platform)).toEqual(want);
    expect(ingressed(platform).some(([, host]) => host === `traefik.${DOMAIN}`)).toBe(false);
  });

  it.each(['grafana', 'prometheus', 'alertmanager'])('%s: class nginx, TLS for its host from platform-tls, labelled ours, every path', (name) => {
    const ing = platform.find((o) => o.kind === 'Ingress' && o.metadata.name === name);
    expect(ing.apiVersion).toBe('networking.k8s.io/v1');
    expect(ing.spec.ingressClassName).toBe('nginx');
    expect(ing.spec.tls).toEqual([{ hosts: [`${name}.${DOMAIN}`], secretName: PLATFORM_TLS_SECRET }]);
    expect(ing.metadata.labels['app.kubernetes.io/part-of']).toBe('talos-local-observability');
    expect(ing.spec.rules[0].http.paths[0]).toMatchObject({ path: '/', pathType: 'Prefix' });
  });

  it('the TLS Secret each Ingress names is in its own namespace, once per namespace, with our certificate; the apps\' namespaces get it too', () => {
    const secrets = platform.filter((o) => o.kind === 'Secret');
    expect(secrets.map((s) => s.metadata.namespace)).toEqual(['monitoring', 'sample-app']);
    for (const s of secrets) {
      expect(s).toMatchObject({ type: 'kubernetes.io/tls', metadata: { name: PLATFORM_TLS_SECRET } });
      expect(Buffer.from(s.data['tls.crt'], 'base64').toString()).toBe(CERT.crt);
      expect(Buffer.from(s.data['tls.key'], 'base64').toString()).toBe(CERT.key);
    }
    for (const ing of platform.filter((o) => o.kind === 'Ingress')) {
      expect(secrets.some((s) => s.metadata.namespace === ing.metadata.namespace && s.metadata.name === ing.spec.tls[0].secretName)).toBe(true);
    }
  });

  it("the sample app's route: with INGRESS_CLASS an Ingress of the app's route.yaml.tmpl (and its Secret), no IngressRoute; without, the IngressRoute", () => {
    const vars = { NAME: SAMPLE_APP_SPEC.name, NAMESPACE: SAMPLE_APP_SPEC.namespace, HOST: `${SAMPLE_APP_SPEC.hostName}.${DOMAIN}` };
    const withClass = docs(appManifests(SAMPLE_APP_SPEC, 'img:1', DOMAIN, {}, {}, { className: 'nginx', cert: CERT }).app);
    expect(withClass.some((o) => o.kind === 'IngressRoute')).toBe(false);
    expect(ingressed(withClass)).toEqual(routedBy('manifests/app/route.yaml.tmpl', vars));
    expect(withClass.filter((o) => o.kind === 'Secret' && o.type === 'kubernetes.io/tls').map((s) => `${s.metadata.namespace}/${s.metadata.name}`)).toEqual([`sample-app/${PLATFORM_TLS_SECRET}`]);
    const traefik = docs(appManifests(SAMPLE_APP_SPEC, 'img:1', DOMAIN, {}).app);
    expect(traefik.filter((o) => o.kind === 'IngressRoute' || o.kind === 'Ingress').map((o) => o.kind)).toEqual(['IngressRoute']);
  });
});

// ---------------------------------------------------------------------------------------------
// The class, the address, status, and what validate expects
// ---------------------------------------------------------------------------------------------

const klass = (name: string, isDefault = false) => ({ kind: 'IngressClass', metadata: { name, ...(isDefault ? { annotations: { 'ingressclass.kubernetes.io/is-default-class': 'true' } } : {}) }, spec: { controller: `example.com/${name}` } });
const ours = { 'app.kubernetes.io/part-of': 'talos-local-observability' };
const ingress = (name: string, className: string, lb?: { ip?: string; hostname?: string }, labels: Record<string, string> = ours) => ({
  kind: 'Ingress',
  metadata: { name, namespace: 'monitoring', labels },
  spec: { ingressClassName: className },
  status: { loadBalancer: lb ? { ingress: [lb] } : {} },
});

describe('ingressClassProblem', () => {
  it.each([
    ['the class exists', 'nginx', [klass('traefik'), klass('nginx')], undefined],
    ['missing, others listed (the default marked)', 'nginx', [klass('traefik', true), klass('haproxy')], ['INGRESS_CLASS="nginx"', 'no IngressClass "nginx"', 'it has traefik (default), haproxy', 'Set INGRESS_CLASS in .env to one of them', 'Nothing was changed']],
    ['no class at all', 'nginx', [], ['it has none: no ingress controller is installed', 'once your ingress controller is installed']],
  ])('%s', (_name, name, classes, parts) => {
    const problem = ingressClassProblem(name, classes);
    if (parts === undefined) expect(problem).toBeUndefined();
    else for (const p of parts) expect(problem).toContain(p);
  });
});

describe('ingressClassAddressOf', () => {
  it.each([
    ['an IP on our Ingress', [ingress('grafana', 'nginx', { ip: '203.0.113.7' })], { address: '203.0.113.7', port: 443, isHostname: false }],
    ['a hostname (a cloud load balancer)', [ingress('grafana', 'nginx', { hostname: 'lb-1.elb.example.com' })], { address: 'lb-1.elb.example.com', port: 443, isHostname: true }],
    ['the first of ours that has one', [ingress('grafana', 'nginx'), ingress('prometheus', 'nginx', { ip: '10.0.0.9' })], { address: '10.0.0.9', port: 443 }],
    ['not yet published', [ingress('grafana', 'nginx')], { missing: expect.stringContaining('published no address on our Ingresses yet') }],
    ["another class's Ingress does not count", [ingress('grafana', 'traefik', { ip: '1.2.3.4' })], { missing: expect.stringContaining('no Ingress of ours with class nginx') }],
    ["the user's own Ingress does not count", [ingress('shop', 'nginx', { ip: '1.2.3.4' }, {})], { missing: expect.stringContaining('no Ingress of ours with class nginx') }],
  ])('%s', (_name, list, want) => {
    expect(ingressClassAddressOf(list, 'nginx')).toMatchObject(want);
  });
});

describe('ingressClassStatus (status: the class in the place of the Traefik release)', () => {
  it.each([
    ['class and our Ingresses with an address', [klass('nginx')], [ingress('grafana', 'nginx', { ip: '203.0.113.7' }), ingress('prometheus', 'nginx')], 'ok', /2 Ingresses of ours \(grafana, prometheus\), address 203\.0\.113\.7/],
    ['no address published (some controllers publish none)', [klass('nginx')], [ingress('grafana', 'nginx')], 'ok', /no address published yet/],
    ['the class is gone', [klass('traefik')], [ingress('grafana', 'nginx')], 'missing', /IngressClass nginx \(INGRESS_CLASS\) not found/],
    ['no Ingress of ours yet', [klass('nginx')], [], 'missing', /run `task traefik`/],
  ])('%s → %s', (_name, classes, ingresses, state, detail) => {
    const s = ingressClassStatus('nginx', classes, ingresses);
    expect(s.name).toBe('ingress');
    expect(s.state).toBe(state);
    expect(s.detail).toMatch(detail);
    if (state === 'ok') expect(s.version).toBe('IngressClass nginx (controller example.com/nginx)');
  });
});

describe('what validate expects with INGRESS_CLASS', () => {
  it.each([
    ['Traefik', {}, true],
    ['INGRESS_CLASS', { ...EXISTING, INGRESS_CLASS: 'nginx' }, false],
  ])('%s: traefik namespace and dashboard route expected: %s', (_name, raw, traefik) => {
    const cfg = parseConfig({ STATE_DIR: '/nonexistent-ingress-class-test', ...raw });
    expect(ourNamespaces(cfg).includes('traefik')).toBe(traefik);
    expect(checkedRoutes(cfg).some((r) => r.name === 'traefik')).toBe(traefik);
    expect(checkedRoutes(cfg).length).toBe(ROUTES.length - (traefik ? 0 : 1));
  });
});

describe('endpointLines with INGRESS_CLASS', () => {
  // A user's kubeconfig (kind cluster dev) for the kubectl lines.
  const kubeconfig = path.join(makeSandbox().home, 'kubeconfig');
  fs.writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'kind-dev',
    contexts: [{ name: 'kind-dev', context: { cluster: 'kind-dev', user: 'kind-dev' } }],
    clusters: [{ name: 'kind-dev', cluster: { server: 'https://127.0.0.1:41234' } }],
  }));
  const EXISTING = { CLUSTER: 'existing', KUBECONFIG: kubeconfig };
  const cfg = parseConfig({ ...EXISTING, DOMAIN, INGRESS_CLASS: 'nginx', STATE_DIR: '/nonexistent-ingress-class-test' });
  const lines = (c = cfg, address = ingressClassAddressOf([ingress('grafana', 'nginx', { ip: '203.0.113.7' })], 'nginx')) =>
    endpointLines(c, () => true, [], address).join('\n');
  it('the address the controller published, URLs on 443, no Traefik dashboard, the names line on that address', () => {
    const out = lines();
    expect(out).toContain('Ingress      IngressClass nginx: 203.0.113.7:443 (published on Ingress monitoring/grafana)');
    expect(out).toContain(`Grafana      https://grafana.${DOMAIN}/`);
    expect(out).not.toMatch(/Traefik|traefik\./);
    expect(out).toContain(`203.0.113.7 grafana.${DOMAIN} prometheus.${DOMAIN} alertmanager.${DOMAIN} app.${DOMAIN}`);
  });
  it('without INGRESS_SERVICE it says to set it for a port-forward; with it, the port-forward to that Service', () => {
    expect(lines()).toContain('set INGRESS_SERVICE=<namespace>/<service>[:<port>] in .env to your nginx controller');
    const withService = parseConfig({ ...EXISTING, DOMAIN, INGRESS_CLASS: 'nginx', INGRESS_SERVICE: 'ingress-nginx/ingress-nginx-controller:https', STATE_DIR: '/nonexistent-ingress-class-test' });
    expect(lines(withService)).toContain('--namespace ingress-nginx port-forward service/ingress-nginx-controller 8443:https');
  });
  it('no address yet: says so and why', () => {
    expect(lines(cfg, ingressClassAddressOf([ingress('grafana', 'nginx')], 'nginx'))).toContain('Ingress      no address: the nginx controller has published no address on our Ingresses yet');
  });
});

// ---------------------------------------------------------------------------------------------
// The phases against the stand-in tools
// ---------------------------------------------------------------------------------------------

const NGINX_CLASS = { apiVersion: 'networking.k8s.io/v1', kind: 'IngressClass', metadata: { name: 'nginx' }, spec: { controller: 'k8s.io/ingress-nginx' } };

describe('traefik phase with INGRESS_CLASS against the stand-in tools', { timeout: 60_000 }, () => {
  const withClass = (sb: Sandbox, extra: Record<string, string> = {}) => ({ ...existingClusterEnv(sb), DOMAIN, INGRESS_CLASS: 'nginx', ...extra });

  it('applies our Ingresses and Secrets, no Traefik; a re-run changes nothing; endpoints prints the published address', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    sb.scenario({ kubectl: { objects: { 'IngressClass//nginx': NGINX_CLASS }, ingressControllers: { nginx: { ip: '203.0.113.7' } } } });
    const r = await sb.run('traefik', [], withClass(sb));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('IngressClass nginx (INGRESS_CLASS: the cluster\'s ingress controller serves our routes, no Traefik) (');
    expect(r.stdout).toMatch(/found \(controller k8s\.io\/ingress-nginx\)/);
    const objects = sb.state().kubectl.objects;
    const keys = Object.keys(objects);
    expect(keys.filter((k) => k.startsWith('Ingress/')).sort()).toEqual(['Ingress/monitoring/alertmanager', 'Ingress/monitoring/grafana', 'Ingress/monitoring/prometheus']);
    expect(objects['Secret/monitoring/platform-tls'].type).toBe('kubernetes.io/tls');
    // Nothing of Traefik: no chart, no traefik namespace, no Traefik CRD objects.
    expect(r.calls.filter((c) => c.tool === 'helm')).toEqual([]);
    expect(keys.filter((k) => /^(IngressRoute|TLSStore|Middleware)\//.test(k) || k === 'Namespace//traefik')).toEqual([]);
    expect(objects['Namespace//monitoring'].metadata.labels['talos-local.platform/owner']).toBe('talos-local');
    // The user's IngressClass is as it was.
    expect(objects['IngressClass//nginx']).toEqual(NGINX_CLASS);

    const again = await sb.run('traefik', [], withClass(sb));
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing changed/);
    expect(mutatingLines(again.calls)).toEqual([]);

    const e = await sb.run('endpoints', [], withClass(sb));
    expect(e.code, e.stdout + e.stderr).toBe(0);
    expect(e.stdout).toContain('IngressClass nginx: 203.0.113.7:443 (published on Ingress monitoring/');
    expect(e.stdout).toContain(`https://grafana.${DOMAIN}/`);

    // status: an ingress line with the class in the place of Traefik's release (the rest is not deployed here).
    const st = await sb.run('status', [], withClass(sb));
    expect(st.stdout).toMatch(/^ingress +ok +IngressClass nginx \(controller k8s\.io\/ingress-nginx\) +3 Ingresses of ours \(grafana, prometheus, alertmanager\), address 203\.0\.113\.7$/m);
    expect(st.stdout).not.toMatch(/^traefik /m);
    expect(st.calls.some((c) => c.tool === 'helm' && c.argv.includes('traefik'))).toBe(false);
  });

  it("destroy: our namespace with our Ingresses and Secret goes; the user's controller (its class, namespace, Service) is not touched", async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const controller = {
      'IngressClass//nginx': NGINX_CLASS,
      'Namespace//ingress-nginx': { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ingress-nginx' } },
      'Service/ingress-nginx/ingress-nginx-controller': { apiVersion: 'v1', kind: 'Service', metadata: { name: 'ingress-nginx-controller', namespace: 'ingress-nginx' }, spec: { type: 'LoadBalancer', ports: [{ name: 'https', port: 443 }] } },
    };
    sb.scenario({ kubectl: { objects: controller } });
    expect((await sb.run('traefik', [], withClass(sb))).code).toBe(0);
    const r = await sb.run('talos', ['--destroy', '--yes'], withClass(sb));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const deletes = mutatingLines(r.calls).filter((l) => / delete /.test(l));
    expect(deletes).toEqual([expect.stringMatching(/ delete namespace monitoring --ignore-not-found/)]);
    expect(mutatingLines(r.calls).some((l) => /ingress-nginx|ingressclass/.test(l))).toBe(false);
    const objects = sb.state().kubectl.objects;
    for (const [key, object] of Object.entries(controller)) expect(objects[key]).toEqual(object);
    expect(objects).not.toHaveProperty(['Namespace//monitoring']);
  });

  it("the sample app's route is an Ingress of the class with its Secret (no IngressRoute: no Traefik CRD there); traefik again changes nothing", async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const kindNodes = ['dev-control-plane', 'dev-worker'].map((n) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: n, labels: {} }, spec: { providerID: `kind://docker/dev/${n}` }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [] } }));
    sb.scenario({ kubectl: { nodes: kindNodes, objects: { 'IngressClass//nginx': NGINX_CLASS } } });
    expect((await sb.run('traefik', [], withClass(sb))).code).toBe(0);
    const app = await sb.run('sample-app', [], withClass(sb));
    expect(app.code, app.stdout + app.stderr).toBe(0);
    const objects = sb.state().kubectl.objects;
    expect(objects['Ingress/sample-app/app'].spec).toMatchObject({ ingressClassName: 'nginx', tls: [{ hosts: [`app.${DOMAIN}`], secretName: PLATFORM_TLS_SECRET }] });
    expect(objects['Ingress/sample-app/app'].spec.rules[0].http.paths[0].backend.service).toEqual({ name: 'sample-app', port: { number: 80 } });
    expect(objects['Secret/sample-app/platform-tls'].data).toEqual(objects['Secret/monitoring/platform-tls'].data);
    expect(Object.keys(objects).filter((k) => k.startsWith('IngressRoute/'))).toEqual([]);
    const again = await sb.run('traefik', [], withClass(sb));
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain('Secret platform-tls in monitoring, sample-app');
    expect(mutatingLines(again.calls)).toEqual([]);
  });

  it('a class the cluster does not have: refused with the classes it has, before any change (no certificate made, nothing applied)', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    sb.scenario({ kubectl: { objects: { 'IngressClass//traefik': { ...NGINX_CLASS, metadata: { name: 'traefik' } } } } });
    const r = await sb.run('traefik', [], withClass(sb));
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toContain('INGRESS_CLASS="nginx": the cluster has no IngressClass "nginx" (it has traefik)');
    expect(mutatingLines(r.calls)).toEqual([]);
    expect(fs.existsSync(path.join(sb.stateDir, 'certs'))).toBe(false);
  });

  it('CLUSTER=talos with INGRESS_CLASS: refused before any tool runs', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const r = await sb.run('traefik', [], { INGRESS_CLASS: 'nginx' });
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toContain('INGRESS_CLASS="nginx" needs CLUSTER=existing');
    expect(r.calls).toEqual([]);
  });

  it('a Traefik the platform installed before is left running, with how to remove it', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    sb.scenario({ kubectl: { objects: { 'IngressClass//nginx': NGINX_CLASS } } });
    fs.writeFileSync(path.join(sb.stateDir, 'installed.log'), `${JSON.stringify({ releases: ['traefik/traefik'] })}\n`);
    const r = await sb.run('traefik', [], withClass(sb));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Traefik \(release traefik\/traefik, installed here by the platform before INGRESS_CLASS was set\) is left as it is.*uninstall traefik --namespace traefik/s);
    expect(r.calls.filter((c) => c.tool === 'helm')).toEqual([]);
  });
});

describe('validate with INGRESS_CLASS against the stand-in tools', { timeout: 60_000 }, () => {
  const NAME = SHOP;
  /** ingress-nginx's controller Service as its chart makes it: https by name on 443. */
  const CONTROLLER_SERVICE = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'ingress-nginx-controller', namespace: 'ingress-nginx' },
    spec: { type: 'LoadBalancer', ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'https', port: 443, targetPort: 'https' }] },
  };
  let front: Awaited<ReturnType<typeof startShopFront>>;
  beforeAll(async () => {
    front = await startShopFront(DOMAIN);
  });
  afterAll(() => front.close());

  const sandbox = (objects: unknown[] = []) => shopSandbox(DOMAIN, front, CONTROLLER_SERVICE, { forwardTo: 443, objects });

  it('INGRESS_SERVICE: the routes through a port-forward to the controller\'s Service, names as SNI and Host, our CA', async () => {
    const sb = sandbox();
    const r = await sb.run('validate', ['--app', NAME, '--wait', '0'], {
      ...existingClusterEnv(sb), DOMAIN, INGRESS_CLASS: 'nginx', INGRESS_SERVICE: 'ingress-nginx/ingress-nginx-controller:https', HTTPS_PORT: String(await closedPort()),
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const local = Number(/via kubectl port-forward 127\.0\.0\.1:(\d+)/.exec(r.stdout)?.[1]);
    expect(checkLines(r.stdout)).toContain(`✓ App ${NAME}: route https://${NAME}.${DOMAIN}/ via kubectl port-forward 127.0.0.1:${local}`);
    expect(r.stdout).toContain(`INGRESS_CLASS=nginx: the routes are checked through kubectl port-forward 127.0.0.1:${local} → service/ingress-nginx-controller (https) in ingress-nginx (INGRESS_SERVICE)`);
    expect(r.calls.filter((c) => c.argv.includes('port-forward')).map((c) => c.argv.slice(c.argv.indexOf('port-forward')).join(' '))).toEqual(['port-forward --namespace ingress-nginx service/ingress-nginx-controller :https']);
    expect(front.seen).toContain(`${NAME}.${DOMAIN} ${NAME}.${DOMAIN} /`);
  });

  it('a published address this machine cannot reach (an in-cluster ClusterIP, say): the routes check fails naming INGRESS_SERVICE, nothing is dialled through it', async () => {
    // 127.0.0.1:443: nothing listens there on a test machine, as a ClusterIP answers nothing outside the cluster.
    const withIngress = sandbox([{ apiVersion: 'networking.k8s.io/v1', ...ingress('grafana', 'nginx', { ip: '127.0.0.1' }) }]);
    const r = await withIngress.run('validate', ['--app', NAME, '--wait', '0'], { ...existingClusterEnv(withIngress), DOMAIN, INGRESS_CLASS: 'nginx' });
    expect(r.code).toBe(1);
    expect(checkLines(r.stdout)).toEqual([`✓ App ${NAME}: pods of Deployment ${NAME}/${NAME} Ready`, '✗ Routes reachable from this machine', '✗ Checks through the routes (metrics, logs, traces, Grafana, freshness, alerting)']);
    expect(r.stdout + r.stderr).toMatch(/the address the controller published on our Ingresses, 127\.0\.0\.1:443, does not answer from this machine \(connect ECONNREFUSED/);
    expect(r.stdout + r.stderr).toContain('Set INGRESS_SERVICE=<namespace>/<service>[:<port>] in .env');
    expect(r.calls.some((c) => c.argv.includes('port-forward'))).toBe(false);
  });

  it('neither INGRESS_SERVICE nor an address on our Ingresses: stops with a message naming INGRESS_SERVICE and the fix, no forward', async () => {
    const sb = sandbox([{ apiVersion: 'networking.k8s.io/v1', ...ingress('grafana', 'nginx') }]);
    const r = await sb.run('validate', ['--app', NAME, '--wait', '0'], { ...existingClusterEnv(sb), DOMAIN, INGRESS_CLASS: 'nginx' });
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toContain('INGRESS_CLASS=nginx: the routes cannot be reached: INGRESS_SERVICE is not set, and the nginx controller has published no address');
    expect(r.stdout + r.stderr).toContain("Set INGRESS_SERVICE=<namespace>/<service>[:<port>] in .env to your nginx controller's Service");
    expect(r.calls.some((c) => c.argv.includes('port-forward'))).toBe(false);
  });
});
