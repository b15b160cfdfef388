// The deploy benchmark (`task bench`, `npx tsx bench/deploy.ts`): runs the real `task deploy`
// against the stand-in tools (tests/fakes, in a sandbox as the tests build it) with the latency
// model bench/latency-model.yaml applied by the stand-ins, and prints, cold (nothing cached) and
// warm (after `task destroy`: the pull-through caches and Docker's images are kept):
//   - the modelled wall time of the deploy graph (first phase start to last phase end),
//   - the modelled sum of the phase times (what running the phases one after another takes under
//     the same model: today's sequential deploy),
//   - their ratio (target: cold ≤ 60 %),
// and the tool calls of a no-op re-run (the stand-ins log every call), with how many change something.
// Modelled seconds are the real seconds divided by the model's scale, less the same run's real
// seconds with a zero model (process starts of tsx and the stand-ins, which a real host pays far
// less of): a calibration run measures them. It is a benchmark, not a test: the numbers are modelled.
// Env: LATENCY_MODEL overrides the model file. Tools: task, and the stand-ins.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { type PhaseRecord, PROJECT_DIR, isMain } from '../scripts/lib.ts';
import { deployTimes } from '../scripts/summary.ts';
import { type ToolCall, isMutating, makeSandbox } from '../tests/helpers.ts';

export interface RunTimes {
  wallMs: number;
  sumMs: number;
}

/** Modelled seconds of one deploy: real times less the zero-model run's, divided by the scale. */
export function modelled(run: RunTimes, zero: RunTimes, scale: number): { wall: number; sum: number; ratio: number } {
  const wall = Math.max(0, run.wallMs - zero.wallMs) / 1000 / scale;
  const sum = Math.max(0, run.sumMs - zero.sumMs) / 1000 / scale;
  return { wall, sum, ratio: sum > 0 ? wall / sum : 0 };
}

/** The records of the last deploy run in a phases.log text. */
export function lastRunRecords(phasesLog: string): PhaseRecord[] {
  const records = phasesLog.split('\n').filter(Boolean).map((l) => JSON.parse(l) as PhaseRecord);
  const last = records.at(-1)?.run;
  return records.filter((r) => r.run === last);
}

/** Tool calls of a run, and the mutating ones among them. */
export const callCounts = (calls: ToolCall[]) => ({ total: calls.length, mutating: calls.filter(isMutating).length });

const pct = (x: number) => `${(x * 100).toFixed(0)} %`;

function main(): void {
  const modelFile = path.resolve(process.env.LATENCY_MODEL ?? path.join(PROJECT_DIR, 'bench', 'latency-model.yaml'));
  const model = YAML.parse(fs.readFileSync(modelFile, 'utf8')) as { scale: number };
  const sandbox = makeSandbox();
  const zeroModel = path.join(sandbox.dir, 'zero-latency-model.yaml');
  fs.writeFileSync(zeroModel, YAML.stringify({ scale: model.scale, bandwidthMBps: { internet: 1, cache: 1 }, commands: [] }));

  const taskRun = (args: string[], latency: string, log: string) => {
    const res = spawnSync('task', args, {
      cwd: PROJECT_DIR,
      encoding: 'utf8',
      env: { ...process.env, ...sandbox.env(log), FAKE_LATENCY_MODEL: latency, CI: '' },
    });
    if (res.status !== 0) throw new Error(`task ${args.join(' ')} failed (exit ${res.status}):\n${res.stdout}\n${res.stderr}`);
    return res.stdout;
  };
  const deploy = (latency: string): RunTimes => {
    taskRun(['deploy'], latency, path.join(sandbox.dir, 'calls.jsonl'));
    return deployTimes(lastRunRecords(fs.readFileSync(path.join(sandbox.stateDir, 'phases.log'), 'utf8')));
  };
  const destroy = () => taskRun(['destroy', '--', '--yes'], zeroModel, path.join(sandbox.dir, 'calls.jsonl'));
  const clean = () => taskRun(['clean', '--', '--yes'], zeroModel, path.join(sandbox.dir, 'calls.jsonl'));

  console.log(`Latency model: ${path.relative(PROJECT_DIR, modelFile)} (1 modelled s = ${model.scale * 1000} ms real); sandbox ${sandbox.dir}`);
  const zero = deploy(zeroModel);
  clean();
  const cold = deploy(modelFile);
  destroy();
  const warm = deploy(modelFile);
  const noOpLog = path.join(sandbox.dir, 'no-op-calls.jsonl');
  taskRun(['deploy'], zeroModel, noOpLog);
  const noOp = callCounts(fs.readFileSync(noOpLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as ToolCall));

  console.log(`Calibration (zero model): wall ${(zero.wallMs / 1000).toFixed(1)} s real, phases add up to ${(zero.sumMs / 1000).toFixed(1)} s real (subtracted below)`);
  for (const [name, run] of [['cold', cold], ['warm', warm]] as const) {
    const m = modelled(run, zero, model.scale);
    console.log(`${name.padEnd(4)}  graph ${m.wall.toFixed(0).padStart(4)} s modelled, phases one after another ${m.sum.toFixed(0).padStart(4)} s modelled: ${pct(m.ratio)}`);
  }
  const coldRatio = modelled(cold, zero, model.scale).ratio;
  console.log(`No-op re-run: ${noOp.total} tool calls, ${noOp.mutating} that change something`);
  console.log(coldRatio <= 0.6 ? `Target met: cold graph ${pct(coldRatio)} of the sequential sum (≤ 60 %).` : `Target missed: cold graph ${pct(coldRatio)} of the sequential sum (> 60 %).`);
  fs.rmSync(sandbox.dir, { recursive: true, force: true });
}

if (isMain(import.meta.url)) main();
