// `task validate` with CLUSTER=existing reaches the routes through `kubectl port-forward` to
// Traefik's Service (the stand-in kubectl listens and relays to a real HTTPS server with our CA, as
// the real one relays to the Traefik pod): the checks dial 127.0.0.1:<forwarded port> with the
// route's name as SNI and Host, the forward is started once and stopped at the end, passing or
// failing, and a forward that cannot start fails with kubectl's words. Also: the namespaces whose
// pods validate expects when storage used the cluster's own StorageClass, and the forward line parser.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PROJECT_DIR, parseConfig } from '../scripts/lib.ts';
import { OUR_NAMESPACES, forwardedPort, ourNamespaces } from '../scripts/validate.ts';
import { closedPort, makeSandbox, existingClusterEnv } from './helpers.ts';
import { SHOP, shopSandbox, startShopFront } from './fixtures/validate/app-front.ts';
import { checkLines } from './fixtures/validate/servers.ts';

vi.setConfig({ testTimeout: 60000 });

const DOMAIN = 'obs.test';
const NAME = SHOP;
/** Traefik's Service as the chart makes it: the websecure port by name, to the pod's websecure port. */
const TRAEFIK_SERVICE = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'traefik', namespace: 'traefik' },
  spec: { type: 'NodePort', ports: [{ name: 'web', port: 30080, targetPort: 'web', nodePort: 30080 }, { name: 'websecure', port: 30443, targetPort: 'websecure', nodePort: 30443 }] },
};

let front: Awaited<ReturnType<typeof startShopFront>>;
let routeStatus = 200;

beforeAll(async () => {
  front = await startShopFront(DOMAIN, () => routeStatus);
});
afterAll(() => front.close());

/** An existing cluster with shop deployed and Traefik's Service; `backend`: where its pod answers (none: no pod runs). */
const sandbox = (backend = true) => shopSandbox(DOMAIN, front, TRAEFIK_SERVICE, { forwardTo: backend ? 8443 : undefined });

/** Whether something listens on 127.0.0.1:port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

const forwardedVia = (stdout: string) => Number(/via kubectl port-forward 127\.0\.0\.1:(\d+)/.exec(stdout)?.[1]);

describe('validate with CLUSTER=existing: routes through kubectl port-forward', () => {
  it('checks the route through the forward with the route name as SNI and Host; HOST_IP:HTTPS_PORT is never dialled; the forward is gone after', async () => {
    front.seen.length = 0;
    routeStatus = 200;
    const sb = sandbox();
    // Nothing listens on HTTPS_PORT: a check that dialled it would fail.
    const r = await sb.run('validate', ['--app', NAME, '--wait', '0'], { ...existingClusterEnv(sb), DOMAIN, HOST_IP: '127.0.0.1', HTTPS_PORT: String(await closedPort()) });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const local = forwardedVia(r.stdout);
    expect(local).toBeGreaterThan(0);
    expect(checkLines(r.stdout)).toEqual([
      `✓ App ${NAME}: pods of Deployment ${NAME}/${NAME} Ready`,
      '✓ Routes reachable from this machine',
      `✓ App ${NAME}: route https://${NAME}.${DOMAIN}/ via kubectl port-forward 127.0.0.1:${local}`,
      `✓ App ${NAME}: container logs of every Ready pod in Loki (via Grafana) in the last 5 minutes`,
    ]);
    expect(r.stdout).toContain(`CLUSTER=existing: the routes are checked through kubectl port-forward 127.0.0.1:${local} → service/traefik (websecure) in traefik`);
    expect(front.seen).toContain(`${NAME}.${DOMAIN} ${NAME}.${DOMAIN} /`);
    expect(front.seen.some((s) => s.startsWith(`grafana.${DOMAIN} grafana.${DOMAIN} `))).toBe(true);
    // One forward, to Traefik's HTTPS port by name, with the flags kubectl 1.31 has.
    expect(r.calls.filter((c) => c.argv.includes('port-forward')).map((c) => c.argv.slice(c.argv.indexOf('port-forward')).join(' '))).toEqual(['port-forward --namespace traefik service/traefik :websecure']);
    expect(await listening(local)).toBe(false);
  });

  it('a failing check: exit 1, and the forward is stopped all the same', async () => {
    front.seen.length = 0;
    routeStatus = 502;
    const sb = sandbox();
    const r = await sb.run('validate', ['--app', NAME, '--wait', '0'], { ...existingClusterEnv(sb), DOMAIN, HTTPS_PORT: String(await closedPort()) });
    expect(r.code).toBe(1);
    const local = forwardedVia(r.stdout);
    expect(r.stdout).toContain(`✗ App ${NAME}: route https://${NAME}.${DOMAIN}/ via kubectl port-forward 127.0.0.1:${local}`);
    expect(await listening(local)).toBe(false);
  });

  it('interrupted (SIGTERM) while a check waits: the forward is stopped, exit 143', async () => {
    routeStatus = 0; // the app never answers: the route check waits
    const sb = sandbox();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(PROJECT_DIR, 'scripts', 'validate.ts'), '--app', NAME, '--wait', '0'], {
      cwd: PROJECT_DIR,
      env: { ...sb.env(path.join(sb.dir, 'calls.jsonl')), ...existingClusterEnv(sb), DOMAIN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const deadline = Date.now() + 30000;
    while (!/route https:\/\/shop\.obs\.test\/ via kubectl port-forward 127\.0\.0\.1:\d+ …/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const local = forwardedVia(out);
    expect(await listening(local)).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    // The stand-in kubectl got SIGTERM from validate: nothing listens there any more.
    const gone = Date.now() + 5000;
    while ((await listening(local)) && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
    expect(await listening(local)).toBe(false);
  });

  it("a forward that cannot start (no Traefik pod runs): the cluster checks still run; reaching the routes fails with kubectl's words and what to check; nothing through them runs", async () => {
    const sb = sandbox(false);
    const r = await sb.run('validate', ['--app', NAME, '--wait', '0'], { ...existingClusterEnv(sb), DOMAIN });
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/`kubectl port-forward --namespace traefik service\/traefik :websecure` exited with code 1:\s+error: unable to forward port because pod is not running/);
    expect(r.stdout + r.stderr).toContain('Is Traefik installed (`task traefik`) with a Ready pod?');
    expect(checkLines(r.stdout)).toEqual([
      `✓ App ${NAME}: pods of Deployment ${NAME}/${NAME} Ready`,
      '✗ Routes reachable from this machine',
      '✗ Checks through the routes (metrics, logs, traces, Grafana, freshness, alerting)',
    ]);
    expect(r.stdout + r.stderr).toContain('not run: the routes cannot be reached from this machine (see above)');
    // --wait 0: one try.
    expect(r.calls.filter((c) => c.argv.includes('port-forward'))).toHaveLength(1);
  });

  it('within --wait a forward that exits (no Ready pod yet) is tried again; one that kubectl refuses for good (no such Service) is not', async () => {
    const forwards = (r: { calls: { argv: string[] }[] }) => r.calls.filter((c) => c.argv.includes('port-forward')).length;
    const noPod = sandbox(false);
    const waiting = await noPod.run('validate', ['--app', NAME, '--wait', '8'], { ...existingClusterEnv(noPod), DOMAIN });
    expect(waiting.code).toBe(1);
    expect(forwards(waiting), waiting.stdout).toBeGreaterThan(1);
    expect(waiting.stdout).toContain('not yet, retrying for up to');

    const noService = shopSandbox(DOMAIN, front, { ...TRAEFIK_SERVICE, metadata: { name: 'not-traefik', namespace: 'traefik' } });
    const refused = await noService.run('validate', ['--app', NAME, '--wait', '8'], { ...existingClusterEnv(noService), DOMAIN });
    expect(refused.code).toBe(1);
    expect(refused.stdout + refused.stderr).toContain('Error from server (NotFound): services "traefik" not found');
    expect(forwards(refused)).toBe(1);
  });

  it('CLUSTER=talos dials HOST_IP:HTTPS_PORT as before: no port-forward', async () => {
    routeStatus = 200;
    const sb = sandbox();
    const r = await sb.run('validate', ['--app', NAME, '--wait', '0'], { DOMAIN, HOST_IP: '127.0.0.1', HTTPS_PORT: String(front.port) });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`route https://${NAME}.${DOMAIN}/ via 127.0.0.1:${front.port}`);
    expect(r.calls.some((c) => c.argv.includes('port-forward'))).toBe(false);
  });
});

describe('the stand-in kubectl port-forward', () => {
  it('answers like kubectl: unknown Service, unknown named port, unknown flag', () => {
    const sb = sandbox();
    const run = (args: string[]) => spawnSync('kubectl', ['--kubeconfig', path.join(sb.stateDir, 'kubeconfig'), ...args], { env: sb.env(path.join(sb.dir, 'calls.jsonl')), encoding: 'utf8' });
    const missing = run(['port-forward', '--namespace', 'traefik', 'service/nope', ':websecure']);
    expect([missing.status, missing.stderr]).toEqual([1, 'Error from server (NotFound): services "nope" not found\n']);
    const badPort = run(['port-forward', '--namespace', 'traefik', 'service/traefik', ':https']);
    expect([badPort.status, badPort.stderr]).toEqual([1, "error: Service 'traefik' does not have a named port 'https'\n"]);
    const badFlag = run(['port-forward', '--namespace', 'traefik', 'service/traefik', ':websecure', '--local-port', '1']);
    expect(badFlag.status).toBe(1);
    expect(badFlag.stderr).toContain('unknown flag: --local-port');
  });
});

describe('forwardedPort and ourNamespaces', () => {
  it.each([
    ['Forwarding from 127.0.0.1:41234 -> 8443\nForwarding from [::1]:41234 -> 8443\n', 41234],
    ['Forwarding from [::1]:41234 -> 8443\n', undefined],
    ['Handling connection for 41234\n', undefined],
    ['', undefined],
  ])('%j → %s', (text, port) => expect(forwardedPort(text)).toBe(port));

  it.each([
    ['no record (Talos, or storage not run yet)', undefined, OUR_NAMESPACES],
    ['local-path installed by us', { storageClass: 'local-path', localPath: true }, OUR_NAMESPACES],
    ["the cluster's default class used", { storageClass: 'standard', localPath: false }, ['traefik', 'monitoring', 'sample-app']],
  ])('%s', (_name, record, want) => {
    const dir = fs.mkdtempSync(path.join(makeSandbox().dir, 'st-'));
    if (record) fs.writeFileSync(path.join(dir, 'installed.log'), `${JSON.stringify(record)}\n`);
    expect(ourNamespaces(parseConfig({ STATE_DIR: dir }))).toEqual(want);
  });
});
