// Hosts-file editing: the pure block functions (table-driven) and `scripts/hosts.ts` on temporary
// files through HOSTS_FILE: foreign lines kept byte for byte, twice = once, remove restores the
// original exactly, rewritten in place (inode and mode kept), read-only file → clear message and
// no change, broken markers, DOMAIN=localhost (and a block of an earlier DOMAIN removed), HOST_IP=0.0.0.0, WSL.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  BEGIN,
  END,
  REWRITE_IN_PLACE,
  chooseWriteMethod,
  dnsmasqSnippet,
  findBlock,
  hostsEntries,
  removeBlock,
  rewriteCommand,
  upsertBlock,
} from '../scripts/hosts.ts';
import { makeSandbox, type Sandbox } from './helpers.ts';
import { INGRESS_HOSTS } from '../scripts/lib.ts';

const ENTRIES = ['127.0.0.1 grafana.local.dev', '127.0.0.1 app.local.dev'];

const ORIGINALS: [string, string][] = [
  ['typical', '127.0.0.1\tlocalhost\n::1     localhost ip6-localhost\n# a comment   with spaces  \n\n10.0.0.5 nas.home # trailing comment\n'],
  ['no final line break', '127.0.0.1 localhost\n192.168.1.2 printer'],
  ['empty', ''],
  ['CRLF (Windows)', '127.0.0.1 localhost\r\n# comment\r\n'],
  ['blank lines at the end', '127.0.0.1 localhost\n\n\n'],
  ['non-ASCII comment', '# Hôtes réseau – ünïcode\n127.0.0.1 localhost\n'],
];

describe('upsertBlock / removeBlock', () => {
  it.each(ORIGINALS)('%s: add keeps every foreign byte, twice = once, remove restores exactly', (_, original) => {
    const once = upsertBlock(original, ENTRIES);
    expect(once.startsWith(original.replace(/\r?\n?$/, ''))).toBe(true);
    expect(once).toContain(ENTRIES[0]);
    expect(upsertBlock(once, ENTRIES)).toBe(once);
    expect(removeBlock(once)).toBe(original);
    expect(removeBlock(original)).toBe(original);
  });

  it('uses the file\'s CRLF line breaks for our lines', () => {
    const out = upsertBlock('127.0.0.1 localhost\r\n', ENTRIES);
    expect(out.split('\r\n').length - 1).toBe(out.split('\n').length - 1);
  });

  it('replaces our block in place, keeping the lines before and after it', () => {
    const before = '127.0.0.1 localhost\n';
    const after = '10.0.0.9 added-later.home\n';
    const old = upsertBlock(before, ['127.0.0.1 grafana.old.dev']) + after;
    const updated = upsertBlock(old, ENTRIES);
    expect(updated.startsWith(before)).toBe(true);
    expect(updated.endsWith(after)).toBe(true);
    expect(updated).not.toContain('old.dev');
    expect(removeBlock(updated)).toBe(before + after);
  });

  it.each([
    ['two begins', `${BEGIN}\n${BEGIN}\n${END}\n`],
    ['begin without end', `${BEGIN}\n1.2.3.4 x\n`],
    ['end before begin', `${END}\n${BEGIN}\n`],
  ])('broken markers (%s) are refused', (_, text) => {
    expect(() => findBlock(text)).toThrow(/not one pair in order/);
    expect(() => upsertBlock(text, ENTRIES)).toThrow(/Nothing was changed/);
  });

  it('does not take a line that merely mentions the marker for ours', () => {
    const text = `127.0.0.1 x ${BEGIN}\n`;
    expect(findBlock(text)).toBeUndefined();
  });
});

describe('chooseWriteMethod', () => {
  it.each([
    [{ mode: 0o100644, writable: true, sudo: false, canAsk: false }, 'direct'],
    [{ mode: 0o100644, writable: false, sudo: true, canAsk: true }, 'sudo'],
    [{ mode: 0o100644, writable: false, sudo: true, canAsk: false }, 'print'],
    [{ mode: 0o100644, writable: false, sudo: false, canAsk: false }, 'print'],
    [{ mode: 0o100444, writable: true, sudo: true, canAsk: true }, 'locked'],
    [{ mode: 0o100400, writable: false, sudo: true, canAsk: true }, 'locked'],
  ])('%j → %s', (o, want) => {
    expect(chooseWriteMethod(o)).toBe(want);
  });
});

describe('the in-place rewrite (the program run as is, or under sudo)', () => {
  const OLD = '127.0.0.1 localhost\n# a line of medium length\n';
  it.each([
    ['longer', `${OLD}127.0.0.1 grafana.local.dev\n127.0.0.1 app.local.dev\n`],
    ['shorter', '127.0.0.1 localhost\n'],
    ['same length', OLD.replace('medium', 'MEDIUM')],
    ['empty', ''],
  ])('%s content: exact bytes, same inode (a hard link sees it), same mode', (_, content) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rewrite-test-'));
    const file = path.join(dir, 'hosts');
    fs.writeFileSync(file, OLD, { mode: 0o640 });
    fs.linkSync(file, path.join(dir, 'link'));
    const staged = path.join(dir, 'staged');
    fs.writeFileSync(staged, content);
    const [cmd, args] = rewriteCommand(file, staged, false);
    execFileSync(cmd, args);
    expect(fs.readFileSync(file, 'utf8')).toBe(content);
    expect(fs.readFileSync(path.join(dir, 'link'), 'utf8')).toBe(content);
    expect(fs.statSync(file).mode & 0o777).toBe(0o640);
  });

  it('a failure before writing (staged content missing) leaves the file as it was', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rewrite-test-'));
    const file = path.join(dir, 'hosts');
    fs.writeFileSync(file, OLD);
    const [cmd, args] = rewriteCommand(file, path.join(dir, 'missing'), false);
    expect(() => execFileSync(cmd, args, { stdio: 'ignore' })).toThrow();
    expect(fs.readFileSync(file, 'utf8')).toBe(OLD);
  });

  it('under sudo it is the same program, with sudo in front', () => {
    expect(rewriteCommand('/etc/hosts', '/s/hosts.new', true)).toEqual(['sudo', [process.execPath, '-e', REWRITE_IN_PLACE, '/etc/hosts', '/s/hosts.new']]);
    expect(rewriteCommand('/etc/hosts', '/s/hosts.new', false)).toEqual([process.execPath, ['-e', REWRITE_IN_PLACE, '/etc/hosts', '/s/hosts.new']]);
  });
});

describe('hostsEntries and dnsmasqSnippet', () => {
  it.each([
    ['192.168.1.10', '192.168.1.10'],
    ['127.0.0.1', '127.0.0.1'],
    ['0.0.0.0', '127.0.0.1'],
  ])('HOST_IP=%s: names resolve to %s', (hostIp, want) => {
    expect(hostsEntries({ DOMAIN: 'local.dev', HOST_IP: hostIp })[0]).toBe(`${want} grafana.local.dev`);
    expect(dnsmasqSnippet({ DOMAIN: 'local.dev', HOST_IP: hostIp })).toMatch(new RegExp(`^address=/local\\.dev/${want.replace(/\./g, '\\.')}$`, 'm'));
  });
  it('one line per routed name at HOST_IP', () => {
    expect(hostsEntries({ DOMAIN: 'local.dev', HOST_IP: '192.168.1.10' })).toEqual([
      '192.168.1.10 grafana.local.dev', '192.168.1.10 prometheus.local.dev', '192.168.1.10 alertmanager.local.dev', '192.168.1.10 traefik.local.dev',
      '192.168.1.10 app.local.dev',
    ]);
  });
  it('the apps\' hosts (task app records) follow, each once, only under DOMAIN', () => {
    const entries = hostsEntries({ DOMAIN: 'local.dev', HOST_IP: '192.168.1.10' }, ['shop.local.dev', 'app.local.dev', 'shop.local.dev', 'old.localhost']);
    expect(entries.slice(INGRESS_HOSTS.length)).toEqual(['192.168.1.10 shop.local.dev']);
  });
  it('dnsmasq: a wildcard address line', () => {
    expect(dnsmasqSnippet({ DOMAIN: 'local.dev', HOST_IP: '127.0.0.1' })).toMatch(/^address=\/local\.dev\/127\.0\.0\.1$/m);
  });
});

describe('scripts/hosts.ts on a temporary hosts file', { timeout: 60_000 }, () => {
  let sb: Sandbox;
  let file: string;
  const original = '127.0.0.1\tlocalhost\n# keep me   exactly\n10.0.0.5 nas.home';
  beforeEach(() => {
    sb = makeSandbox();
    file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hosts-test-')), 'hosts');
    fs.writeFileSync(file, original);
  });
  const run = (args: string[] = [], env: Record<string, string> = {}) => sb.run('hosts', args, { HOSTS_FILE: file, DOMAIN: 'local.dev', ...env });

  it('keeps bytes that are not UTF-8 (a Latin-1 comment) exactly, through install and remove', async () => {
    const latin1 = Buffer.concat([Buffer.from('127.0.0.1 localhost\n# caf'), Buffer.from([0xe9]), Buffer.from(' server\n10.0.0.5 nas.home\n')]);
    fs.writeFileSync(file, latin1);
    expect((await run()).code).toBe(0);
    const installed = fs.readFileSync(file);
    expect(installed.subarray(0, latin1.length).equals(latin1)).toBe(true);
    expect((await run(['--remove'])).code).toBe(0);
    expect(fs.readFileSync(file).equals(latin1)).toBe(true);
  });

  it('installs the block (foreign lines kept), twice = once, remove restores the original byte for byte', async () => {
    const r1 = await run();
    expect(r1.code, r1.stdout + r1.stderr).toBe(0);
    const installed = fs.readFileSync(file, 'utf8');
    expect(installed.startsWith(original)).toBe(true);
    expect(installed).toContain('127.0.0.1 grafana.local.dev');
    expect(r1.stdout).toMatch(/installed our block; backup: /);
    const backups = fs.readdirSync(path.join(sb.stateDir, 'hosts', 'backups'));
    expect(backups).toHaveLength(1);
    expect(fs.readFileSync(path.join(sb.stateDir, 'hosts', 'backups', backups[0]), 'utf8')).toBe(original);
    expect(fs.readFileSync(path.join(sb.stateDir, 'hosts', 'dnsmasq.conf'), 'utf8')).toMatch(/address=\/local\.dev\/127\.0\.0\.1/);

    const ino = fs.statSync(file).ino;
    const r2 = await run();
    expect(r2.code).toBe(0);
    expect(r2.stdout).toMatch(/already installed/);
    expect(r2.stdout).toMatch(/nothing changed/);
    expect(fs.readFileSync(file, 'utf8')).toBe(installed);
    expect(fs.statSync(file).ino).toBe(ino);

    const r3 = await run(['--remove']);
    expect(r3.code, r3.stdout + r3.stderr).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
    const r4 = await run(['--remove']);
    expect(r4.stdout).toMatch(/already absent/);
  });

  it('rewrites the file in place: same inode, mode and owner, no file left beside it', async () => {
    fs.chmodSync(file, 0o640);
    const before = fs.statSync(file);
    const r = await run();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const after = fs.statSync(file);
    expect(after.ino).toBe(before.ino);
    expect(after.mode & 0o777).toBe(0o640);
    expect([after.uid, after.gid]).toEqual([before.uid, before.gid]);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['hosts']);
    // Shorter content (remove) is truncated to its length, still in place.
    await run(['--remove']);
    expect(fs.statSync(file).ino).toBe(before.ino);
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
  });

  it('HOST_IP=0.0.0.0: the names get 127.0.0.1 (browsers refuse 0.0.0.0), in the hosts file and the dnsmasq snippet', async () => {
    const r = await run([], { HOST_IP: '0.0.0.0' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toContain('127.0.0.1 grafana.local.dev');
    expect(text).not.toContain('0.0.0.0');
    expect(fs.readFileSync(path.join(sb.stateDir, 'hosts', 'dnsmasq.conf'), 'utf8')).toMatch(/^address=\/local\.dev\/127\.0\.0\.1$/m);
    expect(r.stdout).not.toContain('0.0.0.0');
  });

  it('DOMAIN changed to localhost: the old domain\'s block goes (ours by its markers), nothing new is added', async () => {
    await run();
    expect(fs.readFileSync(file, 'utf8')).toContain('grafana.local.dev');
    const r = await run([], { DOMAIN: 'localhost' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
    expect(r.stdout).toMatch(/removed our block/);
    const again = await run([], { DOMAIN: 'localhost' });
    expect(again.stdout).toMatch(/nothing changed/);
  });

  it('WSL: says that Windows browsers read the Windows hosts file and that generateHosts rewrites /etc/hosts', async () => {
    const r = await run([], { WSL_DISTRO_NAME: 'Ubuntu' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('C:\\Windows\\System32\\drivers\\etc\\hosts');
    expect(r.stdout).toMatch(/generateHosts/);
    expect(r.stdout).toContain('/etc/wsl.conf');
    const plain = await run();
    expect(plain.stdout).not.toMatch(/generateHosts/);
  });

  it('DOMAIN or HOST_IP change replaces our lines in place', async () => {
    await run();
    const r = await run([], { DOMAIN: 'example.test', HOST_IP: '192.168.5.5' });
    expect(r.code).toBe(0);
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toContain('192.168.5.5 grafana.example.test');
    expect(text).not.toContain('local.dev');
    expect(text.split(BEGIN).length).toBe(2);
  });

  it('a read-only file: clear message, what to add, no change, non-zero exit', async () => {
    fs.chmodSync(file, 0o444);
    const r = await run();
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/is read-only \(mode 0444\): nothing was changed/);
    expect(r.stdout + r.stderr).toContain('127.0.0.1 grafana.local.dev');
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
    expect(fs.statSync(file).mode & 0o777).toBe(0o444);
  });

  it('broken markers: refuses, no change', async () => {
    fs.writeFileSync(file, `${original}\n${BEGIN}\n1.2.3.4 x\n`);
    const r = await run();
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/not one pair in order/);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${original}\n${BEGIN}\n1.2.3.4 x\n`);
  });

  it('DOMAIN=localhost: nothing to add, the file is untouched', async () => {
    const r = await run([], { DOMAIN: 'localhost' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/\*\.localhost resolves to 127\.0\.0\.1 without any hosts entry/);
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
  });

  it('DOMAIN=dev.localhost: nothing to add either', async () => {
    const r = await run([], { DOMAIN: 'dev.localhost' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/DOMAIN=dev\.localhost: \*\.localhost resolves/);
    expect(fs.readFileSync(file, 'utf8')).toBe(original);
  });

  it('DOMAIN=localhost with --force: adds the entries anyway', async () => {
    const r = await run(['--force'], { DOMAIN: 'localhost' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toContain('127.0.0.1 grafana.localhost');
  });

  it('a missing file: clear message', async () => {
    const r = await run([], { HOSTS_FILE: path.join(sb.dir, 'nope') });
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/does not exist\. Set HOSTS_FILE/);
  });

  it('follows a symlinked hosts file (macOS /etc/hosts → /private/etc/hosts) and keeps the link', async () => {
    const link = path.join(path.dirname(file), 'hosts-link');
    fs.symlinkSync(file, link);
    const r = await run([], { HOSTS_FILE: link });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(file, 'utf8')).toContain('grafana.local.dev');
  });
});
