// scripts/sample-app.ts (through scripts/app.ts): the image tag (content hash), the manifests
// (validated with kubernetes-models, plus the platform's own rules), and the orchestration with the stand-in tools
// (tests/fakes) and a stand-in registry: a local HTTP server that answers the registry API's
// HEAD /v2/<name>/manifests/<tag> from what the stand-in `docker push` pushed.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ConfigMap, Namespace, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import YAML from 'yaml';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { appDashboard, appManifests, contentHash, contextFiles, imageRef, registryHasTag, registryUrl } from '../scripts/app.ts';
import { APP_DIR, SAMPLE_APP_EXTRAS, SAMPLE_APP_SPEC, trafficManifest } from '../scripts/sample-app.ts';
import { PROJECT_DIR, type Sandbox, type ToolCall, callsOf, closedPort, isMutating, makeSandbox, startStandInRegistry } from './helpers.ts';

const TAG = contentHash(APP_DIR);

// ---------------------------------------------------------------------------------------------
// The image tag
// ---------------------------------------------------------------------------------------------

describe('registryUrl (where this machine asks the local registry for a tag)', () => {
  it.each([
    ['127.0.0.1', 'http://127.0.0.1:5001'],
    ['192.168.1.20', 'http://192.168.1.20:5001'],
    // Published on every address: ask the loopback one, not the "any" address.
    ['0.0.0.0', 'http://127.0.0.1:5001'],
  ])('HOST_IP=%s -> %s', (HOST_IP, want) => {
    expect(registryUrl({ HOST_IP, REGISTRY_PORT: 5001 })).toBe(want);
  });
});

describe('content hash (the image tag)', () => {
  const copy = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sample-app-src-'));
    for (const rel of contextFiles(APP_DIR)) {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.copyFileSync(path.join(APP_DIR, rel), path.join(dir, rel));
    }
    return dir;
  };

  it('covers the sources, Dockerfile and lockfile, and leaves out node_modules and dist', () => {
    const files = contextFiles(APP_DIR);
    expect(files).toEqual(expect.arrayContaining(['Dockerfile', '.dockerignore', 'package.json', 'package-lock.json', 'tsconfig.json', 'src/server.ts', 'src/app.ts']));
    expect(files.filter((f) => /^(node_modules|dist)\//.test(f))).toEqual([]);
  });

  it('is the same for the same source, whatever node_modules and dist hold', () => {
    const dir = copy();
    expect(contentHash(dir)).toBe(TAG);
    fs.mkdirSync(path.join(dir, 'node_modules', 'x'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'node_modules', 'x', 'index.js'), 'x');
    fs.mkdirSync(path.join(dir, 'dist'));
    fs.writeFileSync(path.join(dir, 'dist', 'server.js'), 'y');
    expect(contentHash(dir)).toBe(TAG);
    expect(TAG).toMatch(/^[0-9a-f]{12}$/);
  });

  it.each([
    ['a source edit', (d: string) => fs.appendFileSync(path.join(d, 'src', 'app.ts'), '\n// edit\n')],
    ['a Dockerfile edit', (d: string) => fs.appendFileSync(path.join(d, 'Dockerfile'), '\n')],
    ['a new file', (d: string) => fs.writeFileSync(path.join(d, 'src', 'extra.ts'), '')],
    ['a renamed file', (d: string) => fs.renameSync(path.join(d, 'src', 'traffic.ts'), path.join(d, 'src', 'traffic2.ts'))],
  ])('changes with %s', (_, change) => {
    const dir = copy();
    change(dir);
    expect(contentHash(dir)).not.toBe(TAG);
  });

  it('names the image in the local registry as the nodes pull it', () => {
    expect(imageRef({ REGISTRY_PORT: 5001 }, 'sample-app', 'abc123abc123')).toBe('localhost:5001/sample-app:abc123abc123');
  });
});

describe('Dockerfile', () => {
  const text = fs.readFileSync(path.join(APP_DIR, 'Dockerfile'), 'utf8');
  it('is multi-stage on a fully pinned node alpine image, compiles with tsc and runs dist/server.js as non-root', () => {
    const froms = [...text.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBe(2);
    for (const f of froms) expect(f).toMatch(/^node:\d+\.\d+\.\d+-alpine\d+\.\d+$/);
    expect(text).toMatch(/RUN npm ci\b/);
    expect(text).toMatch(/npx tsc -p \./);
    expect(text).toMatch(/npm prune --omit=dev/);
    expect(text).toMatch(/^USER [1-9]\d*:[1-9]\d*$/m);
    expect(text).toMatch(/^CMD \["node", "dist\/server\.js"\]$/m);
    expect(text).toMatch(/^EXPOSE 8080$/m);
  });
});

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

const IMAGE = 'localhost:5001/sample-app:0123456789ab';
const docsOf = (text: string) => YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean);

describe('manifests', () => {
  const { namespace, app } = appManifests(SAMPLE_APP_SPEC, IMAGE, 'localhost', appDashboard({ name: 'sample-app', namespace: 'sample-app', metricNames: [] }), SAMPLE_APP_EXTRAS);
  const traffic = trafficManifest(IMAGE);
  const all = [...docsOf(namespace), ...docsOf(app), ...docsOf(traffic)];
  const find = (kind: string, name: string) => all.find((d) => d.kind === kind && d.metadata.name === name);

  it('are valid Kubernetes objects (kubernetes-models)', () => {
    expect(all.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      'Namespace/sample-app', 'Deployment/sample-app', 'Service/sample-app', 'IngressRoute/app', 'ConfigMap/sample-app-dashboard', 'Deployment/sample-app-traffic',
    ]);
    const models: Record<string, new (o: any) => { validate(): void }> = { Namespace, Service, Deployment, ConfigMap };
    for (const d of all.filter((x) => x.kind !== 'IngressRoute')) expect(() => new models[d.kind](d).validate(), `${d.kind}/${d.metadata.name}`).not.toThrow();
    for (const d of all.filter((x) => x.kind !== 'Namespace')) expect(d.metadata.namespace).toBe('sample-app');
  });

  it('keep the Namespace apart, so it is applied before the objects in it', () => {
    expect(docsOf(namespace).map((d) => d.kind)).toEqual(['Namespace']);
    expect(docsOf(app).map((d) => d.kind)).toEqual(['Deployment', 'Service', 'IngressRoute', 'ConfigMap']);
    expect(docsOf(traffic).map((d) => d.kind)).toEqual(['Deployment']);
  });

  it('fill in the image and leave no placeholder', () => {
    expect(namespace + app + traffic).not.toMatch(/\$\{[A-Z0-9_]+\}/);
    expect(find('Deployment', 'sample-app').spec.template.spec.containers[0].image).toBe(IMAGE);
    expect(find('Deployment', 'sample-app-traffic').spec.template.spec.containers[0].image).toBe(IMAGE);
  });

  it('run the app with 2 replicas, probes, resources and the scrape annotations', () => {
    const d = find('Deployment', 'sample-app');
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.template.metadata.annotations).toEqual({
      'prometheus.io/scrape': 'true', 'prometheus.io/port': '8080', 'prometheus.io/path': '/metrics',
    });
    const c = d.spec.template.spec.containers[0];
    expect(c.ports).toEqual([{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    for (const r of ['requests', 'limits']) for (const k of ['cpu', 'memory']) expect(c.resources[r][k], `${r}.${k}`).toBeTruthy();
    // The selector picks the template's pods, and not the traffic generator's.
    expect(d.spec.template.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
    const t = find('Deployment', 'sample-app-traffic');
    expect(Object.entries(d.spec.selector.matchLabels).every(([k, v]) => t.spec.template.metadata.labels[k] === v)).toBe(false);
  });

  it('Service sample-app: port 80 to the container port 8080, selecting only the app pods', () => {
    const s = find('Service', 'sample-app');
    const d = find('Deployment', 'sample-app');
    expect(s.spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }]);
    expect(d.spec.template.spec.containers[0].ports.find((p: any) => p.name === 'http').containerPort).toBe(8080);
    expect(s.spec.selector).toEqual(d.spec.selector.matchLabels);
  });

  it('meet Pod Security "restricted", which the namespace enforces', () => {
    expect(find('Namespace', 'sample-app').metadata.labels['pod-security.kubernetes.io/enforce']).toBe('restricted');
    for (const name of ['sample-app', 'sample-app-traffic']) {
      const pod = find('Deployment', name).spec.template.spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(pod.hostNetwork ?? false).toBe(false);
      for (const c of pod.containers) {
        expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
        expect(c.securityContext.privileged ?? false).toBe(false);
      }
    }
  });

  it('traffic generator: the same image in generator mode, aimed at the Service, not scraped, never probing', () => {
    const t = find('Deployment', 'sample-app-traffic');
    const c = t.spec.template.spec.containers[0];
    expect(c.command).toEqual(['node', 'dist/traffic.js']);
    expect(c.env.find((e: any) => e.name === 'TARGET_URL').value).toBe('http://sample-app.sample-app.svc');
    expect(t.spec.template.metadata.annotations).toBeUndefined();
    expect(JSON.stringify(t)).not.toMatch(/probe\?id/);
    expect(fs.existsSync(path.join(APP_DIR, 'src', 'traffic.ts'))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// The registry check
// ---------------------------------------------------------------------------------------------

describe('registryHasTag', () => {
  it('answers from the registry API: 200 yes, 404 no, refused or another answer is an error naming task talos or the port', async () => {
    const reg = await startStandInRegistry(() => ({ [`localhost:${reg.port}/sample-app:aaa`]: 'sha256:1' }));
    const base = `http://127.0.0.1:${reg.port}`;
    expect(await registryHasTag(base, 'sample-app', 'aaa')).toBe(true);
    expect(await registryHasTag(base, 'sample-app', 'bbb')).toBe(false);
    expect(reg.requests).toEqual(['HEAD /v2/sample-app/manifests/aaa', 'HEAD /v2/sample-app/manifests/bbb']);
    await reg.close();
    await expect(registryHasTag(`http://127.0.0.1:${await closedPort()}`, 'sample-app', 'aaa')).rejects.toThrow(/does not answer.*run task talos first/);
    const other = http.createServer((_, res) => res.writeHead(401).end());
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    await expect(registryHasTag(`http://127.0.0.1:${(other.address() as AddressInfo).port}`, 'sample-app', 'aaa')).rejects.toThrow(/HTTP 401.*REGISTRY_PORT/);
    other.close();
  });
});

// ---------------------------------------------------------------------------------------------
// The phase, with the stand-in tools
// ---------------------------------------------------------------------------------------------

const obj = (sb: Sandbox, key: string) => sb.state().kubectl.objects[key];
const mutating = (calls: { tool: string; argv: string[] }[]) => calls.filter(isMutating);

describe('task sample-app (stand-in tools)', { timeout: 60000 }, () => {
  let sb: Sandbox;
  let registry: Awaited<ReturnType<typeof startStandInRegistry>>;
  let env: Record<string, string>;
  let ref: string;
  const registries: (typeof registry)[] = [];
  afterAll(async () => {
    for (const r of registries) await r.close();
  });

  beforeEach(async () => {
    sb = makeSandbox();
    registry = await startStandInRegistry(() => sb.state().docker.pushed ?? {});
    registries.push(registry);
    env = { REGISTRY_PORT: String(registry.port) };
    ref = `localhost:${registry.port}/sample-app:${TAG}`;
  });

  it('first run: builds, pushes, applies app, Service and traffic generator, waits for the rollout', async () => {
    sb.createCluster();
    const r = await sb.run('sample-app', [], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(registry.requests).toContain(`HEAD /v2/sample-app/manifests/${TAG}`);
    expect(callsOf(r.calls, 'docker', 'build').map((c) => c.argv)).toEqual([
      ['build', '--tag', ref, '--label', `org.opencontainers.image.revision=${TAG}`, path.join(PROJECT_DIR, 'sample-app')],
    ]);
    expect(callsOf(r.calls, 'docker', 'push').map((c) => c.argv)).toEqual([['push', ref]]);
    expect(sb.state().docker.pushed[ref]).toMatch(/^sha256:/);
    const app = obj(sb, 'Deployment/sample-app/sample-app');
    expect(app.spec.template.spec.containers[0].image).toBe(ref);
    expect(app.spec.template.metadata.annotations['prometheus.io/scrape']).toBe('true');
    expect(obj(sb, 'Service/sample-app/sample-app').spec.ports[0]).toMatchObject({ port: 80 });
    expect(obj(sb, 'Namespace//sample-app')).toBeTruthy();
    expect(obj(sb, 'Deployment/sample-app/sample-app-traffic').spec.template.spec.containers[0].image).toBe(ref);
    const rollouts = r.calls.filter((c) => c.tool === 'kubectl' && c.argv.includes('rollout')).map((c) => c.argv.find((a) => a.startsWith('deployment/')));
    expect(rollouts).toEqual(['deployment/sample-app', 'deployment/sample-app-traffic']);
    // One diff of everything (the namespace is missing), then the namespace, then the app with the
    // traffic generator; each apply after a diff that saw a difference.
    const kube = callsOf(r.calls, 'kubectl').map((c) => c.argv.find((a) => ['diff', 'apply', 'rollout', 'get', 'delete'].includes(a)));
    expect(kube.filter((v) => v === 'diff' || v === 'apply')).toEqual(['diff', 'diff', 'apply', 'diff', 'apply']);
    expect(mutating(r.calls).map((c) => c.tool)).toEqual(['docker', 'docker', 'kubectl', 'kubectl']);
    expect(r.stdout).toMatch(/https:\/\/app\.localhost/);
  });

  it('re-run with unchanged source: no build, no push, no mutating call, "nothing changed"', async () => {
    sb.createCluster();
    expect((await sb.run('sample-app', [], env)).code).toBe(0);
    const r = await sb.run('sample-app', [], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls)).toEqual([]);
    expect(callsOf(r.calls, 'docker')).toEqual([]);
    expect(r.stdout).toMatch(/unchanged \(localhost:\d+\/sample-app:[0-9a-f]{12} is in the registry\)/);
    expect(r.stdout).toMatch(/nothing changed/);
  });

  it('a re-run waits only for a Deployment not rolled out: rolled out ones take one read, no wait', async () => {
    sb.createCluster();
    expect((await sb.run('sample-app', [], env)).code).toBe(0);
    const rollouts = (calls: ToolCall[]) => calls.filter((c) => c.tool === 'kubectl' && c.argv.includes('rollout')).map((c) => c.argv.find((a) => a.startsWith('deployment/')));
    const again = await sb.run('sample-app', [], env);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(rollouts(again.calls)).toEqual([]);
    expect(again.stdout).toContain('sample-app, sample-app-traffic ready (rolled out already)');
    // The app's controller has not rolled out its generation (a pod replaced, not yet available).
    sb.scenario({ kubectl: { observed: { 'Deployment/sample-app/sample-app': 0 } } });
    const waiting = await sb.run('sample-app', [], env);
    expect(waiting.code, waiting.stdout + waiting.stderr).toBe(0);
    expect(rollouts(waiting.calls)).toEqual(['deployment/sample-app']);
  });

  it('a source change (deployed tag differs): builds and pushes the new tag and rolls the Deployments to it', async () => {
    sb.createCluster();
    expect((await sb.run('sample-app', [], env)).code).toBe(0);
    // Make the cluster and registry look as if an older source had been deployed.
    const old = JSON.parse(fs.readFileSync(sb.fakeState, 'utf8').replaceAll(TAG, 'a1b2c3d4e5f6'));
    fs.writeFileSync(sb.fakeState, JSON.stringify(old));
    expect(obj(sb, 'Deployment/sample-app/sample-app').spec.template.spec.containers[0].image).toMatch(/:a1b2c3d4e5f6$/);
    const r = await sb.run('sample-app', [], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(callsOf(r.calls, 'docker', 'build')).toHaveLength(1);
    expect(callsOf(r.calls, 'docker', 'push').map((c) => c.argv[1])).toEqual([ref]);
    expect(obj(sb, 'Deployment/sample-app/sample-app').spec.template.spec.containers[0].image).toBe(ref);
    expect(obj(sb, 'Deployment/sample-app/sample-app-traffic').spec.template.spec.containers[0].image).toBe(ref);
    // A changed Deployment has a new generation: its rollout is waited for.
    expect(r.calls.filter((c) => c.tool === 'kubectl' && c.argv.includes('rollout')).map((c) => c.argv.find((a) => a.startsWith('deployment/')))).toEqual(['deployment/sample-app', 'deployment/sample-app-traffic']);
  });

  it('image built but missing from the registry (registry wiped): pushes without rebuilding', async () => {
    sb.createCluster();
    expect((await sb.run('sample-app', [], env)).code).toBe(0);
    const s = JSON.parse(fs.readFileSync(sb.fakeState, 'utf8'));
    s.docker.pushed = {};
    fs.writeFileSync(sb.fakeState, JSON.stringify(s));
    const r = await sb.run('sample-app', [], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls).map((c) => `${c.tool} ${c.argv.join(' ')}`)).toEqual([`docker push ${ref}`]);
    expect(r.stdout).toMatch(/pushed localhost/);
  });

  it('SAMPLE_TRAFFIC=false removes the traffic generator, then stays quiet; a fresh deploy without it never creates it', async () => {
    sb.createCluster();
    expect((await sb.run('sample-app', [], env)).code).toBe(0);
    const off = { ...env, SAMPLE_TRAFFIC: 'false' };
    const r = await sb.run('sample-app', [], off);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls).map((c) => c.argv.filter((a) => !a.startsWith('--kubeconfig') && !a.endsWith('kubeconfig')))).toEqual([
      ['delete', 'deployment', 'sample-app-traffic', '--namespace', 'sample-app'],
    ]);
    expect(obj(sb, 'Deployment/sample-app/sample-app-traffic')).toBeUndefined();
    expect(obj(sb, 'Deployment/sample-app/sample-app')).toBeTruthy();
    expect(r.stdout).toMatch(/removed deployment\/sample-app-traffic/);
    const again = await sb.run('sample-app', [], off);
    expect(again.code).toBe(0);
    expect(mutating(again.calls)).toEqual([]);

    const fresh = makeSandbox();
    const reg2 = await startStandInRegistry(() => fresh.state().docker.pushed ?? {});
    registries.push(reg2);
    fresh.createCluster();
    const f = await fresh.run('sample-app', [], { REGISTRY_PORT: String(reg2.port), SAMPLE_TRAFFIC: 'false' });
    expect(f.code, f.stdout + f.stderr).toBe(0);
    expect(fresh.state().kubectl.objects['Deployment/sample-app/sample-app-traffic']).toBeUndefined();
    expect(f.calls.some((c) => c.argv.includes('deployment/sample-app-traffic'))).toBe(false);
  });

  it('--image: builds and pushes only, without a cluster; a re-run changes nothing', async () => {
    const r = await sb.run('sample-app', ['--image'], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(mutating(r.calls).map((c) => `${c.tool} ${c.argv[0]}`)).toEqual(['docker build', 'docker push']);
    expect(callsOf(r.calls, 'kubectl')).toEqual([]);
    expect(sb.state().docker.pushed[ref]).toMatch(/^sha256:/);
    const again = await sb.run('sample-app', ['--image'], env);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.calls).toEqual([]);
    expect(again.stdout).toMatch(/unchanged \(localhost:\d+\/sample-app:[0-9a-f]{12} is in the registry\)/);
    // The deploy after it finds the image in the registry: nothing built or pushed.
    sb.createCluster();
    const deploy = await sb.run('sample-app', [], env);
    expect(deploy.code, deploy.stdout + deploy.stderr).toBe(0);
    expect(callsOf(deploy.calls, 'docker')).toEqual([]);
  });

  it('writes the record other tasks read, with the route app.<DOMAIN>', async () => {
    sb.createCluster();
    expect((await sb.run('sample-app', [], env)).code).toBe(0);
    const record = JSON.parse(fs.readFileSync(path.join(sb.stateDir, 'apps', 'sample-app.json'), 'utf8'));
    expect(record).toEqual({ name: 'sample-app', namespace: 'sample-app', host: 'app.localhost', image: ref, metricsPort: 8080, metricsPath: '/metrics', dashboard: 'app-sample-app' });
    expect(obj(sb, 'IngressRoute/sample-app/app').spec.routes[0].match).toBe('Host(`app.localhost`)');
  });

  it('no cluster: says to run task talos first, exits non-zero, builds and applies nothing', async () => {
    const r = await sb.run('sample-app', [], env);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Run `task talos` first/);
    expect(mutating(r.calls)).toEqual([]);
    expect(callsOf(r.calls, 'docker')).toEqual([]);
  });

  it('registry not answering: says to run task talos first, builds and applies nothing', async () => {
    sb.createCluster();
    const r = await sb.run('sample-app', [], { REGISTRY_PORT: String(await closedPort()) });
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/local registry at http:\/\/127\.0\.0\.1:\d+ does not answer.*run task talos first/);
    expect(mutating(r.calls)).toEqual([]);
  });

  it('a failed build: non-zero, the build output shown, nothing pushed or applied', async () => {
    sb.createCluster();
    sb.scenario({ failures: [{ tool: 'docker', argv: ['build'], code: 1, stderr: 'npm error network request to the registry failed' }] });
    const r = await sb.run('sample-app', [], env);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/npm error network request/);
    expect(mutating(r.calls).map((c) => `${c.tool} ${c.argv[0]}`)).toEqual(['docker build']);
  });

  it('a rollout that does not finish: non-zero with the pods, events and the image-pull hint', async () => {
    sb.createCluster();
    sb.scenario({
      failures: [{ tool: 'kubectl', argv: ['rollout', 'deployment/sample-app'], code: 1, stderr: 'error: timed out waiting for the condition' }],
      kubectl: {
        objects: {
          'Pod/sample-app/sample-app-7c9f-abcde': {
            apiVersion: 'v1', kind: 'Pod', metadata: { name: 'sample-app-7c9f-abcde', namespace: 'sample-app' },
            status: { phase: 'Pending', conditions: [{ type: 'Ready', status: 'False' }],
              containerStatuses: [{ name: 'app', ready: false, state: { waiting: { reason: 'ImagePullBackOff' } } }] },
          },
          'Event/sample-app/sample-app-7c9f-abcde.1': {
            apiVersion: 'v1', kind: 'Event', metadata: { name: 'sample-app-7c9f-abcde.1', namespace: 'sample-app' },
            involvedObject: { kind: 'Pod', name: 'sample-app-7c9f-abcde' }, type: 'Warning', reason: 'Failed',
            message: 'Failed to pull image "localhost:15001/sample-app:0123": connection refused',
          },
        },
      },
    });
    const r = await sb.run('sample-app', [], env);
    expect(r.code).not.toBe(0);
    const out = r.stdout + r.stderr;
    expect(out).toMatch(/Deployment sample-app did not become ready within 180s/);
    expect(out).toMatch(/timed out waiting for the condition/);
    expect(out).toContain('pod sample-app/sample-app-7c9f-abcde is not Ready (Pending; app: ImagePullBackOff)');
    expect(out).toContain('event Warning Failed: Failed to pull image "localhost:15001/sample-app:0123": connection refused');
    expect(out).toMatch(/ErrImagePull\/ImagePullBackOff means the nodes cannot pull from the local registry/);
  });
});
