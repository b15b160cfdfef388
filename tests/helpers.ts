// Test helpers: a sandbox per test (scenario state, call log, state dir, HOME) and a runner that
// starts a phase script with the stand-in tools first on PATH.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { STATE_DIR_MARKER } from '../scripts/lib.ts';
// @ts-expect-error: plain ESM module without types
import { deepMerge, defaultState } from './fakes/common.mjs';

export const PROJECT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FAKE_BIN = path.join(PROJECT_DIR, 'tests', 'fakes', 'bin');

export interface ToolCall {
  tool: string;
  argv: string[];
}

export interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
  calls: ToolCall[];
}

/** Flags of kubectl and helm whose value is the next word (the target): that value is not the command. */
const TARGET_VALUE_FLAGS = new Set(['--context', '--kube-context', '--kubeconfig', '--namespace', '-n']);

/** Calls that change something: the contract the "re-run changes nothing" tests rely on. */
export function isMutating(call: ToolCall): boolean {
  const [a = '', b = ''] = call.argv.filter((x, i) => !x.startsWith('-') && !x.includes('/') && !x.includes('=') && !TARGET_VALUE_FLAGS.has(call.argv[i - 1]));
  switch (call.tool) {
    case 'docker':
      return ['run', 'start', 'stop', 'rm', 'build', 'push', 'tag', 'pull', 'create'].includes(a) ||
        (['network', 'volume', 'image', 'buildx'].includes(a) && !['ls', 'inspect'].includes(b));
    case 'talosctl':
      return ['cluster', 'bootstrap', 'apply-config', 'patch', 'upgrade', 'reset', 'kubeconfig', 'upgrade-k8s'].includes(a) &&
        !(a === 'cluster' && ['show'].includes(b));
    case 'kubectl':
      return ['apply', 'create', 'delete', 'patch', 'label', 'annotate', 'replace', 'scale', 'edit', 'set', 'cordon', 'drain', 'taint'].includes(a) ||
        (a === 'rollout' && b === 'restart');
    case 'helm':
      return ['install', 'upgrade', 'uninstall', 'rollback', 'repo', 'plugin'].includes(a);
    default:
      return true;
  }
}

/** The host ports a sandbox's runs get unless a test sets them. */
export interface SandboxPorts {
  HTTP_PORT: number;
  HTTPS_PORT: number;
  REGISTRY_PORT: number;
}

export interface Sandbox {
  dir: string;
  /** Free ports on 127.0.0.1 picked for this sandbox: expected strings are built from these, never from a number. */
  ports: SandboxPorts;
  stateDir: string;
  home: string;
  fakeState: string;
  /** Merges a partial scenario over the current fake state (or the healthy default). */
  scenario(partial: Record<string, unknown>): void;
  /** The fake state as it is now. */
  state(): any;
  /** A running cluster as `task talos` leaves it (nodes, kubeconfig in the state dir), made by the stand-in talosctl directly. */
  createCluster(): void;
  /** The environment a run gets: the stand-ins first on PATH, the sandbox's state, the call log `log`. */
  env(log: string): Record<string, string>;
  /** Runs scripts/<name>.ts with the stand-ins first on PATH; calls holds only this run's calls. */
  run(script: string, args?: string[], env?: Record<string, string>): Promise<ScriptResult>;
}

/**
 * Where the sandbox ports are drawn from: below the kernel's ephemeral range (Linux 32768-60999,
 * macOS 49152-65535), which the OS hands to every listen(0) of the real servers in other tests and to
 * the source port of every outgoing connection. A port drawn there could be taken between this pick
 * and a phase's check that it is free; one drawn here is only ever taken by another pick.
 */
export const SANDBOX_PORT_RANGE = { first: 20000, last: 32767 } as const;

/**
 * `count` distinct ports on 127.0.0.1 in SANDBOX_PORT_RANGE that were free a moment ago (drawn at
 * random, each proven free by binding it), synchronously: a worker thread binds and closes them while
 * this thread waits. Test files run in parallel (and other suites may run on the same machine), so no
 * test may count on a fixed port.
 */
export function freePortsSync(count: number): number[] {
  const shared = new Int32Array(new SharedArrayBuffer(4 * (count + 1)));
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads');
     const net = require('node:net');
     const { count, first, last } = workerData;
     const shared = new Int32Array(workerData.buffer);
     const done = (status) => { Atomics.store(shared, 0, status); Atomics.notify(shared, 0); };
     const bindable = (port) => new Promise((resolve) => {
       const server = net.createServer();
       server.once('error', () => resolve(false)).listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
     });
     (async () => {
       const ports = new Set();
       for (let tries = 0; ports.size < count && tries < 1000; tries++) {
         const port = first + Math.floor(Math.random() * (last - first + 1));
         if (!ports.has(port) && (await bindable(port))) ports.add(port);
       }
       if (ports.size < count) return done(2);
       [...ports].forEach((p, i) => (shared[i + 1] = p));
       done(1);
     })();`,
    { eval: true, workerData: { buffer: shared.buffer, count, ...SANDBOX_PORT_RANGE } },
  );
  worker.unref();
  if (Atomics.wait(shared, 0, 0, 30000) === 'timed-out' || shared[0] !== 1) throw new Error('freePortsSync: could not bind free ports on 127.0.0.1');
  return Array.from(shared.subarray(1));
}

/**
 * The environment that deploys to the sandbox's cluster as to a user's own (CLUSTER=existing): its
 * kubeconfig named by KUBECONFIG, as a user names theirs.
 */
export const existingClusterEnv = (sb: Pick<Sandbox, 'stateDir'>) => ({ CLUSTER: 'existing', KUBECONFIG: path.join(sb.stateDir, 'kubeconfig') });

export function makeSandbox(): Sandbox {
  const [HTTP_PORT, HTTPS_PORT, REGISTRY_PORT] = freePortsSync(3);
  const ports: SandboxPorts = { HTTP_PORT, HTTPS_PORT, REGISTRY_PORT };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'platform-test-'));
  const stateDir = path.join(dir, 'state');
  const home = path.join(dir, 'home');
  fs.mkdirSync(home);
  const fakeState = path.join(dir, 'fake-state.json');
  const state = () => (fs.existsSync(fakeState) ? deepMerge(defaultState(), JSON.parse(fs.readFileSync(fakeState, 'utf8'))) : defaultState());
  const envFor = (log: string): Record<string, string> => ({
    PATH: `${FAKE_BIN}${path.delimiter}${process.env.PATH}`,
    HOME: home,
    FAKE_STATE: fakeState,
    FAKE_TOOLS_LOG: log,
    STATE_DIR: stateDir,
    ENV_FILE: path.join(dir, 'no.env'),
    NO_COLOR: '1',
    // Free ports of this sandbox (above 1024, so the preflight's bind test needs no root): test files
    // run in parallel, so a fixed port would be taken by another file's test. A test that wants a taken
    // port binds a free one itself and sets it.
    HTTP_PORT: String(HTTP_PORT),
    HTTPS_PORT: String(HTTPS_PORT),
    REGISTRY_PORT: String(REGISTRY_PORT),
    // The Helm major the stand-in plays in this test run (vitest.config.ts).
    ...(process.env.FAKE_HELM_MAJOR ? { FAKE_HELM_MAJOR: process.env.FAKE_HELM_MAJOR } : {}),
  });
  return {
    dir,
    ports,
    stateDir,
    home,
    fakeState,
    state,
    createCluster() {
      // The state dir as the talos phase leaves it: marked as ours (claimStateDir in scripts/lib.ts).
      fs.mkdirSync(stateDir, { recursive: true });
      fs.writeFileSync(path.join(stateDir, STATE_DIR_MARKER), '');
      execFileSync(path.join(FAKE_BIN, 'talosctl'), ['cluster', 'create', 'docker', '--name', 'talos-local', '--workers', '2'], {
        env: { ...process.env, HOME: home, FAKE_STATE: fakeState, KUBECONFIG: path.join(stateDir, 'kubeconfig'), FAKE_TOOLS_LOG: '' },
        stdio: 'ignore',
      });
    },
    scenario(partial) {
      fs.writeFileSync(fakeState, JSON.stringify(deepMerge(state(), partial)));
    },
    env: envFor,
    run(script, args = [], env = {}) {
      const log = path.join(dir, `calls-${Date.now()}-${Math.random().toString(36).slice(2)}.jsonl`);
      return new Promise((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', path.join(PROJECT_DIR, 'scripts', `${script}.ts`), ...args], {
          cwd: PROJECT_DIR,
          env: { ...envFor(log), ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (code) => {
          const calls = fs.existsSync(log)
            ? fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as ToolCall)
            : [];
          resolve({ code, stdout, stderr, calls });
        });
      });
    },
  };
}

/** The mutating calls of a run, each as one line "tool argv…". */
export const mutatingLines = (calls: ToolCall[]) => calls.filter(isMutating).map((c) => `${c.tool} ${c.argv.join(' ')}`);

/** Calls to one tool whose argv starts with the given words. */
export const callsOf = (calls: ToolCall[], tool: string, ...prefix: string[]) =>
  calls.filter((c) => c.tool === tool && prefix.every((p, i) => c.argv[i] === p));

/**
 * A stand-in local registry on 127.0.0.1:`port` (0: any free port): the Registry HTTP API's
 * GET /v2/ and HEAD/GET /v2/<name>/manifests/<tag>, answered from what the stand-in `docker push`
 * pushed (state.docker.pushed).
 */
export async function startStandInRegistry(pushed: () => Record<string, string>, port = 0) {
  const requests: string[] = [];
  let listening = port;
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(req.url ?? '');
    const digest = m ? pushed()[`localhost:${listening}/${m[1]}:${m[2]}`] : undefined;
    if (req.url === '/v2/') {
      res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0' }).end('{}');
    } else if (digest) {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'docker-content-digest': digest });
      res.end(req.method === 'HEAD' ? undefined : '{"schemaVersion":2}');
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
    }
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  listening = (server.address() as AddressInfo).port;
  return { port: listening, requests, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** A port on 127.0.0.1 that nothing listens on. */
export async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
