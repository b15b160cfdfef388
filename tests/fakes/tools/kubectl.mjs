// Stand-in `kubectl`: answers from the Talos node containers (nodes) and an object store of
// whatever was applied (state.kubectl.objects, keyed "Kind/namespace/name").
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import YAML from 'yaml';
import { commandPath, flagTable, one, parseCommandLine } from '../common.mjs';

/**
 * The flags of kubectl v1.31.9 (the oldest supported kubectl; `kubectl options` and
 * `kubectl <command> --help` of the real binary) for the commands the phases use. Later versions up
 * to v1.36 only add flags (e.g. diff --show-secrets, apply --subresource): a flag missing here is one
 * a supported kubectl rejects.
 */
const FLAGS_1_31 = {
  global: 'as= as-group= as-uid= cache-dir= certificate-authority= client-certificate= client-key= cluster= context= disable-compression ' +
    'insecure-skip-tls-verify kubeconfig= log-flush-frequency= match-server-version n/namespace= password= profile= profile-output= ' +
    'request-timeout= s/server= tls-server-name= token= user= username= v/v= vmodule= warnings-as-errors h/help',
  get: 'A/all-namespaces allow-missing-template-keys chunk-size= field-selector= f/filename= ignore-not-found k/kustomize= L/label-columns= ' +
    'no-headers o/output= output-watch-events raw= R/recursive l/selector= server-print show-kind show-labels show-managed-fields sort-by= ' +
    'subresource= template= w/watch watch-only',
  wait: 'all A/all-namespaces allow-missing-template-keys field-selector= f/filename= for= local o/output= R/recursive l/selector= show-managed-fields template= timeout=',
  diff: 'concurrency= field-manager= f/filename= force-conflicts k/kustomize= prune prune-allowlist= R/recursive l/selector= server-side show-managed-fields',
  apply: 'all allow-missing-template-keys cascade= dry-run= field-manager= f/filename= force force-conflicts grace-period= k/kustomize= openapi-patch ' +
    'o/output= overwrite prune prune-allowlist= R/recursive l/selector= server-side show-managed-fields template= timeout= validate= wait',
  delete: 'all A/all-namespaces cascade= dry-run= field-selector= f/filename= force grace-period= ignore-not-found i/interactive k/kustomize= now ' +
    'o/output= raw= R/recursive l/selector= timeout= wait',
  'rollout status': 'f/filename= k/kustomize= R/recursive revision= l/selector= timeout= w/watch',
  logs: 'all-containers all-pods c/container= f/follow ignore-errors insecure-skip-tls-verify-backend limit-bytes= max-log-requests= ' +
    'pod-running-timeout= prefix p/previous l/selector= since= since-time= tail= timestamps',
  describe: 'A/all-namespaces chunk-size= f/filename= k/kustomize= R/recursive l/selector= show-events',
  version: 'client o/output=',
  'port-forward': 'address= pod-running-timeout=',
  kustomize: 'as-current-user enable-alpha-plugins enable-helm e/env= helm-api-versions= helm-command= helm-kube-version= load-restrictor= mount= ' +
    'network network-name= o/output=',
};
const GLOBAL_TABLE = flagTable(FLAGS_1_31.global);

/** kubectl's top-level commands (v1.31), for "unknown command" versus "not played by the stand-in". */
const KUBECTL_COMMANDS = ['alpha', 'annotate', 'api-resources', 'api-versions', 'apply', 'attach', 'auth', 'autoscale', 'certificate', 'cluster-info',
  'completion', 'config', 'cordon', 'cp', 'create', 'debug', 'delete', 'describe', 'diff', 'drain', 'edit', 'events', 'exec', 'explain', 'expose',
  'get', 'help', 'kustomize', 'label', 'logs', 'options', 'patch', 'plugin', 'port-forward', 'proxy', 'replace', 'rollout', 'run', 'scale', 'set',
  'taint', 'top', 'uncordon', 'version', 'wait'];
const ROLLOUT_COMMANDS = ['history', 'pause', 'restart', 'resume', 'status', 'undo'];

/** Kustomize bundled with each kubectl minor (go.mod of k8s.io/kubectl v0.31 to v0.36). */
const KUSTOMIZE = { 31: 'v5.4.2', 32: 'v5.5.0', 33: 'v5.6.0', 34: 'v5.7.1', 35: 'v5.7.1', 36: 'v5.8.1' };


/** Namespaces every cluster has. */
const BUILTIN_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

const CLUSTER_SCOPED = new Set(['Namespace', 'Node', 'StorageClass', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'PersistentVolume', 'IngressClass']);

/** Kind names as kubectl accepts them on the command line. */
const KIND_ALIASES = {
  ns: 'Namespace', namespace: 'Namespace', namespaces: 'Namespace',
  node: 'Node', nodes: 'Node', no: 'Node',
  pod: 'Pod', pods: 'Pod', po: 'Pod',
  svc: 'Service', service: 'Service', services: 'Service',
  deploy: 'Deployment', deployment: 'Deployment', deployments: 'Deployment',
  ds: 'DaemonSet', daemonset: 'DaemonSet', daemonsets: 'DaemonSet',
  sts: 'StatefulSet', statefulset: 'StatefulSet', statefulsets: 'StatefulSet',
  pvc: 'PersistentVolumeClaim', persistentvolumeclaim: 'PersistentVolumeClaim', persistentvolumeclaims: 'PersistentVolumeClaim',
  pv: 'PersistentVolume', persistentvolume: 'PersistentVolume', persistentvolumes: 'PersistentVolume',
  sc: 'StorageClass', storageclass: 'StorageClass', storageclasses: 'StorageClass',
  secret: 'Secret', secrets: 'Secret', configmap: 'ConfigMap', configmaps: 'ConfigMap', cm: 'ConfigMap',
  ingressroute: 'IngressRoute', ingressroutes: 'IngressRoute',
  ingress: 'Ingress', ingresses: 'Ingress', ing: 'Ingress',
  ingressclass: 'IngressClass', ingressclasses: 'IngressClass',
  tlsstore: 'TLSStore', tlsstores: 'TLSStore', middleware: 'Middleware', middlewares: 'Middleware',
  events: 'Event', event: 'Event',
  alloy: 'Alloy', alloys: 'Alloy',
  crd: 'CustomResourceDefinition', crds: 'CustomResourceDefinition',
  customresourcedefinition: 'CustomResourceDefinition', customresourcedefinitions: 'CustomResourceDefinition',
};
/** API groups of the kinds the phases use (core kinds have none). */
const GROUP_OF = {
  Deployment: 'apps', DaemonSet: 'apps', StatefulSet: 'apps', ReplicaSet: 'apps',
  StorageClass: 'storage.k8s.io', CustomResourceDefinition: 'apiextensions.k8s.io',
  ClusterRole: 'rbac.authorization.k8s.io', ClusterRoleBinding: 'rbac.authorization.k8s.io', Role: 'rbac.authorization.k8s.io', RoleBinding: 'rbac.authorization.k8s.io',
  IngressRoute: 'traefik.io', TLSStore: 'traefik.io', Middleware: 'traefik.io', Alloy: 'collectors.grafana.com',
  Ingress: 'networking.k8s.io', IngressClass: 'networking.k8s.io',
};
/**
 * The qualified resource the API server names in a NotFound (apimachinery errors.NewNotFound:
 * `<resource>.<group> "<name>" not found`), for the kinds whose answer a phase reads; the others
 * answer with the word the call used.
 */
const NOT_FOUND_RESOURCE = { IngressClass: 'ingressclasses.networking.k8s.io', Ingress: 'ingresses.networking.k8s.io' };

/**
 * An Ingress as the API server shows it once its class's controller has admitted it: the scenario's
 * state.kubectl.ingressControllers[<class>] = {ip} or {hostname} is the address that controller
 * publishes in status.loadBalancer.ingress; without it (no controller, or none yet) no status.
 */
function withIngressStatus(state, o) {
  if (o.kind !== 'Ingress' || o.status) return o;
  const address = state.kubectl.ingressControllers?.[o.spec?.ingressClassName];
  return address ? { ...o, status: { loadBalancer: { ingress: [address] } } } : { ...o, status: { loadBalancer: {} } };
}
/** How kubectl names an object's type in its messages (cli-runtime's name printer): "deployment.apps", "configmap". */
const typeName = (kind, apiVersion) => {
  const group = apiVersion ? (apiVersion.includes('/') ? apiVersion.split('/')[0] : '') : GROUP_OF[kind] ?? '';
  return group ? `${kind.toLowerCase()}.${group}` : kind.toLowerCase();
};

export const kindOf = (word) => KIND_ALIASES[word.toLowerCase()] ?? KIND_ALIASES[word.toLowerCase().split('.')[0]] ?? word;

export const objectKey = (o, defaultNs = 'default') =>
  `${o.kind}/${CLUSTER_SCOPED.has(o.kind) ? '' : o.metadata?.namespace ?? defaultNs}/${o.metadata?.name}`;

/**
 * The kubeconfig files a call reads, as client-go finds them: --kubeconfig (one file), else the
 * KUBECONFIG environment variable (a ":"-separated list), else ~/.kube/config.
 */
export const kubeconfigFiles = (flagValue, env) =>
  (flagValue ? [flagValue] : env.KUBECONFIG ? env.KUBECONFIG.split(':').filter(Boolean) : [path.join(env.HOME ?? '', '.kube', 'config')]);

/**
 * The context and server a call goes to: --context (kubectl) or --kube-context (helm), else the
 * current context, merged over the files as client-go merges them (the first file that sets a
 * value or defines a name wins; missing files are skipped). undefined when there is none.
 */
export function callTarget(files, context) {
  const configs = files.filter((f) => fs.existsSync(f)).map((f) => YAML.parse(fs.readFileSync(f, 'utf8')) ?? {});
  const first = (pick) => configs.map(pick).find((v) => v !== undefined && v !== '');
  const name = context || first((c) => c['current-context']);
  const ctx = name && first((c) => c.contexts?.find((x) => x.name === name));
  if (!ctx) return undefined;
  const server = first((c) => c.clusters?.find((x) => x.name === ctx.context?.cluster))?.cluster?.server ?? '';
  return { context: name, server };
}

/**
 * Whether the cluster a call names answers: a Talos cluster of the stand-in talosctl (context
 * admin@<name>) when its control-plane container runs, or a cluster of the scenario's
 * `kubectl.existingClusters` (keyed by API server URL: a kind, k3d or team cluster) by its server.
 */
export function clusterUp(state, files, context) {
  const target = callTarget([].concat(files ?? []), context);
  if (!target) return false;
  if (state.kubectl.existingClusters?.[target.server]) return true;
  const cluster = target.context.replace(/^admin@/, '');
  return state.docker.running && state.docker.containers[`${cluster}-controlplane-1`]?.state === 'running';
}

export function nodes(state) {
  // An existing cluster's nodes as a scenario gives them (providerID, labels: kind, k3d, a cloud).
  if (state.kubectl.nodes) return state.kubectl.nodes;
  // The nodes of a scenario's existing cluster: names, each Ready.
  const existing = Object.values(state.kubectl.existingClusters ?? {}).flatMap((c) => c.nodes ?? []).map((name) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: {} },
    status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }], nodeInfo: { kubeletVersion: 'v1.36.3' }, addresses: [] },
  }));
  return [...existing, ...Object.values(state.docker.containers)
    .filter((c) => c.labels['talos.owned'] === 'true' && c.state === 'running')
    .map((c) => {
      const ready = !state.kubectl.notReadyNodes.includes(c.name);
      return {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: {
          name: c.name,
          labels: c.labels['talos.type'] === 'controlplane' ? { 'node-role.kubernetes.io/control-plane': '' } : {},
        },
        status: {
          conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', reason: ready ? 'KubeletReady' : 'KubeletNotReady' }],
          nodeInfo: { kubeletVersion: `v${c.meta?.kubernetesVersion ?? '1.36.3'}` },
          addresses: [{ type: 'InternalIP', address: Object.values(c.networks)[0]?.ip }],
        },
      };
    })];
}

function readDocs(ctx, file) {
  const text = file === '-' ? ctx.stdin() : fs.readFileSync(file, 'utf8');
  return YAML.parseAllDocuments(text)
    .map((d) => d.toJSON())
    .filter(Boolean)
    .flatMap((d) => (d.kind === 'List' ? d.items : [d]));
}

/** Kinds whose controller rolls out a pod template (what `kubectl rollout status` waits for). */
const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet']);

/**
 * A workload as the API server shows it, its controller done with every generation `kubectl rollout
 * status` waited for: metadata.generation counts the applies that changed it
 * (state.kubectl.generations[key], 1 when never applied), status.observedGeneration is the generation
 * rollout status last saw (state.kubectl.observed[key]; a workload never applied counts as rolled
 * out). A status the object carries (a scenario's) is shown as it is.
 */
function withController(state, o) {
  if (!WORKLOAD_KINDS.has(o.kind) || o.status) return o;
  const key = objectKey(o);
  const generation = state.kubectl.generations?.[key] ?? 1;
  const observedGeneration = state.kubectl.generations?.[key] ? state.kubectl.observed?.[key] ?? 0 : 1;
  const done = observedGeneration >= generation;
  const replicas = o.kind === 'DaemonSet' ? nodes(state).length : o.spec?.replicas ?? 1;
  const updated = done ? replicas : 0;
  const status = o.kind === 'DaemonSet'
    ? { observedGeneration, desiredNumberScheduled: replicas, currentNumberScheduled: replicas, updatedNumberScheduled: updated, numberAvailable: replicas, numberReady: replicas }
    : o.kind === 'StatefulSet'
      ? { observedGeneration, replicas, readyReplicas: replicas, availableReplicas: replicas, updatedReplicas: updated, currentReplicas: updated, currentRevision: `${o.metadata.name}-${done ? generation : observedGeneration}`, updateRevision: `${o.metadata.name}-${generation}` }
      : { observedGeneration, replicas, readyReplicas: replicas, availableReplicas: replicas, updatedReplicas: updated };
  return { ...o, metadata: { ...o.metadata, generation }, status };
}

function list(state, kind, ns) {
  if (kind === 'Node') return nodes(state);
  return Object.entries(state.kubectl.objects)
    .filter(([k]) => k.startsWith(`${kind}/`) && (ns === undefined || CLUSTER_SCOPED.has(kind) || k.split('/')[1] === ns))
    .map(([, o]) => o);
}

/**
 * Stand-in upstream files that `kubectl kustomize` would download: state.kubectl.remoteFiles
 * ({url: yamlText}) first, then a hand-written miniature of the local-path-provisioner release.
 */
function remoteFile(state, url) {
  if (state.kubectl.remoteFiles?.[url] !== undefined) return state.kubectl.remoteFiles[url];
  const lpp = /rancher\/local-path-provisioner\/(v[\d.]+)\/deploy\/local-path-storage\.yaml$/.exec(url);
  if (!lpp) return undefined;
  const ns = 'local-path-storage';
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } },
    {
      apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'local-path-provisioner', namespace: ns },
      spec: { selector: { matchLabels: { app: 'local-path-provisioner' } }, template: { metadata: { labels: { app: 'local-path-provisioner' } },
        spec: { containers: [{ name: 'local-path-provisioner', image: `docker.io/rancher/local-path-provisioner:${lpp[1]}` }] } } },
    },
    { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'local-path' }, provisioner: 'rancher.io/local-path', volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete' },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'local-path-config', namespace: ns }, data: { 'config.json': '{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/local-path-provisioner"]}]}', setup: '#!/bin/sh' } },
  ].map((o) => YAML.stringify(o)).join('---\n');
}

/**
 * `kubectl kustomize <dir>`: resources (local files or URLs) with strategic-merge patches: maps merge,
 * lists of named items (containers, volumes, env: patchMergeKey "name") merge item by item, other
 * values are replaced.
 */
function kustomize(dir, ctx) {
  const { state, out, err } = ctx;
  const kfile = path.join(dir, 'kustomization.yaml');
  if (!fs.existsSync(kfile)) {
    err(`error: unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '${dir}'\n`);
    return 1;
  }
  const k = YAML.parse(fs.readFileSync(kfile, 'utf8'));
  const docs = [];
  for (const r of k.resources ?? []) {
    const text = /^https?:\/\//.test(r) ? remoteFile(state, r) : fs.readFileSync(path.join(dir, r), 'utf8');
    if (text === undefined) {
      err(`error: accumulating resources: accumulating resources from '${r}': HTTP Error: status code 404 (Not Found)\n`);
      return 1;
    }
    docs.push(...YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean));
  }
  const isMap = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const named = (v) => Array.isArray(v) && v.length > 0 && v.every((x) => isMap(x) && typeof x.name === 'string');
  const mergeNamed = (a, b) => [
    ...a.map((x) => { const p = b.find((y) => y.name === x.name); return p ? merge(x, p) : x; }),
    ...b.filter((y) => !a.some((x) => x.name === y.name)),
  ];
  const merge = (a, b) => {
    const o = { ...a };
    for (const [key, v] of Object.entries(b)) {
      o[key] = isMap(v) && isMap(o[key]) ? merge(o[key], v) : named(v) && named(o[key]) ? mergeNamed(o[key], v) : v;
    }
    return o;
  };
  for (const p of k.patches ?? []) {
    const patch = YAML.parse(fs.readFileSync(path.join(dir, p.path), 'utf8'));
    const i = docs.findIndex((d) => d.kind === patch.kind && d.metadata?.name === patch.metadata?.name);
    if (i < 0) {
      err(`error: no resource matches strategic merge patch "${patch.kind}.${patch.metadata?.name}"\n`);
      return 1;
    }
    docs[i] = merge(docs[i], patch);
  }
  out(docs.map((d) => YAML.stringify(d)).join('---\n'));
  return 0;
}

/** `kubectl version`: the client's version (and the server's, without --client), in kubectl's formats. */
function version(state, flags, ctx) {
  const { out, err } = ctx;
  const gitVersion = state.kubectl.version;
  const [major, minor] = gitVersion.replace(/^v/, '').split('.');
  const clientVersion = { major, minor, gitVersion, gitCommit: '0000000000000000000000000000000000000000', gitTreeState: 'clean', buildDate: '2026-01-01T00:00:00Z', goVersion: 'go1.26.0', compiler: 'gc', platform: 'linux/amd64' };
  const answer = { clientVersion, kustomizeVersion: KUSTOMIZE[Number(minor)] ?? 'v5.8.1' };
  const output = one(flags, 'output');
  if (output !== undefined && !['json', 'yaml'].includes(output)) {
    err("error: --output must be 'yaml' or 'json'\n");
    return 1;
  }
  const serverUp = !flags.client && clusterUp(state, kubeconfigFiles(one(flags, 'kubeconfig'), ctx.env), one(flags, 'context'));
  if (serverUp) answer.serverVersion = { ...clientVersion, gitVersion: nodes(state)[0]?.status.nodeInfo.kubeletVersion ?? 'v1.36.3' };
  if (output === 'json') out(`${JSON.stringify(answer, null, 2)}\n`);
  else if (output === 'yaml') out(YAML.stringify(answer));
  else out(`Client Version: ${gitVersion}\nKustomize Version: ${answer.kustomizeVersion}\n${serverUp ? `Server Version: ${answer.serverVersion.gitVersion}\n` : ''}`);
  if (flags.client || serverUp) return 0;
  err('The connection to the server 127.0.0.1:40123 was refused - did you specify the right host or port?\n');
  return 1;
}

/**
 * Why the kubelet has no log for a container (kubelet_pods.go validateContainerLogStatus), or
 * undefined when it has one: a running or terminated container, or one that ran before.
 */
function noLogReason(pod, status) {
  const { waiting, running, terminated } = status.state ?? {};
  if (running || terminated || status.lastState?.terminated) return undefined;
  const where = `container "${status.name}" in pod "${pod.metadata.name}"`;
  if (!waiting) return `${where} is waiting to start - no logs yet`;
  const why = { ErrImagePull: "image can't be pulled", ImagePullBackOff: 'trying and failing to pull image' }[waiting.reason] ?? waiting.reason;
  return `${where} is waiting to start: ${why}`;
}

/** What `kubectl port-forward` serves once the state lock is released (afterLock), set by the handler. */
let forwarding;

/**
 * `kubectl port-forward TYPE/NAME [LOCAL]:REMOTE` (one port): checks the object and port as the
 * real one does, under the lock; the forward itself runs in afterLock. Where the forwarded pod
 * answers is the scenario's state.kubectl.portForward["Kind/namespace/name"] = {host, port,
 * containerPort} (a test's server); without it, no pod runs.
 */
function portForward(words, flags, ctx) {
  const { state, err } = ctx;
  const [resource, ...specs] = words;
  if (!resource || specs.length === 0) {
    err("error: TYPE/NAME and list of ports are required for port-forward\nSee 'kubectl port-forward -h' for help and examples\n");
    return 1;
  }
  const [kindWord, name] = resource.includes('/') ? resource.split('/') : ['pod', resource];
  const kind = kindOf(kindWord);
  const namespace = one(flags, 'namespace') ?? 'default';
  const key = `${kind}/${namespace}/${name}`;
  const object = state.kubectl.objects[key];
  if (!object) {
    err(`Error from server (NotFound): ${kind.toLowerCase()}s "${name}" not found\n`);
    return 1;
  }
  const [localText, remoteText] = specs[0].includes(':') ? specs[0].split(':') : [specs[0], specs[0]];
  let remote = remoteText;
  if (kind === 'Service') {
    // translateServicePortToTargetPort: a port by name or number of the Service, then its targetPort.
    const port = (object.spec?.ports ?? []).find((p) => p.name === remoteText || String(p.port) === remoteText);
    if (!port) {
      err(/^\d+$/.test(remoteText) ? `error: Service ${name} does not have a service port ${remoteText}\n` : `error: Service '${name}' does not have a named port '${remoteText}'\n`);
      return 1;
    }
    remote = String(port.targetPort ?? port.port);
  }
  const backend = state.kubectl.portForward?.[key];
  if (!backend) {
    err('error: unable to forward port because pod is not running. Current status=Pending\n');
    return 1;
  }
  forwarding = { local: Number(localText || 0), remote: backend.containerPort ?? Number(remote), backend };
  return 0;
}

/**
 * The forward of a port-forward call, after the lock: listens on 127.0.0.1 (and ::1 when it can,
 * as kubectl does for "localhost"), prints kubectl's lines (client-go tools/portforward: "Forwarding
 * from <addr> -> <port>", "Handling connection for <port>" per connection) and relays each
 * connection to the scenario's backend until the process is stopped.
 */
export async function afterLock() {
  if (!forwarding) return;
  const { local, remote, backend } = forwarding;
  let port = local;
  const relay = (conn) => {
    process.stdout.write(`Handling connection for ${port}\n`);
    const upstream = net.connect(backend.port, backend.host ?? '127.0.0.1');
    const close = () => {
      conn.destroy();
      upstream.destroy();
    };
    conn.on('error', close);
    upstream.on('error', (e) => {
      process.stderr.write(`E1130 portforward.go:424] "Unhandled Error" err="an error occurred forwarding ${port} -> ${remote}: ${e.message}"\n`);
      close();
    });
    conn.pipe(upstream).pipe(conn);
  };
  const v4 = net.createServer(relay);
  const listening = await new Promise((resolve) => {
    v4.once('error', (e) => resolve(e));
    v4.listen(local, '127.0.0.1', () => resolve(undefined));
  });
  if (listening) {
    process.stderr.write(`Unable to listen on port ${local}: Listeners failed to create with the following errors: [unable to create listener: Error listen tcp4 127.0.0.1:${local}: bind: address already in use]\nerror: unable to listen on any of the requested ports: [{${local} ${remote}}]\n`);
    process.exitCode = 1;
    return;
  }
  port = v4.address().port;
  process.stdout.write(`Forwarding from 127.0.0.1:${port} -> ${remote}\n`);
  const v6 = net.createServer(relay);
  v6.once('error', () => {});
  v6.listen(port, '::1', () => process.stdout.write(`Forwarding from [::1]:${port} -> ${remote}\n`));
  // Runs until stopped (SIGTERM, SIGINT), as the real one does.
  await new Promise(() => {});
}

export default function kubectl(argv, ctx) {
  const { state, out, err } = ctx;
  const found = commandPath(argv, { ...Object.fromEntries(KUBECTL_COMMANDS.map((c) => [c, {}])), rollout: Object.fromEntries(ROLLOUT_COMMANDS.map((c) => [c, {}])) }, GLOBAL_TABLE);
  if (found.unknown !== undefined) {
    err(found.path.length ? `error: unknown command "${found.unknown}"\nSee 'kubectl ${found.path.join(' ')} -h' for help and examples\n` : `error: unknown command "${found.unknown}" for "kubectl"\n`);
    return 1;
  }
  const command = found.path.join(' ');
  if (!FLAGS_1_31[command] || command === 'global') {
    err(`fake kubectl: command not played by the stand-in: ${argv.join(' ')}\n`);
    return 2;
  }
  const parsed = parseCommandLine(argv, flagTable(FLAGS_1_31.global, FLAGS_1_31[command]));
  if (parsed.error) {
    // diff reports its own errors, with exit code 2 (1 means "differences found").
    err(command === 'diff' ? `error: ${parsed.error}\nSee 'kubectl diff -h' for help and examples\n` : `error: ${parsed.error}\nSee 'kubectl ${command} --help' for usage.\n`);
    return command === 'diff' ? 2 : 1;
  }
  const { flags } = parsed;
  const words = parsed.positional.slice(found.path.length);
  const verb = found.path[0];
  if (verb === 'version') return version(state, flags, ctx);
  if (verb === 'kustomize') return kustomize(words[0] ?? '.', ctx);
  if (!clusterUp(state, kubeconfigFiles(one(flags, 'kubeconfig'), ctx.env), one(flags, 'context'))) {
    err('The connection to the server 127.0.0.1:40123 was refused - did you specify the right host or port?\n');
    // kubectl diff exits 1 only for "differences found"; its errors exit 2 (cmdutil.CheckDiffErr: code+1).
    return verb === 'diff' ? 2 : 1;
  }
  const ns = one(flags, 'namespace');
  const output = one(flags, 'output');
  const objects = state.kubectl.objects;
  switch (verb) {
    case 'get': {
      if (flags.raw !== undefined) {
        // kubectl.raw[path] scripts an answer (e.g. Prometheus through a service proxy); a service
        // proxy without one answers as the API server does for a Service with no ready endpoints.
        const rawPath = one(flags, 'raw');
        const scripted = state.kubectl.raw?.[rawPath];
        const proxied = /^\/api\/v1\/namespaces\/[^/]+\/services\/(?:https?:)?([^/:]+)[^/]*\/proxy\//.exec(rawPath);
        if (scripted === undefined && proxied) {
          err(`Error from server (ServiceUnavailable): no endpoints available for service "${proxied[1]}"\n`);
          return 1;
        }
        out(scripted ?? 'ok');
        return 0;
      }
      const kinds = words[0].split(',').map(kindOf);
      if (words[1]) {
        const found = list(state, kinds[0], ns ?? 'default').find((o) => o.metadata.name === words[1]);
        if (!found) {
          err(`Error from server (NotFound): ${NOT_FOUND_RESOURCE[kinds[0]] ?? words[0]} "${words[1]}" not found\n`);
          return 1;
        }
        out(output === 'json' ? JSON.stringify(withIngressStatus(state, withController(state, found))) : `${found.metadata.name}\n`);
        return 0;
      }
      // --selector k=v[,k=v]: the API server's label selector (equality only), as the pods of logs.
      const selector = one(flags, 'selector');
      const items = kinds
        .flatMap((k) => list(state, k, flags['all-namespaces'] ? undefined : ns ?? 'default'))
        .filter((o) => !selector || selector.split(',').every((kv) => { const [k, v] = kv.split('='); return o.metadata.labels?.[k] === v; }))
        .map((o) => withIngressStatus(state, withController(state, o)));
      out(output === 'json' ? JSON.stringify({ apiVersion: 'v1', kind: 'List', items }) : items.map((o) => `${o.metadata.name}\n`).join(''));
      return 0;
    }
    case 'wait': {
      // wait.go conditionFuncFor: delete, create, condition=…, jsonpath=….
      const condition = one(flags, 'for') ?? '';
      if (!/^(delete|create|condition=.+|jsonpath=.+)$/i.test(condition)) {
        err(`error: unrecognized condition: "${condition}"\n`);
        return 1;
      }
      if (words[0] === 'nodes' || words[0] === 'node') {
        const notReady = nodes(state).filter((n) => n.status.conditions[0].status !== 'True');
        if (notReady.length) {
          err(`error: timed out waiting for the condition on nodes/${notReady[0].metadata.name}\n`);
          return 1;
        }
        out(nodes(state).map((n) => `node/${n.metadata.name} condition met\n`).join(''));
        return 0;
      }
      out(words.map((w) => `${typeName(kindOf(w.split('/')[0]))}/${w.split('/')[1]} condition met\n`).join(''));
      return 0;
    }
    case 'diff':
    case 'apply': {
      const file = one(flags, 'filename');
      const docs = readDocs(ctx, file);
      // Like the API server's NamespaceLifecycle admission: a namespaced object needs its Namespace
      // to exist already (for diff, a dry run, one created in the same call does not count).
      const known = new Set([...BUILTIN_NAMESPACES, ...list(state, 'Namespace').map((n) => n.metadata.name)]);
      for (const d of docs) {
        if (verb === 'apply' && d.kind === 'Namespace') known.add(d.metadata.name);
        const target = CLUSTER_SCOPED.has(d.kind) ? undefined : d.metadata?.namespace ?? ns ?? 'default';
        if (target !== undefined && !known.has(target)) {
          err(`Error from server (NotFound): namespaces "${target}" not found\n`);
          return verb === 'diff' ? 2 : 1;
        }
      }
      const changed = docs.filter((d) => !isDeepStrictEqual(objects[objectKey(d, ns)], d));
      if (verb === 'diff') {
        for (const d of changed) out(`diff -u -N /tmp/LIVE/${objectKey(d, ns)} /tmp/MERGED/${objectKey(d, ns)}\n+ (changed)\n`);
        return changed.length ? 1 : 0;
      }
      for (const d of docs) {
        const k = objectKey(d, ns);
        const verbText = !objects[k] ? 'created' : changed.includes(d) ? 'configured' : 'unchanged';
        // A new or changed workload has a new generation, which its controller has yet to roll out.
        if (WORKLOAD_KINDS.has(d.kind) && verbText !== 'unchanged') {
          state.kubectl.generations = { ...state.kubectl.generations, [k]: (state.kubectl.generations?.[k] ?? 0) + 1 };
        }
        objects[k] = d;
        out(`${typeName(d.kind, d.apiVersion)}/${d.metadata.name} ${verbText}\n`);
      }
      return 0;
    }
    case 'delete': {
      const kind = kindOf(words[0].split('/')[0]);
      const names = words[0].includes('/') ? [words[0].split('/')[1]] : words.slice(1);
      for (const name of names) {
        const k = `${kind}/${CLUSTER_SCOPED.has(kind) ? '' : ns ?? 'default'}/${name}`;
        if (!objects[k]) {
          if (flags['ignore-not-found']) continue;
          err(`Error from server (NotFound): ${words[0]} "${name}" not found\n`);
          return 1;
        }
        delete objects[k];
        // The namespace controller deletes everything in a deleted namespace.
        if (kind === 'Namespace') for (const inside of Object.keys(objects).filter((key) => !key.startsWith('Namespace/') && key.split('/')[1] === name)) delete objects[inside];
        // kubectl 1.33+ (delete.go PrintObj) names the namespace of a namespaced object.
        out(`${typeName(kind)} "${name}" deleted${CLUSTER_SCOPED.has(kind) ? '' : ` from ${ns ?? 'default'} namespace`}\n`);
      }
      return 0;
    }
    case 'rollout': {
      // status waits until the controller has rolled out the workload's generation.
      const [kindWord, name] = words[0].split('/');
      const k = objectKey({ kind: kindOf(kindWord), metadata: { name, namespace: ns ?? 'default' } });
      if (state.kubectl.generations?.[k]) state.kubectl.observed = { ...state.kubectl.observed, [k]: state.kubectl.generations[k] };
      // The last line of kubectl's rollout_status.go for each kind.
      const replicas = objects[k]?.spec?.replicas ?? 1;
      const done = {
        Deployment: `deployment "${name}" successfully rolled out\n`,
        DaemonSet: `daemon set "${name}" successfully rolled out\n`,
        StatefulSet: `statefulset rolling update complete ${replicas} pods at revision ${name}-${state.kubectl.generations?.[k] ?? 1}...\n`,
      }[kindOf(kindWord)];
      if (!done) {
        err(`error: no status viewer has been implemented for ${kindOf(kindWord)}\n`);
        return 1;
      }
      out(done);
      return 0;
    }
    case 'logs': {
      // Scenario log lines per pod: state.kubectl.logs["namespace/pod"] (none by default). A
      // container without a log fails the call with the kubelet's reason, after the others' lines.
      // --selector k=v[,k=v]: every matching pod ("No resources found" when none, exit 0).
      const selector = one(flags, 'selector');
      const pods = selector
        ? list(state, 'Pod', ns ?? 'default').filter((p) => selector.split(',').every((kv) => { const [k, v] = kv.split('='); return p.metadata.labels?.[k] === v; }))
        : [objects[`Pod/${ns ?? 'default'}/${words[0]}`]];
      if (selector && pods.length === 0) {
        err(`No resources found in ${ns ?? 'default'} namespace.\n`);
        return 0;
      }
      for (const pod of pods) {
        if (!pod) {
          err(`Error from server (NotFound): pods "${words[0]}" not found\n`);
          return 1;
        }
        const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]
          .filter((c) => !one(flags, 'container') || c.name === one(flags, 'container'));
        const reasons = statuses.map((c) => noLogReason(pod, c)).filter(Boolean);
        if (reasons.length < statuses.length || statuses.length === 0) out(state.kubectl.logs?.[`${ns ?? 'default'}/${pod.metadata.name}`] ?? '');
        if (reasons.length) {
          err(`Error from server (BadRequest): ${reasons[0]}\n`);
          return 1;
        }
      }
      return 0;
    }
    case 'describe':
      out(`Name: ${words[1] ?? ''}\nEvents: <none>\n`);
      return 0;
    case 'port-forward':
      return portForward(words, flags, ctx);
    default:
      err(`fake kubectl: unsupported command: ${argv.join(' ')}\n`);
      return 2;
  }
}
