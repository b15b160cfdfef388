// Stand-in `helm`: releases kept in state.helm.releases, keyed "namespace/name". It plays the major
// of state.helm.version (3 or 4: HELM_VERSIONS in common.mjs), with that major's flags, defaults,
// error texts and JSON shapes as read in the helm source at the pinned tags (v3.21.4: cmd/helm/*.go,
// the same flags as v3.17.0; v4.2.4: pkg/cmd/*.go). A flag the real helm lacks fails as cobra fails it.
import fs from 'node:fs';
import YAML from 'yaml';
import { HELM_RELEASES, all, commandPath, flagTable, one, parseCommandLine } from '../common.mjs';
import { clusterUp, kubeconfigFiles } from './kubectl.mjs';

/** pkg/cli/environment.go AddFlags: the flags every command takes. */
const GLOBAL = {
  3: 'n/namespace= kubeconfig= kube-context= kube-token= kube-as-user= kube-as-group= kube-apiserver= kube-ca-file= ' +
    'kube-tls-server-name= kube-insecure-skip-tls-verify debug registry-config= repository-config= repository-cache= burst-limit= qps= h/help',
};
GLOBAL[4] = `${GLOBAL[3]} content-cache= color= colour=`;

const OUTPUT = 'o/output=';
/** flags.go: addChartPathOptionsFlags, addValueOptionsFlags, bindPostRenderFlag (same names in both majors). */
const CHART_PATH = 'version= verify keyring= repo= username= password= cert-file= key-file= insecure-skip-tls-verify plain-http ca-file= pass-credentials';
const VALUES = 'f/values= set= set-string= set-file= set-json= set-literal=';
const POST_RENDER = 'post-renderer= post-renderer-args=';
const UPGRADE_COMMON = 'create-namespace i/install devel hide-secret no-hooks disable-openapi-validation skip-crds timeout= reset-values reuse-values ' +
  'reset-then-reuse-values wait-for-jobs atomic history-max= cleanup-on-fail render-subchart-notes hide-notes skip-schema-validation l/labels= ' +
  `description= dependency-update enable-dns take-ownership dry-run? force ${CHART_PATH} ${VALUES} ${OUTPUT} ${POST_RENDER}`;
const LIST_COMMON = 'q/short no-headers time-format= d/date r/reverse uninstalled superseded uninstalling deployed failed pending A/all-namespaces m/max= offset= f/filter= l/selector= ' + OUTPUT;
const UNINSTALL_COMMON = 'dry-run no-hooks ignore-not-found keep-history cascade= timeout= description=';
/** template.go: its own flags, the install flags (install.go addInstallFlags) and the chart, values and post-render flags. */
const TEMPLATE_COMMON = 's/show-only= output-dir= validate include-crds skip-tests is-upgrade kube-version= a/api-versions= release-name ' +
  'create-namespace dry-run? no-hooks replace timeout= wait-for-jobs g/generate-name name-template= description= devel dependency-update ' +
  `disable-openapi-validation atomic skip-crds render-subchart-notes hide-notes skip-schema-validation l/labels= enable-dns hide-secret take-ownership ${CHART_PATH} ${VALUES} ${POST_RENDER}`;

/** The commands the phases use, per major: flags of each (list.go, get_values.go, status.go, upgrade.go, uninstall.go, version.go). */
const COMMANDS = {
  3: {
    list: LIST_COMMON + ' a/all',
    'get values': `revision= a/all ${OUTPUT}`,
    status: `revision= show-desc show-resources ${OUTPUT}`,
    upgrade: `${UPGRADE_COMMON} recreate-pods wait`,
    uninstall: `${UNINSTALL_COMMON} wait`,
    template: `${TEMPLATE_COMMON} wait`,
    version: 'short template= c/client',
  },
  4: {
    // v4 dropped list --all (every status is listed by default), status --show-desc/--show-resources
    // and upgrade --recreate-pods; --wait takes a strategy.
    list: LIST_COMMON,
    'get values': `revision= a/all ${OUTPUT}`,
    status: `revision= ${OUTPUT}`,
    upgrade: `${UPGRADE_COMMON} force-replace force-conflicts server-side= rollback-on-failure wait?`,
    uninstall: `${UNINSTALL_COMMON} wait?`,
    template: `${TEMPLATE_COMMON} wait? force-replace force-conflicts server-side= rollback-on-failure`,
    version: 'short template=',
  },
};
/** Arguments each command takes (negative: at least that many) and its usage line. */
const ARITY = { list: [0, ''], 'get values': [1, 'RELEASE_NAME'], status: [1, 'RELEASE_NAME'], upgrade: [2, '[RELEASE] [CHART]'], uninstall: [-1, 'RELEASE_NAME [...]'], template: [-1, '[NAME] [CHART]'], version: [0, ''] };
const ALIASES = { ls: 'list', un: 'uninstall', delete: 'uninstall', del: 'uninstall' };
/** Every top-level command of helm (both majors), for "unknown command" versus "not played here". */
const HELM_COMMANDS = ['completion', 'create', 'dependency', 'env', 'get', 'help', 'history', 'install', 'lint', 'list', 'package', 'plugin', 'pull',
  'push', 'registry', 'repo', 'rollback', 'search', 'show', 'status', 'template', 'test', 'uninstall', 'upgrade', 'verify', 'version', ...Object.keys(ALIASES)];
const GET_SUBCOMMANDS = ['all', 'hooks', 'manifest', 'metadata', 'notes', 'values'];

/** The states `helm list` shows without state flags: deployed and failed in v3 (SetStateMask), all in v4. */
const LIST_STATE_FLAGS = { deployed: ['deployed'], failed: ['failed'], pending: ['pending-install', 'pending-upgrade', 'pending-rollback'], uninstalling: ['uninstalling'], uninstalled: ['uninstalled'], superseded: ['superseded'] };

export const helmMajor = (state) => Number(/^v(\d+)\./.exec(state.helm.version)?.[1] ?? 3);

function merge(a, b) {
  const isMap = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = isMap(v) && isMap(out[k]) ? merge(out[k], v) : v;
  return out;
}

/** `--set a.b=c` into a values object (strings, true/false and integers, as helm reads them). */
function setValue(values, expr) {
  const [pathText, raw] = expr.split(/=(.*)/s);
  const value = raw === 'true' ? true : raw === 'false' ? false : /^-?\d+$/.test(raw) ? Number(raw) : raw;
  const keys = pathText.split('.');
  let node = values;
  for (const k of keys.slice(0, -1)) node = node[k] ??= {};
  node[keys.at(-1)] = value;
}


/** Go's time.Time.String() of a stored release date, as `helm list` prints it. */
const goTime = (iso) => `${new Date(iso).toISOString().replace('T', ' ').replace(/\.?0*Z$/, '')} +0000 UTC`;
const DEFAULT_DEPLOYED = '2025-01-01T00:00:00.000Z';

/** The value checks pflag runs while parsing (flags.go, pkg/cli/output). Returns an error text or undefined. */
function badValue(major, flags) {
  for (const f of all(flags, 'output')) {
    if (!['table', 'json', 'yaml'].includes(f)) return `invalid argument "${f}" for "-o, --output" flag: invalid format type`;
  }
  for (const t of all(flags, 'timeout')) {
    if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$/.test(t)) return `invalid argument "${t}" for "--timeout" flag: time: invalid duration "${t}"`;
  }
  if (major === 4 && flags.wait !== undefined && !['', 'watcher', 'hookOnly', 'legacy', 'true', 'false'].includes(flags.wait)) {
    return `invalid argument "${flags.wait}" for "--wait" flag: invalid wait input "${flags.wait}". Valid inputs are watcher, hookOnly, and legacy`;
  }
  return undefined;
}

/** The release as `helm status -o json` prints it (pkg/release/v1 Release; v4 adds apply_method). */
function releaseJson(major, r) {
  const [chartName, chartVersion] = /^(.*)-([^-]+)$/.exec(r.chart)?.slice(1) ?? [r.chart, ''];
  return {
    name: r.name,
    info: { first_deployed: r.first_deployed ?? r.updated ?? DEFAULT_DEPLOYED, last_deployed: r.updated ?? DEFAULT_DEPLOYED, deleted: '', description: r.revision > 1 ? 'Upgrade complete' : 'Install complete', status: r.status },
    chart: { metadata: { name: chartName, version: chartVersion, appVersion: r.app_version || undefined, apiVersion: 'v2' } },
    ...(Object.keys(r.values).length ? { config: r.values } : {}),
    manifest: '',
    version: r.revision,
    namespace: r.namespace,
    ...(major === 4 ? { apply_method: 'ssa' } : {}),
  };
}

/**
 * `helm template [NAME] CHART`: needs no cluster. The stand-in renders nothing itself: it prints the
 * scenario's `helm.charts["<repo>|<chart>|<version>"]` (RELEASE-NAME replaced by the release name;
 * the values are not applied), and fails as helm does without a network when the chart is not there.
 */
function template(args, flags, { state, out, err }) {
  const [name, chart] = args.length >= 2 ? args : ['release-name', args[0]];
  const repo = one(flags, 'repo');
  const rendered = state.helm.charts?.[`${repo ?? ''}|${chart}|${one(flags, 'version') ?? ''}`];
  if (rendered === undefined) {
    if (repo) {
      const host = new URL(repo).host;
      err(`Error: looks like "${repo}" is not a valid chart repository or cannot be reached: Get "${repo.replace(/\/$/, '')}/index.yaml": dial tcp: lookup ${host}: no such host\n`);
    } else err(`Error: path "${chart}" not found\n`);
    return 1;
  }
  out(rendered.replaceAll('RELEASE-NAME', name));
  return 0;
}

export default function helm(argv, ctx) {
  const { state, out, err } = ctx;
  const major = helmMajor(state);
  const global = flagTable(GLOBAL[major]);
  const found = commandPath(argv, { ...Object.fromEntries(HELM_COMMANDS.map((c) => [c, {}])), get: Object.fromEntries(GET_SUBCOMMANDS.map((c) => [c, {}])) }, global);
  if (found.unknown !== undefined) {
    err(`Error: unknown command "${found.unknown}" for "helm"\nRun 'helm --help' for usage.\n`);
    return 1;
  }
  const verb = [ALIASES[found.path[0]] ?? found.path[0], ...found.path.slice(1)].join(' ');
  if (!COMMANDS[major][verb]) {
    err(`fake helm: command not played by the stand-in: ${argv.join(' ')}\n`);
    return 2;
  }
  const parsed = parseCommandLine(argv, flagTable(GLOBAL[major], COMMANDS[major][verb]));
  const problem = parsed.error ?? badValue(major, parsed.flags);
  if (problem) {
    err(`Error: ${problem}\n`);
    return 1;
  }
  const { flags } = parsed;
  const args = parsed.positional.slice(found.path.length);
  const ns = one(flags, 'namespace') ?? 'default';
  const output = one(flags, 'output') ?? 'table';
  const releases = state.helm.releases;
  const nsExists = () => Boolean(state.kubectl.objects[`Namespace//${ns}`]);
  // cobra checks the arguments (require.NoArgs, ExactArgs, MinimumNArgs) before the command runs.
  const [arity, usage] = ARITY[verb];
  if (arity === 0 ? args.length > 0 : arity > 0 ? args.length !== arity : args.length < -arity) {
    const what = arity === 0 ? 'accepts no arguments' : `requires ${arity < 0 ? 'at least ' : ''}${Math.abs(arity)} argument${Math.abs(arity) === 1 ? '' : 's'}`;
    err(`Error: "helm ${verb}" ${what}\n\nUsage:  helm ${verb}${usage ? ` ${usage}` : ''} [flags]\n`);
    return 1;
  }

  if (verb === 'version') {
    const [v, shortCommit] = state.helm.version.split('+g');
    const commit = Object.values(HELM_RELEASES).find((r) => r.version === v)?.commit ?? shortCommit ?? '';
    if (flags.short) out(`${state.helm.version}\n`);
    else {
      // go.mod of both pinned tags: go 1.26.0; v4.2.4 builds with client-go v0.36 (KubeClientVersion v1.36).
      out(`version.BuildInfo{Version:"${v}", GitCommit:"${commit}", GitTreeState:"clean", GoVersion:"go1.26.0"${major === 4 ? ', KubeClientVersion:"v1.36"' : ''}}\n`);
    }
    return 0;
  }
  if (verb === 'template') return template(args, flags, ctx);
  const kubeconfig = one(flags, 'kubeconfig');
  const unreachable = `Error: ${major === 4 ? 'kubernetes' : 'Kubernetes'} cluster unreachable: `;
  // Without --kubeconfig, helm reads KUBECONFIG or ~/.kube/config as client-go does (pkg/cli/environment.go).
  const files = kubeconfigFiles(kubeconfig, ctx.env);
  if (kubeconfig && !fs.existsSync(kubeconfig)) {
    err(`${unreachable}stat ${kubeconfig}: no such file or directory\n`);
    return 1;
  }
  if (!files.some((f) => fs.existsSync(f))) {
    err(`${unreachable}Get "http://localhost:8080/version": dial tcp [::1]:8080: connect: connection refused\n`);
    return 1;
  }
  if (!clusterUp(state, files, one(flags, 'kube-context'))) {
    err(`${unreachable}Get "https://127.0.0.1:40123/version": dial tcp 127.0.0.1:40123: connect: connection refused\n`);
    return 1;
  }
  switch (verb) {
    case 'list': {
      const re = new RegExp(one(flags, 'filter') ?? '');
      const chosen = Object.entries(LIST_STATE_FLAGS).filter(([f]) => flags[f]).flatMap(([, states]) => states);
      const shown = flags.all || (chosen.length === 0 && major === 4) ? undefined : chosen.length ? chosen : ['deployed', 'failed'];
      const rows = Object.values(releases)
        .filter((r) => (flags['all-namespaces'] || r.namespace === ns) && re.test(r.name) && (!shown || shown.includes(r.status)))
        .sort((a, b) => a.name.localeCompare(b.name))
        .map((r) => ({ name: r.name, namespace: r.namespace, revision: String(r.revision), updated: goTime(r.updated ?? DEFAULT_DEPLOYED), status: r.status, chart: r.chart, app_version: r.app_version }));
      if (output === 'json') out(`${JSON.stringify(rows)}\n`);
      else if (output === 'yaml') out(YAML.stringify(rows));
      else out(`NAME\tNAMESPACE\tREVISION\tUPDATED\tSTATUS\tCHART\tAPP VERSION\n${rows.map((r) => `${Object.values(r).join('\t')}\n`).join('')}`);
      return 0;
    }
    case 'get values': {
      const r = releases[`${ns}/${args[0]}`];
      if (!r) {
        err('Error: release: not found\n');
        return 1;
      }
      // An empty map of user values is nil in helm: JSON `null`.
      const values = Object.keys(r.values).length ? r.values : null;
      if (output === 'json') out(`${JSON.stringify(values)}\n`);
      else out(`${output === 'table' ? 'USER-SUPPLIED VALUES:\n' : ''}${values ? YAML.stringify(values) : 'null\n'}`);
      return 0;
    }
    case 'status': {
      const r = releases[`${ns}/${args[0]}`];
      if (!r) {
        err('Error: release: not found\n');
        return 1;
      }
      if (output === 'json') out(`${JSON.stringify(releaseJson(major, r))}\n`);
      else out(`NAME: ${r.name}\nNAMESPACE: ${r.namespace}\nSTATUS: ${r.status}\nREVISION: ${r.revision}\n`);
      return 0;
    }
    case 'upgrade': {
      if (!flags.install) {
        err('fake helm: only upgrade --install is played by the stand-in\n');
        return 2;
      }
      const [name, chart] = args;
      if (!nsExists() && !flags['create-namespace']) {
        err(`Error: create: failed to create: namespaces "${ns}" not found\n`);
        return 1;
      }
      state.kubectl.objects[`Namespace//${ns}`] ??= { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } };
      let values = {};
      for (const f of all(flags, 'values').flatMap((v) => v.split(','))) values = merge(values, YAML.parse(fs.readFileSync(f, 'utf8')) ?? {});
      for (const s of [...all(flags, 'set'), ...all(flags, 'set-string')]) setValue(values, s);
      const key = `${ns}/${name}`;
      const old = releases[key];
      const now = new Date().toISOString();
      releases[key] = {
        name,
        namespace: ns,
        revision: (old?.revision ?? 0) + 1,
        status: 'deployed',
        chart: `${chart.split('/').at(-1)}-${one(flags, 'version') ?? '0.0.0'}`,
        app_version: '',
        repo: one(flags, 'repo') ?? '',
        values,
        first_deployed: old?.first_deployed ?? now,
        updated: now,
      };
      out(`${old ? `Release "${name}" has been upgraded.` : `Release "${name}" does not exist. Installing it now.`} Happy Helming!\nNAME: ${name}\nNAMESPACE: ${ns}\nSTATUS: deployed\nREVISION: ${releases[key].revision}\n`);
      return 0;
    }
    case 'uninstall': {
      for (const name of args) {
        const key = `${ns}/${name}`;
        if (!releases[key]) {
          if (flags['ignore-not-found']) continue;
          err(`Error: uninstall: Release not loaded: ${name}: release: not found\n`);
          return 1;
        }
        delete releases[key];
        out(`release "${name}" uninstalled\n`);
      }
      return 0;
    }
    default:
      err(`fake helm: command not played by the stand-in: ${argv.join(' ')}\n`);
      return 2;
  }
}
