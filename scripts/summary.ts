// Prints the closing summary of a `task deploy`: each phase of this run, ok or failed, its time and
// whether it changed anything. The phases record themselves in STATE_DIR/phases.log (see runPhase in
// lib.ts) under DEPLOY_RUN_ID, which the Taskfile sets once per `task` invocation.
// After a deploy that worked, its first line says where to go and what the browser needs first.
// Reads .env keys: STATE_DIR, DOMAIN, HTTPS_PORT, HOST_IP. Tools: none.
import fs from 'node:fs';
import kleur from 'kleur';
import { type Config, ingressUrl, isMain, loadConfig, namesAddress, resolvesByItself, statePath } from './lib.ts';

export interface PhaseRecord {
  run: string;
  phase: string;
  ok: boolean;
  ms: number;
  changed: number;
}

/** The summary lines for one run's records. */
export function summaryLines(records: PhaseRecord[]): string[] {
  if (records.length === 0) return ['no phase ran'];
  const width = Math.max(...records.map((r) => r.phase.length));
  const lines = records.map(
    (r) =>
      `${r.ok ? kleur.green('✓') : kleur.red('✗')} ${r.phase.padEnd(width)}  ${(r.ms / 1000).toFixed(1).padStart(6)}s  ` +
      `${r.ok ? (r.changed ? `${r.changed} changed` : 'unchanged') : 'failed'}`,
  );
  const total = records.reduce((sum, r) => sum + r.ms, 0);
  const failed = records.filter((r) => !r.ok).map((r) => r.phase);
  lines.push(
    failed.length
      ? kleur.red(`✗ deploy failed at ${failed[0]} after ${(total / 1000).toFixed(1)}s; fix the error above and run \`task deploy\` again (finished phases are skipped quickly)`)
      : kleur.green(`✓ deploy finished in ${(total / 1000).toFixed(1)}s; \`task endpoints\` lists the URLs`),
  );
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
  console.log(kleur.bold('\nSummary'));
  if (records.length > 0 && records.every((r) => r.ok)) console.log(`  ${kleur.bold(firstVisitLine(cfg))}`);
  for (const line of summaryLines(records)) console.log(`  ${line}`);
}
