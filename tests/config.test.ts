// Configuration: parsing and validation of .env keys, and that every bad value stops a phase
// before any tool changes anything.
import fs from 'node:fs';
import path from 'node:path';
import dotenv from 'dotenv';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, ConfigError, loadConfig, parseConfig } from '../scripts/lib.ts';
import { PROJECT_DIR, isMutating, makeSandbox } from './helpers.ts';

describe('parseConfig', () => {
  it('gives the documented defaults when nothing is set', () => {
    const cfg = parseConfig({});
    expect(cfg).toMatchObject({
      CLUSTER_NAME: 'talos-local',
      TALOS_VERSION: 'v1.13.9',
      KUBERNETES_VERSION: '1.36.3',
      WORKERS: 2,
      CONTROLPLANE_CPUS: 2,
      CONTROLPLANE_MEMORY: 4096,
      WORKER_MEMORY: 4096,
      HOST_IP: '127.0.0.1',
      HTTP_PORT: 80,
      HTTPS_PORT: 443,
      DOMAIN: 'localhost',
      REGISTRY_PORT: 5001,
      PULL_THROUGH_CACHE: true,
      PROMETHEUS_RETENTION: '15d',
      LOKI_RETENTION: '168h',
      SAMPLE_TRAFFIC: true,
    });
    expect(path.isAbsolute(cfg.stateDir)).toBe(true);
  });

  it.each([
    ['WORKERS', '3', 3],
    ['CONTROLPLANE_CPUS', '1.5', 1.5],
    ['WORKER_MEMORY', '2048MiB', 2048],
    ['WORKER_MEMORY', '2.5GiB', 2560],
    ['PULL_THROUGH_CACHE', 'false', false],
    ['DOMAIN', 'local.dev', 'local.dev'],
    ['HOST_IP', '0.0.0.0', '0.0.0.0'],
    ['PROMETHEUS_RETENTION', '2w', '2w'],
    ['LOKI_STORAGE', '512Mi', '512Mi'],
    ['WORKERS', ' 4 ', 4],
    ['ALERT_WEBHOOK_URL', '', ''],
    ['ALERT_WEBHOOK_URL', 'https://hooks.slack.com/services/T000/B000/XXXX', 'https://hooks.slack.com/services/T000/B000/XXXX'],
    ['ALERT_WEBHOOK_URL', 'http://10.0.0.5:8080/alerts?token=abc', 'http://10.0.0.5:8080/alerts?token=abc'],
  ])('%s=%j parses to %j', (name, raw, want) => {
    expect(parseConfig({ [name]: raw })[name as keyof typeof CONFIG_KEYS]).toEqual(want);
  });

  it('collects every problem, each naming key, value and fix', () => {
    let error: unknown;
    try {
      parseConfig({ WORKERS: 'two', HOST_IP: '300.1.1.1' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/WORKERS="two" is not allowed: expected a whole number from 1 to 5.*default "2"/);
    expect(problems[1]).toMatch(/HOST_IP="300.1.1.1"/);
  });

  it.each([
    [{ HOST_IP: '192.168.1.20', DOMAIN: 'local.dev' }, undefined],
    [{ HOST_IP: '0.0.0.0', DOMAIN: 'dev.localhost' }, undefined],
    [{ HOST_IP: '192.168.1.20' }, /DOMAIN=localhost names resolve to 127\.0\.0\.1, but HOST_IP=192\.168\.1\.20 .*Set HOST_IP=127\.0\.0\.1 .*or set DOMAIN to a name of your own/],
    [{ HOST_IP: '127.0.0.2', DOMAIN: 'dev.localhost' }, /DOMAIN=dev\.localhost names resolve to 127\.0\.0\.1, but HOST_IP=127\.0\.0\.2/],
  ])('names under localhost need the UIs on 127.0.0.1: %j', (raw, problem) => {
    if (problem) expect(() => parseConfig(raw)).toThrow(problem);
    else expect(() => parseConfig(raw)).not.toThrow();
  });

  it.each([
    'hooks.slack.com/services/T000/B000/SECRETPART',
    'ftp://example.com/hook',
    'https://',
    'https://example.com/a b',
    'not a url',
  ])('ALERT_WEBHOOK_URL=%j is refused without printing the whole value (a webhook URL is a credential)', (raw) => {
    let error: unknown;
    try {
      parseConfig({ ALERT_WEBHOOK_URL: raw });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const [problem] = (error as ConfigError).problems;
    expect(problem).toMatch(/^ALERT_WEBHOOK_URL \(\d+ characters, starting ".{1,8}…"\) is not allowed: expected empty .*http:\/\/ or https:\/\/ URL.*remove it to use the default \(not set\)/);
    if (raw.length > 8) expect(problem).not.toContain(raw);
  });

  it('rejects two keys on one port', () => {
    expect(() => parseConfig({ HTTP_PORT: '8080', REGISTRY_PORT: '8080' })).toThrow(/HTTP_PORT and REGISTRY_PORT are both 8080/);
  });

  it('lets the shell win over .env', () => {
    const dir = fs.mkdtempSync(path.join(PROJECT_DIR, 'node_modules', '.env-test-'));
    const envFile = path.join(dir, '.env');
    fs.writeFileSync(envFile, 'WORKERS=3\nDOMAIN=example.test\n');
    const cfg = loadConfig({ ENV_FILE: envFile, WORKERS: '1' });
    expect(cfg.WORKERS).toBe(1);
    expect(cfg.DOMAIN).toBe('example.test');
    fs.rmSync(dir, { recursive: true });
  });
});

describe('.env.example', () => {
  const example = dotenv.parse(fs.readFileSync(path.join(PROJECT_DIR, '.env.example')));
  it('documents every key with its default, and no other key', () => {
    expect(Object.keys(example).sort()).toEqual(Object.keys(CONFIG_KEYS).sort());
    for (const [name, spec] of Object.entries(CONFIG_KEYS)) expect(example[name], name).toBe(spec.default);
  });
  it('holds only valid values', () => {
    expect(() => parseConfig(example)).not.toThrow();
  });
});

// Every one of these must stop the phase before any tool is called to change anything.
const INVALID: [string, string][] = [
  ['CLUSTER_NAME', 'My_Cluster'],
  ['CLUSTER_NAME', '-leading-dash'],
  ['TALOS_VERSION', '1.13.9'],
  ['TALOS_VERSION', 'latest'],
  ['KUBERNETES_VERSION', 'v1.36.3'],
  ['WORKERS', '0'],
  ['WORKERS', '12'],
  ['WORKERS', 'two'],
  ['CONTROLPLANE_CPUS', '0'],
  ['CONTROLPLANE_MEMORY', '1GiB'],
  ['CONTROLPLANE_MEMORY', '4G'],
  ['WORKER_CPUS', 'many'],
  ['WORKER_MEMORY', '512MiB'],
  ['HOST_IP', 'localhost'],
  ['HOST_IP', '10.0.0'],
  ['HTTP_PORT', '0'],
  ['HTTPS_PORT', '70000'],
  ['REGISTRY_PORT', 'http'],
  ['PULL_THROUGH_CACHE', 'yes'],
  ['DOMAIN', 'Local.Dev'],
  ['DOMAIN', 'local..dev'],
  ['STATE_DIR', 'my state'],
  ['PROMETHEUS_RETENTION', '15days'],
  ['PROMETHEUS_STORAGE', '10GB'],
  ['LOKI_RETENTION', '36h'],
  ['LOKI_STORAGE', '0Gi'],
  ['SAMPLE_TRAFFIC', 'on'],
  ['ALERT_WEBHOOK_URL', 'hooks.slack.com/services/T000/B000/XXXX'],
];

describe('invalid .env values stop the talos phase before anything changes', () => {
  it.concurrent.each(INVALID)('%s=%j', async (name, value) => {
    const sandbox = makeSandbox();
    const res = await sandbox.run('talos', [], { [name]: value });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain(CONFIG_KEYS[name as keyof typeof CONFIG_KEYS].secret ? `${name} (` : `${name}="${value}" is not allowed`);
    expect(res.stderr).toMatch(/expected .+default/);
    expect(res.calls.filter(isMutating)).toEqual([]);
    expect(res.calls).toEqual([]);
  });

  it('a bad value in the .env file too', async () => {
    const sandbox = makeSandbox();
    fs.writeFileSync(path.join(sandbox.dir, 'no.env'), 'WORKER_MEMORY=lots\n');
    const res = await sandbox.run('talos');
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('WORKER_MEMORY="lots" is not allowed');
    expect(res.calls).toEqual([]);
  });

  it('a bad ALERT_WEBHOOK_URL stops the observability phase before any tool call, without printing it', async () => {
    const sandbox = makeSandbox();
    const res = await sandbox.run('observability', [], { ALERT_WEBHOOK_URL: 'htps://hooks.slack.com/services/T000/B000/SECRETPART' });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('ALERT_WEBHOOK_URL (52 characters, starting "htps://h…") is not allowed');
    expect(res.stdout + res.stderr).not.toContain('SECRETPART');
    expect(res.calls).toEqual([]);
  });

  it('a duplicate port too', async () => {
    const sandbox = makeSandbox();
    const res = await sandbox.run('talos', [], { HTTPS_PORT: String(sandbox.ports.HTTP_PORT) });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain(`HTTP_PORT and HTTPS_PORT are both ${sandbox.ports.HTTP_PORT}`);
    expect(res.calls).toEqual([]);
  });
});
