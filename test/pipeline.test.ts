import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { countFrames } from '../transcoder/probe.js';
import { checkArchive, ffmpegChildren, filesUnder, fixture, incompleteUploads, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';

// The reference job: 20 s of 1280x720 at 30 fps with a 440 Hz tone.
const LADDER = [
  { name: '', height: 720, videoBitrateKbps: 2800, codec: 'h264', preset: 'ultrafast' },
  { name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'ultrafast' },
];

describe('the whole pipeline on real parts', () => {
  let t: TestCluster;
  let clip: string;
  let work: string;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 3, slots: 2 });
    work = await mkdtemp(join(tmpdir(), 'tessera-check-'));
    clip = await fixture(t.inputDir, 'clip-20s-720p.mp4', { seconds: 20, width: 1280, height: 720, fps: 30 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('splits by node count over 3 nodes, merges frame-exactly, zips, and pushes to S3', async () => {
    const source = await countFrames(clip);
    expect(source.frames).toBe(600);
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const events: Job[] = [];
    const job = await t.client.wait(jobId, (j) => events.push(j));
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);

    // Segments really were spread over all 3 registered nodes, each with 2 sub-segments.
    expect(job.segments).toHaveLength(3);
    expect(new Set(job.segments.map((s) => s.nodeId))).toEqual(new Set(['node-0', 'node-1', 'node-2']));
    for (const s of job.segments) expect(s.subSegments).toBe(2);
    expect(job.segments.reduce((a, s) => a + s.frames, 0)).toBe(600);

    // Progress arrives in order and ends at 100 %.
    const progress = events.map((e) => e.progress);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!).toBeGreaterThanOrEqual(progress[i - 1]!);
    expect(progress.at(-1)).toBe(100);
    expect(events.length).toBeGreaterThan(2);

    // The archive, as a user would check it.
    const a = await checkArchive(t.s3, job, work);
    expect(a.entries).toEqual(['360p.mp4', '720p.mp4', 'manifest.json']);
    expect(a.zipSha256).toBe(job.result!.sha256);
    for (const r of a.renditions) {
      expect(r.frames).toBe(600);
      expect(Math.abs(r.videoSec - 20)).toBeLessThanOrEqual(1 / 30 + 1e-6);
      expect(r.audioSec).toBeDefined();
      expect(Math.abs(r.audioSec! - r.videoSec)).toBeLessThanOrEqual(0.05);
      expect(r.sha256).toBe(r.manifestSha256);
    }
    expect(a.manifest.renditions.map((r) => `${r.width}x${r.height}`).sort()).toEqual(['1280x720', '640x360']);
    expect(await incompleteUploads(t.s3, job.result!.bucket)).toBe(0);

    // The status trail shows the job's states and every segment's assignment.
    const jobStates = job.history.filter((h) => h.scope === 'job').map((h) => h.state);
    expect(jobStates).toEqual(['QUEUED', 'PREPARING', 'RUNNING', 'FINALIZING', 'SUCCEEDED']);
    for (const s of job.segments) expect(job.history.some((h) => h.scope === `segment/${s.index}` && h.state === 'DONE' && h.nodeId === s.nodeId)).toBe(true);

    // Staging space is cleaned on every process (each cleans its own shortly after the job ends).
    await expect.poll(() => filesUnder(join(t.dir, 'staging')).filter((f) => !f.includes('/uploads/')), { timeout: 5_000, interval: 50 }).toEqual([]);
  });

  it('rejects bad input with stable codes and keeps serving', async () => {
    const codeOf = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return 'OK';
      } catch (err) {
        return isAppError(err) ? err.code : `UNEXPECTED ${String(err)}`;
      }
    };
    const empty = join(t.inputDir, 'empty.mp4');
    await writeFile(empty, '');
    const text = join(t.inputDir, 'notes.mp4');
    await writeFile(text, 'this is not a video\n'.repeat(100));

    expect(await codeOf(t.client.submit({ inputUri: join(t.inputDir, 'missing.mp4') }))).toBe('INPUT_NOT_FOUND');
    expect(await codeOf(t.client.submit({ inputUri: empty }))).toBe('INPUT_EMPTY');
    expect(await codeOf(t.client.submit({ inputUri: '/etc/passwd' }))).toBe('INPUT_OUTSIDE_ROOT');
    expect(await codeOf(t.client.submit({ inputUri: `${t.inputDir}/../../../etc/hostname` }))).toBe('INPUT_OUTSIDE_ROOT');
    expect(await codeOf(t.client.submit({ inputUri: clip, ladder: [{ name: '', height: 360, videoBitrateKbps: 0, codec: 'divx', preset: '' }] }))).toBe('UNSUPPORTED_CODEC');
    expect(await codeOf(t.client.submit({ inputUri: 'ftp://example.com/a.mp4' }))).toBe('UNSUPPORTED_URI_SCHEME');
    expect(await codeOf(t.client.submit({ inputUri: 'concat:/etc/passwd|x.mp4' }))).toBe('UNSUPPORTED_URI_SCHEME');
    expect(await codeOf(t.client.submit({ inputUri: clip, container: 'avi' }))).toBe('UNSUPPORTED_CONTAINER');
    expect(await codeOf(t.client.upload(empty))).toBe('INPUT_EMPTY');

    // A non-video file is accepted (it is a file) and fails the job with a clear, permanent error.
    const { jobId } = await t.client.submit({ inputUri: text, ladder: LADDER });
    const failed = await t.client.wait(jobId);
    expect(failed.state).toBe(JobState.JOB_STATE_FAILED);
    expect(failed.errorCode).toBe('INPUT_NOT_VIDEO');
    expect(failed.errorMessage.length).toBeGreaterThan(5);

    // ...and the cluster still serves: an upload through the SDK succeeds right after.
    const small = await fixture(t.inputDir, 'clip-4s-360p.mp4', { seconds: 4, width: 640, height: 360, fps: 30 });
    const ok = await t.client.upload(small, { ladder: [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast' }] });
    const done = await t.client.wait(ok.jobId);
    expect(done.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(done.result!.renditions[0]!.frames).toBe(120);
  });

  it('plans without transcoding on a dry run', async () => {
    const res = await t.client.submit({ inputUri: clip, dryRun: true });
    expect(res.jobId).toBe('');
    const plan = res.plan!;
    expect(plan.segments).toHaveLength(3);
    expect(plan.segments.reduce((a, s) => a + s.frames, 0)).toBe(600);
    // Default ladder, never upscaled beyond the 720p source.
    expect(plan.renditions.map((r) => r.height)).toEqual([720, 480, 360]);
    for (const r of plan.renditions) {
      expect(r.codec).toBe('h264');
      expect(r.encoder).toBe('libx264');
      expect(r.preset).not.toBe('');
      expect(r.width % 2).toBe(0);
    }
    expect(plan.ffmpegCommands.length).toBe(3);
    expect(plan.ffmpegCommands[0]).toContain('-protocol_whitelist');
    expect((await t.client.list()).some((j) => j.spec?.dryRun)).toBe(false);
  });

  it('cancels a running job and stops its ffmpeg processes', async () => {
    const long = await fixture(t.inputDir, 'clip-20s-720p-slow.mp4', { seconds: 20, width: 1280, height: 720, fps: 30 });
    const { jobId } = await t.client.submit({ inputUri: long, ladder: [{ name: '', height: 720, videoBitrateKbps: 2800, codec: 'h264', preset: 'slow' }] });
    for await (const j of t.client.watch(jobId)) {
      if (j.segments.some((s) => s.framesDone > 0)) break;
    }
    const agents = t.cluster.nodeIds().map((id) => t.cluster.pid(id)!);
    expect(agents.flatMap(ffmpegChildren).length).toBeGreaterThan(0);
    await t.client.cancel(jobId);
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_CANCELLED);
    await expect.poll(() => agents.flatMap(ffmpegChildren), { timeout: 10_000, interval: 100 }).toEqual([]);
  });

  it('follows the registered node count: 1 node, then 5 nodes', async () => {
    const small = await fixture(t.inputDir, 'clip-12s-360p.mp4', { seconds: 12, width: 640, height: 360, fps: 30 });
    const ladder = [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast' }];
    await t.cluster.stopProcess('node-1');
    await t.cluster.stopProcess('node-2');
    await waitNodes(t, 1);
    const one = await t.client.wait((await t.client.submit({ inputUri: small, ladder })).jobId);
    expect(one.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(one.segments).toHaveLength(1);
    expect(one.result!.renditions[0]!.frames).toBe(360);

    await Promise.all([1, 2, 3, 4].map(() => t.cluster.addNode({})));
    await waitNodes(t, 5);
    const five = await t.client.wait((await t.client.submit({ inputUri: small, ladder })).jobId);
    expect(five.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(five.segments).toHaveLength(5);
    expect(new Set(five.segments.map((s) => s.nodeId)).size).toBe(5);
    expect(five.result!.renditions[0]!.frames).toBe(360);
  });
});

async function waitNodes(t: TestCluster, n: number): Promise<void> {
  await expect.poll(async () => (await t.client.listNodes()).length, { timeout: 10_000, interval: 100, message: `expected ${n} registered nodes` }).toBe(n);
}
