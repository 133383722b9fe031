import { describe, expect, it } from 'vitest';
import { SpeedMeter } from './speed.js';

describe('SpeedMeter', () => {
  it('averages megapixels per second over chunks, newest weighted 0.3, ignoring tiny ones', () => {
    const m = new SpeedMeter();
    expect(m.value).toBeUndefined();
    m.observe(100, 0.1, 1e6); // start-up dominated: ignored
    expect(m.value).toBeUndefined();
    m.observe(100, 2, 1e6); // 50 MP/s
    expect(m.value).toBe(50);
    m.observe(100, 1, 1e6); // 100 MP/s
    expect(m.value).toBe(65);
  });
});
