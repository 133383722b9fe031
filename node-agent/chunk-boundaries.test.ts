import { describe, expect, it } from 'vitest';
import { chunkBoundaries, shownSpan } from './segment-work.js';

const keyframesEvery = (step: number, until: number): number[] => Array.from({ length: Math.floor(until / step) + 1 }, (_, i) => i * step).filter((k) => k < until);

describe('chunk boundaries inside a segment', () => {
  it('keeps every chunk showing at least MIN_SUB_SEGMENT_SEC when the segment starts just before a keyframe', () => {
    // The CI failure: a frame cut at 2.98 s of a 60 fps source with a keyframe every second. The
    // segment's file starts at the keyframe at 2.0 s, so its first 0.98 s are lead-in; a cut at
    // the file's keyframe at 1.0 s left chunk 0 showing 0.02 s (no frame at frame_rate 30).
    const req = { fps: 60, leadInFrames: 59, leadOutFrames: 0, constantRate: { num: 30, den: 1, originSec: 2.0, startSec: 2.983, endSec: 5.0 } };
    const kf = { keyframes: [0, 1, 2], durationSec: 3.0 };
    const b = chunkBoundaries(req, kf, { slots: 2, maxChunkSec: 15, minSubSegmentSec: 0.5 });
    expect(b[0]).toBe(0);
    expect(b.at(-1)).toBe(3.0);
    const shownStarts = [2.983 - 2.0, ...b.slice(1, -1)];
    const shownEnds = [...b.slice(1, -1), 3.0];
    for (let i = 0; i < shownStarts.length; i++) expect(shownEnds[i]! - shownStarts[i]!).toBeGreaterThanOrEqual(0.5 - 1e-9);
    // The keyframe at 1.0 s is inside the lead-in's reach: the cut is at 2.0 s (or none at all).
    expect(b.includes(1)).toBe(false);
  });

  it('balances the shown frames, not the decoded ones, and cuts only at keyframes', () => {
    // 20 s shown after a 4 s lead-in and before a 1 s lead-out, keyframes every 0.5 s, 2 workers.
    const req = { fps: 25, leadInFrames: 100, leadOutFrames: 25 };
    const kf = { keyframes: keyframesEvery(0.5, 25), durationSec: 25 };
    const b = chunkBoundaries(req, kf, { slots: 2, maxChunkSec: 15, minSubSegmentSec: 1 });
    expect(b).toEqual([0, 14, 25]);
    expect(shownSpan(req, 25)).toEqual({ headSec: 4, tailSec: 1 });
  });

  it('makes bounded chunks past slots × MAX_CHUNK_SEC, each at most about MAX_CHUNK_SEC of shown video', () => {
    const req = { fps: 30, leadInFrames: 30, leadOutFrames: 0 };
    const kf = { keyframes: keyframesEvery(1, 121), durationSec: 121 };
    const b = chunkBoundaries(req, kf, { slots: 2, maxChunkSec: 10, minSubSegmentSec: 1 });
    expect(b.length - 1).toBe(12);
    expect(b[1]).toBe(11); // the first chunk: 1 s lead-in + 10 s shown
    for (let i = 1; i < b.length; i++) expect(b[i]! - b[i - 1]!).toBeLessThanOrEqual(i === 1 ? 11 : 10);
    for (const x of b.slice(1, -1)) expect(Number.isInteger(x)).toBe(true);
  });

  it('leaves a segment that shows less than a minimum chunk whole', () => {
    const req = { fps: 30, leadInFrames: 28, leadOutFrames: 0 };
    expect(chunkBoundaries(req, { keyframes: [0, 1], durationSec: 1.0 }, { slots: 2, maxChunkSec: 15, minSubSegmentSec: 1 })).toEqual([0, 1.0]);
  });
});
