// Local CA and wildcard certificate, made with the real openssl and checked with node's
// X509Certificate, the real `openssl verify` and a real TLS handshake that trusts only our CA.
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CERT_DAYS,
  caProblem,
  certProblem,
  dnsNames,
  ensureCertificates,
  tlsSecretYaml,
  wantedNames,
  type CertFiles,
} from '../scripts/traefik.ts';
import YAML from 'yaml';
import { INGRESS_HOSTS } from '../scripts/lib.ts';

const DAY = 24 * 3600 * 1000;

function files(): CertFiles {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'certs-test-')), 'certs');
  return { dir, caCrt: path.join(dir, 'ca.crt'), caKey: path.join(dir, 'ca.key'), crt: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
}
const read = (f: string) => fs.readFileSync(f, 'utf8');
const opensslText = (args: string[]) => execFileSync('openssl', args, { encoding: 'utf8' });

/** GET https://<name> on a local server with our certificate, trusting only our CA. */
async function handshake(f: CertFiles, servername: string): Promise<{ authorized: boolean; error?: string }> {
  const server = https.createServer({ cert: read(f.crt), key: read(f.key) }, (_, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise((resolve) => {
      const req = https.get({ host: '127.0.0.1', port, servername, headers: { host: servername }, ca: read(f.caCrt), path: '/' }, (res) => {
        res.resume();
        resolve({ authorized: (res.socket as import('node:tls').TLSSocket).authorized });
      });
      req.on('error', (e) => resolve({ authorized: false, error: e.message }));
    });
  } finally {
    server.close();
  }
}

describe('ensureCertificates with the real openssl', () => {
  it('makes a CA and a server certificate for *.DOMAIN, DOMAIN and every routed name', async () => {
    const f = files();
    const r = await ensureCertificates('local.dev', f);
    expect(r.detail).toMatch(/created a local CA .* certificate for \*\.local\.dev/);
    const ca = new X509Certificate(read(f.caCrt));
    const cert = new X509Certificate(read(f.crt));
    expect(ca.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(dnsNames(cert)).toEqual(['*.local.dev', 'local.dev', 'grafana.local.dev', 'prometheus.local.dev', 'alertmanager.local.dev', 'traefik.local.dev', 'app.local.dev']);
    // Chain: issued by and signed with the CA.
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(false);
    // Server certificate usage: EKU serverAuth, key usage digitalSignature (critical), no CA.
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    const ext = opensslText(['x509', '-in', f.crt, '-noout', '-ext', 'keyUsage,basicConstraints']);
    expect(ext).toMatch(/Key Usage: critical\s+Digital Signature\s/);
    expect(ext).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(opensslText(['x509', '-in', f.caCrt, '-noout', '-ext', 'keyUsage'])).toMatch(/Certificate Sign, CRL Sign/);
    expect(opensslText(['verify', '-CAfile', f.caCrt, '-purpose', 'sslserver', f.crt])).toMatch(/: OK/);
    // Lifetime that browsers accept (at most 398 days).
    const days = (new Date(cert.validTo).getTime() - new Date(cert.validFrom).getTime()) / DAY;
    expect(days).toBeLessThanOrEqual(398);
    expect(Math.round(days)).toBe(CERT_DAYS);
    // Keys private to the owner.
    expect(fs.statSync(f.key).mode & 0o777).toBe(0o600);
    expect(fs.statSync(f.caKey).mode & 0o777).toBe(0o600);
    expect(fs.statSync(f.dir).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(f.dir).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
  });

  it('serves a TLS handshake that trusts only our CA, for grafana.local.dev and for grafana.localhost', async () => {
    const f = files();
    await ensureCertificates('local.dev', f);
    expect(await handshake(f, 'grafana.local.dev')).toEqual({ authorized: true });
    expect((await handshake(f, 'grafana.example.com')).error).toMatch(/altnames|Hostname/i);
    const g = files();
    await ensureCertificates('localhost', g);
    expect(dnsNames(new X509Certificate(read(g.crt)))).toEqual(expect.arrayContaining(['*.localhost', 'localhost', 'grafana.localhost', 'app.localhost']));
    expect(await handshake(g, 'app.localhost')).toEqual({ authorized: true });
  });

  it('is generated once: a second call changes no byte', async () => {
    const f = files();
    await ensureCertificates('local.dev', f);
    const before = [f.caCrt, f.caKey, f.crt, f.key].map(read);
    const r = await ensureCertificates('local.dev', f);
    expect(r).toEqual({ detail: expect.stringMatching(/^unchanged/), caReplaced: false });
    expect([f.caCrt, f.caKey, f.crt, f.key].map(read)).toEqual(before);
  });

  it('on a DOMAIN change re-issues the server certificate and keeps the CA', async () => {
    const f = files();
    await ensureCertificates('local.dev', f);
    const ca = read(f.caCrt);
    const r = await ensureCertificates('example.test', f);
    expect(r.detail).toMatch(/^issued a certificate for \*\.example\.test .*DOMAIN changed/);
    expect(r.caReplaced).toBe(false);
    expect(read(f.caCrt)).toBe(ca);
    expect(dnsNames(new X509Certificate(read(f.crt)))).toContain('*.example.test');
  });

  it('renews a certificate that expires within 30 days, and replaces an expiring CA', async () => {
    const f = files();
    await ensureCertificates('local.dev', f);
    const ca = read(f.caCrt);
    const soon = new Date(Date.now() + (CERT_DAYS - 10) * DAY);
    expect((await ensureCertificates('local.dev', f, soon)).detail).toMatch(/old one: it expires on/);
    expect(read(f.caCrt)).toBe(ca);
    const r = await ensureCertificates('local.dev', f, new Date(Date.now() + 3640 * DAY));
    expect(r.caReplaced).toBe(true);
    expect(read(f.caCrt)).not.toBe(ca);
    expect(certProblem(read(f.crt), read(f.key), read(f.caCrt), 'local.dev')).toBeUndefined();
  });

  it('replaces a CA whose key was lost, and a certificate of another CA', async () => {
    const f = files();
    await ensureCertificates('local.dev', f);
    const other = files();
    await ensureCertificates('local.dev', other);
    expect(certProblem(read(other.crt), read(other.key), read(f.caCrt), 'local.dev')).toMatch(/not signed by ca\.crt/);
    expect(certProblem(read(f.crt), read(other.key), read(f.caCrt), 'local.dev')).toMatch(/tls\.key does not belong/);
    fs.writeFileSync(f.caKey, read(other.caKey));
    expect(caProblem(read(f.caCrt), read(f.caKey))).toMatch(/ca\.key does not belong/);
    const r = await ensureCertificates('local.dev', f);
    expect(r.caReplaced).toBe(true);
    expect(caProblem(read(f.caCrt), read(f.caKey))).toBeUndefined();
  });
});

describe('caProblem / certProblem on bad input', () => {
  it.each([
    ['not PEM', 'hello'],
    ['empty', ''],
  ])('a CA that is %s', (_, pem) => {
    expect(caProblem(pem, '')).toMatch(/not a certificate/);
  });

  it('a server certificate used as CA is refused', async () => {
    const f = files();
    await ensureCertificates('local.dev', f);
    expect(caProblem(read(f.crt), read(f.key))).toMatch(/not a CA certificate/);
  });
});

describe('wantedNames', () => {
  it.each([
    ['local.dev', ['*.local.dev', 'local.dev', 'grafana.local.dev', 'prometheus.local.dev', 'alertmanager.local.dev', 'traefik.local.dev', 'app.local.dev']],
    ['localhost', ['*.localhost', 'localhost', 'grafana.localhost', 'prometheus.localhost', 'alertmanager.localhost', 'traefik.localhost', 'app.localhost']],
  ])('%s', (domain, want) => {
    expect(wantedNames(domain)).toEqual(want);
  });
  it('then the apps\' hosts under DOMAIN, each once (task app records)', () => {
    expect(wantedNames('localhost', ['shop.localhost', 'app.localhost', 'shop.localhost', 'old.local.dev']).slice(2 + INGRESS_HOSTS.length)).toEqual(['shop.localhost']);
  });
  it('a certificate without a new app\'s host is re-issued', async () => {
    const f = files();
    await ensureCertificates('localhost', f);
    expect(certProblem(read(f.crt), read(f.key), read(f.caCrt), 'localhost')).toBeUndefined();
    expect(certProblem(read(f.crt), read(f.key), read(f.caCrt), 'localhost', new Date(), ['shop.localhost'])).toMatch(/does not cover shop\.localhost/);
    const r = await ensureCertificates('localhost', f, new Date(), ['shop.localhost']);
    expect(r.detail).toMatch(/shop\.localhost/);
    expect(certProblem(read(f.crt), read(f.key), read(f.caCrt), 'localhost', new Date(), ['shop.localhost'])).toBeUndefined();
  });
});

describe('tlsSecretYaml', () => {
  it('is a kubernetes.io/tls Secret platform-tls in traefik with both PEMs', () => {
    const s = YAML.parse(tlsSecretYaml('CERT\n', 'KEY\n'));
    expect(s).toMatchObject({ kind: 'Secret', type: 'kubernetes.io/tls', metadata: { name: 'platform-tls', namespace: 'traefik' } });
    expect(Buffer.from(s.data['tls.crt'], 'base64').toString()).toBe('CERT\n');
    expect(Buffer.from(s.data['tls.key'], 'base64').toString()).toBe('KEY\n');
  });
});
