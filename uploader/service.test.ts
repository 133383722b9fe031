import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { credentials } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UploaderClient, UploaderService as UploaderDefinition } from '../common/bulk-codec.js';
import { callUnary } from '../common/grpc.js';
import { startGrpcServer, type StartedServer } from '../common/grpc-server.js';
import { createLogger } from '../common/logger.js';
import type { PartRef } from '../proto/gen/tessera/v1/uploader.js';
import { startEtcdServer, type EtcdServer } from '../test/etcd-server.js';
import { randomKeys } from '../test/support/etcd-fixtures.js';
import { uploaderMetrics } from './metrics.js';
import { sendPart } from './part-client.js';
import { UploaderService } from './service.js';

/**
 * The uploader's etcd-facing parts, over gRPC on loopback: parts fenced on the segment owner
 * key, and Cleanup's release of a job's upload record. Nothing here runs ffmpeg.
 */
describe('UploaderService against etcd', () => {
  let e: EtcdServer;
  let dir: string;
  let grpc: StartedServer;
  let client: UploaderClient;
  let service: UploaderService;
  const keys = randomKeys();
  const metrics = uploaderMetrics(new Registry());
  const sent: unknown[] = [];
  const s3 = {
    send: (cmd: unknown) => {
      sent.push(cmd);
      return Promise.resolve({});
    },
  } as unknown as S3Client;

  beforeAll(async () => {
    e = await startEtcdServer();
    dir = await mkdtemp(join(tmpdir(), 'uploader-'));
    const log = createLogger('test', 'silent');
    service = new UploaderService({ etcd: e.client, keys, s3, stagingDir: join(dir, 'staging'), maxPartBytes: 1 << 20, partSizeBytes: 5 << 20, log, metrics });
    grpc = await startGrpcServer('127.0.0.1', 0, [{ name: 'tessera.v1.Uploader', definition: UploaderDefinition, implementation: service.handlers() }]);
    client = new UploaderClient(`127.0.0.1:${grpc.port}`, credentials.createInsecure());
    await writeFile(join(dir, 'part.mp4'), Buffer.alloc(4096, 7));
  });
  afterAll(async () => {
    client?.close();
    await grpc?.close(1_000);
    await e?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const ref = (jobId: string, ownerRevision: number, subSegment = 0): PartRef => ({ jobId, rendition: '360p', segment: 0, subSegment, attempt: 1, ownerRevision });
  const assign = async (jobId: string, nodeId: string): Promise<number> =>
    Number(
      (
        await e.client
          .put(keys.segmentOwner(jobId, 0))
          .value(JSON.stringify({ nodeId, attempt: 1, assignedAtMs: 1 }))
          .exec()
      ).header.revision,
    );
  const fenced = async (): Promise<number> => (await metrics.fencedParts.get()).values[0]?.value ?? 0;
  const staged = async (jobId: string): Promise<string[]> => (existsSync(join(dir, 'staging', jobId)) ? readdir(join(dir, 'staging', jobId, 'parts', '360p')) : []);

  it('accepts a part under the owner revision the segment has, and refuses one from a reassigned attempt', async () => {
    const rev = await assign('job-a', 'node-1');
    const ack = await sendPart(client, ref('job-a', rev), join(dir, 'part.mp4'), { timeoutMs: 10_000, attempts: 1 });
    expect(ack.bytes).toBe(4096);
    expect(await staged('job-a')).toEqual(['0000-0000-a1.mp4']);

    await assign('job-a', 'node-2'); // reassigned: the old revision is stale
    const before = await fenced();
    await expect(sendPart(client, ref('job-a', rev, 1), join(dir, 'part.mp4'), { timeoutMs: 10_000, attempts: 1 })).rejects.toMatchObject({ code: 'FENCED' });
    expect(await fenced()).toBe(before + 1);
    expect(await staged('job-a')).toEqual(['0000-0000-a1.mp4']);
  });

  it("checks the acknowledgement's SHA-256 against the bytes sent: a mismatch is retried, and fails the send when it stays", async () => {
    const want = createHash('sha256').update(Buffer.alloc(4096, 7)).digest('hex');
    const ok = await sendPart(client, { ...ref('job-d', 0), rendition: 'audio' }, join(dir, 'part.mp4'), { timeoutMs: 10_000, attempts: 1 });
    expect(ok.sha256).toBe(want);
    // An uploader whose acknowledgement names other bytes (the first time, then always).
    let lies = 1;
    const real = service.handlers();
    const liar = await startGrpcServer('127.0.0.1', 0, [
      {
        name: 'tessera.v1.Uploader',
        definition: UploaderDefinition,
        implementation: {
          ...real,
          putPart: (call: Parameters<typeof real.putPart>[0], cb: Parameters<typeof real.putPart>[1]) =>
            real.putPart(call, (err, ack) => cb(err, ack && lies-- > 0 ? { ...ack, sha256: '0'.repeat(64) } : ack)),
        },
      },
    ]);
    const c = new UploaderClient(`127.0.0.1:${liar.port}`, credentials.createInsecure());
    try {
      let retries = 0;
      const ack = await sendPart(c, { ...ref('job-d', 0), rendition: 'audio' }, join(dir, 'part.mp4'), { timeoutMs: 10_000, attempts: 2, onRetry: () => retries++ });
      expect(ack.sha256).toBe(want);
      expect(retries).toBe(1);
      lies = 100;
      await expect(sendPart(c, { ...ref('job-d', 0), rendition: 'audio' }, join(dir, 'part.mp4'), { timeoutMs: 10_000, attempts: 2 })).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    } finally {
      c.close();
      await liar.close(1_000);
    }
  });

  it('accepts a part that names no owner revision (audio from the coordinator) without asking etcd', async () => {
    const ack = await sendPart(client, { ...ref('job-b', 0), rendition: 'audio' }, join(dir, 'part.mp4'), { timeoutMs: 10_000, attempts: 1 });
    expect(ack.bytes).toBe(4096);
  });

  it('Cleanup of a cancelled job abandons its upload: the archive that reached S3 is deleted and the record goes', async () => {
    await e.client.put(keys.job('job-c')).value(JSON.stringify({ id: 'job-c', state: 'CANCELLED' }));
    await e.client.put(keys.upload('job-c')).value(JSON.stringify({ result: { bucket: 'out', key: 'jobs/job-c.zip' } }));
    await mkdir(join(dir, 'staging', 'job-c'), { recursive: true });
    sent.length = 0;
    await callUnary(client, client.cleanup, { jobId: 'job-c' }, 10_000);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toBeInstanceOf(DeleteObjectCommand);
    expect((sent[0] as DeleteObjectCommand).input).toMatchObject({ Bucket: 'out', Key: 'jobs/job-c.zip' });
    expect(await e.client.get(keys.upload('job-c')).exists()).toBe(false);
    expect(existsSync(join(dir, 'staging', 'job-c'))).toBe(false);
  });

  it('Cleanup of a succeeded (or archived) job keeps its upload record and touches nothing in S3', async () => {
    await e.client.put(keys.historyEntry('job-d')).value(JSON.stringify({ id: 'job-d', state: 'SUCCEEDED' }));
    await e.client.put(keys.upload('job-d')).value(JSON.stringify({ result: { bucket: 'out', key: 'jobs/job-d.zip' } }));
    sent.length = 0;
    await callUnary(client, client.cleanup, { jobId: 'job-d' }, 10_000);
    expect(sent).toEqual([]);
    expect(await e.client.get(keys.upload('job-d')).exists()).toBe(true);
    await expect(callUnary(client, client.cleanup, { jobId: '../etc' }, 10_000)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
