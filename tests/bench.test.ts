// The bench's arithmetic (bench/deploy.ts): a phase's modelled seconds from its calls, the prefill's
// timeline and what it saves a pull, the graph's wall time and critical path, and the deploy before
// today. The bench itself is not a test (it runs the whole deploy).
import { describe, expect, it } from 'vitest';
import {
  BEFORE_TODAY_OBSERVABILITY,
  type LatencyLine,
  type PrefilledImage,
  branchSeconds,
  callSeconds,
  modelledDeploy,
  prefillTimeline,
  sequentialBefore,
} from '../bench/deploy.ts';

let clock = 0;
const call = (phase: string, modelled: number, branch = '', extra: Partial<LatencyLine> = {}): LatencyLine => ({ phase, branch, tool: 't', argv: [], modelled, start: clock++, end: clock, ...extra });
const bw = { internet: 10, cache: 100 };
/** A call that waits `fixed` and pulls images (MB, warm), as the stand-ins log it (modelled: every cold pull from the internet). */
const pulling = (phase: string, fixed: number, pulls: [string, number, boolean?][], extra: Partial<LatencyLine> = {}) => {
  const p = pulls.map(([image, MB, warm = false]) => ({ image, MB, warm }));
  return call(phase, fixed + p.reduce((n, x) => n + x.MB / (x.warm ? bw.cache : bw.internet), 0), '', { fixed, pulls: p, ...extra });
};
const create = (fixed: number, pulls: [string, number, boolean?][]) => pulling('talos', fixed, pulls, { tool: 'talosctl', argv: ['cluster', 'create', 'docker'] });

describe('branchSeconds', () => {
  it.each([
    ['calls one after another add up', [call('p', 2), call('p', 3)], 5],
    ['a parallel group counts its longest branch', [call('p', 1), call('p', 4, '0.0/'), call('p', 6, '0.1/'), call('p', 2, '0.1/'), call('p', 1)], 1 + 8 + 1],
    ['a group nested in a branch', [call('p', 5, '0.0/'), call('p', 1, '0.1/'), call('p', 3, '0.1/1.0/'), call('p', 4, '0.1/1.1/')], 5],
    ['a nested group that makes its branch the longest', [call('p', 5, '0.0/'), call('p', 1, '0.1/'), call('p', 3, '0.1/1.0/'), call('p', 7, '0.1/1.1/')], 8],
    ['two groups one after another', [call('p', 2, '0.0/'), call('p', 3, '0.1/'), call('p', 1), call('p', 4, '1.0/'), call('p', 1, '1.1/')], 3 + 1 + 4],
    ['no calls', [], 0],
  ])('%s', (_, calls, want) => {
    expect(branchSeconds(calls)).toBe(want);
  });
});

describe('prefillTimeline', () => {
  const images = (...list: [string, number, boolean][]): PrefilledImage[] => list.map(([image, MB, fetched]) => ({ image, MB, fetched }));
  it.each([
    ['images one after another on the line, after the lead', 10, 5, images(['a', 100, true], ['b', 50, true]), { a: 10 + 5 + 10, b: 10 + 5 + 10 + 5 }, 30],
    ['what the cache held already comes at the cache bandwidth', 0, 0, images(['a', 100, false], ['b', 100, true]), { a: 1, b: 11 }, 11],
    ['nothing prefilled: done when it started', 7, 3, [], {}, 7],
  ])('%s', (_, start, lead, list, done, end) => {
    const t = prefillTimeline(start, lead, list, bw);
    expect(Object.fromEntries(t.done)).toEqual(done);
    expect(t.end).toBe(end);
  });
});

describe('callSeconds', () => {
  const prefilled = new Map([['loki', 50]]);
  it.each([
    ['an image the prefill had before the call: from the cache', pulling('o', 20, [['loki', 100]]), 60, 20 + 1],
    ['the prefill had it only after the call started: from the internet', pulling('o', 20, [['loki', 100]]), 40, 20 + 10],
    ['exactly when the call starts counts as there', pulling('o', 20, [['loki', 100]]), 50, 20 + 1],
    ['an image the prefill never fetched: from the internet', pulling('o', 20, [['grafana', 100]]), 60, 20 + 10],
    ['pulled before by a call (warm): from the cache', pulling('o', 20, [['grafana', 100, true]]), 0, 20 + 1],
    ['each image on its own', pulling('o', 0, [['loki', 100], ['grafana', 50]]), 60, 1 + 5],
    ['a line without parts: as logged', call('o', 33), 60, 33],
  ])('%s', (_, line, at, want) => {
    expect(callSeconds(line, at, bw, prefilled)).toBeCloseTo(want);
  });
});

describe('modelledDeploy', () => {
  const graph = { registry: [], talos: ['registry'], image: ['registry'], storage: ['talos'], traefik: ['talos'], observability: ['storage'], app: ['traefik', 'image'], validate: ['observability', 'app'] };
  const seconds = (m: ReturnType<typeof modelledDeploy>) => Object.fromEntries(Object.entries(m.phases).map(([p, t]) => [p, t.seconds]));
  it.each([
    [
      'the longest chain through the graph against the sum',
      { registry: 7, talos: 105, image: 32, storage: 7, traefik: 18, observability: 64, app: 16, validate: 0 },
      { wall: 7 + 105 + 7 + 64, sum: 249, criticalPath: ['registry', 'talos', 'storage', 'observability', 'validate'] },
    ],
    ['the image outlasting the cluster holds the app back', { registry: 1, talos: 10, image: 50, traefik: 2, app: 3 }, { wall: 1 + 50 + 3, sum: 66, criticalPath: ['registry', 'image', 'app'] }],
    ['a phase outside the graph stands alone', { talos: 10, 'storage smoke test': 4 }, { wall: 10, sum: 14, criticalPath: ['talos'] }],
  ])('%s', (_, phaseSeconds, want) => {
    const calls = Object.entries(phaseSeconds).map(([phase, s]) => call(phase, s));
    const got = modelledDeploy(calls, graph);
    expect({ wall: got.wall, sum: got.sum, criticalPath: got.criticalPath }).toEqual(want);
    expect(seconds(got)).toEqual(phaseSeconds);
  });

  it('each phase starts when the phases it needs ended', () => {
    const got = modelledDeploy([call('registry', 2), call('talos', 10), call('image', 5), call('storage', 1), call('traefik', 3), call('app', 1)], graph);
    expect(got.phases.image).toEqual({ seconds: 5, start: 2, end: 7 });
    expect(got.phases.app).toEqual({ seconds: 1, start: 15, end: 16 });
  });

  // registry 2 s; create at 2: 50 s, 100 MB of its own pulls (10 s on the line); the prefill then
  // fetches loki (200 MB, 20 s: there at 32) and grafana (400 MB, 40 s: there at 72).
  const deploy = () => [
    call('registry', 2),
    create(40, [['talos', 100]]),
    call('talos', 5),
    pulling('storage', 1, [['lpp', 20]]),
    pulling('observability', 30, [['loki', 200]]),
    pulling('observability', 10, [['grafana', 400]]),
  ];
  const prefill = (graceSeconds: number, ...list: [string, number][]) => ({ images: list.map(([image, MB]) => ({ image, MB, fetched: true })), graceSeconds });
  it.each([
    [
      'pulls the prefill finished before them come from the cache; one it never fetched from the internet',
      prefill(120, ['loki', 200], ['grafana', 400]),
      // talos 2-57 (create 50, nodes 5: ends before the prefill at 72, then waits for it); storage 72-75 (lpp 2 from the internet);
      // observability 75: loki 30+2, grafana 10+4.
      { talos: { start: 2, end: 72 }, storage: { start: 72, end: 75 }, observability: { start: 75, end: 75 + 32 + 14 } },
      { end: 72, nodesReady: 57 },
    ],
    [
      'a prefill longer than nodes Ready + grace: the phase waits only the grace, and a pull not yet cached is cold',
      prefill(5, ['grafana', 400], ['loki', 200]),
      // grafana there at 52, loki at 72; talos waits until 57 + 5; storage 62-65; observability at 65:
      // loki (not there yet) cold 30+20, then grafana cached 10+4.
      { talos: { start: 2, end: 62 }, storage: { start: 62, end: 65 }, observability: { start: 65, end: 65 + 50 + 14 } },
      { end: 72, nodesReady: 57 },
    ],
    [
      'no image prefilled: every pull as logged, nothing to wait for',
      prefill(120),
      { talos: { start: 2, end: 57 }, storage: { start: 57, end: 60 }, observability: { start: 60, end: 60 + 50 + 50 } },
      { end: 2, nodesReady: 57 },
    ],
  ])('%s', (_, options, phases, prefillTimes) => {
    const got = modelledDeploy(deploy(), graph, { bandwidth: bw, prefill: options });
    expect(got.phases).toMatchObject(phases);
    expect(got.prefill).toEqual(prefillTimes);
    expect(got.criticalPath).toEqual(['registry', 'talos', 'storage', 'observability']);
  });

  it('without prefill options every call is as long as logged', () => {
    const got = modelledDeploy(deploy(), graph);
    expect(got.prefill).toBeUndefined();
    expect(got.wall).toBeCloseTo(2 + 55 + 3 + 100);
  });
});

describe('sequentialBefore', () => {
  const helm = (release: string, s: number, branch: string) => call('observability', s, branch, { tool: 'helm', argv: ['upgrade', '--install', release, release] });
  it.each([
    [
      'the releases in their old groups, one group after another; other phases as logged',
      [call('talos', 100), call('observability', 1), helm('prometheus', 40, '0.0/'), helm('loki', 45, '0.1/'), helm('k8s-monitoring', 20, '0.2/'), call('observability', 30, '0.2/'), helm('grafana', 25, '0.3/')],
      100 + 1 + 45 + 50,
    ],
    ['branches in any order', [helm('grafana', 60, '0.0/'), helm('k8s-monitoring', 20, '0.1/'), helm('loki', 5, '0.2/'), helm('prometheus', 6, '0.3/')], 6 + 60],
  ])('%s', (_, calls, want) => {
    expect(sequentialBefore(calls, BEFORE_TODAY_OBSERVABILITY)).toBe(want);
  });

  it('a branch that upgrades none of the releases is an error, not a guess', () => {
    expect(() => sequentialBefore([helm('jaeger', 5, '0.0/')], BEFORE_TODAY_OBSERVABILITY)).toThrow(/observability: parallel branches 0\.0\/ upgrade none of the releases/);
  });
});
