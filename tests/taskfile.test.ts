// The Taskfile, checked with the real `task` binary (go-task v3.54.0, installed by .ci/run).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { NAMESPACE_OWNER_LABEL } from '../scripts/lib.ts';
import { deployGraph } from '../scripts/summary.ts';
import { PROJECT_DIR, makeSandbox } from './helpers.ts';

const PHASES = ['talos', 'storage', 'traefik', 'observability', 'sample-app', 'validate'];

/** The order the deploy graph must keep, as task names in the dry run: [before, after]. */
const DEPLOY_EDGES = [
  ['target', 'registry'],
  ['registry', 'talos'], ['registry', 'sample-app:image'],
  ['talos', 'storage'], ['talos', 'traefik'], ['storage', 'observability'],
  ['traefik', 'sample-app'], ['sample-app:image', 'sample-app'], ['talos', 'sample-app'],
  ['observability', 'validate'], ['sample-app', 'validate'], ['traefik', 'validate'], ['storage', 'validate'],
];

function taskBinary(): string {
  const candidates = [...(process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'task')), path.join(os.homedir(), 'go', 'bin', 'task')];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error('the `task` binary is not installed: go install github.com/go-task/task/v3/cmd/task@v3.54.0');
  return found;
}

// Task colours its output when it thinks it runs in CI (CI=true); the checks read plain text.
const stripAnsi = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, '');

function task(args: string[], env: Record<string, string> = {}) {
  const res = spawnSync(taskBinary(), args, { cwd: PROJECT_DIR, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env } });
  return { status: res.status, stdout: stripAnsi(res.stdout), stderr: stripAnsi(res.stderr) };
}

describe('Taskfile.yml', () => {
  it('is read by task v3.54.0', () => {
    expect(execFileSync(taskBinary(), ['--version'], { encoding: 'utf8' })).toContain('3.54.0');
  });

  it('task --list describes every phase and lifecycle task', () => {
    const res = task(['--list']);
    expect(res.status, res.stderr).toBe(0);
    for (const name of [...PHASES, 'deploy', 'target', 'registry', 'sample-app:image', 'preflight', 'destroy', 'clean', 'kubeconfig', 'test', 'bench']) {
      expect(res.stdout).toMatch(new RegExp(`^\\* ${name}:\\s+\\S`, 'm'));
    }
  });

  it('task --dry deploy runs each phase once, after the phases it needs, and the summary last', () => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskfile-'));
    fs.writeFileSync(path.join(stateDir, 'kubeconfig'), '');
    const res = task(['--dry', 'deploy'], { STATE_DIR: stateDir });
    expect(res.status, res.stderr).toBe(0);
    // Each node prints its command only after its deps finished, also in a dry run.
    const ran = [...res.stderr.matchAll(/task: \[([\w:-]+)\] npx --no-install tsx scripts\/([\w-]+)\.ts ?([\w-]*)/g)].map((m) => m[1]);
    expect([...ran].sort()).toEqual(['observability', 'registry', 'sample-app', 'sample-app:image', 'storage', 'summary', 'talos', 'target', 'traefik', 'validate']);
    const before = (a: string, b: string) => expect(ran.indexOf(a), `${a} before ${b}`).toBeLessThan(ran.indexOf(b));
    for (const [a, b] of DEPLOY_EDGES) before(a, b);
    expect(ran.at(-1)).toBe('summary');
  });

  it('the deploy graph is the one the README and summary describe', () => {
    const doc = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8'));
    const graph = deployGraph(doc);
    expect(graph).toEqual({
      target: [],
      registry: ['target'],
      talos: ['registry'],
      'sample-app-image': ['registry'],
      storage: ['talos'],
      traefik: ['talos'],
      observability: ['storage'],
      'sample-app': ['traefik', 'sample-app-image'],
      validate: ['observability', 'sample-app'],
    });
    for (const [name, t] of Object.entries(doc.tasks as Record<string, { run?: string; internal?: boolean }>)) {
      if (name.startsWith('deploy:')) expect({ name, run: t.run, internal: t.internal }).toEqual({ name, run: 'once', internal: true });
    }
  });

  it('a failed phase stops the phases that need it; the others finish, and the summary runs', () => {
    const sandbox = makeSandbox();
    // storage fails: observability and validate (which need it) never start; traefik does.
    sandbox.scenario({ failures: [{ tool: 'kubectl', argv: ['kustomize'], code: 1, stderr: 'error: scripted kustomize failure' }] });
    const log = path.join(sandbox.dir, 'calls.jsonl');
    const res = task(['deploy'], sandbox.env(log));
    expect(res.status).not.toBe(0);
    const phases = fs.readFileSync(path.join(sandbox.stateDir, 'phases.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const byPhase = Object.fromEntries(phases.map((p) => [p.phase, p.ok]));
    expect(byPhase).toMatchObject({ registry: true, talos: true, storage: false, traefik: true });
    expect(byPhase).not.toHaveProperty('observability');
    expect(byPhase).not.toHaveProperty('validate');
    expect(res.stdout).toContain('Summary');
    expect(res.stdout).toMatch(/deploy failed at .*storage/);
    // Each phase's lines carry its name while phases run side by side.
    expect(res.stdout).toMatch(/^\[storage\] ✗ storage failed/m);
    expect(res.stdout).toMatch(/^\[traefik\] ✓ traefik done in/m);
  }, 240_000);

  it('each phase still runs alone, unlabelled', () => {
    const sandbox = makeSandbox();
    const res = task(['registry'], sandbox.env(path.join(sandbox.dir, 'calls.jsonl')));
    expect(res.status, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^✓ registry done in/m);
    expect(res.stdout).not.toContain('[registry]');
  }, 120_000);

  it('install is up to date once npm ci ran, so tasks do not reinstall every time', () => {
    const res = task(['--status', 'install']);
    expect(res.status, res.stderr).toBe(0);
  });

  it('with CLUSTER=existing, the cluster preconditions let a phase through: it checks the cluster itself', () => {
    const res = task(['--dry', 'storage'], { STATE_DIR: path.join(os.tmpdir(), 'no-such-state-dir'), CLUSTER: 'existing' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toContain('scripts/storage.ts');
  });

  it('task deploy -- --yes reaches the target check at the root of the graph', () => {
    const res = task(['--dry', 'deploy', '--', '--yes'], { STATE_DIR: path.join(os.tmpdir(), 'no-such-state-dir'), CLUSTER: 'existing' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/task: \[target\] npx --no-install tsx scripts\/talos\.ts --target --yes/);
  });

  it('a phase that needs the cluster says to run task talos first', () => {
    const res = task(['storage'], { STATE_DIR: path.join(os.tmpdir(), 'no-such-state-dir') });
    expect(res.status).not.toBe(0);
    expect(res.stderr).toContain('run `task talos` first');
  });

  it('has dotenv only at the root and a msg on every precondition', () => {
    const doc = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8'));
    expect(doc.dotenv).toEqual(['.env']);
    for (const [name, t] of Object.entries(doc.tasks as Record<string, { dotenv?: unknown; preconditions?: { msg?: string }[] }>)) {
      expect(t.dotenv, name).toBeUndefined();
      for (const p of t.preconditions ?? []) expect(p.msg, name).toBeTruthy();
    }
  });

  it('every task that runs a script names one that exists', () => {
    const text = fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8');
    for (const m of text.matchAll(/scripts\/([\w-]+\.ts)/g)) {
      expect(fs.existsSync(path.join(PROJECT_DIR, 'scripts', m[1])), m[1]).toBe(true);
    }
  });
});

describe('.github/workflows/e2e.yml (never run here: only its shape is checked)', () => {
  const workflow = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, '.github', 'workflows', 'e2e.yml'), 'utf8'));
  const taskfile = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8'));
  const steps = workflow.jobs['deploy-validate-destroy'].steps as { name?: string; run?: string; if?: string }[];
  const runs = steps.map((s) => s.run ?? '').join('\n');

  it('parses as YAML and every `task <name>` it runs is a task of the Taskfile', () => {
    const called = [...runs.matchAll(/(?:^|[\s;&|(])task ([a-z][a-z0-9:-]*)/g)].map((m) => m[1]);
    expect(called.length).toBeGreaterThan(5);
    expect(called.filter((name) => !(name in taskfile.tasks))).toEqual([]);
  });

  it('a CLUSTER=existing job on a kind cluster of its own (the pinned kind, checksum verified), whose destroy must leave the cluster running', () => {
    const job = workflow.jobs['deploy-validate-destroy'];
    expect(job.strategy.matrix.include).toContainEqual({ helm: 'v4.2.4', cluster: 'existing' });
    const kind = steps.find((s) => s.name?.startsWith('CLUSTER=existing: a kind cluster'));
    expect(kind?.run).toContain('sha256sum -c -');
    expect(kind?.run).toContain('kind create cluster --name e2e');
    expect(kind?.run).toMatch(/echo CLUSTER=existing; echo KUBE_CONTEXT=kind-e2e; \} >> "\$GITHUB_ENV"/);
    expect(job.env.KIND_VERSION).toBe(/Stand-in `kind` \((v[\d.]+)\)/.exec(fs.readFileSync(path.join(PROJECT_DIR, 'tests', 'fakes', 'tools', 'kind.mjs'), 'utf8'))?.[1]);
    const after = steps.find((s) => s.name?.startsWith('CLUSTER=existing: the destroy left'));
    expect(after?.run).toContain('get --raw /readyz');
    expect(after?.run).toContain(`-l ${NAMESPACE_OWNER_LABEL}`);
    expect(after?.run).toContain('-l app.kubernetes.io/part-of=talos-local-observability');
    expect(steps.find((s) => s.name?.startsWith('task images'))?.if).toBe("matrix.cluster == 'talos'");
  });

  it('CLUSTER=existing: the cluster-scoped objects after the destroy are those right after `kind create cluster`; kind is deleted whatever the checks say', () => {
    const kind = steps.find((s) => s.name?.startsWith('CLUSTER=existing: a kind cluster'))?.run ?? '';
    const after = steps.find((s) => s.name?.startsWith('CLUSTER=existing: the destroy left'))?.run ?? '';
    const listing = (run: string, file: string) => new RegExp(`get ([a-z,]+) -o name \\| sort > "\\$RUNNER_TEMP/${file}"`).exec(run)?.[1]?.split(',');
    const kinds = ['crd', 'clusterrole', 'clusterrolebinding', 'ingressclass', 'validatingwebhookconfiguration', 'mutatingwebhookconfiguration', 'storageclass', 'priorityclass'];
    // Recorded after the create (before any `task`), the same kinds compared after the destroy.
    expect(kind.indexOf('cluster-scoped-before.txt')).toBeGreaterThan(kind.indexOf('kind create cluster'));
    expect(listing(kind, 'cluster-scoped-before.txt')).toEqual(kinds);
    expect(listing(after, 'cluster-scoped-after.txt')).toEqual(kinds);
    expect(after).toContain('comm -3 "$RUNNER_TEMP/cluster-scoped-before.txt" "$RUNNER_TEMP/cluster-scoped-after.txt"');
    expect(after).toMatch(/if \[ -n "\$left\$releases\$labelled\$scoped" \]; then[\s\S]*exit 1/);
    // set -e stops at the first failing command: the delete is a trap set before any of them.
    const lines = after.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(lines.slice(0, 2)).toEqual(['set -euo pipefail', "trap 'kind delete cluster --name e2e' EXIT"]);
    expect(lines.filter((l) => l.includes('kind delete cluster'))).toHaveLength(1);
    // Diagnostics of a failed CLUSTER=existing run include the kind nodes' logs.
    const diagnostics = steps.find((s) => s.name === 'Collect diagnostics')?.run ?? '';
    expect(diagnostics).toMatch(/if \[ "\$\{CLUSTER:-talos\}" = existing \]; then kind export logs "\$d\/kind" --name e2e/);
  });

  it('runs deploy, validate (plain, --alerts, --app), app and its removal, images, the no-op re-run and destroy', () => {
    for (const line of ['task deploy', 'task validate -- --alerts', 'task validate -- --app go-app', 'task app -- examples/go-app', 'task app -- --remove go-app', 'task images', 'task destroy -- --yes']) {
      expect(runs).toContain(line);
    }
  });
});
