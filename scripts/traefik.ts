// Phase "traefik" (`task traefik`): every UI on https://<name>.<DOMAIN> from the host.
//
//   1. TLS: a local CA and a certificate for *.<DOMAIN>, <DOMAIN>, each routed name and the host of
//      each app in STATE_DIR/apps/*.json (explicit names too, because browsers refuse wildcards
//      directly under "localhost"; `task app` runs this phase when its host is missing), made once with
//      openssl in <stateDir>/certs (ca.crt ca.key tls.crt tls.key). The CA is kept; the server
//      certificate is re-issued only when a name is missing (DOMAIN changed, a new app), it expires
//      within 30 days, or it no longer matches the CA or its key.
//   2. namespace `traefik` with Pod Security "restricted" (manifests/traefik/namespace.yaml), applied
//      only when the read below shows it missing or without those labels; then
//      Traefik (PINNED.charts.traefik) from helm-values/traefik.yaml: DaemonSet on the workers,
//      Service NodePort 30080/30443 (INGRESS_NODE_PORTS), which the control-plane container
//      publishes on HOST_IP:HTTP_PORT/HTTPS_PORT. HTTP redirects to HTTPS (not permanently).
//      With CLUSTER=existing: on every node that admits it, Service type from the cluster's nodes and
//      kube-system DaemonSets (ingressServiceType): LoadBalancer where k3s ServiceLB or a cloud
//      provides one, else NodePort 30080/30443 (`task endpoints` prints the address it got).
//   3. Secret traefik/platform-tls and TLSStore "default" (manifests/traefik/tlsstore.yaml): the
//      certificate every route serves.
//   4. IngressRoutes (manifests/traefik/ingressroutes.yaml, with DOMAIN) for grafana, prometheus,
//      alertmanager and traefik (dashboard), each in its Service's namespace. A namespace that a later
//      phase owns and that does not exist yet is created first (manifests/traefik/backend-namespaces.yaml),
//      so the routes apply now and start serving when their Services appear. The sample app's route
//      app.<DOMAIN> and every other app's are made with the app (scripts/app.ts).
//   With INGRESS_CLASS (CLUSTER=existing: the cluster's own ingress controller serves our routes):
//   first one read of the IngressClasses and namespaces: a class the cluster does not have is refused
//   (a UserError listing the ones it has) before anything changes. Then 1, no Traefik (no chart, no
//   traefik namespace, no TLSStore, Middleware or dashboard route), and instead of 3-4: Ingresses of
//   that class (manifests/ingress/ingress.yaml.tmpl, lib ingressManifests) with the hosts, Services
//   and ports of the IngressRoutes of 4, and Secret platform-tls in each of their namespaces and in
//   each recorded app's (whose Ingress comes with the app), one kubectl diff for all. A Traefik
//   release the platform installed before is left running, with a warning that says how to remove it.
//   Idempotent: helm only when chart or values differ, kubectl apply only after kubectl diff (one
//   diff for 3 and 4 together); one read of the namespaces and the DaemonSet before the chart, and
//   `rollout status` only when the chart changed or that read shows the rollout not complete.
//
// `--trust-ca` (`task trust-ca`) adds <stateDir>/certs/ca.crt to this OS's trust store (asks for
// sudo) when run in a terminal, otherwise prints the exact commands. The store follows the OS:
// macOS System keychain; on Linux by /etc/os-release (ID, then ID_LIKE): p11-kit's `trust anchor`
// where it writes the system store (Fedora/RHEL, Arch, openSUSE), else the family's anchors folder
// and refresh command (Debian/Ubuntu/Alpine update-ca-certificates, Fedora/RHEL and Arch
// update-ca-trust, openSUSE update-ca-certificates). "Already trusted" is read from the store
// itself (the bundle the refresh writes; `security verify-cert` on macOS), and checked again after
// adding. It prints how to undo it, and what browsers with their own store (and WSL) need.
//
// .env keys: DOMAIN, HOST_IP, HTTP_PORT, HTTPS_PORT, CLUSTER, CLUSTER_NAME, STATE_DIR, INGRESS_CLASS.
// Tools: openssl, helm, kubectl; with --trust-ca: sudo and the OS's trust tool (security,
// trust, update-ca-certificates or update-ca-trust), certutil when present.
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import {
  INGRESS_HOSTS,
  INGRESS_NODE_PORTS,
  PINNED,
  PROJECT_DIR,
  UserError,
  appRecords,
  PLATFORM_TLS_SECRET,
  applyManifests,
  check,
  commandLine,
  hasTool,
  helmRelease,
  ingressManifests,
  installedRecord,
  isMain,
  kubectl,
  ingressUrl,
  namesAddress,
  resolvesByItself,
  note,
  readProjectYaml,
  renderTemplate,
  requireCluster,
  rolloutPending,
  routeSpecsOf,
  toolHint,
  run,
  runPhase,
  runsInWsl,
  statePath,
  step,
  tlsSecretManifest,
  warn,
  type Config,
  type WorkloadJson,
} from './lib.ts';

export const TRAEFIK_NAMESPACE = 'traefik';
export const TLS_SECRET = PLATFORM_TLS_SECRET;
const MANIFEST_DIR = path.join(PROJECT_DIR, 'manifests', 'traefik');
const DAY_MS = 24 * 3600 * 1000;
/** Re-issue the server certificate when it has fewer days left than this. */
export const RENEW_BEFORE_DAYS = 30;
/** Server certificate lifetime: browsers accept at most 398 days. */
export const CERT_DAYS = 397;
export const CA_DAYS = 3650;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

export interface CertFiles {
  dir: string;
  caCrt: string;
  caKey: string;
  crt: string;
  key: string;
}

export const certFiles = (cfg: Config): CertFiles => {
  const dir = statePath(cfg, 'certs');
  return { dir, caCrt: path.join(dir, 'ca.crt'), caKey: path.join(dir, 'ca.key'), crt: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
};

/** The DNS names the server certificate must cover, in its SAN order: the platform's, then the apps' hosts. */
export const wantedNames = (domain: string, appHosts: readonly string[] = []) => {
  const own = [`*.${domain}`, domain, ...INGRESS_HOSTS.map((h) => `${h}.${domain}`)];
  return [...own, ...[...new Set(appHosts)].filter((h) => h.endsWith(`.${domain}`) && !own.includes(h))];
};

/** The names this phase routes itself (the sample app's app.<DOMAIN> is routed by scripts/app.ts). */
export const ROUTED_HERE = INGRESS_HOSTS.filter((h) => h !== 'app');

/** DNS names of a certificate's subjectAltName ("DNS:a, DNS:b"). */
export const dnsNames = (cert: X509Certificate) =>
  (cert.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4));

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

/** Why the CA cannot be (re)used, or undefined when it can. */
export function caProblem(caPem: string, caKeyPem: string, now = new Date()): string | undefined {
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(caPem);
  } catch {
    return 'ca.crt is not a certificate';
  }
  if (!ca.ca) return 'ca.crt is not a CA certificate';
  try {
    if (!ca.checkPrivateKey(createPrivateKey(caKeyPem))) return 'ca.key does not belong to ca.crt';
  } catch {
    return 'ca.key is not a private key';
  }
  if (new Date(ca.validTo).getTime() - now.getTime() < RENEW_BEFORE_DAYS * DAY_MS) return `the CA expires on ${ca.validTo}`;
  return undefined;
}

/** Why the server certificate must be re-issued, or undefined when it is fine for this domain and CA. */
export function certProblem(certPem: string, keyPem: string, caPem: string, domain: string, now = new Date(), appHosts: readonly string[] = []): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    return 'tls.crt is not a certificate';
  }
  const ca = new X509Certificate(caPem);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return 'tls.crt was not signed by ca.crt';
  try {
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return 'tls.key does not belong to tls.crt';
  } catch {
    return 'tls.key is not a private key';
  }
  const have = dnsNames(cert);
  const missing = wantedNames(domain, appHosts).filter((n) => !have.includes(n));
  if (missing.length) return `it does not cover ${missing.join(', ')} (DOMAIN changed, or a new app?)`;
  if (!(cert.keyUsage ?? []).includes(SERVER_AUTH)) return 'it is not for server authentication';
  if (new Date(cert.validTo).getTime() - now.getTime() < RENEW_BEFORE_DAYS * DAY_MS) return `it expires on ${cert.validTo}`;
  return undefined;
}

/** The CA's common name; it carries the host name, so CAs made on several machines can be told apart. */
export const caCommonName = (hostname = os.hostname()) =>
  `Talos Local Observability CA (${hostname.replace(/[^\w.-]/g, '-').slice(0, 40)})`;

const caConfig = () => `[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = talos-local-observability
CN = ${caCommonName()}
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`;

const leafConfig = (domain: string, appHosts: readonly string[]) => `[req]
distinguished_name = dn
prompt = no
[dn]
O = talos-local-observability
CN = *.${domain}
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = @alt
[alt]
${wantedNames(domain, appHosts).map((n, i) => `DNS.${i + 1} = ${n}`).join('\n')}
`;

const serial = () => `0x${randomBytes(16).toString('hex').replace(/^[89a-f]/, '7')}`;
const readOr = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');

/** Moves files generated in tmp into place, keys readable by the owner only. */
function install(tmp: string, pairs: [string, string][]) {
  for (const [from, to] of pairs) {
    fs.chmodSync(path.join(tmp, from), to.endsWith('.key') ? 0o600 : 0o644);
    fs.renameSync(path.join(tmp, from), to);
  }
}

/**
 * Makes sure the CA and the server certificate for DOMAIN exist and fit (see caProblem and
 * certProblem), generating only what is missing or unfit. Returns the step's detail line and
 * whether an existing CA was replaced (the new one must then be trusted again).
 */
export async function ensureCertificates(domain: string, files: CertFiles, now = new Date(), appHosts: readonly string[] = []): Promise<{ detail: string; caReplaced: boolean }> {
  fs.mkdirSync(files.dir, { recursive: true, mode: 0o700 });
  const tmp = fs.mkdtempSync(path.join(files.dir, '.tmp-'));
  const openssl = (args: string[]) => run('openssl', args, { hint: 'openssl is needed to make the local CA: install it (e.g. apt-get install openssl, brew install openssl).' });
  try {
    const caWhy = fs.existsSync(files.caCrt) ? caProblem(readOr(files.caCrt), readOr(files.caKey), now) : 'none yet';
    if (caWhy) {
      fs.writeFileSync(path.join(tmp, 'ca.cnf'), caConfig());
      await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', path.join(tmp, 'ca.key')]);
      await openssl(['req', '-x509', '-new', '-sha256', '-days', String(CA_DAYS), '-set_serial', serial(), '-config', path.join(tmp, 'ca.cnf'),
        '-key', path.join(tmp, 'ca.key'), '-out', path.join(tmp, 'ca.crt')]);
      install(tmp, [['ca.key', files.caKey], ['ca.crt', files.caCrt]]);
    }
    const certWhy = fs.existsSync(files.crt) ? certProblem(readOr(files.crt), readOr(files.key), readOr(files.caCrt), domain, now, appHosts) : 'none yet';
    if (!certWhy) {
      const until = new X509Certificate(readOr(files.crt)).validTo;
      return { detail: `unchanged (certificate for *.${domain} valid until ${until})`, caReplaced: false };
    }
    fs.writeFileSync(path.join(tmp, 'leaf.cnf'), leafConfig(domain, appHosts));
    await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', path.join(tmp, 'tls.key')]);
    await openssl(['req', '-new', '-sha256', '-config', path.join(tmp, 'leaf.cnf'), '-key', path.join(tmp, 'tls.key'), '-out', path.join(tmp, 'tls.csr')]);
    await openssl(['x509', '-req', '-sha256', '-days', String(CERT_DAYS), '-set_serial', serial(), '-in', path.join(tmp, 'tls.csr'),
      '-CA', files.caCrt, '-CAkey', files.caKey, '-extfile', path.join(tmp, 'leaf.cnf'), '-extensions', 'v3_leaf', '-out', path.join(tmp, 'tls.crt')]);
    install(tmp, [['tls.key', files.key], ['tls.crt', files.crt]]);
    const what = caWhy ? `created a local CA (${caWhy === 'none yet' ? 'first run' : caWhy}) and` : 'issued';
    return { detail: `${what} a certificate for *.${domain} (${certWhy === 'none yet' ? 'first run' : `old one: ${certWhy}`})`, caReplaced: Boolean(caWhy) && caWhy !== 'none yet' };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Secret platform-tls (type kubernetes.io/tls) in Traefik's namespace from PEM text. */
export const tlsSecretYaml = (certPem: string, keyPem: string) => tlsSecretManifest(TRAEFIK_NAMESPACE, certPem, keyPem);

// ---------------------------------------------------------------------------------------------
// Chart values and manifests
// ---------------------------------------------------------------------------------------------

/**
 * helm-values/traefik.yaml plus the layer that depends on .env: the ports the redirect names.
 * On an existing cluster (`serviceType` given, see ingressServiceType) Traefik runs on every node
 * that admits it (its control plane may be its only node) and the Service has that type: a NodePort
 * Service keeps the NodePorts 30080/30443 (INGRESS_NODE_PORTS) and exposes them as its ports too, so
 * that the HTTP → HTTPS redirect names the port a browser reaches; a LoadBalancer exposes
 * HTTP_PORT/HTTPS_PORT and leaves its NodePorts to the API server (fixed ones may be taken on a
 * shared cluster). Keys are left out, not set to null: the values Helm stores compare equal on a re-run.
 */
export function traefikValues(cfg: Pick<Config, 'HTTP_PORT' | 'HTTPS_PORT'>, serviceType?: 'LoadBalancer' | 'NodePort'): Record<string, unknown>[] {
  const base = readProjectYaml('helm-values/traefik.yaml');
  if (!serviceType) return [base, { ports: { web: { exposedPort: cfg.HTTP_PORT }, websecure: { exposedPort: cfg.HTTPS_PORT } } }];
  delete base.affinity;
  if (serviceType === 'LoadBalancer') for (const p of ['web', 'websecure']) delete base.ports[p].nodePort;
  const exposed = serviceType === 'NodePort' ? INGRESS_NODE_PORTS : { http: cfg.HTTP_PORT, https: cfg.HTTPS_PORT };
  return [base, { service: { spec: { type: serviceType } }, ports: { web: { exposedPort: exposed.http }, websecure: { exposedPort: exposed.https } } }, EXISTING_CLUSTER_INGRESS_VALUES];
}

/**
 * On a cluster that is not ours, Traefik serves only our IngressRoutes' kind of routes: no
 * IngressClass (the chart makes one named "traefik" and the cluster's default: a k3s/k3d cluster
 * already has an IngressClass "traefik" of its own Traefik, which helm would refuse to adopt, and a
 * second default class makes the API server refuse every new Ingress without a class), and no
 * Kubernetes Ingress provider (it would serve, and write its address into the status of, the
 * user's Ingresses).
 */
export const EXISTING_CLUSTER_INGRESS_VALUES = { ingressClass: { enabled: false }, providers: { kubernetesIngress: { enabled: false } } };

/** A Node or DaemonSet as `kubectl get -o json` shows it, as far as the Service type needs. */
export interface ClusterObject {
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: { providerID?: string };
}

/** providerID schemes of the cloud controller managers that implement Services of type LoadBalancer. */
export const CLOUD_PROVIDER_SCHEMES = ['aws', 'gce', 'azure', 'digitalocean', 'linode', 'hcloud', 'scaleway', 'exoscale'] as const;

/** The node label k3s's ServiceLB (klipper-lb) reads to choose the nodes that serve LoadBalancers. */
export const K3S_SERVICELB_LABEL = 'svccontroller.k3s.cattle.io/enablelb';

/**
 * The Service type for Traefik on an existing cluster, and why: LoadBalancer where the cluster
 * provides one (k3s/k3d's ServiceLB: a svclb-* DaemonSet in kube-system or nodes labelled for it;
 * a cloud provider: a node whose spec.providerID has a cloud scheme), otherwise NodePort (kind,
 * kubeadm, bare metal: a LoadBalancer would stay Pending there and block `helm --wait`).
 */
export function ingressServiceType(nodes: readonly ClusterObject[], kubeSystemDaemonSets: readonly ClusterObject[]): { type: 'LoadBalancer' | 'NodePort'; why: string } {
  const svclb = kubeSystemDaemonSets.find((d) => d.metadata.name.startsWith('svclb-'));
  if (svclb) return { type: 'LoadBalancer', why: `k3s ServiceLB runs (DaemonSet kube-system/${svclb.metadata.name})` };
  const labelled = nodes.find((n) => n.metadata.labels?.[K3S_SERVICELB_LABEL] === 'true');
  if (labelled) return { type: 'LoadBalancer', why: `node ${labelled.metadata.name} is labelled ${K3S_SERVICELB_LABEL}=true (k3s ServiceLB)` };
  for (const n of nodes) {
    const scheme = /^([a-z0-9-]+):\/\//.exec(n.spec?.providerID ?? '')?.[1];
    if (scheme && (CLOUD_PROVIDER_SCHEMES as readonly string[]).includes(scheme)) {
      return { type: 'LoadBalancer', why: `node ${n.metadata.name} runs on ${scheme} (providerID ${n.spec?.providerID})` };
    }
  }
  return { type: 'NodePort', why: 'no load balancer found (no k3s ServiceLB, no cloud providerID)' };
}

const readManifest = (name: string) => fs.readFileSync(path.join(MANIFEST_DIR, name), 'utf8');
const docsOf = (text: string) => YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean) as KObject[];

interface KObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

/** Traefik's namespace as manifests/traefik/namespace.yaml defines it (its Pod Security labels). */
export const TRAEFIK_NAMESPACE_MANIFEST = docsOf(readManifest('namespace.yaml'))[0];

/** Whether a namespace read from the cluster carries every label of the manifest (others may be there too). */
export const namespaceLabelsMatch = (have: KObject, want: KObject) =>
  Object.entries(want.metadata.labels ?? {}).every(([k, v]) => have.metadata.labels?.[k] === v);

/** The IngressRoutes and Middleware with DOMAIN filled in. */
export const routesYaml = (domain: string) => renderTemplate(readManifest('ingressroutes.yaml'), { DOMAIN: domain });

/** The namespaces the routes need that are not in `existing`, as manifests from backend-namespaces.yaml. */
export function missingNamespaces(routes: readonly { metadata: { namespace?: string } }[], existing: string[]): KObject[] {
  const needed = new Set(routes.map((r) => r.metadata.namespace).filter((n): n is string => Boolean(n)));
  const defined = docsOf(readManifest('backend-namespaces.yaml'));
  const missing = [...needed].filter((n) => n !== TRAEFIK_NAMESPACE && !existing.includes(n));
  return missing.map((n) => defined.find((d) => d.metadata.name === n) ?? { apiVersion: 'v1', kind: 'Namespace', metadata: { name: n } });
}

/** An IngressClass as `kubectl get ingressclasses -o json` shows it, as far as the phase needs. */
export interface IngressClassJson {
  kind?: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec?: { controller?: string };
}

/** The annotation that makes an IngressClass the cluster's default (networking.k8s.io/v1). */
export const DEFAULT_CLASS_ANNOTATION = 'ingressclass.kubernetes.io/is-default-class';

/** Why INGRESS_CLASS cannot be used on this cluster (it has no such IngressClass), or undefined when it can. */
export function ingressClassProblem(name: string, classes: readonly IngressClassJson[]): string | undefined {
  if (classes.some((c) => c.metadata.name === name)) return undefined;
  const have = classes.map((c) => `${c.metadata.name}${c.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION] === 'true' ? ' (default)' : ''}`);
  return (
    `INGRESS_CLASS="${name}": the cluster has no IngressClass "${name}" (it has ${have.length ? have.join(', ') : 'none: no ingress controller is installed'}). ` +
    `Set INGRESS_CLASS in .env to one of them${have.length ? '' : ' once your ingress controller is installed'}, or remove it to have the platform install Traefik. Nothing was changed.`
  );
}

/** Our routes on the cluster's ingress controller (INGRESS_CLASS): those of ingressroutes.yaml that reach a Service (Traefik's dashboard goes). */
export const ingressClassRoutes = (domain: string) => routeSpecsOf(docsOf(routesYaml(domain)));

// ---------------------------------------------------------------------------------------------
// Phase
// ---------------------------------------------------------------------------------------------

/** ingressServiceType over the cluster's nodes and kube-system's DaemonSets (one read). */
async function existingServiceType(cfg: Config): Promise<ReturnType<typeof ingressServiceType>> {
  const items: ClusterObject[] = JSON.parse((await kubectl(cfg, ['get', 'nodes,daemonsets', '--namespace', 'kube-system', '--output', 'json'])).stdout).items ?? [];
  return ingressServiceType(items.filter((o) => o.kind === 'Node'), items.filter((o) => o.kind === 'DaemonSet'));
}

async function deploy(cfg: Config): Promise<void> {
  await check('Cluster reachable', async () => {
    await requireCluster(cfg);
    return `up (${cfg.CLUSTER_NAME})`;
  });

  // With INGRESS_CLASS, one read before any change: the class must exist (and the namespaces, for the routes).
  const classRead = cfg.INGRESS_CLASS ? await readIngressClasses(cfg) : undefined;

  const files = certFiles(cfg);
  let caReplaced = false;
  await step(`TLS certificate for *.${cfg.DOMAIN} from the local CA`, async () => {
    const r = await ensureCertificates(cfg.DOMAIN, files, new Date(), appRecords(cfg).map((a) => a.host));
    caReplaced = r.caReplaced;
    return r.detail;
  });
  if (classRead) await deployOnIngressClass(cfg, files, classRead.namespaces);
  else await deployTraefik(cfg, files);
  note(`Browsers trust the certificate once the CA is trusted: \`task trust-ca\` (CA: ${files.caCrt}).`);
  if (caReplaced) warn('A new CA was made: trust it again with `task trust-ca` (browsers reject the old one\'s certificates).');
}

/**
 * INGRESS_CLASS: the IngressClasses and namespaces (one read), and a check that the class is one of
 * them: otherwise a UserError listing the classes, before anything changed.
 */
async function readIngressClasses(cfg: Config): Promise<{ namespaces: string[] }> {
  const items: (IngressClassJson & { kind?: string })[] = JSON.parse((await kubectl(cfg, ['get', 'ingressclasses,namespaces', '--output', 'json'])).stdout).items ?? [];
  await check(`IngressClass ${cfg.INGRESS_CLASS} (INGRESS_CLASS: the cluster's ingress controller serves our routes, no Traefik)`, async () => {
    const problem = ingressClassProblem(cfg.INGRESS_CLASS, items.filter((o) => o.kind === 'IngressClass'));
    if (problem) throw new UserError(problem);
    const found = items.find((o) => o.kind === 'IngressClass' && o.metadata.name === cfg.INGRESS_CLASS);
    return `found (controller ${found?.spec?.controller ?? 'unknown'})`;
  });
  return { namespaces: items.filter((o) => o.kind === 'Namespace').map((n) => n.metadata.name) };
}

/**
 * INGRESS_CLASS: our routes as Ingresses of that class with Secret platform-tls in their namespaces
 * (and in the namespaces of the recorded apps, whose Ingresses come with them: a re-issued
 * certificate reaches them too). No Traefik chart, CRD objects or traefik namespace.
 */
async function deployOnIngressClass(cfg: Config, files: CertFiles, namespaces: string[]): Promise<void> {
  const routes = ingressClassRoutes(cfg.DOMAIN);
  await ensureRouteNamespaces(cfg, routes.map((r) => ({ metadata: { namespace: r.namespace } })), namespaces);
  const appNamespaces = appRecords(cfg).map((a) => a.namespace).filter((ns) => namespaces.includes(ns));
  await step(`Ingresses (class ${cfg.INGRESS_CLASS}) for ${routes.map((r) => r.host).join(', ')}, Secret ${TLS_SECRET} in ${[...new Set([...routes.map((r) => r.namespace), ...appNamespaces])].join(', ')}`, async () => {
    const text = ingressManifests(cfg.INGRESS_CLASS, routes, { crt: fs.readFileSync(files.crt, 'utf8'), key: fs.readFileSync(files.key, 'utf8') }, appNamespaces);
    return (await applyManifests(cfg, text)) === 'applied' ? 'applied' : 'unchanged';
  });
  if (installedRecord(cfg).releases?.includes(`${TRAEFIK_NAMESPACE}/traefik`)) {
    warn(
      `Traefik (release ${TRAEFIK_NAMESPACE}/traefik, installed here by the platform before INGRESS_CLASS was set) is left as it is: its routes still answer on its own address. ` +
        `To remove it: ${toolHint(cfg, 'helm')} uninstall traefik --namespace ${TRAEFIK_NAMESPACE} (\`task destroy\` removes it with the rest).`,
    );
  }
  note(`\`task endpoints\` prints the address your ${cfg.INGRESS_CLASS} controller published on these Ingresses, and the URLs.`);
}

/** The namespaces the routes live in that later phases own, created when missing (backend-namespaces.yaml). */
async function ensureRouteNamespaces(cfg: Config, routes: readonly { metadata: { namespace?: string } }[], existing: string[]): Promise<void> {
  await step('Namespaces of the routes', async () => {
    const missing = missingNamespaces(routes, existing);
    if (missing.length === 0) return 'already exist';
    // Through applyManifests: with CLUSTER=existing it labels them ours (NAMESPACE_OWNER_LABEL), or the
    // owning phase would find them unlabelled, take them for the user's and destroy would leave them.
    await applyManifests(cfg, missing.map((m) => YAML.stringify(m)).join('---\n'));
    return `created ${missing.map((m) => m.metadata.name).join(', ')} (their phases have not run yet; the routes serve once the Services exist)`;
  });
}

/** Traefik (chart, namespace, default certificate, IngressRoutes), as the header's steps 2-4 say. */
async function deployTraefik(cfg: Config, files: CertFiles): Promise<void> {
  let values = traefikValues(cfg);
  let shape = `DaemonSet on workers, NodePorts ${INGRESS_NODE_PORTS.http}/${INGRESS_NODE_PORTS.https}`;
  if (cfg.CLUSTER === 'existing') {
    const { type, why } = await existingServiceType(cfg);
    values = traefikValues(cfg, type);
    shape = `DaemonSet, Service ${type}: ${why}`;
  }
  const routesText = routesYaml(cfg.DOMAIN);
  const routes = docsOf(routesText);
  // One read for Traefik's namespace, the namespaces the routes need and the DaemonSet the chart rolls out.
  const read = JSON.parse((await kubectl(cfg, ['get', 'namespaces,daemonsets', '--namespace', TRAEFIK_NAMESPACE, '-o', 'json'])).stdout).items as KObject[];
  await step(`Namespace ${TRAEFIK_NAMESPACE} (Pod Security restricted)`, async () => {
    const have = read.find((o) => o.kind === 'Namespace' && o.metadata.name === TRAEFIK_NAMESPACE);
    if (have && namespaceLabelsMatch(have, TRAEFIK_NAMESPACE_MANIFEST)) return 'unchanged';
    return (await applyManifests(cfg, readManifest('namespace.yaml'))) === 'applied' ? 'applied' : 'unchanged';
  });
  let chartChanged = false;
  await step(`Traefik chart ${PINNED.charts.traefik.version} (${shape})`, async () => {
    const result = await helmRelease(cfg, {
      release: 'traefik',
      namespace: TRAEFIK_NAMESPACE,
      chart: PINNED.charts.traefik,
      values,
      timeout: '5m',
    });
    chartChanged = !result.startsWith('unchanged');
    return result;
  });

  await ensureRouteNamespaces(cfg, routes, read.filter((o) => o.kind === 'Namespace').map((n) => n.metadata.name));

  // One kubectl diff for the certificate and the routes (an apply only when it sees a difference).
  await step(`Default certificate (Secret ${TLS_SECRET}, TLSStore default) and IngressRoutes for ${ROUTED_HERE.map((h) => `${h}.${cfg.DOMAIN}`).join(', ')}`, async () => {
    const text = [tlsSecretYaml(fs.readFileSync(files.crt, 'utf8'), fs.readFileSync(files.key, 'utf8')), readManifest('tlsstore.yaml'), routesText].join('---\n');
    return (await applyManifests(cfg, text)) === 'applied' ? 'applied' : 'unchanged';
  });

  await check('Traefik ready', async () => {
    // The read came before the chart: after a change of the chart, wait for its rollout.
    const daemonSet = read.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'traefik') as WorkloadJson | undefined;
    if (!chartChanged && daemonSet && rolloutPending(daemonSet) === undefined) return 'ready (rolled out already)';
    await kubectl(cfg, ['rollout', 'status', 'daemonset/traefik', '--namespace', TRAEFIK_NAMESPACE, '--timeout=180s'], {
      hint: `See: ${toolHint(cfg, 'kubectl')} -n ${TRAEFIK_NAMESPACE} get pods -o wide`,
    });
    return 'ready';
  });

  if (cfg.CLUSTER === 'existing') {
    note('`task endpoints` prints the address Traefik got on this cluster, its URLs, and how the names reach it.');
  } else {
    for (const h of INGRESS_HOSTS) note(`${h.padEnd(10)} ${ingressUrl(cfg, h, h === 'traefik' ? '/dashboard/' : '/')}`);
    if (resolvesByItself(cfg.DOMAIN)) {
      note(`DOMAIN=${cfg.DOMAIN}: *.localhost resolves to 127.0.0.1 by itself in Chrome, Edge, Firefox and curl (Safari: \`task hosts -- --force\`).`);
    } else {
      note(`Names: \`task hosts\` adds them to /etc/hosts (or dnsmasq: address=/${cfg.DOMAIN}/${namesAddress(cfg.HOST_IP)}).`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// trust-ca
// ---------------------------------------------------------------------------------------------

export const TRUST_NAME = 'talos-local-observability';
/** The keychain `task trust-ca` adds the CA to on macOS. */
export const MACOS_KEYCHAIN = '/Library/Keychains/System.keychain';

/** The common name (CN) in a certificate's subject. */
export const commonNameOf = (cert: X509Certificate) => /^CN=(.*)$/m.exec(cert.subject)?.[1] ?? '';

/**
 * The system CA store of each Linux family: the folder its refresh command reads our CA from, and
 * the PEM bundle that refresh writes (what OpenSSL, curl and Go read, hence the proof of trust).
 * `p11kit`: p11-kit's `trust anchor --store` writes into this store (its first trust path is this
 * family's writable source folder, and its `extract-compat` runs the refresh); on Debian p11-kit
 * only reads the bundle, so `trust anchor --store` has nowhere to write there.
 */
const LINUX_STORES = {
  debian: {
    ids: ['debian', 'ubuntu', 'alpine'],
    anchors: '/usr/local/share/ca-certificates',
    refresh: 'update-ca-certificates',
    bundle: '/etc/ssl/certs/ca-certificates.crt',
    p11kit: false,
  },
  fedora: {
    ids: ['fedora', 'rhel', 'centos'],
    anchors: '/etc/pki/ca-trust/source/anchors',
    refresh: 'update-ca-trust',
    bundle: '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem',
    p11kit: true,
  },
  arch: {
    ids: ['arch'],
    anchors: '/etc/ca-certificates/trust-source/anchors',
    refresh: 'update-ca-trust',
    bundle: '/etc/ca-certificates/extracted/tls-ca-bundle.pem',
    p11kit: true,
  },
  suse: {
    ids: ['suse', 'opensuse'],
    anchors: '/etc/pki/trust/anchors',
    refresh: 'update-ca-certificates',
    bundle: '/etc/ssl/ca-bundle.pem',
    p11kit: true,
  },
} as const;
export type LinuxFamily = keyof typeof LINUX_STORES;

/** ID, then each ID_LIKE, of /etc/os-release's text (quotes removed, lowercase). */
export function osReleaseIds(osRelease: string): string[] {
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(osRelease)?.[1].trim().replace(/^(["'])(.*)\1$/, '$2') ?? '';
  return [value('ID'), ...value('ID_LIKE').split(/\s+/)].map((id) => id.toLowerCase()).filter(Boolean);
}

/** The family whose store this Linux uses: by ID, then ID_LIKE; for an unknown ID, by the refresh tool present. */
export function linuxFamily(osRelease: string, tools: (name: string) => boolean): LinuxFamily | undefined {
  for (const id of osReleaseIds(osRelease)) {
    const hit = (Object.keys(LINUX_STORES) as LinuxFamily[]).find((f) => (LINUX_STORES[f].ids as readonly string[]).includes(id));
    if (hit) return hit;
  }
  if (tools('update-ca-certificates')) return 'debian';
  if (tools('update-ca-trust')) return 'fedora';
  return undefined;
}

/** How to see that a store trusts the CA: a PEM bundle that holds it, or a command that exits 0 only then. */
export type TrustCheck = { bundle: string } | { command: string[] };

export interface TrustPlan {
  store: string;
  /** Commands that add the CA, run in order (they use sudo where the store needs root). Empty: no known way here. */
  commands: string[][];
  /** Proof, read from the store itself, that the CA is trusted. */
  trustedWhen?: TrustCheck;
  /** Commands that stop trusting it again (printed, never run). */
  untrust: string[][];
  /** Advice that cannot be automated. */
  notes: string[];
}

export interface TrustInputs {
  platform: NodeJS.Platform;
  /** Path of ca.crt. */
  ca: string;
  /** The CA's common name (macOS removes it by this name). */
  caName: string;
  /** Which commands exist. */
  tools: (name: string) => boolean;
  /** /etc/os-release's text (Linux). */
  osRelease?: string;
  /** Linux under WSL, where the browsers run on Windows. */
  wsl?: boolean;
  home?: string;
  /** Whether Chrome's NSS store (~/.pki/nssdb) exists; it gets the CA too when certutil is there. */
  hasNssDb?: boolean;
}

/** The commands that trust the CA on this OS, how to prove it is trusted, and how to undo it. */
export function trustPlan(t: TrustInputs): TrustPlan {
  const home = t.home ?? os.homedir();
  const hasNssDb = t.hasNssDb ?? fs.existsSync(path.join(home, '.pki', 'nssdb'));
  const { ca, tools } = t;
  const notes: string[] = [];
  notes.push(`Firefox keeps its own store: Settings → Privacy & Security → Certificates → View Certificates → Authorities → Import ${ca} (trust for websites).`);
  notes.push(`Command-line tools: curl --cacert ${ca} …; Node: NODE_EXTRA_CA_CERTS=${ca}.`);
  if (t.platform === 'darwin') {
    return {
      store: 'macOS System keychain',
      commands: [['sudo', 'security', 'add-trusted-cert', '-d', '-r', 'trustRoot', '-k', MACOS_KEYCHAIN, ca]],
      // -l: the certificate checked is itself a CA; -L: no network.
      trustedWhen: { command: ['security', 'verify-cert', '-c', ca, '-l', '-L', '-q'] },
      untrust: [['sudo', 'security', 'remove-trusted-cert', '-d', ca], ['sudo', 'security', 'delete-certificate', '-c', t.caName, MACOS_KEYCHAIN]],
      notes,
    };
  }
  if (t.platform === 'win32') {
    return { store: 'Windows user root store', commands: [['certutil', '-user', '-addstore', 'Root', ca]], untrust: [], notes };
  }
  const nss = `sql:${home}/.pki/nssdb`;
  const withNss = tools('certutil') && hasNssDb;
  const nssAdd = withNss ? [['certutil', '-d', nss, '-A', '-t', 'C,,', '-n', TRUST_NAME, '-i', ca]] : [];
  const nssRemove = withNss ? [['certutil', '-d', nss, '-D', '-n', TRUST_NAME]] : [];
  if (!tools('certutil')) {
    notes.unshift(`Chrome/Chromium on Linux read ~/.pki/nssdb: install certutil (libnss3-tools / nss-tools) and run: certutil -d ${nss} -A -t C,, -n ${TRUST_NAME} -i ${ca}`);
  }
  if (t.wsl) {
    notes.unshift(`WSL: browsers run on Windows; in PowerShell: Import-Certificate -FilePath "$(wslpath -w ${ca})" -CertStoreLocation Cert:\\CurrentUser\\Root`);
  }
  const family = linuxFamily(t.osRelease ?? '', tools);
  if (!family) {
    if (!tools('trust')) return { store: 'system CA store (unknown)', commands: [], untrust: [], notes };
    return {
      store: 'system CA store (p11-kit trust)',
      commands: [['sudo', 'trust', 'anchor', '--store', ca], ...nssAdd],
      untrust: [['sudo', 'trust', 'anchor', '--remove', ca], ...nssRemove],
      notes,
    };
  }
  const s = LINUX_STORES[family];
  const trustedWhen = { bundle: s.bundle };
  if (s.p11kit && tools('trust')) {
    return {
      store: `system CA store (p11-kit trust anchor, ${s.refresh})`,
      commands: [['sudo', 'trust', 'anchor', '--store', ca], ...nssAdd],
      trustedWhen,
      untrust: [['sudo', 'trust', 'anchor', '--remove', ca], ...nssRemove],
      notes,
    };
  }
  const dest = `${s.anchors}/${TRUST_NAME}.crt`;
  return {
    store: `system CA store (${s.anchors}, ${s.refresh})`,
    commands: [['sudo', 'cp', ca, dest], ['sudo', s.refresh], ...nssAdd],
    trustedWhen,
    untrust: [['sudo', 'rm', '-f', dest], ['sudo', s.refresh], ...nssRemove],
    notes,
  };
}

/** Whether a PEM bundle holds the certificate `caPem` (by SHA-256 fingerprint, whatever the line wrapping). */
export function bundleHolds(bundleText: string, caPem: string): boolean {
  const want = new X509Certificate(caPem).fingerprint256;
  for (const [block] of bundleText.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)) {
    try {
      if (new X509Certificate(block).fingerprint256 === want) return true;
    } catch {
      // A damaged entry is not ours; keep looking.
    }
  }
  return false;
}

/** Runs a TrustCheck against the store. */
export async function isTrusted(check: TrustCheck | undefined, caPem: string): Promise<boolean> {
  if (!check) return false;
  if ('bundle' in check) return fs.existsSync(check.bundle) && bundleHolds(fs.readFileSync(check.bundle, 'utf8'), caPem);
  return run(check.command[0], check.command.slice(1)).then(() => true, () => false);
}

const describeCheck = (check: TrustCheck) => ('bundle' in check ? check.bundle : `\`${commandLine(check.command[0], check.command.slice(1))}\``);
const commandLines = (commands: string[][]) => commands.map((c) => commandLine(c[0], c.slice(1)));

async function trustCa(cfg: Config): Promise<void> {
  const files = certFiles(cfg);
  if (!fs.existsSync(files.caCrt)) throw new UserError(`${files.caCrt} does not exist yet. Run \`task traefik\` first (it makes the CA).`);
  const caPem = readOr(files.caCrt);
  const present = new Set<string>();
  for (const t of ['certutil', 'update-ca-certificates', 'update-ca-trust', 'trust', 'sudo']) if (await hasTool(t)) present.add(t);
  const osRelease = readOr('/etc/os-release');
  const plan = trustPlan({
    platform: process.platform,
    ca: files.caCrt,
    caName: commonNameOf(new X509Certificate(caPem)),
    tools: (t) => present.has(t),
    osRelease,
    wsl: runsInWsl(),
  });
  if (plan.commands.length === 0) {
    throw new UserError(
      `no known way to trust a CA on this Linux (os-release IDs: ${osReleaseIds(osRelease).join(', ') || 'none'}; ` +
        `none of update-ca-certificates, update-ca-trust, trust is installed). Add ${files.caCrt} to your system trust store by hand.`,
    );
  }
  const interactive = Boolean(process.stdin.isTTY) && !process.argv.includes('--print');
  await step(`Trust the local CA (${plan.store})`, async () => {
    if (await isTrusted(plan.trustedWhen, caPem)) return `already trusted (${describeCheck(plan.trustedWhen!)} holds it)`;
    if (!interactive) {
      note('Not in a terminal (or --print): nothing was run. To trust the CA, run:');
      for (const line of commandLines(plan.commands)) console.log(`    ${line}`);
      return 'unchanged (printed the commands, ran none)';
    }
    for (const c of plan.commands) {
      note(`$ ${commandLine(c[0], c.slice(1))}`);
      await run(c[0], c.slice(1), { hint: 'Run the command above yourself, or ask your administrator.' });
    }
    if (!plan.trustedWhen) return 'added';
    if (!(await isTrusted(plan.trustedWhen, caPem))) {
      throw new UserError(`the commands ran, but ${describeCheck(plan.trustedWhen)} still does not hold ${files.caCrt}: look at their output above.`);
    }
    return `added (${describeCheck(plan.trustedWhen)} now holds it)`;
  });
  for (const n of plan.notes) note(n);
  if (plan.untrust.length) note(`To stop trusting it later: ${commandLines(plan.untrust).join(' && ')}`);
}

if (isMain(import.meta.url)) {
  if (process.argv.includes('--trust-ca')) await runPhase('trust-ca', trustCa);
  else await runPhase('traefik', deploy);
}
