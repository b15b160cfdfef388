// The shared helper module: runner errors, templates, atomic writes, values merging, and the
// diff-before-apply / compare-before-upgrade actions against the stand-in tools.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CommandError, commandLine, ingressUrl, mergeValues, parseConfig, parseQuantity, podDiagnostics, quantityMiB, renderTemplate, run, unreadyPods, writeFileAtomic } from '../scripts/lib.ts';
import { firstVisitLine, summaryLines } from '../scripts/summary.ts';
import { deployedCluster, podObj } from './fixtures/validate/cluster.ts';
import { FAKE_BIN, makeSandbox } from './helpers.ts';

describe('ingressUrl', () => {
  it.each([
    ['localhost', 443, 'grafana', '', 'https://grafana.localhost'],
    ['local.dev', 443, 'app', '/', 'https://app.local.dev/'],
    ['local.dev', 8443, 'traefik', '/dashboard/', 'https://traefik.local.dev:8443/dashboard/'],
  ])('%s, HTTPS_PORT %i, %s%s -> %s', (DOMAIN, HTTPS_PORT, name, pathName, want) => {
    expect(ingressUrl({ DOMAIN, HTTPS_PORT }, name, pathName)).toBe(want);
  });
});

describe('firstVisitLine', () => {
  it.each([
    [{ DOMAIN: 'localhost', HTTPS_PORT: 443, HOST_IP: '127.0.0.1' }, /^Open https:\/\/grafana\.localhost\/ — .*`task trust-ca`/],
    [{ DOMAIN: 'local.dev', HTTPS_PORT: 8443, HOST_IP: '0.0.0.0' }, /^Open https:\/\/grafana\.local\.dev:8443\/ after `task hosts` \(the names must resolve to 127\.0\.0\.1\) — .*`task trust-ca`/],
  ])('%j', (cfg, want) => {
    expect(firstVisitLine(cfg)).toMatch(want);
  });
});

describe('parseQuantity', () => {
  it.each<[string, number]>([
    ['100m', 0.1],
    ['2', 2],
    ['1.5', 1.5],
    ['512Mi', 512 * 2 ** 20],
    ['1Gi', 2 ** 30],
    ['128974848', 128974848],
    ['129M', 129e6],
    ['1e3', 1000],
    ['64Ki', 65536],
  ])('%s is %d', (raw, want) => {
    expect(parseQuantity(raw)).toBeCloseTo(want, 6);
  });
  it.each([['10Gi', 10240], ['512Mi', 512]])('%s is %d MiB (a volume size of the config)', (raw, want) => {
    expect(quantityMiB(raw)).toBe(want);
  });
  it.each(['', '1 Gi', 'lots', '1Gb', '--1'])('refuses %j', (raw) => {
    expect(() => parseQuantity(raw)).toThrow(/not a Kubernetes quantity/);
  });
});

describe('run', () => {
  it('returns the output of a command that succeeds', async () => {
    expect((await run('sh', ['-c', 'echo hi'])).stdout).toBe('hi\n');
  });
  it('throws an error carrying the command line and its output', async () => {
    const err = await run('sh', ['-c', 'echo out; echo boom >&2; exit 3'], { hint: 'try again' }).catch((e) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect(err.exitCode).toBe(3);
    expect(err.message).toContain("command failed (exit 3): sh -c 'echo out; echo boom >&2; exit 3'");
    expect(err.message).toContain('out\n    boom');
    expect(err.message).toMatch(/try again$/);
  });
  it('accepts listed exit codes as answers', async () => {
    expect((await run('sh', ['-c', 'exit 1'], { okCodes: [1] })).code).toBe(1);
  });
  it('passes stdin', async () => {
    expect((await run('cat', [], { input: 'data' })).stdout).toBe('data');
  });
  it.each([
    [['kubectl', ['get', 'pods']], 'kubectl get pods'],
    [['sh', ['-c', "it's"]], "sh -c 'it'\\''s'"],
    [['x', ['a b', '--k=v']], "x 'a b' --k=v"],
  ] as const)('quotes %j', ([cmd, args], want) => {
    expect(commandLine(cmd, [...args])).toBe(want);
  });
});

describe('renderTemplate', () => {
  it('fills placeholders', () => {
    expect(renderTemplate('host: grafana.${DOMAIN}:${PORT}', { DOMAIN: 'local.dev', PORT: 443 })).toBe('host: grafana.local.dev:443');
  });
  it('refuses an unknown placeholder', () => {
    expect(() => renderTemplate('${DOMIAN}', { DOMAIN: 'x' })).toThrow('${DOMIAN} has no value');
  });
});

describe('writeFileAtomic', () => {
  it('writes, reports unchanged content and keeps the mode', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'atomic-'));
    const file = path.join(dir, 'sub', 'f');
    expect(writeFileAtomic(file, 'a', 0o600)).toBe(true);
    expect(writeFileAtomic(file, 'a')).toBe(false);
    expect(writeFileAtomic(file, 'b')).toBe(true);
    expect(fs.readFileSync(file, 'utf8')).toBe('b');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['f']);
  });
});

describe('mergeValues', () => {
  it.each([
    [[{ a: 1 }, { b: 2 }], { a: 1, b: 2 }],
    [[{ a: { x: 1, y: 1 } }, { a: { y: 2 } }], { a: { x: 1, y: 2 } }],
    [[{ a: [1, 2] }, { a: [3] }], { a: [3] }],
    [[{ a: { x: 1 } }, { a: 'flat' }], { a: 'flat' }],
  ])('%j', (layers, want) => {
    expect(mergeValues(...layers)).toEqual(want);
  });
});

describe('deploy summary', () => {
  it('lists each phase and names the failed one', () => {
    const lines = summaryLines([
      { run: 'r', phase: 'talos', ok: true, ms: 61000, changed: 0 },
      { run: 'r', phase: 'storage', ok: false, ms: 2000, changed: 0 },
    ]);
    expect(lines[0]).toMatch(/✓ talos\s+61.0s\s+unchanged/);
    expect(lines[1]).toMatch(/✗ storage\s+2.0s\s+failed/);
    expect(lines[2]).toContain('deploy failed at storage after 63.0s');
  });
  it('says when no phase ran', () => {
    expect(summaryLines([])).toEqual(['no phase ran']);
  });
});

describe('unreadyPods', () => {
  const pod = (name: string, phase: string, ready: boolean, state?: Record<string, unknown>) => ({
    metadata: { name },
    status: {
      phase,
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
      containerStatuses: [{ name: 'c', ready, restartCount: state ? 3 : 0, state: state ?? { running: {} } }],
    },
  });
  it.each([
    ['a ready pod', pod('ok', 'Running', true), []],
    ['a finished job pod', { metadata: { name: 'job' }, status: { phase: 'Succeeded' } }, []],
    ['a crash-looping pod', pod('loki-0', 'Running', false, { waiting: { reason: 'CrashLoopBackOff' } }), [{ namespace: 'default', name: 'loki-0', reason: 'Running; c: CrashLoopBackOff (3 restarts)' }]],
    [
      'an init container still waiting',
      { metadata: { name: 'i', namespace: 'monitoring' }, status: { phase: 'Pending', initContainerStatuses: [{ name: 'init', ready: false, state: { waiting: { reason: 'PodInitializing' } } }] } },
      [{ namespace: 'monitoring', name: 'i', reason: 'Pending; init: PodInitializing' }],
    ],
    ['a pending pod without status', { metadata: { name: 'p' }, status: { phase: 'Pending' } }, [{ namespace: 'default', name: 'p', reason: 'Pending' }]],
  ])('%s', (_, p, want) => {
    expect(unreadyPods([p as any])).toEqual(want);
  });
});

describe('podDiagnostics (stand-in kubectl)', () => {
  const twoContainers = podObj('monitoring', 'loki-0', false, {}, {
    containerStatuses: [
      { name: 'loki', ready: true, state: { running: {} } },
      { name: 'sidecar', ready: false, state: { waiting: { reason: 'ContainerCreating' } } },
    ],
  });
  const kubeletDown =
    'Error from server: Get "https://10.5.0.3:10250/containerLogs/monitoring/loki-0/loki?tailLines=10": dial tcp 10.5.0.3:10250: connect: connection refused';
  it.each([
    {
      name: 'the log lines of the containers that have them, then why one has none',
      failures: [],
      want: ['    log: level=error msg="init failed"', '    kubectl logs: Error from server (BadRequest): container "sidecar" in pod "loki-0" is waiting to start: ContainerCreating'],
    },
    {
      name: "kubectl's reason when it cannot reach the kubelet",
      failures: [{ tool: 'kubectl', argv: ['logs'], code: 1, stderr: `${kubeletDown}\n` }],
      want: [`    kubectl logs: ${kubeletDown}`],
    },
    {
      name: "kubectl's reason when it cannot list the pods",
      failures: [{ tool: 'kubectl', argv: ['get', 'pods'], code: 1, stderr: 'Error from server (Forbidden): pods is forbidden: User "x" cannot list resource "pods"\n' }],
      want: ['cannot list pods in monitoring: Error from server (Forbidden): pods is forbidden: User "x" cannot list resource "pods"'],
    },
  ])('$name', async ({ failures, want }) => {
    const sb = makeSandbox();
    deployedCluster(sb, [twoContainers], { failures });
    sb.scenario({ kubectl: { logs: { 'monitoring/loki-0': 'level=error msg="init failed"\n' } } });
    const saved = { PATH: process.env.PATH, FAKE_STATE: process.env.FAKE_STATE };
    Object.assign(process.env, { PATH: `${FAKE_BIN}${path.delimiter}${process.env.PATH}`, FAKE_STATE: sb.fakeState });
    try {
      const lines = (await podDiagnostics(parseConfig({ STATE_DIR: sb.stateDir }), ['monitoring'])).split('\n');
      for (const line of want) expect(lines).toContain(line);
      expect(lines.join('\n')).not.toContain('command failed');
    } finally {
      Object.assign(process.env, saved);
    }
  });
});
