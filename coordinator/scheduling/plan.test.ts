import { describe, expect, it } from 'vitest';
import { parsePacketRows, summarizePackets } from '../../transcoder/keyframes.js';
import { capacityWeights, planFrameSegments, planSegments } from './plan.js';
import { pickNode } from '../run/segment-dispatch.js';
import { incarnation, type NodeView } from '../state/node-registry.js';

const kf = (seconds: number) => Array.from({ length: seconds }, (_, i) => i);

describe('planSegments (split by node count)', () => {
  it('gives one keyframe-aligned segment per ready node', () => {
    const cuts = planSegments({
      keyframes: kf(20),
      durationSec: 20,
      fps: 30,
      nodes: [
        { id: 'b', slots: 2 },
        { id: 'a', slots: 2 },
        { id: 'c', slots: 2 },
      ],
      minSegmentSec: 2,
    });
    expect(cuts.map((c) => c.nodeId)).toEqual(['a', 'b', 'c']);
    expect(cuts[0]!.startSec).toBe(0);
    expect(cuts.at(-1)!.endSec).toBe(20);
    for (const c of cuts) expect(Number.isInteger(c.startSec)).toBe(true);
    expect(cuts.reduce((a, c) => a + c.frames, 0)).toBe(600);
  });
  it('uses fewer segments than nodes for short inputs, on the biggest nodes', () => {
    const cuts = planSegments({
      keyframes: kf(3),
      durationSec: 3,
      fps: 30,
      nodes: [
        { id: 'a', slots: 1 },
        { id: 'b', slots: 4 },
        { id: 'c', slots: 2 },
      ],
      minSegmentSec: 2,
    });
    expect(cuts).toHaveLength(1);
    expect(cuts[0]!.nodeId).toBe('b');
  });
});

describe('pickNode', () => {
  const node = (id: string, slots: number, startedAtMs = 0): NodeView => ({
    id,
    address: `${id}:1`,
    slots,
    encoders: [],
    version: '',
    startedAtMs,
    metricsAddress: '',
    draining: false,
    stats: undefined,
    admission: 'admitted',
  });
  it('keeps the planned node while it is ready, else takes the least loaded per slot', () => {
    const ready = [node('a', 1), node('b', 4), node('c', 2)];
    expect(pickNode(ready, new Map(), 'c', new Set())?.id).toBe('c');
    expect(
      pickNode(
        ready,
        new Map([
          ['a', 1],
          ['b', 1],
          ['c', 1],
        ]),
        'gone',
        new Set(),
      )?.id,
    ).toBe('b');
    expect(pickNode(ready, new Map(), 'c', new Set([incarnation(node('c', 2))]))?.id).toBe('a');
    expect(pickNode([], new Map(), undefined, new Set())).toBeUndefined();
  });
  it('avoids the incarnation that failed, not a restart under the same id', () => {
    const failed = new Set([incarnation(node('c', 2, 1))]);
    expect(pickNode([node('a', 1), node('c', 2, 1)], new Map([['a', 1]]), 'c', failed)?.id).toBe('a');
    expect(pickNode([node('a', 1), node('c', 2, 2)], new Map([['a', 1]]), 'c', failed)?.id).toBe('c');
  });
});

describe('shares by measured capacity', () => {
  it('gives a node twice as fast twice the frames, and a new node the median speed', () => {
    expect(
      capacityWeights([
        { id: 'a', slots: 2 },
        { id: 'b', slots: 4 },
      ]),
    ).toEqual([2, 4]);
    expect(
      capacityWeights([
        { id: 'a', slots: 2, stats: { speedMps: 10 } },
        { id: 'b', slots: 2, stats: { speedMps: 20 } },
        { id: 'c', slots: 1 },
      ]),
    ).toEqual([20, 40, 20]);
    // Equal machines measured a few per cent apart get equal shares; a real difference still counts.
    expect(
      capacityWeights([
        { id: 'a', slots: 1, stats: { speedMps: 10.9 } },
        { id: 'b', slots: 1, stats: { speedMps: 10 } },
        { id: 'c', slots: 1, stats: { speedMps: 9.2 } },
        { id: 'd', slots: 1, stats: { speedMps: 5 } },
      ]),
    ).toEqual([10, 10, 10, 5]);
    // 300 frames, keyframes only every 100: a keyframe cut could not split 100/200.
    const rows = parsePacketRows(Array.from({ length: 300 }, (_, i) => `pts_time=${(i / 30).toFixed(6)}|duration_time=0.033333|flags=${i % 100 === 0 ? 'K_' : '__'}`).join('\n'));
    const cuts = planFrameSegments({
      packets: summarizePackets(rows),
      fps: 30,
      minSegmentSec: 1,
      nodes: [
        { id: 'slow', slots: 2, stats: { speedMps: 5 } },
        { id: 'fast', slots: 2, stats: { speedMps: 10 } },
      ],
    })!;
    expect(cuts.map((c) => [c.nodeId, c.frames])).toEqual([
      ['fast', 200],
      ['slow', 100],
    ]);
    expect(cuts[1]).toMatchObject({ fromPacket: 200, toPacket: 300, leadIn: 0, leadOut: 0 });
    expect(cuts[0]).toMatchObject({ fromPacket: 0, toPacket: 200 });
  });
});
