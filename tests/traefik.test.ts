// Traefik phase against the stand-in tools: install, re-run without a mutating call, DOMAIN and
// HTTPS_PORT changes, missing cluster, backend namespaces, and `--trust-ca` (plan per OS).
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { PINNED, PROJECT_DIR, commandLine } from '../scripts/lib.ts';
import {
  MACOS_KEYCHAIN,
  TRUST_NAME,
  bundleHolds,
  caCommonName,
  commonNameOf,
  dnsNames,
  ensureCertificates,
  isTrusted,
  osReleaseIds,
  trustPlan,
  type CertFiles,
} from '../scripts/traefik.ts';
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
    // Order: Traefik's namespace (Pod Security restricted) before its chart; the chart (CRDs) before
    // the custom resources that need them; the routes' namespaces, then the certificate, TLSStore and
    // routes in one apply.
    expect(mutating(r.calls)).toEqual([
      'kubectl apply -f -',
      expect.stringMatching(/^helm upgrade --install traefik traefik --repo https:\/\/traefik\.github\.io\/charts --version 41\.3\.0 --namespace traefik/),
      'kubectl apply -f -',
      'kubectl apply -f -',
    ]);
    const rel = release(sb);
    expect(rel.chart).toBe(`traefik-${PINNED.charts.traefik.version}`);
    expect(rel.values.deployment.kind).toBe('DaemonSet');
    expect(rel.values.service.spec.type).toBe('NodePort');
    expect(rel.values.ports.websecure).toMatchObject({ nodePort: 30443, exposedPort: sb.ports.HTTPS_PORT });
    expect(rel.values.ports.web).toMatchObject({ nodePort: 30080, exposedPort: sb.ports.HTTP_PORT });

    const o = objects(sb);
    expect(o['TLSStore/traefik/default'].spec.defaultCertificate.secretName).toBe('platform-tls');
    expect(o['Secret/traefik/platform-tls'].type).toBe('kubernetes.io/tls');
    expect(dnsNames(secretCert(sb))).toEqual(expect.arrayContaining(['*.localhost', 'localhost', 'grafana.localhost']));
    expect(Buffer.from(o['Secret/traefik/platform-tls'].data['tls.crt'], 'base64').toString()).toBe(fs.readFileSync(path.join(sb.stateDir, 'certs/tls.crt'), 'utf8'));
    expect(o['IngressRoute/monitoring/grafana'].spec.routes[0].match).toBe('Host(`grafana.localhost`)');
    // app.<DOMAIN> comes with the sample app (scripts/app.ts), not from this phase.
    expect(o['IngressRoute/sample-app/app']).toBeUndefined();
    expect(o['IngressRoute/monitoring/alertmanager'].spec.routes[0]).toMatchObject({
      match: 'Host(`alertmanager.localhost`)',
      services: [{ name: 'prometheus-alertmanager', port: 9093 }],
    });
    expect(o['IngressRoute/traefik/dashboard'].spec.routes[0].services[0]).toEqual({ name: 'api@internal', kind: 'TraefikService' });
    expect(o['Namespace//monitoring'].metadata.labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
    expect(o['Namespace//traefik'].metadata.labels).toMatchObject({ 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/warn': 'restricted' });
    expect(o['Namespace//sample-app']).toBeUndefined();
    expect(r.stdout).toContain(`https://grafana.localhost:${sb.ports.HTTPS_PORT}/`);
    expect(r.stdout).toMatch(/\*\.localhost resolves to 127\.0\.0\.1 by itself .*Safari: `task hosts -- --force`/);
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
    expect(r.stdout).toMatch(/already exist/);
  });

  it('DOMAIN change: new certificate and routes, same CA, no Helm upgrade', async () => {
    sb.createCluster();
    await sb.run('traefik', [], { DOMAIN: 'local.dev' });
    const ca = fs.readFileSync(path.join(sb.stateDir, 'certs/ca.crt'), 'utf8');
    const r = await sb.run('traefik');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // The certificate and the routes: one diff, one apply.
    expect(mutating(r.calls)).toEqual(['kubectl apply -f -']);
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

  it('a traefik namespace without its Pod Security labels (made by an earlier version through helm) gets them, and only that changes', async () => {
    sb.createCluster();
    expect((await sb.run('traefik')).code).toBe(0);
    // The fake state as helm's --create-namespace left it: no labels of ours (scenario() would merge them).
    const state = JSON.parse(fs.readFileSync(sb.fakeState, 'utf8'));
    state.kubectl.objects['Namespace//traefik'].metadata.labels = { 'kubernetes.io/metadata.name': 'traefik' };
    fs.writeFileSync(sb.fakeState, JSON.stringify(state));
    const r = await sb.run('traefik');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls)).toEqual(['kubectl apply -f -']);
    expect(r.stdout).toMatch(/Namespace traefik \(Pod Security restricted\).*applied/);
    expect(objects(sb)['Namespace//traefik'].metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
  });

  it('a failing chart install stops the phase before any route is applied', async () => {
    sb.createCluster();
    sb.scenario({ failures: [{ tool: 'helm', argv: ['upgrade'], code: 1, stderr: 'Error: context deadline exceeded\n' }] });
    const r = await sb.run('traefik');
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/context deadline exceeded/);
    // Only the namespace, before the chart; nothing after it.
    expect(mutating(r.calls).filter((c) => c.startsWith('kubectl'))).toEqual(['kubectl apply -f -']);
    expect(Object.keys(objects(sb)).filter((k) => !k.startsWith('Namespace/'))).not.toContain('Secret/traefik/platform-tls');
  });
});

describe('trust-ca', { timeout: 60_000 }, () => {
  it('before `task traefik`: says to run it', async () => {
    const sb = makeSandbox();
    const r = await sb.run('traefik', ['--trust-ca']);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Run `task traefik` first/);
  });

  it('without a terminal prints the exact commands and how to undo them, and runs none', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    await sb.run('traefik');
    const r = await sb.run('traefik', ['--trust-ca']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/nothing was run/);
    expect(r.stdout).toContain(path.join(sb.stateDir, 'certs', 'ca.crt'));
    expect(r.stdout).toMatch(/To stop trusting it later: /);
    expect(r.calls).toEqual([]);
  });
});

// os-release texts as the distributions ship them (the lines that matter).
const OS_RELEASE = {
  debian: 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
  ubuntu: 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n',
  fedora: 'NAME="Fedora Linux"\nVERSION="40 (Workstation Edition)"\nID=fedora\nVERSION_ID=40\n',
  rhel: 'NAME="Red Hat Enterprise Linux"\nVERSION="9.4 (Plow)"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n',
  rocky: 'NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n',
  arch: 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n',
  leap: 'NAME="openSUSE Leap"\nVERSION="15.6"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.6"\n',
  tumbleweed: 'NAME="openSUSE Tumbleweed"\nID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\nVERSION_ID="20240901"\n',
  alpine: 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\n',
  gentoo: 'NAME=Gentoo\nID=gentoo\n',
};

describe('trustPlan per distribution', () => {
  const ca = '/s/certs/ca.crt';
  const name = 'Talos Local Observability CA (box)';
  const local = `/usr/local/share/ca-certificates/${TRUST_NAME}.crt`;
  const debianBundle = { bundle: '/etc/ssl/certs/ca-certificates.crt' };
  const fedoraBundle = { bundle: '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem' };
  const archBundle = { bundle: '/etc/ca-certificates/extracted/tls-ca-bundle.pem' };
  const suseBundle = { bundle: '/etc/ssl/ca-bundle.pem' };
  const anchor = [['sudo', 'trust', 'anchor', '--store', ca]];
  const unanchor = [['sudo', 'trust', 'anchor', '--remove', ca]];
  const copy = (dest: string, refresh: string) => ({
    commands: [['sudo', 'cp', ca, dest], ['sudo', refresh]],
    untrust: [['sudo', 'rm', '-f', dest], ['sudo', refresh]],
  });
  it.each([
    // Debian's p11-kit only reads the bundle: `trust anchor --store` has nowhere to write, so cp even when `trust` exists.
    ['Debian 12', OS_RELEASE.debian, ['trust'], { ...copy(local, 'update-ca-certificates'), trustedWhen: debianBundle }],
    ['Ubuntu 24.04', OS_RELEASE.ubuntu, [], { ...copy(local, 'update-ca-certificates'), trustedWhen: debianBundle }],
    ['Alpine 3.20', OS_RELEASE.alpine, [], { ...copy(local, 'update-ca-certificates'), trustedWhen: debianBundle }],
    ['Fedora 40', OS_RELEASE.fedora, ['trust'], { commands: anchor, untrust: unanchor, trustedWhen: fedoraBundle }],
    ['Fedora 40 without p11-kit', OS_RELEASE.fedora, [], {
      ...copy(`/etc/pki/ca-trust/source/anchors/${TRUST_NAME}.crt`, 'update-ca-trust'), trustedWhen: fedoraBundle }],
    ['RHEL 9', OS_RELEASE.rhel, ['trust'], { commands: anchor, untrust: unanchor, trustedWhen: fedoraBundle }],
    ['Rocky 9 without p11-kit', OS_RELEASE.rocky, [], {
      ...copy(`/etc/pki/ca-trust/source/anchors/${TRUST_NAME}.crt`, 'update-ca-trust'), trustedWhen: fedoraBundle }],
    ['Arch', OS_RELEASE.arch, ['trust'], { commands: anchor, untrust: unanchor, trustedWhen: archBundle }],
    ['Arch without p11-kit', OS_RELEASE.arch, [], {
      ...copy(`/etc/ca-certificates/trust-source/anchors/${TRUST_NAME}.crt`, 'update-ca-trust'), trustedWhen: archBundle }],
    ['openSUSE Leap 15.6', OS_RELEASE.leap, ['trust'], { commands: anchor, untrust: unanchor, trustedWhen: suseBundle }],
    ['openSUSE Tumbleweed without p11-kit', OS_RELEASE.tumbleweed, [], {
      ...copy(`/etc/pki/trust/anchors/${TRUST_NAME}.crt`, 'update-ca-certificates'), trustedWhen: suseBundle }],
    ['unknown ID with update-ca-certificates (Gentoo)', OS_RELEASE.gentoo, ['update-ca-certificates'], {
      ...copy(local, 'update-ca-certificates'), trustedWhen: debianBundle }],
    ['unknown ID with only p11-kit', 'ID=somethingelse\n', ['trust'], { commands: anchor, untrust: unanchor, trustedWhen: undefined }],
    ['unknown ID and no tool', 'ID=somethingelse\n', [], { commands: [], untrust: [], trustedWhen: undefined }],
  ] as const)('%s', (_, osRelease, tools, want) => {
    const plan = trustPlan({ platform: 'linux', ca, caName: name, tools: (t) => (tools as readonly string[]).includes(t), osRelease, home: '/home/u', hasNssDb: false });
    expect({ commands: plan.commands, untrust: plan.untrust, trustedWhen: plan.trustedWhen }).toEqual(want);
  });

  it('macOS: System keychain, proof by `security verify-cert`, undo by the CA\'s real name in that keychain', () => {
    const plan = trustPlan({ platform: 'darwin', ca, caName: name, tools: () => false, home: '/Users/u' });
    expect(plan.commands).toEqual([['sudo', 'security', 'add-trusted-cert', '-d', '-r', 'trustRoot', '-k', '/Library/Keychains/System.keychain', ca]]);
    expect(plan.trustedWhen).toEqual({ command: ['security', 'verify-cert', '-c', ca, '-l', '-L', '-q'] });
    expect(plan.untrust).toEqual([
      ['sudo', 'security', 'remove-trusted-cert', '-d', ca],
      ['sudo', 'security', 'delete-certificate', '-c', name, '/Library/Keychains/System.keychain'],
    ]);
    expect(plan.notes.join('\n')).toMatch(/Firefox/);
  });

  it('Chrome\'s NSS store gets the CA too when it exists and certutil is installed, and loses it on undo', () => {
    const withDb = trustPlan({ platform: 'linux', ca, caName: name, tools: (t) => t === 'certutil', osRelease: OS_RELEASE.debian, home: '/home/u', hasNssDb: true });
    expect(withDb.commands.at(-1)).toEqual(['certutil', '-d', 'sql:/home/u/.pki/nssdb', '-A', '-t', 'C,,', '-n', TRUST_NAME, '-i', ca]);
    expect(withDb.untrust.at(-1)).toEqual(['certutil', '-d', 'sql:/home/u/.pki/nssdb', '-D', '-n', TRUST_NAME]);
    const noDb = trustPlan({ platform: 'linux', ca, caName: name, tools: (t) => t === 'certutil', osRelease: OS_RELEASE.debian, home: '/home/u', hasNssDb: false });
    expect(noDb.commands.map((c) => c[0])).toEqual(['sudo', 'sudo']);
    const noCertutil = trustPlan({ platform: 'linux', ca, caName: name, tools: () => false, osRelease: OS_RELEASE.debian, home: '/home/u', hasNssDb: true });
    expect(noCertutil.notes[0]).toMatch(/install certutil/);
  });

  it('WSL: also tells how to trust the CA in Windows, where the browser runs', () => {
    const plan = trustPlan({ platform: 'linux', ca, caName: name, tools: () => false, osRelease: OS_RELEASE.ubuntu, wsl: true, home: '/home/u' });
    expect(plan.notes[0]).toMatch(/Import-Certificate/);
  });

  it.each([
    [OS_RELEASE.rocky, ['rocky', 'rhel', 'centos', 'fedora']],
    [OS_RELEASE.leap, ['opensuse-leap', 'suse', 'opensuse']],
    ["ID='alpine'\n", ['alpine']],
    ['', []],
  ])('osReleaseIds(%j)', (text, want) => {
    expect(osReleaseIds(text)).toEqual(want);
  });
});

describe('proof of trust, read from the store', () => {
  const certFiles = (): CertFiles => {
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'trust-test-')), 'certs');
    return { dir, caCrt: path.join(dir, 'ca.crt'), caKey: path.join(dir, 'ca.key'), crt: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
  };
  const systemBundle = fs.existsSync('/etc/ssl/certs/ca-certificates.crt') ? fs.readFileSync('/etc/ssl/certs/ca-certificates.crt', 'utf8') : '';
  /** Whether the real openssl, trusting only `bundle`, accepts our server certificate. */
  const opensslTrusts = (bundle: string, f: CertFiles) => {
    const file = path.join(f.dir, 'bundle.pem');
    fs.writeFileSync(file, bundle);
    try {
      execFileSync('openssl', ['verify', '-CAfile', file, f.crt], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };

  it('bundleHolds agrees with openssl on bundles with and without our CA', async () => {
    const f = certFiles();
    await ensureCertificates('local.dev', f);
    const other = certFiles();
    await ensureCertificates('local.dev', other);
    const ca = fs.readFileSync(f.caCrt, 'utf8');
    const body = ca.replace(/-----[A-Z ]+-----/g, '').replace(/\s/g, '');
    const rewrapped = `-----BEGIN CERTIFICATE-----\n${body.match(/.{1,76}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
    const cases: [string, string, boolean][] = [
      ['the system bundle alone', systemBundle, false],
      ['the system bundle plus our CA', `${systemBundle}${ca}`, true],
      ['our CA with other line wrapping, after a comment (p11-kit style)', `# ${TRUST_NAME}\n${rewrapped}`, true],
      ['another CA of the same name', fs.readFileSync(other.caCrt, 'utf8'), false],
      ['empty', '', false],
    ];
    for (const [what, bundle, want] of cases) {
      expect(bundleHolds(bundle, ca), what).toBe(want);
      expect(opensslTrusts(bundle, f), `openssl: ${what}`).toBe(want);
    }
  });

  it('isTrusted reads the bundle file, or runs the check command', async () => {
    const f = certFiles();
    await ensureCertificates('local.dev', f);
    const ca = fs.readFileSync(f.caCrt, 'utf8');
    const bundle = path.join(f.dir, 'store.pem');
    expect(await isTrusted({ bundle }, ca)).toBe(false);
    fs.writeFileSync(bundle, `${systemBundle}${ca}`);
    expect(await isTrusted({ bundle }, ca)).toBe(true);
    expect(await isTrusted({ command: ['true'] }, ca)).toBe(true);
    expect(await isTrusted({ command: ['false'] }, ca)).toBe(false);
    expect(await isTrusted(undefined, ca)).toBe(false);
  });

  it('the CA carries its name, and commonNameOf reads it back', async () => {
    const f = certFiles();
    await ensureCertificates('local.dev', f);
    expect(commonNameOf(new X509Certificate(fs.readFileSync(f.caCrt)))).toBe(caCommonName());
    expect(caCommonName('Jos Mac/Book')).toBe('Talos Local Observability CA (Jos-Mac-Book)');
  });
});

describe('README: TLS, names and design, as a newcomer reads it', () => {
  const readme = fs.readFileSync(path.join(PROJECT_DIR, 'README.md'), 'utf8');

  it('every relative link points into the repository, at a file that exists', () => {
    const links = [...readme.matchAll(/\]\(([^)#\s]+)[^)]*\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    for (const link of links) {
      const target = path.resolve(PROJECT_DIR, link);
      expect(target.startsWith(`${PROJECT_DIR}${path.sep}`), link).toBe(true);
      expect(fs.existsSync(target), link).toBe(true);
    }
  });

  it('has its own short design section (components, data flow, ports, storage, discovery)', () => {
    const design = /^## Design\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';
    for (const word of ['Alloy', 'remote-write', 'Loki', 'Grafana', 'HTTPS_PORT', 'local-path', 'prometheus.io/scrape']) expect(design).toContain(word);
  });

  it('the macOS command to stop trusting the CA names its real common name and the keychain it was added to', () => {
    // The shell fills in the host name, as caCommonName() did when it made the CA.
    const shellName = 'Talos Local Observability CA ($(hostname))';
    expect(shellName.replace('$(hostname)', os.hostname())).toBe(caCommonName(os.hostname()));
    const plan = trustPlan({ platform: 'darwin', ca: '.state/certs/ca.crt', caName: shellName, tools: () => false, home: '/Users/u' });
    const [removeTrust, deleteCert] = plan.untrust.map((c) => commandLine(c[0], c.slice(1)).replace(/'/g, '"'));
    expect(deleteCert).toContain(MACOS_KEYCHAIN);
    expect(readme).toContain(removeTrust);
    expect(readme).toContain(deleteCert);
  });
});
