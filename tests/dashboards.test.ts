// Dashboards (dashboards/*.json): Grafana file-provisioning shape, datasource variables instead of
// hard-coded datasource UIDs, every PromQL and LogQL query parses (template variables substituted
// first), and every metric and label a query uses is accounted for in dashboards/metrics-catalogue.yaml
// (the sample app's own metrics are cross-checked against sample-app/src/metric-names.ts). The alert
// rules (alerts/*.rules.yaml) are held to the same catalogue: their expressions parse and use only
// catalogued metrics and labels (promtool checks and tests them in tests/alerts.test.ts).
// The negative tests at the end break a real dashboard on purpose and expect the linter to say so.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { parser as promqlParser } from '@prometheus-io/lezer-promql';
import { parser as logqlParser } from '@grafana/lezer-logql';
import { METRIC_FAMILIES, seriesNames } from '../sample-app/src/metric-names.ts';
import { PROJECT_DIR } from './helpers.ts';

const DASHBOARD_DIR = path.join(PROJECT_DIR, 'dashboards');
const ALERTS_DIR = path.join(PROJECT_DIR, 'alerts');
const CATALOGUE_FILE = path.join(DASHBOARD_DIR, 'metrics-catalogue.yaml');
/** Grafana 13 writes dashboards with this schemaVersion (42 is the last one of the v1 dashboard JSON). */
const SCHEMA_VERSION = 42;
const GRID_COLUMNS = 24;
/** How a panel that shows host-level values says so (title or description). */
const HOST_LEVEL_RE = /\bhost-level\b/i;

// ------------------------------------------------------------------------------------ types

interface DsRef { type?: string; uid?: string }
interface GridPos { x: number; y: number; w: number; h: number }
interface Target { refId?: string; expr?: string; datasource?: DsRef | string | null; [k: string]: unknown }
interface Panel {
  id?: number; type?: string; title?: string; gridPos?: GridPos; datasource?: DsRef | string | null;
  targets?: Target[]; panels?: Panel[]; [k: string]: unknown;
}
interface Variable {
  name: string; type: string; query?: unknown; definition?: string; datasource?: DsRef | string | null;
  includeAll?: boolean; allValue?: string; multi?: boolean; [k: string]: unknown;
}
interface Dashboard {
  uid?: string; title?: string; schemaVersion?: number; id?: number | null;
  panels?: Panel[]; templating?: { list?: Variable[] }; [k: string]: unknown;
}
type Lang = 'promql' | 'logql';
interface Query { where: string; lang: Lang; expr: string; panel?: Panel }
/** scope host: the value is the Docker host's (the node reads the host's /proc), not the node's. */
interface CatalogueMetric { name: string; type: 'counter' | 'gauge' | 'histogram' | 'summary'; scope?: 'host' }
interface CatalogueSource { source: string; labels: string[]; metrics: CatalogueMetric[] }
interface Catalogue {
  sampleApp: CatalogueSource;
  sources: Record<string, CatalogueSource>;
  loki: { source: string; streamLabels: string[]; structuredMetadata: string[] };
}
/** What a metric name in a query resolves to. */
interface MetricInfo { source: string; labels: Set<string>; hostLevel: boolean }

// ------------------------------------------------------------------------------------ loading

function loadDashboards(): { file: string; dashboard: Dashboard }[] {
  return fs.readdirSync(DASHBOARD_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, dashboard: JSON.parse(fs.readFileSync(path.join(DASHBOARD_DIR, file), 'utf8')) as Dashboard }));
}

interface RuleExpr { where: string; expr: string }

/** Every rule expression in alerts/*.rules.yaml, and the series names its recording rules make. */
function loadRuleExpressions(): { exprs: RuleExpr[]; recorded: Set<string> } {
  const exprs: RuleExpr[] = [];
  const recorded = new Set<string>();
  for (const file of fs.readdirSync(ALERTS_DIR).filter((f) => f.endsWith('.rules.yaml')).sort()) {
    const doc = YAML.parse(fs.readFileSync(path.join(ALERTS_DIR, file), 'utf8')) as { groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[] };
    for (const g of doc.groups) {
      for (const r of g.rules) {
        if (r.record) recorded.add(r.record);
        exprs.push({ where: `alerts/${file} ${r.alert ?? r.record}`, expr: String(r.expr) });
      }
    }
  }
  return { exprs, recorded };
}

function loadCatalogue(): Catalogue {
  return YAML.parse(fs.readFileSync(CATALOGUE_FILE, 'utf8')) as Catalogue;
}

/** Series names a catalogue entry stands for: histograms by their _bucket, _sum and _count series. */
function seriesOf(m: CatalogueMetric): string[] {
  if (m.type === 'histogram') return [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`];
  if (m.type === 'summary') return [m.name, `${m.name}_sum`, `${m.name}_count`];
  return [m.name];
}

/** Series name -> where it comes from and which labels the dashboards may rely on. */
function metricIndex(cat: Catalogue): Map<string, MetricInfo> {
  const index = new Map<string, MetricInfo>();
  const add = (sourceName: string, src: CatalogueSource) => {
    for (const m of src.metrics) {
      for (const s of seriesOf(m)) {
        const prev = index.get(s);
        // The same name from two sources (process_* from the app and from kubelet, say): a query may
        // use the labels either source has.
        index.set(s, {
          source: prev ? `${prev.source}+${sourceName}` : sourceName,
          labels: new Set([...(prev?.labels ?? []), ...src.labels]),
          hostLevel: (prev?.hostLevel ?? false) || m.scope === 'host',
        });
      }
    }
  };
  add('sampleApp', cat.sampleApp);
  for (const [name, src] of Object.entries(cat.sources)) add(name, src);
  return index;
}

/**
 * The sample-app series the catalogue claims. Other tests should read sampleApp.metrics from
 * dashboards/metrics-catalogue.yaml rather than import this file (importing a test file runs its tests).
 */
export function catalogueSampleAppSeries(cat: Catalogue = loadCatalogue()): string[] {
  return cat.sampleApp.metrics.flatMap(seriesOf);
}

// ------------------------------------------------------------------------------------ variables

const BUILTIN_VALUES: Record<string, string> = {
  __rate_interval: '5m',
  __interval: '1m',
  __auto: '1m',
  __range: '1h',
  __interval_ms: '60000',
  __range_ms: '3600000',
  __range_s: '3600',
};

/**
 * Replaces Grafana template variables with values that make a valid query: built-ins by a duration,
 * a multi-value "All" variable by its allValue (the value Grafana sends when All is selected), a
 * textbox by its default, anything else by a placeholder word. Unknown variables are reported.
 */
export function substituteVariables(expr: string, variables: Variable[]): { text: string; unknown: string[] } {
  const unknown: string[] = [];
  const byName = new Map(variables.map((v) => [v.name, v]));
  const value = (name: string): string => {
    if (name in BUILTIN_VALUES) return BUILTIN_VALUES[name];
    const v = byName.get(name);
    if (!v) {
      unknown.push(name);
      return 'x';
    }
    if (v.includeAll) return v.allValue ?? '.*';
    if (v.type === 'textbox') return typeof v.query === 'string' ? v.query : '';
    if (v.type === 'interval') return '5m';
    return 'placeholder';
  };
  const text = expr.replace(
    /\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)/g,
    (_m, a?: string, b?: string, c?: string) => value((a ?? b ?? c) as string),
  );
  return { text, unknown };
}

/** The name of the datasource variable a reference points at, or null when it is not `${var}`/`$var`. */
function referencedVariable(ref: unknown): string | null {
  const uid = typeof ref === 'string' ? ref : ref && typeof ref === 'object' ? (ref as DsRef).uid : undefined;
  if (typeof uid !== 'string') return null;
  const m = /^\$\{(\w+)\}$|^\$(\w+)$/.exec(uid);
  return m ? (m[1] ?? m[2]) : null;
}

/** Datasource-type variables: name -> plugin type (prometheus, loki). */
function datasourceVariables(d: Dashboard): Map<string, string> {
  return new Map((d.templating?.list ?? []).filter((v) => v.type === 'datasource').map((v) => [v.name, String(v.query)]));
}

// ------------------------------------------------------------------------------------ parse trees

type SyntaxNode = ReturnType<typeof promqlParser.parse>['topNode'];

function children(node: SyntaxNode): SyntaxNode[] {
  const out: SyntaxNode[] = [];
  for (let c = node.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
}

function descendants(node: SyntaxNode, name: string): SyntaxNode[] {
  const out: SyntaxNode[] = [];
  const walk = (n: SyntaxNode) => {
    for (const c of children(n)) {
      if (c.name === name) out.push(c);
      walk(c);
    }
  };
  walk(node);
  return out;
}

/** Offsets where the parser had to recover (lezer marks them with error nodes, named ⚠). */
export function syntaxErrors(lang: Lang, text: string): number[] {
  const tree = (lang === 'promql' ? promqlParser : logqlParser).parse(text);
  const errors: number[] = [];
  tree.iterate({ enter: (n) => { if (n.type.isError) errors.push(n.from); } });
  return errors;
}

function unquote(literal: string): string {
  if (literal.startsWith('`')) return literal.slice(1, -1);
  if (literal.startsWith("'")) return literal.slice(1, -1).replace(/\\'/g, "'");
  try {
    return JSON.parse(literal) as string;
  } catch {
    return literal.slice(1, -1);
  }
}

interface SelectorUse { metric: string | null; labels: string[] }
interface GroupingUse { labels: string[]; metrics: (string | null)[] }

function selectorUse(text: string, node: SyntaxNode): SelectorUse {
  const id = node.getChild('Identifier');
  let metric = id ? text.slice(id.from, id.to) : null;
  const labels: string[] = [];
  for (const ln of descendants(node, 'LabelName')) {
    const name = text.slice(ln.from, ln.to);
    if (name === '__name__') {
      const lit = ln.parent?.getChild('StringLiteral');
      if (lit && ln.parent?.getChild('MatchOp')?.getChild('EqlSingle')) metric = unquote(text.slice(lit.from, lit.to));
    } else {
      labels.push(name);
    }
  }
  return { metric, labels };
}

/** Metric names and matcher labels of every vector selector, and the `by (...)` labels of aggregations. */
export function analysePromql(text: string): { selectors: SelectorUse[]; groupings: GroupingUse[] } {
  const top = promqlParser.parse(text).topNode;
  const selectors = [top, ...descendants(top, 'VectorSelector')]
    .filter((n) => n.name === 'VectorSelector')
    .map((n) => selectorUse(text, n));
  const groupings: GroupingUse[] = [];
  for (const agg of descendants(top, 'AggregateExpr')) {
    const mod = agg.getChild('AggregateModifier');
    if (!mod || !mod.getChild('By')) continue; // without (...) keeps labels: nothing to check
    const labels = descendants(mod, 'LabelName').map((n) => text.slice(n.from, n.to));
    const body = agg.getChild('FunctionCallBody');
    const metrics = body ? descendants(body, 'VectorSelector').map((n) => selectorUse(text, n).metric) : [];
    groupings.push({ labels, metrics });
  }
  return { selectors, groupings };
}

interface LogqlUse {
  /** Each stream selector: its matchers (label, operator, value). */
  selectors: { label: string; op: string; value: string }[][];
  /** Label filters that run before any parser stage (only stream labels and structured metadata exist there). */
  earlyFilterLabels: string[];
  groupingLabels: string[];
}

export function analyseLogql(text: string): LogqlUse {
  const top = logqlParser.parse(text).topNode;
  const selectors = descendants(top, 'Selector').map((sel) =>
    descendants(sel, 'Matcher').map((m) => {
      const [id, op, str] = children(m);
      return { label: text.slice(id.from, id.to), op: op ? text.slice(op.from, op.to) : '', value: str ? unquote(text.slice(str.from, str.to)) : '' };
    }),
  );
  const firstParser = Math.min(...descendants(top, 'LabelParser').map((n) => n.from), ...descendants(top, 'JsonExpressionParser').map((n) => n.from), Infinity);
  const earlyFilterLabels = descendants(top, 'LabelFilter')
    .filter((f) => f.from < firstParser)
    .flatMap((f) => descendants(f, 'Matcher'))
    .map((m) => children(m)[0])
    .map((id) => text.slice(id.from, id.to));
  const groupingLabels = descendants(top, 'Grouping').flatMap((g) =>
    g.getChild('By') ? descendants(g, 'Identifier').map((n) => text.slice(n.from, n.to)) : [],
  );
  return { selectors, earlyFilterLabels, groupingLabels };
}

/** Loki refuses a selector whose every matcher also matches the empty string ({namespace=~".*"}). */
function emptyCompatible(matchers: { op: string; value: string }[]): boolean {
  return matchers.every(({ op, value }) => {
    if (op === '=') return value === '';
    if (op === '=~') {
      try {
        return new RegExp(`^(?:${value})$`).test('');
      } catch {
        return false; // a regex JavaScript cannot read (Go syntax): give it the benefit of the doubt
      }
    }
    return true; // != and !~ match the empty string
  });
}

// ------------------------------------------------------------------------------------ collecting

function allPanels(d: Dashboard): Panel[] {
  const out: Panel[] = [];
  const walk = (ps: Panel[] | undefined) => {
    for (const p of ps ?? []) {
      out.push(p);
      walk(p.panels);
    }
  };
  walk(d.panels);
  return out;
}

/** Every query of a dashboard with its language, taken from the datasource variable it references. */
function collectQueries(d: Dashboard, problems: string[]): Query[] {
  const dsVars = datasourceVariables(d);
  const langOf = (ref: unknown): Lang | null => {
    const name = referencedVariable(ref);
    const type = name ? dsVars.get(name) : undefined;
    return type === 'prometheus' ? 'promql' : type === 'loki' ? 'logql' : null;
  };
  const queries: Query[] = [];
  for (const p of allPanels(d)) {
    for (const t of p.targets ?? []) {
      const where = `panel "${p.title}" target ${t.refId}`;
      const lang = langOf(t.datasource ?? p.datasource);
      if (typeof t.expr !== 'string' || t.expr.trim() === '') problems.push(`${where}: no expr`);
      else if (lang) queries.push({ where, lang, expr: t.expr, panel: p });
    }
  }
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const where = `variable ${v.name}`;
    const lang = langOf(v.datasource);
    if (lang === 'promql') {
      const q = typeof v.query === 'string' ? v.query : String((v.query as { query?: string })?.query ?? '');
      const m = /^\s*(label_values|query_result)\(\s*(.*?)\s*(?:,\s*(\w+)\s*)?\)\s*$/s.exec(q);
      if (!m) problems.push(`${where}: query ${JSON.stringify(q)} is not label_values(...) or query_result(...)`);
      else if (m[2] && (m[1] === 'query_result' || m[3])) queries.push({ where, lang, expr: m[2] });
    } else if (lang === 'logql') {
      const q = (v.query ?? {}) as { label?: string; stream?: string };
      if (q.stream) queries.push({ where, lang, expr: q.stream });
      if (q.label) queries.push({ where, lang, expr: `{${q.label}=~".+"}` });
    }
  }
  return queries;
}

// ------------------------------------------------------------------------------------ the linter

const UID_RE = /^[A-Za-z0-9_-]{1,40}$/;
/** Core Grafana panel plugins; anything else would need a plugin installed. */
const PANEL_TYPES = new Set(['row', 'timeseries', 'stat', 'table', 'bargauge', 'gauge', 'logs', 'text', 'barchart', 'piechart', 'heatmap', 'state-timeline', 'status-history', 'alertlist']);
/** Panels that run no query of their own: rows, and the alert list (it reads the alert rules of the datasources). */
const QUERYLESS_PANEL_TYPES = new Set(['row', 'alertlist']);

function overlaps(a: GridPos, b: GridPos): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

export interface Analysis { problems: string[]; panels: number; queries: Query[]; metrics: Set<string> }

/**
 * What a PromQL expression uses that the catalogue does not account for: metrics it does not list,
 * and labels matched or grouped on that the metric's source does not list. `recorded` names series
 * our own recording rules make (alerts/*.rules.yaml): they are checked where they are defined.
 */
export function catalogueProblems(where: string, text: string, index: Map<string, MetricInfo>, recorded: Set<string> = new Set()): { problems: string[]; metrics: string[] } {
  const problems: string[] = [];
  const metrics: string[] = [];
  const { selectors, groupings } = analysePromql(text);
  for (const s of selectors) {
    if (!s.metric) {
      problems.push(`${where}: a selector without a metric name: ${text}`);
      continue;
    }
    if (recorded.has(s.metric)) continue;
    metrics.push(s.metric);
    const info = index.get(s.metric);
    if (!info) {
      problems.push(`${where}: metric ${s.metric} is not in the metrics catalogue (sampleApp or sources)`);
      continue;
    }
    for (const l of s.labels) if (!info.labels.has(l)) problems.push(`${where}: ${s.metric} is matched on label "${l}", which its source (${info.source}) does not list`);
  }
  for (const g of groupings) {
    for (const m of g.metrics) {
      const info = m ? index.get(m) : undefined;
      if (!info) continue; // reported above
      for (const l of g.labels) if (!info.labels.has(l)) problems.push(`${where}: grouped by label "${l}", which ${m} (${info.source}) does not list`);
    }
  }
  return { problems, metrics };
}

/** Everything wrong with one dashboard, as sentences; an empty list means it passes. */
export function lintDashboard(d: Dashboard, cat: Catalogue): Analysis {
  const problems: string[] = [];
  const metrics = new Set<string>();

  // Shape: what Grafana's file provisioner expects.
  if (typeof d.title !== 'string' || d.title.trim() === '') problems.push('title is missing');
  if (typeof d.uid !== 'string' || !UID_RE.test(d.uid)) problems.push(`uid ${JSON.stringify(d.uid)} is not 1-40 letters, digits, - or _`);
  if (d.schemaVersion !== SCHEMA_VERSION) problems.push(`schemaVersion is ${d.schemaVersion}, expected ${SCHEMA_VERSION}`);
  for (const key of ['__inputs', '__requires', '__elements']) if (key in d) problems.push(`${key} is an export artefact; provisioned dashboards must not have it`);
  if (d.id !== undefined && d.id !== null) problems.push('id must be null or absent (Grafana assigns it)');
  if (!Array.isArray(d.templating?.list)) problems.push('templating.list is missing');
  if (!Array.isArray(d.panels) || d.panels.length === 0) problems.push('no panels');

  // Variables.
  const variables = d.templating?.list ?? [];
  const dsVars = datasourceVariables(d);
  const names = variables.map((v) => v.name);
  for (const n of new Set(names)) if (names.filter((x) => x === n).length > 1) problems.push(`variable ${n} is defined twice`);
  if (dsVars.get('datasource') !== 'prometheus') problems.push('no variable "datasource" of type datasource with query prometheus');
  for (const [n, type] of dsVars) if (!['prometheus', 'loki'].includes(type)) problems.push(`datasource variable ${n} selects ${type}, expected prometheus or loki`);

  // Panels: ids, grid, datasource references.
  const panels = allPanels(d);
  const ids = new Set<number>();
  const placed: { title: string; pos: GridPos }[] = [];
  for (const p of panels) {
    const name = `panel "${p.title ?? p.id}"`;
    if (typeof p.id !== 'number') problems.push(`${name}: id is missing`);
    else if (ids.has(p.id)) problems.push(`${name}: duplicate panel id ${p.id}`);
    else ids.add(p.id);
    if (typeof p.title !== 'string' || p.title === '') problems.push(`panel ${p.id}: title is missing`);
    const g = p.gridPos;
    if (!g || ![g.x, g.y, g.w, g.h].every((n) => Number.isInteger(n) && n >= 0) || g.w === 0 || g.h === 0 || g.x + g.w > GRID_COLUMNS) {
      problems.push(`${name}: gridPos ${JSON.stringify(g)} is missing or outside the ${GRID_COLUMNS}-column grid`);
    } else {
      for (const q of placed) if (overlaps(g, q.pos)) problems.push(`${name}: gridPos overlaps panel "${q.title}"`);
      placed.push({ title: String(p.title), pos: g });
    }
    if (!PANEL_TYPES.has(String(p.type))) problems.push(`${name}: panel type ${JSON.stringify(p.type)} is not a core Grafana panel`);
    if (QUERYLESS_PANEL_TYPES.has(String(p.type))) {
      if (p.targets?.length) problems.push(`${name}: ${p.type} panels run no queries of their own, but it has targets`);
      continue;
    }
    const refIds = (p.targets ?? []).map((t) => t.refId);
    if (refIds.some((r, i) => typeof r !== 'string' || r === '' || refIds.indexOf(r) !== i)) problems.push(`${name}: target refIds ${JSON.stringify(refIds)} are not unique`);
    const panelVar = referencedVariable(p.datasource);
    if (!panelVar || !dsVars.has(panelVar)) problems.push(`${name}: datasource ${JSON.stringify(p.datasource)} does not reference a datasource variable`);
    if (!p.targets?.length) problems.push(`${name}: no targets`);
    for (const t of p.targets ?? []) {
      const v = referencedVariable(t.datasource);
      if (!v || !dsVars.has(v)) problems.push(`${name} target ${t.refId}: datasource ${JSON.stringify(t.datasource)} does not reference a datasource variable`);
      else if (panelVar && v !== panelVar) problems.push(`${name} target ${t.refId}: datasource \${${v}} differs from the panel's \${${panelVar}}`);
    }
  }
  // Anything anywhere that names a datasource must go through a variable (catches annotations, links, nested objects).
  const scan = (node: unknown, at: string) => {
    if (Array.isArray(node)) node.forEach((x, i) => scan(x, `${at}[${i}]`));
    else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'datasource' && v !== null && v !== undefined) {
          const ref = referencedVariable(v);
          if (!ref || !dsVars.has(ref)) problems.push(`hard-coded datasource at ${at}.datasource: ${JSON.stringify(v)}`);
        }
        scan(v, `${at}.${k}`);
      }
    }
  };
  scan(d, '$');
  for (const v of variables) {
    if (v.type === 'query' && !referencedVariable(v.datasource)) problems.push(`variable ${v.name}: datasource ${JSON.stringify(v.datasource)} does not reference a datasource variable`);
  }

  // Queries: parse, then check metrics and labels against the catalogue.
  const index = metricIndex(cat);
  const streamLabels = new Set(cat.loki.streamLabels);
  const lokiLabels = new Set([...cat.loki.streamLabels, ...cat.loki.structuredMetadata]);
  const queries = collectQueries(d, problems);
  for (const q of queries) {
    const { text, unknown } = substituteVariables(q.expr, variables);
    for (const u of unknown) problems.push(`${q.where}: undefined variable $${u}`);
    const errs = syntaxErrors(q.lang, text);
    if (errs.length) {
      problems.push(`${q.where}: does not parse as ${q.lang === 'promql' ? 'PromQL' : 'LogQL'} at offset ${errs[0]}: ${text}`);
      continue;
    }
    if (q.lang === 'promql') {
      const checked = catalogueProblems(q.where, text, index);
      problems.push(...checked.problems);
      for (const m of checked.metrics) metrics.add(m);
      // In Talos-in-Docker these read the host's /proc: the panel must not pass them off as the node's.
      for (const m of checked.metrics) {
        if (index.get(m)?.hostLevel && q.panel && !HOST_LEVEL_RE.test(`${q.panel.title ?? ''} ${q.panel.description ?? ''}`)) {
          problems.push(`${q.where}: ${m} is host-level (catalogue scope: host), but the panel's title and description do not say "host-level"`);
        }
      }
    } else {
      const use = analyseLogql(text);
      for (const sel of use.selectors) {
        for (const m of sel) if (!streamLabels.has(m.label)) problems.push(`${q.where}: "${m.label}" is not a Loki stream label (catalogue loki.streamLabels); filter it after the selector instead`);
        if (emptyCompatible(sel)) problems.push(`${q.where}: stream selector is empty-compatible when "All" is selected (Loki refuses it): ${text}`);
      }
      for (const l of use.earlyFilterLabels) if (!lokiLabels.has(l)) problems.push(`${q.where}: label filter on "${l}" before any parser, but it is neither a stream label nor structured metadata`);
      for (const l of use.groupingLabels) if (!lokiLabels.has(l)) problems.push(`${q.where}: grouped by "${l}", which is neither a stream label nor structured metadata`);
    }
  }
  if (queries.some((q) => q.lang === 'logql') && ![...dsVars.values()].includes('loki')) problems.push('LogQL queries but no datasource variable with query loki');
  return { problems, panels: panels.filter((p) => p.type !== 'row').length, queries, metrics };
}

/** uids that more than one dashboard uses. */
export function duplicateUids(list: { file: string; dashboard: Dashboard }[]): string[] {
  const seen = new Map<string, string>();
  const dups: string[] = [];
  for (const { file, dashboard } of list) {
    const uid = String(dashboard.uid);
    if (seen.has(uid)) dups.push(`${uid} (${seen.get(uid)}, ${file})`);
    else seen.set(uid, file);
  }
  return dups;
}

// ------------------------------------------------------------------------------------ tests

const dashboards = loadDashboards();
const catalogue = loadCatalogue();
const rules = loadRuleExpressions();

describe('dashboards: the set', () => {
  it('has at least the four required dashboards, each with a unique uid and title', () => {
    expect(dashboards.length).toBeGreaterThanOrEqual(4);
    expect(duplicateUids(dashboards)).toEqual([]);
    const titles = dashboards.map((d) => d.dashboard.title);
    expect(new Set(titles).size).toBe(titles.length);
    expect(titles).toEqual(expect.arrayContaining(['Platform overview', 'Workload RED', 'Logs', 'Cluster resources']));
  });

  it('every dashboard has the Prometheus datasource variable; the log dashboards also a Loki one', () => {
    for (const { dashboard } of dashboards) expect(datasourceVariables(dashboard).get('datasource')).toBe('prometheus');
    const loki = dashboards.filter(({ dashboard }) => [...datasourceVariables(dashboard).values()].includes('loki')).map((d) => d.dashboard.uid);
    expect(loki).toEqual(expect.arrayContaining(['platform-overview', 'platform-logs', 'workload-red']));
  });
});

describe.each(dashboards)('dashboard $file', ({ dashboard }) => {
  const analysis = lintDashboard(dashboard, catalogue);

  it('passes every check (shape, datasource variables, queries parse, metrics and labels catalogued)', () => {
    expect(analysis.problems).toEqual([]);
  });

  it('has panels and queries to check', () => {
    expect(analysis.panels).toBeGreaterThanOrEqual(5);
    expect(analysis.queries.length).toBeGreaterThanOrEqual(5);
  });
});

describe('dashboards: content the issue asks for', () => {
  const exprs = (uid: string) => {
    const d = dashboards.find((x) => x.dashboard.uid === uid);
    expect(d, `dashboard ${uid}`).toBeDefined();
    return collectQueries(d!.dashboard, []).map((q) => q.expr).join('\n');
  };
  it.each([
    ['platform-overview', /\bup\b/, 'targets up/down'],
    ['platform-overview', /prometheus_tsdb_head_samples_appended_total/, 'samples/s'],
    ['platform-overview', /rate\(\{namespace=~"\.\+"\}/, 'log lines/s (LogQL)'],
    ['platform-overview', /job=~"\.\*alloy\.\*"/, 'Alloy health'],
    ['platform-overview', /\(sum\(prometheus_tsdb_storage_blocks_bytes\) \+ sum\(prometheus_tsdb_wal_storage_size_bytes\)\) \/ sum\(kube_persistentvolumeclaim_resource_requests_storage_bytes\{namespace="monitoring", persistentvolumeclaim="prometheus-server"\}\)/, 'Prometheus volume use against its claim'],
    ['workload-red', /http_request_errors_total/, 'error ratio'],
    ['workload-red', /histogram_quantile\(0\.99, sum by \(le\) \(rate\(http_request_duration_seconds_bucket/, 'latency percentiles'],
    ['platform-logs', /sum by \(namespace, pod\)/, 'volume by pod'],
    ['platform-logs', /\| json \| __error__="" \| level=~"error\|fatal"/, 'error lines'],
    ['cluster-resources', /container_cpu_usage_seconds_total/, 'CPU (cAdvisor)'],
    ['cluster-resources', /container_memory_working_set_bytes/, 'memory (cAdvisor)'],
    ['cluster-resources', /kube_pod_container_status_restarts_total/, 'pod restarts (KSM)'],
  ])('%s queries %s (%s)', (uid, re) => {
    expect(exprs(uid)).toMatch(re);
  });

  it('no panel takes a share of the host-level allocatable (it is the Docker host\'s, not the nodes\')', () => {
    for (const uid of ['cluster-resources', 'platform-overview']) expect(exprs(uid)).not.toMatch(/\/\s*sum(?: by \([^)]*\))?\s*\(kube_node_status_allocatable/);
  });

  it('the Logs dashboard has a logs panel', () => {
    const d = dashboards.find((x) => x.dashboard.uid === 'platform-logs')!.dashboard;
    expect(allPanels(d).filter((p) => p.type === 'logs').length).toBeGreaterThanOrEqual(1);
  });
});

describe('alert rules (alerts/*.rules.yaml) against the catalogue', () => {
  const index = metricIndex(catalogue);
  it('has rule expressions to check', () => {
    expect(rules.exprs.length).toBeGreaterThanOrEqual(20);
  });
  it.each(rules.exprs.map((r) => [r.where, r.expr]))('%s parses and uses only catalogued metrics and labels', (where, expr) => {
    expect(syntaxErrors('promql', expr), `${where}: ${expr}`).toEqual([]);
    expect(catalogueProblems(where, expr, index, rules.recorded).problems).toEqual([]);
  });
  it.each<[string, string, RegExp]>([
    ['an uncatalogued metric', 'rate(made_up_total[5m]) > 0', /metric made_up_total is not in the metrics catalogue/],
    ['a label its source does not have', 'kube_node_status_condition{route="/"} == 0', /matched on label "route"/],
    ['grouping by a label its source does not have', 'sum by (handler) (rate(loki_discarded_samples_total[5m])) > 0', /grouped by label "handler"/],
  ])('reports %s', (_name, expr, complaint) => {
    expect(catalogueProblems('rule', expr, index, rules.recorded).problems.join('\n')).toMatch(complaint);
  });
  it("skips our recording rules' series (checked where they are defined), and only those", () => {
    expect(catalogueProblems('rule', 'sample_app:http_requests:error_ratio_rate5m > 0.1', index, rules.recorded).problems).toEqual([]);
    expect(catalogueProblems('rule', 'sample_app:made_up:ratio > 0.1', index, rules.recorded).problems.join('\n')).toMatch(/not in the metrics catalogue/);
  });
});

describe('metrics catalogue', () => {
  const index = metricIndex(catalogue);
  const used = new Set([
    ...dashboards.flatMap(({ dashboard }) => [...lintDashboard(dashboard, catalogue).metrics]),
    ...rules.exprs.flatMap(({ where, expr }) => catalogueProblems(where, expr, index, rules.recorded).metrics),
  ]);

  it('lists every platform metric once, with a source and labels', () => {
    const all = Object.values(catalogue.sources).flatMap((s) => s.metrics.map((m) => m.name));
    expect(all.filter((n, i) => all.indexOf(n) !== i)).toEqual([]);
    for (const [name, s] of Object.entries(catalogue.sources)) {
      expect(s.source, name).toMatch(/\S{10,}/);
      expect(s.labels.length, name).toBeGreaterThan(0);
      expect(s.metrics.length, name).toBeGreaterThan(0);
    }
  });

  it('has no stale entries: every catalogued metric is used by some dashboard or alert rule', () => {
    const listed = [...catalogue.sampleApp.metrics, ...Object.values(catalogue.sources).flatMap((s) => s.metrics)];
    const unused = listed.filter((m) => !seriesOf(m).some((s) => used.has(s))).map((m) => m.name);
    expect(unused).toEqual([]);
  });

  it("claims only metrics the sample app really exposes (sample-app/src/metric-names.ts), with the same type", () => {
    const families = new Map(METRIC_FAMILIES.map((f) => [f.name, f.type]));
    for (const m of catalogue.sampleApp.metrics) expect(families.get(m.name), m.name).toBe(m.type);
    expect(catalogueSampleAppSeries(catalogue).filter((s) => !seriesNames().includes(s))).toEqual([]);
  });

  it("includes the sample app's request metrics from the briefing", () => {
    expect(catalogueSampleAppSeries(catalogue)).toEqual(expect.arrayContaining([
      'http_requests_total', 'http_request_errors_total', 'http_request_duration_seconds_bucket',
    ]));
  });

  it('lists the Loki labels our values keep: pod a stream label (structuredMetadata.pod emptied), node added by our rules', () => {
    const values = YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'helm-values', 'k8s-monitoring.yaml'), 'utf8'));
    expect(values.podLogsViaLoki.structuredMetadata.pod).toBe('');
    expect(fs.readFileSync(path.join(PROJECT_DIR, 'alloy', 'pod-logs-rules.alloy'), 'utf8')).toMatch(/target_label\s*=\s*"node"/);
    expect(catalogue.loki.streamLabels).toEqual(expect.arrayContaining(['namespace', 'pod', 'container', 'node', 'job']));
    expect(catalogue.loki.structuredMetadata).not.toContain('pod');
  });
});

describe('query helpers', () => {
  const vars: Variable[] = [
    { name: 'datasource', type: 'datasource', query: 'prometheus' },
    { name: 'namespace', type: 'query', includeAll: true, allValue: '.+' },
    { name: 'search', type: 'textbox', query: '' },
    { name: 'node', type: 'query' },
  ];
  it.each([
    ['rate(x[$__rate_interval])', 'rate(x[5m])'],
    ['x{namespace=~"$namespace"}', 'x{namespace=~".+"}'],
    ['x{namespace=~"${namespace:regex}"}', 'x{namespace=~".+"}'],
    ['x{node="[[node]]"}', 'x{node="placeholder"}'],
    ['count_over_time({a="b"} |~ "$search" [$__range])', 'count_over_time({a="b"} |~ "" [1h])'],
    ['sum(rate({a="b"}[$__auto]))', 'sum(rate({a="b"}[1m]))'],
  ])('substitutes %s', (input, output) => {
    expect(substituteVariables(input, vars)).toEqual({ text: output, unknown: [] });
  });

  it('reports variables no one defined', () => {
    expect(substituteVariables('x{a="$nope"}', vars).unknown).toEqual(['nope']);
  });

  it.each([
    ['sum by (job) (rate(http_requests_total{namespace="a"}[5m]))', ['http_requests_total'], [['job']]],
    ['histogram_quantile(0.9, sum by (le) (rate(foo_bucket[1m]))) / on() group_left max(up)', ['foo_bucket', 'up'], [['le']]],
    ['{__name__="bar", job="x"}', ['bar'], []],
    ['count(up == 0) or vector(0)', ['up'], []],
  ])('finds the metrics of %s', (expr, names, groupings) => {
    const a = analysePromql(expr);
    expect(a.selectors.map((s) => s.metric)).toEqual(names);
    expect(a.groupings.map((g) => g.labels)).toEqual(groupings);
  });

  it('finds stream selectors, early label filters and grouping labels in LogQL', () => {
    const a = analyseLogql('sum by (namespace, pod) (count_over_time({namespace=~"a"} | pod=~"b" | json | level="error" [1m]))');
    expect(a.selectors).toEqual([[{ label: 'namespace', op: '=~', value: 'a' }]]);
    expect(a.earlyFilterLabels).toEqual(['pod']);
    expect(a.groupingLabels).toEqual(['namespace', 'pod']);
  });

  it.each([
    ['promql', 'sum(rate(x[5m])', true],
    ['promql', 'sum(rate(x[5m]))', false],
    ['logql', '{a="b"} | json | level="error" [', true],
    ['logql', '{a="b"} | json | level="error"', false],
  ] as const)('%s %s has errors: %s', (lang, text, broken) => {
    expect(syntaxErrors(lang, text).length > 0).toBe(broken);
  });
});

/** Runs the real Prometheus parser (promtool check rules) over expressions, as recording rules. */
function promtoolCheck(exprs: string[]): { ok: boolean; output: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dashboards-promtool-'));
  try {
    const file = path.join(dir, 'rules.yaml');
    fs.writeFileSync(file, YAML.stringify({ groups: [{ name: 'dashboards', rules: exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr })) }] }));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    return { ok: r.status === 0, output: `${r.stdout}${r.stderr}${r.error ?? ''}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
// Real Prometheus 3 parses what lezer parsed: a second, independent parser. Without promtool this
// fails, naming it and how to get it; it never skips.
describe('PromQL through the real Prometheus 3 parser (promtool)', () => {
  const exprs = dashboards.flatMap(({ dashboard }) =>
    collectQueries(dashboard, []).filter((q) => q.lang === 'promql').map((q) => substituteVariables(q.expr, dashboard.templating?.list ?? []).text),
  );
  it(`accepts every dashboard PromQL expression`, () => {
    expect(exprs.length).toBeGreaterThan(20);
    const r = promtoolCheck(exprs);
    expect(r.output).toContain(`SUCCESS: ${exprs.length} rules found`);
    expect(r.ok).toBe(true);
  });
  it('rejects a broken one (so the check can fail)', () => {
    const r = promtoolCheck(['sum(rate(http_requests_total[5m])']);
    expect(r.ok).toBe(false);
  });
});

// The checks must be able to fail: break a copy of a real dashboard and expect the matching complaint.
describe('negative: the linter catches broken dashboards', () => {
  const base = dashboards.find((d) => d.dashboard.uid === 'workload-red')!.dashboard;
  const clone = (): Dashboard => structuredClone(base);
  const firstPromPanel = (d: Dashboard) => allPanels(d).find((p) => p.type !== 'row' && referencedVariable(p.datasource) === 'datasource')!;
  const firstLokiPanel = (d: Dashboard) => allPanels(d).find((p) => p.type !== 'row' && referencedVariable(p.datasource) === 'loki_datasource')!;

  it('the unbroken copy is clean (so each failure below is caused by its own change)', () => {
    expect(lintDashboard(clone(), catalogue).problems).toEqual([]);
  });

  it.each<[string, (d: Dashboard) => void, RegExp]>([
    ['a PromQL expression with a missing parenthesis', (d) => { firstPromPanel(d).targets![0].expr = 'sum(rate(http_requests_total[$__rate_interval])'; }, /does not parse as PromQL/],
    ['a LogQL expression with a dangling range', (d) => { firstLokiPanel(d).targets![0].expr = '{namespace=~"$namespace"} | json ['; }, /does not parse as LogQL/],
    ['a hard-coded datasource uid on a panel', (d) => { firstPromPanel(d).datasource = { type: 'prometheus', uid: 'P1809F7CD0C75ACF3' }; }, /does not reference a datasource variable/],
    ['a hard-coded datasource uid on a target', (d) => { firstPromPanel(d).targets![0].datasource = { type: 'prometheus', uid: 'prometheus' }; }, /target A: datasource .* does not reference a datasource variable/],
    ['a datasource given by name', (d) => { firstPromPanel(d).datasource = 'Prometheus'; }, /hard-coded datasource/],
    ['a hard-coded uid in an annotation', (d) => { (d.annotations as { list: unknown[] }).list.push({ name: 'x', datasource: { type: 'loki', uid: 'loki' } }); }, /hard-coded datasource at \$\.annotations/],
    ['a variable query on a hard-coded datasource', (d) => { d.templating!.list![2].datasource = { type: 'prometheus', uid: 'prometheus' }; }, /variable namespace: datasource/],
    ['a metric that is not catalogued', (d) => { firstPromPanel(d).targets![0].expr = 'sum(rate(made_up_metric_total[$__rate_interval]))'; }, /metric made_up_metric_total is not in the metrics catalogue/],
    ['a histogram series of an uncatalogued family', (d) => { firstPromPanel(d).targets![0].expr = 'histogram_quantile(0.9, sum by (le) (rate(made_up_seconds_bucket[5m])))'; }, /made_up_seconds_bucket is not in the metrics catalogue/],
    ['a variable query on an uncatalogued metric', (d) => { (d.templating!.list![2].query as { query: string }).query = 'label_values(made_up_info, namespace)'; }, /variable namespace: metric made_up_info/],
    ['grouping by a label the source does not provide', (d) => { firstPromPanel(d).targets![0].expr = 'sum by (route) (up)'; }, /grouped by label "route", which up/],
    ['matching on a label the source does not provide', (d) => { firstPromPanel(d).targets![0].expr = 'sum(kube_pod_info{route="/"})'; }, /matched on label "route"/],
    ['structured metadata in a Loki stream selector', (d) => { firstLokiPanel(d).targets![0].expr = '{namespace=~"$namespace", k8s_pod_name="x"}'; }, /"k8s_pod_name" is not a Loki stream label/],
    ['an empty-compatible Loki selector', (d) => { firstLokiPanel(d).targets![0].expr = '{namespace=~".*"}'; }, /empty-compatible/],
    ['an undefined template variable', (d) => { firstPromPanel(d).targets![0].expr = 'sum(rate(http_requests_total{namespace=~"$nmespace"}[5m]))'; }, /undefined variable \$nmespace/],
    ['a duplicate panel id', (d) => { const ps = allPanels(d).filter((p) => p.type !== 'row'); ps[1].id = ps[0].id; }, /duplicate panel id/],
    ['a panel without gridPos', (d) => { delete firstPromPanel(d).gridPos; }, /gridPos undefined is missing/],
    ['a panel wider than the grid', (d) => { firstPromPanel(d).gridPos!.w = 30; }, /outside the 24-column grid/],
    ['overlapping panels', (d) => { const ps = allPanels(d).filter((p) => p.type !== 'row'); ps[1].gridPos = { ...ps[0].gridPos! }; }, /overlaps panel/],
    ['an export with __inputs', (d) => { d.__inputs = [{ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }]; }, /__inputs is an export artefact/],
    ['no uid', (d) => { delete d.uid; }, /uid undefined/],
    ['an old schemaVersion', (d) => { d.schemaVersion = 27; }, /schemaVersion is 27/],
    ['no Prometheus datasource variable', (d) => { d.templating!.list = d.templating!.list!.filter((v) => v.name !== 'datasource'); }, /no variable "datasource"/],
    ['a duplicate target refId', (d) => { const p = allPanels(d).find((x) => (x.targets?.length ?? 0) > 1)!; p.targets![1].refId = p.targets![0].refId; }, /target refIds .* are not unique/],
    ['a misspelt panel type', (d) => { firstPromPanel(d).type = 'timeseris'; }, /panel type "timeseris" is not a core Grafana panel/],
    ['targets on an alert list panel', (d) => { firstPromPanel(d).type = 'alertlist'; }, /alertlist panels run no queries of their own, but it has targets/],
    ['a target without expr', (d) => { delete firstPromPanel(d).targets![0].expr; }, /target A: no expr/],
    ['a host-level metric on a panel that does not say so', (d) => { const p = firstPromPanel(d); p.title = 'Memory'; p.description = ''; p.targets![0].expr = 'sum(node_memory_MemTotal_bytes)'; }, /node_memory_MemTotal_bytes is host-level .* do not say "host-level"/],
  ])('%s', (_name, breakIt, complaint) => {
    const d = clone();
    breakIt(d);
    const { problems } = lintDashboard(d, catalogue);
    expect(problems.join('\n')).toMatch(complaint);
  });

  it('two dashboards with the same uid', () => {
    const a = clone();
    const b = clone();
    expect(duplicateUids([{ file: 'a.json', dashboard: a }, { file: 'b.json', dashboard: b }])).toEqual(['workload-red (a.json, b.json)']);
  });

  it('a sample-app metric the app does not expose', () => {
    const claimed = catalogueSampleAppSeries({ ...catalogue, sampleApp: { ...catalogue.sampleApp, metrics: [{ name: 'http_requests_made_up_total', type: 'counter' }] } });
    expect(claimed.filter((s) => !seriesNames().includes(s))).toEqual(['http_requests_made_up_total']);
  });
});
