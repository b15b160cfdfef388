// Alert rules (alerts/*.rules.yaml) with the real promtool of Prometheus 3.14 (the major we deploy):
// `promtool check rules` on every rule file and `promtool test rules` on alerts/tests/*.test.yaml.
// Every alert keeps the contract other code relies on (a severity label, annotations summary,
// description and runbook; Watchdog and SampleAppErrorRatioHigh as named), and has a promtool case
// in which it fires and one in which it stays silent (Watchdog: fires only, it has no silent state).
// The expressions are parsed with lezer-promql and held to dashboards/metrics-catalogue.yaml in
// tests/dashboards.test.ts; the real Prometheus -> Alertmanager -> webhook path is tests/alert-path.test.ts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { PROJECT_DIR } from './helpers.ts';

const ALERTS_DIR = path.join(PROJECT_DIR, 'alerts');
const SEVERITIES = ['critical', 'warning', 'info', 'none'];
const REQUIRED_ANNOTATIONS = ['summary', 'description', 'runbook'];

interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface RuleFile { file: string; groups: { name: string; rules: Rule[] }[] }
interface AlertRuleTest { eval_time: string; alertname: string; exp_alerts?: { exp_labels?: Record<string, string> }[] }
interface TestFile { file: string; rule_files: string[]; tests: { name?: string; alert_rule_test?: AlertRuleTest[] }[] }

const ruleFiles = (dir = ALERTS_DIR): RuleFile[] =>
  fs.readdirSync(dir).filter((f) => f.endsWith('.rules.yaml')).sort()
    .map((file) => ({ file, ...YAML.parse(fs.readFileSync(path.join(dir, file), 'utf8')) }));
const testFiles = (dir = path.join(ALERTS_DIR, 'tests')): TestFile[] =>
  fs.readdirSync(dir).filter((f) => f.endsWith('.test.yaml')).sort()
    .map((file) => ({ file, ...YAML.parse(fs.readFileSync(path.join(dir, file), 'utf8')) }));
const alertsOf = (files: RuleFile[]) => files.flatMap((f) => f.groups.flatMap((g) => g.rules.filter((r) => r.alert).map((r) => ({ file: f.file, rule: r }))));

/** What is wrong with the alerts' labels and annotations, as sentences. */
export function contractProblems(files: RuleFile[]): string[] {
  const problems: string[] = [];
  const names = alertsOf(files).map((a) => a.rule.alert!);
  for (const n of new Set(names)) if (names.filter((x) => x === n).length > 1) problems.push(`alert ${n} is defined more than once`);
  for (const { file, rule } of alertsOf(files)) {
    const at = `${file} ${rule.alert}`;
    if (!SEVERITIES.includes(rule.labels?.severity ?? '')) problems.push(`${at}: label severity is ${JSON.stringify(rule.labels?.severity)}, expected one of ${SEVERITIES.join('|')}`);
    for (const a of REQUIRED_ANNOTATIONS) if (!rule.annotations?.[a]?.trim()) problems.push(`${at}: annotation ${a} is missing`);
  }
  return problems;
}

/**
 * Alerts without a promtool case that fires them, or without one in which they stay silent; rule
 * files no test loads; test cases for alerts that do not exist. Watchdog needs no silent case.
 */
export function coverageProblems(rules: RuleFile[], tests: TestFile[]): string[] {
  const problems: string[] = [];
  const loads = (t: TestFile, ruleFile: string) => t.rule_files.some((r) => path.basename(r) === ruleFile);
  for (const f of rules) if (!tests.some((t) => loads(t, f.file))) problems.push(`${f.file}: no file in alerts/tests/ lists it in rule_files`);
  for (const { file, rule } of alertsOf(rules)) {
    const cases = tests.filter((t) => loads(t, file)).flatMap((t) => t.tests.flatMap((g) => g.alert_rule_test ?? [])).filter((c) => c.alertname === rule.alert);
    if (!cases.some((c) => (c.exp_alerts ?? []).length > 0)) problems.push(`${rule.alert}: no promtool case in which it fires`);
    if (rule.alert !== 'Watchdog' && !cases.some((c) => (c.exp_alerts ?? []).length === 0)) problems.push(`${rule.alert}: no promtool case in which it stays silent`);
  }
  const known = new Set(alertsOf(rules).map((a) => a.rule.alert));
  for (const t of tests) {
    for (const c of t.tests.flatMap((g) => g.alert_rule_test ?? [])) if (!known.has(c.alertname)) problems.push(`${t.file}: a case for ${c.alertname}, which no rule file defines`);
  }
  return problems;
}

function promtool(args: string[], cwd = PROJECT_DIR) {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  return { code: r.status, output: `${r.stdout}${r.stderr}${r.error ?? ''}` };
}

const scratch: string[] = [];
afterAll(() => {
  for (const d of scratch) fs.rmSync(d, { recursive: true, force: true });
});
/** A copy of alerts/ to break on purpose. */
function alertsCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alerts-'));
  scratch.push(dir);
  fs.cpSync(ALERTS_DIR, dir, { recursive: true });
  return dir;
}

const rules = ruleFiles();
const tests = testFiles();

describe('alert rules: files and contract', () => {
  it('has the three rule files of the contract, one group each, and the alerts other code relies on', () => {
    expect(rules.map((f) => f.file)).toEqual(expect.arrayContaining(['platform.rules.yaml', 'kubernetes.rules.yaml', 'sample-app.rules.yaml']));
    for (const f of rules) expect(f.groups.length, f.file).toBe(1);
    const alerts = new Map(alertsOf(rules).map((a) => [a.rule.alert, a.rule]));
    expect(alerts.get('Watchdog')).toMatchObject({ expr: 'vector(1)', labels: { severity: 'none' } });
    expect(alerts.get('Watchdog')!.for).toBeUndefined();
    expect(alerts.get('SampleAppErrorRatioHigh')).toMatchObject({ labels: { severity: 'warning' } });
    expect(alerts.size).toBeGreaterThanOrEqual(20);
  });

  it('every alert has a severity and the annotations summary, description and runbook', () => {
    expect(contractProblems(rules)).toEqual([]);
  });

  it('every alert has a promtool case that fires it and one in which it stays silent', () => {
    expect(coverageProblems(rules, tests)).toEqual([]);
  });

  it.each<[string, (r: RuleFile[], t: TestFile[]) => void, RegExp]>([
    ['an alert without severity', (r) => { delete r[0].groups[0].rules.find((x) => x.alert)!.labels!.severity; }, /label severity is undefined/],
    ['an alert without a runbook', (r) => { delete r[0].groups[0].rules.find((x) => x.alert)!.annotations!.runbook; }, /annotation runbook is missing/],
    ['an alert defined twice', (r) => { r[1].groups[0].rules.push(r[0].groups[0].rules.find((x) => x.alert)!); }, /is defined more than once/],
    ['an alert without a firing case', (_r, t) => { for (const f of t) for (const g of f.tests) g.alert_rule_test = g.alert_rule_test?.filter((c) => c.alertname !== 'KubeJobFailed' || !c.exp_alerts?.length); }, /KubeJobFailed: no promtool case in which it fires/],
    ['an alert without a silent case', (_r, t) => { for (const f of t) for (const g of f.tests) g.alert_rule_test = g.alert_rule_test?.filter((c) => c.alertname !== 'TargetDown' || c.exp_alerts?.length); }, /TargetDown: no promtool case in which it stays silent/],
    ['a new rule file without tests', (r) => { r.push({ file: 'extra.rules.yaml', groups: [{ name: 'extra', rules: [] }] }); }, /extra.rules.yaml: no file in alerts\/tests\/ lists it/],
    ['a case for a misspelt alert', (_r, t) => { t[0].tests[0].alert_rule_test![0].alertname = 'KubeJobFaild'; }, /a case for KubeJobFaild, which no rule file defines/],
  ])('the checks catch %s', (_name, breakIt, complaint) => {
    const r = structuredClone(rules);
    const t = structuredClone(tests);
    breakIt(r, t);
    expect([...contractProblems(r), ...coverageProblems(r, t)].join('\n')).toMatch(complaint);
  });
});

describe('alert rules through the real promtool (Prometheus 3.14)', { timeout: 60000 }, () => {
  it('promtool check rules accepts every rule file', () => {
    const r = promtool(['check', 'rules', ...rules.map((f) => path.join('alerts', f.file))]);
    expect(r.output).not.toMatch(/FAILED/);
    for (const f of rules) {
      const count = f.groups.reduce((n, g) => n + g.rules.length, 0);
      expect(r.output).toContain(`Checking alerts/${f.file}\n  SUCCESS: ${count} rules found`);
    }
    expect(r.code).toBe(0);
  });

  it('promtool test rules passes every file in alerts/tests/', () => {
    const r = promtool(['test', 'rules', ...tests.map((t) => path.join('alerts', 'tests', t.file))]);
    expect(r.output).not.toMatch(/FAILED/);
    expect(r.output.match(/SUCCESS/g)?.length).toBe(tests.length);
    expect(r.code).toBe(0);
  });

  // The checks above must be able to fail.
  it('promtool check rules rejects a broken expression', () => {
    const dir = alertsCopy();
    const file = path.join(dir, 'sample-app.rules.yaml');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('sample_app:http_requests:error_ratio_rate2m > 0.2', 'sample_app:http_requests:error_ratio_rate2m > (0.2'));
    const r = promtool(['check', 'rules', file]);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/SampleAppErrorRatioHigh|unclosed|parse error/);
  });

  it.each([
    ['a threshold that no longer fires', 'sample-app.rules.yaml', 'sample_app:http_requests:error_ratio_rate2m > 0.2', 'sample_app:http_requests:error_ratio_rate2m > 0.9', /SampleAppErrorRatioHigh/],
    ['a label that changed', 'kubernetes.rules.yaml', 'severity: critical', 'severity: warning', /KubeNodeNotReady/],
    ['a condition that fires on healthy series', 'platform.rules.yaml', 'expr: up == 0', 'expr: up >= 0', /TargetDown/],
  ])('promtool test rules fails on %s', (_name, file, from, to, complaint) => {
    const dir = alertsCopy();
    const target = path.join(dir, file);
    const text = fs.readFileSync(target, 'utf8');
    expect(text).toContain(from);
    fs.writeFileSync(target, text.replace(from, to));
    const r = promtool(['test', 'rules', path.join(dir, 'tests', file.replace('.rules.yaml', '.test.yaml'))]);
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/FAILED/);
    expect(r.output).toMatch(complaint);
  });
});
