// The talos phase on every kind of host: the pure rules (subnet, API address, memory model, Docker
// reachability, network conflicts) as tables, then preflight, create and re-run against the
// stand-in tools for each host profile of tests/fakes/hosts.mjs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { PROJECT_DIR, parseConfig } from '../scripts/lib.ts';
import {
  EXPECTED_MEMORY_MIB,
  type DockerNetwork,
  clusterCreateArgs,
  controlplaneIp,
  dockerMemoryMiB,
  dockerUnreachable,
  freeSubnet,
  helperContainers,
  hostIpProblem,
  networkProblems,
  registryIp,
  requiredResources,
  resourceProblems,
  rootlessProblem,
  talosPatches,
  workerMemoryProblem,
} from '../scripts/talos.ts';
// @ts-expect-error: plain ESM module without types
import { HOSTS, STOPPING_HOSTS } from './fakes/hosts.mjs';
import { type ScriptResult, callsOf, makeSandbox, mutatingLines } from './helpers.ts';

type HostProfile = { scenario: Record<string, unknown>; env: Record<string, string> };
const cfgWith = (env: Record<string, string> = {}) =>
  parseConfig({ STATE_DIR: '/tmp/st', HTTP_PORT: '18080', HTTPS_PORT: '18443', REGISTRY_PORT: '15001', ...env });
const cfg = cfgWith();
/** An address of this machine other than 127.0.0.1 (its LAN address, else another loopback address on Linux). */
const otherLocalIp =
  Object.values(os.networkInterfaces()).flatMap((l) => l ?? []).find((a) => a.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.2';

describe('CLUSTER_SUBNET', () => {
  it.each(['10.5.0.0/24', '10.77.0.0/16', '172.20.8.0/22', '192.168.50.0/24'])('%s is allowed', (subnet) => {
    expect(cfgWith({ CLUSTER_SUBNET: subnet }).CLUSTER_SUBNET).toBe(subnet);
  });

  it.each([
    ['10.5.0.1/24', 'not the network address'],
    ['10.5.0.0/25', 'too small for the caches at +249…+254'],
    ['10.0.0.0/8', 'larger than /16'],
    ['8.8.8.0/24', 'not private'],
    ['172.32.0.0/24', 'outside 172.16.0.0/12'],
    ['10.5.0.0', 'no prefix length'],
    ['10.5.300.0/24', 'not an address'],
  ])('%s is refused (%s), naming the key and the fix', (subnet) => {
    expect(() => cfgWith({ CLUSTER_SUBNET: subnet })).toThrow(
      new RegExp(`CLUSTER_SUBNET="${subnet.replace(/\./g, '\\.')}" is not allowed: expected a private IPv4 network.*default "10\\.5\\.0\\.0/24"`),
    );
  });

  it.each([
    ['10.5.0.0/24', '10.5.0.2', '10.5.0.249', '10.5.0.251'],
    ['192.168.50.0/24', '192.168.50.2', '192.168.50.249', '192.168.50.251'],
    ['172.20.0.0/16', '172.20.0.2', '172.20.0.249', '172.20.0.251'],
  ])('%s: control plane %s, registry %s, docker.io cache %s, in every place they are used', (subnet, cp, registry, dockerIo) => {
    const c = cfgWith({ CLUSTER_SUBNET: subnet });
    expect(controlplaneIp(c)).toBe(cp);
    expect(registryIp(c)).toBe(registry);
    const helpers = helperContainers(c);
    expect(helpers.map((h) => h.ip)).toEqual([registry, dockerIo, ...['252', '253', '254', '250'].map((o) => registry.replace(/\d+$/, o))]);
    const mirrors = (talosPatches(c)['registry-mirrors.yaml'] as { endpoints: { url: string }[] }[]).map((d) => d.endpoints[0].url);
    expect(mirrors).toEqual(helpers.map((h) => `http://${h.ip}:5000`));
    const args = clusterCreateArgs(c, '/p');
    expect(args[args.indexOf('--subnet') + 1]).toBe(subnet);
  });
});

describe('HOST_IP', () => {
  it.each([
    ['127.0.0.1', ['127.0.0.1', '192.168.1.20'], 'darwin', undefined],
    ['0.0.0.0', ['127.0.0.1'], 'darwin', undefined],
    ['192.168.1.20', ['127.0.0.1', '192.168.1.20'], 'darwin', undefined],
    ['127.0.0.2', ['127.0.0.1'], 'linux', undefined],
    ['127.0.0.2', ['127.0.0.1'], 'darwin', /HOST_IP=127.0.0.2 is not an address of this machine \(it has 127.0.0.1\)/],
    ['192.168.1.99', ['127.0.0.1', '192.168.1.20'], 'linux', /HOST_IP=192.168.1.99 is not an address .*127.0.0.1, 192.168.1.20/],
  ] as const)('%s with addresses %j on %s', (hostIp, addresses, platform, want) => {
    const problem = hostIpProblem(hostIp, [...addresses], platform);
    if (want === undefined) expect(problem).toBeUndefined();
    else expect(problem).toMatch(want);
  });
});

describe('talosctl publishes the APIs on 127.0.0.1 and the ingress on HOST_IP', () => {
  it.each(['127.0.0.1', '0.0.0.0', '192.168.1.20'])('HOST_IP=%s', (hostIp) => {
    const args = clusterCreateArgs(cfgWith({ HOST_IP: hostIp, DOMAIN: 'local.dev' }), '/p');
    expect(args[args.indexOf('--host-ip') + 1]).toBe('127.0.0.1');
    expect(args[args.indexOf('--exposed-ports') + 1]).toBe(`${hostIp}:18080:30080/tcp,${hostIp}:18443:30443/tcp`);
  });
});

describe('memory: expected use against what Docker can give', () => {
  it('the defaults are expected to use 5.75GiB, far less than the 12GiB their node limits add up to', () => {
    expect(requiredResources(cfg).memoryMiB).toBe(5888);
    expect(cfg.CONTROLPLANE_MEMORY + cfg.WORKERS * cfg.WORKER_MEMORY).toBe(12 * 1024);
    expect(requiredResources(cfgWith({ WORKERS: '5' })).memoryMiB).toBe(5888 + 3 * 512);
  });

  it("the platform's own memory requests fit in the model's share for pods", () => {
    // Every resources.requests.memory in helm-values/ and manifests/, in MiB.
    const requests: number[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) return node.forEach(walk);
      if (!node || typeof node !== 'object') return;
      const memory = (node as { requests?: { memory?: string } }).requests?.memory;
      if (typeof memory === 'string') requests.push(Number(memory.replace(/Mi$|Gi$/, '')) * (memory.endsWith('Gi') ? 1024 : 1));
      Object.values(node).forEach(walk);
    };
    const files = (dir: string): string[] =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : [path.join(dir, e.name)]));
    for (const file of [...files(path.join(PROJECT_DIR, 'helm-values')), ...files(path.join(PROJECT_DIR, 'manifests'))].filter((f) => f.endsWith('.yaml'))) {
      YAML.parseAllDocuments(fs.readFileSync(file, 'utf8')).forEach((d) => walk(d.toJSON()));
    }
    expect(requests.length).toBeGreaterThan(3);
    expect(requests.reduce((a, b) => a + b, 0)).toBeLessThan(EXPECTED_MEMORY_MIB.workloads);
  });

  it.each([
    ['Docker Desktop, 8GiB VM', 8192 - 180, undefined, 8192 - 180 - 512],
    ['Colima, 2GiB VM (its default)', 2048, undefined, 1536],
    ['Linux, 16GB laptop with 9GiB available', 15258, { availableMiB: 9216 }, 9216],
    ['Linux, plenty available but Docker capped lower', 4096, { availableMiB: 9216 }, 4096],
  ])('%s: %d MiB, this machine %j → %d MiB', (_, total, thisMachine, want) => {
    expect(dockerMemoryMiB(total, thisMachine)).toBe(want);
  });

  it.each([
    ['Docker Desktop on a 16GB Mac', 8192 - 180 - 512, []],
    ['a 16GB Linux laptop with a browser open', 6 * 1024, []],
    ['Colima with its default 2GiB', 1536, [/Docker has 1.5GiB of memory available but the cluster is expected to use 5.8GiB .*colima start --memory 8/]],
  ])('%s (%d MiB)', (_, memoryMiB, want) => {
    const problems = resourceProblems(requiredResources(cfg), { memoryMiB, cpus: 8 });
    expect(problems).toHaveLength(want.length);
    want.forEach((re, i) => expect(problems[i]).toMatch(re));
  });

  it.each([
    [{ WORKERS: '2', WORKER_MEMORY: '4GiB' }, undefined],
    [{ WORKERS: '2', WORKER_MEMORY: '2GiB' }, undefined],
    [{ WORKERS: '2', WORKER_MEMORY: '1792MiB' }, /WORKER_MEMORY=1.8GiB is less than a worker is expected to use with WORKERS=2 \(2.0GiB/],
    [{ WORKERS: '2', WORKER_MEMORY: '1GiB' }, /WORKER_MEMORY=1.0GiB is less than a worker is expected to use with WORKERS=2 \(2.0GiB/],
    [{ WORKERS: '1', WORKER_MEMORY: '1.5GiB' }, /with WORKERS=1 \(3.5GiB/],
    [{ WORKERS: '5', WORKER_MEMORY: '1152MiB' }, undefined],
    [{ WORKERS: '5', WORKER_MEMORY: '1GiB' }, /with WORKERS=5 \(1.1GiB/],
  ])('worker limit %j', (env, want) => {
    const problem = workerMemoryProblem(cfgWith(env));
    if (want === undefined) expect(problem).toBeUndefined();
    else expect(problem).toMatch(want);
  });
});

describe('why Docker cannot be used, and what to do', () => {
  const sock = 'unix:///var/run/docker.sock';
  it.each([
    ['permission denied (moby client v0.4+)', `permission denied while trying to connect to the docker API at ${sock}`, 'linux', undefined,
      /may not use its socket .*Starting Docker does not help: add yourself to the docker group \(`sudo usermod -aG docker \$USER`.*or point DOCKER_HOST/],
    ['permission denied (older clients)', `Got permission denied while trying to connect to the Docker daemon socket at ${sock}: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.24/info": dial unix /var/run/docker.sock: connect: permission denied`, 'linux', undefined,
      /docker group/],
    ['no socket on macOS', `failed to connect to the docker API at ${sock}; check if the path is correct and if the daemon is running: dial unix /var/run/docker.sock: connect: no such file or directory`, 'darwin', undefined,
      /nothing listens at unix:\/\/\/var\/run\/docker.sock .*Start Docker Desktop, Colima \(`colima start`\) or OrbStack; if one runs already, select its context: `docker context ls`/],
    ['no socket on Linux', `failed to connect to the docker API at ${sock}; check if the path is correct and if the daemon is running: dial unix /var/run/docker.sock: connect: no such file or directory`, 'linux', undefined,
      /nothing listens .*Start Docker \(`sudo systemctl start docker`\), or, for Docker Desktop, select its context/],
    ['DOCKER_HOST set to a dead socket', `failed to connect to the docker API at unix:///tmp/x.sock; check if the path is correct and if the daemon is running: dial unix /tmp/x.sock: connect: no such file or directory`, 'darwin', 'unix:///tmp/x.sock',
      /DOCKER_HOST=unix:\/\/\/tmp\/x.sock is set in your environment and wins over docker contexts: correct or unset it/],
    ['daemon stopped', `Cannot connect to the Docker daemon at ${sock}. Is the docker daemon running?`, 'linux', undefined,
      /Docker is not running or not reachable .*sudo systemctl start docker/],
    ['a DOCKER_CONTEXT that does not exist', 'context "nope": context not found: open /home/me/.docker/contexts/meta/x/meta.json: no such file or directory', 'linux', undefined,
      /cannot find its context .*`docker context ls`.*unset DOCKER_CONTEXT/],
  ] as const)('%s', (_, error, platform, dockerHostEnv, want) => {
    const message = dockerUnreachable(error, { host: dockerHostEnv ?? sock, platform, dockerHostEnv });
    expect(message).toMatch(want);
    if (/permission denied/i.test(error)) expect(message).not.toMatch(/systemctl start/);
  });

  it.each([
    [['name=seccomp,profile=builtin', 'name=cgroupns'], {}, undefined],
    [['name=seccomp,profile=builtin', 'name=rootless'], {}, /runs rootless .*privileged containers.*ports below 1024 \(HTTP_PORT=80, HTTPS_PORT=443\).*Nothing was created\. Use a rootful Docker Engine/],
    [['name=rootless'], { HTTP_PORT: '8080', HTTPS_PORT: '8443' }, /runs rootless (?!.*below 1024)/],
    [null, {}, undefined],
  ] as const)('SecurityOptions %j with %j', (SecurityOptions, env, want) => {
    const problem = rootlessProblem(parseConfig(env), { SecurityOptions: SecurityOptions as string[] | null }, 'unix:///run/user/1000/docker.sock');
    if (want === undefined) expect(problem).toBeUndefined();
    else expect(problem).toMatch(want);
  });
});

describe('networks in the way of CLUSTER_SUBNET', () => {
  const net = (Name: string, Subnet: string | undefined, Labels: Record<string, string> = {}): DockerNetwork => ({ Name, Labels, IPAM: { Config: Subnet ? [{ Subnet }] : [] } });
  const talos = (name: string, subnet: string) => net(name, subnet, { 'talos.owned': 'true', 'talos.cluster.name': name });
  const builtIn = [net('bridge', '172.17.0.0/16'), net('host', undefined), net('none', undefined)];

  it.each([
    ['only the built-in networks', builtIn, []],
    ['our own network, same subnet', [...builtIn, talos('talos-local', '10.5.0.0/24')], []],
    ['another Talos cluster on 10.5.0.0/24', [...builtIn, talos('talos-default', '10.5.0.0/24')],
      [/the Docker network talos-default \(10.5.0.0\/24, Talos cluster "talos-default"\) overlaps CLUSTER_SUBNET=10.5.0.0\/24.*Pool overlaps.*Set CLUSTER_SUBNET=10.5.1.0\/24 in .env \(free here\), or remove that network \(`talosctl cluster destroy --name talos-default`\)/]],
    ['a compose network covering 10.0.0.0/8', [...builtIn, net('big', '10.0.0.0/8')], [/the Docker network big \(10.0.0.0\/8\) overlaps .*set CLUSTER_SUBNET in .env to a free private range.*`docker network rm big`/i]],
    ['our network with another subnet', [...builtIn, talos('talos-local', '10.9.0.0/24')], [/has subnet 10.9.0.0\/24 but CLUSTER_SUBNET=10.5.0.0\/24\. Set CLUSTER_SUBNET=10.9.0.0\/24/]],
    ['a network with our name that talosctl did not make', [...builtIn, net('talos-local', '172.30.0.0/16')], [/a Docker network named talos-local exists that talosctl did not create/]],
  ] as const)('%s', (_, networks, want) => {
    const problems = networkProblems(cfg, [...networks]);
    expect(problems).toHaveLength(want.length);
    want.forEach((re, i) => expect(problems[i]).toMatch(re));
  });

  it('suggests the first free /24 from 10.5.0.0/24 on', () => {
    expect(freeSubnet(builtIn)).toBe('10.5.0.0/24');
    expect(freeSubnet([...builtIn, net('a', '10.5.0.0/23'), net('b', '10.5.2.0/24')])).toBe('10.5.3.0/24');
    expect(freeSubnet([net('all', '10.0.0.0/8')])).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// Every host profile, against the stand-in tools
// ---------------------------------------------------------------------------------------------

const expectOk = (res: ScriptResult) => expect(res.code, res.stdout + res.stderr).toBe(0);
const controlPlanePorts = (state: { docker: { containers: Record<string, { ports: { hostIp: string; containerPort: number }[] }> } }) =>
  Object.fromEntries(state.docker.containers['talos-local-controlplane-1'].ports.map((p) => [p.containerPort, p.hostIp]));

describe.each(Object.entries(HOSTS as Record<string, HostProfile>))('%s', (_, host) => {
  it('preflight passes, create builds the cluster with the defaults, a re-run changes nothing, destroy removes it', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario(host.scenario);

    const preflight = await sandbox.run('talos', ['--preflight'], host.env);
    expectOk(preflight);
    expect(mutatingLines(preflight.calls)).toEqual([]);
    expect(callsOf(preflight.calls, 'talosctl', 'cluster', 'show')).toHaveLength(1);

    const create = await sandbox.run('talos', [], host.env);
    expectOk(create);
    expect(callsOf(create.calls, 'talosctl', 'cluster', 'create', 'docker')).toHaveLength(1);
    const state = sandbox.state();
    expect(Object.keys(state.docker.containers).filter((n) => n.startsWith('talos-local-')).sort()).toEqual([
      'talos-local-cache-docker-io', 'talos-local-cache-gcr-io', 'talos-local-cache-ghcr-io', 'talos-local-cache-quay-io',
      'talos-local-cache-registry-k8s-io', 'talos-local-controlplane-1', 'talos-local-registry', 'talos-local-worker-1', 'talos-local-worker-2',
    ]);
    expect(controlPlanePorts(state)).toEqual({ 6443: '127.0.0.1', 50000: '127.0.0.1', 30080: '127.0.0.1', 30443: '127.0.0.1' });

    const again = await sandbox.run('talos', [], host.env);
    expectOk(again);
    expect(mutatingLines(again.calls)).toEqual([]);
    expect(again.stdout).toMatch(/talos done in .*nothing changed/);

    const destroy = await sandbox.run('talos', ['--destroy', '--yes'], host.env);
    expectOk(destroy);
    expect(callsOf(destroy.calls, 'talosctl', 'cluster', 'destroy')).toHaveLength(1);
    const after = sandbox.state().docker;
    expect(Object.keys(after.containers).filter((n) => /-(controlplane|worker)-\d+$/.test(n))).toEqual([]);
    expect(after.networks['talos-local']).toBeUndefined();
  });
});

const STOP_MESSAGES: Record<string, RegExp> = {
  'Linux, rootless Docker': /Docker at unix:\/\/\/run\/user\/1000\/docker.sock runs rootless .*Use a rootful Docker Engine/,
  'Linux, rootless Podman': /Docker at unix:\/\/\/run\/user\/1000\/podman\/podman.sock runs rootless \(fedora 5.2.2/,
  'Linux, socket permission denied': /this user may not use its socket unix:\/\/\/var\/run\/docker.sock .*docker group/,
  'Linux, another Talos cluster on 10.5.0.0/24': /the Docker network talos-default \(10.5.0.0\/24, Talos cluster "talos-default"\) overlaps .*Set CLUSTER_SUBNET=10.5.1.0\/24/,
};

describe.each(Object.entries(STOPPING_HOSTS as Record<string, HostProfile>))('%s', (name, host) => {
  it('preflight says what is wrong and what to do, before anything is created', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario(host.scenario);
    const before = JSON.stringify(sandbox.state().docker);
    const res = await sandbox.run('talos', [], host.env);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(STOP_MESSAGES[name]);
    expect(res.stderr).not.toMatch(/systemctl start docker`?, then run this again/);
    expect(mutatingLines(res.calls)).toEqual([]);
    expect(JSON.stringify(sandbox.state().docker)).toBe(before);
    expect(fs.existsSync(sandbox.stateDir)).toBe(false);
  });
});

describe('host specifics', () => {
  it('beside another Talos cluster, the suggested CLUSTER_SUBNET deploys, with every address in it', async () => {
    const host = (STOPPING_HOSTS as Record<string, HostProfile>)['Linux, another Talos cluster on 10.5.0.0/24'];
    const sandbox = makeSandbox();
    sandbox.scenario(host.scenario);
    const env = { ...host.env, CLUSTER_SUBNET: '10.5.1.0/24' };
    const res = await sandbox.run('talos', [], env);
    expectOk(res);
    const m = mutatingLines(res.calls);
    expect(m).toContain('docker network connect --ip 10.5.1.249 talos-local talos-local-registry');
    expect(m.find((l) => l.startsWith('talosctl cluster create'))).toContain('--subnet 10.5.1.0/24');
    const state = sandbox.state();
    expect(state.docker.networks['talos-local'].subnet).toBe('10.5.1.0/24');
    expect(state.docker.containers['talos-local-controlplane-1'].networks['talos-local'].ip).toBe('10.5.1.2');
    expect(state.docker.networks['talos-default'].subnet).toBe('10.5.0.0/24');
    const mirrors = fs.readFileSync(path.join(sandbox.stateDir, 'talos', 'patches', 'registry-mirrors.yaml'), 'utf8');
    expect(mirrors).toContain('http://10.5.1.249:5000');
    expect(mirrors).not.toContain('10.5.0.');
    expect(mutatingLines((await sandbox.run('talos', [], env)).calls)).toEqual([]);
  });

  it.each([[otherLocalIp], ['0.0.0.0']])('macOS Docker Desktop with HOST_IP=%s: APIs on 127.0.0.1 only, ingress and registry on HOST_IP', async (hostIp) => {
    const host = (HOSTS as Record<string, HostProfile>)['macOS, Docker Desktop (8 GiB VM)'];
    const sandbox = makeSandbox();
    sandbox.scenario(host.scenario);
    const res = await sandbox.run('talos', [], { ...host.env, HOST_IP: hostIp, DOMAIN: 'local.dev' });
    expectOk(res);
    expect(controlPlanePorts(sandbox.state())).toEqual({ 6443: '127.0.0.1', 50000: '127.0.0.1', 30080: hostIp, 30443: hostIp });
    expect(sandbox.state().docker.containers['talos-local-registry'].ports.map((p: { hostIp: string }) => p.hostIp)).toContain(hostIp);
  });

  it('a HOST_IP that is not an address of this machine stops preflight', async () => {
    const res = await makeSandbox().run('talos', [], { HOST_IP: '203.0.113.7', DOMAIN: 'local.dev' });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/HOST_IP=203.0.113.7 is not an address of this machine \(it has 127.0.0.1.*Set HOST_IP in .env to 127.0.0.1/);
    expect(mutatingLines(res.calls)).toEqual([]);
  });

  it("DOCKER_HOST wins over the docker context, for the CLI and for talosctl, and a dead one is named", async () => {
    const host = (HOSTS as Record<string, HostProfile>)['macOS, Docker Desktop without the /var/run/docker.sock link'];
    const sandbox = makeSandbox();
    sandbox.scenario(host.scenario);
    const res = await sandbox.run('talos', [], { DOCKER_HOST: 'unix:///var/run/docker.sock' });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/nothing listens at unix:\/\/\/var\/run\/docker.sock .*DOCKER_HOST=unix:\/\/\/var\/run\/docker.sock is set in your environment and wins over docker contexts/);
    expect(mutatingLines(res.calls)).toEqual([]);

    const ok = await sandbox.run('talos', ['--preflight'], { DOCKER_HOST: 'unix:///Users/me/.docker/run/docker.sock' });
    expectOk(ok);
    expect(ok.stdout).toMatch(/✓ Docker daemon .*Docker Desktop\) at unix:\/\/\/Users\/me\/.docker\/run\/docker.sock, 8 CPUs/);
  });

  it('DOCKER_CONTEXT picks the context; one that does not exist stops preflight with how to list them', async () => {
    const host = (HOSTS as Record<string, HostProfile>)['macOS, Docker Desktop without the /var/run/docker.sock link'];
    const sandbox = makeSandbox();
    sandbox.scenario({ ...host.scenario, docker: { ...(host.scenario.docker as object), currentContext: 'default' } });
    const picked = await sandbox.run('talos', ['--preflight'], { DOCKER_CONTEXT: 'desktop-linux' });
    expectOk(picked);
    expect(picked.stdout).toMatch(/at unix:\/\/\/Users\/me\/.docker\/run\/docker.sock \(context desktop-linux\)/);
    expect(picked.stdout).toMatch(/✓ talosctl reaches the same Docker .*DOCKER_HOST=unix:\/\/\/Users\/me\/.docker\/run\/docker.sock/);

    const missing = await sandbox.run('talos', ['--preflight'], { DOCKER_CONTEXT: 'colima' });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/the docker CLI cannot find its context \(context "colima": context not found.*`docker context ls`/);
  });

  it('talosctl that cannot reach the Docker the CLI uses stops preflight', async () => {
    const sandbox = makeSandbox();
    sandbox.scenario({ failures: [{ tool: 'talosctl', argv: ['cluster', 'show'], code: 1, stderr: 'protocol not available\n' }] });
    const res = await sandbox.run('talos', ['--preflight']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/talosctl cannot reach Docker at DOCKER_HOST=unix:\/\/\/var\/run\/docker.sock, where the docker CLI can \(protocol not available\)/);
  });
});
