import { describe, expect, it } from 'vitest';
import type { ProgressRecord } from './job-model.js';
import { ProgressTracker } from './progress.js';

const ev = (framesDone: number) => ({ framesDone, framesTotal: 100, subSegments: 2, subSegmentsDone: 0, done: false, subSegmentsTranscoded: 0 });

describe('ProgressTracker', () => {
  it('never goes backwards, and throttles writes', async () => {
    const writes: ProgressRecord[] = [];
    const t = new ProgressTracker(async (p) => { writes.push(p); }, 20);
    t.setTotalFrames(200);
    t.preparing(1);
    t.segment(0, ev(100));
    t.segment(1, ev(50));
    const mid = t.percent;
    expect(mid).toBeCloseTo(5 + 85 * 0.75, 5);
    t.segment(1, ev(0)); // a reassigned segment restarts its count: the bar must not move back
    expect(t.percent).toBe(mid);
    t.finalizing(0.5);
    expect(t.percent).toBe(95);
    await new Promise((r) => setTimeout(r, 50));
    await t.flush();
    expect(writes.length).toBeGreaterThanOrEqual(1);
    expect(writes.length).toBeLessThanOrEqual(2);
    expect(writes.at(-1)!.progress).toBe(95);
    for (let i = 1; i < writes.length; i++) expect(writes[i]!.progress).toBeGreaterThanOrEqual(writes[i - 1]!.progress);
  });
});
