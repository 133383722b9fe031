import { describe, expect, it } from 'vitest';
import type { ProgressRecord } from '../state/job-model.js';
import { EtaEstimator, ProgressTracker } from './progress.js';

const ev = (framesDone: number) => ({ framesDone, framesTotal: 100, subSegments: 2, subSegmentsDone: 0, done: false, subSegmentsTranscoded: 0 });

describe('ProgressTracker', () => {
  it('never goes backwards, and throttles writes', async () => {
    const writes: ProgressRecord[] = [];
    const t = new ProgressTracker(async (p) => {
      writes.push(p);
    }, 20);
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

describe('EtaEstimator', () => {
  it('estimates the remaining time from recent throughput, p90 at least p50, shrinking as work gets done', () => {
    const e = new EtaEstimator();
    expect(e.estimate(0, 1000)).toBeUndefined();
    // 100 frames/s for 10 s, then 50 frames/s.
    let frames = 0;
    for (let t = 0; t <= 10_000; t += 500) e.frames(t, (frames = t / 10));
    const [p50, p90] = e.estimate(10_000, 2000 - frames)!;
    expect(p90).toBeGreaterThanOrEqual(p50);
    expect(p50).toBeGreaterThan(9);
    expect(p50).toBeLessThan(12); // 1000 frames at 100/s, plus a twentieth of 10 s for the merge
    for (let t = 10_500; t <= 20_000; t += 500) e.frames(t, (frames += 25));
    const later = e.estimate(20_000, 2000 - frames)!;
    expect(later[1]).toBeGreaterThanOrEqual(later[0]);
    // The p50 follows the new rate: 500 frames at 50/s plus a twentieth of 20 s for the merge is 11 s
    // (the 10 s windows lag the change a little); at the old 100/s it would be 6 s.
    expect(later[0]).toBeGreaterThan(8.5);
    expect(later[0]).toBeLessThan(11.5);
    e.finalizing(30_000, 0);
    expect(e.estimate(30_000, 0)).toBeUndefined();
    e.finalizing(32_000, 0.5);
    expect(e.estimate(32_000, 0)).toEqual([2, 3]);
  });

  it('follows a cluster that sped up after a slow start; the p90 keeps the slow part in view', () => {
    const e = new EtaEstimator();
    // 5 frames/s for 15 s (chunks waiting for CPU while their cut is counted), then 100 frames/s.
    let frames = 0;
    for (let t = 0; t <= 15_000; t += 500) e.frames(t, (frames = t / 200));
    for (let t = 15_500; t <= 30_000; t += 500) e.frames(t, (frames += 50));
    const [p50, p90] = e.estimate(30_000, 3000)!;
    // 3000 frames at 100/s and 3 s of merge: 33 s. The median of every sample read about 85 s.
    expect(p50).toBeGreaterThan(30);
    expect(p50).toBeLessThan(40);
    expect(p90).toBeGreaterThan(p50 * 1.5);
  });

  it('counts throughput from the first frame: the wait for the first encode does not widen the p90', () => {
    const e = new EtaEstimator();
    // 4 s with nothing encoded (segments on their way, chunks being cut), then 100 frames/s for 6 s.
    for (let t = 0; t <= 4_000; t += 500) e.frames(t, 0);
    let frames = 0;
    for (let t = 4_500; t <= 10_000; t += 500) e.frames(t, (frames += 50));
    const [p50, p90] = e.estimate(10_000, 3000)!;
    // 3000 frames at 100/s and 1 s of merge: 31 s. Counted from the first event, the samples read
    // 11-58 frames/s: the p50 said 65 s and the p90 272 s.
    expect(p50).toBeGreaterThan(29);
    expect(p50).toBeLessThan(34);
    expect(p90).toBeLessThan(p50 * 1.25);
    // Steady samples, most of the job ahead: the p90 keeps a margin (a fifth of the p50 at the start).
    expect(p90).toBeGreaterThan(p50 * 1.1);
  });

  it('takes the p90 from settled windows: a slow first few seconds of short windows do not decide it', () => {
    const e = new EtaEstimator();
    // 3 s at 40 frames/s (one node encoding, the other starting), then 100 frames/s for 12 s.
    let frames = 0;
    for (let t = 500; t <= 3_000; t += 500) e.frames(t, (frames += 20));
    for (let t = 3_500; t <= 15_000; t += 500) e.frames(t, (frames += 50));
    const [p50, p90] = e.estimate(15_000, 3000)!;
    // 3000 frames at 100/s, 0.75 s of merge. The windows of 1-3 s read 40 frames/s, and a p90
    // taken from them said 76 s; the settled ones (5 s or more) read 73-100, and it says 42 s.
    expect(p50).toBeGreaterThan(29);
    expect(p50).toBeLessThan(33);
    expect(p90).toBeGreaterThanOrEqual(p50);
    expect(p90).toBeLessThan(p50 * 1.6);
  });

  it('goes into the progress record the API reads', async () => {
    let now = 0;
    const writes: ProgressRecord[] = [];
    const t = new ProgressTracker(
      async (p) => {
        writes.push(p);
      },
      1,
      undefined,
      () => now,
    );
    t.setTotalFrames(1000);
    for (now = 0; now <= 5000; now += 500) t.segment(0, ev(now / 10));
    await t.flush();
    expect(writes.at(-1)!.etaP50Sec).toBeGreaterThan(5);
  });
});
