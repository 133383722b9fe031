import { describe, expect, it } from 'vitest';
import { etaReadings } from './eta.js';

describe('ETA benchmark readings', () => {
  it('takes the first ETA at or past each point and compares it with the time that really remained', () => {
    const samples = [
      { atMs: 0, progress: 0, p50: 0, p90: 0 },
      { atMs: 1_000, progress: 10, p50: 30, p90: 40 },
      { atMs: 5_000, progress: 26, p50: 12, p90: 16 },
      { atMs: 10_000, progress: 50, p50: 12, p90: 9 },
      { atMs: 15_000, progress: 80, p50: 4, p90: 6 },
    ];
    const r = etaReadings(samples, 20_000);
    expect(r.map((x) => x.at)).toEqual([25, 50, 75]);
    expect(r[0]).toMatchObject({ progress: 26, predictedSec: 12, actualSec: 15, withinP90: true });
    expect(r[0]!.error).toBeCloseTo(-0.2);
    expect(r[1]).toMatchObject({ predictedSec: 12, actualSec: 10, withinP90: false });
    expect(r[2]!.error).toBeCloseTo(-0.2);
  });
});
