// Cluster lifecycle against the stand-in tools: the kubeconfig fetched again after a half-finished
// run, destroying a cluster whose creation stopped anywhere, STATE_DIR ownership (a folder that is not
// ours is never written to nor emptied), what destroy keeps, and the registry mirror patches.
//
// The schema test reads Talos' machine-config schema from github.com/siderolabs/talos/pkg/machinery at
// the pinned tag, which `npm test` fetches into Go's module cache (tests/tools/test-tools.mjs).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { PINNED, STATE_DIR_MARKER, STATE_ENTRIES, claimStateDir, parseConfig } from '../scripts/lib.ts';
import { GRAFANA_PASSWORD_FILE } from '../scripts/observability.ts';
import { apiServerFromPorts, keptStateEntries, setKubeconfigServer, talosPatches } from '../scripts/talos.ts';
import { PROJECT_DIR, type Sandbox, callsOf, makeSandbox, mutatingLines } from './helpers.ts';
// @ts-expect-error: plain ESM module without types
import { TALOS_MACHINERY, talosSchemaPath } from './tools/test-tools.mjs';

const SLOW = { timeout: 120_000 };
const cfg = parseConfig({ STATE_DIR: '/tmp/st', REGISTRY_PORT: '15001' });

async function deployed(env: Record<string, string> = {}, scenario: Record<string, unknown> = {}): Promise<Sandbox> {
  const sandbox = makeSandbox();
  sandbox.scenario(scenario);
  const res = await sandbox.run('talos', [], env);
  expect(res.code, res.stdout + res.stderr).toBe(0);
  return sandbox;
}

const kubeServer = (sandbox: Sandbox) =>
  YAML.parse(fs.readFileSync(path.join(sandbox.stateDir, 'kubeconfig'), 'utf8')).clusters.find((c: { name: string }) => c.name === 'talos-local').cluster.server;

describe('kubeconfig server (pure)', () => {
  it.each([
    ['127.0.0.1:40123\n', 'https://127.0.0.1:40123'],
    ['0.0.0.0:53421\n[::]:53421\n', 'https://127.0.0.1:53421'],
    ['[::]:53421\n0.0.0.0:53421\n', 'https://127.0.0.1:53421'],
    ['192.168.1.20:40123\n', 'https://192.168.1.20:40123'],
    ['', undefined],
  ])('docker port %j dials %s', (text, want) => {
    expect(apiServerFromPorts(text)).toBe(want);
  });

  const fetched = [
    '# from the node',
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '  - name: other',
    '    cluster: { server: https://10.9.9.9:6443 }',
    '  - name: talos-local',
    '    cluster:',
    '      server: https://10.5.0.2:6443',
    '      certificate-authority-data: Q0E=',
    'current-context: admin@talos-local',
    '',
  ].join('\n');

  it('changes only our cluster\'s server', () => {
    const out = setKubeconfigServer(fetched, 'talos-local', 'https://127.0.0.1:40123');
    expect(out).toBe(fetched.replace('https://10.5.0.2:6443', 'https://127.0.0.1:40123'));
  });

  it('a kubeconfig without our cluster is an error, not a silent success', () => {
    expect(() => setKubeconfigServer(fetched, 'talos-other', 'https://127.0.0.1:1')).toThrow(/has no cluster "talos-other"/);
  });

  it.each([
    [false, ['certs', 'hosts', 'phases.log']],
    [true, ['hosts']],
  ])('destroy (clean=%s) keeps %j, all of them our entries', (clean, want) => {
    expect(keptStateEntries(clean)).toEqual(want);
    for (const e of want) expect(STATE_ENTRIES).toContain(e);
  });
});

describe('a kubeconfig fetched again points at the published API port', SLOW, () => {
  it.each([
    ['Linux (API published on 127.0.0.1)', {}, {}],
    ['macOS with HOST_IP=0.0.0.0 (API published on every address)', { HOST_IP: '0.0.0.0' }, { host: { os: 'darwin' } }],
  ])('%s', async (_, env: Record<string, string>, scenario) => {
    const sandbox = await deployed(env, scenario);
    expect(kubeServer(sandbox)).toBe('https://127.0.0.1:40123');
    fs.rmSync(path.join(sandbox.stateDir, 'kubeconfig'));

    const res = await sandbox.run('talos', [], env);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    // talosctl kubeconfig names the node's address on the Docker network, which a Mac cannot reach.
    expect(callsOf(res.calls, 'talosctl', 'kubeconfig')).toHaveLength(1);
    expect(kubeServer(sandbox)).toBe('https://127.0.0.1:40123');
    expect(fs.statSync(path.join(sandbox.stateDir, 'kubeconfig')).mode & 0o777).toBe(0o600);
    expect(res.stdout).toMatch(/✓ Kubeconfig .* fetched into .* \(server https:\/\/127\.0\.0\.1:40123\)/);

    const again = await sandbox.run('talos', [], env);
    expect(mutatingLines(again.calls)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Destroying what a stopped create left behind
// ---------------------------------------------------------------------------------------------

const FOREIGN_CONTAINER = {
  name: 'someone-elses-web',
  image: 'nginx:1.27',
  state: 'running',
  labels: { 'com.example.app': 'web' },
  ports: [{ hostIp: '127.0.0.1', hostPort: 28080, containerPort: 80, proto: 'tcp' }],
  networks: { 'someone-elses-net': { ip: '172.30.0.2' } },
  env: [],
  mounts: ['someone-elses-data:/data'],
};
const FOREIGN_NETWORK = { name: 'someone-elses-net', labels: { 'com.example.app': 'web' }, subnet: '172.30.0.0/24' };
const FOREIGN_VOLUME = { name: 'someone-elses-data', labels: {} };

type Setup = (sandbox: Sandbox) => void;
const stops: [string, Setup, (sandbox: Sandbox) => RegExp][] = [
  ['the Talos image pull', (s) => s.scenario({ talosctl: { createStopsAt: 'image-pull' } }), () => /ghcr\.io\/v2\/.*Client\.Timeout/],
  [
    'the control plane start (a host port held by another container)',
    (s) => s.scenario({ docker: { containers: { 'port-holder': { ...FOREIGN_CONTAINER, name: 'port-holder', networks: {}, mounts: [], ports: [{ hostIp: '127.0.0.1', hostPort: s.ports.HTTP_PORT, containerPort: 80, proto: 'tcp' }] } } } }),
    (s) => new RegExp(`Bind for 127\\.0\\.0\\.1:${s.ports.HTTP_PORT} failed: port is already allocated`),
  ],
  ['a worker start', (s) => s.scenario({ talosctl: { createStopsAt: 'worker-start' } }), () => /OCI runtime create failed/],
  ['the health checks (after state.yaml)', (s) => s.scenario({ talosctl: { createStopsAt: 'health' } }), () => /context deadline exceeded/],
];

describe('a cluster made through another Docker than the one the CLI uses now', SLOW, () => {
  // Created through /var/run/docker.sock; then the docker CLI points at another daemon (another
  // context, e.g. Colima beside Docker Desktop) where none of its nodes are.
  const OTHER = 'unix:///Users/dev/.colima/default/docker.sock';
  const switched = async () => {
    const sandbox = await deployed();
    const { containers } = sandbox.state().docker;
    const elsewhere = Object.fromEntries(Object.entries(containers).filter(([n]) => !/-(controlplane|worker)-\d+$/.test(n)));
    sandbox.scenario({ docker: { containers: null, sockets: [{ host: 'unix:///var/run/docker.sock', access: 'ok' }, { host: OTHER, access: 'ok' }] } });
    sandbox.scenario({ docker: { containers: elsewhere } });
    return sandbox;
  };
  const credentials = (sandbox: Sandbox) => ['talosconfig', 'kubeconfig', 'talos/clusters/talos-local/state.yaml'].map((f) => fs.existsSync(path.join(sandbox.stateDir, f)));

  it.each([
    ['talos', []],
    ['destroy', ['--destroy', '--yes']],
  ])('%s stops, names both endpoints and keeps the credentials', async (_, args) => {
    const sandbox = await switched();
    const res = await sandbox.run('talos', args, { DOCKER_HOST: OTHER });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain(`was created through Docker at unix:///var/run/docker.sock, but the docker CLI now uses ${OTHER}`);
    expect(mutatingLines(res.calls).filter((l) => !l.startsWith('docker network disconnect'))).toEqual([]);
    expect(credentials(sandbox)).toEqual([true, true, true]);
  });

  it('on the same Docker with the nodes gone, talos says so instead of creating a second cluster; destroy clears what is left', async () => {
    const sandbox = await switched();
    const res = await sandbox.run('talos');
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/was created .* but Docker at unix:\/\/\/var\/run\/docker.sock has none of its nodes/);
    expect(callsOf(res.calls, 'talosctl', 'cluster', 'create')).toEqual([]);
    expect(credentials(sandbox)).toEqual([true, true, true]);
    const destroy = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(destroy.code, destroy.stdout + destroy.stderr).toBe(0);
    expect(credentials(sandbox)).toEqual([false, false, false]);
  });
});

describe('destroy after a create that stopped part-way', SLOW, () => {
  it.each(stops)('stopped at %s: destroy removes our nodes and network, touches nothing else', async (_, setup, failure) => {
    const sandbox = makeSandbox();
    sandbox.scenario({ docker: { containers: { [FOREIGN_CONTAINER.name]: FOREIGN_CONTAINER }, networks: { [FOREIGN_NETWORK.name]: FOREIGN_NETWORK }, volumes: { [FOREIGN_VOLUME.name]: FOREIGN_VOLUME } } });
    setup(sandbox);
    const foreignBefore = sandbox.state().docker;

    const create = await sandbox.run('talos');
    expect(create.code).not.toBe(0);
    expect(create.stderr).toMatch(failure(sandbox));

    const destroy = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(destroy.code, destroy.stdout + destroy.stderr).toBe(0);
    let docker = sandbox.state().docker;
    const nodes = Object.values(docker.containers as Record<string, { labels: Record<string, string> }>).filter((c) => c.labels['talos.cluster.name'] === 'talos-local');
    expect(nodes).toEqual([]);
    expect(docker.networks['talos-local']).toBeUndefined();
    expect(fs.existsSync(path.join(sandbox.stateDir, 'talos'))).toBe(false);
    // Someone else's container, network and volume: exactly as they were.
    expect(docker.containers[FOREIGN_CONTAINER.name]).toEqual(foreignBefore.containers[FOREIGN_CONTAINER.name]);
    expect(docker.networks[FOREIGN_NETWORK.name]).toEqual(FOREIGN_NETWORK);
    expect(docker.volumes[FOREIGN_VOLUME.name]).toEqual(FOREIGN_VOLUME);
    // The registry and caches are kept by destroy, off the removed network.
    expect(Object.keys(docker.containers).filter((n) => n.startsWith('talos-local-')).sort()).toEqual([
      'talos-local-cache-docker-io', 'talos-local-cache-gcr-io', 'talos-local-cache-ghcr-io', 'talos-local-cache-quay-io', 'talos-local-cache-registry-k8s-io', 'talos-local-registry',
    ]);

    const again = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(again.code).toBe(0);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/nothing changed/);

    const clean = await sandbox.run('talos', ['--destroy', '--clean', '--yes']);
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    docker = sandbox.state().docker;
    expect(Object.keys(docker.containers).filter((n) => n !== 'port-holder')).toEqual([FOREIGN_CONTAINER.name]);
    expect(Object.keys(docker.networks)).toEqual([FOREIGN_NETWORK.name]);
    expect(Object.keys(docker.volumes)).toEqual([FOREIGN_VOLUME.name]);
  });

  it('a network of the same name that is not ours stops the talos phase and survives destroy', async () => {
    const sandbox = makeSandbox();
    const lookalike = { name: 'talos-local', labels: {}, subnet: '172.31.0.0/24' };
    sandbox.scenario({ docker: { networks: { 'talos-local': lookalike } } });
    const create = await sandbox.run('talos');
    expect(create.code).not.toBe(0);
    const destroy = await sandbox.run('talos', ['--destroy', '--clean', '--yes']);
    expect(destroy.code, destroy.stdout + destroy.stderr).toBe(0);
    expect(sandbox.state().docker.networks).toEqual({ 'talos-local': lookalike });
  });

  it('after destroy, the next talos run creates the cluster again', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ talosctl: { createStopsAt: 'worker-start' } });
    expect((await sandbox.run('talos')).code).not.toBe(0);
    expect((await sandbox.run('talos', ['--destroy', '--yes'])).code).toBe(0);
    sandbox.scenario({ talosctl: { createStopsAt: null } });
    const res = await sandbox.run('talos');
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toMatch(/✓ Nodes Ready .* 3\/3 Ready/);
  });
});

// ---------------------------------------------------------------------------------------------
// STATE_DIR ownership
// ---------------------------------------------------------------------------------------------

/** Every file and folder under dir with its mode and content hash: equal snapshots mean byte for byte equal. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const abs = path.join(dir, rel);
    const st = fs.lstatSync(abs);
    if (st.isDirectory()) {
      out[rel || '.'] = `dir ${st.mode.toString(8)}`;
      for (const e of fs.readdirSync(abs)) walk(path.join(rel, e));
    } else if (st.isSymbolicLink()) out[rel] = `link ${fs.readlinkSync(abs)}`;
    else out[rel] = `file ${st.mode.toString(8)} ${createHash('sha256').update(fs.readFileSync(abs)).digest('hex')}`;
  };
  walk('');
  return out;
}

/** A home folder: files that are named like ours among others, nested folders, binary data. */
function foreignFolder(sandbox: Sandbox): string {
  const dir = path.join(sandbox.dir, 'someones-home');
  const files: Record<string, string | Buffer> = {
    'kubeconfig': 'apiVersion: v1\nkind: Config\n# my own\n',
    'certs/ca.crt': 'not yours\n',
    'talos/notes.txt': 'my notes\n',
    'Documents/thesis.tex': '\\documentclass{article}\n',
    'Pictures/cat.png': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]),
    '.bashrc': 'export PS1="$ "\n',
  };
  for (const [rel, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), content);
  }
  fs.chmodSync(path.join(dir, '.bashrc'), 0o600);
  fs.symlinkSync('Documents/thesis.tex', path.join(dir, 'thesis'));
  return dir;
}

describe('STATE_DIR that is not ours', SLOW, () => {
  it.each([
    ['talos', []],
    ['talos', ['--preflight']],
    ['talos', ['--destroy', '--yes']],
    ['talos', ['--destroy', '--clean', '--yes']],
    ['talos', ['--kubeconfig']],
    ['storage', []],
    ['traefik', []],
    ['observability', []],
    ['sample-app', []],
    ['validate', []],
    ['hosts', []],
  ])('%s %j refuses a non-empty folder without our marker and touches nothing', async (script, args) => {
    const sandbox = makeSandbox();
    const dir = foreignFolder(sandbox);
    const before = snapshot(dir);
    const res = await sandbox.run(script, args, { STATE_DIR: dir, DEPLOY_RUN_ID: 'run-1', HOSTS_FILE: path.join(sandbox.dir, 'hosts') });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain(`STATE_DIR="${dir}" (${dir}) holds files this platform did not write (`);
    expect(res.stderr).toContain(`and no ${STATE_DIR_MARKER}, so nothing is written there and nothing in it is deleted`);
    expect(res.stderr).toMatch(/Set STATE_DIR in \.env to a new or empty folder/);
    expect(res.calls).toEqual([]);
    expect(snapshot(dir)).toEqual(before);
  });

  it.each([
    ['a missing folder is created and marked', (d: string) => d, 'created'],
    ['an empty folder is adopted', (d: string) => (fs.mkdirSync(d), d), 'adopted'],
    ['a marked folder is ours', (d: string) => (fs.mkdirSync(d), fs.writeFileSync(path.join(d, STATE_DIR_MARKER), ''), fs.writeFileSync(path.join(d, 'x'), ''), d), 'ours'],
    ['a folder of an earlier version (only our entries and our talos patches, no marker) is adopted', (d: string) => {
      fs.mkdirSync(path.join(d, 'talos', 'patches'), { recursive: true });
      fs.writeFileSync(path.join(d, 'talos', 'patches', 'registry-mirrors.yaml'), '');
      fs.writeFileSync(path.join(d, 'kubeconfig'), '');
      return d;
    }, 'adopted'],
  ])('claimStateDir: %s', (_, make, want) => {
    const dir = make(path.join(makeSandbox().dir, 'st'));
    expect(claimStateDir(parseConfig({ STATE_DIR: dir }))).toBe(want);
    expect(fs.existsSync(path.join(dir, STATE_DIR_MARKER))).toBe(true);
  });

  it('a phase that stops in preflight leaves no state folder behind; the first write makes and marks it', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ docker: { running: false } });
    const stopped = await sandbox.run('talos');
    expect(stopped.code).not.toBe(0);
    expect(fs.existsSync(sandbox.stateDir)).toBe(false);
    sandbox.scenario({ docker: { running: true } });
    const ok = await sandbox.run('talos');
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(fs.existsSync(path.join(sandbox.stateDir, STATE_DIR_MARKER))).toBe(true);
  });

  it('a folder holding only a kubeconfig and a talosconfig (someone else\'s cluster) is refused, and talos and destroy leave them', async () => {
    const sandbox = makeSandbox();
    const dir = path.join(sandbox.dir, 'homelab');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'kubeconfig'), 'homelab kubeconfig');
    fs.writeFileSync(path.join(dir, 'talosconfig'), 'homelab talosconfig');
    const before = snapshot(dir);
    expect(() => claimStateDir(parseConfig({ STATE_DIR: dir }))).toThrow(/holds files with the names this platform uses \(kubeconfig, talosconfig\) but not its talos\/patches\/registry-mirrors.yaml/);
    for (const args of [[], ['--destroy', '--yes']]) {
      const res = await sandbox.run('talos', args, { STATE_DIR: dir });
      expect(res.code).not.toBe(0);
      expect(res.calls).toEqual([]);
    }
    expect(snapshot(dir)).toEqual(before);
  });

  it('claimStateDir refuses a file', () => {
    const file = path.join(makeSandbox().dir, 'st');
    fs.writeFileSync(file, 'x');
    expect(() => claimStateDir(parseConfig({ STATE_DIR: file }))).toThrow(/is a file, not a folder/);
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  it('STATE_ENTRIES lists every entry a phase writes at the top of STATE_DIR', () => {
    const named: Record<string, string> = { GRAFANA_PASSWORD_FILE, STATE_DIR_MARKER };
    // validate.ts reads files by name (its callers pass literals); destroy walks STATE_ENTRIES itself.
    const notWritten = ['validate.ts:name', 'talos.ts:entry'];
    const firsts = new Set<string>(['kubeconfig', 'phases.log']); // kubeconfigPath() and runPhase() in lib.ts
    for (const file of fs.readdirSync(path.join(PROJECT_DIR, 'scripts'))) {
      const text = fs.readFileSync(path.join(PROJECT_DIR, 'scripts', file), 'utf8');
      for (const m of text.matchAll(/statePath\(\s*cfg\s*,\s*([^,)]+)/g)) {
        const arg = m[1].trim();
        const literal = /^['`]([^'`/$]+)/.exec(arg);
        if (literal) firsts.add(literal[1]);
        else if (arg in named) firsts.add(named[arg]);
        else if (!notWritten.includes(`${file}:${arg}`)) throw new Error(`${file}: statePath(cfg, ${arg}): add it to this test`);
      }
    }
    firsts.delete(STATE_DIR_MARKER);
    expect([...firsts].sort()).toEqual([...STATE_ENTRIES].sort());
  });
});

describe('what destroy removes from a STATE_DIR that is ours', SLOW, () => {
  it('only our entries: foreign files stay byte for byte; certs and hosts backups are kept', async () => {
    const sandbox = await deployed();
    const write = (rel: string, text: string) => {
      fs.mkdirSync(path.dirname(path.join(sandbox.stateDir, rel)), { recursive: true });
      fs.writeFileSync(path.join(sandbox.stateDir, rel), text);
    };
    for (const e of ['helm/loki.values.yaml', 'storage/kustomize/kustomization.yaml', 'grafana-admin-password', 'phases.log']) write(e, 'ours\n');
    write('certs/ca.crt', 'CA\n');
    write('hosts/backups/hosts.2026-01-01T00-00-00-000Z', '127.0.0.1 localhost\n');
    write('hosts/hosts.block', '# BEGIN talos-local-observability\n');
    write('hosts/dnsmasq.conf', 'address=/local.dev/127.0.0.1\n');
    write('my-notes.txt', 'mine\n');
    write('mine/data.bin', '\u0000\u0001');
    const keep = (snap: Record<string, string>) => Object.fromEntries(Object.entries(snap).filter(([k]) => /^(certs|hosts|mine|my-notes)/.test(k)));
    const before = snapshot(sandbox.stateDir);

    const destroy = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(destroy.code, destroy.stdout + destroy.stderr).toBe(0);
    expect(fs.readdirSync(sandbox.stateDir).sort()).toEqual([STATE_DIR_MARKER, 'certs', 'hosts', 'mine', 'my-notes.txt', 'phases.log']);
    expect(keep(snapshot(sandbox.stateDir))).toEqual(keep(before));
    expect(destroy.stdout).toMatch(/kept .*\/hosts \(backups of your hosts file\)\. A block `task hosts` added stays in the hosts file: `task hosts:remove` removes it/);
    expect(destroy.stdout).toMatch(/kept, not ours: mine, my-notes\.txt/);

    const clean = await sandbox.run('talos', ['--destroy', '--clean', '--yes']);
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    expect(fs.readdirSync(sandbox.stateDir).sort()).toEqual([STATE_DIR_MARKER, 'hosts', 'mine', 'my-notes.txt']);
    expect(keep(snapshot(sandbox.stateDir))).toEqual(Object.fromEntries(Object.entries(keep(before)).filter(([k]) => !k.startsWith('certs'))));
  });

  it('clean removes the folder when nothing else is left in it', async () => {
    const sandbox = await deployed();
    const res = await sandbox.run('talos', ['--destroy', '--clean', '--yes'], { DEPLOY_RUN_ID: 'run-1' });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(fs.existsSync(sandbox.stateDir)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Registry mirrors
// ---------------------------------------------------------------------------------------------

type Mirror = { name: string; skipFallback?: boolean };
const mirrors = (c: typeof cfg) => talosPatches(c)['registry-mirrors.yaml'] as Mirror[];

describe('registry mirror patches', () => {
  it('the local registry does not fall back to the node\'s own localhost; the caches fall back to the real registries', () => {
    expect(mirrors(cfg).map((m) => [m.name, m.skipFallback])).toEqual([
      ['localhost:15001', true],
      ['docker.io', undefined],
      ['registry.k8s.io', undefined],
      ['ghcr.io', undefined],
      ['quay.io', undefined],
      ['gcr.io', undefined],
    ]);
    expect(mirrors({ ...cfg, PULL_THROUGH_CACHE: false })).toEqual([expect.objectContaining({ name: 'localhost:15001', skipFallback: true })]);
  });

  const schemaFile = talosSchemaPath();
  it('reads the schema of the Talos the platform pins', () => expect(TALOS_MACHINERY.version).toBe(PINNED.talos));
  it(`every field is one Talos ${PINNED.talos}'s RegistryMirrorConfig schema defines, of its type`, () => {
    const def = JSON.parse(fs.readFileSync(schemaFile, 'utf8')).$defs['cri.RegistryMirrorConfigV1Alpha1'];
    expect(def.additionalProperties).toBe(false);
    const jsonType = (v: unknown) => (Array.isArray(v) ? 'array' : typeof v === 'object' ? 'object' : typeof v);
    for (const doc of mirrors(cfg) as unknown as Record<string, unknown>[]) {
      for (const required of def.required) expect(doc, required).toHaveProperty(required);
      for (const [field, value] of Object.entries(doc)) {
        const prop = def.properties[field];
        expect(prop, `${doc.name}: field ${field}`).toBeDefined();
        if (prop.enum) expect(prop.enum).toContain(value);
        if (prop.type) expect(jsonType(value), `${doc.name}: ${field}`).toBe(prop.type);
      }
    }
  });
});
