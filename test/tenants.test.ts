import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { credentials, Metadata } from '@grpc/grpc-js';
import { JobServiceClient } from '../common/bulk-codec.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { JobSpec, JobState } from '../proto/gen/tessera/v1/types.js';
import { UploadChunk } from '../proto/gen/tessera/v1/jobs.js';
import { TesseraClient } from '../sdk/client.js';
import { codeOf, fixture, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';

// Tenants and quotas (issue 11 items 5 and 6), on a real cluster: each token belongs to a tenant;
// jobs, listings, watches and cancels are scoped to it; s3:// inputs and outputs must lie in its
// locations; uploads live under uploads/<tenant>/; quotas bound what it has in flight.
const TENANTS = {
  acme: { apiTokens: ['acme-token-0123456789'], readTokens: ['acme-read-0123456789'], s3: ['acme-media/in/'], maxActiveJobs: 2, maxRunningJobs: 1 },
  globex: { apiTokens: ['globex-token-0123456789'], s3: ['globex-media'], maxActiveJobs: 5 },
};
const LADDER = [{ name: '', height: 144, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast' }];

describe('tenants and quotas', () => {
  let t: TestCluster;
  let clip: string;
  const clients: TesseraClient[] = [];
  const as = (token: string): TesseraClient => {
    const c = new TesseraClient({ addresses: t.cluster.coordinators, timeoutMs: 20_000, token, attempts: 1 });
    clients.push(c);
    return c;
  };
  let acme: TesseraClient;
  let globex: TesseraClient;
  let admin: TesseraClient;

  beforeAll(async () => {
    t = await startTestCluster({
      leaseTtlSec: STEADY_LEASE_SEC,
      nodes: 2,
      coordinatorEnv: {
        TENANTS: JSON.stringify(TENANTS),
        ADMIN_TOKENS: 'admin-token-0123456789',
        MAX_OPEN_WATCHES: '6',
        MAX_CONCURRENT_UPLOADS: '1',
        HTTP_ALLOW_PRIVATE: 'true',
        DRY_RUN_MAX_BYTES: String(1024 * 1024),
      },
    });
    acme = as(TENANTS.acme.apiTokens[0]!);
    globex = as(TENANTS.globex.apiTokens[0]!);
    admin = as('admin-token-0123456789');
    clip = await fixture(t.inputDir, 'tenant-clip.mp4', { seconds: 4, width: 320, height: 180, fps: 25 });
    for (const b of ['acme-media', 'globex-media']) await t.s3.send(new CreateBucketCommand({ Bucket: b }));
    const body = await readFile(clip);
    await t.s3.send(new PutObjectCommand({ Bucket: 'acme-media', Key: 'in/clip.mp4', Body: body }));
    await t.s3.send(new PutObjectCommand({ Bucket: 'globex-media', Key: 'clip.mp4', Body: body }));
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await t?.close();
  });

  let acmeJob = '';
  let globexJob = '';

  it('each tenant sees only its own jobs; an admin sees both; another tenant\'s job is "not found"', async () => {
    // A client naming another tenant in its spec is ignored: the cluster sets the tenant.
    const a = await acme.upload(clip, { ladder: LADDER, tenant: 'globex' });
    const g = await globex.submit({ inputUri: 's3://globex-media/clip.mp4', ladder: LADDER });
    acmeJob = a.jobId;
    globexJob = g.jobId;
    const ja = await acme.wait(acmeJob);
    expect(ja.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(ja.spec?.tenant).toBe('acme');
    // Its upload lives under the tenant's prefix.
    expect(ja.spec?.inputUri).toMatch(/^s3:\/\/[^/]+\/uploads\/acme\//);
    expect((await globex.wait(globexJob)).state).toBe(JobState.JOB_STATE_SUCCEEDED);

    const ids = async (c: TesseraClient): Promise<string[]> => (await c.list({ limit: 100 })).map((j) => j.id);
    expect(await ids(acme)).toEqual([acmeJob]);
    expect(await ids(globex)).toEqual([globexJob]);
    expect(await ids(as(TENANTS.acme.readTokens[0]!))).toEqual([acmeJob]);
    expect((await ids(admin)).sort()).toEqual([acmeJob, globexJob].sort());
    expect(await codeOf(acme.get(globexJob))).toBe('JOB_NOT_FOUND');
    expect(await codeOf(acme.cancel(globexJob))).toBe('JOB_NOT_FOUND');
    expect(await codeOf(acme.wait(globexJob))).toBe('JOB_NOT_FOUND');
    expect(await codeOf(globex.get(acmeJob))).toBe('JOB_NOT_FOUND');
    // The read token may not submit.
    expect(await codeOf(as(TENANTS.acme.readTokens[0]!).submit({ inputUri: 's3://acme-media/in/clip.mp4', ladder: LADDER }))).toBe('PERMISSION_DENIED');
  });

  it("a tenant is refused the other's uploads and buckets, and local paths; its own locations work", async () => {
    const globexUpload = (await globex.get(globexJob)).spec!.inputUri;
    const acmeUpload = (await acme.get(acmeJob)).spec!.inputUri;
    expect(await codeOf(globex.submit({ inputUri: acmeUpload, ladder: LADDER }))).toBe('PERMISSION_DENIED');
    expect(await codeOf(acme.submit({ inputUri: 's3://globex-media/clip.mp4', ladder: LADDER }))).toBe('PERMISSION_DENIED');
    expect(await codeOf(acme.submit({ inputUri: 's3://acme-media/elsewhere/clip.mp4', ladder: LADDER }))).toBe('PERMISSION_DENIED');
    expect(await codeOf(acme.submit({ inputUri: 's3://acme-media/in/clip.mp4', ladder: LADDER, outputUri: 's3://globex-media/stolen' }))).toBe('PERMISSION_DENIED');
    expect(await codeOf(acme.submit({ inputUri: clip, ladder: LADDER }))).toBe('PERMISSION_DENIED');
    expect(globexUpload.startsWith('s3://globex-media/')).toBe(true);
    // A resumable upload's id is the tenant's own: the other tenant finds nothing under it.
    const resumeId = 'tenant-resume-0001';
    const up = await acme.upload(clip, { ladder: LADDER }, { resumeId });
    expect((await globex.uploadStatus(resumeId)).found).toBe(false);
    // The same resume id from the other tenant is another upload, under its own prefix.
    const up2 = await globex.upload(clip, { ladder: LADDER }, { resumeId });
    const [j1, j2] = await Promise.all([acme.wait(up.jobId), globex.wait(up2.jobId)]);
    expect([j1.state, j2.state]).toEqual([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_SUCCEEDED]);
    expect(j1.spec?.inputUri).toMatch(/\/uploads\/acme\/rtenant-resume-0001$/);
    expect(j2.spec?.inputUri).toMatch(/\/uploads\/globex\/rtenant-resume-0001$/);
  });

  it("quotas: a tenant flooding submissions is refused past its quota while the other tenant's job runs", async () => {
    const g = await globex.submit({ inputUri: 's3://globex-media/clip.mp4', ladder: LADDER });
    // One after another, as fast as the API answers: the first two are accepted (its quota), the
    // rest refused with the quota's code while those two are still queued or running.
    const codes: string[] = [];
    for (let i = 0; i < 6; i++) codes.push(await codeOf(acme.submit({ inputUri: 's3://acme-media/in/clip.mp4', ladder: LADDER, idempotencyKey: `flood-${i}` })));
    expect(codes).toEqual(['OK', 'OK', 'QUOTA_EXCEEDED', 'QUOTA_EXCEEDED', 'QUOTA_EXCEEDED', 'QUOTA_EXCEEDED']);
    expect((await globex.wait(g.jobId)).state).toBe(JobState.JOB_STATE_SUCCEEDED);
    // At most one of acme's jobs ran at a time (maxRunningJobs 1): the second started preparing
    // only after the first had ended.
    const [first, second] = await Promise.all(codes.slice(0, 2).map((_, i) => acme.list({ limit: 100 }).then((js) => js.find((j) => j.spec?.idempotencyKey === `acme:flood-${i}`)!)));
    const [a1, a2] = await Promise.all([acme.wait(first!.id), acme.wait(second!.id)]);
    const at = (j: typeof a1, state: string): number => j.history.find((h) => h.scope === 'job' && h.state === state)?.atMs ?? Number.NaN;
    const spans = [a1, a2].map((j) => ({ start: at(j, 'PREPARING'), end: at(j, 'SUCCEEDED') })).sort((x, y) => x.start - y.start);
    expect(spans[1]!.start).toBeGreaterThanOrEqual(spans[0]!.end);
    // Once acme's jobs are done, it may submit again.
    for (const j of await acme.list({ limit: 100 })) await acme.wait(j.id);
    expect(await codeOf(acme.submit({ inputUri: 's3://acme-media/in/clip.mp4', ladder: LADDER, idempotencyKey: 'after-the-flood' }))).toBe('OK');
  });

  it('open watches are bounded on each coordinator (MAX_OPEN_WATCHES)', async () => {
    const { jobId } = await globex.submit({ inputUri: 's3://globex-media/clip.mp4', ladder: [{ ...LADDER[0]!, preset: 'veryslow', height: 180 }] });
    const controller = new AbortController();
    const open = Array.from({ length: 6 }, () =>
      (async () => {
        for await (const _ of admin.watch(jobId, { signal: controller.signal })) {
          /* keep it open */
        }
      })().catch(() => undefined),
    );
    // Once the six are open, a seventh is refused (a probe before that sees the job and returns).
    const probe = (): Promise<string> =>
      codeOf(
        (async () => {
          for await (const _ of admin.watch(jobId)) return;
        })(),
      );
    await vi.waitFor(
      async () => {
        expect(await probe()).toBe('QUOTA_EXCEEDED');
      },
      { timeout: 30_000, interval: 100 },
    );
    controller.abort();
    await Promise.all(open);
    // The closed watches free their places (the server sees the cancels a moment later).
    await vi.waitFor(
      async () => {
        expect((await globex.wait(jobId)).state).toBe(JobState.JOB_STATE_SUCCEEDED);
      },
      { timeout: 60_000, interval: 200 },
    );
  });

  it('uploads in flight are bounded on each coordinator (MAX_CONCURRENT_UPLOADS)', async () => {
    // One upload held open (its spec sent, its bytes not yet): the next one is refused at once.
    const raw = new JobServiceClient(t.cluster.coordinators[0]!, credentials.createInsecure());
    const md = new Metadata();
    md.set('authorization', `Bearer ${TENANTS.globex.apiTokens[0]}`);
    const held = raw.uploadAndSubmit(md, { deadline: Date.now() + 60_000 }, () => undefined);
    held.write(UploadChunk.fromPartial({ spec: JobSpec.fromPartial({ ladder: LADDER }), fileName: 'held.mp4', offset: 0, data: Buffer.alloc(0) }));
    await vi.waitFor(
      async () => {
        expect(await codeOf(acme.upload(clip, { ladder: LADDER }))).toBe('QUOTA_EXCEEDED');
      },
      { timeout: 20_000, interval: 100 },
    );
    held.cancel();
    raw.close();
    // Its place is free again.
    await vi.waitFor(
      async () => {
        expect(await codeOf(acme.upload(clip, { ladder: LADDER, idempotencyKey: 'after-held' }))).toBe('OK');
      },
      { timeout: 20_000, interval: 200 },
    );
  });

  it('a dry run never fetches a whole remote input: it reads a range and says the plan is an estimate', async () => {
    const big = await fixture(t.inputDir, 'ranged-20s.mp4', { seconds: 20, width: 640, height: 360, fps: 25, preset: 'ultrafast' });
    const body = await readFile(big);
    expect(body.length).toBeGreaterThan(3 * 1024 * 1024);
    // An HTTP server that counts what it sends; with ?ignore it answers every request in full.
    let sent = 0;
    const server = createServer((req, res) => {
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
      const whole = req.url?.includes('ignore') || !m;
      const [from, to] = whole ? [0, body.length - 1] : [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
      res.writeHead(whole ? 200 : 206, { 'content-length': String(to - from + 1), ...(whole ? {} : { 'content-range': `bytes ${from}-${to}/${body.length}` }) });
      const slice = body.subarray(from, to + 1);
      let at = 0;
      // 64 KiB every 25 ms (2.5 MiB/s): what was sent is what the client asked for, not what the
      // loopback's socket buffers would have taken.
      const pump = (): void => {
        if (at >= slice.length) return void res.end();
        const chunk = slice.subarray(at, at + 64 * 1024);
        at += chunk.length;
        sent += chunk.length;
        res.write(chunk);
        setTimeout(pump, 25);
      };
      res.on('close', () => {
        at = slice.length;
      });
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/movie.mp4`;
    try {
      const res = await globex.submit({ inputUri: url, ladder: LADDER, dryRun: true });
      expect(res.plan?.note).toMatch(/first 1\.0 MiB of [\d.]+ MiB \(a ranged read\)/);
      expect(sent).toBeLessThanOrEqual(1024 * 1024);
      // The estimate still covers the whole source, from its header.
      expect(res.plan!.segments.length).toBeGreaterThanOrEqual(1);
      expect(res.plan!.segments.at(-1)!.endSec).toBeCloseTo(20, 0);
      // An MP4 whose index is at its end: the first MiB holds no header, and the error says what to do.
      const moovAtEnd = `${big}.moov-at-end.mp4`;
      await runFfmpeg(['-hide_banner', '-nostdin', '-y', '-loglevel', 'error', '-i', big, '-c', 'copy', moovAtEnd], { noProgressMs: 60_000 });
      const late = await readFile(moovAtEnd);
      const lateServer = createServer((req, res) => {
        const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '')!;
        const to = Math.min(Number(m[2]), late.length - 1);
        res.writeHead(206, { 'content-length': String(to - Number(m[1]) + 1), 'content-range': `bytes ${m[1]}-${to}/${late.length}` });
        res.end(late.subarray(Number(m[1]), to + 1));
      });
      await new Promise<void>((r) => lateServer.listen(0, '127.0.0.1', r));
      try {
        const refused = await globex.submit({ inputUri: `http://127.0.0.1:${(lateServer.address() as AddressInfo).port}/late.mp4`, ladder: LADDER, dryRun: true }).then(
          () => undefined,
          (e: unknown) => e as { code?: string; message?: string },
        );
        expect(refused).toMatchObject({ code: 'UNSUPPORTED_FORMAT', message: expect.stringContaining('+faststart') });
      } finally {
        lateServer.close();
      }
      // A server that ignores Range: Tessera keeps the first MiB and hangs up.
      sent = 0;
      const res2 = await globex.submit({ inputUri: `${url}?ignore=1`, ladder: LADDER, dryRun: true });
      expect(res2.plan?.note).toMatch(/ranged read/);
      expect(sent).toBeLessThan(body.length / 2);
    } finally {
      server.close();
    }
  });
});
