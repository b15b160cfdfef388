// The phase scripts against a real Kubernetes API server, with the pinned charts: runs only where the
// charts were fetched (locally; skipped in CI), like the render tests:
//   OBS_CHARTS_DIR=/tmp/charts-telemetry npx vitest run tests/realapi-phases.test.ts
// with prometheus, loki, grafana, k8s-monitoring and alloy (grafana/alloy-operator's
// operator/helm-charts/alloy, for the Alloy Operator stand-in) under $OBS_CHARTS_DIR and the traefik
// chart at $TRAEFIK_CHART_DIR (default $OBS_CHARTS_DIR/traefik-src/traefik), each at its pinned version.
// A simcluster (tests/tools/simcluster, with its Alloy Operator stand-in) and the real helm and
// kubectl, as in realapi.test.ts; the charts are packaged into a local Helm repository that
// CHART_REPOSITORY_MIRROR points the phases at. Storage is applied from the upstream local-path
// manifest ($LPP_UPSTREAM, default /tmp/lpp.yaml; the storage phase itself fetches it from GitHub),
// then the traefik, observability and sample-app phases run twice each: the first succeeds, the
// second changes nothing; then `task status`'s script. No Docker here: the sample app's image is "in"
// a stand-in local registry (tests/helpers.ts startStandInRegistry) under its source's tag, so the
// phase skips the build, as it does when the registry has it (no container runs on a simcluster anyway).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STATE_DIR_MARKER, parseConfig } from '../scripts/lib.ts';
import { writeKustomization } from '../scripts/storage.ts';
import { contentHash } from '../scripts/app.ts';
import { APP_DIR } from '../scripts/sample-app.ts';
import { freePortsSync, startStandInRegistry } from './helpers.ts';
// @ts-expect-error: plain ESM module without types
import { KUBE_CLIENTS, REAL_API_PLATFORM, SIMCLUSTER } from './tools/test-tools.mjs';

const PROJECT_DIR = path.resolve(import.meta.dirname, '..');
const chartsDir = process.env.OBS_CHARTS_DIR ?? '';
const traefikChart = process.env.TRAEFIK_CHART_DIR ?? path.join(chartsDir, 'traefik-src', 'traefik');
const lppUpstream = process.env.LPP_UPSTREAM ?? '/tmp/lpp.yaml';
/** The chart folders to serve: every pinned chart, at its pinned version. */
const chartDirs = () => [traefikChart, ...['prometheus', 'loki', 'tempo', 'grafana', 'k8s-monitoring'].map((c) => path.join(chartsDir, c))];
const present =
  (REAL_API_PLATFORM as boolean) &&
  chartsDir !== '' &&
  fs.existsSync(path.join(chartsDir, 'alloy', 'Chart.yaml')) &&
  fs.existsSync(lppUpstream) &&
  chartDirs().every((d) => fs.existsSync(path.join(d, 'Chart.yaml')));

/** Runs a command without blocking this process (the chart repository is served from it). */
const runAsync = (cmd: string, args: string[], env: NodeJS.ProcessEnv) =>
  new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(cmd, args, { env, cwd: PROJECT_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });

describe.skipIf(!present)('the phases against a real API server with the pinned charts', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'realapi-phases-'));
  const simDir = path.join(tmp, 'simcluster');
  const stateDir = path.join(tmp, 'state');
  const clientsPath = `${KUBE_CLIENTS.binDir()}${path.delimiter}${process.env.PATH}`;
  const simEnv = (extra: NodeJS.ProcessEnv = {}) => ({ ...process.env, PATH: clientsPath, SIMCLUSTER_BIN: SIMCLUSTER.binDir(), SIMCLUSTER_DIR: simDir, ...extra });
  let server: http.Server;
  let registry: Awaited<ReturnType<typeof startStandInRegistry>>;
  let env: NodeJS.ProcessEnv;
  const phase = (name: string) => runAsync(process.execPath, ['--import', 'tsx', path.join(PROJECT_DIR, 'scripts', `${name}.ts`)], env);
  const kubectl = (args: string[], input?: string) => execFileSync('kubectl', ['--kubeconfig', path.join(stateDir, 'kubeconfig'), ...args], { env, input, encoding: 'utf8' });

  beforeAll(async () => {
    const [api, etcd, peer] = freePortsSync(3).map(String);
    const kubeconfig = execFileSync('bash', [path.join(SIMCLUSTER.dir, 'up.sh')], {
      env: simEnv({ SIMCLUSTER_API_PORT: api, SIMCLUSTER_ETCD_PORT: etcd, SIMCLUSTER_ETCD_PEER_PORT: peer, SIMCLUSTER_ALLOY_OPERATOR: '1', ALLOY_CHART: path.join(chartsDir, 'alloy') }),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    // The state dir as the talos phase leaves it: ours, with the cluster's kubeconfig.
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(path.join(stateDir, STATE_DIR_MARKER), '');
    fs.copyFileSync(kubeconfig, path.join(stateDir, 'kubeconfig'));

    const repoDir = path.join(tmp, 'repo');
    fs.mkdirSync(repoDir);
    const helmHome = { HELM_CACHE_HOME: path.join(tmp, 'helm-cache'), HELM_CONFIG_HOME: path.join(tmp, 'helm-config'), HELM_DATA_HOME: path.join(tmp, 'helm-data') };
    for (const dir of chartDirs()) execFileSync('helm', ['package', dir, '--destination', repoDir], { env: simEnv(helmHome), stdio: 'ignore' });
    execFileSync('helm', ['repo', 'index', repoDir], { env: simEnv(helmHome) });
    server = http.createServer((req, res) => {
      const file = path.join(repoDir, path.basename(new URL(req.url ?? '/', 'http://x').pathname));
      if (fs.existsSync(file) && fs.statSync(file).isFile()) res.writeHead(200).end(fs.readFileSync(file));
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const [HTTP_PORT, HTTPS_PORT] = freePortsSync(2).map(String);
    registry = await startStandInRegistry(() => ({ [`localhost:${registry.port}/sample-app:${contentHash(APP_DIR)}`]: `sha256:${'0'.repeat(64)}` }));
    env = {
      ...process.env,
      ...helmHome,
      PATH: clientsPath,
      STATE_DIR: stateDir,
      ENV_FILE: path.join(tmp, 'no.env'),
      NO_COLOR: '1',
      HTTP_PORT,
      HTTPS_PORT,
      REGISTRY_PORT: String(registry.port),
      CHART_REPOSITORY_MIRROR: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    };

    // Storage as the storage phase renders it, from the upstream manifest on disk.
    const dir = writeKustomization(parseConfig({ STATE_DIR: stateDir }));
    fs.copyFileSync(lppUpstream, path.join(dir, 'upstream.yaml'));
    const k = YAML.parse(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
    k.resources = ['upstream.yaml'];
    fs.writeFileSync(path.join(dir, 'kustomization.yaml'), YAML.stringify(k));
    kubectl(['apply', '-f', '-'], kubectl(['kustomize', dir]));
  }, 300_000);

  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await registry?.close();
    execFileSync('bash', [path.join(SIMCLUSTER.dir, 'down.sh'), '--purge'], { env: simEnv(), stdio: 'inherit' });
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const name of ['traefik', 'observability', 'sample-app']) {
    it(`${name}: the first run succeeds, the second changes nothing`, async () => {
      const first = await phase(name);
      expect(first.code, first.out).toBe(0);
      const second = await phase(name);
      expect(second.code, second.out).toBe(0);
      expect(second.out, second.out).toMatch(/done in [\d.]+s: \d+ steps, nothing changed/);
    }, 900_000);
  }

  it('Pod Security: each namespace enforces the strictest level all its pods pass (baseline when unlabelled, the cluster default)', () => {
    const LEVELS = ['restricted', 'baseline', 'privileged'];
    let n = 0;
    /** Whether the real admission takes this pod's spec in a fresh namespace enforcing `level` (a server-side dry run). */
    const admits = (spec: unknown, level: string) => {
      const ns = `psa-check-${level}-${++n}`;
      kubectl(['create', 'namespace', ns]);
      kubectl(['label', 'namespace', ns, `pod-security.kubernetes.io/enforce=${level}`]);
      // The ServiceAccount admission refuses a pod until the namespace's default ServiceAccount exists.
      kubectl(['wait', '--for=create', 'serviceaccount/default', '-n', ns, '--timeout=30s']);
      try {
        execFileSync('kubectl', ['--kubeconfig', path.join(stateDir, 'kubeconfig'), 'create', '--dry-run=server', '-n', ns, '-f', '-'], {
          env,
          input: JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'check' }, spec }),
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        return true;
      } catch (err) {
        const stderr = String((err as { stderr?: string }).stderr);
        if (!stderr.includes('violates PodSecurity')) throw new Error(`not a Pod Security rejection: ${stderr}`);
        return false;
      } finally {
        kubectl(['delete', 'namespace', ns, '--wait=false']);
      }
    };
    const found: Record<string, { enforced: string; strictestThatWorks: string }> = {};
    for (const ns of ['local-path-storage', 'traefik', 'monitoring', 'sample-app']) {
      const labels = JSON.parse(kubectl(['get', 'namespace', ns, '-o', 'json'])).metadata.labels ?? {};
      const pods = JSON.parse(kubectl(['get', 'pods', '-n', ns, '-o', 'json'])).items as { spec: Record<string, unknown> }[];
      expect(pods.length, ns).toBeGreaterThan(0);
      // Each pod's spec as its controller made it, without what ties it to its own namespace and node.
      const specs = pods.map((p) => ({ ...p.spec, nodeName: undefined, serviceAccountName: undefined, serviceAccount: undefined }));
      found[ns] = {
        enforced: labels['pod-security.kubernetes.io/enforce'] ?? 'baseline',
        strictestThatWorks: LEVELS.find((level) => specs.every((spec) => admits(spec, level)))!,
      };
    }
    // local-path-storage's helper pods (hostPath) are made only for a volume: realapi.test.ts proves them.
    found['local-path-storage'].strictestThatWorks = 'privileged';
    expect(found).toEqual(Object.fromEntries(Object.entries(found).map(([ns, f]) => [ns, { enforced: f.strictestThatWorks, strictestThatWorks: f.strictestThatWorks }])));
  }, 120_000);

  it('status: every component ok', async () => {
    const r = await phase('status');
    expect(r.code, r.out).toBe(0);
    for (const component of ['cluster', 'storage', 'traefik', 'prometheus', 'loki', 'k8s-monitoring', 'grafana', 'alertmanager', 'app']) {
      expect(r.out, r.out).toMatch(new RegExp(`^${component} +ok `, 'm'));
    }
  }, 120_000);
});
