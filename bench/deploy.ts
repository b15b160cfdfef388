// The deploy benchmark (`task bench`, `npx tsx bench/deploy.ts`): runs the real `task deploy`
// against the stand-in tools (tests/fakes, in a sandbox as the tests build it) with the latency
// model bench/latency-model.yaml, which the stand-ins apply (they sleep as it says, scaled, and log
// each call with its phase, its parallel() branch, its fixed wait and each image it pulls). The
// pull-through caches are stand-in registry servers (tests/fakes/stand-in-cache.ts) serving every
// image the charts render (the list tests/images.test.ts prints from the real charts), so the talos
// phase runs the real prefill (scripts/images.ts --prefill) against them during `cluster create`;
// the bench records which images it put through the caches whole, in order.
// It prints, cold (nothing cached) and warm (after `task destroy`, which keeps the caches):
//   - the modelled wall time of the deploy graph: each phase starts when the phases it needs
//     (Taskfile.yml's deploy:* deps) ended, its calls one after another except the branches of a
//     parallel(), each call priced when it starts: an image the prefill had whole by then comes from
//     the cache, else from the internet; the prefill starts with `cluster create`, after create's own
//     pulls on the same line, and the talos phase waits for it as talos.ts does (at most its grace);
//   - the phases, the critical path (the chain that held the deploy back) and when the prefill was done;
//   - the deploy as it ran before the graph and the prefill, computed from the same calls: every
//     phase one after another, no prefill, the observability releases in their two old groups;
//   - their ratio (target: cold ≤ 60 %);
// and the tool calls of a no-op re-run, with how many would change something. validate cannot pass
// here (no stand-in serves the routes, Prometheus or Loki): it runs with --wait 0, and a deploy
// counts when every other phase worked.
// The modelled times come from the calls the real run made, not from real seconds: the process
// starts of tsx and the stand-ins, which dwarf the scaled sleeps on a busy machine, do not count.
// It is a benchmark, not a test: the numbers are modelled, and only as good as the model.
// Env: LATENCY_MODEL overrides the model file. Tools: task (the one `npm test` builds into TOOLS_BIN
// first, else on PATH), and the stand-ins.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { PINNED, type PhaseRecord, PROJECT_DIR, isMain } from '../scripts/lib.ts';
import { parseImageRef } from '../scripts/images.ts';
import { PREFILL_GRACE_SECONDS, UPSTREAMS } from '../scripts/talos.ts';
import { deployGraph } from '../scripts/summary.ts';
import { type ToolCall, isMutating, makeSandbox, startStandInRegistry } from '../tests/helpers.ts';
import { StandInCache, type StoredImage, makeImage } from '../tests/fakes/stand-in-cache.ts';
// @ts-expect-error: plain ESM module without types
import { TOOLS_BIN } from '../tests/tools/test-tools.mjs';

/** One line of the stand-ins' latency log (FAKE_LATENCY_LOG). */
export interface LatencyLine {
  phase: string;
  /** The parallel() branch of lib.ts the call was made in ("" outside any). */
  branch?: string;
  tool: string;
  argv: string[];
  /** Its modelled seconds as the stand-in slept them: every image not pulled before at the internet bandwidth. */
  modelled: number;
  /** The parts of `modelled`: the fixed wait, and each image pulled (warm: it was pulled before, by a call). */
  fixed?: number;
  pulls?: { image: string; MB: number; warm: boolean }[];
  start: number;
  end: number;
}

export interface Bandwidth {
  internet: number;
  cache: number;
}

/** An image the prefill put through its cache whole, in the order the images were complete. */
export interface PrefilledImage {
  image: string;
  MB: number;
  /** Fetched from upstream by the cache (else it was in the cache's storage already). */
  fetched: boolean;
}

/**
 * When each image the prefill put through its caches was there, on the modelled clock: the prefill
 * starts with `talosctl cluster create` (at `start`), shares the one internet line with the create's
 * own pulls (`lead`: their seconds on the line; taken as going first, the conservative order for the
 * prefill), and fetches its images one after another at the line's bandwidth (what the caches already
 * held, at the cache's). Its 4 blobs at a time share the line, so they do not shorten this.
 */
export function prefillTimeline(start: number, lead: number, images: PrefilledImage[], bw: Bandwidth): { done: Map<string, number>; end: number } {
  const done = new Map<string, number>();
  let t = start + lead;
  for (const i of images) {
    t += i.MB / (i.fetched ? bw.internet : bw.cache);
    done.set(i.image, t);
  }
  return { done, end: images.length ? t : start };
}

/**
 * A call's modelled seconds when it starts at `at`: its fixed wait plus each image's pull, from the
 * cache when it was pulled before (warm) or the prefill had it whole by `at`, else from the internet
 * (a pull racing the prefill for the same image is counted as cold). Lines without parts: as logged.
 */
export function callSeconds(line: LatencyLine, at: number, bw: Bandwidth, prefilled = new Map<string, number>()): number {
  if (!line.pulls) return line.modelled;
  const cached = (p: { image: string; warm: boolean }) => p.warm || (prefilled.get(p.image) ?? Infinity) <= at;
  return (line.fixed ?? 0) + line.pulls.reduce((n, p) => n + p.MB / (cached(p) ? bw.cache : bw.internet), 0);
}

/**
 * When the calls under one branch path end if they start at `start`: its own calls one after another,
 * and for each parallel() group started in it, all its branches from the same moment until the
 * longest ends. `seconds(call, at)` is a call's duration when it starts at `at`.
 */
export function branchEnd(calls: LatencyLine[], prefix: string, start: number, seconds: (c: LatencyLine, at: number) => number): number {
  const mine = calls.filter((c) => (c.branch ?? '').startsWith(prefix)).sort((a, b) => a.start - b.start);
  let t = start;
  const groups = new Set<string>();
  for (const c of mine) {
    const branch = c.branch ?? '';
    if (branch === prefix) {
      t += seconds(c, t);
      continue;
    }
    const group = branch.slice(prefix.length).split('.')[0];
    if (groups.has(group)) continue;
    groups.add(group);
    const from = t;
    t = Math.max(...groupBranches(mine, `${prefix}${group}.`).map((b) => branchEnd(mine, b, from, seconds)));
  }
  return t;
}

/** The branch paths of one parallel() group ("0." → "0.0/", "0.1/" …) among the calls. */
const groupBranches = (calls: LatencyLine[], groupPrefix: string) =>
  [...new Set(calls.map((x) => x.branch ?? '').filter((b) => b.startsWith(groupPrefix)).map((b) => b.slice(0, b.indexOf('/', groupPrefix.length) + 1)))];

/** Modelled seconds of the calls under one branch path, each as long as logged. */
export const branchSeconds = (calls: LatencyLine[], prefix = ''): number => branchEnd(calls, prefix, 0, (c) => c.modelled);

const isClusterCreate = (c: LatencyLine) => c.tool === 'talosctl' && c.argv.includes('cluster') && c.argv.includes('create');

export interface DeployModel {
  /** Per phase: its modelled seconds, start and end. */
  phases: Record<string, { seconds: number; start: number; end: number }>;
  /** The graph's modelled wall time: when the last phase ends. */
  wall: number;
  /** The phases one after another. */
  sum: number;
  /** The chain that held the deploy back, first to last. */
  criticalPath: string[];
  /** When the prefill was done, and when the phase that waits for it had finished its calls (undefined: no prefill ran). */
  prefill?: { end: number; nodesReady: number };
}

/**
 * The deploy on the modelled clock: each phase starts when the phases it needs (graph) ended, its
 * calls priced by callSeconds at the moment they start. The phase that runs `talosctl cluster create`
 * starts the prefill with it (prefillTimeline), and after its calls waits for the prefill for at most
 * `graceSeconds` (as talos.ts does). Without `prefill`, every call is as long as logged.
 */
export function modelledDeploy(
  calls: LatencyLine[],
  graph: Record<string, string[]>,
  options: { bandwidth?: Bandwidth; prefill?: { images: PrefilledImage[]; graceSeconds: number } } = {},
): DeployModel {
  const bw = options.bandwidth ?? { internet: 1, cache: 1 };
  const names = [...new Set(calls.map((c) => c.phase))];
  const phases: DeployModel['phases'] = {};
  let prefilled = new Map<string, number>();
  let prefill: DeployModel['prefill'];
  const price = (c: LatencyLine, at: number): number => {
    if (options.prefill && isClusterCreate(c)) {
      // The prefill starts beside create; create's own pulls go over the line first.
      const lead = (c.pulls ?? []).filter((p) => !p.warm).reduce((n, p) => n + p.MB / bw.internet, 0);
      const timeline = prefillTimeline(at, lead, options.prefill.images, bw);
      prefilled = timeline.done;
      prefill = { end: timeline.end, nodesReady: NaN };
    }
    return options.prefill ? callSeconds(c, at, bw, prefilled) : c.modelled;
  };
  const schedule = (phase: string): number => {
    if (!phases[phase]) {
      const start = Math.max(0, ...(graph[phase] ?? []).filter((d) => names.includes(d)).map(schedule));
      const mine = calls.filter((c) => c.phase === phase);
      let end = branchEnd(mine, '', start, price);
      if (prefill && Number.isNaN(prefill.nodesReady) && mine.some(isClusterCreate)) {
        prefill.nodesReady = end;
        end = Math.max(end, Math.min(prefill.end, end + options.prefill!.graceSeconds));
      }
      phases[phase] = { seconds: end - start, start, end };
    }
    return phases[phase].end;
  };
  // The phase that starts the prefill first: the phases after it price their pulls by it.
  const creator = calls.find(isClusterCreate)?.phase;
  if (creator) schedule(creator);
  names.forEach(schedule);
  const wall = Math.max(0, ...Object.values(phases).map((p) => p.end));
  const sum = Object.values(phases).reduce((n, p) => n + p.seconds, 0);
  const criticalPath: string[] = [];
  // The phase that ended last (of those ending together, the one that started last: it waited for the others).
  let last = wall > 0 ? [...names].sort((a, b) => phases[b].end - phases[a].end || phases[b].start - phases[a].start)[0] : undefined;
  while (last) {
    criticalPath.unshift(last);
    const deps = (graph[last] ?? []).filter((d) => names.includes(d));
    last = deps.sort((a, b) => phases[b].end - phases[a].end)[0];
  }
  return { phases, wall, sum, criticalPath, prefill };
}

/**
 * The deploy as it ran before the graph and the prefill (the "before today" sequence): every phase one
 * after another, each call as long as logged (no prefill), and in `regroup.phase` the releases of its
 * parallel() group in the groups they used to run in, one group after another (each as long as its
 * longest release). A branch is a release's when one of its helm calls upgrades that release.
 */
export function sequentialBefore(calls: LatencyLine[], regroup: { phase: string; groups: string[][] }): number {
  let total = 0;
  for (const phase of new Set(calls.map((c) => c.phase))) {
    const mine = calls.filter((c) => c.phase === phase);
    if (phase !== regroup.phase) {
      total += branchSeconds(mine);
      continue;
    }
    const own = mine.filter((c) => !c.branch);
    const releaseOf = (branch: string) =>
      regroup.groups.flat().find((r) => mine.some((c) => (c.branch ?? '').startsWith(branch) && c.tool === 'helm' && c.argv.includes('upgrade') && c.argv.includes(r)));
    const branches = [...new Set(mine.map((c) => c.branch ?? '').filter(Boolean).map((b) => b.slice(0, b.indexOf('/') + 1)))];
    const unplaced = branches.filter((b) => releaseOf(b) === undefined);
    if (unplaced.length) throw new Error(`${phase}: parallel branches ${unplaced.join(', ')} upgrade none of the releases ${regroup.groups.flat().join(', ')}`);
    total += branchSeconds(own);
    for (const group of regroup.groups) {
      total += Math.max(0, ...branches.filter((b) => group.includes(releaseOf(b)!)).map((b) => branchSeconds(mine, b)));
    }
  }
  return total;
}

/** Tool calls of a run, and the mutating ones among them. */
export const callCounts = (calls: ToolCall[]) => ({ total: calls.length, mutating: calls.filter(isMutating).length });

/** The phase records of the last `task deploy` in a phases.log. */
export function lastRunRecords(file: string): PhaseRecord[] {
  const records = readLines<PhaseRecord>(file);
  return records.filter((r) => r.run === records.at(-1)?.run);
}

const readLines = <T>(file: string): T[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : []);
const pct = (x: number) => `${(x * 100).toFixed(0)} %`;

/**
 * What the charts render, as the stand-in helm prints it for each chart at its pinned version: the
 * images the real charts run with our values (tests/images.test.ts renders them with the real helm
 * and prints this list), each in a Deployment; k8s-monitoring with its Alloy Operator (whose version
 * label names the alloy chart) and an Alloy object, which images.ts renders through the alloy chart.
 */
function chartRenders(): Record<string, string> {
  const deployment = (image: string, labels: Record<string, string> = {}) => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'RELEASE-NAME', labels },
    spec: { template: { spec: { containers: [{ name: 'main', image }] } } },
  });
  const docs = (...objects: unknown[]) => objects.map((o) => YAML.stringify(o)).join('---\n');
  const key = (c: { repo: string; chart: string; version: string }) => `${c.repo}|${c.chart}|${c.version}`;
  const { traefik, prometheus, loki, tempo, grafana, k8sMonitoring } = PINNED.charts;
  const alloyOperator = '1.11.1';
  return {
    [key(traefik)]: docs(deployment('docker.io/traefik:v3.7.11')),
    [key(prometheus)]: docs(
      deployment('quay.io/prometheus-operator/prometheus-config-reloader:v0.93.1'),
      deployment('quay.io/prometheus/prometheus:v3.14.0'),
      deployment('quay.io/prometheus/alertmanager:v0.34.0'),
    ),
    [key(loki)]: docs(deployment('docker.io/grafana/loki:3.7.6')),
    [key(tempo)]: docs(deployment('docker.io/grafana/tempo:2.10.8')),
    [key(k8sMonitoring)]: docs(
      deployment('quay.io/prometheus/node-exporter:v1.12.1'),
      deployment(`ghcr.io/grafana/alloy-operator:${alloyOperator}`, { 'app.kubernetes.io/name': 'alloy-operator', 'app.kubernetes.io/version': alloyOperator }),
      deployment('registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.19.1'),
      deployment('ghcr.io/grafana/helm-chart-toolbox-kubectl:0.1.2'),
      { apiVersion: 'collectors.grafana.com/v1alpha1', kind: 'Alloy', metadata: { name: 'k8s-monitoring-alloy-metrics' }, spec: {} },
    ),
    [key({ repo: k8sMonitoring.repo, chart: 'alloy', version: alloyOperator })]: docs(
      deployment('docker.io/grafana/alloy:v1.18.1'),
      deployment('quay.io/prometheus-operator/prometheus-config-reloader:v0.91.0@sha256:7d9e4eea5f1139e602508871f422b0116c60e87c662f3dcd234d5ab60cd0d8c1'),
    ),
    [key(grafana)]: docs(deployment('quay.io/kiwigrid/k8s-sidecar:2.10.1'), deployment('docker.io/grafana/grafana:13.2.0')),
  };
}

/**
 * Stand-in pull-through caches (tests/fakes/stand-in-cache.ts), one per UPSTREAMS registry in the order
 * talos.ts creates them, serving every image the renders and PINNED name; they keep what they served
 * across the runs (as the caches' volumes do across `task destroy`). `completed` lists, per run, the
 * images the prefill fetched whole, in order, and whether the cache had to fetch them upstream.
 */
async function startCaches(refs: string[], sizes: Record<string, { MB: number }>) {
  const byRegistry = new Map<string, StoredImage[]>(UPSTREAMS.map((u) => [u.registry, []]));
  const refOf = new Map<StoredImage, string>();
  for (const ref of refs) {
    const r = parseImageRef(ref);
    const image = makeImage(r.repository, r.tag ?? 'latest', 2, r.digest);
    refOf.set(image, ref);
    byRegistry.get(r.registry)?.push(image);
  }
  const caches = [...byRegistry.values()].map((images) => new StandInCache(images));
  const completed: PrefilledImage[] = [];
  const progress = new Map<string, { served: Set<string>; fetched: boolean }>();
  for (const cache of caches) {
    await cache.start();
    cache.onBlob = (image, blob, fromStorage) => {
      const ref = refOf.get(image)!;
      const p = progress.get(ref) ?? { served: new Set<string>(), fetched: false };
      progress.set(ref, p);
      p.served.add(blob.digest);
      p.fetched ||= !fromStorage;
      if (p.served.size === image.platforms.amd64.blobs.length && !completed.some((c) => c.image === ref)) {
        const MB = sizes[ref]?.MB;
        if (MB === undefined) throw new Error(`latency model: the images: section does not size ${ref}, which the prefill fetches`);
        completed.push({ image: ref, MB, fetched: p.fetched });
      }
    };
  }
  return {
    ports: caches.map((c) => c.port),
    /** What the prefill completed since the last call, and a fresh start for the next run. */
    takeCompleted: () => {
      progress.clear();
      return completed.splice(0);
    },
    stop: () => caches.forEach((c) => c.stop()),
  };
}

async function main(): Promise<void> {
  const modelFile = path.resolve(process.env.LATENCY_MODEL ?? path.join(PROJECT_DIR, 'bench', 'latency-model.yaml'));
  const model = YAML.parse(fs.readFileSync(modelFile, 'utf8')) as { scale: number; bandwidthMBps: Bandwidth; images: Record<string, { MB: number }> };
  const graph = deployGraph(YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, 'Taskfile.yml'), 'utf8')));
  const sandbox = makeSandbox();
  const registryPort = Number(sandbox.env('').REGISTRY_PORT);
  const renders = chartRenders();
  const renderedRefs = Object.values(renders).flatMap((text) => YAML.parseAllDocuments(text).map((d) => d.toJSON()?.spec?.template?.spec?.containers?.[0]?.image as string | undefined));
  const caches = await startCaches(
    [...renderedRefs.filter((r): r is string => Boolean(r)), `docker.io/rancher/local-path-provisioner:${PINNED.localPathProvisioner}`, PINNED.busyboxImage],
    model.images,
  );
  sandbox.scenario({ docker: { ephemeralPorts: caches.ports }, helm: { charts: renders } });
  // The registry container answers on REGISTRY_PORT once the stand-in `docker run` created it (before,
  // the preflight finds the port free), as the real one does.
  // The stand-ins rewrite their state file under their own lock: a read that catches a write half-done tries again.
  const state = () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return sandbox.state();
      } catch (err) {
        if (attempt >= 100) throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      }
    }
  };
  const registryCreated = () => Boolean(state().docker.containers['talos-local-registry']);
  let registry: ReturnType<typeof startStandInRegistry> | undefined;
  const watch = setInterval(() => {
    if (!registry && registryCreated()) {
      registry = startStandInRegistry(() => state().docker.pushed ?? {}, registryPort);
    }
  }, 20);

  const task = (args: string[], name: string) =>
    new Promise<{ calls: ToolCall[]; latency: LatencyLine[]; output: string }>((resolve, reject) => {
      const files = { calls: path.join(sandbox.dir, `${name}.calls.jsonl`), latency: path.join(sandbox.dir, `${name}.latency.jsonl`) };
      // The task the tests run (`npm test` builds it into TOOLS_BIN) comes first, as in the tests.
      const env: NodeJS.ProcessEnv = { ...process.env, ...sandbox.env(files.calls), FAKE_LATENCY_MODEL: modelFile, FAKE_LATENCY_LOG: files.latency };
      const child = spawn('task', args, { cwd: PROJECT_DIR, env: { ...env, PATH: `${TOOLS_BIN}${path.delimiter}${env.PATH ?? ''}` } });
      child.on('error', (err) =>
        reject(new Error(`cannot run \`task\` (${err.message}): install go-task 3.54.0, or run \`npm test\` once (it builds it into ${TOOLS_BIN})`)),
      );
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      child.on('close', (code) => {
        // validate needs the real routes, Prometheus and Loki, which no stand-in serves: it fails
        // fast here (--wait 0) and, last in the graph and in the sequence alike, models no time.
        const failed = args[0] === 'deploy' ? lastRunRecords(path.join(sandbox.stateDir, 'phases.log')).filter((r) => !r.ok && r.phase !== 'validate') : [];
        if ((code === 0 || args[0] === 'deploy') && failed.length === 0) {
          resolve({ calls: readLines<ToolCall>(files.calls), latency: readLines<LatencyLine>(files.latency), output });
        } else reject(new Error(`task ${args.join(' ')} failed (exit ${code}):\n${output}`));
      });
    });
  // A deploy on the modelled clock, with the prefill it really ran (the talos phase prints its result line).
  const deploy = async (name: string) => {
    const run = await task(['deploy', '--', '--wait', '0'], name);
    // The talos phase's result line of the prefill (what it fetched and what was cached already).
    const prefillLine = run.output.split('\n').find((l) => /✓ Pull-through caches prefilled while the nodes booted/.test(l)) ?? 'the talos phase printed no prefill result';
    const images = caches.takeCompleted();
    return {
      model: modelledDeploy(run.latency, graph, { bandwidth: model.bandwidthMBps, prefill: { images, graceSeconds: PREFILL_GRACE_SECONDS } }),
      before: sequentialBefore(run.latency, BEFORE_TODAY_OBSERVABILITY),
      // The same graph with every pull as the stand-ins logged it: what the prefill alone saves.
      withoutPrefill: modelledDeploy(run.latency, graph).wall,
      prefilled: images.length,
      prefillLine: prefillLine.replace(/^.*?✓ Pull-through caches prefilled while the nodes booted /, ''),
    };
  };

  console.log(`Latency model ${path.relative(PROJECT_DIR, modelFile)} (1 modelled s = ${model.scale * 1000} ms real), sandbox ${sandbox.dir}`);
  try {
    const cold = await deploy('cold');
    await task(['destroy', '--', '--yes'], 'destroy');
    caches.takeCompleted();
    const warm = await deploy('warm');
    const noOp = callCounts((await task(['deploy', '--', '--wait', '0'], 'no-op')).calls);

    for (const [name, { model: m, before, withoutPrefill, prefilled, prefillLine }] of [['cold', cold], ['warm', warm]] as const) {
      const s = (x: number) => `${x.toFixed(0)} s`;
      console.log(`${name} (modelled): graph ${s(m.wall)}; before today's graph and prefill (phases one after another, observability in two groups) ${s(before)}: ${pct(m.wall / before)}`);
      console.log(`  the graph without the prefill: ${s(withoutPrefill)}; its phases one after another: ${s(m.sum)}`);
      console.log(`  phases: ${Object.entries(m.phases).map(([p, t]) => `${p} ${t.start.toFixed(0)}-${t.end.toFixed(0)}`).join(', ')}`);
      console.log(`  critical path: ${m.criticalPath.map((p) => `${p} ${s(m.phases[p].seconds)}`).join(' -> ')}`);
      if (m.prefill) console.log(`  prefill: ${prefilled} images whole in the caches at ${s(m.prefill.end)}, nodes Ready at ${s(m.prefill.nodesReady)}; the talos phase said: ${prefillLine}`);
    }
    console.log(`no-op re-run: ${noOp.total} tool calls, ${noOp.mutating} that change something`);
    const ratio = cold.model.wall / cold.before;
    console.log(`${ratio <= 0.6 ? 'target met' : 'target missed'}: cold graph ${pct(ratio)} of the sequential deploy before today (target ≤ 60 %)`);
  } finally {
    clearInterval(watch);
    caches.stop();
    await (await registry)?.close();
    fs.rmSync(sandbox.dir, { recursive: true, force: true });
  }
}

/**
 * The observability phase before today: Prometheus and Loki (Tempo, which came later, with them: the
 * releases with volumes), then (after the Grafana password and dashboards) Alloy and Grafana.
 */
export const BEFORE_TODAY_OBSERVABILITY = { phase: 'observability', groups: [['prometheus', 'loki', 'tempo'], ['k8s-monitoring', 'grafana']] };

if (isMain(import.meta.url)) await main();
