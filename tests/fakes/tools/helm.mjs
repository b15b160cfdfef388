// Stand-in `helm`: releases kept in state.helm.releases, keyed "namespace/name".
import fs from 'node:fs';
import YAML from 'yaml';
import { all, one, parseArgs } from '../common.mjs';

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

export default function helm(argv, ctx) {
  const { state, out, err } = ctx;
  const { flags, positional } = parseArgs(argv, [
    '--kubeconfig', '-n', '--namespace', '-o', '--output', '--filter', '--repo', '--version', '-f', '--values', '--set',
    '--set-string', '--timeout', '--kube-context',
  ]);
  const [verb, ...words] = positional;
  const ns = one(flags, '-n', '--namespace') ?? 'default';
  const releases = state.helm.releases;
  const nsExists = () => Boolean(state.kubectl.objects[`Namespace//${ns}`]);
  if (verb === 'version') {
    out(`${state.helm.version}\n`);
    return 0;
  }
  if (!one(flags, '--kubeconfig') || !fs.existsSync(one(flags, '--kubeconfig'))) {
    err('Error: Kubernetes cluster unreachable: Get "http://localhost:8080/version": dial tcp [::1]:8080: connect: connection refused\n');
    return 1;
  }
  switch (verb) {
    case 'list': {
      const re = new RegExp(one(flags, '--filter') ?? '.*');
      const rows = Object.values(releases)
        .filter((r) => r.namespace === ns && re.test(r.name))
        .map(({ name, namespace, revision, status, chart, app_version }) => ({ name, namespace, revision: String(revision), status, chart, app_version }));
      out(`${JSON.stringify(rows)}\n`);
      return 0;
    }
    case 'get': {
      const r = releases[`${ns}/${words[1]}`];
      if (!r) {
        err('Error: release: not found\n');
        return 1;
      }
      out(`${JSON.stringify(Object.keys(r.values).length ? r.values : null)}\n`);
      return 0;
    }
    case 'status': {
      const r = releases[`${ns}/${words[0]}`];
      if (!r) {
        err('Error: release: not found\n');
        return 1;
      }
      out(`${JSON.stringify({ name: r.name, namespace: r.namespace, version: r.revision, info: { status: r.status } })}\n`);
      return 0;
    }
    case 'upgrade': {
      if (!flags['--install'] && !flags['-i']) {
        err('fake helm: only upgrade --install is supported\n');
        return 2;
      }
      const [name, chart] = words;
      if (!nsExists() && !flags['--create-namespace']) {
        err(`Error: create: failed to create: namespaces "${ns}" not found\n`);
        return 1;
      }
      state.kubectl.objects[`Namespace//${ns}`] ??= { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } };
      let values = {};
      for (const f of all(flags, '-f', '--values')) values = merge(values, YAML.parse(fs.readFileSync(f, 'utf8')) ?? {});
      for (const s of all(flags, '--set', '--set-string')) setValue(values, s);
      const key = `${ns}/${name}`;
      const old = releases[key];
      const chartName = chart.split('/').at(-1);
      releases[key] = {
        name,
        namespace: ns,
        revision: (old?.revision ?? 0) + 1,
        status: 'deployed',
        chart: `${chartName}-${one(flags, '--version') ?? '0.0.0'}`,
        app_version: '',
        repo: one(flags, '--repo') ?? '',
        values,
      };
      out(`${old ? `Release "${name}" has been upgraded.` : `Release "${name}" does not exist. Installing it now.`} Happy Helming!\nNAME: ${name}\nNAMESPACE: ${ns}\nSTATUS: deployed\nREVISION: ${releases[key].revision}\n`);
      return 0;
    }
    case 'uninstall': {
      const key = `${ns}/${words[0]}`;
      if (!releases[key]) {
        if (flags['--ignore-not-found']) return 0;
        err(`Error: uninstall: Release not loaded: ${words[0]}: release: not found\n`);
        return 1;
      }
      delete releases[key];
      out(`release "${words[0]}" uninstalled\n`);
      return 0;
    }
    default:
      err(`fake helm: unsupported command: ${argv.join(' ')}\n`);
      return 2;
  }
}
