import { describe, expect, it } from 'vitest';
import type { SegmentEvent } from '../../proto/gen/tessera/v1/agent.js';
import { nextHelperAttempt, planDuplicates, planSteals, spareSlots, type WorkUnit } from './work-stealing.js';
import { checkpointComplete } from '../../common/records.js';
import type { NodeView } from '../state/node-registry.js';
import { ChunkControl } from '../../node-agent/segment-work.js';

function node(id: string, slots: number, extra: Partial<NodeView> = {}): { id: string; slots: number; node: NodeView } {
  const n = {
    id,
    address: '',
    slots,
    encoders: ['libx264'],
    version: '',
    startedAtMs: 0,
    metricsAddress: '',
    draining: false,
    stats: undefined,
    admission: 'admitted',
    capabilities: ['h264'],
    ...extra,
  } as NodeView;
  return { id, slots, node: n };
}

function ev(running: number, queued: number[], done = false): SegmentEvent {
  return { framesDone: 0, framesTotal: 100, subSegments: 8, subSegmentsDone: 0, done, subSegmentsTranscoded: 0, queue: { queued, running, runningChunks: [] } };
}

function unit(key: string, nodeId: string, last: SegmentEvent | undefined, helper = false): WorkUnit {
  return { key, jobId: 'j', segment: Number(key.split('/')[1] ?? 0), nodeId, attempt: helper ? 10_001 : 1, ownerRevision: 5, leaderTerm: 1, helper, placement: undefined, last };
}

describe('work stealing: who takes what', () => {
  it('a node with spare slots takes half the longest queue, from its tail', () => {
    const units = [unit('j/0', 'a', ev(0, [], true)), unit('j/1', 'b', ev(2, [3, 4, 5, 6, 7]))];
    const plans = planSteals({ nodes: [node('a', 2), node('b', 2)], units, busy: new Set() });
    expect(plans).toHaveLength(1);
    expect(plans[0]!.thiefId).toBe('a');
    expect(plans[0]!.victim.key).toBe('j/1');
    // half of 5, rounded up: the last three chunks the owner would start
    expect(plans[0]!.chunks).toEqual([5, 6, 7]);
    expect(plans[0]!.move).toBe(false);
  });

  it('a run waiting for a slot with everything it has left moves whole', () => {
    // b runs one segment and has a second one waiting behind it, nothing of it started
    const waiting = { ...ev(0, [0, 1, 2]), subSegments: 4, subSegmentsDone: 1 };
    const units = [unit('j/0', 'b', ev(1, [])), unit('j/1', 'b', waiting)];
    const plans = planSteals({ nodes: [node('a', 1), node('b', 1)], units, busy: new Set() });
    expect(plans).toEqual([expect.objectContaining({ thiefId: 'a', chunks: [0, 1, 2], move: true })]);
    expect(plans[0]!.victim.key).toBe('j/1');
    // Alone on its node, the same run is only between its first event and its pool starting it:
    // no move (half its queue may go, as chunks).
    const alone = planSteals({ nodes: [node('a', 1), node('b', 1)], units: [unit('j/1', 'b', waiting)], busy: new Set() });
    expect(alone).toEqual([expect.objectContaining({ move: false, chunks: [1, 2] })]);
  });

  it('takes a single queued chunk when that is all there is', () => {
    const plans = planSteals({ nodes: [node('a', 1), node('b', 1)], units: [unit('j/1', 'b', ev(1, [2]))], busy: new Set() });
    expect(plans.map((p) => p.chunks)).toEqual([[2]]);
  });

  it('nobody steals when every node is full, from itself, from a helper run, or twice from one segment', () => {
    const full = [unit('j/0', 'a', ev(2, [9])), unit('j/1', 'b', ev(2, [3, 4]))];
    expect(planSteals({ nodes: [node('a', 2), node('b', 2)], units: full, busy: new Set() })).toEqual([]);
    const own = [unit('j/0', 'a', ev(1, [2, 3]))];
    expect(planSteals({ nodes: [node('a', 2)], units: own, busy: new Set() })).toEqual([]);
    const helperOnly = [unit('j/1/h10001', 'b', ev(1, [4]), true)];
    expect(planSteals({ nodes: [node('a', 1), node('b', 2)], units: helperOnly, busy: new Set() })).toEqual([]);
    const victim = [unit('j/1', 'b', ev(1, [2, 3, 4]))];
    expect(planSteals({ nodes: [node('a', 1), node('b', 1)], units: victim, busy: new Set(['j/1']) })).toEqual([]);
    // two idle nodes: only one of them takes from the one segment in a round
    expect(planSteals({ nodes: [node('a', 1), node('c', 1), node('b', 1)], units: victim, busy: new Set() })).toHaveLength(1);
  });

  it('a run that has not reported yet fills its node: no steal onto a node still receiving a segment', () => {
    const units = [unit('j/0', 'a', undefined), unit('j/1', 'b', ev(1, [2, 3, 4]))];
    expect(planSteals({ nodes: [node('a', 2), node('b', 1)], units, busy: new Set() })).toEqual([]);
    expect(spareSlots(4, [unit('x/0', 'a', ev(1, [5]))])).toBe(2);
    expect(spareSlots(2, [unit('x/0', 'a', ev(0, [], true))])).toBe(2);
  });

  it("respects the job's placement: a node without the capability takes nothing", () => {
    const units = [{ ...unit('j/1', 'b', ev(1, [2, 3])), placement: { needs: ['hevc'], labels: {} } }];
    const plans = planSteals({ nodes: [node('a', 1, { capabilities: ['h264'] }), node('b', 1, { capabilities: ['h264', 'hevc'] })], units, busy: new Set() });
    expect(plans).toEqual([]);
  });

  it('with nothing queued anywhere, an idle node copies the slowest running chunk of a straggler only', () => {
    const running = (chunks: { chunk: number; framesDone: number; framesTotal: number; elapsedMs: number }[]): SegmentEvent => ({
      ...ev(chunks.length, []),
      queue: { queued: [], running: chunks.length, runningChunks: chunks },
    });
    const slow = node('b', 2, { stats: { busySlots: 2, segmentsDone: 0, subSegmentsDone: 0, heartbeatMs: 0, speedMps: 2 } });
    const fast = node('a', 2, { stats: { busySlots: 0, segmentsDone: 0, subSegmentsDone: 0, heartbeatMs: 0, speedMps: 10 } });
    // chunk 4: 10 of 100 frames in 2 s → 18 s left; chunk 5: 50 of 60 in 10 s → 2 s left
    const units = [
      unit(
        'j/1',
        'b',
        running([
          { chunk: 4, framesDone: 10, framesTotal: 100, elapsedMs: 2_000 },
          { chunk: 5, framesDone: 50, framesTotal: 60, elapsedMs: 10_000 },
        ]),
      ),
    ];
    const plans = planDuplicates({ nodes: [fast, slow], units, busy: new Set() }, new Set());
    expect(plans).toEqual([expect.objectContaining({ thiefId: 'a', chunk: 4 })]);
    expect(plans[0]!.remainingSec).toBeCloseTo(18);
    // once copied, not again; a node not much slower is no straggler; queued work anywhere comes first
    expect(planDuplicates({ nodes: [fast, slow], units, busy: new Set() }, new Set(['j/1/4']))).toEqual([]);
    const peer = node('b', 2, { stats: { busySlots: 2, segmentsDone: 0, subSegmentsDone: 0, heartbeatMs: 0, speedMps: 6 } });
    expect(planDuplicates({ nodes: [fast, peer], units, busy: new Set() }, new Set())).toEqual([]);
    expect(planDuplicates({ nodes: [fast, slow], units: [...units, unit('j/2', 'b', ev(1, [7]))], busy: new Set() }, new Set())).toEqual([]);
    // frames standing still count: 29 of 30 frames, but stuck for 4 s
    const stuck = [unit('j/1', 'b', running([{ chunk: 6, framesDone: 29, framesTotal: 30, elapsedMs: 12_000 }]))];
    expect(planDuplicates({ nodes: [fast, slow], units: stuck, busy: new Set() }, new Set())).toEqual([]);
    expect(planDuplicates({ nodes: [fast, slow], units: stuck, busy: new Set() }, new Set(), () => 4)).toEqual([expect.objectContaining({ chunk: 6, remainingSec: 4 })]);
    // speeds unknown: no copies
    expect(planDuplicates({ nodes: [node('a', 2), node('b', 2)], units, busy: new Set() }, new Set())).toEqual([]);
  });

  it('helper attempts count up from the base, above every one recorded', () => {
    expect(nextHelperAttempt({ boundaries: [0, 1, 2], done: [], transcodedByAttempt: {} })).toBe(10_001);
    expect(nextHelperAttempt({ boundaries: [0, 1, 2], done: [], transcodedByAttempt: {}, helpers: { '10001': { nodeId: 'a', chunks: [1] }, '10004': { nodeId: 'b', chunks: [0] } } })).toBe(10_005);
  });

  it('a checkpoint is complete when every planned chunk is done once', () => {
    const done = (sub: number): { sub: number; attempt: number; nodeId: string; frames: number } => ({ sub, attempt: 1, nodeId: 'a', frames: 10 });
    expect(checkpointComplete({ boundaries: [0, 1, 2, 3], done: [done(0), done(1), done(2)], transcodedByAttempt: {} })).toBe(true);
    expect(checkpointComplete({ boundaries: [0, 1, 2, 3], done: [done(0), done(2)], transcodedByAttempt: {} })).toBe(false);
    expect(checkpointComplete(undefined)).toBe(false);
  });
});

describe('an owner run releases only chunks it has not started', () => {
  it('started, released and unknown chunks stay; the rest are given up once', () => {
    const c = new ChunkControl();
    const d = new ChunkControl();
    d.queue = [0, 1];
    d.started.add(1);
    expect(d.release([0, 1], true)).toEqual([]); // all or nothing: one started
    expect(d.release([0], true)).toEqual([0]);
    c.queue = [4, 0, 3, 1, 2];
    c.started.add(4);
    c.started.add(0);
    expect(c.release([0, 2, 9])).toEqual([2]);
    expect(c.release([2])).toEqual([]);
    expect(c.queued()).toEqual([3, 1]);
  });
});
