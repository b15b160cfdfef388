// Prints the closing summary of a `task deploy`: each phase of this run, ok or failed, when it
// started and ended (offsets from the first phase's start), its time and whether it changed
// anything; the deploy's wall time against the sum of the phase times (what running the phases one
// after another would take); and the critical path: the chain of phases that held the deploy back
// (each one waited for the previous, its dependency in Taskfile.yml's deploy graph that finished
// last), with the longest step inside that chain. The phases record themselves in STATE_DIR/phases.log
// (see runPhase in lib.ts) under DEPLOY_RUN_ID, which the Taskfile sets once per `task` invocation.
// After a deploy that worked, its first line says where to go and what the browser needs first.
// Reads .env keys: STATE_DIR, DOMAIN, HTTPS_PORT, HOST_IP. Reads Taskfile.yml (the deploy graph). Tools: none.
import fs from 'node:fs';
import path from 'node:path';
import kleur from 'kleur';
import YAML from 'yaml';
import { type Config, type PhaseRecord, PROJECT_DIR, ingressUrl, isMain, loadConfig, namesAddress, resolvesByItself, statePath } from './lib.ts';

export type { PhaseRecord };

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/** Phase → the phases it waits for, from the deploy graph's tasks (deploy:<phase>, deps deploy:<phase>). */
export function deployGraph(taskfile: { tasks?: Record<string, { deps?: (string | { task: string })[] }> }): Record<string, string[]> {
  const graph: Record<string, string[]> = {};
  for (const [name, t] of Object.entries(taskfile.tasks ?? {})) {
    if (!name.startsWith('deploy:')) continue;
    graph[name.slice('deploy:'.length)] = (t.deps ?? [])
      .map((d) => (typeof d === 'string' ? d : d.task))
      .filter((d) => d.startsWith('deploy:'))
      .map((d) => d.slice('deploy:'.length));
  }
  return graph;
}

type TimedRecord = PhaseRecord & { start: number; end: number };
const isTimed = (r: PhaseRecord): r is TimedRecord => typeof r.start === 'number' && typeof r.end === 'number';

/**
 * The chain of phases that held the deploy back, first to last: it ends with the phase that ended
 * last; before each phase comes the one of its dependencies (graph) that ended last. Empty when the
 * records carry no times.
 */
export function criticalPath(records: PhaseRecord[], graph: Record<string, string[]>): TimedRecord[] {
  const timed = records.filter(isTimed);
  if (timed.length === 0) return [];
  let current = timed.reduce((a, r) => (r.end > a.end ? r : a));
  const chain = [current];
  for (;;) {
    const deps = timed.filter((r) => (graph[current.phase] ?? []).includes(r.phase) && !chain.includes(r));
    if (deps.length === 0) break;
    current = deps.reduce((a, r) => (r.end > a.end ? r : a));
    chain.unshift(current);
  }
  return chain;
}

/** Wall time (first start to last end) and the sum of the phase times; wall is the sum when times are missing. */
export function deployTimes(records: PhaseRecord[]): { wallMs: number; sumMs: number } {
  const sumMs = records.reduce((sum, r) => sum + r.ms, 0);
  const timed = records.filter(isTimed);
  if (timed.length !== records.length || timed.length === 0) return { wallMs: sumMs, sumMs };
  return { wallMs: Math.max(...timed.map((r) => r.end)) - Math.min(...timed.map((r) => r.start)), sumMs };
}

/** The summary lines for one run's records. */
export function summaryLines(records: PhaseRecord[], graph: Record<string, string[]> = {}): string[] {
  if (records.length === 0) return ['no phase ran'];
  // In the order the phases started (phases.log has them in the order they ended).
  if (records.every(isTimed)) records = [...records].sort((a, b) => a.start! - b.start!);
  const width = Math.max(...records.map((r) => r.phase.length));
  const origin = Math.min(...records.filter(isTimed).map((r) => r.start));
  const lines = records.map(
    (r) =>
      `${r.ok ? kleur.green('✓') : kleur.red('✗')} ${r.phase.padEnd(width)}  ${(r.ms / 1000).toFixed(1).padStart(6)}s  ` +
      `${(r.ok ? (r.changed ? `${r.changed} changed` : 'unchanged') : 'failed').padEnd(10)}` +
      (isTimed(r) ? kleur.gray(`  ${secs(r.start - origin).padStart(7)} → ${secs(r.end - origin).padStart(7)}`) : ''),
  );
  const { wallMs, sumMs } = deployTimes(records);
  const side = wallMs < sumMs ? ` (the phases add up to ${secs(sumMs)}: ${secs(sumMs - wallMs)} saved by running them side by side)` : '';
  const failed = records.filter((r) => !r.ok).map((r) => r.phase);
  lines.push(
    failed.length
      ? kleur.red(`✗ deploy failed at ${failed.join(', ')} after ${secs(wallMs)}${side}; fix the error above and run \`task deploy\` again (finished phases are skipped quickly)`)
      : kleur.green(`✓ deploy finished in ${secs(wallMs)}${side}; \`task endpoints\` lists the URLs`),
  );
  const chain = criticalPath(records, graph);
  if (chain.length > 1) {
    const longest = chain
      .filter((r) => r.longest)
      .reduce<TimedRecord | undefined>((a, r) => (a && a.longest!.ms >= r.longest!.ms ? a : r), undefined);
    lines.push(
      `critical path: ${chain.map((r) => `${r.phase} ${secs(r.ms)}`).join(' → ')}` +
        (longest ? `; longest wait in it: ${longest.phase} "${longest.longest!.title}" ${secs(longest.longest!.ms)}` : ''),
    );
  }
  return lines;
}

/** The one line a new user needs after a deploy: the URL, and what makes the browser accept it. */
export function firstVisitLine(cfg: Pick<Config, 'DOMAIN' | 'HTTPS_PORT' | 'HOST_IP'>): string {
  const names = resolvesByItself(cfg.DOMAIN)
    ? ''
    : `after \`task hosts\` (the names must resolve to ${namesAddress(cfg.HOST_IP)}) `;
  return `Open ${ingressUrl(cfg, 'grafana', '/')} ${names}— browsers warn about its certificate until you trust the local CA once: \`task trust-ca\` (asks for sudo).`;
}

if (isMain(import.meta.url)) {
  if (process.env.NO_COLOR) kleur.enabled = false;
  const cfg = loadConfig();
  const log = statePath(cfg, 'phases.log');
  const all = fs.existsSync(log)
    ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as PhaseRecord)
    : [];
  const records = all.filter((r) => r.run === process.env.DEPLOY_RUN_ID);
  const graph = deployGraph(YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8')));
  console.log(kleur.bold('\nSummary'));
  if (records.length > 0 && records.every((r) => r.ok)) console.log(`  ${kleur.bold(firstVisitLine(cfg))}`);
  for (const line of summaryLines(records, graph)) console.log(`  ${line}`);
}
