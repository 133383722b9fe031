import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { checkpoints, subSegmentsRedone } from './faults-helpers.js';
import { checkArchive, nodeRunningFfmpeg, startTestCluster, type TestCluster } from './helpers.js';
import { inspect, videoPts } from './media-helpers.js';

// A long source cut into more than 100 bounded chunks (MAX_CHUNK_SEC) joins on the source's own
// timestamps: no join adds time, so the picture stays on the audio to the end.
describe('bounded chunks join on the source timeline', () => {
  let t: TestCluster;
  let work: string;
  let source: string;
  // The kill test needs many chunks per worker, not a hundred: 40 chunks cost a third of 120.
  let shortSource: string;

  beforeAll(async () => {
    // The production watchdog (60 s, not the tests' 15 s): 120 chunks of half a second mean 120
    // cuts counted by ffprobe and 120 ffmpeg starts per job, and on a slow 2-core machine a
    // segment's first chunks can wait longer than 15 s for CPU while its cut is counted.
    t = await startTestCluster({ nodes: 2, slots: 2, env: { MAX_CHUNK_SEC: '0.5', MIN_SUB_SEGMENT_SEC: '0.2', SEGMENT_NO_PROGRESS_MS: '60000' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-joins-'));
    source = join(t.inputDir, 'ntsc-60s.mp4');
    shortSource = join(t.inputDir, 'ntsc-20s.mp4');
    // 29.97 fps (the rate whose frame times no millisecond clock holds), a keyframe every 15 frames.
    const make = (file: string, seconds: number, size = '160x120'): Promise<unknown> =>
      runFfmpeg(
        [
          '-hide_banner',
          '-nostdin',
          '-y',
          '-loglevel',
          'error',
          '-f',
          'lavfi',
          '-i',
          `testsrc2=size=${size}:rate=30000/1001:duration=${seconds}`,
          '-f',
          'lavfi',
          '-i',
          `sine=frequency=440:sample_rate=48000:duration=${seconds}`,
          '-c:v',
          'libx264',
          '-preset',
          'ultrafast',
          '-g',
          '15',
          '-keyint_min',
          '15',
          '-sc_threshold',
          '0',
          '-c:a',
          'aac',
          '-shortest',
          file,
        ],
        { noProgressMs: 120_000 },
      );
    // The kill test's source is 320x240: its chunks take long enough that the last tenth of the job
    // is still running when the test, polling the checkpoints, sees 90 % done.
    await Promise.all([make(source, 60), make(shortSource, 20, '320x240')]);
  });
  afterAll(async () => {
    await t?.close();
    if (work && !process.env.KEEP_TEST_DIRS) await rm(work, { recursive: true, force: true });
  });

  it('merges ≥ 100 chunks with every frame on the source timestamp (≤ 1 ms) and no A/V drift', async () => {
    const { jobId } = await t.client.submit({ inputUri: source, ladder: [{ name: '', height: 120, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast' }] });
    const events: (Job & { seenAtMs: number })[] = [];
    const job = await t.client.wait(jobId, (j) => events.push({ ...j, seenAtMs: Date.now() }));
    const endMs = Date.now();
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const chunks = job.segments.reduce((a, s) => a + s.subSegments, 0);
    expect(chunks).toBeGreaterThanOrEqual(100);

    const a = await checkArchive(t.s3, job, work);
    const file = join(work, `${job.id}-${a.manifest.renditions[0]!.file}`);
    const [src, out] = await Promise.all([videoPts(source), videoPts(file)]);
    expect(out.length).toBe(src.length);
    let worst = 0;
    for (let i = 0; i < src.length; i++) worst = Math.max(worst, Math.abs(out[i]! - src[i]!));
    expect(worst).toBeLessThanOrEqual(0.001);
    // A/V drift: where the last picture sits against the audio's start, compared with the source
    // (the audio is one continuous track, so only joins could move the picture against it; the
    // audio's own end moves with AAC frame rounding and says nothing about sync).
    const [s, o] = await Promise.all([inspect(source), inspect(file)]);
    const drift = o.video.startSec + out.at(-1)! - o.audio[0]!.startSec - (s.video.startSec + src.at(-1)! - s.audio[0]!.startSec);
    expect(Math.abs(drift)).toBeLessThanOrEqual(0.001);

    // The watch stream carries an ETA (p50 ≤ p90) while the job runs, and it comes down.
    const etas = events.filter((e) => e.state === JobState.JOB_STATE_RUNNING && e.etaP50Sec > 0);
    expect(etas.length).toBeGreaterThanOrEqual(3);
    for (const e of etas) expect(e.etaP90Sec).toBeGreaterThanOrEqual(e.etaP50Sec);
    expect(etas.at(-1)!.etaP50Sec).toBeLessThan(etas[0]!.etaP50Sec);
    expect(job.etaP50Sec).toBe(0);
    // How far off the median estimate was at a quarter, half and three quarters of the bar.
    const errAt = (pct: number): string => {
      const e = etas.find((x) => x.progress >= pct) ?? etas.at(-1)!;
      const actual = (endMs - e.seenAtMs) / 1000;
      return `${pct}%: ETA ${e.etaP50Sec.toFixed(1)} s (p90 ${e.etaP90Sec.toFixed(1)}) vs ${actual.toFixed(1)} s actual`;
    };
    console.log(`MEASURE eta: ${[25, 50, 75].map(errAt).join(' · ')}`);
    console.log(`MEASURE joins: ${chunks} chunks · worst frame pts error ${(worst * 1000).toFixed(3)} ms · A/V end drift ${(drift * 1000).toFixed(3)} ms`);
  });

  it('kill -9 of an agent at 90 %: at most one chunk per worker is redone, the job succeeds frame-exact', async () => {
    const { jobId } = await t.client.submit({ inputUri: shortSource, ladder: [{ name: '', height: 120, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast' }] });
    // 90 % of the chunks recorded done, read from the checkpoints in etcd as they are written (the
    // watch stream's progress comes up to a second late: on a loaded machine, after the end).
    const etcd = t.cluster.client();
    for (;;) {
      const cps = [...(await checkpoints(etcd, jobId)).values()];
      const total = cps.reduce((a, c) => a + Math.max(0, c.boundaries.length - 1), 0);
      if (cps.length === 2 && total > 0 && cps.reduce((a, c) => a + c.done.length, 0) >= 0.9 * total) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const busy = await nodeRunningFfmpeg(t.cluster, t.cluster.nodeIds(), 30_000);
    t.cluster.signal(busy, 'SIGKILL');
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(job.result!.renditions[0]!.frames).toBe((await videoPts(shortSource)).length);
    // Counted from the agents' logs: chunks started under more than one attempt.
    const redone = subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId);
    expect(redone).toBeLessThanOrEqual(2);
    console.log(`MEASURE kill at 90 % with bounded chunks: ${job.segments.reduce((a, x) => a + x.subSegments, 0)} chunks, ${redone} redone (2 workers per node)`);
  });
});
