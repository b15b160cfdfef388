// Traefik phase against the stand-in tools: install, re-run without a mutating call, DOMAIN and
// HTTPS_PORT changes, missing cluster, backend namespaces, and `--trust-ca` (plan per OS).
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { PINNED } from '../scripts/lib.ts';
import { TRUST_NAME, dnsNames, trustPlan } from '../scripts/traefik.ts';
import { isMutating, makeSandbox, type Sandbox, type ToolCall } from './helpers.ts';

const line = (c: ToolCall) => `${c.tool} ${c.argv.filter((a) => !a.includes('kubeconfig')).join(' ')}`;
const mutating = (calls: ToolCall[]) => calls.filter(isMutating).map(line);
const objects = (sb: Sandbox) => sb.state().kubectl.objects as Record<string, any>;
const release = (sb: Sandbox) => sb.state().helm.releases['traefik/traefik'];
const secretCert = (sb: Sandbox) =>
  new X509Certificate(Buffer.from(objects(sb)['Secret/traefik/platform-tls'].data['tls.crt'], 'base64'));

describe('traefik phase against the stand-in tools', { timeout: 60_000 }, () => {
  let sb: Sandbox;
  beforeEach(() => {
    sb = makeSandbox();
  });

  it('without a cluster: says to run `task talos` first and changes nothing (no certificate either)', async () => {
    const r = await sb.run('traefik');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Run `task talos` first/);
    expect(mutating(r.calls)).toEqual([]);
    expect(fs.existsSync(path.join(sb.stateDir, 'certs'))).toBe(false);
  });

  it('installs chart, certificate, TLSStore, namespaces and routes; a re-run makes no mutating call', async () => {
    sb.createCluster();
    const r = await sb.run('traefik');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // Order: chart (CRDs) before the custom resources that need them.
    expect(mutating(r.calls)).toEqual([
      expect.stringMatching(/^helm upgrade --install traefik traefik --repo https:\/\/traefik\.github\.io\/charts --version 41\.3\.0 --namespace traefik/),
      'kubectl apply -f -',
      'kubectl apply -f -',
      'kubectl apply -f -',
    ]);
    const rel = release(sb);
    expect(rel.chart).toBe(`traefik-${PINNED.charts.traefik.version}`);
    expect(rel.values.deployment.kind).toBe('DaemonSet');
    expect(rel.values.service.spec.type).toBe('NodePort');
    expect(rel.values.ports.websecure).toMatchObject({ nodePort: 30443, exposedPort: 18443 });
    expect(rel.values.ports.web).toMatchObject({ nodePort: 30080, exposedPort: 18080 });

    const o = objects(sb);
    expect(o['TLSStore/traefik/default'].spec.defaultCertificate.secretName).toBe('platform-tls');
    expect(o['Secret/traefik/platform-tls'].type).toBe('kubernetes.io/tls');
    expect(dnsNames(secretCert(sb))).toContain('*.local.dev');
    expect(Buffer.from(o['Secret/traefik/platform-tls'].data['tls.crt'], 'base64').toString()).toBe(fs.readFileSync(path.join(sb.stateDir, 'certs/tls.crt'), 'utf8'));
    expect(o['IngressRoute/monitoring/grafana'].spec.routes[0].match).toBe('Host(`grafana.local.dev`)');
    expect(o['IngressRoute/sample-app/app'].spec.routes[0].match).toBe('Host(`app.local.dev`)');
    expect(o['IngressRoute/traefik/dashboard'].spec.routes[0].services[0]).toEqual({ name: 'api@internal', kind: 'TraefikService' });
    expect(o['Namespace//monitoring'].metadata.labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
    expect(o['Namespace//sample-app']).toBeDefined();
    expect(r.stdout).toMatch(/https:\/\/grafana\.local\.dev:18443\//);
    expect(r.stdout).toMatch(/task hosts/);
    expect(r.stdout).toMatch(/task trust-ca/);

    const again = await sb.run('traefik');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(mutating(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/nothing changed/);
  });

  it('leaves existing backend namespaces alone (their phases own them)', async () => {
    sb.createCluster();
    const mine = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'monitoring', labels: { owner: 'observability' } } };
    sb.scenario({ kubectl: { objects: { 'Namespace//monitoring': mine } } });
    const r = await sb.run('traefik');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(objects(sb)['Namespace//monitoring']).toEqual(mine);
    expect(r.stdout).toMatch(/created sample-app /);
  });

  it('DOMAIN change: new certificate and routes, same CA, no Helm upgrade', async () => {
    sb.createCluster();
    await sb.run('traefik');
    const ca = fs.readFileSync(path.join(sb.stateDir, 'certs/ca.crt'), 'utf8');
    const r = await sb.run('traefik', [], { DOMAIN: 'localhost' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls)).toEqual(['kubectl apply -f -', 'kubectl apply -f -']);
    expect(dnsNames(secretCert(sb))).toEqual(expect.arrayContaining(['*.localhost', 'localhost', 'grafana.localhost']));
    expect(fs.readFileSync(path.join(sb.stateDir, 'certs/ca.crt'), 'utf8')).toBe(ca);
    expect(objects(sb)['IngressRoute/monitoring/grafana'].spec.routes[0].match).toBe('Host(`grafana.localhost`)');
    expect(r.stdout).toMatch(/\*\.localhost resolves to 127\.0\.0\.1 by itself/);
    expect(r.stdout).not.toMatch(/A new CA was made/);
  });

  it('HTTPS_PORT change: Helm upgrade (the redirect names the new port), nothing else', async () => {
    sb.createCluster();
    await sb.run('traefik');
    const r = await sb.run('traefik', [], { HTTPS_PORT: '28443' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls)).toEqual([expect.stringMatching(/^helm upgrade --install traefik/)]);
    expect(r.stdout).toMatch(/upgraded traefik-41\.3\.0 \(values changed\)/);
    expect(release(sb).values.ports.websecure.exposedPort).toBe(28443);
  });

  it('a failing chart install stops the phase before any route is applied', async () => {
    sb.createCluster();
    sb.scenario({ failures: [{ tool: 'helm', argv: ['upgrade'], code: 1, stderr: 'Error: context deadline exceeded\n' }] });
    const r = await sb.run('traefik');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/context deadline exceeded/);
    expect(mutating(r.calls).filter((c) => c.startsWith('kubectl'))).toEqual([]);
  });
});

describe('trust-ca', { timeout: 60_000 }, () => {
  it('before `task traefik`: says to run it', async () => {
    const sb = makeSandbox();
    const r = await sb.run('traefik', ['--trust-ca']);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Run `task traefik` first/);
  });

  it('without a terminal prints the exact commands and runs none', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    await sb.run('traefik');
    const r = await sb.run('traefik', ['--trust-ca']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/nothing was run/);
    expect(r.stdout).toContain(path.join(sb.stateDir, 'certs', 'ca.crt'));
    expect(r.calls).toEqual([]);
  });

  const ca = '/s/certs/ca.crt';
  const none = () => false;
  it.each([
    ['darwin', '', none, [['sudo', 'security', 'add-trusted-cert', '-d', '-r', 'trustRoot', '-k', '/Library/Keychains/System.keychain', ca]]],
    ['linux', 'ID=ubuntu\nID_LIKE=debian\n', none, [['sudo', 'cp', ca, `/usr/local/share/ca-certificates/${TRUST_NAME}.crt`], ['sudo', 'update-ca-certificates']]],
    ['linux', 'ID=fedora\n', none, [['sudo', 'cp', ca, `/etc/pki/ca-trust/source/anchors/${TRUST_NAME}.crt`], ['sudo', 'update-ca-trust']]],
    ['linux', 'ID=gentoo\n', none, [['sudo', 'trust', 'anchor', '--store', ca]]],
    ['linux', 'ID=debian\n', (t: string) => t === 'certutil', [
      ['sudo', 'cp', ca, `/usr/local/share/ca-certificates/${TRUST_NAME}.crt`], ['sudo', 'update-ca-certificates'],
      ['certutil', '-d', 'sql:/home/u/.pki/nssdb', '-A', '-t', 'C,,', '-n', TRUST_NAME, '-i', ca]]],
    ['win32', '', none, [['certutil', '-user', '-addstore', 'Root', ca]]],
  ] as const)('%s %j: commands', (platform, osRelease, tools, want) => {
    const plan = trustPlan(platform as NodeJS.Platform, ca, tools, osRelease, '/home/u', true);
    expect(plan.commands).toEqual(want);
    expect(plan.notes.join('\n')).toMatch(/Firefox/);
  });

  it('no certutil command when Chrome\'s NSS store does not exist', () => {
    const plan = trustPlan('linux', ca, (t) => t === 'certutil', 'ID=debian\n', '/home/u', false);
    expect(plan.commands.map((c) => c[0])).toEqual(['sudo', 'sudo']);
  });

  it('WSL: also tells how to trust the CA in Windows, where the browser runs', () => {
    const plan = trustPlan('linux', ca, none, 'ID=ubuntu\nLinux version 5.15.153.1-microsoft-standard-WSL2', '/home/u');
    expect(plan.notes[0]).toMatch(/Import-Certificate/);
  });
});
