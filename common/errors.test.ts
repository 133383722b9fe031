import { Metadata, status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { AppError, GRPC_STATUS_BY_CODE } from './errors.js';
import { fromServiceError, toServiceError, writeWithBackpressure } from './grpc.js';
import { backoffDelay, retry, retryDelay } from './retry.js';

describe('errors over gRPC', () => {
  it('round-trips code, message and the retryable marker', () => {
    const se = toServiceError(new AppError('INPUT_OUTSIDE_ROOT', 'outside', { retryable: false }));
    expect(se.code).toBe(status.PERMISSION_DENIED);
    const back = fromServiceError({ ...se, name: 'Error', message: 'x' });
    expect(back.code).toBe('INPUT_OUTSIDE_ROOT');
    expect(back.message).toBe('outside');
    expect(back.retryable).toBe(false);
  });
  it('never leaks internal error text', () => {
    const se = toServiceError(new Error('password=hunter2 at /secret/path'));
    expect(se.code).toBe(status.INTERNAL);
    expect(se.details).toBe('internal error');
  });
  it('maps bare statuses from other servers', () => {
    expect(fromServiceError({ code: status.UNAVAILABLE, details: 'down', metadata: new Metadata() }).code).toBe('UNAVAILABLE');
    expect(fromServiceError({ code: status.UNAVAILABLE, details: 'down', metadata: new Metadata() }).retryable).toBe(true);
  });
  it('has a gRPC status for every code', () => {
    for (const v of Object.values(GRPC_STATUS_BY_CODE)) expect(typeof v).toBe('number');
  });
});

describe('retry', () => {
  it('retries transient errors and never permanent ones', async () => {
    let n = 0;
    await expect(
      retry(
        async () => {
          n++;
          throw new AppError('INVALID_ARGUMENT', 'bad');
        },
        { attempts: 5, baseMs: 1, maxMs: 2 },
      ),
    ).rejects.toThrow('bad');
    expect(n).toBe(1);
    n = 0;
    const v = await retry(
      async () => {
        if (++n < 3) throw new AppError('UNAVAILABLE', 'down');
        return 'ok';
      },
      { attempts: 5, baseMs: 1, maxMs: 2 },
    );
    expect(v).toBe('ok');
    expect(n).toBe(3);
  });
  it('uses capped full-jitter backoff', () => {
    expect(backoffDelay(10, 100, 1000, () => 1)).toBe(1000);
    expect(backoffDelay(2, 100, 1000, () => 0.5)).toBe(200);
    expect(retryDelay(3, { baseMs: 100, maxMs: 1000, minMs: 50 }, () => 0)).toBe(50);
    expect(retryDelay(3, { baseMs: 100, maxMs: 1000 }, () => 1)).toBe(800);
  });
  it('stops retrying once the time budget is spent', async () => {
    let n = 0;
    const started = Date.now();
    await expect(
      retry(
        async () => {
          n++;
          throw new AppError('UNAVAILABLE', 'down');
        },
        { budgetMs: 100, baseMs: 5, maxMs: 10, minMs: 5 },
      ),
    ).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(n).toBeGreaterThan(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});

describe('calls under an aborted signal', () => {
  it('a write to a stream whose buffer is full rejects at once when the signal was aborted before', async () => {
    const ac = new AbortController();
    ac.abort(new AppError('UNAVAILABLE', 'node n1 left the cluster'));
    let drainWaiters = 0;
    const full = { write: () => false, once: () => void drainWaiters++, off: () => undefined };
    await expect(writeWithBackpressure(full, 'chunk', ac.signal)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(drainWaiters).toBe(0);
  });
});
