// The deploy benchmark (`task bench`, `npx tsx bench/deploy.ts`): runs the real `task deploy`
// against the stand-in tools (tests/fakes, in a sandbox as the tests build it) with the latency
// model bench/latency-model.yaml, which the stand-ins apply (they sleep as it says, scaled, and log
// each call with its phase, its parallel() branch and its modelled seconds). It prints, cold
// (nothing cached) and warm (after `task destroy`, which keeps the pull-through caches):
//   - the modelled wall time of the deploy graph: the longest chain of phases through Taskfile.yml's
//     graph, each phase as long as its calls on the modelled clock (a phase's calls one after
//     another, except the branches of a parallel(), of which the longest counts);
//   - the modelled sum of the phase times: the same phases one after another (today's sequential
//     deploy under the same model);
//   - their ratio (target: cold ≤ 60 %);
// and the tool calls of a no-op re-run, with how many would change something. validate cannot pass
// here (no stand-in serves the routes, Prometheus or Loki): it runs with --wait 0, and a deploy
// counts when every other phase worked.
// The modelled times come from the calls the real run made, not from real seconds: the process
// starts of tsx and the stand-ins, which dwarf the scaled sleeps on a busy machine, do not count.
// It is a benchmark, not a test: the numbers are modelled, and only as good as the model.
// Env: LATENCY_MODEL overrides the model file. Tools: task (on PATH), and the stand-ins.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { type PhaseRecord, PROJECT_DIR, isMain } from '../scripts/lib.ts';
import { deployGraph } from '../scripts/summary.ts';
import { type ToolCall, isMutating, makeSandbox, startStandInRegistry } from '../tests/helpers.ts';

/** One line of the stand-ins' latency log (FAKE_LATENCY_LOG). */
export interface LatencyLine {
  phase: string;
  /** The parallel() branch of lib.ts the call was made in ("" outside any). */
  branch?: string;
  tool: string;
  argv: string[];
  modelled: number;
  start: number;
  end: number;
}

/**
 * Modelled seconds of the calls under one branch path: its own calls one after another, plus, for
 * each parallel() group started in it, the longest of the group's branches.
 */
export function branchSeconds(calls: LatencyLine[], prefix = ''): number {
  const mine = calls.filter((c) => (c.branch ?? '').startsWith(prefix)).sort((a, b) => a.start - b.start);
  let total = 0;
  const groups = new Set<string>();
  for (const c of mine) {
    const branch = c.branch ?? '';
    if (branch === prefix) {
      total += c.modelled;
      continue;
    }
    const group = branch.slice(prefix.length).split('.')[0];
    if (groups.has(group)) continue;
    groups.add(group);
    const branches = new Set(mine.map((x) => x.branch ?? '').filter((b) => b.startsWith(`${prefix}${group}.`)).map((b) => b.slice(0, b.indexOf('/', prefix.length) + 1)));
    total += Math.max(...[...branches].map((b) => branchSeconds(mine, b)));
  }
  return total;
}

/** Per phase modelled seconds, the graph's wall time (longest chain) and the sum of the phases. */
export function modelledDeploy(calls: LatencyLine[], graph: Record<string, string[]>): { phases: Record<string, number>; wall: number; sum: number } {
  const phases: Record<string, number> = {};
  for (const phase of new Set(calls.map((c) => c.phase))) phases[phase] = branchSeconds(calls.filter((c) => c.phase === phase));
  const finish = new Map<string, number>();
  const finishOf = (phase: string): number => {
    if (!finish.has(phase)) {
      const deps = (graph[phase] ?? []).filter((d) => d in phases);
      finish.set(phase, phases[phase] + Math.max(0, ...deps.map(finishOf)));
    }
    return finish.get(phase)!;
  };
  const wall = Math.max(0, ...Object.keys(phases).map(finishOf));
  const sum = Object.values(phases).reduce((a, b) => a + b, 0);
  return { phases, wall, sum };
}

/** Tool calls of a run, and the mutating ones among them. */
export const callCounts = (calls: ToolCall[]) => ({ total: calls.length, mutating: calls.filter(isMutating).length });

/** The phase records of the last `task deploy` in a phases.log. */
export function lastRunRecords(file: string): PhaseRecord[] {
  const records = readLines<PhaseRecord>(file);
  return records.filter((r) => r.run === records.at(-1)?.run);
}

const readLines = <T>(file: string): T[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : []);
const pct = (x: number) => `${(x * 100).toFixed(0)} %`;

async function main(): Promise<void> {
  const modelFile = path.resolve(process.env.LATENCY_MODEL ?? path.join(PROJECT_DIR, 'bench', 'latency-model.yaml'));
  const model = YAML.parse(fs.readFileSync(modelFile, 'utf8')) as { scale: number };
  const graph = deployGraph(YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8')));
  const sandbox = makeSandbox();
  const registryPort = Number(sandbox.env('').REGISTRY_PORT);
  // The registry container answers on REGISTRY_PORT once the stand-in `docker run` created it (before,
  // the preflight finds the port free), as the real one does.
  // The stand-ins rewrite their state file under their own lock: a read that catches a write half-done tries again.
  const state = () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return sandbox.state();
      } catch (err) {
        if (attempt >= 100) throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      }
    }
  };
  const registryCreated = () => Boolean(state().docker.containers['talos-local-registry']);
  let registry: ReturnType<typeof startStandInRegistry> | undefined;
  const watch = setInterval(() => {
    if (!registry && registryCreated()) {
      registry = startStandInRegistry(() => state().docker.pushed ?? {}, registryPort);
    }
  }, 20);

  const task = (args: string[], name: string) =>
    new Promise<{ calls: ToolCall[]; latency: LatencyLine[] }>((resolve, reject) => {
      const files = { calls: path.join(sandbox.dir, `${name}.calls.jsonl`), latency: path.join(sandbox.dir, `${name}.latency.jsonl`) };
      const child = spawn('task', args, {
        cwd: PROJECT_DIR,
        env: { ...process.env, ...sandbox.env(files.calls), FAKE_LATENCY_MODEL: modelFile, FAKE_LATENCY_LOG: files.latency },
      });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      child.on('close', (code) => {
        // validate needs the real routes, Prometheus and Loki, which no stand-in serves: it fails
        // fast here (--wait 0) and, last in the graph and in the sequence alike, models no time.
        const failed = args[0] === 'deploy' ? lastRunRecords(path.join(sandbox.stateDir, 'phases.log')).filter((r) => !r.ok && r.phase !== 'validate') : [];
        if ((code === 0 || args[0] === 'deploy') && failed.length === 0) {
          resolve({ calls: readLines<ToolCall>(files.calls), latency: readLines<LatencyLine>(files.latency) });
        } else reject(new Error(`task ${args.join(' ')} failed (exit ${code}):\n${output}`));
      });
    });

  console.log(`Latency model ${path.relative(PROJECT_DIR, modelFile)} (1 modelled s = ${model.scale * 1000} ms real), sandbox ${sandbox.dir}`);
  try {
    const cold = modelledDeploy((await task(['deploy', '--', '--wait', '0'], 'cold')).latency, graph);
    await task(['destroy', '--', '--yes'], 'destroy');
    const warm = modelledDeploy((await task(['deploy', '--', '--wait', '0'], 'warm')).latency, graph);
    const noOp = callCounts((await task(['deploy', '--', '--wait', '0'], 'no-op')).calls);

    for (const [name, m] of [['cold', cold], ['warm', warm]] as const) {
      const phases = Object.entries(m.phases).map(([p, s]) => `${p} ${s.toFixed(0)}`).join(', ');
      console.log(`${name}: graph ${m.wall.toFixed(0)} s, phases one after another ${m.sum.toFixed(0)} s (modelled): ${pct(m.wall / m.sum)}  [${phases}]`);
    }
    console.log(`no-op re-run: ${noOp.total} tool calls, ${noOp.mutating} that change something`);
    const ratio = cold.wall / cold.sum;
    console.log(`${ratio <= 0.6 ? 'target met' : 'target missed'}: cold graph ${pct(ratio)} of the sequential sum (target ≤ 60 %)`);
  } finally {
    clearInterval(watch);
    await (await registry)?.close();
    fs.rmSync(sandbox.dir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) await main();
