import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobServiceService } from '../common/bulk-codec.js';
import { AppError } from '../common/errors.js';
import { unary } from '../common/grpc.js';
import { startGrpcServer, type StartedServer } from '../common/grpc-server.js';
import { createLogger } from '../common/logger.js';
import { TesseraClient } from './client.js';
import { ADMIN_METHODS, idempotencyLevel, JOB_METHODS, KEYED_METHODS, mayRepeat } from './idempotency.js';

describe('idempotency levels from the protos', () => {
  it('every RPC of the client services has a level the SDK reads, or is keyed', () => {
    for (const m of [...Object.values(JOB_METHODS), ...Object.values(ADMIN_METHODS)]) {
      const level = idempotencyLevel(m);
      expect(level !== undefined || KEYED_METHODS.has(m.name), `${m.name} has no idempotency_level in the protos`).toBe(true);
      if (level !== undefined) expect(['NO_SIDE_EFFECTS', 'IDEMPOTENT']).toContain(level);
    }
    expect(idempotencyLevel(JOB_METHODS.getJob)).toBe('NO_SIDE_EFFECTS');
    expect(idempotencyLevel(JOB_METHODS.cancelJob)).toBe('IDEMPOTENT');
    expect(mayRepeat(JOB_METHODS.submitJob)).toBe(false);
    expect(mayRepeat(JOB_METHODS.submitJob, true)).toBe(true);
    // A key makes only a keyed method repeatable.
    expect(mayRepeat({ name: 'Other', options: {} }, true)).toBe(false);
  });
});

describe('the client repeats only what the protos mark idempotent', () => {
  let srv: StartedServer;
  const calls = { getJob: 0, submitJob: 0, cancelJob: 0 };
  beforeAll(async () => {
    const log = createLogger('test', 'silent');
    // Each handler counts the calls that reached it and refuses them.
    const refuse = (name: keyof typeof calls, err: AppError): unknown =>
      unary(log, () => {
        calls[name]++;
        return Promise.reject(err);
      });
    const down = new AppError('UNAVAILABLE', 'the coordinator is restarting');
    const implementation = {
      getJob: refuse('getJob', down),
      submitJob: refuse('submitJob', down),
      cancelJob: refuse('cancelJob', new AppError('JOB_NOT_FOUND', 'no such job')),
    } as unknown as UntypedServiceImplementation;
    srv = await startGrpcServer('127.0.0.1', 0, [{ name: 'tessera.v1.JobService', definition: JobServiceService, implementation }]);
  });
  afterAll(async () => {
    await srv.close(1_000);
  });

  it('GetJob and a keyed SubmitJob are tried `attempts` times; SubmitJob without a key once; a permanent error once', async () => {
    const client = new TesseraClient({ addresses: [`127.0.0.1:${srv.port}`], attempts: 3, timeoutMs: 5_000 });
    try {
      await expect(client.get('j1')).rejects.toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(calls.getJob).toBe(3);
      await expect(client.submit({ inputUri: 's3://bucket/in.mp4' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(calls.submitJob).toBe(1);
      await expect(client.submit({ inputUri: 's3://bucket/in.mp4', idempotencyKey: 'k1' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(calls.submitJob).toBe(1 + 3);
      await expect(client.cancel('j1')).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' });
      expect(calls.cancelJob).toBe(1);
    } finally {
      client.close();
    }
  });
});
