// The Taskfile, checked with the real `task` binary (go-task v3.54.0, installed by .ci/run).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { PROJECT_DIR } from './helpers.ts';

const PHASES = ['talos', 'storage', 'traefik', 'observability', 'sample-app', 'validate'];

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
    for (const name of [...PHASES, 'deploy', 'preflight', 'destroy', 'clean', 'kubeconfig', 'test']) {
      expect(res.stdout).toMatch(new RegExp(`^\\* ${name}:\\s+\\S`, 'm'));
    }
  });

  it('task --dry deploy runs the phases in order', () => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'taskfile-'));
    fs.writeFileSync(path.join(stateDir, 'kubeconfig'), '');
    const res = task(['--dry', 'deploy'], { STATE_DIR: stateDir });
    expect(res.status, res.stderr).toBe(0);
    const ran = [...res.stderr.matchAll(/task: \[([\w-]+)\] npx --no-install tsx scripts\/([\w-]+)\.ts/g)].map((m) => m[2]);
    expect(ran).toEqual([...PHASES, 'summary']);
  });

  it('install is up to date once npm ci ran, so tasks do not reinstall every time', () => {
    const res = task(['--status', 'install']);
    expect(res.status, res.stderr).toBe(0);
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
