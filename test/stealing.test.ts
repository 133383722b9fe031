import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { makeSample } from '../deploy/sample.js';
import { checkpoints, logLines, subSegmentsRedone } from './faults-helpers.js';
import { checkArchive, ffmpegChildren, startTestCluster, type TestCluster } from './helpers.js';
import { videoPts } from './media-helpers.js';

/**
 * Slows one node the way a noisy neighbour does: its ffmpeg processes get SIGSTOP for `stopMs`
 * and SIGCONT for `runMs`, over and over (a fifth of its speed left with 160/40 ms), until stopped.
 */
function dutyCycle(agentPid: number, stopMs: number, runMs: number): () => Promise<void> {
  let on = true;
  const loop = (async () => {
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    const signal = (sig: NodeJS.Signals): void => {
      for (const pid of ffmpegChildren(agentPid)) {
        try {
          process.kill(pid, sig);
        } catch {
          // exited meanwhile
        }
      }
    };
    while (on) {
      signal('SIGSTOP');
      await sleep(stopMs);
      signal('SIGCONT');
      await sleep(runMs);
    }
    signal('SIGCONT');
  })();
  return async () => {
    on = false;
    await loop;
  };
}

/** The 12 s 540p source both clusters run (a keyframe every 15 frames, AAC beside it). */
function stealSource(file: string): Promise<void> {
  return makeSample(file, { seconds: 12, width: 960, height: 540, fps: 30, gop: 15 });
}

/** The job's rendition in S3 has every source frame once, on its own timestamp (no duplicated or missing part). */
async function expectFrameExact(t: TestCluster, job: Job, work: string, source: string): Promise<void> {
  const a = await checkArchive(t.s3, job, work);
  const file = join(work, `${job.id}-${a.manifest.renditions[0]!.file}`);
  const [src, out] = await Promise.all([videoPts(source), videoPts(file)]);
  expect(out.length).toBe(src.length);
  for (let i = 0; i < src.length; i++) expect(Math.abs(out[i]! - src[i]!)).toBeLessThanOrEqual(0.001);
}

/** What a describe block's stealing cluster gives its tests (set in its beforeAll). */
interface StealCluster {
  t: TestCluster;
  work: string;
  source: string;
}

/**
 * Two agents with one slot each (a node's queue of chunks waits for its only worker), 1 s chunks,
 * and the 12 s source, started before the describe block's tests and removed after them.
 */
function stealCluster(o: { tls: boolean; workPrefix: string }): StealCluster {
  const s = {} as StealCluster;
  beforeAll(async () => {
    s.t = await startTestCluster({ nodes: 2, slots: 1, tls: o.tls, env: { MAX_CHUNK_SEC: '1', MIN_SUB_SEGMENT_SEC: '0.2', SEGMENT_NO_PROGRESS_MS: '60000' } });
    s.work = await mkdtemp(join(tmpdir(), o.workPrefix));
    s.source = join(s.t.inputDir, 'steal-12s.mp4');
    await stealSource(s.source);
  });
  afterAll(async () => {
    await s.t?.close();
    if (s.work && !process.env.KEEP_TEST_DIRS) await rm(s.work, { recursive: true, force: true });
  });
  return s;
}

/** Submits the stealing job (540p x264 medium) and returns once it is past preparing. */
async function submitRunning(t: TestCluster, source: string): Promise<string> {
  const { jobId } = await t.client.submit({ inputUri: source, ladder: [{ name: '', height: 540, videoBitrateKbps: 1500, codec: 'h264', preset: 'medium' }] });
  for await (const j of t.client.watch(jobId)) if (j.state !== JobState.JOB_STATE_QUEUED && j.state !== JobState.JOB_STATE_PREPARING) break;
  return jobId;
}

// A straggler: one of two nodes is slowed to about a fifth of its speed. The healthy node finishes
// its own segment, then takes the slow node's queued chunks (work stealing): each is released by
// the owner before it starts, recorded in the checkpoint for the helper, and done exactly once.
describe("work stealing: a slow node's queued chunks move to an idle one", () => {
  const s = stealCluster({ tls: true, workPrefix: 'tessera-stealing-' });

  it('moves queued chunks from the straggler; the output is frame-exact with every chunk once', async () => {
    const { t, work, source } = s;
    // Slow one node once the job runs (its segment planned from its core count, like node-1's).
    const jobId = await submitRunning(t, source);
    const [fast, slow] = t.cluster.nodeIds() as [string, string];
    const pid = t.cluster.pid(slow);
    if (pid === undefined) throw new Error(`${slow} has no process`);
    const stop = dutyCycle(pid, 160, 40);
    let job;
    try {
      job = await t.client.wait(jobId);
    } finally {
      await stop();
    }
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);

    // Chunks of the slow node's segment were released to the fast one and recorded done by it, each once.
    // The straggler was handled by moving chunks, not by taking its whole segment away.
    expect(job.segments.map((s) => s.attempt)).toEqual([1, 1]);
    const cps = await checkpoints(t.cluster.client(), jobId);
    const slowSeg = job.segments.find((s) => s.nodeId === slow);
    expect(slowSeg).toBeDefined();
    const cp = cps.get(slowSeg!.index)!;
    // Nothing went the other way: the slow node never had a slot free while the fast one queued.
    const fastSeg = job.segments.find((s) => s.nodeId === fast)!;
    expect(cps.get(fastSeg.index)!.helpers).toBeUndefined();
    const helpers = Object.entries(cp.helpers ?? {});
    expect(helpers.length).toBeGreaterThanOrEqual(1);
    expect(helpers.every(([, h]) => h.nodeId === fast)).toBe(true);
    const moved = helpers.flatMap(([, h]) => h.chunks);
    const byNode1 = cp.done.filter((d) => d.nodeId === fast);
    expect(byNode1.length).toBeGreaterThanOrEqual(1);
    for (const d of byNode1) {
      expect(moved).toContain(d.sub);
      expect(d.attempt).toBeGreaterThanOrEqual(10_000);
    }
    const subs = cp.done.map((d) => d.sub);
    expect(new Set(subs).size).toBe(subs.length);
    expect(subs.length).toBe(cp.boundaries.length - 1);
    // A released chunk never starts on its owner: a chunk ran twice only as a copy of the
    // straggler's last running chunk (once nothing was queued), and each such pair ended with one
    // copy recorded: the copy won and the straggler's was stopped, or the straggler finished first.
    const coord = logLines(t.dir, 'coordinator-0').filter((l) => l.jobId === jobId);
    const copies = coord.filter((l) => l.msg === "running a copy of a straggler's chunk");
    // A copy whose straggler finished first may be stopped before its ffmpeg starts: the chunks
    // started twice are exactly the copies that started on the fast node.
    const copyStarted = copies.filter((c) =>
      logLines(t.dir, fast).some((l) => l.jobId === jobId && l.msg === 'sub-segment started' && l.segment === c.segment && l.sub === c.chunk && l.attempt === c.helperAttempt),
    );
    expect(subSegmentsRedone(t.dir, [fast, slow], jobId)).toBe(copyStarted.length);
    for (const c of copies) {
      const outcome = coord.find((l) => l.chunk === c.chunk && l.segment === c.segment && (l.msg === "the copy finished first: stopping the straggler's" || l.msg === 'the straggler finished first'));
      if (outcome?.msg === "the copy finished first: stopping the straggler's") {
        expect(logLines(t.dir, slow).some((l) => l.jobId === jobId && l.msg === 'chunk done elsewhere first: this copy stopped' && l.sub === c.chunk)).toBe(true);
        expect(cp.done.find((d) => d.sub === c.chunk)?.nodeId).toBe(fast);
      }
    }
    const released = logLines(t.dir, slow).filter((l) => l.msg === 'chunks released to a helper' && l.jobId === jobId);
    expect(released.length).toBeGreaterThanOrEqual(1);

    // Frame-exact: every source frame once, on its own timestamp (no duplicated or missing part).
    await expectFrameExact(t, job, work, source);
    console.log(
      `MEASURE stealing: ${byNode1.length} of ${cp.boundaries.length - 1} chunks of the slow node's segment done by the other node (${helpers.length} helper run(s), ${copies.length} copy(ies) of a running chunk); job ${((job.finishedAtMs - job.createdAtMs) / 1000).toFixed(1)} s`,
    );
  });

  it('a second straggler job, planned from the measured speeds: any copy of a running chunk is recorded once and the other stopped; frame-exact', async () => {
    const { t, work, source } = s;
    const [fast, slow] = t.cluster.nodeIds() as [string, string];
    // The first test measured both nodes: the slow one's speed is a fraction of the fast one's,
    // so its share is small and its last chunk is what the job waits for.
    const jobId = await submitRunning(t, source);
    const stop = dutyCycle(t.cluster.pid(slow)!, 190, 10);
    let job;
    try {
      job = await t.client.wait(jobId);
    } finally {
      await stop();
    }
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const coord = logLines(t.dir, 'coordinator-0').filter((l) => l.jobId === jobId);
    const copies = coord.filter((l) => l.msg === "running a copy of a straggler's chunk");
    // A copy needs the straggler's speed measured (a chunk it finished) and a chunk of it still
    // running with ≥ 3 s left once the other node is idle: timing decides whether this job has
    // one (planDuplicates' unit tests pin the rule). Whatever happened, one copy of each chunk counts.
    const cps = await checkpoints(t.cluster.client(), jobId);
    for (const c of copies) {
      expect(c.slow).toBe(slow);
      expect(c.copy).toBe(fast);
      const outcome = coord.find((l) => l.chunk === c.chunk && l.segment === c.segment && (l.msg === "the copy finished first: stopping the straggler's" || l.msg === 'the straggler finished first'));
      expect(outcome).toBeDefined();
      const done = cps.get(Number(c.segment))!.done.find((d) => d.sub === c.chunk)!;
      if (outcome!.msg === 'the straggler finished first') {
        expect(done.nodeId).toBe(slow);
      } else {
        expect(done.nodeId).toBe(fast);
        expect(done.attempt).toBe(c.helperAttempt);
        await expect.poll(() => logLines(t.dir, slow).some((l) => l.jobId === jobId && l.msg === 'chunk done elsewhere first: this copy stopped' && l.sub === c.chunk), { timeout: 10_000 }).toBe(true);
      }
    }
    // Every chunk of every segment recorded once; the output has every source frame once, on its timestamp.
    for (const cp of cps.values()) {
      const subs = cp.done.map((d) => d.sub);
      expect(new Set(subs).size).toBe(cp.boundaries.length - 1);
      expect(subs.length).toBe(cp.boundaries.length - 1);
    }
    await expectFrameExact(t, job, work, source);
    const won = coord.filter((l) => l.msg === "the copy finished first: stopping the straggler's").length;
    console.log(`MEASURE duplicates: ${copies.length} copy(ies) of a straggler's running chunk, ${won} finished first; job ${((job.finishedAtMs - job.createdAtMs) / 1000).toFixed(1)} s`);
  });
});

// The owner of a segment dies while a helper runs chunks of it: the helper finishes the chunk it
// has under way (recorded once, under its own attempt) and gives back the ones it has not started;
// only then is the segment reassigned. The redo is the dead node's own running chunk, nothing of
// the helper's. Its own cluster: this test kills a node.
describe('work stealing: the owner dies while its helper runs', () => {
  const s = stealCluster({ tls: false, workPrefix: 'tessera-stealing-kill-' });

  it("kill -9 of the owner: the helper's running chunk is recorded by the helper and not redone; frame-exact", async () => {
    const { t, work, source } = s;
    const jobId = await submitRunning(t, source);
    const [fast, slow] = t.cluster.nodeIds() as [string, string];
    const stop = dutyCycle(t.cluster.pid(slow)!, 160, 40);
    // The fast node finishes its own segment, takes the slow node's queued chunks and starts one.
    let started: Record<string, unknown>;
    try {
      started = await vi.waitFor(
        () => {
          const l = logLines(t.dir, fast).find((x) => x.jobId === jobId && x.msg === 'sub-segment started' && Number(x.attempt) >= 10_000);
          if (!l) throw new Error('the fast node has not started a chunk of the slow node yet');
          return l;
        },
        { timeout: 90_000, interval: 50 },
      );
    } finally {
      await stop();
    }
    t.cluster.signal(slow, 'SIGKILL');
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const seg = Number(started.segment);
    const sub = Number(started.sub);
    const helperAttempt = Number(started.attempt);
    // The coordinator waited for the helper before the segment ran again (on the fast node).
    const coord = logLines(t.dir, 'coordinator-0').filter((l) => l.jobId === jobId);
    expect(coord.some((l) => l.msg === "the segment's owner failed: its helpers finish the chunks they are running before it is reassigned" && l.segment === seg)).toBe(true);
    expect(job.segments.find((s) => s.index === seg)!.attempt).toBeGreaterThanOrEqual(2);
    // The chunk the helper was running at the kill: recorded by the helper, started by nobody else.
    const cp = (await checkpoints(t.cluster.client(), jobId)).get(seg)!;
    expect(cp.done.find((d) => d.sub === sub)).toMatchObject({ attempt: helperAttempt, nodeId: fast });
    const startsOfSub = [fast, slow].flatMap((n) => logLines(t.dir, n).filter((l) => l.jobId === jobId && l.msg === 'sub-segment started' && l.segment === seg && l.sub === sub));
    expect(startsOfSub.map((l) => Number(l.attempt))).toEqual([helperAttempt]);
    // At most the dead node's one worker's chunk was redone; every chunk is recorded once.
    const redone = subSegmentsRedone(t.dir, [fast, slow], jobId);
    expect(redone).toBeLessThanOrEqual(1);
    const subs = cp.done.map((d) => d.sub);
    expect(new Set(subs).size).toBe(cp.boundaries.length - 1);
    expect(subs.length).toBe(cp.boundaries.length - 1);
    await expectFrameExact(t, job, work, source);
    console.log(
      `MEASURE owner killed while helped: chunk ${sub} of segment ${seg} finished by the helper (attempt ${helperAttempt}); ${redone} chunk(s) redone; job ${((job.finishedAtMs - job.createdAtMs) / 1000).toFixed(1)} s`,
    );
  });
});
