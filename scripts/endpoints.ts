// `task endpoints`: prints every URL of the platform and of each app `task app` deployed (its route
// and dashboard, from STATE_DIR/apps/*.json), where the Grafana admin password is, the CA
// certificate to trust, the local registry, and the line that points kubectl at the cluster (with
// CLUSTER=existing: the context of KUBECONFIG/KUBE_CONTEXT the platform went to).
// On Talos it only reads configuration and checks which state files exist; it calls no tool.
// With CLUSTER=existing it reads Traefik's Service and the nodes once (kubectl) for the address the
// ingress got (ingressAddressOf: the LoadBalancer's IP or hostname, or a node's address with the
// NodePort), prints the URLs on it, how the names reach it, and a `kubectl port-forward` that
// reaches the routes from any machine. With INGRESS_CLASS it reads our Ingresses in monitoring
// instead (ingressClassAddressOf: the address the cluster's controller published on them, HTTPS on
// 443), no Traefik dashboard, and the port-forward to INGRESS_SERVICE when it is set.
//
// .env keys: CLUSTER, KUBECONFIG, KUBE_CONTEXT (the kubectl lines), DOMAIN, HOST_IP, HTTPS_PORT,
// REGISTRY_PORT, IMAGE_REGISTRY, STATE_DIR, ALERT_WEBHOOK_URL (only whether it is set),
// INGRESS_CLASS, INGRESS_SERVICE.
// Tools: none on Talos; kubectl (get service, nodes; or get ingresses) with CLUSTER=existing.
import fs from 'node:fs';
import kleur from 'kleur';
import {
  type Config,
  ConfigError,
  INGRESS_HOSTS,
  ROUTES_NAMESPACE,
  UserError,
  appRecords,
  clusterTarget,
  failureReason,
  ingressClassAddressOf,
  ingressService,
  type IngressAddress,
  isMain,
  kubeconfigPath,
  kubectl,
  loadConfig,
  ingressUrl,
  namesAddress,
  resolvesByItself,
  statePath,
  toolHint,
} from './lib.ts';

/** Traefik's Service and the nodes as `kubectl get -o json` shows them, as far as the address needs. */
export interface ServiceJson {
  spec?: { type?: string; ports?: { name?: string; port: number; nodePort?: number }[] };
  status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } };
}
export interface NodeAddressJson {
  metadata: { name: string };
  status?: { addresses?: { type: string; address: string }[]; conditions?: { type: string; status: string }[] };
}

/** The name of the Service port Traefik serves HTTPS on (the chart names ports after its entry points). */
export const HTTPS_PORT_NAME = 'websecure';

/**
 * The address the ingress got, or why there is none yet: a LoadBalancer's first ingress (IP, else
 * hostname) with the Service port; a NodePort on a Ready node's ExternalIP, else its InternalIP.
 */
export function ingressAddressOf(service: ServiceJson, nodes: readonly NodeAddressJson[]): IngressAddress | { missing: string } {
  const https = service.spec?.ports?.find((p) => p.name === HTTPS_PORT_NAME);
  if (!https) return { missing: `Service traefik/traefik has no port "${HTTPS_PORT_NAME}"` };
  if (service.spec?.type === 'LoadBalancer') {
    const lb = service.status?.loadBalancer?.ingress?.[0];
    const address = lb?.ip || lb?.hostname;
    if (!address) return { missing: 'the LoadBalancer has no address yet (pending: `kubectl --namespace traefik get service traefik --watch`)' };
    return { address, port: https.port, how: `LoadBalancer ${address}:${https.port}`, isHostname: !lb?.ip };
  }
  if (!https.nodePort) return { missing: `Service traefik/traefik is of type ${service.spec?.type ?? 'unknown'}, without a NodePort` };
  const ready = nodes.filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
  for (const type of ['ExternalIP', 'InternalIP']) {
    for (const n of ready) {
      const a = n.status?.addresses?.find((x) => x.type === type)?.address;
      if (a) return { address: a, port: https.nodePort, how: `NodePort ${https.nodePort} on node ${n.metadata.name} (${type} ${a})` };
    }
  }
  return { missing: 'no Ready node with an address' };
}

/** Reads Traefik's Service and the nodes (one kubectl call) and finds the address (CLUSTER=existing); with INGRESS_CLASS, our Ingresses (one call). */
export async function readIngressAddress(cfg: Config): Promise<IngressAddress | { missing: string }> {
  if (cfg.INGRESS_CLASS) {
    const read = await kubectl(cfg, ['get', 'ingresses', '--namespace', ROUTES_NAMESPACE, '--output', 'json']).catch((err: unknown) => {
      throw new UserError(`cannot read the cluster: ${failureReason(err)}`);
    });
    return ingressClassAddressOf(JSON.parse(read.stdout).items ?? [], cfg.INGRESS_CLASS);
  }
  const r = await kubectl(cfg, ['get', 'nodes,services', '--namespace', 'traefik', '--output', 'json']).catch((err: unknown) => {
    throw new UserError(`cannot read the cluster: ${failureReason(err)}`);
  });
  const items: (ServiceJson & NodeAddressJson & { kind?: string })[] = JSON.parse(r.stdout).items ?? [];
  const service = items.find((o) => o.kind === 'Service' && o.metadata.name === 'traefik');
  if (!service) return { missing: 'Traefik is not installed yet: run `task traefik`' };
  return ingressAddressOf(service, items.filter((o) => o.kind === 'Node'));
}

/**
 * The lines `task endpoints` prints. `exists` and `apps` are injectable for tests; `ingress` is the
 * address of an existing cluster's Traefik (readIngressAddress), unused on Talos.
 */
export function endpointLines(
  cfg: Config,
  exists: (file: string) => boolean = fs.existsSync,
  apps = appRecords(cfg),
  ingress?: IngressAddress | { missing: string },
): string[] {
  const existing = cfg.CLUSTER === 'existing';
  const reached = ingress && 'address' in ingress ? ingress : undefined;
  // The port of the URLs: HTTPS_PORT on Talos, the port the Service got on an existing cluster.
  const urlCfg = { DOMAIN: cfg.DOMAIN, HTTPS_PORT: existing ? reached?.port ?? 443 : cfg.HTTPS_PORT };
  const url = (name: string, pathName: string) => ingressUrl(urlCfg, name, pathName);
  const missing = (file: string, task: string) => (exists(file) ? '' : kleur.yellow(` (not there yet: run \`task ${task}\`)`));
  const password = statePath(cfg, 'grafana-admin-password');
  const ca = statePath(cfg, 'certs', 'ca.crt');
  const kubeconfig = kubeconfigPath(cfg);
  const others = apps.filter((a) => a.host !== `app.${cfg.DOMAIN}`);
  const hosts = [...INGRESS_HOSTS.filter((h) => !(cfg.INGRESS_CLASS && h === 'traefik')).map((h) => `${h}.${cfg.DOMAIN}`), ...others.map((a) => a.host).filter((h) => h.endsWith(`.${cfg.DOMAIN}`))];
  const images = cfg.IMAGE_REGISTRY
    ? `  Images       ${cfg.IMAGE_REGISTRY}   (IMAGE_REGISTRY: apps are pushed there with your docker login; the nodes pull from it)`
    : existing
      ? '  Images       loaded into the kind/k3d nodes (`kind load`, `k3d image import`); other clusters need IMAGE_REGISTRY'
      : `  Registry     localhost:${cfg.REGISTRY_PORT}   (docker push localhost:${cfg.REGISTRY_PORT}/<image>:<tag>; pods pull the same name)`;
  const lines = [
    kleur.bold('Endpoints'),
    ...(existing ? [reached ? `  Ingress      ${cfg.INGRESS_CLASS ? '' : 'Traefik Service '}${reached.how}` : kleur.yellow(`  Ingress      no address: ${ingress && 'missing' in ingress ? ingress.missing : 'not read'}`)] : []),
    `  Grafana      ${url('grafana', '/')}`,
    `               user admin, password in ${password}${missing(password, 'observability')}`,
    `               (cat ${password}, or: kubectl -n monitoring get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d)`,
    `  Prometheus   ${url('prometheus', '/')}`,
    `  Alertmanager ${url('alertmanager', '/')}   (alerts and silences; ${cfg.ALERT_WEBHOOK_URL ? 'also sent to ALERT_WEBHOOK_URL' : 'no receiver outside this machine: ALERT_WEBHOOK_URL not set'})`,
    // With INGRESS_CLASS there is no Traefik, hence no dashboard route.
    ...(cfg.INGRESS_CLASS ? [] : [`  Traefik      ${url('traefik', '/dashboard/')}`]),
    `  Sample app   ${url('app', '/')}`,
    ...others.map((a) => `  App ${a.name.padEnd(8)} ${url(a.host.slice(0, -cfg.DOMAIN.length - 1), '/')}   dashboard ${url('grafana', `/d/${a.dashboard}`)}`),
    images,
    '',
    kleur.bold('TLS'),
    `  CA certificate ${ca}${missing(ca, 'traefik')}`,
    `  Trust it in your browser or system, or: curl --cacert ${ca} ${url('grafana', '/api/health')}`,
  ];
  if (existing) {
    lines.push('', kleur.bold('Names'));
    if (reached?.isHostname) {
      lines.push(`  *.${cfg.DOMAIN} must point at ${reached.address}: a DNS CNAME record (a load balancer's name, its addresses may change).`);
    } else if (reached) {
      lines.push(
        `  *.${cfg.DOMAIN} must resolve to ${reached.address}: in /etc/hosts or your DNS:`,
        `  ${reached.address} ${hosts.join(' ')}`,
        `  Without it: curl --resolve grafana.${cfg.DOMAIN}:${reached.port}:${reached.address} --cacert ${ca} ${url('grafana', '/api/health')}`,
      );
    }
    const t = clusterTarget(cfg);
    const controller = cfg.INGRESS_CLASS ? ingressService(cfg) : { namespace: 'traefik', service: 'traefik', port: HTTPS_PORT_NAME };
    lines.push(
      ...(controller
        ? [
            '  From a machine that cannot reach that address (what `task validate` does):',
            `  ${toolHint(cfg, 'kubectl')} --namespace ${controller.namespace} port-forward service/${controller.service} 8443:${controller.port}   then https://grafana.${cfg.DOMAIN}:8443/ with *.${cfg.DOMAIN} → 127.0.0.1`,
          ]
        : [
            `  From a machine that cannot reach that address: set INGRESS_SERVICE=<namespace>/<service>[:<port>] in .env to your ${cfg.INGRESS_CLASS} controller's Service,`,
            '  and `task validate` port-forwards to it (this line then says how to do it yourself).',
          ]),
      '',
      kleur.bold('kubectl'),
      `  context ${t.context} (server ${t.server}) from ${t.files.join(':')} (CLUSTER=existing)`,
      `  ${toolHint(cfg, 'kubectl')} get pods --all-namespaces`,
    );
    return lines;
  }
  const address = namesAddress(cfg.HOST_IP);
  if (resolvesByItself(cfg.DOMAIN)) {
    lines.push('', kleur.bold('Names'), `  *.${cfg.DOMAIN} resolves to 127.0.0.1 by itself in Chrome, Edge, Firefox and curl; for Safari run \`task hosts -- --force\`.`);
  } else {
    lines.push(
      '',
      kleur.bold('Names'),
      `  *.${cfg.DOMAIN} must resolve to ${address}: \`task hosts\` adds this line to /etc/hosts (DOMAIN=localhost needs none):`,
      `  ${address} ${hosts.join(' ')}`,
      `  Without it: curl --resolve grafana.${cfg.DOMAIN}:${cfg.HTTPS_PORT}:${address} --cacert ${ca} ${url('grafana', '/api/health')}`,
    );
  }
  lines.push('', kleur.bold('kubectl'), `  export KUBECONFIG=${kubeconfig}${missing(kubeconfig, 'talos')}`, '  (or `task kubeconfig` to add the context to ~/.kube/config)');
  return lines;
}

if (isMain(import.meta.url)) {
  if (process.env.NO_COLOR) kleur.enabled = false;
  try {
    const cfg = loadConfig();
    const ingress = cfg.CLUSTER === 'existing' ? await readIngressAddress(cfg) : undefined;
    console.log(endpointLines(cfg, fs.existsSync, appRecords(cfg), ingress).join('\n'));
  } catch (err) {
    if (!(err instanceof ConfigError || err instanceof UserError)) throw err;
    console.error(kleur.red(`✗ endpoints: ${err.message}`));
    process.exitCode = 1;
  }
}
