import { describe, expect, it } from 'vitest';
import { planChunks } from '../../transcoder/plan-cuts.js';
import { partSpans } from './part-spans.js';

describe('partSpans', () => {
  it('puts every join on the source keyframe it was cut at, from millisecond chunk boundaries', () => {
    // 29.97 fps, keyframes every 15 frames (0.5005 s); two segments cut at 3.003 s.
    const keys = Array.from({ length: 12 }, (_, i) => Math.round(i * 0.5005 * 1e6) / 1e6);
    const spans = partSpans(
      [
        { index: 0, startSec: 0 },
        { index: 1, startSec: 3.003 },
      ],
      new Map([
        [0, [0, 1.001, 2.002, 3.003]],
        [1, [0, 1.502, 2.5]],
      ]),
      keys,
    );
    expect(spans).toEqual([
      [1.001, 1.001, 1.001],
      [1.5015, undefined],
    ]);
  });

  it('starts the first part at the first presented frame when an edit list hides a lead-in', () => {
    // The file's first keyframe is 1.4 s before the first presented frame; the next is at 0.6.
    const spans = partSpans(
      [
        { index: 0, startSec: 0 },
        { index: 1, startSec: 2.6 },
      ],
      new Map([
        [0, [0, 2.0, 4.0]],
        [1, [0, 3]],
      ]),
      [-1.4, 0.6, 2.6],
    );
    expect(spans).toEqual([[0.6, 2.0], [undefined]]);
  });
});

describe('planChunks', () => {
  it('cuts a long segment into about equal chunks on keyframes', () => {
    const keys = Array.from({ length: 120 }, (_, i) => i * 0.5);
    const chunks = planChunks(keys, 60, 40, 0.2);
    expect(chunks).toHaveLength(40);
    for (const c of chunks) expect(c.endSec - c.startSec).toBeCloseTo(1.5, 6);
    expect(chunks.at(-1)!.endSec).toBe(60);
  });

  it('gives fewer, longer chunks when keyframes are sparse, never shorter than the minimum', () => {
    const chunks = planChunks([0, 10, 20, 25], 30, 10, 1);
    expect(chunks.map((c) => [c.startSec, c.endSec])).toEqual([
      [0, 10],
      [10, 20],
      [20, 25],
      [25, 30],
    ]);
    expect(planChunks([0, 0.1], 1, 5, 0.5)).toEqual([{ index: 0, startSec: 0, endSec: 1 }]);
  });
});

describe('partSpans with frame cuts', () => {
  it('times chunks from the keyframe the file starts with, and starts the first at the cut frame', () => {
    // Segment 1 shows from 6.666667 s, its file starts at the keyframe at 4.7 s; its chunk
    // boundary at 6.6 s of file time is the keyframe at 11.3 s.
    const spans = partSpans(
      [
        { index: 0, startSec: 0, originSec: 0 },
        { index: 1, startSec: 6.666667, originSec: 4.7 },
      ],
      new Map([
        [0, [0, 11.3]],
        [1, [0, 6.6, 13.2]],
      ]),
      [0, 3.1, 4.7, 11.3, 17.9],
    );
    expect(spans).toEqual([[6.666667], [4.633333, undefined]]);
  });
});
