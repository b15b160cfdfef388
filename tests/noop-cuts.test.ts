// What a no-op re-run no longer asks (tests/noop-rerun.test.ts counts the calls), and proof that each
// cut still sees a change: facts of one deploy run (DEPLOY_RUN_ID) reused only within that run, tool
// versions asked again for another binary, a release's recorded values used only for the revision
// they belong to, the kustomize render kept only for the same inputs, and `rollout status` still
// waited for when a read shows a rollout pending.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RUN_FACT_MAX_AGE_MS, STATE_DIR_MARKER, recordRunFact, runFact } from '../scripts/lib.ts';
import { FAKE_BIN, type ScriptResult, type Sandbox, callsOf, makeSandbox, mutatingLines } from './helpers.ts';

const lines = (r: ScriptResult) => r.calls.map((c) => `${c.tool} ${c.argv.join(' ')}`);
const readyz = (r: ScriptResult) => lines(r).filter((l) => l.endsWith(' get --raw /readyz'));

/** A directory holding another `tool` binary (a copy of the stand-in's launcher), to put first on PATH. */
function otherBinary(tool: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `other-${tool}-`));
  fs.writeFileSync(path.join(dir, tool), `#!/bin/sh\nexec node "${path.join(FAKE_BIN, '..', 'fake-tool.mjs')}" ${tool} "$@"\n`, { mode: 0o755 });
  return dir;
}
const pathWith = (sb: Sandbox, dir: string) => `${dir}${path.delimiter}${sb.env('unused').PATH}`;

describe('facts of one deploy run (recordRunFact/runFact)', () => {
  const saved = process.env.DEPLOY_RUN_ID;
  afterEach(() => {
    if (saved === undefined) delete process.env.DEPLOY_RUN_ID;
    else process.env.DEPLOY_RUN_ID = saved;
  });
  const stateDir = (ours: boolean) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'run-facts-'));
    if (ours) fs.writeFileSync(path.join(dir, STATE_DIR_MARKER), '');
    return { stateDir: dir };
  };
  it.each([
    ['the same run, fresh', 'run-1', 'run-1', true, 0, true],
    ['another run', 'run-1', 'run-2', true, 0, false],
    ['a phase run alone (no DEPLOY_RUN_ID)', 'run-1', undefined, true, 0, false],
    ['older than the age limit', 'run-1', 'run-1', true, RUN_FACT_MAX_AGE_MS + 1000, false],
    ['from the future (a clock set back)', 'run-1', 'run-1', true, -60_000, false],
    ['STATE_DIR not ours yet: nothing recorded', 'run-1', 'run-1', false, 0, false],
  ])('%s', (_case, recordedIn, readIn, ours, readAfterMs, found) => {
    const cfg = stateDir(ours);
    process.env.DEPLOY_RUN_ID = recordedIn;
    recordRunFact(cfg, 'fact', { answer: 42 });
    if (readIn === undefined) delete process.env.DEPLOY_RUN_ID;
    else process.env.DEPLOY_RUN_ID = readIn;
    expect(runFact(cfg, 'fact', Date.now() + readAfterMs)).toEqual(found ? { answer: 42 } : undefined);
  });
  it('outside a deploy run nothing is recorded', () => {
    const cfg = stateDir(true);
    delete process.env.DEPLOY_RUN_ID;
    recordRunFact(cfg, 'fact', true);
    expect(fs.existsSync(path.join(cfg.stateDir, 'run-facts'))).toBe(false);
  });
});

describe('cuts against the stand-in tools', { timeout: 120_000 }, () => {
  it('the API proven to answer earlier in the same deploy run: no /readyz; another run, or a phase alone, asks; a cluster gone since still fails', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const first = await sb.run('storage', [], { DEPLOY_RUN_ID: 'run-1' });
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(readyz(first)).toHaveLength(1);
    const sameRun = await sb.run('storage', [], { DEPLOY_RUN_ID: 'run-1' });
    expect(readyz(sameRun)).toEqual([]);
    expect(readyz(await sb.run('storage', [], { DEPLOY_RUN_ID: 'run-2' }))).toHaveLength(1);
    expect(readyz(await sb.run('storage'))).toHaveLength(1);
    // The control plane stopped after the fact was recorded: the phase's first read fails, nothing is applied.
    sb.scenario({ docker: { containers: { 'talos-local-controlplane-1': { state: 'exited' } } } });
    const down = await sb.run('storage', [], { DEPLOY_RUN_ID: 'run-2' });
    expect(down.code).not.toBe(0);
    expect(down.stderr).toMatch(/refused/);
    expect(mutatingLines(down.calls)).toEqual([]);
  });

  it("talos reuses the registry phase's Docker and network checks of the same run only; a failed registry check leaves nothing to reuse", async () => {
    const sb = makeSandbox();
    const env = { PULL_THROUGH_CACHE: 'false', DEPLOY_RUN_ID: 'run-1' };
    expect((await sb.run('talos', ['--registry'], env)).code).toBe(0);
    const talos = await sb.run('talos', [], env);
    expect(talos.code, talos.stdout + talos.stderr).toBe(0);
    expect(lines(talos).filter((l) => /^docker (info|context|network (ls|inspect))/.test(l))).toEqual([]);
    expect(talos.stdout).toMatch(/Docker daemon .*checked by the registry phase of this deploy/);
    const otherRun = await sb.run('talos', [], { ...env, DEPLOY_RUN_ID: 'run-2' });
    expect(lines(otherRun).filter((l) => /^docker (info|context inspect|network ls)/.test(l))).toHaveLength(3);

    // Another network on CLUSTER_SUBNET: the registry phase stops, and so does talos in that run.
    const taken = makeSandbox();
    taken.scenario({ docker: { networks: { other: { name: 'other', subnet: '10.5.0.0/24', labels: {} } } } });
    const registry = await taken.run('talos', ['--registry'], env);
    expect(registry.code).not.toBe(0);
    const after = await taken.run('talos', [], env);
    expect(after.code).not.toBe(0);
    expect(after.stderr).toMatch(/CLUSTER_SUBNET/);
  });

  it('tool versions: asked once per binary; another binary is asked again and its wrong version seen', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const versionCalls = (r: ScriptResult) => lines(r).filter((l) => / version /.test(l));
    expect(versionCalls(await sb.run('talos', ['--preflight']))).toHaveLength(3);
    expect(versionCalls(await sb.run('talos', ['--preflight']))).toEqual([]);
    sb.scenario({ talosctl: { version: 'v1.12.4' } });
    const other = await sb.run('talos', ['--preflight'], { PATH: pathWith(sb, otherBinary('talosctl')) });
    expect(other.code).not.toBe(0);
    expect(versionCalls(other)).toEqual([expect.stringMatching(/^talosctl version/)]);
    expect(other.stderr).toContain('talosctl is v1.12.4 but TALOS_VERSION=v1.13.9 needs talosctl v1.13.x');
  });

  it("a release's recorded values stand for `helm get values` only for the revision they belong to", async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const getValues = (r: ScriptResult) => callsOf(r.calls, 'helm').filter((c) => c.argv.includes('get'));
    const upgrades = (r: ScriptResult) => callsOf(r.calls, 'helm').filter((c) => c.argv.includes('upgrade'));
    expect((await sb.run('traefik')).code).toBe(0);
    const again = await sb.run('traefik');
    expect(getValues(again)).toEqual([]);
    expect(upgrades(again)).toEqual([]);
    // Someone else's upgrade: a new revision with other values. Read, seen, and set back.
    const key = 'traefik/traefik';
    const rel = sb.state().helm.releases[key];
    sb.scenario({ helm: { releases: { [key]: { ...rel, revision: rel.revision + 1, values: { ...rel.values, deployment: { kind: 'Deployment' } } } } } });
    const drifted = await sb.run('traefik');
    expect(drifted.code, drifted.stdout + drifted.stderr).toBe(0);
    expect(getValues(drifted)).toHaveLength(1);
    expect(upgrades(drifted)).toHaveLength(1);
    expect(sb.state().helm.releases[key].values.deployment.kind).toBe('DaemonSet');
    expect(getValues(await sb.run('traefik'))).toEqual([]);
    // A reinstall that lands on the same revision number has another `updated`: read again.
    const now = sb.state().helm.releases[key];
    sb.scenario({ helm: { releases: { [key]: { ...now, updated: '2030-01-01T00:00:00.000Z', values: { ...now.values, deployment: { kind: 'Deployment' } } } } } });
    const reinstalled = await sb.run('traefik');
    expect(getValues(reinstalled)).toHaveLength(1);
    expect(upgrades(reinstalled)).toHaveLength(1);
  });

  it('the volume size check still sees a changed PROMETHEUS_STORAGE from the recorded values', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    expect((await sb.run('observability')).code).toBe(0);
    const changed = await sb.run('observability', [], { PROMETHEUS_STORAGE: '20Gi' });
    expect(changed.code).not.toBe(0);
    expect(changed.stderr).toMatch(/PROMETHEUS_STORAGE="20Gi" differs from the size of the deployed prometheus volume/);
    expect(callsOf(changed.calls, 'helm').filter((c) => c.argv.includes('get'))).toEqual([]);
    expect(mutatingLines(changed.calls)).toEqual([]);
  });

  it('the kustomize render is kept for the same kustomization and kubectl; another kubectl renders again', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const kustomize = (r: ScriptResult) => callsOf(r.calls, 'kubectl').filter((c) => c.argv.includes('kustomize'));
    expect(kustomize(await sb.run('storage'))).toHaveLength(1);
    const kept = await sb.run('storage');
    expect(kustomize(kept)).toEqual([]);
    expect(kept.stdout).toMatch(/kept render/);
    expect(kustomize(await sb.run('storage', [], { PATH: pathWith(sb, otherBinary('kubectl')) }))).toHaveLength(1);
  });

  it('rollout status only when the read shows a rollout pending (traefik, storage)', async () => {
    const sb = makeSandbox();
    sb.createCluster();
    const rollouts = (r: ScriptResult) => callsOf(r.calls, 'kubectl').filter((c) => c.argv.includes('rollout'));
    const pending = { observedGeneration: 1, desiredNumberScheduled: 2, updatedNumberScheduled: 1, numberAvailable: 1, replicas: 1, updatedReplicas: 0, availableReplicas: 0 };
    const workload = (kind: string, namespace: string, name: string, status?: object) => ({ apiVersion: 'apps/v1', kind, metadata: { namespace, name, generation: 1 }, spec: { selector: {} }, ...(status ? { status } : {}) });
    expect((await sb.run('storage')).code).toBe(0);
    expect((await sb.run('traefik')).code).toBe(0);
    sb.scenario({ kubectl: { objects: { 'DaemonSet/traefik/traefik': workload('DaemonSet', 'traefik', 'traefik') } } });
    expect(rollouts(await sb.run('traefik'))).toEqual([]);
    expect(rollouts(await sb.run('storage'))).toEqual([]);
    sb.scenario({
      kubectl: {
        objects: {
          'DaemonSet/traefik/traefik': workload('DaemonSet', 'traefik', 'traefik', pending),
          'Deployment/local-path-storage/local-path-provisioner': workload('Deployment', 'local-path-storage', 'local-path-provisioner', pending),
        },
      },
    });
    expect(rollouts(await sb.run('traefik')).map((c) => c.argv.find((a) => a.startsWith('daemonset/')))).toEqual(['daemonset/traefik']);
    expect(rollouts(await sb.run('storage')).map((c) => c.argv.find((a) => a.startsWith('deployment/')))).toEqual(['deployment/local-path-provisioner']);
  });
});
