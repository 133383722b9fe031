import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, truncate, writeFile, copyFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { grpcServing } from '../common/health-client.js';
import { deadline, openClientStream } from '../common/grpc.js';
import type { NodeRecord } from '../common/records.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { writeForgedMatroska } from './support/media-fixtures.js';
import { JobServiceClient } from '../common/bulk-codec.js';
import type { SubmitJobResponse, UploadChunk } from '../proto/gen/tessera/v1/jobs.js';
import { JobSpec, JobState } from '../proto/gen/tessera/v1/types.js';
import { credentials } from '@grpc/grpc-js';
import { checkArchive, codeOf, fixture, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';

const LADDER = [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast' }];

describe('hostile and malformed input', () => {
  let t: TestCluster;
  let clip: string;
  let trap: Server;
  let trapPort = 0;
  let trapConnections = 0;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, coordinatorEnv: { MAX_UPLOAD_BYTES: String(2 * 1024 * 1024) } });
    clip = await fixture(t.inputDir, 'clip-4s-360p.mp4', { seconds: 4, width: 640, height: 360, fps: 30 });
    trap = createServer((s) => {
      trapConnections++;
      s.destroy();
    });
    await new Promise<void>((r) => trap.listen(0, '127.0.0.1', r));
    trapPort = (trap.address() as { port: number }).port;
  });
  afterAll(async () => {
    trap?.close();
    await t?.close();
  });

  /** Submits a file from the input root and returns the job's final error code (or the call's). */
  const outcome = async (path: string): Promise<string> => {
    try {
      const { jobId } = await t.client.submit({ inputUri: path, ladder: LADDER });
      const job = await t.client.wait(jobId);
      return job.state === JobState.JOB_STATE_SUCCEEDED ? 'SUCCEEDED' : job.errorCode;
    } catch (err) {
      return isAppError(err) ? err.code : String(err);
    }
  };

  it('refuses playlists and reference lists without following them', async () => {
    const local = join(t.inputDir, 'local.m3u8');
    await writeFile(local, `#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://${clip}\n#EXTINF:10,\n/etc/passwd\n#EXT-X-ENDLIST\n`);
    const remote = join(t.inputDir, 'remote.mp4');
    await writeFile(remote, `#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:${trapPort}/seg.ts\n#EXT-X-ENDLIST\n`);
    const concat = join(t.inputDir, 'list.mp4');
    await writeFile(concat, `ffconcat version 1.0\nfile '/etc/passwd'\nfile '${clip}'\n`);
    expect(await outcome(local)).toBe('UNSUPPORTED_FORMAT');
    expect(await outcome(remote)).toBe('UNSUPPORTED_FORMAT');
    expect(await outcome(concat)).toBe('UNSUPPORTED_FORMAT');
    // SSRF: an http input pointing at a loopback address is refused before any connection.
    expect(await outcome(`http://127.0.0.1:${trapPort}/video.mp4`)).toBe('PERMISSION_DENIED');
    expect(await outcome(`http://169.254.169.254/latest/meta-data`)).toBe('PERMISSION_DENIED');
    expect(trapConnections).toBe(0);
  });

  it('never lets a file name reach ffmpeg', async () => {
    const dash = join(t.inputDir, '-i concat:x.mp4');
    await copyFile(clip, dash);
    expect(await outcome(dash)).toBe('SUCCEEDED');
    expect(await outcome('concat:/etc/passwd|x.mp4')).toBe('UNSUPPORTED_URI_SCHEME');
  });

  it('refuses broken, lying and oversized media with exact codes', async () => {
    // A 1-frame Matroska whose header claims 100 hours.
    const liar = join(t.inputDir, 'liar.mkv');
    await runFfmpeg(['-hide_banner', '-nostdin', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30', '-frames:v', '1', '-c:v', 'libx264', `file:${liar}`]);
    const buf = await readFile(liar);
    const at = buf.indexOf(Buffer.from([0x44, 0x89, 0x88]));
    expect(at).toBeGreaterThan(0);
    buf.writeDoubleBE(100 * 3600 * 1000, at + 3); // Segment Info Duration, in ms (TimecodeScale 1 ms)
    await writeFile(liar, buf);
    expect(await outcome(liar)).toBe('LIMIT_EXCEEDED');

    // An MP4 cut off before its moov box.
    const truncated = join(t.inputDir, 'truncated.mp4');
    await runFfmpeg(['-hide_banner', '-nostdin', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30:duration=2', '-c:v', 'libx264', '-preset', 'ultrafast', `file:${truncated}`]);
    await truncate(truncated, 4000);
    expect(await outcome(truncated)).toBe('INPUT_NOT_VIDEO');

    const random = join(t.inputDir, 'random.mp4');
    await writeFile(random, randomBytes(200_000));
    expect(await outcome(random)).toBe('INPUT_NOT_VIDEO');

    const empty = join(t.inputDir, 'empty.mp4');
    await writeFile(empty, '');
    expect(await outcome(empty)).toBe('INPUT_EMPTY');

    // A Matroska file with 50 video streams.
    const many = join(t.inputDir, 'many.mkv');
    await runFfmpeg([
      '-hide_banner',
      '-nostdin',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=64x64:rate=10:duration=1',
      ...Array.from({ length: 50 }, () => ['-map', '0:v']).flat(),
      '-c:v',
      'libx264',
      '-preset',
      'ultrafast',
      `file:${many}`,
    ]);
    expect(await outcome(many)).toBe('LIMIT_EXCEEDED');
  });

  it('refuses a forged header claiming 100000x100000 as LIMIT_EXCEEDED, before any node sees it', async () => {
    // Hand-built Matroska: ffmpeg cannot write such a header. The decoder refuses the size, so
    // ffprobe reports 0x0; the size the header claims still reaches the gate.
    const forged = await writeForgedMatroska(join(t.inputDir, 'forged-100k.mkv'), { width: 100000, height: 100000 });
    const { jobId } = await t.client.submit({ inputUri: forged, ladder: LADDER });
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_FAILED);
    expect(job.errorCode).toBe('LIMIT_EXCEEDED');
    expect(job.errorMessage).toContain('100000x100000; the limit is 7680x4320');
    // Over -max_pixels but within what libavcodec can address: refused the same way.
    expect(await outcome(await writeForgedMatroska(join(t.inputDir, 'forged-16k.mkv'), { width: 16000, height: 16000 }))).toBe('LIMIT_EXCEEDED');
  });

  it('refuses a small file claiming 6 h of 8K at 240 fps (the work cap) before any node works', async () => {
    // 10 MB of 520,000 tiny VP9 blocks whose header claims 7680x4320, 240 fps and 21,600 s:
    // every single limit holds (size, duration, fps, enough frames to cover the duration), but
    // the claim is 5.2 M frames of 8K, 1.7e14 pixels, 16x the default MAX_WORK_PIXELS.
    const bomb = await writeForgedMatroska(join(t.inputDir, 'bomb-8k-240fps-6h.mkv'), { width: 7680, height: 4320, fps: 240, durationSec: 21_600, frames: 520_000 });
    const { jobId } = await t.client.submit({ inputUri: bomb, ladder: LADDER });
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_FAILED);
    expect(job.errorCode).toBe('LIMIT_EXCEEDED');
    expect(job.errorMessage).toMatch(/claims 5184000 frames of 7680x4320 \(1\.72e\+14 pixels to transcode\); the work limit MAX_WORK_PIXELS is 1\.07e\+13/);
    // No segment was planned or dispatched: none in the job, none in etcd, no agent heard of it.
    expect(job.segments).toEqual([]);
    expect(await t.cluster.client().getAll().prefix(`/tessera/jobs/${jobId}/segments/`).keys()).toEqual([]);
    for (const node of ['node-0', 'node-1']) expect(readFileSync(join(t.dir, 'logs', `${node}.log`), 'utf8'), node).not.toContain(jobId);
  });

  it('strips input metadata and chapters from every rendition', async () => {
    const meta = join(t.inputDir, 'meta.ffmeta');
    await writeFile(meta, ';FFMETADATA1\ntitle=SECRET-CHAPTERED\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1500\ntitle=SECRET-CHAPTER\n');
    const src = join(t.inputDir, 'with-metadata.mkv');
    await runFfmpeg([
      '-hide_banner',
      '-nostdin',
      '-y',
      '-loglevel',
      'error',
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=320x240:rate=30:duration=3',
      '-f',
      'lavfi',
      '-i',
      'sine=frequency=440:duration=3',
      '-i',
      `file:${meta}`,
      '-map',
      '0:v',
      '-map',
      '1:a',
      '-map_metadata',
      '2',
      '-map_chapters',
      '2',
      '-c:v',
      'libx264',
      '-preset',
      'ultrafast',
      '-g',
      '30',
      '-c:a',
      'aac',
      '-metadata',
      'title=SECRET-TITLE',
      '-metadata',
      'comment=SECRET-COMMENT',
      '-metadata',
      'location=+12.34+056.78/',
      '-metadata:s:v',
      'title=SECRET-VIDEO',
      '-metadata:s:v',
      'handler_name=SECRET-VHANDLER',
      '-metadata:s:a',
      'title=Commentary',
      '-metadata:s:a',
      'language=SECRET-LANG',
      `file:${src}`,
    ]);
    const tagsOf = async (p: string): Promise<string> =>
      (await runFfmpeg(['-v', 'error', '-show_format', '-show_streams', '-show_chapters', '-of', 'json', `file:${p}`], { binary: 'ffprobe' })).stdout;
    expect(await tagsOf(src)).toContain('SECRET-CHAPTER'); // the source really carries it all
    const { jobId } = await t.client.submit({ inputUri: src, ladder: [...LADDER, { name: '', height: 120, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast' }] });
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const archive = await checkArchive(t.s3, job, t.dir);
    expect(archive.renditions.map((r) => r.frames)).toEqual([90, 90]);
    for (const r of archive.manifest.renditions) {
      const file = join(t.dir, `${job.id}-${r.file}`);
      const bytes = await readFile(file);
      expect(bytes.includes('SECRET'), `${r.file} bytes`).toBe(false);
      expect(bytes.includes('+12.34'), `${r.file} location`).toBe(false);
      const probe = JSON.parse(await tagsOf(file)) as { chapters: unknown[]; streams: { codec_type: string; tags?: Record<string, string> }[] };
      expect(probe.chapters).toEqual([]);
      // An audio track's title is what players name the track by: it is kept on purpose
      // (docs/media.md), sanitised; a language that is not an ISO 639-2 code is not.
      const audio = probe.streams.find((x) => x.codec_type === 'audio')!;
      expect(audio.tags?.handler_name).toBe('Commentary');
      expect(audio.tags?.language).toBe('und');
    }
    // The zip is stored, not deflated: its bytes hold every entry and the manifest as written.
    const zip = await readFile(join(t.dir, `${job.id}.zip`));
    expect(zip.includes('SECRET')).toBe(false);
  });

  it('aborts an upload over the limit early, and refuses a chunk stream with a gap', async () => {
    const big = join(t.dir, 'big.bin');
    await writeFile(big, randomBytes(6 * 1024 * 1024));
    let code = '';
    try {
      await t.client.upload(big, { ladder: LADDER });
    } catch (err) {
      code = isAppError(err) ? err.code : String(err);
    }
    expect(code).toBe('LIMIT_EXCEEDED');

    const c = new JobServiceClient(t.cluster.coordinators[0]!, credentials.createInsecure());
    try {
      const call = openClientStream<UploadChunk, SubmitJobResponse>((cb) => c.uploadAndSubmit(new Metadata(), deadline(10_000), cb));
      call.stream.write({ spec: JobSpec.fromPartial({ ladder: LADDER }), fileName: 'x.mp4', offset: 0, data: Buffer.alloc(1000) });
      call.stream.write({ spec: undefined, fileName: '', offset: 5000, data: Buffer.alloc(1000) });
      call.stream.end();
      await expect(call.result).rejects.toMatchObject({ code: 'BAD_OFFSET', message: expect.stringContaining('expected offset 1000') });
    } finally {
      c.close();
    }
  });

  it('leaves the node agents healthy, and a normal job right after succeeds', async () => {
    for (const id of ['node-0', 'node-1']) {
      const rec = JSON.parse((await t.cluster.client().get(`/tessera/nodes/${id}`).string())!) as NodeRecord;
      expect(await grpcServing(rec.address)).toBe(true);
    }
    expect(await outcome(clip)).toBe('SUCCEEDED');
  });
});

describe('authentication', () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 1, coordinatorEnv: { API_TOKENS: 'api-secret', READ_TOKENS: 'read-secret', ADMIN_TOKENS: 'admin-secret' } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('requires a valid bearer token with the right scope', async () => {
    const { TesseraClient } = await import('../sdk/client.js');
    const as = (token?: string) => new TesseraClient({ addresses: t.cluster.coordinators, attempts: 1, ...(token ? { token } : {}) });
    const none = as();
    const wrong = as('not-a-token');
    const read = as('read-secret');
    const api = as('api-secret');
    const admin = as('admin-secret');
    try {
      expect(await codeOf(none.list())).toBe('UNAUTHENTICATED');
      expect(await codeOf(wrong.list())).toBe('UNAUTHENTICATED');
      expect(await codeOf(read.list())).toBe('OK');
      expect(await codeOf(read.listNodes())).toBe('PERMISSION_DENIED');
      expect(await codeOf(read.submit({ inputUri: '/nope.mp4' }))).toBe('PERMISSION_DENIED');
      expect(await codeOf(api.listNodes())).toBe('PERMISSION_DENIED');
      expect(await codeOf(api.submit({ inputUri: join(t.inputDir, 'missing.mp4') }))).toBe('INPUT_NOT_FOUND');
      expect(await codeOf(admin.listNodes())).toBe('OK');
      expect(await codeOf(none.listNodes())).toBe('UNAUTHENTICATED');
      const watch = (async () => {
        for await (const _ of none.watch('j1')) {
          /* nothing */
        }
      })();
      expect(await codeOf(watch)).toBe('UNAUTHENTICATED');
      // The token never appears in the coordinator's log.
      const log = await readFile(join(t.dir, 'logs', 'coordinator-0.log'), 'utf8');
      expect(log).not.toContain('api-secret');
      expect(log).not.toContain('admin-secret');
    } finally {
      for (const c of [none, wrong, read, api, admin]) c.close();
    }
  });
});
