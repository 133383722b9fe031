import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { checkArchive, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { videoPts } from './media-helpers.js';

const LADDER = [{ name: '', height: 240, videoBitrateKbps: 500, codec: 'h264', preset: 'ultrafast' }];

// A source whose keyframes are sparse and irregular (a camera's, an editor's): cuts at keyframes
// could only split it 93/48/198/198/63 frames; cuts at exact frames give every node its share.
describe('cuts at any frame', () => {
  let t: TestCluster;
  let work: string;
  let source: string;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 3, slots: 2 });
    work = await mkdtemp(join(tmpdir(), 'tessera-fcuts-'));
    source = join(t.inputDir, 'sparse-keys.mp4');
    await runFfmpeg(
      [
        '-hide_banner',
        '-nostdin',
        '-y',
        '-loglevel',
        'error',
        '-f',
        'lavfi',
        '-i',
        'testsrc2=size=320x240:rate=30:duration=20',
        '-f',
        'lavfi',
        '-i',
        'sine=frequency=440:sample_rate=48000:duration=20',
        '-c:v',
        'libx264',
        '-preset',
        'ultrafast',
        '-bf',
        '2',
        '-g',
        '300',
        '-x264-params',
        'scenecut=0',
        '-force_key_frames',
        '0,3.1,4.7,11.3,17.9',
        '-c:a',
        'aac',
        '-shortest',
        source,
      ],
      { noProgressMs: 120_000 },
    );
  });
  afterAll(async () => {
    await t?.close();
    if (work && !process.env.KEEP_TEST_DIRS) await rm(work, { recursive: true, force: true });
  });

  for (const nodes of [3, 5]) {
    it(`on ${nodes} nodes: every segment within one frame of its share, output frame-exact on the source timestamps`, async () => {
      while (t.cluster.nodeIds().length < nodes) await t.cluster.addNode({});
      await expect.poll(async () => (await t.client.listNodes()).filter((n) => n.state === 'ready').length, { timeout: 15_000 }).toBe(nodes);
      // Each node's share follows its capacity (slots x the encode speed it measured on earlier
      // jobs; nodes without history count at the median), as ListNodes reports it.
      const caps = new Map((await t.client.listNodes()).map((n) => [n.id, n.capacity]));
      const sum = [...caps.values()].reduce((a, b) => a + b, 0);
      const share = (id: string): number => (600 * caps.get(id)!) / sum;
      const { plan } = await t.client.submit({ inputUri: source, ladder: LADDER, dryRun: true });
      expect(plan!.segments).toHaveLength(nodes);
      for (const s of plan!.segments) expect(Math.abs(s.frames - share(s.nodeId)), s.nodeId).toBeLessThanOrEqual(1);
      expect(plan!.segments.reduce((a, s) => a + s.frames, 0)).toBe(600);

      const { jobId } = await t.client.submit({ inputUri: source, ladder: LADDER });
      const job = await t.client.wait(jobId);
      expect(job.errorMessage).toBe('');
      expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
      expect(new Set(job.segments.map((s) => s.nodeId)).size).toBe(nodes);
      for (const s of job.segments) expect(Math.abs(s.frames - share(s.nodeId)), s.nodeId).toBeLessThanOrEqual(1);
      const a = await checkArchive(t.s3, job, work);
      expect(a.renditions[0]!.frames).toBe(600);
      const [src, out] = await Promise.all([videoPts(source), videoPts(join(work, `${job.id}-${a.manifest.renditions[0]!.file}`))]);
      expect(out.length).toBe(600);
      let worst = 0;
      for (let i = 0; i < 600; i++) worst = Math.max(worst, Math.abs(out[i]! - src[i]!));
      expect(worst).toBeLessThanOrEqual(0.001);
      console.log(
        `MEASURE frame cuts on ${nodes} nodes: segments ${job.segments.map((s) => `${s.frames} (share ${share(s.nodeId).toFixed(1)})`).join('/')} frames · worst pts error ${(worst * 1000).toFixed(3)} ms`,
      );
    });
  }
});
