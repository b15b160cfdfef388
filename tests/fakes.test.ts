// The stand-in helm and kubectl answer as the supported real versions do. Expected texts were
// taken from the real binaries (helm v3.17.3 and v4.1.4, kubectl v1.31.9, run without a cluster)
// and checked against the helm source at v3.21.4 / v4.2.4 and kubectl's at v1.31.0 / v1.36.3.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: plain ESM module without types
import { HELM_RELEASES, helmShortVersion, modelledSeconds } from './fakes/common.mjs';
import { deployedCluster } from './fixtures/validate/cluster.ts';
import { FAKE_BIN, SANDBOX_PORT_RANGE, freePortsSync, makeSandbox } from './helpers.ts';

function call(tool: string, argv: string[], env: Record<string, string> = {}, fakeState?: string) {
  const state = fakeState ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fakes-')), 'state.json');
  const r = spawnSync(path.join(FAKE_BIN, tool), argv, { encoding: 'utf8', env: { ...process.env, FAKE_STATE: state, FAKE_TOOLS_LOG: '', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('sandbox ports', () => {
  it('are distinct, below the ephemeral range real servers listen in, and free', async () => {
    const ports = freePortsSync(6);
    expect(new Set(ports).size).toBe(6);
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(SANDBOX_PORT_RANGE.first);
      expect(port).toBeLessThanOrEqual(SANDBOX_PORT_RANGE.last);
    }
    const ephemeral = fs.existsSync('/proc/sys/net/ipv4/ip_local_port_range') ? Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) : 49152;
    expect(SANDBOX_PORT_RANGE.last).toBeLessThan(ephemeral);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(ports[0], '127.0.0.1', () => resolve()));
    await new Promise((resolve) => server.close(resolve));
  });
});

describe('stand-in helm, per major', () => {
  it.each([
    // [major, argv, exit code, stderr]
    ['4', ['list', '--all', '--output', 'json'], 1, 'Error: unknown flag: --all\n'],
    ['3', ['list', '--all', '--kubeconfig', '/nonexistent', '-o', 'json'], 1, 'Error: Kubernetes cluster unreachable: stat /nonexistent: no such file or directory\n'],
    ['4', ['--kubeconfig', '/nonexistent', 'list', '-n', 'x', '-o', 'json'], 1, 'Error: kubernetes cluster unreachable: stat /nonexistent: no such file or directory\n'],
    ['4', ['bogus'], 1, `Error: unknown command "bogus" for "helm"\nRun 'helm --help' for usage.\n`],
    ['4', ['upgrade', '--install', 'x', 'y', '--wait=foo'], 1, 'Error: invalid argument "foo" for "--wait" flag: invalid wait input "foo". Valid inputs are watcher, hookOnly, and legacy\n'],
    ['3', ['upgrade', '--install', 'x', 'y', '--wait=foo'], 1, 'Error: invalid argument "foo" for "--wait" flag: strconv.ParseBool: parsing "foo": invalid syntax\n'],
    ['3', ['list', '-o', 'yml'], 1, 'Error: invalid argument "yml" for "-o, --output" flag: invalid format type\n'],
    ['4', ['get', 'values'], 1, 'Error: "helm get values" requires 1 argument\n\nUsage:  helm get values RELEASE_NAME [flags]\n'],
    ['3', ['upgrade', 'x'], 1, 'Error: "helm upgrade" requires 2 arguments\n\nUsage:  helm upgrade [RELEASE] [CHART] [flags]\n'],
    ['4', ['status', 'x', '--show-desc', '-o', 'json'], 1, 'Error: unknown flag: --show-desc\n'],
  ])('helm %s %j: exit %i, %j', (major, argv, code, stderr) => {
    const r = call('helm', argv as string[], { FAKE_HELM_MAJOR: major as string });
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code, stderr });
  });

  it.each(['3', '4'])('helm %s: version --short and version as the release prints them', (major) => {
    const { version, commit } = HELM_RELEASES[major];
    expect(call('helm', ['version', '--short'], { FAKE_HELM_MAJOR: major }).stdout).toBe(`${helmShortVersion(Number(major))}\n`);
    expect(helmShortVersion(Number(major))).toBe(`${version}+g${commit.slice(0, 7)}`);
    expect(call('helm', ['version'], { FAKE_HELM_MAJOR: major }).stdout).toMatch(
      new RegExp(`^version\\.BuildInfo\\{Version:"${version}", GitCommit:"${commit}", GitTreeState:"clean", GoVersion:"go[\\d.]+"${major === '4' ? ', KubeClientVersion:"v1\\.\\d+"' : ''}\\}\\n$`),
    );
  });

  it.each([
    ['3', undefined, ['deployed', 'failed']],
    ['4', undefined, ['deployed', 'failed', 'pending-install']],
    ['3', '--all', ['deployed', 'failed', 'pending-install']],
    ['3', '--pending', ['pending-install']],
    ['4', '--deployed', ['deployed']],
  ])('helm %s list %s: the states listed (v3 default: deployed and failed; v4: all)', (major, flag, want) => {
    const sb = makeSandbox();
    deployedCluster(sb);
    const state = sb.state();
    state.helm.version = helmShortVersion(Number(major));
    state.helm.releases['monitoring/loki'].status = 'failed';
    state.helm.releases['monitoring/grafana'].status = 'pending-install';
    sb.scenario(state);
    const r = call('helm', ['--kubeconfig', path.join(sb.stateDir, 'kubeconfig'), 'list', '-n', 'monitoring', ...(flag ? [flag] : []), '-o', 'json'], {}, sb.fakeState);
    expect(r.stderr).toBe('');
    const rows = JSON.parse(r.stdout) as Record<string, string>[];
    expect([...new Set(rows.map((x) => x.status))].sort()).toEqual([...want].sort());
    // list.go releaseElement: every field, revision as a string, updated as Go's time.String().
    expect(Object.keys(rows[0])).toEqual(['name', 'namespace', 'revision', 'updated', 'status', 'chart', 'app_version']);
    expect(rows[0].revision).toBe('1');
    expect(rows[0].updated).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$/);
  });

  it('get values of a release without user values is JSON null, as helm prints a nil map', () => {
    const sb = makeSandbox();
    deployedCluster(sb);
    const r = call('helm', ['--kubeconfig', path.join(sb.stateDir, 'kubeconfig'), 'get', 'values', 'loki', '-n', 'monitoring', '-o', 'json'], {}, sb.fakeState);
    expect(r.stdout).toBe('null\n');
  });
});

describe('stand-in kubectl: the flags of kubectl 1.31, the oldest supported', () => {
  it.each([
    [['get', 'pods', '--bogus'], 1, `error: unknown flag: --bogus\nSee 'kubectl get --help' for usage.\n`],
    [['get', '-x'], 1, `error: unknown shorthand flag: 'x' in -x\nSee 'kubectl get --help' for usage.\n`],
    // diff --show-secrets came after 1.31; diff reports errors with exit code 2.
    [['diff', '--show-secrets', '-f', '-'], 2, `error: unknown flag: --show-secrets\nSee 'kubectl diff -h' for help and examples\n`],
    [['bogus'], 1, 'error: unknown command "bogus" for "kubectl"\n'],
    [['rollout', 'bogus'], 1, `error: unknown command "bogus"\nSee 'kubectl rollout -h' for help and examples\n`],
    [['logs', '--tail'], 1, `error: flag needs an argument: --tail\nSee 'kubectl logs --help' for usage.\n`],
    [['version', '--client', '--output', 'yml'], 1, "error: --output must be 'yaml' or 'json'\n"],
  ])('kubectl %j: exit %i, %j', (argv, code, stderr) => {
    const r = call('kubectl', argv as string[]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code, stderr });
  });

  it.each([
    ['v1.31.9', '31', 'v5.4.2'],
    ['v1.36.3', '36', 'v5.8.1'],
  ])('version --client --output json of %s: clientVersion fields and the bundled kustomize', (gitVersion, minor, kustomize) => {
    const sb = makeSandbox();
    sb.scenario({ kubectl: { version: gitVersion } });
    const r = call('kubectl', ['version', '--client', '--output', 'json'], {}, sb.fakeState);
    const v = JSON.parse(r.stdout);
    expect(Object.keys(v.clientVersion)).toEqual(['major', 'minor', 'gitVersion', 'gitCommit', 'gitTreeState', 'buildDate', 'goVersion', 'compiler', 'platform']);
    expect(v).toMatchObject({ clientVersion: { major: '1', minor, gitVersion }, kustomizeVersion: kustomize });
    expect(call('kubectl', ['version', '--client'], {}, sb.fakeState).stdout).toBe(`Client Version: ${gitVersion}\nKustomize Version: ${kustomize}\n`);
  });
});

describe('latency model (bench/latency-model.yaml)', () => {
  const model = {
    scale: 1,
    bandwidthMBps: { internet: 10, cache: 100 },
    images: { 'loki:1': { MB: 100 }, 'gateway:1': { MB: 20 } },
    commands: [
      { name: 'loki', tool: 'helm', argv: ['upgrade', 'loki'], seconds: 2, images: ['loki:1', 'gateway:1'] },
      { name: 'boot', tool: 'talosctl', argv: ['cluster', 'create'], seconds: 0.4 },
      { name: 'unsized', tool: 'helm', argv: ['upgrade', 'grafana'], images: ['grafana:1'] },
    ],
  };
  it.each([
    ['cold pulls at the internet bandwidth', 'helm', ['--kubeconfig', 'k', 'upgrade', '--install', 'loki', 'loki'], [], 2 + 10 + 2],
    ['warm pulls from the cache', 'helm', ['upgrade', '--install', 'loki', 'loki'], ['loki:1', 'gateway:1'], 2 + 1 + 0.2],
    ['each image warm or cold on its own', 'helm', ['upgrade', '--install', 'loki', 'loki'], ['loki:1'], 2 + 1 + 2],
    ['no images: the fixed seconds', 'talosctl', ['cluster', 'create', 'docker'], [], 0.4],
    ['no rule: no time', 'helm', ['list'], [], 0],
    ['every argv word must be there', 'talosctl', ['cluster', 'show'], [], 0],
  ])('%s', (_, tool, argv, pulled, want) => {
    expect(modelledSeconds(model, tool, argv, pulled).seconds).toBeCloseTo(want);
  });

  it('says what each image cost, and names an image the model does not size', () => {
    expect(modelledSeconds(model, 'helm', ['upgrade', 'loki'], ['gateway:1'])).toMatchObject({
      fixed: 2,
      pulls: [
        { image: 'loki:1', MB: 100, warm: false, seconds: 10 },
        { image: 'gateway:1', MB: 20, warm: true, seconds: 0.2 },
      ],
    });
    expect(() => modelledSeconds(model, 'helm', ['upgrade', 'grafana'])).toThrow(/rule "unsized" pulls image "grafana:1", which its images: section does not size/);
  });

  it('a stand-in sleeps as the model says, scaled', () => {
    const sandbox = makeSandbox();
    const file = path.join(sandbox.dir, 'model.json');
    fs.writeFileSync(file, JSON.stringify({ ...model, scale: 0.5, commands: [{ name: 'boot', tool: 'talosctl', argv: ['version'], seconds: 1.2 }] }));
    const env = { ...process.env, ...sandbox.env(''), FAKE_LATENCY_MODEL: file };
    const timed = (latency: boolean) => {
      const start = Date.now();
      execFileSync(path.join(FAKE_BIN, 'talosctl'), ['version', '--client', '--short'], { env: latency ? env : { ...env, FAKE_LATENCY_MODEL: '' } });
      return Date.now() - start;
    };
    const without = timed(false);
    const withModel = timed(true);
    expect(withModel).toBeGreaterThanOrEqual(600);
    expect(withModel - without).toBeGreaterThanOrEqual(500);
  });
});

describe('stand-in talosctl cluster destroy', () => {
  it('takes what the cluster held with it: its API objects and Helm releases (kept, a warm redeploy would find them installed)', () => {
    const sandbox = makeSandbox();
    sandbox.createCluster();
    sandbox.scenario({ kubectl: { objects: { 'v1/ConfigMap/monitoring/x': { kind: 'ConfigMap' } } }, helm: { releases: { 'monitoring/loki': { name: 'loki' } } } });
    const env = { HOME: sandbox.home };
    const destroyed = call('talosctl', ['cluster', 'destroy', '--name', 'talos-local'], env, sandbox.fakeState);
    expect(destroyed.code, destroyed.stderr).toBe(0);
    expect(sandbox.state().kubectl.objects).toEqual({});
    expect(sandbox.state().helm.releases).toEqual({});
  });
});
