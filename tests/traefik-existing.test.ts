// Traefik on an existing cluster (CLUSTER=existing): the Service type that fits the cluster
// (ingressServiceType over nodes and kube-system's DaemonSets, table-driven) and the values the
// phase installs with it, against the stand-in tools; the Talos path keeps its NodePorts.
import { beforeEach, describe, expect, it } from 'vitest';
import { INGRESS_NODE_PORTS, mergeValues } from '../scripts/lib.ts';
import { type ClusterObject, K3S_SERVICELB_LABEL, ingressServiceType, traefikValues } from '../scripts/traefik.ts';
import { makeSandbox, type Sandbox, existingClusterEnv } from './helpers.ts';

const node = (name: string, providerID?: string, labels: Record<string, string> = {}): ClusterObject => ({
  kind: 'Node',
  metadata: { name, labels },
  ...(providerID ? { spec: { providerID } } : {}),
});
const daemonSet = (name: string): ClusterObject => ({ kind: 'DaemonSet', metadata: { name, namespace: 'kube-system' } });

describe('ingressServiceType', () => {
  it.each([
    ['k3d: svclb DaemonSet of its bundled Traefik', [node('k3d-dev-server-0', 'k3s://k3d-dev-server-0')], [daemonSet('svclb-traefik-4b7a1c2e')], 'LoadBalancer', /ServiceLB.*svclb-traefik/],
    ['k3s with nodes labelled for ServiceLB, no LoadBalancer yet', [node('pi-1', 'k3s://pi-1', { [K3S_SERVICELB_LABEL]: 'true' })], [], 'LoadBalancer', /labelled/],
    ['EKS', [node('ip-10-0-1-2.ec2.internal', 'aws:///eu-west-1a/i-0abc')], [daemonSet('aws-node'), daemonSet('kube-proxy')], 'LoadBalancer', /aws/],
    ['GKE', [node('gke-a-default-pool-1', 'gce://proj/europe-west1-b/gke-a-default-pool-1')], [], 'LoadBalancer', /gce/],
    ['AKS', [node('aks-nodepool1-0', 'azure:///subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/virtualMachineScaleSets/z/virtualMachines/0')], [], 'LoadBalancer', /azure/],
    ['kind: kind:// providerID, no load balancer', [node('dev-control-plane', 'kind://docker/dev/dev-control-plane')], [daemonSet('kindnet'), daemonSet('kube-proxy')], 'NodePort', /no load balancer/],
    ['k3s with ServiceLB disabled and no label', [node('k3s-1', 'k3s://k3s-1')], [], 'NodePort', /no load balancer/],
    ['kubeadm bare metal, no providerID', [node('cp-1')], [daemonSet('kube-proxy')], 'NodePort', /no load balancer/],
    ['a svclb-looking name outside the prefix does not count', [node('n1')], [daemonSet('my-svclb')], 'NodePort', /no load balancer/],
  ])('%s → %s', (_name, nodes, daemonSets, type, why) => {
    const r = ingressServiceType(nodes, daemonSets);
    expect(r.type).toBe(type);
    expect(r.why).toMatch(why);
  });
});

describe('traefikValues', () => {
  const cfg = { HTTP_PORT: 80, HTTPS_PORT: 443 };
  const merged = (type?: 'LoadBalancer' | 'NodePort') => mergeValues(...traefikValues(cfg, type)) as any;
  it('Talos: NodePorts 30080/30443 on the workers, exposed as HTTP_PORT/HTTPS_PORT', () => {
    const v = merged();
    expect(v.service.spec.type).toBe('NodePort');
    expect(v.affinity).toBeDefined();
    expect([v.ports.web.nodePort, v.ports.websecure.nodePort]).toEqual([INGRESS_NODE_PORTS.http, INGRESS_NODE_PORTS.https]);
    expect([v.ports.web.exposedPort, v.ports.websecure.exposedPort]).toEqual([80, 443]);
  });
  it('existing, NodePort: every node, the NodePorts also as the ports the redirect names', () => {
    const v = merged('NodePort');
    expect(v.service.spec.type).toBe('NodePort');
    expect('affinity' in v).toBe(false);
    expect([v.ports.websecure.nodePort, v.ports.websecure.exposedPort]).toEqual([INGRESS_NODE_PORTS.https, INGRESS_NODE_PORTS.https]);
  });
  it.each(['NodePort', 'LoadBalancer'] as const)('existing, %s: no IngressClass and no Kubernetes Ingress provider (the cluster\'s own classes and Ingresses are left alone); Talos keeps both', (type) => {
    const v = merged(type);
    expect(v.ingressClass).toEqual({ enabled: false });
    expect(v.providers.kubernetesIngress.enabled).toBe(false);
    expect(v.providers.kubernetesCRD.enabled).toBe(true);
    expect(merged().ingressClass).toBeUndefined();
    expect(merged().providers.kubernetesIngress.enabled).toBe(true);
  });
  it('existing, LoadBalancer: HTTP_PORT/HTTPS_PORT, NodePorts left to the API server, no nulls', () => {
    const v = merged('LoadBalancer');
    expect(v.service.spec.type).toBe('LoadBalancer');
    expect('nodePort' in v.ports.web || 'nodePort' in v.ports.websecure).toBe(false);
    expect([v.ports.web.exposedPort, v.ports.websecure.exposedPort]).toEqual([80, 443]);
    expect(JSON.stringify(v)).not.toContain('null');
  });
});

describe('traefik phase with CLUSTER=existing against the stand-in tools', { timeout: 60_000 }, () => {
  let sb: Sandbox;
  beforeEach(() => {
    sb = makeSandbox();
    sb.createCluster();
  });
  const release = () => sb.state().helm.releases['traefik/traefik'];

  it('k3d (svclb DaemonSet): installs a LoadBalancer Service and says why; a re-run changes nothing', async () => {
    sb.scenario({
      kubectl: {
        nodes: [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'k3d-dev-server-0', labels: {} }, spec: { providerID: 'k3s://k3d-dev-server-0' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }],
        objects: { 'DaemonSet/kube-system/svclb-traefik-4b7a1c2e': { apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'svclb-traefik-4b7a1c2e', namespace: 'kube-system' } } },
      },
    });
    const r = await sb.run('traefik', [], existingClusterEnv(sb));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Service LoadBalancer: k3s ServiceLB runs \(DaemonSet kube-system\/svclb-traefik-4b7a1c2e\)/);
    expect(release().values.service.spec.type).toBe('LoadBalancer');
    const again = await sb.run('traefik', [], existingClusterEnv(sb));
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing changed/);
  });

  it('kind (no load balancer): NodePort on every node, the Talos affinity left out', async () => {
    sb.scenario({ kubectl: { nodes: [{ apiVersion: 'v1', kind: 'Node', metadata: { name: 'dev-control-plane', labels: { 'node-role.kubernetes.io/control-plane': '' } }, spec: { providerID: 'kind://docker/dev/dev-control-plane' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }] } });
    const r = await sb.run('traefik', [], existingClusterEnv(sb));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Service NodePort: no load balancer found/);
    expect(release().values.service.spec.type).toBe('NodePort');
    expect(release().values.affinity).toBeUndefined();
  });

  it('CLUSTER=talos reads no nodes for it and keeps the values of today', async () => {
    const r = await sb.run('traefik');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.calls.some((c) => c.argv.includes('nodes,daemonsets'))).toBe(false);
    expect(release().values.affinity).toBeDefined();
    expect(r.stdout).toMatch(/DaemonSet on workers, NodePorts 30080\/30443/);
  });
});
