import { describe, expect, it } from 'vitest';
import { SerialRunner } from './serial-runner.js';

describe('SerialRunner', () => {
  it('never overlaps runs and coalesces kicks made during a run into one more run', async () => {
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const r = new SerialRunner(
      async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        runs++;
        await new Promise((res) => setTimeout(res, 10));
        active--;
      },
      () => undefined,
    );
    r.kick();
    r.kick();
    r.kick();
    await r.idle();
    await new Promise((res) => setTimeout(res, 0));
    await r.idle();
    expect(maxActive).toBe(1);
    expect(runs).toBe(2);
  });
  it('keeps working after a failed run', async () => {
    const errors: unknown[] = [];
    let n = 0;
    const r = new SerialRunner(
      async () => {
        if (++n === 1) throw new Error('boom');
      },
      (e) => errors.push(e),
    );
    r.kick();
    await r.idle();
    r.kick();
    await r.idle();
    expect(n).toBe(2);
    expect(errors).toHaveLength(1);
  });
});
