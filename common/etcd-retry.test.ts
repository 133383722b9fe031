import { Metadata, status } from '@grpc/grpc-js';
import { ClientClosedError, EtcdLeaseInvalidError, GRPCDeadlineExceededError, GRPCInvalidArgumentError, GRPCUnavailableError } from 'etcd3';
import { BrokenCircuitError } from 'cockatiel';
import { describe, expect, it } from 'vitest';
import { AppError } from './errors.js';
import { asAppError, isEtcdOutage, withEtcdRetry } from './etcd-retry.js';
import { fromServiceError, toServiceError } from './grpc.js';

const down = (): Error => new GRPCUnavailableError('14 UNAVAILABLE: No connection established (127.0.0.1:2379)');

describe('etcd errors at the adapter boundary', () => {
  it('turns an etcd outage into one retryable UNAVAILABLE that still says it is an outage', () => {
    for (const raw of [down(), new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED'), new BrokenCircuitError(), new EtcdLeaseInvalidError('lease 7')]) {
      const e = asAppError(raw, { what: 'record segment done' });
      expect(e).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(e.message).toContain('record segment done');
      expect(e.cause).toBe(raw);
      expect(isEtcdOutage(e)).toBe(true);
    }
  });

  it('keeps a refused request and a closed client permanent', () => {
    expect(asAppError(new GRPCInvalidArgumentError('3 INVALID_ARGUMENT: bad key'))).toMatchObject({ code: 'INTERNAL', retryable: false });
    expect(asAppError(new ClientClosedError('kv'))).toMatchObject({ code: 'CANCELLED', retryable: false });
    expect(isEtcdOutage(asAppError(new GRPCInvalidArgumentError('bad')))).toBe(false);
  });

  it('passes AppErrors through and classifies unknown errors as the caller says', () => {
    const app = new AppError('FENCED', 'moved', { retryable: true });
    expect(asAppError(app)).toBe(app);
    expect(asAppError(new TypeError('x is undefined'))).toMatchObject({ code: 'INTERNAL', retryable: false });
    expect(asAppError(new Error('socket hang up'), { what: 'segment 3', unknown: { code: 'TRANSCODE_FAILED', retryable: true } })).toMatchObject({
      code: 'TRANSCODE_FAILED',
      retryable: true,
      message: 'segment 3: socket hang up',
    });
    // Another process's UNAVAILABLE (a node's answer) is not this coordinator's etcd outage.
    expect(isEtcdOutage(fromServiceError({ code: status.UNAVAILABLE, details: 'down', metadata: new Metadata() }))).toBe(false);
  });

  it('answers a client with a retryable UNAVAILABLE and no etcd text', () => {
    const se = toServiceError(down());
    expect(se.code).toBe(status.UNAVAILABLE);
    expect(se.details).toBe('the cluster store is unavailable; retry');
    const back = fromServiceError({ ...se, name: 'Error', message: 'x' });
    expect(back).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    const refused = toServiceError(new GRPCInvalidArgumentError('3 INVALID_ARGUMENT: key is too large'));
    expect(refused.code).toBe(status.INTERNAL);
    expect(refused.details).toBe('internal error');
    expect(fromServiceError({ ...refused, name: 'Error', message: 'x' }).retryable).toBe(false);
  });

  it('withEtcdRetry never lets a raw etcd3 error out', async () => {
    await expect(withEtcdRetry('read job', () => Promise.reject(new GRPCInvalidArgumentError('bad')))).rejects.toMatchObject({ code: 'INTERNAL', retryable: false });
    let n = 0;
    await expect(
      withEtcdRetry(
        'read job',
        () => {
          n++;
          return Promise.reject(down());
        },
        { budgetMs: 1, baseMs: 1, maxMs: 1 },
      ),
    ).rejects.toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    expect(n).toBeGreaterThanOrEqual(1);
  });
});

describe('statuses from the transport', () => {
  it('are retryable when no Tessera handler made them, and keep the handler marker otherwise', () => {
    for (const code of [status.UNAVAILABLE, status.CANCELLED, status.INTERNAL, status.DEADLINE_EXCEEDED]) {
      expect(fromServiceError({ code, details: 'Received RST_STREAM', metadata: new Metadata() }).retryable).toBe(true);
    }
    expect(fromServiceError({ code: status.INVALID_ARGUMENT, details: 'bad', metadata: new Metadata() }).retryable).toBe(false);
    const internal = toServiceError(new Error('a bug'));
    expect(fromServiceError({ ...internal, name: 'Error', message: 'x' })).toMatchObject({ code: 'INTERNAL', retryable: false });
    const cancelled = toServiceError(new AppError('CANCELLED', 'segment dropped'));
    expect(fromServiceError({ ...cancelled, name: 'Error', message: 'x' })).toMatchObject({ code: 'CANCELLED', retryable: false });
  });
});
