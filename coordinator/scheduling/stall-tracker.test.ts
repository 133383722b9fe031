import { describe, expect, it } from 'vitest';
import { StallTracker } from './stall-tracker.js';

describe('StallTracker', () => {
  it('measures the time since the longest-unchanged job in flight last changed', () => {
    const t = new StallTracker();
    expect(t.maxStalledSeconds(0)).toBe(0);
    t.observe(
      new Map([
        ['a', '1'],
        ['b', '1'],
      ]),
      1_000,
    );
    t.observe(
      new Map([
        ['a', '2'],
        ['b', '1'],
      ]),
      61_000,
    );
    expect(t.maxStalledSeconds(61_000)).toBe(60); // b unchanged since 1 s
    t.observe(new Map([['a', '2']]), 121_000); // b finished: forgotten
    expect(t.maxStalledSeconds(121_000)).toBe(60); // a unchanged since 61 s
    t.observe(new Map(), 122_000);
    expect(t.maxStalledSeconds(122_000)).toBe(0);
  });
});
