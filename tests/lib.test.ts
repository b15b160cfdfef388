// The shared helper module: runner errors, templates, atomic writes, values merging, and the
// diff-before-apply / compare-before-upgrade actions against the stand-in tools.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CommandError, PINNED, type PhaseRecord, UserError, chartRepository, commandLine, failureBlock, ingressUrl, labelled, mergeValues, parallel, parseConfig, parseQuantity, podDiagnostics, quantityMiB, renderTemplate, rolloutPending, run, unreadyPods, writeFileAtomic } from '../scripts/lib.ts';
import { criticalPath, deployTimes, firstVisitLine, summaryLines } from '../scripts/summary.ts';
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
  const rec = (phase: string, start: number, end: number, extra: Partial<PhaseRecord> = {}): PhaseRecord => ({
    run: 'r', phase, ok: true, ms: end - start, changed: 0, start, end, ...extra,
  });
  const graph = { registry: [], talos: ['registry'], image: ['registry'], storage: ['talos'], traefik: ['talos'], app: ['traefik', 'image'], validate: ['storage', 'app'] };

  it('lists each phase and names the failed one (records without times: the total is the sum)', () => {
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
  it('shows start and end offsets, the wall time against the sum, and the critical path', () => {
    const lines = summaryLines(
      [
        rec('image', 3500, 20000),
        rec('registry', 1000, 3000),
        rec('talos', 3500, 63500, { longest: { title: 'Talos cluster', ms: 55000 } }),
        rec('storage', 64000, 70000),
        rec('traefik', 64000, 80000),
        rec('app', 80500, 90500),
        rec('validate', 91000, 101000),
      ],
      graph,
    );
    // In the order they started, whatever order phases.log has them in.
    expect(lines[0]).toMatch(/^✓ registry/);
    expect(lines[2]).toMatch(/✓ talos\s+60.0s\s+unchanged\s+2.5s →\s+62.5s/);
    expect(lines[7]).toContain('deploy finished in 100.0s (the phases add up to 120.5s: 20.5s saved by running them side by side)');
    expect(lines[8]).toBe('critical path: registry 2.0s → talos 60.0s → traefik 16.0s → app 10.0s → validate 10.0s; longest wait in it: talos "Talos cluster" 55.0s');
  });
});

describe('criticalPath and deployTimes', () => {
  const rec = (phase: string, start: number, end: number): PhaseRecord => ({ run: 'r', phase, ok: true, ms: end - start, changed: 0, start, end });
  const graph = { a: [], b: ['a'], c: ['a'], d: ['b', 'c'] };
  it.each([
    ['the later of two deps held d back', [rec('a', 0, 10), rec('b', 10, 50), rec('c', 10, 30), rec('d', 50, 60)], ['a', 'b', 'd']],
    ['the other branch when it ends later', [rec('a', 0, 10), rec('b', 10, 20), rec('c', 10, 45), rec('d', 45, 60)], ['a', 'c', 'd']],
    ['a failed deploy: the chain ends at the last phase that ended', [rec('a', 0, 10), rec('b', 10, 20), rec('c', 10, 40)], ['a', 'c']],
    ['a phase outside the graph stands alone', [rec('x', 0, 10)], ['x']],
    ['records without times: no path', [{ run: 'r', phase: 'a', ok: true, ms: 5, changed: 0 }], []],
  ])('%s', (_, records, want) => {
    expect(criticalPath(records as PhaseRecord[], graph).map((r) => r.phase)).toEqual(want);
  });
  it.each([
    ['side by side', [rec('a', 0, 10), rec('b', 5, 20)], { wallMs: 20, sumMs: 25 }],
    ['one after another', [rec('a', 100, 110), rec('b', 110, 130)], { wallMs: 30, sumMs: 30 }],
    ['a record without times: the sum', [rec('a', 0, 10), { run: 'r', phase: 'b', ok: true, ms: 7, changed: 0 }], { wallMs: 17, sumMs: 17 }],
  ])('%s', (_, records, want) => {
    expect(deployTimes(records as PhaseRecord[])).toEqual(want);
  });
});

describe('labelled', () => {
  it.each([
    ['no label: unchanged', 'a\nb', '', 'a\nb'],
    ['every line of a block starts with the phase', '✗ storage failed: x\n    output\nhint', 'storage', '[storage] ✗ storage failed: x\n[storage]     output\n[storage] hint'],
  ])('%s', (_, text, label, want) => {
    expect(labelled(text, label).replace(/\x1b\[[0-9;]*m/g, '')).toBe(want);
  });
  it('a failure block is one text: the message with the command, its output and the hint', () => {
    const block = failureBlock('storage', new CommandError('kubectl apply -f -', 1, 'error: boom', 'Run `task talos` first.'));
    expect(block.replace(/\x1b\[[0-9;]*m/g, '')).toBe('✗ storage failed: command failed (exit 1): kubectl apply -f -\n    error: boom\nRun `task talos` first.');
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

describe('parallel', () => {
  it('runs branches side by side; the tools of each branch see its path in PLATFORM_BRANCH', async () => {
    const seen: string[] = [];
    const echo = async () => void seen.push((await run('sh', ['-c', 'printf %s "$PLATFORM_BRANCH"'])).stdout);
    await echo();
    await parallel(echo, async () => {
      await echo();
      await parallel(echo);
    });
    expect(seen[0]).toBe('');
    expect(seen.slice(1).sort()).toEqual([expect.stringMatching(/^\d+\.0\/$/), expect.stringMatching(/^\d+\.1\/$/), expect.stringMatching(/^\d+\.1\/\d+\.0\/$/)]);
  });
  it('waits for every branch, then fails with the first failure', async () => {
    let finished = false;
    await expect(
      parallel(
        async () => {
          throw new Error('first');
        },
        async () => {
          await new Promise((r) => setTimeout(r, 50));
          finished = true;
        },
      ),
    ).rejects.toThrow('first');
    expect(finished).toBe(true);
  });
});

describe('rolloutPending: kubectl rollout status rules (pkg/polymorphichelpers/rollout_status.go)', () => {
  const meta = (generation: number) => ({ name: 'w', namespace: 'n', generation });
  it.each([
    { name: 'deployment rolled out', w: { kind: 'Deployment', metadata: meta(2), spec: { replicas: 2 }, status: { observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2 } }, want: undefined },
    { name: 'deployment: new generation not observed', w: { kind: 'Deployment', metadata: meta(3), spec: { replicas: 2 }, status: { observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2 } }, want: 'spec update not observed yet' },
    { name: 'deployment without status', w: { kind: 'Deployment', metadata: meta(1), spec: {} }, want: 'spec update not observed yet' },
    { name: 'deployment: replicas not updated', w: { kind: 'Deployment', metadata: meta(2), spec: { replicas: 2 }, status: { observedGeneration: 2, replicas: 3, updatedReplicas: 1, availableReplicas: 2 } }, want: '1 of 2 replicas updated' },
    { name: 'deployment: old replica terminating', w: { kind: 'Deployment', metadata: meta(2), spec: { replicas: 2 }, status: { observedGeneration: 2, replicas: 3, updatedReplicas: 2, availableReplicas: 2 } }, want: '1 old replicas pending termination' },
    { name: 'deployment: updated not available', w: { kind: 'Deployment', metadata: meta(2), spec: { replicas: 2 }, status: { observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 1 } }, want: '1 of 2 updated replicas available' },
    { name: 'deployment: progress deadline', w: { kind: 'Deployment', metadata: meta(2), spec: { replicas: 1 }, status: { observedGeneration: 2, replicas: 1, updatedReplicas: 1, availableReplicas: 1, conditions: [{ type: 'Progressing', reason: 'ProgressDeadlineExceeded' }] } }, want: 'progress deadline exceeded' },
    { name: 'daemonset rolled out', w: { kind: 'DaemonSet', metadata: meta(1), spec: { updateStrategy: { type: 'RollingUpdate' } }, status: { observedGeneration: 1, desiredNumberScheduled: 3, updatedNumberScheduled: 3, numberAvailable: 3 } }, want: undefined },
    { name: 'daemonset: a node not updated', w: { kind: 'DaemonSet', metadata: meta(1), spec: {}, status: { observedGeneration: 1, desiredNumberScheduled: 3, updatedNumberScheduled: 2, numberAvailable: 3 } }, want: '2 of 3 pods updated' },
    { name: 'daemonset: OnDelete (rollout status refuses it: waited for, so it says so)', w: { kind: 'DaemonSet', metadata: meta(1), spec: { updateStrategy: { type: 'OnDelete' } }, status: { observedGeneration: 1 } }, want: 'update strategy OnDelete' },
    { name: 'statefulset rolled out', w: { kind: 'StatefulSet', metadata: meta(1), spec: { replicas: 1 }, status: { observedGeneration: 1, readyReplicas: 1, currentRevision: 'a', updateRevision: 'a' } }, want: undefined },
    { name: 'statefulset: pod at the old revision', w: { kind: 'StatefulSet', metadata: meta(2), spec: { replicas: 1 }, status: { observedGeneration: 2, readyReplicas: 1, currentRevision: 'a', updateRevision: 'b' } }, want: 'pods not all at revision b' },
    { name: 'statefulset: not ready', w: { kind: 'StatefulSet', metadata: meta(1), spec: { replicas: 2 }, status: { observedGeneration: 1, readyReplicas: 1, currentRevision: 'a', updateRevision: 'a' } }, want: '1 of 2 pods ready' },
  ])('$name', ({ w, want }) => expect(rolloutPending(w)).toBe(want));
});

describe('chartRepository (CHART_REPOSITORY_MIRROR)', () => {
  const pinned = PINNED.charts.prometheus.repo;
  it.each([
    ['unset: the chart\'s own repository', pinned, {}, pinned],
    ['set: the mirror for a pinned chart', pinned, { CHART_REPOSITORY_MIRROR: 'http://127.0.0.1:8080/charts/' }, 'http://127.0.0.1:8080/charts'],
    ['set: every pinned repository', PINNED.charts.traefik.repo, { CHART_REPOSITORY_MIRROR: 'https://mirror.internal' }, 'https://mirror.internal'],
    ['set: a repository we do not pin is left alone', 'http://127.0.0.1:1234', { CHART_REPOSITORY_MIRROR: 'https://mirror.internal' }, 'http://127.0.0.1:1234'],
    ['empty: as unset', pinned, { CHART_REPOSITORY_MIRROR: '' }, pinned],
  ])('%s', (_, repo, env, want) => {
    expect(chartRepository(repo, env)).toBe(want);
  });
  it.each(['mirror.internal', 'oci://registry.internal/charts', 'https://'])('refuses %s, naming the variable, the value and the fix', (bad) => {
    const call = () => chartRepository(pinned, { CHART_REPOSITORY_MIRROR: bad });
    expect(call).toThrow(UserError);
    expect(call).toThrow(`CHART_REPOSITORY_MIRROR="${bad}" is not the http(s) URL of a Helm repository`);
  });
});
