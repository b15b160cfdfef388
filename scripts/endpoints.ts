// `task endpoints`: prints every URL of the platform and of each app `task app` deployed (its route
// and dashboard, from STATE_DIR/apps/*.json), where the Grafana admin password is, the CA
// certificate to trust, the local registry, and the line that points kubectl at the cluster (with
// CLUSTER=existing: the context of KUBECONFIG/KUBE_CONTEXT the platform went to).
// It only reads configuration and checks which state files exist; it calls no tool.
//
// .env keys: DOMAIN, HOST_IP, HTTPS_PORT, REGISTRY_PORT, STATE_DIR, ALERT_WEBHOOK_URL (only whether it is set),
//   CLUSTER, KUBECONFIG, KUBE_CONTEXT (the kubectl lines).
// Tools: none.
import fs from 'node:fs';
import kleur from 'kleur';
import { type Config, ConfigError, INGRESS_HOSTS, UserError, appRecords, clusterTarget, isMain, kubeconfigPath, loadConfig, ingressUrl, namesAddress, resolvesByItself, statePath, toolHint } from './lib.ts';

/** The lines `task endpoints` prints. `exists` and `apps` are injectable for tests. */
export function endpointLines(cfg: Config, exists: (file: string) => boolean = fs.existsSync, apps = appRecords(cfg)): string[] {
  const missing = (file: string, task: string) => (exists(file) ? '' : kleur.yellow(` (not there yet: run \`task ${task}\`)`));
  const password = statePath(cfg, 'grafana-admin-password');
  const ca = statePath(cfg, 'certs', 'ca.crt');
  const kubeconfig = kubeconfigPath(cfg);
  const others = apps.filter((a) => a.host !== `app.${cfg.DOMAIN}`);
  const hosts = [...INGRESS_HOSTS.map((h) => `${h}.${cfg.DOMAIN}`), ...others.map((a) => a.host).filter((h) => h.endsWith(`.${cfg.DOMAIN}`))];
  const lines = [
    kleur.bold('Endpoints'),
    `  Grafana      ${ingressUrl(cfg, 'grafana', '/')}`,
    `               user admin, password in ${password}${missing(password, 'observability')}`,
    `               (cat ${password}, or: kubectl -n monitoring get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d)`,
    `  Prometheus   ${ingressUrl(cfg, 'prometheus', '/')}`,
    `  Alertmanager ${ingressUrl(cfg, 'alertmanager', '/')}   (alerts and silences; ${cfg.ALERT_WEBHOOK_URL ? 'also sent to ALERT_WEBHOOK_URL' : 'no receiver outside this machine: ALERT_WEBHOOK_URL not set'})`,
    `  Traefik      ${ingressUrl(cfg, 'traefik', '/dashboard/')}`,
    `  Sample app   ${ingressUrl(cfg, 'app', '/')}`,
    ...others.map((a) => `  App ${a.name.padEnd(8)} ${ingressUrl(cfg, a.host.slice(0, -cfg.DOMAIN.length - 1), '/')}   dashboard ${ingressUrl(cfg, 'grafana', `/d/${a.dashboard}`)}`),
    `  Registry     localhost:${cfg.REGISTRY_PORT}   (docker push localhost:${cfg.REGISTRY_PORT}/<image>:<tag>; pods pull the same name)`,
    '',
    kleur.bold('TLS'),
    `  CA certificate ${ca}${missing(ca, 'traefik')}`,
    `  Trust it in your browser or system, or: curl --cacert ${ca} ${ingressUrl(cfg, 'grafana', '/api/health')}`,
  ];
  const address = namesAddress(cfg.HOST_IP);
  if (resolvesByItself(cfg.DOMAIN)) {
    lines.push('', kleur.bold('Names'), `  *.${cfg.DOMAIN} resolves to 127.0.0.1 by itself in Chrome, Edge, Firefox and curl; for Safari run \`task hosts -- --force\`.`);
  } else {
    lines.push(
      '',
      kleur.bold('Names'),
      `  *.${cfg.DOMAIN} must resolve to ${address}: \`task hosts\` adds this line to /etc/hosts (DOMAIN=localhost needs none):`,
      `  ${address} ${hosts.join(' ')}`,
      `  Without it: curl --resolve grafana.${cfg.DOMAIN}:${cfg.HTTPS_PORT}:${address} --cacert ${ca} ${ingressUrl(cfg, 'grafana', '/api/health')}`,
    );
  }
  if (cfg.CLUSTER === 'existing') {
    const t = clusterTarget(cfg);
    lines.push('', kleur.bold('kubectl'), `  context ${t.context} (server ${t.server}) from ${t.files.join(':')}`, `  ${toolHint(cfg, 'kubectl')} get pods --all-namespaces`);
  } else {
    lines.push('', kleur.bold('kubectl'), `  export KUBECONFIG=${kubeconfig}${missing(kubeconfig, 'talos')}`, '  (or `task kubeconfig` to add the context to ~/.kube/config)');
  }
  return lines;
}

if (isMain(import.meta.url)) {
  if (process.env.NO_COLOR) kleur.enabled = false;
  try {
    console.log(endpointLines(loadConfig()).join('\n'));
  } catch (err) {
    if (!(err instanceof ConfigError || err instanceof UserError)) throw err;
    console.error(kleur.red(`✗ endpoints: ${err.message}`));
    process.exitCode = 1;
  }
}
