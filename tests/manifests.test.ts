// Manifests of the storage and traefik phases, validated offline against the real schemas
// (kubernetes-models, @kubernetes-models/traefik), and checked against the contracts between phases.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret } from 'kubernetes-models/v1';
import { StorageClass } from 'kubernetes-models/storage.k8s.io/v1';
import { IngressRoute, Middleware, TLSStore } from '@kubernetes-models/traefik/traefik.io/v1alpha1';
import { INGRESS_HOSTS, INGRESS_NODE_PORTS, mergeValues } from '../scripts/lib.ts';
import { smokeManifest } from '../scripts/storage.ts';
import { ROUTED_HERE, missingNamespaces, routesYaml, tlsSecretYaml, traefikValues } from '../scripts/traefik.ts';
import { PROJECT_DIR } from './helpers.ts';

const models: Record<string, new (o: any) => { validate(): void }> = {
  Namespace, ConfigMap, PersistentVolumeClaim, Pod, Secret, StorageClass, IngressRoute, Middleware, TLSStore,
};
const docsOf = (text: string) => YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean) as any[];
const read = (rel: string) => fs.readFileSync(path.join(PROJECT_DIR, rel), 'utf8');
const validate = (docs: any[]) => {
  for (const d of docs) {
    expect(models[d.kind], `a model for ${d.kind}`).toBeDefined();
    expect(() => new models[d.kind](d).validate(), `${d.kind}/${d.metadata?.name}`).not.toThrow();
  }
};

describe('manifests/storage', () => {
  it('the patches are valid objects that name upstream objects', () => {
    const patches = ['namespace-psa.yaml', 'storageclass-default.yaml', 'config-path.yaml'].flatMap((f) => docsOf(read(`manifests/storage/${f}`)));
    // A StorageClass patch has no provisioner; the model requires one, the upstream object has it.
    validate(patches.map((p) => (p.kind === 'StorageClass' ? { provisioner: 'rancher.io/local-path', ...p } : p)));
    expect(patches.map((p) => `${p.kind}/${p.metadata.name}`)).toEqual(['Namespace/local-path-storage', 'StorageClass/local-path', 'ConfigMap/local-path-config']);
    expect(JSON.parse(patches[2].data['config.json']).nodePathMap[0].paths).toEqual(['/var/local-path-provisioner']);
  });

  it('the kustomization takes the upstream manifest by URL at a placeholder version and lists every patch', () => {
    const k = YAML.parse(read('manifests/storage/kustomization.yaml'));
    expect(k.resources).toEqual(['https://raw.githubusercontent.com/rancher/local-path-provisioner/${LOCAL_PATH_PROVISIONER_VERSION}/deploy/local-path-storage.yaml']);
    for (const p of k.patches) expect(fs.existsSync(path.join(PROJECT_DIR, 'manifests/storage', p.path)), p.path).toBe(true);
  });

  it('the smoke test objects are valid and leave no placeholder', () => {
    const text = smokeManifest('t0k3n');
    expect(text).not.toMatch(/\$\{/);
    validate(docsOf(text));
  });
});

describe('manifests/traefik', () => {
  const routes = docsOf(routesYaml('local.dev'));

  it('TLSStore, routes, middleware, namespaces and the TLS Secret are valid objects', () => {
    validate(docsOf(read('manifests/traefik/tlsstore.yaml')));
    validate(routes);
    validate(docsOf(read('manifests/traefik/backend-namespaces.yaml')));
    validate(docsOf(tlsSecretYaml('CERT', 'KEY')));
  });

  it('TLSStore "default" in traefik uses Secret platform-tls', () => {
    const [store] = docsOf(read('manifests/traefik/tlsstore.yaml'));
    expect(store).toMatchObject({ kind: 'TLSStore', metadata: { name: 'default', namespace: 'traefik' }, spec: { defaultCertificate: { secretName: 'platform-tls' } } });
  });

  it('routes each host to the Service of the contract, in that Service\'s namespace, over HTTPS only', () => {
    const table = Object.fromEntries(
      routes.filter((r) => r.kind === 'IngressRoute').map((r) => {
        const rule = r.spec.routes[0];
        const svc = rule.services[0];
        expect(r.spec.entryPoints).toEqual(['websecure']);
        expect(r.spec.tls).toEqual({});
        return [rule.match, `${r.metadata.namespace}/${svc.name}:${svc.port ?? svc.kind}`];
      }),
    );
    expect(table).toEqual({
      'Host(`grafana.local.dev`)': 'monitoring/grafana:80',
      'Host(`prometheus.local.dev`)': 'monitoring/prometheus-server:80',
      'Host(`alertmanager.local.dev`)': 'monitoring/prometheus-alertmanager:9093',
      'Host(`traefik.local.dev`)': 'traefik/api@internal:TraefikService',
    });
    // app.<DOMAIN> is routed by the sample app itself (scripts/app.ts), like every app.
    expect(Object.keys(table).length).toBe(ROUTED_HERE.length);
    expect(ROUTED_HERE).toEqual(INGRESS_HOSTS.filter((h) => h !== 'app'));
  });

  it('renders DOMAIN everywhere and leaves no placeholder', () => {
    const text = routesYaml('localhost');
    expect(text).not.toMatch(/\$\{/);
    expect(text).not.toMatch(/local\.dev/);
    for (const h of ROUTED_HERE) expect(text).toContain(`Host(\`${h}.localhost\`)`);
    expect(text).not.toContain('Host(`app.localhost`)');
  });

  it('the dashboard middleware sends "/" (only) to /dashboard/', () => {
    const mw = routes.find((r) => r.kind === 'Middleware');
    // Traefik matches the regex against the full URL and expands $1 like Go's regexp.
    const re = new RegExp(mw.spec.redirectRegex.regex);
    const apply = (url: string) => (re.test(url) ? url.replace(re, mw.spec.redirectRegex.replacement) : url);
    expect(apply('https://traefik.local.dev/')).toBe('https://traefik.local.dev/dashboard/');
    expect(apply('https://traefik.local.dev:8443')).toBe('https://traefik.local.dev:8443/dashboard/');
    expect(apply('https://traefik.local.dev/dashboard/')).toBe('https://traefik.local.dev/dashboard/');
    expect(apply('https://traefik.local.dev/api/overview')).toBe('https://traefik.local.dev/api/overview');
    const dash = routes.find((r) => r.metadata.name === 'dashboard');
    expect(dash.spec.routes[0].middlewares).toEqual([{ name: mw.metadata.name }]);
    expect(dash.metadata.namespace).toBe(mw.metadata.namespace);
  });

  it.each([
    [[], ['monitoring']],
    [['monitoring'], []],
    [['monitoring', 'traefik'], []],
  ])('missingNamespaces with %j existing → %j, with the contract labels', (existing, want) => {
    const missing = missingNamespaces(routes, existing);
    expect(missing.map((n) => n.metadata.name)).toEqual(want);
    const mon = missing.find((n) => n.metadata.name === 'monitoring');
    if (mon) expect(mon.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });

});

describe('helm-values/traefik.yaml (the design; the real chart render is in traefik-chart.test.ts)', () => {
  const values = mergeValues(...traefikValues({ HTTP_PORT: 8080, HTTPS_PORT: 8443 })) as any;

  it('runs a DaemonSet on workers only', () => {
    expect(values.deployment.kind).toBe('DaemonSet');
    expect(values.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'DoesNotExist' }] },
    ]);
    expect(values.hostNetwork).toBeUndefined();
    expect(values.ports.web.hostPort).toBeUndefined();
  });

  it('exposes a NodePort Service on INGRESS_NODE_PORTS with externalTrafficPolicy Cluster', () => {
    expect(values.service.spec).toEqual({ type: 'NodePort', externalTrafficPolicy: 'Cluster' });
    expect(values.ports.web.nodePort).toBe(INGRESS_NODE_PORTS.http);
    expect(values.ports.websecure.nodePort).toBe(INGRESS_NODE_PORTS.https);
  });

  it('redirects HTTP to HTTPS on the host\'s HTTPS_PORT, not permanently', () => {
    expect(values.ports.web.http.redirections.entryPoint).toEqual({ to: 'websecure', scheme: 'https', permanent: false });
    expect(values.ports.websecure.exposedPort).toBe(8443);
    expect(values.ports.web.exposedPort).toBe(8080);
  });

  it('leaves the dashboard route to manifests/traefik', () => {
    expect(values.ingressRoute.dashboard.enabled).toBe(false);
    expect(values.api.dashboard).toBe(true);
  });
});
