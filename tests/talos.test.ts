// The talos phase: pure builders (table-driven) and the orchestration against the stand-in tools.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { STATE_DIR_MARKER, parseConfig } from '../scripts/lib.ts';
import {
  clusterCreateArgs,
  dockerRunArgs,
  helperContainers,
  mergeKubeconfigText,
  parsePorts,
  removeFromKubeconfigText,
  requiredResources,
  resourceProblems,
  talosPatches,
  versionProblem,
} from '../scripts/talos.ts';
import { FAKE_BIN, type Sandbox, callsOf, freePortsSync, makeSandbox, mutatingLines } from './helpers.ts';

const cfg = parseConfig({ STATE_DIR: '/tmp/st', HTTP_PORT: '18080', HTTPS_PORT: '18443', REGISTRY_PORT: '15001' });

describe('pure parts', () => {
  it('builds the exact talosctl create command', () => {
    expect(clusterCreateArgs(cfg, '/tmp/st/talos/patches')).toEqual([
      'cluster', 'create', 'docker',
      '--name', 'talos-local',
      '--state', '/tmp/st/talos/clusters',
      '--talosconfig-destination', '/tmp/st/talosconfig',
      '--image', 'ghcr.io/siderolabs/talos:v1.13.9',
      '--kubernetes-version', '1.36.3',
      '--workers', '2',
      '--cpus-controlplanes', '2',
      '--memory-controlplanes', '4096MiB',
      '--cpus-workers', '2',
      '--memory-workers', '4096MiB',
      '--subnet', '10.5.0.0/24',
      '--host-ip', '127.0.0.1',
      '--exposed-ports', '127.0.0.1:18080:30080/tcp,127.0.0.1:18443:30443/tcp',
      '--config-patch', '@/tmp/st/talos/patches/registry-mirrors.yaml',
      '--config-patch', '@/tmp/st/talos/patches/local-path-mount.yaml',
      '--config-patch-controlplanes', '@/tmp/st/talos/patches/controlplane-metrics.yaml',
    ]);
  });

  it('mirrors the local registry always and the upstreams only with caches on', () => {
    const names = (c: typeof cfg) =>
      (talosPatches(c)['registry-mirrors.yaml'] as { kind: string; name: string; endpoints: { url: string }[] }[]).map(
        (d) => `${d.kind} ${d.name} ${d.endpoints[0].url}`,
      );
    expect(names(cfg)).toEqual([
      'RegistryMirrorConfig localhost:15001 http://10.5.0.249:5000',
      'RegistryMirrorConfig docker.io http://10.5.0.251:5000',
      'RegistryMirrorConfig registry.k8s.io http://10.5.0.252:5000',
      'RegistryMirrorConfig ghcr.io http://10.5.0.253:5000',
      'RegistryMirrorConfig quay.io http://10.5.0.254:5000',
      'RegistryMirrorConfig gcr.io http://10.5.0.250:5000',
    ]);
    expect(names({ ...cfg, PULL_THROUGH_CACHE: false })).toEqual(['RegistryMirrorConfig localhost:15001 http://10.5.0.249:5000']);
  });

  it.each([
    ['127.0.0.1', ['127.0.0.1:15001:5000']],
    ['0.0.0.0', ['0.0.0.0:15001:5000']],
    ['192.168.1.20', ['192.168.1.20:15001:5000', '127.0.0.1:15001:5000']],
  ])('HOST_IP=%s publishes the registry on %j (localhost always, for docker push)', (ip, want) => {
    const c = { ...cfg, HOST_IP: ip };
    const args = dockerRunArgs(c, helperContainers(c)[0]);
    expect(args.filter((_, i) => args[i - 1] === '--publish')).toEqual(want);
  });

  it.each([
    ['talosctl', 'Client:\nTalos v1.13.2\n', undefined],
    ['talosctl', 'Client:\nTalos v1.12.9\n', /talosctl is v1.12.9 but TALOS_VERSION=v1.13.9 needs talosctl v1.13.x.*releases\/download\/v1.13.9/],
    ['talosctl', 'Client:\nTalos v2.13.9\n', /needs talosctl v1.13.x/],
    ['talosctl', 'garbage', /could not read the talosctl version/],
    ['helm', 'v3.19.2+g8766e71', undefined],
    ['helm', 'v3.17.0+gabc', undefined],
    ['helm', 'v4.0.1+gabc', undefined],
    ['helm', 'v3.16.4+gabc', /helm is v3.16.4; 3.17\+ or 4.x is needed/],
    ['helm', 'v2.17.0', /helm is v2.17.0/],
    ['kubectl', '{"clientVersion":{"gitVersion":"v1.36.3"}}', undefined],
    ['kubectl', '{"clientVersion":{"gitVersion":"v1.31.0"}}', undefined],
    ['kubectl', '{"clientVersion":{"gitVersion":"v1.30.4"}}', /kubectl is v1.30.4; 1.31\+ is needed/],
  ] as const)('%s version %j', (tool, output, want) => {
    const problem = versionProblem(tool, output, cfg);
    if (want === undefined) expect(problem).toBeUndefined();
    else expect(problem).toMatch(want);
  });

  it.each([
    [{ memoryMiB: 64 * 1024, cpus: 8, diskMiB: 100 * 1024 }, []],
    [{ memoryMiB: 4 * 1024, cpus: 8 }, [/Docker has 4.0GiB of memory available but the cluster is expected to use 5.8GiB/]],
    [{ memoryMiB: 64 * 1024, cpus: 1 }, [/Docker has 1 CPUs but a node asks for 2/]],
    [{ diskMiB: 5 * 1024 }, [/only 5.0GiB of disk is free .* 27.0GiB is needed/]],
    [{}, []],
  ])('resources %j', (have, want) => {
    const problems = resourceProblems(requiredResources(cfg), have);
    expect(problems).toHaveLength(want.length);
    want.forEach((re, i) => expect(problems[i]).toMatch(re));
  });

  it.each([
    ['127.0.0.1:18080->30080/tcp, 127.0.0.1:40123->6443/tcp', [18080, 40123]],
    ['0.0.0.0:5001->5000/tcp, :::5001->5000/tcp', [5001, 5001]],
    ['', []],
    ['5000/tcp', []],
  ])('parses docker ports %j', (text, ports) => {
    expect(parsePorts(text).map((p) => p.hostPort)).toEqual(ports);
  });
});

describe('kubeconfig editing keeps everything that is not ours', () => {
  const user = `# my clusters
apiVersion: v1
kind: Config
clusters:
  - name: work # production!
    cluster:
      server: https://work.example:6443
users:
  - name: me
    user:
      token: secret
contexts:
  - name: work
    context:
      cluster: work
      user: me
current-context: work
preferences: {}
`;
  const ours = {
    clusters: [{ name: 'talos-local', cluster: { server: 'https://127.0.0.1:40123' } }],
    users: [{ name: 'admin@talos-local', user: { token: 'x' } }],
    contexts: [{ name: 'admin@talos-local', context: { cluster: 'talos-local', user: 'admin@talos-local' } }],
    'current-context': 'admin@talos-local',
  };
  const names = { clusters: ['talos-local'], users: ['admin@talos-local'], contexts: ['admin@talos-local'] };

  it('adds our entries and keeps comments, foreign entries and the current context', () => {
    const merged = mergeKubeconfigText(user, ours);
    expect(merged).toContain('# my clusters');
    expect(merged).toContain('# production!');
    const doc = YAML.parse(merged);
    expect(doc.clusters.map((c: { name: string }) => c.name)).toEqual(['work', 'talos-local']);
    expect(doc.users[0].user.token).toBe('secret');
    expect(doc['current-context']).toBe('work');
  });
  it('twice is once', () => {
    const once = mergeKubeconfigText(user, ours);
    expect(mergeKubeconfigText(once, ours)).toBe(once);
  });
  it('remove restores the original exactly', () => {
    expect(removeFromKubeconfigText(mergeKubeconfigText(user, ours), names)).toBe(user);
  });
  it('an empty file gets a complete kubeconfig with our context current', () => {
    const doc = YAML.parse(mergeKubeconfigText('', ours));
    expect(doc).toMatchObject({ apiVersion: 'v1', kind: 'Config', 'current-context': 'admin@talos-local' });
  });
});

// ---------------------------------------------------------------------------------------------
// Orchestration with the stand-in tools
// ---------------------------------------------------------------------------------------------



async function deployed(): Promise<Sandbox> {
  const sandbox = makeSandbox();
  const res = await sandbox.run('talos');
  expect(res.code, res.stdout + res.stderr).toBe(0);
  return sandbox;
}

describe('talos phase', () => {
  it('creates network, registry, caches and the cluster on a fresh machine', async () => {
    const sandbox = makeSandbox();
    const res = await sandbox.run('talos');
    expect(res.code, res.stderr).toBe(0);

    const m = mutatingLines(res.calls);
    expect(m[0]).toBe('docker network create --label talos.owned=true --label talos.cluster.name=talos-local --subnet 10.5.0.0/24 --opt com.docker.network.driver.mtu=1500 talos-local');
    expect(m).toContain(
      `docker run --detach --name talos-local-registry --restart unless-stopped --label talos-local.cluster=talos-local --label talos-local.role=registry --volume talos-local-registry:/var/lib/registry --publish 127.0.0.1:${sandbox.ports.REGISTRY_PORT}:5000 registry:2.8.3`,
    );
    expect(m).toContain(
      'docker run --detach --name talos-local-cache-docker-io --restart unless-stopped --label talos-local.cluster=talos-local --label talos-local.role=cache --volume talos-local-cache-docker-io:/var/lib/registry --publish 127.0.0.1::5000 --env REGISTRY_PROXY_REMOTEURL=https://registry-1.docker.io registry:2.8.3',
    );
    expect(m).toContain('docker network connect --ip 10.5.0.249 talos-local talos-local-registry');
    expect(callsOf(res.calls, 'docker', 'run')).toHaveLength(6);
    // The caches join the network before the nodes boot, so the first image pull goes through them.
    const create = m.findIndex((c) => c.startsWith('talosctl cluster create docker'));
    expect(create).toBe(m.length - 1);
    expect(callsOf(res.calls, 'talosctl', 'cluster', 'create', 'docker')[0].argv).toEqual(
      clusterCreateArgs({ ...cfg, ...sandbox.ports, stateDir: sandbox.stateDir }, path.join(sandbox.stateDir, 'talos', 'patches')),
    );

    // The patches are what Talos expects.
    const patch = (f: string) => YAML.parseAllDocuments(fs.readFileSync(path.join(sandbox.stateDir, 'talos', 'patches', f), 'utf8')).map((d) => d.toJSON());
    expect(patch('registry-mirrors.yaml')).toHaveLength(6);
    expect(patch('registry-mirrors.yaml')[0]).toEqual({
      apiVersion: 'v1alpha1',
      kind: 'RegistryMirrorConfig',
      name: `localhost:${sandbox.ports.REGISTRY_PORT}`,
      endpoints: [{ url: 'http://10.5.0.249:5000' }],
      skipFallback: true,
    });
    expect(patch('local-path-mount.yaml')[0].machine.kubelet.extraMounts[0]).toEqual({
      destination: '/var/local-path-provisioner',
      type: 'bind',
      source: '/var/local-path-provisioner',
      options: ['bind', 'rshared', 'rw'],
    });
    expect(patch('controlplane-metrics.yaml')[0].cluster).toEqual({
      controllerManager: { extraArgs: { 'bind-address': '0.0.0.0' } },
      scheduler: { extraArgs: { 'bind-address': '0.0.0.0' } },
      etcd: { extraArgs: { 'listen-metrics-urls': 'http://0.0.0.0:2381' } },
      proxy: { extraArgs: { 'metrics-bind-address': '0.0.0.0:10249' } },
    });

    // Kubeconfig and talosconfig stay in the state dir; the user's ~/.kube/config is not touched.
    expect(fs.existsSync(path.join(sandbox.stateDir, 'kubeconfig'))).toBe(true);
    expect(fs.existsSync(path.join(sandbox.stateDir, 'talosconfig'))).toBe(true);
    expect(fs.existsSync(path.join(sandbox.home, '.kube'))).toBe(false);
    expect(res.stdout).toContain(`export KUBECONFIG=${path.join(sandbox.stateDir, 'kubeconfig')}`);
    expect(res.stdout).toMatch(/✓ Nodes Ready .* 3\/3 Ready/);
    // Every step line closes with a duration.
    expect(res.stdout).toMatch(/✓ Talos cluster talos-local: 1 control plane \+ 2 workers \(\d+\.\ds\) created/);
  });

  it('changes nothing on a re-run with a healthy cluster, and says so', async () => {
    const sandbox = await deployed();
    const res = await sandbox.run('talos');
    expect(res.code).toBe(0);
    expect(mutatingLines(res.calls)).toEqual([]);
    expect(res.stdout).toContain('already exists');
    expect(res.stdout).toMatch(/talos done in .*nothing changed/);
  });

  it('warns when the patches change under a running cluster, and changes nothing else', async () => {
    const sandbox = await deployed();
    const res = await sandbox.run('talos', [], { PULL_THROUGH_CACHE: 'false' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/registry-mirrors\.yaml changed since the cluster was created .* patch mc --patch/);
    expect(mutatingLines(res.calls)).toEqual([]);
  });

  it('without caches it runs only the registry', async () => {
    const sandbox = makeSandbox();
    const res = await sandbox.run('talos', [], { PULL_THROUGH_CACHE: 'false' });
    expect(res.code).toBe(0);
    expect(callsOf(res.calls, 'docker', 'run')).toHaveLength(1);
  });

  it('finishes a half-finished run: stopped nodes are started, a missing kubeconfig is fetched', async () => {
    const sandbox = await deployed();
    const state = sandbox.state();
    state.docker.containers['talos-local-worker-1'].state = 'exited';
    state.docker.containers['talos-local-cache-quay-io'].state = 'exited';
    fs.writeFileSync(sandbox.fakeState, JSON.stringify(state));
    fs.rmSync(path.join(sandbox.stateDir, 'kubeconfig'));
    const res = await sandbox.run('talos');
    expect(res.code, res.stderr).toBe(0);
    expect(mutatingLines(res.calls)).toEqual([
      'docker start talos-local-cache-quay-io',
      'docker start talos-local-worker-1',
      `talosctl kubeconfig ${path.join(sandbox.stateDir, 'kubeconfig')} --talosconfig ${path.join(sandbox.stateDir, 'talosconfig')} --nodes 10.5.0.2 --force`,
    ]);
  });

  it('explains a half-created cluster and touches nothing', async () => {
    const sandbox = await deployed();
    const state = sandbox.state();
    delete state.docker.containers['talos-local-worker-2'];
    fs.writeFileSync(sandbox.fakeState, JSON.stringify(state));
    const res = await sandbox.run('talos');
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/missing talos-local-worker-2: half-created/);
    expect(res.stderr).toContain('task destroy -- --yes');
    expect(mutatingLines(res.calls)).toEqual([]);
  });

  // Another HTTP_PORT than the sandbox's, and none of its other ports (four free ports: one of them is none of the three).
  const spare = freePortsSync(4);
  const otherHttpPort = (s: Sandbox) => spare.find((p) => !Object.values(s.ports).includes(p))!;
  it.each([
    ['WORKERS', () => ({ WORKERS: '3' }), () => /WORKERS=3 asks for .*talos-local-worker-3/],
    ['HTTP_PORT', (s: Sandbox) => ({ HTTP_PORT: String(otherHttpPort(s)) }), (s: Sandbox) => new RegExp(`publishes 127\\.0\\.0\\.1:${s.ports.HTTP_PORT} for port 30080 but HTTP_PORT=${otherHttpPort(s)}`)],
    ['TALOS_VERSION', () => ({ TALOS_VERSION: 'v1.13.8' }), () => /runs ghcr.io\/siderolabs\/talos:v1.13.9 but TALOS_VERSION=v1.13.8/],
  ])('reports a cluster that differs from .env (%s) and touches nothing', async (_, env, want) => {
    const sandbox = await deployed();
    const res = await sandbox.run('talos', [], env(sandbox));
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(want(sandbox));
    expect(mutatingLines(res.calls)).toEqual([]);
  });

  it('reports nodes that do not become Ready, with what to look at', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ kubectl: { notReadyNodes: ['talos-local-worker-2'] } });
    const res = await sandbox.run('talos');
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('timed out waiting for the condition on nodes/talos-local-worker-2');
    expect(res.stderr).toContain('wait --for=condition=Ready nodes --all --timeout=300s');
    expect(res.stderr).toMatch(/Nodes are not Ready\. Look at `talosctl .* health`/);
    expect(res.stdout).toMatch(/✗ Nodes Ready \(\d+\.\ds\)/);
  });
});

describe('preflight failures stop before anything changes', () => {
  const expectStopped = (res: { code: number | null; calls: { tool: string; argv: string[] }[] }) => {
    expect(res.code).not.toBe(0);
    expect(mutatingLines(res.calls)).toEqual([]);
  };

  it('Docker not running', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ docker: { running: false } });
    const res = await sandbox.run('talos');
    expectStopped(res);
    expect(res.stderr).toMatch(/Docker is not running or not reachable .*Cannot connect to the Docker daemon.*sudo systemctl start docker/);
  });

  it('a port taken', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const res = await makeSandbox().run('talos', [], { HTTPS_PORT: String(port) });
      expectStopped(res);
      expect(res.stderr).toMatch(new RegExp(`HTTPS_PORT=${port} is already in use on 127\\.0\\.0\\.1.*set another HTTPS_PORT in \\.env`));
    } finally {
      server.close();
    }
  });

  it('talosctl at the wrong minor version', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ talosctl: { version: 'v1.12.4' } });
    const res = await sandbox.run('talos');
    expectStopped(res);
    expect(res.stderr).toContain('talosctl is v1.12.4 but TALOS_VERSION=v1.13.9 needs talosctl v1.13.x');
  });

  it('kubectl too old', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ kubectl: { version: 'v1.29.1' } });
    const res = await sandbox.run('talos', ['--preflight']);
    expect(res.code).not.toBe(0);
    expect(mutatingLines(res.calls)).toEqual([]);
    expect(res.stderr).toContain('kubectl is v1.29.1; 1.31+ is needed');
  });

  it('helm too old', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ helm: { version: 'v3.12.0+gabc' } });
    const res = await sandbox.run('talos', ['--preflight']);
    expectStopped(res);
    expect(res.stderr).toContain('helm is v3.12.0; 3.17+ or 4.x is needed');
  });

  it('too little memory', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ docker: { info: { MemTotal: 4 * 1024 ** 3 } } });
    const res = await sandbox.run('talos');
    expectStopped(res);
    expect(res.stderr).toMatch(/Docker has 3.5GiB of memory available but the cluster is expected to use 5.8GiB.*or lower WORKERS in .env/);
  });

  it('a missing tool, with an install hint', async () => {
    const sandbox = makeSandbox();
    const bin = path.join(sandbox.dir, 'bin');
    fs.mkdirSync(bin);
    for (const tool of ['docker', 'talosctl', 'kubectl']) fs.symlinkSync(path.join(FAKE_BIN, tool), path.join(bin, tool));
    const res = await sandbox.run('talos', [], { PATH: `${bin}${path.delimiter}${path.dirname(process.execPath)}` });
    expectStopped(res);
    expect(res.stderr).toMatch(/helm is not installed \(not on PATH\)\. Install it: /);
  });

  it('--preflight alone only reads', async () => {
    const res = await makeSandbox().run('talos', ['--preflight']);
    expect(res.code).toBe(0);
    expect(mutatingLines(res.calls)).toEqual([]);
    expect(res.stdout).toMatch(/preflight done in .*6 steps, nothing changed/);
  });
});

describe('destroy, clean and kubeconfig', () => {
  it('kubeconfig adds our context to the user kubeconfig, atomically, twice = once', async () => {
    const sandbox = await deployed();
    const target = path.join(sandbox.home, '.kube', 'config');
    fs.mkdirSync(path.dirname(target));
    fs.writeFileSync(target, 'apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\ncurrent-context: ""\n');
    const first = await sandbox.run('talos', ['--kubeconfig']);
    expect(first.code, first.stderr).toBe(0);
    expect(YAML.parse(fs.readFileSync(target, 'utf8')).contexts[0].name).toBe('admin@talos-local');
    expect(fs.existsSync(`${target}.talos-local-observability.bak`)).toBe(true);
    const second = await sandbox.run('talos', ['--kubeconfig']);
    expect(second.stdout).toMatch(/✓ Context admin@talos-local .* unchanged/);
  });

  it('destroy asks without --yes and, with no terminal to ask, does nothing', async () => {
    const sandbox = await deployed();
    const res = await sandbox.run('talos', ['--destroy']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('pass --yes');
    expect(res.calls).toEqual([]);
  });

  it('destroy --yes removes the cluster, our context and the state but keeps caches and the CA', async () => {
    const sandbox = await deployed();
    await sandbox.run('talos', ['--kubeconfig']);
    fs.mkdirSync(path.join(sandbox.stateDir, 'certs'));
    fs.writeFileSync(path.join(sandbox.stateDir, 'certs', 'ca.crt'), 'x');
    const res = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(res.code, res.stderr).toBe(0);
    expect(mutatingLines(res.calls).at(-1)).toBe(`talosctl cluster destroy --name talos-local --state ${path.join(sandbox.stateDir, 'talos', 'clusters')}`);
    expect(callsOf(res.calls, 'docker', 'network', 'disconnect')).toHaveLength(6);
    expect(fs.readdirSync(sandbox.stateDir).sort()).toEqual([STATE_DIR_MARKER, 'certs']);
    expect(YAML.parse(fs.readFileSync(path.join(sandbox.home, '.kube', 'config'), 'utf8')).contexts).toEqual([]);
    const state = sandbox.state();
    expect(Object.keys(state.docker.containers)).toHaveLength(6);
    expect(state.docker.networks).toEqual({});

    const again = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/nothing changed/);

    // And the next deploy reattaches the kept caches.
    const redeploy = await sandbox.run('talos');
    expect(redeploy.code, redeploy.stderr).toBe(0);
    expect(callsOf(redeploy.calls, 'docker', 'run')).toHaveLength(0);
    expect(callsOf(redeploy.calls, 'docker', 'network', 'connect')).toHaveLength(6);
  });

  it("destroy leaves a kubeconfig entry that only shares our cluster's name, and a config.bak of the user's own", async () => {
    const sandbox = await deployed();
    const target = path.join(sandbox.home, '.kube', 'config');
    fs.mkdirSync(path.dirname(target));
    const theirs = YAML.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'admin@talos-local',
      clusters: [{ name: 'talos-local', cluster: { server: 'https://192.168.1.50:6443', 'certificate-authority-data': 'aG9tZWxhYg==' } }],
      users: [{ name: 'admin@talos-local', user: { 'client-certificate-data': 'aG9tZWxhYi11c2Vy', 'client-key-data': 'eA==' } }],
      contexts: [{ name: 'admin@talos-local', context: { cluster: 'talos-local', user: 'admin@talos-local' } }],
    });
    fs.writeFileSync(target, theirs);
    fs.writeFileSync(`${target}.bak`, 'my own backup');
    const res = await sandbox.run('talos', ['--destroy', '--yes']);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(fs.readFileSync(target, 'utf8')).toBe(theirs);
    expect(fs.readFileSync(`${target}.bak`, 'utf8')).toBe('my own backup');
    expect(res.stdout).toMatch(/Context admin@talos-local .* unchanged \(none of ours there\)/);
  });

  it('clean also removes the registry, the caches, their volumes and the state dir', async () => {
    const sandbox = await deployed();
    const res = await sandbox.run('talos', ['--destroy', '--clean', '--yes']);
    expect(res.code, res.stderr).toBe(0);
    const state = sandbox.state();
    expect(state.docker.containers).toEqual({});
    expect(state.docker.volumes).toEqual({});
    expect(fs.existsSync(sandbox.stateDir)).toBe(false);
  });
});

describe('talos.ts --registry', () => {
  it('creates only the network, the registry and the caches, then changes nothing on a re-run; plain talos then keeps them', async () => {
    const sandbox = makeSandbox();
    const res = await sandbox.run('talos', ['--registry']);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.calls.every((c) => c.tool === 'docker'), JSON.stringify(res.calls)).toBe(true);
    const m = mutatingLines(res.calls);
    expect(m[0]).toMatch(/^docker network create .* talos-local$/);
    expect(callsOf(res.calls, 'docker', 'run')).toHaveLength(6);
    expect(sandbox.state().docker.containers['talos-local-controlplane-1']).toBeUndefined();
    expect(fs.existsSync(path.join(sandbox.stateDir, STATE_DIR_MARKER))).toBe(true);

    const again = await sandbox.run('talos', ['--registry']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/registry done in .*nothing changed/);

    const talos = await sandbox.run('talos');
    expect(talos.code, talos.stdout + talos.stderr).toBe(0);
    expect(mutatingLines(talos.calls).filter((c) => c.startsWith('docker run') || c.startsWith('docker network create'))).toEqual([]);
    expect(callsOf(talos.calls, 'talosctl', 'cluster', 'create', 'docker')).toHaveLength(1);
  }, 60_000);

  it('stops before creating anything when REGISTRY_PORT is taken by something else', async () => {
    const sandbox = makeSandbox();
    // A port of its own, taken by this test.
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const res = await sandbox.run('talos', ['--registry'], { REGISTRY_PORT: String(port) });
      expect(res.code).toBe(1);
      expect(res.stdout + res.stderr).toContain(`REGISTRY_PORT=${port} is already in use on 127.0.0.1`);
      expect(mutatingLines(res.calls)).toEqual([]);
    } finally {
      server.close();
    }
  }, 60_000);
});
