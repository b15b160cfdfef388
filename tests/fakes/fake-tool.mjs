// Entry point of the stand-in tools (tests/fakes/bin/*). See tests/fakes/README.md for the contract.
//
// Each call: appends {"tool","argv"} to $FAKE_TOOLS_LOG, waits as the tool's beforeLock() says (outside
// the lock), takes the lock on the scenario state
// ($FAKE_STATE, a JSON file; defaults describe a healthy machine with no cluster), applies any
// scripted failure that matches, runs the tool's handler, saves the state and exits with its code.
// With FAKE_LATENCY_MODEL (a file like bench/latency-model.yaml), a call the model names first
// sleeps as long as the model says, scaled, outside the lock: calls of phases that run side by side
// overlap as on a real machine. With FAKE_LATENCY_LOG, each call then appends its phase, real start
// and end and modelled seconds to that file (bench/deploy.ts replays them on a modelled clock).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { deepMerge, defaultState, modelledSeconds } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const statePath = () => process.env.FAKE_STATE ?? path.join(os.tmpdir(), `platform-fake-tools-${process.getuid?.() ?? 0}.json`);

function withLock(file, fn) {
  const lock = `${file}.lock`;
  const deadline = Date.now() + 20000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`fake tools: lock ${lock} held too long`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

function matchesFailure(rule, tool, argv) {
  return rule.tool === tool && (rule.argv ?? []).every((a) => argv.includes(a)) && (rule.times ?? 1) > 0;
}

async function main() {
  const [tool, ...argv] = process.argv.slice(2);
  if (process.env.FAKE_TOOLS_LOG) {
    fs.appendFileSync(process.env.FAKE_TOOLS_LOG, `${JSON.stringify({ tool, argv })}\n`);
  }
  const mod = await import(path.join(here, 'tools', `${tool}.mjs`));
  const handler = mod.default;
  const file = statePath();
  const started = Date.now();
  let modelled = 0;
  let modelParts = { fixed: 0, pulls: [] };
  if (process.env.FAKE_LATENCY_MODEL) {
    const { default: YAML } = await import('yaml');
    const model = YAML.parse(fs.readFileSync(process.env.FAKE_LATENCY_MODEL, 'utf8'));
    const pulled = withLock(file, () => (fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')).latency?.pulled : undefined) ?? []);
    const { seconds, fixed, pulls } = modelledSeconds(model, tool, argv, pulled);
    modelled = seconds;
    modelParts = { fixed, pulls: pulls.map(({ image, MB, warm }) => ({ image, MB, warm })) };
    if (seconds > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, seconds * model.scale * 1000);
    if (pulls.length) {
      // What was pulled once is in the caches (kept by `task destroy`): the next pull is a warm one.
      withLock(file, () => {
        const saved = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
        saved.latency = { pulled: [...new Set([...(saved.latency?.pulled ?? []), ...pulls.map((p) => p.image)])] };
        fs.writeFileSync(file, JSON.stringify(saved, null, 1));
      });
    }
  }
  // Time a call takes without holding the lock (talosctl's node boot), so that other calls run meanwhile.
  if (mod.beforeLock) {
    const snapshot = fs.existsSync(file) ? deepMerge(defaultState(), JSON.parse(fs.readFileSync(file, 'utf8'))) : defaultState();
    await mod.beforeLock(argv, snapshot);
  }
  let stdout = '';
  let stderr = '';
  const code = withLock(file, () => {
    const state = fs.existsSync(file) ? deepMerge(defaultState(), JSON.parse(fs.readFileSync(file, 'utf8'))) : defaultState();
    const rule = state.failures.find((r) => matchesFailure(r, tool, argv));
    let exit;
    if (rule) {
      if (rule.times !== undefined) rule.times -= 1;
      stdout = rule.stdout ?? '';
      stderr = rule.stderr ?? `${tool}: scripted failure`;
      exit = rule.code ?? 1;
    } else {
      const ctx = {
        state,
        env: process.env,
        out: (text) => (stdout += text),
        err: (text) => (stderr += text),
        stdin: () => fs.readFileSync(0, 'utf8'),
      };
      exit = handler(argv, ctx) ?? 0;
    }
    fs.writeFileSync(file, JSON.stringify(state, null, 1));
    return exit;
  });
  if (process.env.FAKE_LATENCY_LOG) {
    // Which phase and parallel() branch called (PLATFORM_PHASE, PLATFORM_BRANCH: lib.ts), when the call really ran, its modelled
    // seconds and their parts (the fixed wait, and each image pulled: its MB and whether it was warm).
    const line = { phase: process.env.PLATFORM_PHASE ?? '', branch: process.env.PLATFORM_BRANCH ?? '', tool, argv, modelled, ...modelParts, start: started, end: Date.now() };
    fs.appendFileSync(process.env.FAKE_LATENCY_LOG, `${JSON.stringify(line)}\n`);
  }
  process.stdout.write(stdout);
  process.stderr.write(stderr);
  process.exitCode = code;
  // What a call does after it answered, without holding the lock (kubectl port-forward's forward).
  if (code === 0 && mod.afterLock) await mod.afterLock();
}

await main();
