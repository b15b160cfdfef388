// `task hosts` / `task hosts:remove`: names for the routes (grafana, prometheus, alertmanager, traefik,
// app.<DOMAIN>, and the host of each app in STATE_DIR/apps/*.json) in the hosts file, between our marker lines.
//
//   - Renders hosts/hosts.block.tmpl and hosts/dnsmasq.conf.tmpl into <stateDir>/hosts/ (the block
//     this script installs, and a dnsmasq snippet for a wildcard instead: address=/<DOMAIN>/<address>).
//     The address is HOST_IP, or 127.0.0.1 when HOST_IP=0.0.0.0 (browsers refuse 0.0.0.0).
//   - Installs the block between "# BEGIN talos-local-observability" and "# END …" lines: replaces
//     our block in place when present, appends it otherwise; every other byte stays as it was.
//     The block is ours by its markers, whatever domain it names, so a DOMAIN change replaces it.
//     Twice = once; nothing is written when nothing changes.
//   - Rewrites the file in place (same inode, so its owner, mode, ACLs and SELinux label stay), after
//     a copy of the old file into <stateDir>/hosts/backups/: the whole new content is written from
//     the start, then the file is cut to its length and synced, so a failure never leaves it empty
//     or with a half-written head (see REWRITE_IN_PLACE).
//   - sudo only for that write, and only when the file is not writable as is. Without sudo
//     (not installed, or no terminal to ask for the password) it prints what to add and changes
//     nothing. A file without any write permission is treated as locked on purpose: clear message,
//     no change, non-zero exit.
//   - `--remove` removes exactly our block (the file is then byte for byte what it was before).
//   - DOMAIN=localhost needs no entries: *.localhost resolves to the loopback address by itself
//     (browsers, curl, systemd-resolved); a block left from an earlier DOMAIN is removed. `--force`
//     adds the entries anyway for other programs.
//   - Under WSL it says that Windows browsers read the Windows hosts file, and that WSL rewrites
//     /etc/hosts on restart while generateHosts is on in /etc/wsl.conf.
//
// .env keys: DOMAIN, HOST_IP, STATE_DIR. Environment: HOSTS_FILE overrides /etc/hosts (tests use it).
// Tools: node (this script's runtime, for the in-place write), sudo (only when the file needs root).
import fs from 'node:fs';
import path from 'node:path';
import {
  INGRESS_HOSTS,
  PROJECT_DIR,
  UserError,
  appRecords,
  commandLine,
  hasTool,
  isMain,
  claimStateDir,
  namesAddress,
  resolvesByItself,
  note,
  renderTemplate,
  run,
  runPhase,
  runsInWsl,
  statePath,
  step,
  writeFileAtomic,
  type Config,
} from './lib.ts';

export const BEGIN = '# BEGIN talos-local-observability';
export const END = '# END talos-local-observability';
const BEGIN_LINE = `${BEGIN} (managed by \`task hosts\`; \`task hosts:remove\` removes it)`;
const TEMPLATE_DIR = path.join(PROJECT_DIR, 'hosts');


export const hostsFilePath = (env: NodeJS.ProcessEnv = process.env) => env.HOSTS_FILE || '/etc/hosts';

const vars = (cfg: Pick<Config, 'DOMAIN' | 'HOST_IP'>) => ({ DOMAIN: cfg.DOMAIN, HOST_IP: namesAddress(cfg.HOST_IP) });

/**
 * The lines between the markers: one "<address> name" line per routed name (address:
 * namesAddress(HOST_IP)), then one per app host (`task app`'s records) under DOMAIN not listed yet.
 */
export function hostsEntries(cfg: Pick<Config, 'DOMAIN' | 'HOST_IP'>, appHosts: readonly string[] = []): string[] {
  const text = renderTemplate(fs.readFileSync(path.join(TEMPLATE_DIR, 'hosts.block.tmpl'), 'utf8'), vars(cfg));
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const listed = (name: string) => lines.some((l) => l.split(/\s+/).includes(name));
  for (const h of INGRESS_HOSTS) {
    if (!listed(`${h}.${cfg.DOMAIN}`)) throw new Error(`hosts/hosts.block.tmpl lacks ${h}.\${DOMAIN}`);
  }
  const apps = [...new Set(appHosts)].filter((h) => h.endsWith(`.${cfg.DOMAIN}`) && !listed(h));
  return [...lines, ...apps.map((h) => `${namesAddress(cfg.HOST_IP)} ${h}`)];
}

export const dnsmasqSnippet = (cfg: Pick<Config, 'DOMAIN' | 'HOST_IP'>) =>
  renderTemplate(fs.readFileSync(path.join(TEMPLATE_DIR, 'dnsmasq.conf.tmpl'), 'utf8'), vars(cfg));

interface Span {
  /** Offset of the BEGIN line's first character. */
  start: number;
  /** Offset just after the END line's text (before its line break, if any). */
  end: number;
}

const isMarker = (line: string, marker: string) => line === marker || line.startsWith(`${marker} `) || line.startsWith(`${marker}\r`);

/** Finds our block; throws when the markers are broken (the user must look at the file). */
export function findBlock(text: string): Span | undefined {
  const begins: number[] = [];
  const ends: number[] = [];
  let offset = 0;
  for (const line of text.split('\n')) {
    if (isMarker(line, BEGIN)) begins.push(offset);
    if (isMarker(line, END)) ends.push(offset + line.replace(/\r$/, '').length);
    offset += line.length + 1;
  }
  if (begins.length === 0 && ends.length === 0) return undefined;
  if (begins.length !== 1 || ends.length !== 1 || ends[0] < begins[0]) {
    throw new UserError(
      `the hosts file has ${begins.length} "${BEGIN}" and ${ends.length} "${END}" lines, not one pair in order: ` +
        'fix or remove them by hand, then run the task again. Nothing was changed.',
    );
  }
  return { start: begins[0], end: ends[0] };
}

/** The text with our block holding `entries`: replaced in place, or appended. */
export function upsertBlock(text: string, entries: string[]): string {
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const block = [BEGIN_LINE, ...entries, END].join(eol);
  const span = findBlock(text);
  if (span) return text.slice(0, span.start) + block + text.slice(span.end);
  if (text === '' || text.endsWith('\n')) return `${text}${block}${eol}`;
  // No line break at the end: add one before the block and none after, so removal can restore it.
  return `${text}${eol}${block}`;
}

/** The text without our block; exactly the text before upsertBlock added it. */
export function removeBlock(text: string): string {
  const span = findBlock(text);
  if (!span) return text;
  const after = text.slice(span.end);
  const lineBreak = /^\r?\n/.exec(after)?.[0];
  if (lineBreak) return text.slice(0, span.start) + after.slice(lineBreak.length);
  // Block at the very end without a line break: it was appended after one we added.
  const before = text.slice(0, span.start).replace(/\r?\n$/, '');
  return before + after;
}

export type WriteMethod = 'direct' | 'sudo' | 'print' | 'locked';

/**
 * How to write the hosts file: ourselves when we may, sudo when it is there and can ask for a
 * password (or needs none), else print. A file without any write bit is locked on purpose.
 */
export function chooseWriteMethod(o: { mode: number; writable: boolean; sudo: boolean; canAsk: boolean }): WriteMethod {
  if ((o.mode & 0o222) === 0) return 'locked';
  if (o.writable) return 'direct';
  return o.sudo && o.canAsk ? 'sudo' : 'print';
}

function writable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * `node -e` program that rewrites argv[1] in place with the bytes of argv[2]: writes them all from
 * offset 0, cuts the file to their length, then syncs. The file keeps its inode, and with it its
 * owner, mode, ACLs and SELinux label. If a write fails, the file holds the new bytes written so
 * far followed by the old ones (never an empty file); the caller made a backup first. One program
 * for both ways: run as is when we may write the file, under sudo when it needs root.
 */
export const REWRITE_IN_PLACE = [
  "const fs = require('node:fs');",
  'const [file, staged] = process.argv.slice(1);',
  'const data = fs.readFileSync(staged);',
  "const fd = fs.openSync(file, 'r+');",
  'for (let at = 0; at < data.length; ) at += fs.writeSync(fd, data, at, data.length - at, at);',
  'fs.ftruncateSync(fd, data.length);',
  'fs.fsyncSync(fd);',
  'fs.closeSync(fd);',
].join(' ');

/** The command that rewrites `file` in place with the content of `staged` (see REWRITE_IN_PLACE). */
export const rewriteCommand = (file: string, staged: string, withSudo: boolean): [string, string[]] => {
  const node = [process.execPath, '-e', REWRITE_IN_PLACE, file, staged];
  return withSudo ? ['sudo', node] : [node[0], node.slice(1)];
};

/**
 * The hosts file is read and written byte for byte: latin1 maps every byte to one character and
 * back, so a comment in another encoding survives; our block is ASCII (DOMAIN allows nothing else).
 */
const HOSTS_ENCODING = 'latin1';

function backup(cfg: Config, file: string, text: string): string {
  const dir = statePath(cfg, 'hosts', 'backups');
  fs.mkdirSync(dir, { recursive: true });
  const target = path.join(dir, `${path.basename(file)}.${new Date().toISOString().replace(/[:.]/g, '-')}`);
  fs.writeFileSync(target, text, { mode: 0o644, encoding: HOSTS_ENCODING });
  const old = fs.readdirSync(dir).sort();
  for (const f of old.slice(0, Math.max(0, old.length - 10))) fs.rmSync(path.join(dir, f));
  return target;
}

async function sudoCanAsk(): Promise<boolean> {
  if (process.stdin.isTTY) return true;
  return (await run('sudo', ['-n', 'true'], { okCodes: [1] }).catch(() => ({ code: 1 }))).code === 0;
}

/** Writes `content` to the hosts file as chooseWriteMethod says. Returns the step detail. */
async function writeHosts(cfg: Config, file: string, oldText: string, content: string, what: string, manual: string): Promise<string> {
  const st = fs.statSync(file);
  const canWrite = writable(file);
  const hasSudo = !canWrite && (await hasTool('sudo'));
  const method = chooseWriteMethod({ mode: st.mode, writable: canWrite, sudo: hasSudo, canAsk: hasSudo && (await sudoCanAsk()) });
  if (method === 'locked') {
    throw new UserError(
      `${file} is read-only (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): nothing was changed. ` +
        `Make it writable (sudo chmod u+w ${file}) and run the task again, or ${manual}`,
    );
  }
  if (method === 'print') {
    note(`${file} needs root and sudo cannot ask for a password here: nothing was changed. ${manual}`);
    return `unchanged (printed what to ${what})`;
  }
  const saved = backup(cfg, file, oldText);
  const staged = statePath(cfg, 'hosts', 'hosts.new');
  fs.writeFileSync(staged, content, { mode: 0o600, encoding: HOSTS_ENCODING });
  const [cmd, args] = rewriteCommand(file, staged, method === 'sudo');
  if (method === 'sudo') note(`$ ${commandLine(cmd, args)}`);
  try {
    await run(cmd, args);
  } catch (err) {
    throw new UserError(
      `writing ${file} failed: ${(err as Error).message}\nThe file as it was is in ${saved}: ` +
        `check ${file}, and if it is damaged restore it with: ${method === 'sudo' ? 'sudo ' : ''}cp ${saved} ${file}`,
    );
  } finally {
    fs.rmSync(staged, { force: true });
  }
  return `${what === 'add' ? 'installed' : 'removed'} our block${method === 'sudo' ? ' (with sudo)' : ''}; backup: ${saved}`;
}

async function hosts(cfg: Config): Promise<void> {
  const removeOnly = process.argv.includes('--remove');
  const force = process.argv.includes('--force');
  const file = hostsFilePath();
  claimStateDir(cfg);
  const entries = hostsEntries(cfg, appRecords(cfg).map((a) => a.host));
  const address = namesAddress(cfg.HOST_IP);
  // Names under localhost need no entries: then only a block left from an earlier DOMAIN goes.
  const noEntries = resolvesByItself(cfg.DOMAIN) && !force;
  const remove = removeOnly || noEntries;

  if (!removeOnly) {
    await step('Hosts block and dnsmasq snippet', async () => {
      const a = writeFileAtomic(statePath(cfg, 'hosts', 'hosts.block'), `${[BEGIN_LINE, ...entries, END].join('\n')}\n`);
      const b = writeFileAtomic(statePath(cfg, 'hosts', 'dnsmasq.conf'), dnsmasqSnippet(cfg));
      return `${a || b ? 'written' : 'unchanged'} (${statePath(cfg, 'hosts')}/hosts.block, dnsmasq.conf)`;
    });
    if (noEntries) {
      note(`DOMAIN=${cfg.DOMAIN}: *.localhost resolves to 127.0.0.1 without any hosts entry (Chrome, Edge, Firefox, curl, systemd-resolved); nothing to add.`);
      note('For Safari or a program that does not resolve *.localhost itself, add the entries anyway: `task hosts -- --force`.');
    }
  }

  await step(`${remove ? 'Remove our block from' : 'Install our block into'} ${file}`, async () => {
    if (!fs.existsSync(file)) {
      if (noEntries && !removeOnly) return 'already absent (no such file)';
      throw new UserError(`${file} does not exist. Set HOSTS_FILE to your hosts file, or create it.`);
    }
    const real = fs.realpathSync(file);
    const text = fs.readFileSync(real, HOSTS_ENCODING);
    const next = remove ? removeBlock(text) : upsertBlock(text, entries);
    if (next === text) return remove ? 'already absent' : 'already installed';
    const manual = remove
      ? `delete the lines from "${BEGIN}" to "${END}" in ${file} yourself.`
      : `add these lines to ${file} yourself:\n${[BEGIN_LINE, ...entries, END].map((l) => `      ${l}`).join('\n')}`;
    return writeHosts(cfg, real, text, next, remove ? 'remove' : 'add', manual);
  });
  if (remove) return;
  note(`Wildcard instead of single names: dnsmasq with ${statePath(cfg, 'hosts', 'dnsmasq.conf')} (address=/${cfg.DOMAIN}/${address}).`);
  if (runsInWsl()) {
    note(
      'WSL: browsers on Windows read the Windows hosts file, C:\\Windows\\System32\\drivers\\etc\\hosts, not this one: ' +
        'add the same lines there (as Administrator). WSL also rewrites /etc/hosts when it restarts while generateHosts is on ' +
        '(the default) in /etc/wsl.conf: to keep our block, set "generateHosts = false" under [network] there.',
    );
  }
}

if (isMain(import.meta.url)) await runPhase(process.argv.includes('--remove') ? 'hosts:remove' : 'hosts', hosts);
