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
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
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
