// The Prometheus server flags of helm-values/prometheus.yaml (+ the script's retention), given to a
// REAL prometheus 3.14 binary (built by `npm test`, see tests/tools/test-tools.mjs): the flags exist, the remote-write
// receiver answers on /api/v1/write (404 without it), lifecycle reload works, retention is applied,
// exemplars are stored (prometheus_tsdb_exemplar_max_exemplars is 0 without exemplar-storage).
// The chart turns server.extraFlags into `--<flag>` and server.retention into
// `--storage.tsdb.retention.time=<value>` (checked against the real chart in observability-render.test.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { mergeValues, parseConfig } from '../scripts/lib.ts';
import { releaseSpec } from '../scripts/observability.ts';

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });

let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill();
  child = undefined;
});

async function start(flags: string[]): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prom-'));
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), 'global:\n  scrape_interval: 1m\nscrape_configs: []\n');
  const port = await freePort();
  child = spawn('prometheus', [
    `--config.file=${path.join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    ...flags,
  ], { stdio: 'ignore' });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/-/ready`)).ok) return base;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`prometheus did not get ready with ${flags.join(' ')}`);
}

/** A gauge of Prometheus' own /metrics. */
async function metric(base: string, name: string): Promise<number | undefined> {
  const line = (await (await fetch(`${base}/metrics`)).text()).split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

describe('real prometheus with the values\' server flags', { timeout: 30_000 }, () => {
  const cfg = parseConfig({ STATE_DIR: '/tmp/st', PROMETHEUS_RETENTION: '3w' });
  const server = (mergeValues(...releaseSpec(cfg, 'prometheus').values) as any).server;
  const flags = [...(server.extraFlags as string[]).map((f) => `--${f}`), `--storage.tsdb.retention.time=${server.retention}`];

  it('accepts them: remote-write receiver on, lifecycle reload on, retention from PROMETHEUS_RETENTION', async () => {
    const base = await start(flags);
    // Not a valid snappy body, so 400: the endpoint exists. Without the receiver it is 404 (below).
    expect((await fetch(`${base}/api/v1/write`, { method: 'POST', body: 'x' })).status).toBe(400);
    expect((await fetch(`${base}/-/reload`, { method: 'POST' })).status).toBe(200);
    const f = (await (await fetch(`${base}/api/v1/status/flags`)).json()).data;
    expect(f['web.enable-remote-write-receiver']).toBe('true');
    expect(f['storage.tsdb.retention.time']).toBe('3w');
    // Exemplar storage on (Grafana's exemplar links to Tempo need it): the in-memory buffer has room.
    expect(f['enable-feature']).toBe('exemplar-storage');
    expect(await metric(base, 'prometheus_tsdb_exemplar_max_exemplars')).toBe(100000);
  });

  it('control: without the values\' flags there is no write endpoint', async () => {
    const base = await start([]);
    expect((await fetch(`${base}/api/v1/write`, { method: 'POST', body: 'x' })).status).toBe(404);
    expect(await metric(base, 'prometheus_tsdb_exemplar_max_exemplars')).toBe(0);
  });
});
