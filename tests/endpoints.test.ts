// `task endpoints`: every URL, where the Grafana admin password is, the CA, the KUBECONFIG line.
import fs from 'node:fs';
import path from 'node:path';
import kleur from 'kleur';
import { describe, expect, it, vi } from 'vitest';
import { endpointLines, ingressAddressOf } from '../scripts/endpoints.ts';
import { parseConfig } from '../scripts/lib.ts';
import { makeSandbox, existingClusterEnv } from './helpers.ts';

// Each test starts scripts as processes (node + tsx + stand-in tools): room for a loaded CI machine.
vi.setConfig({ testTimeout: 60000 });

kleur.enabled = false;
const cfg = (over: Record<string, string> = {}) => parseConfig({ STATE_DIR: '/tmp/st', ...over });
/** A user's kubeconfig with a kind cluster (current context kind-dev), for CLUSTER=existing. */
const userKubeconfig = () => {
  const file = path.join(makeSandbox().home, 'kubeconfig');
  fs.writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'kind-dev',
      contexts: [{ name: 'kind-dev', context: { cluster: 'kind-dev', user: 'kind-dev' } }],
      clusters: [{ name: 'kind-dev', cluster: { server: 'https://127.0.0.1:41234' } }],
    }),
  );
  return file;
};

describe('endpoints', () => {
  it('lists every URL, the password file, the CA and the KUBECONFIG line; names what is missing', () => {
    const text = endpointLines(cfg({ HTTPS_PORT: '8443', HOST_IP: '192.168.1.20', DOMAIN: 'local.dev' }), (f) => f !== '/tmp/st/grafana-admin-password').join('\n');
    for (const u of ['https://grafana.local.dev:8443/', 'https://prometheus.local.dev:8443/', 'https://alertmanager.local.dev:8443/', 'https://traefik.local.dev:8443/dashboard/', 'https://app.local.dev:8443/']) {
      expect(text).toContain(u);
    }
    expect(text).toContain('user admin, password in /tmp/st/grafana-admin-password (not there yet: run `task observability`)');
    expect(text).toContain('CA certificate /tmp/st/certs/ca.crt\n');
    expect(text).toContain('192.168.1.20 grafana.local.dev prometheus.local.dev alertmanager.local.dev traefik.local.dev app.local.dev');
    expect(text).toContain('localhost:5001');
    expect(text).toMatch(/^ {2}export KUBECONFIG=\/tmp\/st\/kubeconfig$/m);
  });

  it('lists each app task app deployed (route and dashboard), and its host in the hosts line', () => {
    const shop = { name: 'shop', namespace: 'shop', host: 'shop.local.dev', image: 'x', metricsPort: null, metricsPath: null, dashboard: 'app-shop' };
    const sample = { ...shop, name: 'sample-app', namespace: 'sample-app', host: 'app.local.dev', dashboard: 'app-sample-app' };
    const text = endpointLines(cfg({ DOMAIN: 'local.dev' }), () => true, [sample, shop]).join('\n');
    expect(text).toMatch(/App shop +https:\/\/shop\.local\.dev\/ +dashboard https:\/\/grafana\.local\.dev\/d\/app-shop/);
    expect(text).not.toMatch(/App sample-app/);
    expect(text).toContain('127.0.0.1 grafana.local.dev prometheus.local.dev alertmanager.local.dev traefik.local.dev app.local.dev shop.local.dev');
  });

  it('DOMAIN=localhost (the default) needs no hosts line', () => {
    const text = endpointLines(cfg(), () => true).join('\n');
    expect(text).not.toContain('/etc/hosts');
    expect(text).toContain('https://grafana.localhost/');
  });

  it('runs as a script: exit 0 with the state dir paths; a bad .env value exits 1 naming the key', async () => {
    const sb = makeSandbox();
    fs.mkdirSync(sb.stateDir, { recursive: true });
    fs.writeFileSync(path.join(sb.stateDir, 'grafana-admin-password'), 'x\n');
    const ok = await sb.run('endpoints');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(`password in ${path.join(sb.stateDir, 'grafana-admin-password')}\n`);
    expect(ok.stdout).toContain(`export KUBECONFIG=${path.join(sb.stateDir, 'kubeconfig')} (not there yet: run \`task talos\`)`);
    expect(ok.stdout).toContain(`https://grafana.localhost:${sb.ports.HTTPS_PORT}/`);
    expect(ok.calls).toEqual([]);
    const bad = await sb.run('endpoints', [], { DOMAIN: 'Bad_Domain' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('DOMAIN="Bad_Domain" is not allowed');
  });
});

describe('endpoints with CLUSTER=existing', () => {
  const ready = { conditions: [{ type: 'Ready', status: 'True' }] };
  const notReady = { conditions: [{ type: 'Ready', status: 'False' }] };
  const nodeAt = (name: string, status: object, addresses: [string, string][]) => ({ metadata: { name }, status: { ...status, addresses: addresses.map(([type, address]) => ({ type, address })) } });
  const ports = [{ name: 'web', port: 80, nodePort: 30080 }, { name: 'websecure', port: 443, nodePort: 30443 }];
  const lb = (ingress: object[]) => ({ spec: { type: 'LoadBalancer', ports }, status: { loadBalancer: { ingress } } });
  const nodePort = { spec: { type: 'NodePort', ports } };

  it.each([
    ['LoadBalancer with an IP (k3d, MetalLB, GKE)', lb([{ ip: '172.18.0.3', ipMode: 'VIP' }]), [], { address: '172.18.0.3', port: 443, isHostname: false }],
    ['LoadBalancer with a hostname (EKS)', lb([{ hostname: 'a1b2-123.eu-west-1.elb.amazonaws.com' }]), [], { address: 'a1b2-123.eu-west-1.elb.amazonaws.com', port: 443, isHostname: true }],
    ['NodePort: a Ready node\'s ExternalIP first', nodePort, [nodeAt('w1', ready, [['InternalIP', '10.0.0.5'], ['ExternalIP', '34.1.2.3']])], { address: '34.1.2.3', port: 30443 }],
    ['NodePort (kind): the InternalIP, a not-Ready node skipped', nodePort, [nodeAt('bad', notReady, [['InternalIP', '172.18.0.9']]), nodeAt('dev-control-plane', ready, [['InternalIP', '172.18.0.2'], ['Hostname', 'dev-control-plane']])], { address: '172.18.0.2', port: 30443 }],
  ])('%s', (_name, service, nodes, want) => {
    expect(ingressAddressOf(service, nodes)).toMatchObject(want);
  });

  it.each([
    ['a LoadBalancer still pending', lb([]), [nodeAt('n', ready, [['InternalIP', '10.0.0.1']])], /no address yet/],
    ['a NodePort without Ready nodes', nodePort, [nodeAt('n', notReady, [['InternalIP', '10.0.0.1']])], /no Ready node/],
    ['a Service without the websecure port', { spec: { type: 'NodePort', ports: [ports[0]] } }, [], /no port "websecure"/],
  ])('%s: says why there is no address', (_name, service, nodes, why) => {
    const r = ingressAddressOf(service, nodes);
    expect('missing' in r && r.missing).toMatch(why);
  });

  it('prints the URLs on the address and port the ingress got, the names line, the port-forward and the user\'s own context', () => {
    const c = cfg({ CLUSTER: 'existing', KUBECONFIG: userKubeconfig(), KUBE_CONTEXT: 'kind-dev', DOMAIN: 'dev.example' });
    const text = endpointLines(c, () => true, [], { address: '172.18.0.2', port: 30443, how: 'NodePort 30443 on node dev-control-plane (InternalIP 172.18.0.2)' }).join('\n');
    expect(text).toContain('Ingress      Traefik Service NodePort 30443 on node dev-control-plane (InternalIP 172.18.0.2)');
    expect(text).toContain('Grafana      https://grafana.dev.example:30443/');
    expect(text).toContain('172.18.0.2 grafana.dev.example prometheus.dev.example alertmanager.dev.example traefik.dev.example app.dev.example');
    expect(text).toContain('curl --resolve grafana.dev.example:30443:172.18.0.2');
    expect(text).toMatch(/kubectl --kubeconfig \S+ --context kind-dev --namespace traefik port-forward service\/traefik 8443:websecure/);
    expect(text).toContain('context kind-dev');
    expect(text).not.toContain('export KUBECONFIG');
    expect(text).not.toContain('localhost:5001');
  });

  it('a load balancer\'s hostname asks for a CNAME; IMAGE_REGISTRY is named', () => {
    const c = cfg({ CLUSTER: 'existing', KUBECONFIG: userKubeconfig(), IMAGE_REGISTRY: 'ghcr.io/me', DOMAIN: 'obs.example.com' });
    const text = endpointLines(c, () => true, [], { address: 'x.elb.amazonaws.com', port: 443, how: 'LoadBalancer x.elb.amazonaws.com:443', isHostname: true }).join('\n');
    expect(text).toContain('Grafana      https://grafana.obs.example.com/');
    expect(text).toContain('must point at x.elb.amazonaws.com: a DNS CNAME record');
    expect(text).toContain('Images       ghcr.io/me');
  });

  it('without an address says why, and still prints the port-forward', () => {
    const text = endpointLines(cfg({ CLUSTER: 'existing', KUBECONFIG: userKubeconfig() }), () => true, [], { missing: 'the LoadBalancer has no address yet' }).join('\n');
    expect(text).toContain('Ingress      no address: the LoadBalancer has no address yet');
    expect(text).toContain('port-forward service/traefik');
  });

  it('runs as a script: reads the Service and nodes once through kubectl and prints the LoadBalancer address', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    sb.scenario({ kubectl: { objects: { 'Service/traefik/traefik': { apiVersion: 'v1', kind: 'Service', metadata: { name: 'traefik', namespace: 'traefik' }, ...lb([{ ip: '172.18.0.3' }]) } } } });
    const r = await sb.run('endpoints', [], existingClusterEnv(sb));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('Traefik Service LoadBalancer 172.18.0.3:443');
    expect(r.stdout).toContain('https://grafana.localhost/');
    expect(r.calls.map((c) => `${c.tool} ${c.argv.filter((a) => !a.includes('kubeconfig')).join(' ')}`)).toEqual([expect.stringMatching(/^kubectl .*get nodes,services --namespace traefik --output json$/)]);
    const none = makeSandbox();
    none.createCluster();
    const before = await none.run('endpoints', [], existingClusterEnv(none));
    expect(before.code).toBe(0);
    expect(before.stdout).toContain('no address: Traefik is not installed yet: run `task traefik`');
  });
});
