// The bench's arithmetic (bench/deploy.ts): a phase's modelled seconds from its calls, the graph's
// wall time and the sum of the phases. The bench itself is not a test (it runs the whole deploy).
import { describe, expect, it } from 'vitest';
import { type LatencyLine, branchSeconds, modelledDeploy } from '../bench/deploy.ts';

let clock = 0;
const call = (phase: string, modelled: number, branch = ''): LatencyLine => ({ phase, branch, tool: 't', argv: [], modelled, start: clock++, end: clock });

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

describe('modelledDeploy', () => {
  const graph = { registry: [], talos: ['registry'], image: ['registry'], storage: ['talos'], traefik: ['talos'], observability: ['storage'], app: ['traefik', 'image'], validate: ['observability', 'app'] };
  it.each([
    [
      'the longest chain through the graph against the sum',
      { registry: 7, talos: 105, image: 32, storage: 7, traefik: 18, observability: 64, app: 16, validate: 0 },
      { wall: 7 + 105 + 7 + 64, sum: 249 },
    ],
    ['the image outlasting the cluster holds the app back', { registry: 1, talos: 10, image: 50, traefik: 2, app: 3 }, { wall: 1 + 50 + 3, sum: 66 }],
    ['a phase outside the graph stands alone', { talos: 10, 'storage smoke test': 4 }, { wall: 10, sum: 14 }],
  ])('%s', (_, seconds, want) => {
    const calls = Object.entries(seconds).map(([phase, s]) => call(phase, s));
    const got = modelledDeploy(calls, graph);
    expect({ wall: got.wall, sum: got.sum }).toEqual(want);
    expect(got.phases).toEqual(seconds);
  });
});
