// `task status`: one line per component (cluster, storage, each Helm release — traefik, prometheus,
// loki, tempo, k8s-monitoring, grafana; with INGRESS_CLASS an "ingress" line for the cluster's
// IngressClass and our Ingresses instead of traefik's —, Alertmanager (the prometheus release's StatefulSet), the sample
// app, and each app `task app` deployed, from STATE_DIR/apps/*.json) with its state and version, read
// from kubectl and helm. Changes nothing. Exit code 0 when every component is ok, 1 otherwise.
//
// .env keys: STATE_DIR (kubeconfig, app records, installed.log), CLUSTER_NAME (messages), CLUSTER,
//   KUBECONFIG, KUBE_CONTEXT (with CLUSTER=existing: the context, printed first), INGRESS_CLASS.
// Tools: kubectl (get nodes, deployments, statefulsets, pods; ingressclasses and ingresses with
//   INGRESS_CLASS), helm 3.17+ or 4 (list).
import fs from 'node:fs';
import kleur from 'kleur';
import { type Config, HELM_LIST_EVERY_STATE, PINNED, TEMPO, appRecords, helm, installedRecord, isMain, kubeconfigPath, kubectl, loadConfig, targetLine } from './lib.ts';

export type State = 'ok' | 'degraded' | 'down' | 'missing';
export interface ComponentStatus {
  name: string;
  state: State;
  version: string;
  detail: string;
}

interface KObject {
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: any;
  status?: any;
}

/** Helm releases and their namespaces (the contract between phases). */
export const RELEASES = [
  { release: 'traefik', namespace: 'traefik', chart: PINNED.charts.traefik },
  { release: 'prometheus', namespace: 'monitoring', chart: PINNED.charts.prometheus },
  { release: 'loki', namespace: 'monitoring', chart: PINNED.charts.loki },
  { release: TEMPO.release, namespace: TEMPO.namespace, chart: PINNED.charts.tempo },
  { release: 'k8s-monitoring', namespace: 'monitoring', chart: PINNED.charts.k8sMonitoring },
  { release: 'grafana', namespace: 'monitoring', chart: PINNED.charts.grafana },
] as const;


const isReady = (o: KObject) => (o.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
const imageTag = (d: KObject | undefined) => String(d?.spec?.template?.spec?.containers?.[0]?.image ?? '').split(':').at(-1) || 'unknown';

export function clusterStatus(nodes: KObject[]): ComponentStatus {
  const ready = nodes.filter(isReady).length;
  const versions = [...new Set(nodes.map((n) => n.status?.nodeInfo?.kubeletVersion).filter(Boolean))];
  const os = [...new Set(nodes.map((n) => /Talos \((v[\d.]+)\)/.exec(n.status?.nodeInfo?.osImage ?? '')?.[1]).filter(Boolean))];
  return {
    name: 'cluster',
    state: nodes.length === 0 ? 'down' : ready === nodes.length ? 'ok' : 'degraded',
    version: [`Kubernetes ${versions.join(', ') || 'unknown'}`, ...(os.length ? [`Talos ${os.join(', ')}`] : [])].join(', '),
    detail: `${ready}/${nodes.length} nodes Ready`,
  };
}

/** Alertmanager: the StatefulSet of the prometheus chart's alertmanager subchart (contract). */
export const ALERTMANAGER = { namespace: 'monitoring', statefulSet: 'prometheus-alertmanager' } as const;

/** A Deployment's or StatefulSet's line: ready replicas against wanted ones, version from the image tag. */
export function workloadStatus(name: string, d: KObject | undefined, missingHint: string): ComponentStatus {
  if (!d) return { name, state: 'missing', version: '-', detail: missingHint };
  const want = d.spec?.replicas ?? 1;
  const ready = d.status?.readyReplicas ?? 0;
  return { name, state: ready >= want && want > 0 ? 'ok' : ready > 0 ? 'degraded' : 'down', version: imageTag(d), detail: `${ready}/${want} replicas ready` };
}

/** A release's line from `helm list -o json` and the pods labelled app.kubernetes.io/instance=<release>[-…]. */
export function releaseStatus(
  spec: (typeof RELEASES)[number],
  listed: { name: string; status: string; chart: string; app_version?: string }[],
  pods: KObject[],
): ComponentStatus {
  const r = listed.find((x) => x.name === spec.release);
  if (!r) return { name: spec.release, state: 'missing', version: '-', detail: `not installed in ${spec.namespace} (run the phase that installs it)` };
  const mine = pods.filter((p) => {
    const inst = p.metadata.labels?.['app.kubernetes.io/instance'] ?? '';
    return p.status?.phase !== 'Succeeded' && (inst === spec.release || inst.startsWith(`${spec.release}-`));
  });
  const ready = mine.filter(isReady).length;
  const want = `${spec.chart.chart}-${spec.chart.version}`;
  const version = `${r.chart}${r.app_version ? ` (app ${r.app_version})` : ''}${r.chart === want ? '' : `, pinned ${want}`}`;
  // A deployed release with no pods of its own is not working (every chart here runs at least one).
  const state: State = r.status !== 'deployed' ? 'down' : mine.length === 0 || ready < mine.length ? 'degraded' : 'ok';
  return { name: spec.release, state, version, detail: `${r.status}, ${ready}/${mine.length} pods Ready` };
}

/**
 * With INGRESS_CLASS, the ingress row in the place of Traefik's release: the cluster's IngressClass
 * (its controller as the version), our Ingresses of that class in monitoring and the address the
 * controller published on them (none is not an error: some controllers publish none).
 */
export function ingressClassStatus(className: string, classes: KObject[], ingresses: KObject[]): ComponentStatus {
  const name = 'ingress';
  const found = classes.find((c) => c.metadata.name === className);
  if (!found) return { name, state: 'missing', version: '-', detail: `IngressClass ${className} (INGRESS_CLASS) not found: is its controller installed?` };
  const version = `IngressClass ${className} (controller ${found.spec?.controller ?? 'unknown'})`;
  const ours = ingresses.filter((i) => i.spec?.ingressClassName === className && i.metadata.labels?.['app.kubernetes.io/part-of'] === 'talos-local-observability');
  if (ours.length === 0) return { name, state: 'missing', version, detail: 'no Ingress of ours in monitoring: run `task traefik`' };
  const lb = ours.map((i) => i.status?.loadBalancer?.ingress?.[0]).find((a) => a?.ip || a?.hostname);
  return { name, state: 'ok', version, detail: `${ours.length} Ingresses of ours (${ours.map((i) => i.metadata.name).join(', ')}), ${lb ? `address ${lb.ip || lb.hostname}` : 'no address published yet (`task endpoints`)'}` };
}

export function formatStatus(list: ComponentStatus[]): string[] {
  const w = Math.max(...list.map((c) => c.name.length));
  const color = { ok: kleur.green, degraded: kleur.yellow, down: kleur.red, missing: kleur.red };
  const sw = Math.max(...list.map((c) => c.state.length));
  return list.map((c) => `${c.name.padEnd(w)}  ${color[c.state](c.state.padEnd(sw))}  ${c.version}  ${kleur.gray(c.detail)}`);
}

async function collect(cfg: Config): Promise<ComponentStatus[]> {
  const apps = appRecords(cfg).filter((a) => a.name !== 'sample-app');
  // With INGRESS_CLASS the cluster's own ingress controller takes the place of Traefik's release.
  const releases = RELEASES.filter((r) => !(cfg.INGRESS_CLASS && r.release === 'traefik'));
  const names = ['cluster', 'storage', ...(cfg.INGRESS_CLASS ? ['ingress'] : []), ...releases.map((r) => r.release), 'alertmanager', 'app', ...apps.map((a) => `app ${a.name}`)];
  const downAll = (why: string) => names.map((name, i) => ({ name, state: 'down' as State, version: '-', detail: i === 0 ? why : 'cluster not reachable' }));
  if (cfg.CLUSTER === 'talos' && !fs.existsSync(kubeconfigPath(cfg))) return downAll(`no cluster "${cfg.CLUSTER_NAME}" (no ${kubeconfigPath(cfg)}): run \`task talos\``);
  const items = async (args: string[]) => JSON.parse((await kubectl(cfg, [...args, '-o', 'json'])).stdout).items as KObject[];
  let nodes: KObject[];
  try {
    nodes = await items(['get', 'nodes']);
  } catch (err) {
    return downAll(`not reachable: ${(err as Error).message.split('\n').slice(1).join(' ').trim() || (err as Error).message}`);
  }
  const out = [clusterStatus(nodes)];
  const deployment = async (ns: string, name: string) => (await items(['get', 'deployments', '--namespace', ns])).find((d) => d.metadata.name === name);
  const installed = installedRecord(cfg);
  if (installed.localPath === false && installed.storageClass) {
    // CLUSTER=existing with a default StorageClass of its own: the storage phase installed nothing.
    const classes = await items(['get', 'storageclasses']);
    const found = classes.some((c) => c.metadata.name === installed.storageClass);
    out.push({ name: 'storage', state: found ? 'ok' : 'missing', version: '-', detail: `the cluster's default StorageClass ${installed.storageClass}${found ? '' : ' is gone: run `task storage`'}` });
  } else {
    out.push(workloadStatus('storage', await deployment('local-path-storage', 'local-path-provisioner'), 'local-path-provisioner not installed: run `task storage`'));
  }
  const listed: Record<string, any[]> = {};
  const pods: Record<string, KObject[]> = {};
  if (cfg.INGRESS_CLASS) {
    const read = await items(['get', 'ingressclasses,ingresses', '--namespace', 'monitoring']);
    out.push(ingressClassStatus(cfg.INGRESS_CLASS, read.filter((o) => o.kind === 'IngressClass'), read.filter((o) => o.kind === 'Ingress')));
  }
  for (const ns of [...new Set(releases.map((r) => r.namespace))]) {
    listed[ns] = JSON.parse((await helm(cfg, ['list', '--namespace', ns, ...HELM_LIST_EVERY_STATE, '--output', 'json'])).stdout || '[]');
    pods[ns] = await items(['get', 'pods', '--namespace', ns]);
  }
  for (const spec of releases) out.push(releaseStatus(spec, listed[spec.namespace], pods[spec.namespace]));
  const alertmanager = (await items(['get', 'statefulsets', '--namespace', ALERTMANAGER.namespace])).find((o) => o.metadata.name === ALERTMANAGER.statefulSet);
  out.push(workloadStatus('alertmanager', alertmanager, `StatefulSet ${ALERTMANAGER.statefulSet} not found: run \`task observability\``));
  const app = workloadStatus('app', await deployment('sample-app', 'sample-app'), 'sample app not deployed: run `task sample-app`');
  const traffic = await deployment('sample-app', 'sample-app-traffic');
  out.push({ ...app, detail: `${app.detail}; traffic generator ${traffic ? `${traffic.status?.readyReplicas ?? 0}/${traffic.spec?.replicas ?? 1} ready` : 'off'}` });
  for (const a of apps) {
    const line = workloadStatus(`app ${a.name}`, await deployment(a.namespace, a.name), `recorded but not in the cluster: \`task app\` again, or \`task app -- --remove ${a.name}\``);
    out.push({ ...line, detail: `${line.detail}; https://${a.host}` });
  }
  return out;
}

if (isMain(import.meta.url)) {
  if (process.env.NO_COLOR) kleur.enabled = false;
  try {
    const cfg = loadConfig();
    // With CLUSTER=existing, which cluster the rows are of comes first.
    if (cfg.CLUSTER === 'existing') console.log(targetLine(cfg));
    const list = await collect(cfg);
    console.log(formatStatus(list).join('\n'));
    process.exitCode = list.every((c) => c.state === 'ok') ? 0 : 1;
  } catch (err) {
    console.error(kleur.red(`✗ status: ${(err as Error).message}`));
    process.exitCode = 1;
  }
}
