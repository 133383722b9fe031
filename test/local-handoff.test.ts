import { mkdir, mkdtemp, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { fileChunks } from '../common/chunks.js';
import { LocalHandoff, linkLocal, localIdentity } from '../common/local-handoff.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, fixture, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { logLines, scrapeCounter } from './faults-helpers.js';

const LADDER = [
  { name: '', height: 240, videoBitrateKbps: 600, codec: 'h264', preset: 'ultrafast' },
  { name: '', height: 180, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast' },
];

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    return isAppError(err, 'FAILED_PRECONDITION') ? err.message : `unexpected: ${String(err)}`;
  }
}

describe('local handoff: what a receiver reads from disk', () => {
  let root: string;
  let outside: string;
  beforeAll(async () => {
    const base = await mkdtemp(join(tmpdir(), 'tessera-handoff-'));
    root = join(base, 'staging');
    outside = join(base, 'elsewhere');
    await mkdir(join(root, 'node', 'n0'), { recursive: true });
    await mkdir(outside, { recursive: true });
  });

  it("reads only the sender's very file, under its own staging directory", async () => {
    const file = join(root, 'node', 'n0', 'part.mp4');
    await writeFile(file, Buffer.alloc(3 * 1024 * 1024 + 5, 7));
    const sender = new LocalHandoff(root);
    const receiver = new LocalHandoff(root);
    const offer = await sender.offer('uploader-0', file);
    const size = 3 * 1024 * 1024 + 5;
    expect(offer).toEqual({ localPath: file, localIdentity: await localIdentity(file), size });
    expect(await receiver.accept(offer!)).toEqual({ path: file, size });
    // What it reads is the file, from the offset asked, in order.
    let next = 1024;
    let bytes = 0;
    for await (const c of fileChunks(file, 1024)) {
      expect(c.offset).toBe(next);
      next += c.data.length;
      bytes += c.data.length;
    }
    expect(bytes).toBe(3 * 1024 * 1024 + 5 - 1024);

    // Handoff off here, a file changed since the offer, a path outside the staging directory
    // (also through a link), a directory: refused, and the sender streams instead.
    expect(await refusal(new LocalHandoff(undefined).accept(offer!))).toMatch(/LOCAL_HANDOFF is off/);
    await utimes(file, new Date(), new Date(Date.now() + 5_000));
    expect(await refusal(receiver.accept(offer!))).toMatch(/is not the sender's file/);
    const secret = join(outside, 'secret');
    await writeFile(secret, 'not a part');
    expect(await refusal(receiver.accept({ localPath: secret, localIdentity: await localIdentity(secret) }))).toMatch(/not under this process's staging directory/);
    const link = join(root, 'node', 'n0', 'link');
    await symlink(secret, link);
    expect(await refusal(receiver.accept({ localPath: link, localIdentity: await localIdentity(secret) }))).toMatch(/not under this process's staging directory/);
    const dir = join(root, 'node', 'n0');
    expect(await refusal(receiver.accept({ localPath: dir, localIdentity: await localIdentity(dir) }))).toMatch(/not a regular file/);
    expect(await refusal(receiver.accept({ localPath: join(root, 'gone.mp4'), localIdentity: '1:2:3:4' }))).toMatch(/no file/);

    // The sender offers nothing outside its staging directory, nothing with handoff off, and
    // nothing for a while to a receiver that refused.
    expect(await sender.offer('uploader-0', secret)).toBeUndefined();
    expect(await new LocalHandoff(undefined).offer('uploader-0', file)).toBeUndefined();
    sender.refusedBy('uploader-0');
    expect(await sender.offer('uploader-0', file)).toBeUndefined();
    expect(await sender.offer('node-1', file)).toBeDefined();
  });

  it('links a segment where it can (the same inode, nothing copied), and says so where it cannot', async () => {
    const src = join(root, 'node', 'n0', 'segment-src.mkv');
    await writeFile(src, Buffer.alloc(4096, 1));
    const dest = join(root, 'node', 'n1', 'job', 'segment.mkv');
    expect(await linkLocal(src, dest)).toBe(true);
    expect((await stat(dest)).ino).toBe((await stat(src)).ino);
    // Another file system (tmpfs): no link; the receiver copies instead.
    if (existsSync('/dev/shm')) {
      const other = await mkdtemp('/dev/shm/tessera-handoff-');
      expect(await linkLocal(src, join(other, 'segment.mkv'))).toBe(false);
      await rm(other, { recursive: true, force: true });
    }
  });

  afterAll(async () => {
    await rm(join(root, '..'), { recursive: true, force: true });
  });
});

describe('local handoff in a cluster on one machine (tessera up turns it on)', () => {
  let t: TestCluster;
  let clip: string;
  let work: string;
  const metricsOf = (name: string, readyMsg: string): string => {
    const ready = logLines(t.dir, name).find((l) => l.msg === readyMsg) as { metricsPort?: number } | undefined;
    if (!ready?.metricsPort) throw new Error(`no metrics port in ${name}'s log`);
    return `127.0.0.1:${ready.metricsPort}`;
  };

  beforeAll(async () => {
    // The uploader has handoff off: the agents' parts are refused there and streamed instead,
    // while the coordinator hands the segments to the agents by path.
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, slots: 1, localHandoff: true, uploaderEnv: { LOCAL_HANDOFF: 'false' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-check-'));
    clip = await fixture(t.inputDir, 'clip-8s-320.mp4', { seconds: 8, width: 320, height: 240, fps: 30 });
  });
  afterAll(async () => {
    await t?.close();
    await rm(work, { recursive: true, force: true });
  });

  it('segments cross by path, parts fall back to the stream where refused, and the output is frame-exact', async () => {
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(job.segments).toHaveLength(2);
    const a = await checkArchive(t.s3, job, work);
    expect(a.renditions).toHaveLength(2);
    for (const r of a.renditions) {
      expect(r.frames).toBe(240);
      expect(r.sha256).toBe(r.manifestSha256);
    }
    const coordinator = metricsOf('coordinator-0', 'coordinator ready');
    // Every segment was handed over, and not one byte of them streamed.
    expect(await scrapeCounter(coordinator, 'tessera_local_handoffs_total')).toBe(2);
    expect(await scrapeCounter(coordinator, 'tessera_segment_bytes_streamed_total')).toBe(0);
    let agentsStreamed = 0;
    let partsHanded = 0;
    for (const n of ['node-0', 'node-1']) {
      const m = metricsOf(n, 'node agent ready');
      agentsStreamed += await scrapeCounter(m, 'tessera_segment_bytes_streamed_total');
      partsHanded += await scrapeCounter(m, 'tessera_local_handoffs_total');
    }
    expect(agentsStreamed).toBe(0);
    // The uploader refused every part by path: each was streamed to it instead (the renditions
    // above are whole and frame-exact).
    expect(partsHanded).toBe(0);
  });

  it('with handoff on at the uploader too, parts cross by path', async () => {
    await t.cluster.stopProcess('uploader-0');
    t.cluster.o.uploaderEnv = {};
    await t.cluster.startUploader('uploader-0');
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const a = await checkArchive(t.s3, job, work);
    expect(a.renditions).toHaveLength(2);
    for (const r of a.renditions) expect(r.frames).toBe(240);
    let partsHanded = 0;
    for (const n of ['node-0', 'node-1']) partsHanded += await scrapeCounter(metricsOf(n, 'node agent ready'), 'tessera_local_handoffs_total');
    // Both renditions of every chunk.
    const chunks = job.segments.reduce((n, s) => n + s.subSegments, 0);
    expect(chunks).toBeGreaterThanOrEqual(2);
    expect(partsHanded).toBe(2 * chunks);
  });
});
