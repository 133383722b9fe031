import { describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { planCuts, type Cut } from './plan-cuts.js';

const every = (step: number, until: number): number[] => Array.from({ length: Math.floor(until / step) + 1 }, (_, i) => Math.round(i * step * 1e6) / 1e6);

function checkInvariants(cuts: Cut[], D: number, keyframes: number[], min: number): void {
  expect(cuts[0]!.startSec).toBe(0);
  expect(cuts[cuts.length - 1]!.endSec).toBe(D);
  cuts.forEach((c, i) => {
    expect(c.index).toBe(i);
    expect(c.endSec).toBeGreaterThan(c.startSec);
    if (cuts.length > 1) expect(c.endSec - c.startSec).toBeGreaterThanOrEqual(min - 1e-9);
    if (i > 0) {
      expect(c.startSec).toBe(cuts[i - 1]!.endSec);
      expect(keyframes).toContain(c.startSec);
    }
  });
}

describe('planCuts', () => {
  it('splits into equal work for equal weights with dense keyframes', () => {
    const kf = every(1, 60);
    const cuts = planCuts({ keyframes: kf, durationSec: 60, weights: [1, 1, 1, 1], minSegmentSec: 2 });
    expect(cuts.map((c) => [c.startSec, c.endSec])).toEqual([
      [0, 15],
      [15, 30],
      [30, 45],
      [45, 60],
    ]);
    checkInvariants(cuts, 60, kf, 2);
  });

  it('puts every boundary on a keyframe, nearest to the proportional point', () => {
    const kf = every(2, 20); // 0,2,...,20
    const cuts = planCuts({ keyframes: kf, durationSec: 21, weights: [1, 1, 1], minSegmentSec: 1 });
    checkInvariants(cuts, 21, kf, 1);
    expect(cuts.length).toBe(3);
    // ideal 7 and 14 → keyframes 6/8 and 14; the slowest segment is 8 s at best
    expect(Math.max(...cuts.map((c) => c.endSec - c.startSec))).toBeLessThanOrEqual(8);
    expect(cuts[2]!.startSec).toBe(14);
  });

  it('sizes segments in proportion to unequal weights, in weight order', () => {
    const kf = every(0.5, 40);
    const cuts = planCuts({ keyframes: kf, durationSec: 40, weights: [1, 2, 1], minSegmentSec: 1 });
    expect(cuts.map((c) => c.endSec - c.startSec)).toEqual([10, 20, 10]);
    const cuts2 = planCuts({ keyframes: kf, durationSec: 40, weights: [3, 1], minSegmentSec: 1 });
    expect(cuts2.map((c) => c.endSec - c.startSec)).toEqual([30, 10]);
  });

  it('never makes a segment shorter than the minimum, giving fewer segments instead', () => {
    const kf = every(1, 10);
    const cuts = planCuts({ keyframes: kf, durationSec: 10, weights: [1, 1, 1, 1, 1, 1, 1, 1], minSegmentSec: 3 });
    expect(cuts.length).toBe(3);
    checkInvariants(cuts, 10, kf, 3);
  });

  it('gives one segment for an input shorter than twice the minimum', () => {
    const cuts = planCuts({ keyframes: every(0.5, 7), durationSec: 7.5, weights: [1, 1, 1], minSegmentSec: 4 });
    expect(cuts).toEqual([{ index: 0, startSec: 0, endSec: 7.5 }]);
  });

  it('gives fewer segments than nodes for a short input', () => {
    const kf = every(1, 6);
    const cuts = planCuts({ keyframes: kf, durationSec: 6, weights: [1, 1, 1, 1, 1], minSegmentSec: 2 });
    expect(cuts.map((c) => [c.startSec, c.endSec])).toEqual([
      [0, 2],
      [2, 4],
      [4, 6],
    ]);
  });

  it('handles sparse keyframes: a single keyframe (at 0) means one segment', () => {
    expect(planCuts({ keyframes: [0], durationSec: 30, weights: [1, 1, 1], minSegmentSec: 1 })).toEqual([{ index: 0, startSec: 0, endSec: 30 }]);
    expect(planCuts({ keyframes: [], durationSec: 30, weights: [1, 1], minSegmentSec: 1 })).toHaveLength(1);
  });

  it('uses the few keyframes there are and drops segments that would not help', () => {
    const kf = [0, 12, 13];
    const cuts = planCuts({ keyframes: kf, durationSec: 30, weights: [1, 1, 1, 1], minSegmentSec: 2 });
    checkInvariants(cuts, 30, kf, 2);
    // Only two cut points exist: 0-12 | 12-30 (or with 13) — the 1 s 12-13 piece would be below the minimum.
    expect(cuts.length).toBe(2);
    expect(cuts[1]!.startSec).toBe(13);
  });

  it('sizes for the largest weights first when fewer segments than weights fit', () => {
    const kf = every(1, 10);
    // Only 2 segments of >= 4 s fit; they are sized for the weights 3 and 2 (in that order): 6 s + 4 s.
    const cuts = planCuts({ keyframes: kf, durationSec: 10, weights: [1, 3, 2], minSegmentSec: 4 });
    expect(cuts.map((c) => c.endSec - c.startSec)).toEqual([6, 4]);
  });

  it('keeps one segment when splitting would finish later (a fast worker beats a fast+slow pair)', () => {
    // weight 4 alone: 10/4 = 2.5; split 6 s/4 + 4 s/1 = 4 -> one segment is faster.
    const cuts = planCuts({ keyframes: every(1, 10), durationSec: 10, weights: [1, 4], minSegmentSec: 4 });
    expect(cuts).toEqual([{ index: 0, startSec: 0, endSec: 10 }]);
  });

  it('ignores unsorted/duplicate/out-of-range keyframes', () => {
    const cuts = planCuts({ keyframes: [20, 10, 10, -1, 0, 99, Number.NaN], durationSec: 30, weights: [1, 1, 1], minSegmentSec: 1 });
    expect(cuts.map((c) => c.startSec)).toEqual([0, 10, 20]);
  });

  it('scales to many keyframes (all-intra) and many weights', () => {
    const kf = every(1 / 30, 3600);
    const t0 = Date.now();
    const cuts = planCuts({ keyframes: kf, durationSec: 3600, weights: Array.from({ length: 40 }, () => 1), minSegmentSec: 5 });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(cuts.length).toBe(40);
    for (const c of cuts) expect(Math.abs(c.endSec - c.startSec - 90)).toBeLessThan(0.1);
  });

  it('rejects invalid input', () => {
    const bad = [
      { keyframes: [0], durationSec: 0, weights: [1], minSegmentSec: 1 },
      { keyframes: [0], durationSec: 10, weights: [], minSegmentSec: 1 },
      { keyframes: [0], durationSec: 10, weights: [0], minSegmentSec: 1 },
      { keyframes: [0], durationSec: 10, weights: [1], minSegmentSec: -1 },
    ];
    for (const b of bad) {
      let err: unknown;
      try {
        planCuts(b);
      } catch (e) {
        err = e;
      }
      expect(isAppError(err, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});
