import { mkdtemp } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { isAppError } from '../common/errors.js';
import type { NodeRecord } from '../common/records.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, ffmpegChildren, filesUnder, fixture, incompleteUploads, nodeRunningFfmpeg, startTestCluster, type TestCluster } from './helpers.js';
import { checkpoints, logLines, scrapeCounter, subSegmentsRedone } from './faults-helpers.js';

// Slow enough encodes that a fault lands mid-transcode; small enough for a 2-core CI machine.
const LADDER = [
  { name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' },
  { name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'veryfast' },
];

async function expectCorrect(t: TestCluster, job: Job, work: string, frames: number): Promise<void> {
  expect(job.errorMessage).toBe('');
  expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
  const a = await checkArchive(t.s3, job, work);
  for (const r of a.renditions) {
    expect(r.frames).toBe(frames);
    expect(r.sha256).toBe(r.manifestSha256);
    expect(Math.abs((r.audioSec ?? 0) - r.videoSec)).toBeLessThanOrEqual(0.05);
  }
  expect(a.zipSha256).toBe(job.result!.sha256);
  // No duplicate canonical parts: exactly one done entry per sub-segment.
  const cps = await checkpoints(t.cluster.client(), job.id);
  for (const cp of cps.values()) {
    expect(cp.done.map((d) => d.sub)).toEqual([...Array(cp.boundaries.length - 1).keys()]);
  }
}

async function untilProgress(t: TestCluster, jobId: string, pct: number): Promise<Job> {
  for await (const j of t.client.watch(jobId)) {
    if (j.progress >= pct && j.segments.some((s) => s.framesDone > 0)) return j;
    if (j.state !== JobState.JOB_STATE_QUEUED && j.state !== JobState.JOB_STATE_PREPARING && j.state !== JobState.JOB_STATE_RUNNING) return j;
  }
  throw new Error('watch ended');
}

describe('fault injection: nothing accepted is lost', () => {
  let t: TestCluster;
  let clip: string;
  /** Twice as long: a kill at 65 % must still find ffmpeg running though progress reaches us late. */
  let longClip: string;
  let work: string;
  const accepted: string[] = [];
  /** Processes killed for good: their own staging folders are cleaned when they next start. */
  const killed: string[] = [];

  beforeAll(async () => {
    t = await startTestCluster({
      nodes: 3,
      slots: 2,
      coordinators: 2,
      // Small multipart parts and no single PutObject: an uploader killed mid-upload must resume one.
      env: { S3_PART_SIZE_BYTES: String(5 * 1024 * 1024), S3_SINGLE_PUT_MAX_BYTES: '0', SEGMENT_NO_PROGRESS_MS: '8000' },
    });
    work = await mkdtemp(join(tmpdir(), 'tessera-faults-'));
    clip = await fixture(t.inputDir, 'clip-12s-360p.mp4', { seconds: 12, width: 640, height: 360, fps: 30 });
    longClip = await fixture(t.inputDir, 'clip-24s-360p.mp4', { seconds: 24, width: 640, height: 360, fps: 30 });
  });

  afterEach(async () => {
    // Keep three healthy nodes for the next scenario.
    const ids = (await t.client.listNodes()).map((n) => n.id);
    for (let i = ids.length; i < 3; i++) await t.cluster.addNode();
  });

  afterAll(async () => {
    // Every acknowledged job is terminal; no multipart upload is left behind.
    for (const id of accepted) {
      const j = await t.client.get(id);
      expect([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]).toContain(j.state);
    }
    expect(await incompleteUploads(t.s3, t.cluster.bucket)).toBe(0);
    // A runner cleans its staging right after recording the final state: wait for it.
    // (vi.waitFor: expect.poll is only allowed inside a test.)
    await vi.waitFor(() => expect(filesUnder(join(t.dir, 'staging')).filter((f) => !killed.some((k) => f.includes(`/${k}/`)))).toEqual([]), { timeout: 15_000, interval: 200 });
    await t?.close();
  });

  const submit = async (inputUri = clip): Promise<string> => {
    const { jobId } = await t.client.submit({ inputUri, ladder: LADDER });
    accepted.push(jobId);
    return jobId;
  };

  for (const seed of [1, 2, 3]) {
    it(`kill -9 of a node agent mid-job (seed ${seed}) loses nothing and redoes at most its slots`, async () => {
      const jobId = await submit(longClip);
      const at = [25, 45, 65][seed - 1]!;
      const snap = await untilProgress(t, jobId, at);
      // Progress reaches us up to a second late, so a segment unfinished in the snapshot may be
      // done by now. Kill a node that is transcoding at this very moment (an ffmpeg child alive),
      // preferring the one with the most work left.
      const left = (s: Job['segments'][number]): number => (s.frames > 0 ? s.framesDone / s.frames : 0);
      const preferred = snap.segments
        .filter((s) => s.state !== 'SEGMENT_STATE_DONE' && s.nodeId)
        .sort((a, b) => left(a) - left(b))
        .map((s) => s.nodeId);
      const busy = await nodeRunningFfmpeg(t.cluster, [...new Set([...preferred, ...t.cluster.nodeIds()])], 30_000);
      const killedAt = Date.now();
      t.cluster.signal(busy, 'SIGKILL');
      const job = await t.client.wait(jobId);
      await expectCorrect(t, job, work, 720);
      const moved = job.history.filter((h) => h.reason.startsWith('reassigned') && h.atMs >= killedAt);
      expect(moved.length).toBeGreaterThanOrEqual(1);
      expect(moved.every((h) => h.nodeId !== busy)).toBe(true);
      const redone = subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId);
      expect(redone).toBeLessThanOrEqual(2);
      process.stdout.write(
        `MEASURE kill seed ${seed}: killed at ${at}% · reassigned after ${moved[0]!.atMs - killedAt} ms · sub-segments redone ${redone} · job ${job.finishedAtMs - job.createdAtMs} ms\n`,
      );
      await t.cluster.stopProcess(busy, 'SIGKILL', 1);
      killed.push(busy);
    });
  }

  it('kill -9 of only an ffmpeg child: the agent retries it and leaves no zombie', async () => {
    const jobId = await submit();
    await untilProgress(t, jobId, 10);
    let victim: number | undefined;
    let agent = -1;
    for (const id of t.cluster.nodeIds()) {
      const pid = t.cluster.pid(id)!;
      victim = ffmpegChildren(pid)[0];
      if (victim) {
        agent = pid;
        break;
      }
    }
    expect(victim).toBeDefined();
    process.kill(victim!, 'SIGKILL');
    const job = await t.client.wait(jobId);
    await expectCorrect(t, job, work, 360);
    const zombies = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          const st = readFileSync(`/proc/${d}/stat`, 'utf8');
          const m = /^\d+ \((.*)\) (\S) (\d+)/.exec(st);
          return m?.[2] === 'Z' && Number(m[3]) === agent;
        } catch {
          return false;
        }
      });
    expect(zombies).toEqual([]);
    const retried = t.cluster
      .nodeIds()
      .flatMap((n) => logLines(t.dir, n))
      .filter((l) => l.msg === 'sub-segment failed; retrying' && l.jobId === jobId);
    expect(retried.length).toBeGreaterThanOrEqual(1);
  });

  it('SIGSTOP past the lease, then SIGCONT: the paused node is fenced out', async () => {
    const jobId = await submit();
    const snap = await untilProgress(t, jobId, 20);
    const victim = snap.segments.find((s) => s.state !== 'SEGMENT_STATE_DONE' && s.nodeId)?.nodeId ?? snap.segments[0]!.nodeId;
    const record = JSON.parse((await t.cluster.client().get(`/tessera/nodes/${victim}`).string())!) as NodeRecord;
    const before = await checkpoints(t.cluster.client(), jobId);
    const doneBefore = new Set([...before].flatMap(([seg, cp]) => cp.done.filter((d) => d.nodeId === victim).map((d) => `${seg}/${d.sub}/${d.attempt}`)));
    t.cluster.signal(victim, 'SIGSTOP');
    // Paused past its lease (TTL 2 s): its node key expires, and the coordinator moves every
    // unfinished segment of it to another node (a new owner revision), so what it does next is fenced.
    await vi.waitFor(
      async () => {
        expect(await t.cluster.client().get(`/tessera/nodes/${victim}`).string(), `${victim}'s lease has expired`).toBeNull();
        const j = await t.client.get(jobId);
        expect(
          j.segments.filter((s) => s.nodeId === victim && s.state !== 'SEGMENT_STATE_DONE').map((s) => s.index),
          `segments still on ${victim}`,
        ).toEqual([]);
      },
      { timeout: 30_000, interval: 100 },
    );
    t.cluster.signal(victim, 'SIGCONT');
    const job = await t.client.wait(jobId);
    await expectCorrect(t, job, work, 360);
    // Nothing the paused node finished after it was fenced out reached the merge.
    const after = await checkpoints(t.cluster.client(), jobId);
    const doneAfter = [...after].flatMap(([seg, cp]) => cp.done.filter((d) => d.nodeId === victim).map((d) => `${seg}/${d.sub}/${d.attempt}`));
    for (const d of doneAfter) expect(doneBefore.has(d)).toBe(true);
    // Once resumed, the node finds its lease lost...
    await expect.poll(() => logLines(t.dir, victim).some((l) => l.msg === 'lease lost: re-joining (work in flight continues, fenced)'), { timeout: 15_000, interval: 100 }).toBe(true);
    // ...and either tried a checkpoint write and was refused (counted by the node itself), or
    // dropped its work when the coordinator cancelled the moved segment before it got that far.
    // A counter that cannot be read fails the test (scrapeCounter throws; it must not pass as 0).
    const dropped = (): number => logLines(t.dir, victim).filter((l) => l.msg === 'segment ended without finishing' && l.jobId === jobId).length;
    const rejections = (): Promise<number> => scrapeCounter(record.metricsAddress, 'tessera_fencing_rejections_total');
    await expect.poll(async () => (await rejections()) + dropped(), { timeout: 15_000, interval: 100 }).toBeGreaterThanOrEqual(1);
    const rejected = await rejections();
    process.stdout.write(`SIGSTOP scenario: fencing rejections ${rejected}, segments dropped ${dropped()}\n`);
  });

  it('kill -9 of the uploader mid-upload: the upload resumes with only the missing parts', async () => {
    const bigLadder = [
      { name: '', height: 360, videoBitrateKbps: 6000, codec: 'h264', preset: 'ultrafast' },
      { name: '', height: 240, videoBitrateKbps: 4000, codec: 'h264', preset: 'ultrafast' },
    ];
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: bigLadder });
    accepted.push(jobId);
    const etcd = t.cluster.client();
    const partsUploaded = async (): Promise<number> => {
      const raw = await etcd.get(`/tessera/uploads/${jobId}`).string();
      return raw ? ((JSON.parse(raw) as { multipart?: { parts: unknown[] } }).multipart?.parts.length ?? 0) : 0;
    };
    await expect.poll(partsUploaded, { timeout: 120_000, interval: 20, message: 'an S3 part was uploaded' }).toBeGreaterThanOrEqual(1);
    t.cluster.signal('uploader-0', 'SIGKILL');
    await t.cluster.stopProcess('uploader-0', 'SIGKILL', 1);
    await t.cluster.startUploader('uploader-0');
    const job = await t.client.wait(jobId);
    await expectCorrect(t, job, work, 360);
    const uploaded = logLines(t.dir, 'uploader-0').filter((l) => l.msg === 'archive uploaded' && l.jobId === jobId);
    expect(uploaded).toHaveLength(1);
    expect(uploaded[0]!.resumed).toBe(true);
    const total = Math.ceil(job.result!.bytes / (5 * 1024 * 1024));
    expect(Number(uploaded[0]!.partsSent)).toBeLessThan(total);
    process.stdout.write(`MEASURE uploader kill: ${total} S3 parts in all, ${String(uploaded[0]!.partsSent)} sent after the restart\n`);
  });

  it('kill -9 of the leading coordinator mid-job: the standby takes over and the watcher sees SUCCEEDED', async () => {
    const jobId = await submit();
    const seen: Job[] = [];
    const watching = t.client.wait(jobId, (j) => seen.push(j));
    await untilProgress(t, jobId, 20);
    const leader = (await t.client.clusterStatus()).leaderId;
    expect(leader).toMatch(/^coordinator-\d$/);
    const killedAt = Date.now();
    t.cluster.signal(leader, 'SIGKILL');
    const job = await watching;
    await expectCorrect(t, job, work, 360);
    const newLeader = (await t.client.clusterStatus()).leaderId;
    // The new leader re-attaches to the running segments (a reassignment only for one whose node went away).
    const resumed = job.history.find((h) => (h.reason.startsWith('re-attached') || h.reason.startsWith('reassigned')) && h.atMs >= killedAt);
    process.stdout.write(
      `MEASURE coordinator kill: first re-attach or reassignment by the new leader ${resumed ? `${resumed.atMs - killedAt} ms after the kill (${resumed.reason})` : 'none (every segment finished during the takeover)'}\n`,
    );
    expect(newLeader).not.toBe(leader);
    expect(seen.at(-1)!.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const states = job.history.filter((h) => h.scope === 'job').map((h) => h.state);
    expect(states.at(-1)).toBe('SUCCEEDED');
    await t.cluster.stopProcess(leader, 'SIGKILL', 1);
    killed.push(leader);
    await t.cluster.startCoordinator();
  });

  it('idempotent submission: twice, 100 concurrently, and a conflicting spec', async () => {
    const spec = { inputUri: clip, ladder: [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast' }], idempotencyKey: `idem-${Date.now()}` };
    const a = await t.client.submit(spec);
    const b = await t.client.submit(spec);
    expect(b.jobId).toBe(a.jobId);
    accepted.push(a.jobId);
    const key2 = `idem-many-${Date.now()}`;
    const many = await Promise.all(Array.from({ length: 100 }, () => t.client.submit({ ...spec, idempotencyKey: key2 })));
    expect(new Set(many.map((r) => r.jobId)).size).toBe(1);
    accepted.push(many[0]!.jobId);
    let code = '';
    try {
      await t.client.submit({ ...spec, container: 'mkv' });
    } catch (err) {
      code = isAppError(err) ? err.code : String(err);
    }
    expect(code).toBe('IDEMPOTENCY_CONFLICT');
    for (const id of [a.jobId, many[0]!.jobId]) expect((await t.client.wait(id)).state).toBe(JobState.JOB_STATE_SUCCEEDED);
  });
});
