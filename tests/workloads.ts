// Rendered Kubernetes workloads, read for their resources: shared by the render tests
// (tests/observability-render.test.ts, tests/manifests-upstream.test.ts).
import { parseQuantity } from '../scripts/lib.ts';

export interface K8sObject {
  kind: string;
  metadata: { name: string };
  [k: string]: any;
}

interface Container { name: string; resources?: { requests?: Record<string, string>; limits?: Record<string, string> } }
export const podSpec = (o: K8sObject) => (o.kind === 'Pod' ? o.spec : o.spec?.template?.spec);
export const containersOf = (o: K8sObject): Container[] => [...(podSpec(o)?.initContainers ?? []), ...(podSpec(o)?.containers ?? [])];
export const WORKLOADS = ['Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'Pod'];

/** CPU in millicores, memory in MiB, from Kubernetes quantities (parsed as `task footprint` parses them). */
export function quantity(raw: string | number | undefined, unit: 'cpu' | 'memory'): number {
  if (raw === undefined) return NaN;
  return unit === 'cpu' ? parseQuantity(raw) * 1000 : parseQuantity(raw) / 2 ** 20;
}

/** Containers without a CPU and memory request and a memory limit (or with a request above the limit). */
export function unboundedContainers(objs: K8sObject[]): string[] {
  return objs.filter((o) => WORKLOADS.includes(o.kind)).flatMap((o) =>
    containersOf(o)
      .filter((c) => {
        const r = c.resources ?? {};
        const request = quantity(r.requests?.memory, 'memory');
        const limit = quantity(r.limits?.memory, 'memory');
        return !(quantity(r.requests?.cpu, 'cpu') > 0 && request > 0 && limit >= request);
      })
      .map((c) => `${o.kind}/${o.metadata.name} container ${c.name}: ${JSON.stringify(c.resources ?? {})}`),
  );
}
