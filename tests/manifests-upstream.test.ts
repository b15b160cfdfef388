// Our values and patches against the REAL upstream artefacts, with the real tools. These need
// files that are not in the repository (and must not be), so each block is skipped when they are
// absent, as in CI. To run them locally:
//   Traefik chart:  git -C <mirror of traefik/traefik-helm-chart> archive v41.3.0 traefik | tar -x -C /tmp/traefik-chart   (the default TRAEFIK_CHART_DIR)
//                   TRAEFIK_CHART_DIR=/tmp/traefik-chart/traefik HELM_BIN=$(command -v helm) npx vitest run tests/manifests-upstream.test.ts
//   local-path:     git -C <mirror of rancher/local-path-provisioner> show v0.0.37:deploy/local-path-storage.yaml > /tmp/lpp.yaml   (the default LPP_UPSTREAM)
//                   LPP_UPSTREAM=/tmp/lpp.yaml KUBECTL_BIN=$(command -v kubectl) npx vitest run tests/manifests-upstream.test.ts
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { INGRESS_NODE_PORTS, PINNED, mergeValues, parseConfig } from '../scripts/lib.ts';
import { checkRendered, writeKustomization } from '../scripts/storage.ts';
import { traefikValues } from '../scripts/traefik.ts';
import { unboundedContainers } from './workloads.ts';

const SHARED_TOOLS = '/work/shared/tools/helm.sh';
/** A real tool: from the environment, or from the shared tool script of the development machine. */
function realTool(envName: string, arg: string[]): string | undefined {
  if (process.env[envName]) return process.env[envName];
  if (!fs.existsSync(SHARED_TOOLS)) return undefined;
  const r = spawnSync('bash', [SHARED_TOOLS, ...arg], { encoding: 'utf8' });
  const bin = r.stdout.trim().split('\n').at(-1) ?? '';
  return r.status === 0 && fs.existsSync(bin) ? bin : undefined;
}

const chartDir = process.env.TRAEFIK_CHART_DIR ?? '/tmp/traefik-chart/traefik';
const haveChart = fs.existsSync(path.join(chartDir, 'Chart.yaml'));
const helmBin = haveChart ? realTool('HELM_BIN', []) : undefined;

describe.skipIf(!haveChart || !helmBin)(`Traefik chart ${PINNED.charts.traefik.version} rendered by the real helm`, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'traefik-render-'));
  const render = (values: Record<string, unknown>) => {
    const file = path.join(tmp, `values-${Math.random().toString(36).slice(2)}.yaml`);
    fs.writeFileSync(file, YAML.stringify(values));
    return spawnSync(helmBin!, ['template', 'traefik', chartDir, '--namespace', 'traefik', '--kube-version', PINNED.kubernetes, '--values', file], { encoding: 'utf8' });
  };
  const docs = (out: string) => YAML.parseAllDocuments(out).map((d) => d.toJSON()).filter(Boolean) as any[];

  it('is the pinned chart version', () => {
    expect(YAML.parse(fs.readFileSync(path.join(chartDir, 'Chart.yaml'), 'utf8')).version).toBe(PINNED.charts.traefik.version);
  });

  it('rejects an unknown key (the schema is enforced), so the next test proves ours pass it', () => {
    const r = render({ ...mergeValues(...traefikValues({ HTTP_PORT: 80, HTTPS_PORT: 443 })), logs: { general: { format: 'json' } } });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/schema/);
  });

  it("CLUSTER=existing: no IngressClass rendered, the Ingress provider off, IngressRoutes (CRD provider) still served", () => {
    const r = render(mergeValues(...traefikValues({ HTTP_PORT: 80, HTTPS_PORT: 443 }, 'NodePort')));
    expect(r.status, r.stderr).toBe(0);
    const objs = docs(r.stdout);
    expect(objs.filter((o) => o.kind === 'IngressClass')).toEqual([]);
    const args: string[] = objs.find((o) => o.kind === 'DaemonSet').spec.template.spec.containers[0].args;
    expect(args.some((a) => a.startsWith('--providers.kubernetesingress'))).toBe(false);
    expect(args).toContain('--providers.kubernetescrd');
    // On Talos the chart's own class is kept (the cluster is ours).
    expect(docs(render(mergeValues(...traefikValues({ HTTP_PORT: 80, HTTPS_PORT: 443 }))).stdout).filter((o) => o.kind === 'IngressClass')).toHaveLength(1);
  });

  it.each([
    [80, 443],
    [8080, 8443],
  ])('HTTP_PORT %i / HTTPS_PORT %i: NodePort Service 30080/30443, DaemonSet on workers, redirect to HTTPS_PORT', (http, https) => {
    const r = render(mergeValues(...traefikValues({ HTTP_PORT: http, HTTPS_PORT: https })));
    expect(r.status, r.stderr).toBe(0);
    const objs = docs(r.stdout);
    expect(objs.filter((o) => o.kind === 'Deployment')).toEqual([]);
    const svc = objs.filter((o) => o.kind === 'Service');
    expect(svc).toHaveLength(1);
    expect(svc[0].spec.type).toBe('NodePort');
    expect(svc[0].spec.externalTrafficPolicy).toBe('Cluster');
    expect(svc[0].spec.ports.map((p: any) => [p.name, p.port, p.nodePort])).toEqual([
      ['web', http, INGRESS_NODE_PORTS.http],
      ['websecure', https, INGRESS_NODE_PORTS.https],
    ]);
    expect(r.stdout).not.toMatch(/LoadBalancer/);
    const ds = objs.find((o) => o.kind === 'DaemonSet');
    const pod = ds.spec.template.spec;
    expect(pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions).toEqual([
      { key: 'node-role.kubernetes.io/control-plane', operator: 'DoesNotExist' },
    ]);
    expect(pod.tolerations).toBeUndefined();
    expect(pod.hostNetwork).toBeFalsy();
    const c = pod.containers[0];
    expect(c.ports.every((p: any) => p.hostPort === undefined)).toBe(true);
    expect(c.image).toMatch(/^docker\.io\/traefik:v3\.7\./);
    expect(c.args).toEqual(expect.arrayContaining([
      `--entryPoints.web.http.redirections.entryPoint.to=:${https}`,
      '--entryPoints.web.http.redirections.entryPoint.scheme=https',
      '--entryPoints.web.http.redirections.entryPoint.permanent=false',
      '--entryPoints.websecure.http.tls=true',
      '--api.dashboard=true',
      '--providers.kubernetescrd',
    ]));
    // Runs as non-root without privileges: fine under Talos' default "baseline" policy.
    expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    // A CPU and memory request and a memory limit on every container, like every observability workload.
    expect(unboundedContainers(objs)).toEqual([]);
    expect(objs.filter((o) => o.kind === 'IngressRoute')).toEqual([]);
  });
});

const lppUpstream = process.env.LPP_UPSTREAM ?? '/tmp/lpp.yaml';
const kubectlBin = lppUpstream && fs.existsSync(lppUpstream) ? realTool('KUBECTL_BIN', ['kubectl']) : undefined;

describe.skipIf(!kubectlBin)(`local-path-provisioner ${PINNED.localPathProvisioner}: our kustomization with the real kubectl kustomize`, () => {
  it('applies every patch to the upstream manifest', () => {
    // Rendered as the storage phase renders it (placeholders filled from PINNED), upstream from a file.
    const dir = writeKustomization(parseConfig({ STATE_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'lpp-kustomize-')) }));
    fs.copyFileSync(lppUpstream, path.join(dir, 'upstream.yaml'));
    const k = YAML.parse(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
    k.resources = ['upstream.yaml'];
    fs.writeFileSync(path.join(dir, 'kustomization.yaml'), YAML.stringify(k));
    const out = execFileSync(kubectlBin!, ['kustomize', dir], { encoding: 'utf8' });
    const objs = YAML.parseAllDocuments(out).map((d) => d.toJSON()).filter(Boolean) as any[];
    expect(checkRendered(objs)).toEqual([]);
    expect(objs.find((o) => o.kind === 'Deployment').spec.template.spec.containers[0].resources).toEqual({ requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } });
    // Upstream's other ConfigMap keys survive the patch.
    const cm = objs.find((o) => o.kind === 'ConfigMap');
    expect(Object.keys(cm.data).sort()).toEqual(['config.json', 'helperPod.yaml', 'setup', 'teardown']);
    // Our helper pod template is upstream's with only the image pinned and resources added.
    const upstreamCm = YAML.parseAllDocuments(fs.readFileSync(lppUpstream, 'utf8')).map((d) => d.toJSON()).find((o) => o?.kind === 'ConfigMap');
    const upstreamHelper = YAML.parse(upstreamCm.data['helperPod.yaml']);
    expect(upstreamHelper.spec.containers[0].image).toBe('docker.io/library/busybox');
    expect(upstreamHelper.spec.containers[0].resources).toBeUndefined();
    upstreamHelper.spec.containers[0].image = PINNED.busyboxImage;
    upstreamHelper.spec.containers[0].resources = { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } };
    expect(YAML.parse(cm.data['helperPod.yaml'])).toEqual(upstreamHelper);
  });
});
