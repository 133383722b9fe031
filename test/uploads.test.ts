import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { fixture, incompleteUploads, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { logLines, scrapeCounter } from './faults-helpers.js';
import { paddedMp4 } from './media-helpers.js';
import { limitedBytes, limitPortUpload, portLimitUnavailable } from './tc-port.js';
import { Etcd3 } from 'etcd3';
import { UploadSessions } from '../coordinator/api/upload-session.js';
import { Keys } from '../common/keys.js';
import { createLogger } from '../common/logger.js';
import { nodeArgs } from '../common/node-entry.js';

// Large inputs get in: uploads are stored in S3 as multipart parts while they arrive, and an
// interrupted upload resumes from what the cluster holds. The size is LARGE_UPLOAD_MB (default
// 300 MB, 60 parts of 5 MiB (UPLOAD_PART_BYTES below), so CI stays short; BENCHMARKS.md reports a 6 GB run of this test), sent over a link to
// the S3 server limited by tc to LARGE_UPLOAD_MBIT (default 400 Mbit/s; test/tc-port.ts).
const SIZE = Number(process.env.LARGE_UPLOAD_MB ?? 300) * 1024 ** 2;
const MBIT = Number(process.env.LARGE_UPLOAD_MBIT ?? 400);
const PART = 5 * 1024 ** 2;

async function sha256(stream: Readable): Promise<string> {
  const h = createHash('sha256');
  for await (const c of stream) h.update(c as Buffer);
  return h.digest('hex');
}

describe('large uploads: multipart while they arrive, resumable', () => {
  let t: TestCluster;
  let big: string;
  let stateDir: string;
  const cli = (...args: string[]): ChildProcess =>
    spawn(process.execPath, [...nodeArgs('cli/cli.ts'), ...args, '--addr', t.cluster.coordinators.join(',')], {
      cwd: REPO_ROOT,
      env: { ...process.env, S3_ENDPOINT: t.cluster.s3Endpoint, TESSERA_STATE_DIR: stateDir, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  const finish = (p: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      let stdout = '';
      let stderr = '';
      p.stdout!.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      p.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      p.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const metricsAddress = (): string => {
    const ready = logLines(t.dir, 'coordinator-0').find((l) => l.msg === 'coordinator ready') as { metricsPort?: number } | undefined;
    if (!ready?.metricsPort) throw new Error('no coordinator metrics port in its log');
    return `127.0.0.1:${ready.metricsPort}`;
  };

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 1, coordinatorEnv: { UPLOAD_PART_BYTES: String(PART), KEEP_SUCCEEDED_UPLOADS: 'true' } });
    stateDir = join(t.dir, 'cli-state');
    const clip = await fixture(t.inputDir, 'clip-4s.mp4', { seconds: 4, width: 320, height: 240, fps: 25 });
    big = join(t.dir, 'big.mp4');
    await paddedMp4(clip, big, SIZE);
  });
  afterAll(async () => {
    await t?.close();
  });

  it(`an upload of ${SIZE / 1024 ** 2} MB cut off at half resumes and sends only the rest; the job succeeds`, async () => {
    const sent0 = await scrapeCounter(metricsAddress(), 'tessera_upload_bytes_received_total');
    // The link to S3 (everything sent to its port) is limited: the upload takes its time.
    const why = portLimitUnavailable();
    if (why) throw new Error(`this test limits the S3 link with tc and ${why}`);
    const unlimit = limitPortUpload(Number(new URL(t.cluster.s3Endpoint).port), MBIT);
    const startedAt = Date.now();
    try {
      // 1. Start the CLI and kill it (-9) once the cluster holds half of the file.
      const first = cli('transcode', big, '--ladder', '240:300::ultrafast', '--json');
      const firstDone = finish(first);
      const resumeId = await vi.waitFor(
        async () => {
          const files = await readdir(stateDir).catch(() => [] as string[]);
          if (files.length !== 1) throw new Error('no upload state yet');
          return (JSON.parse(await readFile(join(stateDir, files[0]!), 'utf8')) as { resumeId: string }).resumeId;
        },
        { timeout: 30_000, interval: 50 },
      );
      await vi.waitFor(
        async () => {
          const s = await t.client.uploadStatus(resumeId);
          if (!(s.found && s.receivedBytes >= SIZE / 2)) throw new Error(`held ${s.receivedBytes}`);
        },
        { timeout: 120_000, interval: 20 },
      );
      first.kill('SIGKILL');
      await firstDone;
      // What the cluster holds settles once the cut-off stream is dropped (a part in flight may still land).
      await new Promise((r) => setTimeout(r, 1_000));
      const held = await t.client.uploadStatus(resumeId);
      expect(held.found).toBe(true);
      expect(held.totalBytes).toBe(SIZE);
      expect(held.receivedBytes % PART).toBe(0);
      expect(held.receivedBytes).toBeGreaterThanOrEqual(SIZE / 2);
      expect(held.receivedBytes).toBeLessThan(SIZE);

      // 2. The same command again: it resumes from what is held.
      const sent1 = await scrapeCounter(metricsAddress(), 'tessera_upload_bytes_received_total');
      const second = await finish(cli('transcode', big, '--ladder', '240:300::ultrafast', '--json'));
      expect(second.code, second.stderr).toBe(0);
      expect(second.stderr).toContain(`resuming upload: ${held.receivedBytes} of ${SIZE} bytes already in the cluster`);
      const job = JSON.parse(second.stdout.slice(second.stdout.indexOf('{'))) as { id: string; state: string; spec: { inputUri: string }; result: { renditions: { frames: string }[] } };
      expect(job.state).toBe(JobState[JobState.JOB_STATE_SUCCEEDED]);
      expect(Number(job.result.renditions[0]!.frames)).toBe(100);
      // Only the rest went over the wire the second time.
      const sent2 = await scrapeCounter(metricsAddress(), 'tessera_upload_bytes_received_total');
      expect(sent2 - sent1).toBe(SIZE - held.receivedBytes);
      expect(sent1 - sent0).toBeGreaterThanOrEqual(held.receivedBytes);

      // 3. The object in S3 is the file, byte for byte; nothing half-done is left behind.
      const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(job.spec.inputUri)!;
      const head = await t.s3.send(new HeadObjectCommand({ Bucket: m[1], Key: m[2] }));
      expect(head.ContentLength).toBe(SIZE);
      const obj = await t.s3.send(new GetObjectCommand({ Bucket: m[1], Key: m[2] }));
      expect(await sha256(obj.Body as Readable)).toBe(await sha256(createReadStream(big)));
      expect(await incompleteUploads(t.s3, m[1]!)).toBe(0);
      expect(await readdir(stateDir)).toEqual([]);
      expect((await t.client.uploadStatus(resumeId)).found).toBe(false);
      // The upload went through the limited link (both halves, and the job's own S3 writes).
      const limited = limitedBytes();
      expect(limited).toBeGreaterThanOrEqual(SIZE);
      console.log(
        `MEASURE upload: ${SIZE / 1024 ** 2} MiB through a ${MBIT} Mbit/s link to S3 (tc htb), cut off at ${(held.receivedBytes / 1024 ** 2).toFixed(0)} MiB and resumed; ${(limited / 1024 ** 2).toFixed(0)} MiB crossed the link; ${((Date.now() - startedAt) / 1000).toFixed(1)} s from the first byte to SUCCEEDED`,
      );
    } finally {
      unlimit();
    }
  });

  it('a retried upload with the same resume id gets the same job and stores nothing again', async () => {
    const clip = join(t.inputDir, 'clip-4s.mp4');
    const a = await t.client.upload(clip, { ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast', dynamicRange: '' }] }, { resumeId: 'retry-test-0001' });
    const sent = await scrapeCounter(metricsAddress(), 'tessera_upload_bytes_received_total');
    const b = await t.client.upload(clip, { ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast', dynamicRange: '' }] }, { resumeId: 'retry-test-0001' });
    expect(b.jobId).toBe(a.jobId);
    // The answer came before the bytes: at most the first message's chunk was read.
    expect((await scrapeCounter(metricsAddress(), 'tessera_upload_bytes_received_total')) - sent).toBeLessThanOrEqual((await stat(clip)).size);
    expect((await t.client.wait(a.jobId)).state).toBe(JobState.JOB_STATE_SUCCEEDED);
  });

  it('refuses a bad resume id, and a different file under a held resume id, with clear errors', async () => {
    const clip = join(t.inputDir, 'clip-4s.mp4');
    await expect(t.client.upload(clip, {}, { resumeId: 'Bad/Id' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    // Hold part of `big` under an id, then offer a file of another size under it.
    const s = await t.client.uploadStatus('mismatch-0001');
    expect(s.found).toBe(false);
    const p = cli('transcode', big, '--ladder', '240:300::ultrafast', '--json');
    const done = finish(p);
    const id = await vi.waitFor(
      async () => {
        const files = await readdir(stateDir).catch(() => [] as string[]);
        if (files.length !== 1) throw new Error('no upload state yet');
        const rid = (JSON.parse(await readFile(join(stateDir, files[0]!), 'utf8')) as { resumeId: string }).resumeId;
        if (!(await t.client.uploadStatus(rid)).found) throw new Error('not started');
        return rid;
      },
      { timeout: 30_000, interval: 50 },
    );
    p.kill('SIGKILL');
    await done;
    await expect(t.client.upload(clip, {}, { resumeId: id })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('a different file') });
    expect(existsSync(big)).toBe(true);
    // Abandoned: the session sweep (UPLOAD_SESSION_MAX_AGE_MS, here 0) drops it and its parts in S3.
    const etcd = new Etcd3({ hosts: t.cluster.etcdEndpoints, dialTimeout: 2_000 });
    try {
      const sessions = new UploadSessions({ etcd, keys: new Keys(), s3: t.s3, bucket: t.cluster.bucket, log: createLogger('test', 'silent') });
      expect(await sessions.sweep(0)).toBeGreaterThanOrEqual(1);
    } finally {
      etcd.close();
    }
    expect((await t.client.uploadStatus(id)).found).toBe(false);
    expect(await incompleteUploads(t.s3, t.cluster.bucket)).toBe(0);
  });
});
