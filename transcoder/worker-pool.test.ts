import { describe, expect, it } from 'vitest';
import { deferred } from '../common/deferred.js';
import { isAppError } from '../common/errors.js';
import { WorkerPool } from './worker-pool.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('WorkerPool', () => {
  it('bounds concurrency and runs FIFO', async () => {
    const pool = new WorkerPool(2);
    expect(pool.size).toBe(2);
    const gates = [deferred(), deferred(), deferred(), deferred()];
    const started: number[] = [];
    const runs = gates.map((g, i) =>
      pool.run(async () => {
        started.push(i);
        await g.promise;
        return i;
      }),
    );
    await tick();
    expect(started).toEqual([0, 1]);
    expect(pool.busy).toBe(2);
    expect(pool.queued).toBe(2);
    gates[1]!.resolve();
    await tick();
    expect(started).toEqual([0, 1, 2]);
    gates[0]!.resolve();
    gates[2]!.resolve();
    gates[3]!.resolve();
    expect(await Promise.all(runs)).toEqual([0, 1, 2, 3]);
    expect(pool.busy).toBe(0);
    expect(pool.queued).toBe(0);
  });

  it('propagates task errors and frees the slot', async () => {
    const pool = new WorkerPool(1);
    await expect(
      pool.run(async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await expect(
      pool.run(() => {
        throw new Error('sync boom');
      }),
    ).rejects.toThrow('sync boom');
    expect(await pool.run(async () => 7)).toBe(7);
  });

  it('rejects a task aborted while queued without running it', async () => {
    const pool = new WorkerPool(1);
    const gate = deferred();
    const first = pool.run(() => gate.promise);
    const ctl = new AbortController();
    let ran = false;
    const second = pool.run(async () => {
      ran = true;
    }, ctl.signal);
    await tick();
    expect(pool.queued).toBe(1);
    ctl.abort();
    const err = await second.catch((e: unknown) => e);
    expect(isAppError(err, 'CANCELLED')).toBe(true);
    expect(pool.queued).toBe(0);
    gate.resolve();
    await first;
    await tick();
    expect(ran).toBe(false);
  });

  it('rejects at once when the signal is already aborted', async () => {
    const pool = new WorkerPool(1);
    const err = await pool.run(async () => 1, AbortSignal.abort()).catch((e: unknown) => e);
    expect(isAppError(err, 'CANCELLED')).toBe(true);
  });

  it('passes an abort through to a running task', async () => {
    const pool = new WorkerPool(1);
    const ctl = new AbortController();
    const p = pool.run((signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('stopped')))), ctl.signal);
    await tick();
    ctl.abort();
    await expect(p).rejects.toThrow('stopped');
    expect(pool.busy).toBe(0);
  });

  it('rejects a bad size', () => {
    expect(() => new WorkerPool(0)).toThrow();
    expect(() => new WorkerPool(1.5)).toThrow();
  });
});
