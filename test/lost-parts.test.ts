import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, filesUnder, fixture, startTestCluster, type TestCluster } from './helpers.js';
import { checkpoints, logLines, subSegmentsRedone } from './faults-helpers.js';

// Slow enough encodes that the uploader is lost mid-job; small enough for a 2-core CI machine.
const LADDER = [
  { name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' },
  { name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'veryfast' },
];

describe('the uploader loses its disk mid-job', () => {
  let t: TestCluster;
  let work: string;

  beforeAll(async () => {
    t = await startTestCluster({ nodes: 3, slots: 2, env: { SEGMENT_NO_PROGRESS_MS: '8000' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-lost-parts-'));
  });

  afterAll(async () => {
    await t?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('killed, staging wiped, a new uploader under a new id: lost parts are transcoded again and the job is frame-exact', async () => {
    const clip = await fixture(t.inputDir, 'clip-12s-360p.mp4', { seconds: 12, width: 640, height: 360, fps: 30 });
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const staging = join(t.dir, 'staging', 'uploader', 'uploader-0');
    const parts = (): string[] => filesUnder(join(staging, jobId, 'parts')).filter((f) => f.endsWith('.mp4'));
    // Some sub-segments are done (parts durable on the uploader, checkpoint written) and the job
    // is still transcoding: those are the parts finalize will find missing.
    const doneSubs = async (): Promise<number> => [...(await checkpoints(t.cluster.client(), jobId)).values()].reduce((n, cp) => n + cp.done.length, 0);
    await vi.waitFor(
      async () => {
        expect(await doneSubs()).toBeGreaterThanOrEqual(1);
      },
      { timeout: 180_000, interval: 50 },
    );
    const doneBefore = await doneSubs();
    const lostParts = parts().length;
    const before = await t.client.get(jobId);
    t.cluster.signal('uploader-0', 'SIGKILL');
    await t.cluster.stopProcess('uploader-0', 'SIGKILL', 1);
    await rm(staging, { recursive: true, force: true }); // the disk is gone with the pod
    const lostAt = Date.now();
    await t.cluster.startUploader('uploader-1');

    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    // What a user checks: every rendition has the source's 360 frames, checksums match, A/V in sync.
    const a = await checkArchive(t.s3, job, work);
    expect(a.renditions).toHaveLength(2);
    for (const r of a.renditions) {
      expect(r.frames).toBe(360);
      expect(r.sha256).toBe(r.manifestSha256);
      expect(Math.abs((r.audioSec ?? 0) - r.videoSec)).toBeLessThanOrEqual(0.05);
    }
    expect(a.zipSha256).toBe(job.result!.sha256);
    // Exactly one canonical part per sub-segment.
    for (const cp of (await checkpoints(t.cluster.client(), jobId)).values()) {
      expect(cp.done.map((d) => d.sub)).toEqual([...Array(cp.boundaries.length - 1).keys()]);
    }
    // The new uploader made the archive; the coordinator reopened what the old one had lost.
    expect(logLines(t.dir, 'uploader-1').filter((l) => l.msg === 'archive uploaded' && l.jobId === jobId)).toHaveLength(1);
    const reopened = logLines(t.dir, 'coordinator-0').filter((l) => l.msg === 'parts lost on the uploader: transcoding them again' && l.jobId === jobId);
    expect(reopened.length).toBeGreaterThanOrEqual(1);
    const invalidated = reopened.reduce((n, l) => n + Number(l.subSegments), 0);
    expect(invalidated).toBeGreaterThanOrEqual(1);
    const subs = [...(await checkpoints(t.cluster.client(), jobId)).values()].reduce((n, cp) => n + cp.boundaries.length - 1, 0);
    const redone = subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId);
    process.stdout.write(
      `MEASURE lost uploader disk: ${lostParts} part file(s) wiped at ${before.progress.toFixed(0)} % (${doneBefore} sub-segment(s) checkpointed), ${invalidated} of ${subs} sub-segments invalidated at finalize in ${reopened.length} round(s), ` +
        `${redone} sub-segments transcoded more than once in all, SUCCEEDED ${((Date.now() - lostAt) / 1000).toFixed(1)} s after the loss\n`,
    );
  });

  it('a part replaced after its checkpoint (a stray PutPart, a bad disk) fails its hash at finalize and is made again', async () => {
    const clip = await fixture(t.inputDir, 'clip-12s-360p.mp4', { seconds: 12, width: 640, height: 360, fps: 30 });
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const staging = join(t.dir, 'staging', 'uploader', 'uploader-1');
    const doneSubs = async (): Promise<number> => [...(await checkpoints(t.cluster.client(), jobId)).values()].reduce((n, cp) => n + cp.done.length, 0);
    await vi.waitFor(
      async () => {
        expect(await doneSubs()).toBeGreaterThanOrEqual(1);
      },
      { timeout: 180_000, interval: 50 },
    );
    // Every acknowledged part so far is overwritten in place with other bytes.
    const replaced = filesUnder(join(staging, jobId, 'parts')).filter((f) => f.endsWith('.mp4'));
    expect(replaced.length).toBeGreaterThanOrEqual(1);
    for (const f of replaced) await writeFile(f, Buffer.alloc(4096, 7));
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const a = await checkArchive(t.s3, job, work);
    for (const r of a.renditions) expect(r.frames).toBe(360);
    // The checkpoint names each part's hash, and the uploader refused the replaced ones.
    for (const cp of (await checkpoints(t.cluster.client(), jobId)).values()) for (const d of cp.done) expect(Object.keys(d.sha256 ?? {}).sort()).toEqual(['240p', '360p']);
    const refused = logLines(t.dir, 'uploader-1').filter((l) => l.msg === 'parts differ from their checkpoint hash; they will be made again' && l.jobId === jobId);
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(refused.reduce((n, l) => n + (l.parts as string[]).length, 0)).toBeGreaterThanOrEqual(replaced.length);
  });
});
