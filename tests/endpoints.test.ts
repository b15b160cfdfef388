// `task endpoints`: every URL, where the Grafana admin password is, the CA, the KUBECONFIG line.
import fs from 'node:fs';
import path from 'node:path';
import kleur from 'kleur';
import { describe, expect, it, vi } from 'vitest';
import { endpointLines } from '../scripts/endpoints.ts';
import { parseConfig } from '../scripts/lib.ts';
import { makeSandbox } from './helpers.ts';

// Each test starts scripts as processes (node + tsx + stand-in tools): room for a loaded CI machine.
vi.setConfig({ testTimeout: 60000 });

kleur.enabled = false;
const cfg = (over: Record<string, string> = {}) => parseConfig({ STATE_DIR: '/tmp/st', ...over });

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
