// A no-op re-run: every phase of `task deploy` but validate run twice against the stand-in tools; the
// second run must change nothing (no mutating call) and stay within each phase's tool-call ceiling.
// validate is left out: its checks need the stand-in HTTPS servers of tests/validate-orchestration.test.ts,
// and it is never mutation-free (its storage smoke test creates and removes a claim and a pod).
import { afterAll, describe, expect, it } from 'vitest';
import { type ToolCall, isMutating, makeSandbox, startStandInRegistry } from './helpers.ts';

/** The phases `task deploy` runs before validate, in its order. */
const PHASES = ['talos', 'storage', 'traefik', 'observability', 'sample-app'] as const;
/**
 * Tool calls each phase's no-op re-run may make: a ceiling at what it makes now (68 with validate's 19
 * before the cuts of issue 13, 62 now: observability's 14 include the Alertmanager webhook Secret's diff, sample-app's 7 the app dashboard's metric-name query). Issue 13 asks for at most 20 for a whole second `task deploy`:
 * not reached (README, "A no-op re-run").
 */
const NOOP_CEILING: Record<(typeof PHASES)[number], number> = { talos: 10, storage: 5, traefik: 7, observability: 14, 'sample-app': 7 };

const line = (c: ToolCall) => `${c.tool} ${c.argv.join(' ')}`;

describe('a second deploy changes nothing, within the tool-call budget', { timeout: 300_000 }, () => {
  const closers: (() => Promise<void>)[] = [];
  afterAll(() => Promise.all(closers.map((close) => close())));

  it('every phase twice: the second run makes no mutating call and stays within each phase ceiling', async () => {
    const sandbox = makeSandbox();
    const env = { PULL_THROUGH_CACHE: 'false' };
    for (const phase of PHASES) {
      const first = await sandbox.run(phase, [], env);
      expect(first.code, `${phase}: ${first.stdout}${first.stderr}`).toBe(0);
      // The local registry answers on REGISTRY_PORT once the talos phase made its container, as the real one does.
      if (phase === 'talos') closers.push((await startStandInRegistry(() => sandbox.state().docker.pushed ?? {}, sandbox.ports.REGISTRY_PORT)).close);
    }
    const perPhase: Record<string, string[]> = {};
    for (const phase of PHASES) {
      const again = await sandbox.run(phase, [], env);
      expect(again.code, `${phase}: ${again.stdout}${again.stderr}`).toBe(0);
      expect(again.calls.filter(isMutating).map(line), phase).toEqual([]);
      expect(again.stdout, phase).toMatch(new RegExp(`${phase} done in .*nothing changed`));
      perPhase[phase] = again.calls.map(line);
    }
    console.log(Object.entries(perPhase).map(([p, calls]) => `${p}: ${calls.length}\n  ${calls.join('\n  ')}`).join('\n'));
    for (const phase of PHASES) expect(perPhase[phase].length, `${phase}:\n${perPhase[phase].join('\n')}`).toBeLessThanOrEqual(NOOP_CEILING[phase]);
    // What the cuts are: one `helm list` of every namespace per phase, each release's values read once,
    // one `docker ps` for nodes and helpers, the cluster network found by preflight's own listing.
    const all = Object.values(perPhase).flat();
    for (const phase of ['traefik', 'observability']) {
      expect(perPhase[phase].filter((c) => / list /.test(c)), phase).toEqual([expect.stringMatching(/^helm .* list --all-namespaces /)]);
      const values = perPhase[phase].filter((c) => / get values /.test(c));
      expect(new Set(values).size, phase).toBe(values.length);
    }
    expect(perPhase.talos.filter((c) => c.startsWith('docker ps'))).toHaveLength(1);
    expect(perPhase.talos.filter((c) => c.startsWith('docker network ls'))).toHaveLength(1);
    expect(all.length).toBeLessThanOrEqual(Object.values(NOOP_CEILING).reduce((a, b) => a + b, 0));

    // --verbose prints how many tool calls the phase made.
    const verbose = await sandbox.run('observability', ['--verbose'], env);
    expect(verbose.stdout).toContain(`› ${verbose.calls.length} tool calls`);
  });
});
