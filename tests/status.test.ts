// `task status` with the stand-in tools: one line per component with state and version, exit 0
// only when every component is ok, and nothing mutating.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { RELEASES, releaseStatus } from '../scripts/status.ts';
import { isMutating, makeSandbox } from './helpers.ts';
import { deployedCluster, deploymentObj, healthyObjects, podObj } from './fixtures/validate/cluster.ts';

// Each test starts scripts as processes (node + tsx + stand-in tools): room for a loaded CI machine.
vi.setConfig({ testTimeout: 60000 });

const lines = (out: string) => out.trim().split('\n').map((l) => l.replace(/\s+/g, ' ').trim());

describe('task status', () => {
  it('healthy platform: a line per component with state and version, exit 0, read-only', async () => {
    const sb = makeSandbox();
    deployedCluster(sb);
    const r = await sb.run('status');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(lines(r.stdout)).toEqual([
      'cluster ok Kubernetes v1.36.3 3/3 nodes Ready',
      'storage ok v0.0.37 1/1 replicas ready',
      'traefik ok traefik-41.3.0 (app v3.6.2) deployed, 2/2 pods Ready',
      'prometheus ok prometheus-29.27.0 (app v3.8.0) deployed, 2/2 pods Ready',
      'loki ok loki-18.11.0 (app 3.6.0) deployed, 1/1 pods Ready',
      'tempo ok tempo-2.2.4 (app 2.10.8) deployed, 1/1 pods Ready',
      'k8s-monitoring ok k8s-monitoring-4.4.0 (app 4.4.0) deployed, 2/2 pods Ready',
      'grafana ok grafana-12.11.1 (app 12.3.0) deployed, 1/1 pods Ready',
      'alertmanager ok v0.34.0 1/1 replicas ready',
      'app ok 3f9a1c2b7d4e 2/2 replicas ready; traffic generator 1/1 ready',
    ]);
    expect(r.calls.filter(isMutating)).toEqual([]);
  });

  it('problems show per component and the exit code is 1', async () => {
    const sb = makeSandbox();
    const objects = healthyObjects()
      .filter((o) => !(o.kind === 'Deployment' && o.metadata.name === 'sample-app-traffic'))
      .filter((o) => !(o.kind === 'StatefulSet' && o.metadata.name === 'prometheus-alertmanager'))
      .map((o) =>
        o.metadata.name === 'grafana-6c7d-abcde'
          ? podObj('monitoring', o.metadata.name, false, { 'app.kubernetes.io/instance': 'grafana' })
          : o.kind === 'Deployment' && o.metadata.name === 'sample-app'
            ? deploymentObj('sample-app', 'sample-app', 'localhost:5001/sample-app:3f9a1c2b7d4e', 2, 1)
            : o,
      );
    deployedCluster(sb, objects);
    const state = sb.state();
    state.helm.releases['monitoring/loki'].status = 'failed';
    delete state.helm.releases['monitoring/k8s-monitoring'];
    state.kubectl.notReadyNodes = ['talos-local-worker-2'];
    fs.writeFileSync(sb.fakeState, JSON.stringify(state)); // replaces (scenario() would merge the deleted release back)
    const r = await sb.run('status');
    expect(r.code).toBe(1);
    const out = lines(r.stdout);
    expect(out).toContain('cluster degraded Kubernetes v1.36.3 2/3 nodes Ready');
    expect(out).toContain('loki down loki-18.11.0 (app 3.6.0) failed, 1/1 pods Ready');
    expect(out).toContain('k8s-monitoring missing - not installed in monitoring (run the phase that installs it)');
    expect(out).toContain('grafana degraded grafana-12.11.1 (app 12.3.0) deployed, 0/1 pods Ready');
    expect(out).toContain('app degraded 3f9a1c2b7d4e 1/2 replicas ready; traffic generator off');
    expect(out).toContain('alertmanager missing - StatefulSet prometheus-alertmanager not found: run `task observability`');
  });

  it('a line per app task app recorded (not the sample app twice); one recorded but gone is missing', async () => {
    const sb = makeSandbox();
    deployedCluster(sb, [...healthyObjects(), deploymentObj('shop', 'shop', 'localhost:5001/shop:0123456789ab', 1, 1)]);
    fs.mkdirSync(path.join(sb.stateDir, 'apps'), { recursive: true });
    const rec = (name: string, host: string) => ({ name, namespace: name, host, image: 'x', metricsPort: null, metricsPath: null, dashboard: `app-${name}` });
    for (const [name, host] of [['sample-app', 'app.localhost'], ['shop', 'shop.localhost'], ['gone', 'gone.localhost']]) {
      fs.writeFileSync(path.join(sb.stateDir, 'apps', `${name}.json`), JSON.stringify(rec(name, host)));
    }
    const r = await sb.run('status');
    const out = lines(r.stdout);
    expect(out.filter((l) => l.startsWith('app'))).toEqual([
      'app ok 3f9a1c2b7d4e 2/2 replicas ready; traffic generator 1/1 ready',
      'app gone missing - recorded but not in the cluster: `task app` again, or `task app -- --remove gone`; https://gone.localhost',
      'app shop ok 0123456789ab 1/1 replicas ready; https://shop.localhost',
    ]);
    expect(r.code).toBe(1);
    expect(r.calls.filter(isMutating)).toEqual([]);
  });

  it('a release at another chart version than pinned says so', async () => {
    const sb = makeSandbox();
    deployedCluster(sb);
    const state = sb.state();
    state.helm.releases['monitoring/grafana'].chart = 'grafana-12.0.0';
    sb.scenario(state);
    const r = await sb.run('status');
    expect(lines(r.stdout)).toContain('grafana ok grafana-12.0.0 (app 12.3.0), pinned grafana-12.11.1 deployed, 1/1 pods Ready');
  });

  it('a release left half-installed (pending-install) shows as down, on Helm 3 as on Helm 4', async () => {
    const sb = makeSandbox();
    deployedCluster(sb);
    const state = sb.state();
    state.helm.releases['monitoring/grafana'].status = 'pending-install';
    sb.scenario(state);
    const r = await sb.run('status');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    expect(lines(r.stdout)).toContain('grafana down grafana-12.11.1 (app 12.3.0) pending-install, 1/1 pods Ready');
  });

  it('no cluster: every component down, the first line says to run task talos', async () => {
    const sb = makeSandbox();
    const r = await sb.run('status');
    expect(r.code).toBe(1);
    const out = lines(r.stdout);
    expect(out).toHaveLength(10);
    expect(out[0]).toMatch(/^cluster down - no cluster "talos-local" \(no .*\/state\/kubeconfig\): run `task talos`$/);
    expect(out.slice(1).every((l) => / down - cluster not reachable$/.test(l))).toBe(true);
    expect(r.calls).toEqual([]);
  });

  it('cluster stopped: not reachable, with kubectl\'s reason', async () => {
    const sb = makeSandbox();
    deployedCluster(sb);
    const state = sb.state();
    state.docker.containers['talos-local-controlplane-1'].state = 'exited';
    sb.scenario(state);
    const r = await sb.run('status');
    expect(r.code).toBe(1);
    expect(lines(r.stdout)[0]).toBe('cluster down - not reachable: The connection to the server 127.0.0.1:40123 was refused - did you specify the right host or port?');
  });
});

describe('releaseStatus', () => {
  const spec = RELEASES.find((r) => r.release === 'loki')!;
  const listed = [{ name: 'loki', status: 'deployed', chart: 'loki-18.11.0' }];
  const pod = (ready: boolean) => ({
    metadata: { name: 'loki-0', labels: { 'app.kubernetes.io/instance': 'loki' } },
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  });
  it.each([
    ['its pods Ready', [pod(true)], 'ok'],
    ['a pod not Ready', [pod(false)], 'degraded'],
    ['no pod at all', [], 'degraded'],
  ])('deployed with %s is %s', (_, pods, want) => {
    expect(releaseStatus(spec, listed, pods as never).state).toBe(want);
  });
  it('not installed is missing', () => {
    expect(releaseStatus(spec, [], []).state).toBe('missing');
  });
});
