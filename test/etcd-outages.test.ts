import { mkdtemp, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { Keys } from '../common/keys.js';
import { createLogger } from '../common/logger.js';
import { Registration } from '../node-agent/registration.js';
import { processAlive } from '../common/process.js';
import type { NodeRecord } from '../common/records.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, fixture, nodeRunningFfmpeg, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { checkpoints, logLines, subSegmentsRedone } from './faults-helpers.js';

// One rung, slow enough that an outage lands mid-transcode, small enough for a 2-core CI machine.
const LADDER = [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'medium' }];
const TERMINAL = [JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED];

async function expectFrameExact(t: TestCluster, job: Job, frames: number): Promise<void> {
  expect(job.errorMessage).toBe('');
  expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
  const a = await checkArchive(t.s3, job, await mkdtemp(join(tmpdir(), 'tessera-outage-')));
  for (const r of a.renditions) {
    expect(r.frames).toBe(frames);
    expect(r.sha256).toBe(r.manifestSha256);
    expect(Math.abs((r.audioSec ?? 0) - r.videoSec)).toBeLessThanOrEqual(0.05);
  }
  const cps = await checkpoints(t.cluster.client(), job.id);
  for (const cp of cps.values()) expect(cp.done.map((d) => d.sub)).toEqual([...Array(cp.boundaries.length - 1).keys()]);
}

/** Resolves once some segment of the job reports transcoded frames (a node is mid-encode). */
async function untilTranscoding(t: TestCluster, jobId: string): Promise<void> {
  for await (const j of t.client.watch(jobId)) {
    if (j.segments.some((s) => s.framesDone > 0)) return;
    if (TERMINAL.includes(j.state)) throw new Error(`job ended before it transcoded: ${j.state}`);
  }
}

/** Every process of the cluster is alive, and every node agent, uploader and a leader is registered in etcd. */
async function allRegistered(t: TestCluster): Promise<boolean> {
  const etcd = t.cluster.client();
  const get = (k: string): Promise<string | null> =>
    etcd
      .get(k)
      .options({ deadline: new Date(Date.now() + 1_000) })
      .string();
  try {
    for (const id of t.cluster.nodeIds()) if ((await get(`/tessera/nodes/${id}`)) === null) return false;
    if ((await get('/tessera/uploaders/uploader-0')) === null) return false;
    return (await get('/tessera/election/coordinator')) !== null;
  } catch {
    return false;
  }
}

function processesAlive(t: TestCluster): string[] {
  return [...t.cluster.procs.values()].filter((p) => !processAlive(p.info.pid)).map((p) => p.info.name);
}

/** Jobs of the cluster not in a terminal state. */
async function nonTerminal(t: TestCluster): Promise<string[]> {
  return (await t.client.list({ limit: 1000 })).filter((j) => !TERMINAL.includes(j.state)).map((j) => `${j.id} ${j.state}`);
}

/**
 * Freezes the given etcd members (SIGSTOP) for `ms` while a job transcodes, thaws them, and
 * checks what a user would: the job SUCCEEDED frame-exact, every process alive and registered
 * again, no job left in flight. Returns the measurements.
 */
async function outageMidJob(t: TestCluster, clip: string, frames: number, members: string[], ms: number): Promise<{ rejoinMs: number; afterThawMs: number; jobMs: number; redone: number }> {
  const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
  await untilTranscoding(t, jobId);
  for (const m of members) t.cluster.signal(m, 'SIGSTOP');
  try {
    // The outage itself: the fault's length, not a wait for a condition.
    await new Promise((r) => setTimeout(r, ms));
  } finally {
    for (const m of members) t.cluster.signal(m, 'SIGCONT');
  }
  const thawedAt = Date.now();
  await expect.poll(() => allRegistered(t), { timeout: 30_000, interval: 100 }).toBe(true);
  const rejoinMs = Date.now() - thawedAt;
  const job = await t.client.wait(jobId);
  const afterThawMs = Date.now() - thawedAt;
  await expectFrameExact(t, job, frames);
  expect(processesAlive(t)).toEqual([]);
  expect(await allRegistered(t)).toBe(true);
  expect(await nonTerminal(t)).toEqual([]);
  return { rejoinMs, afterThawMs, jobMs: job.finishedAtMs - job.createdAtMs, redone: subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId) };
}

describe('etcd outages and restarts (one etcd member)', () => {
  let t: TestCluster;
  let clip: string;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 3 });
    clip = await fixture(t.inputDir, 'clip-12s-240p.mp4', { seconds: 12, width: 426, height: 240, fps: 30 });
  });

  afterAll(async () => {
    await t?.close();
  });

  it('an agent killed with -9 and restarted at once under its NODE_ID takes its registration over, takes work, and the job succeeds', async () => {
    // The victim's lease lasts 30 s: re-joining sooner than that proves the takeover (and not the
    // old lease expiring while the new process boots). A restart registers again in 1-2 s on a
    // quiet machine; beside the paired files' encodes it has taken up to 13 s (Node's start).
    const slow = { LEASE_TTL_SEC: '30' };
    const victim = await t.cluster.addNode({ env: slow });
    try {
      const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
      await untilTranscoding(t, jobId);
      await nodeRunningFfmpeg(t.cluster, [victim], 20_000);
      const killedAt = Date.now();
      t.cluster.signal(victim, 'SIGKILL');
      await t.cluster.stopProcess(victim, 'SIGKILL', 1);
      const restartAt = Date.now();
      void t.cluster.addNode({ id: victim, env: slow }); // resolves at once: the old registration is still there
      // Registered again: a record of the new incarnation (started after the kill) under the same id.
      const etcd = t.cluster.client();
      await expect
        .poll(
          async () => {
            const raw = await etcd.get(`/tessera/nodes/${victim}`).string();
            return raw !== null && (JSON.parse(raw) as NodeRecord).startedAtMs >= restartAt;
          },
          { timeout: 28_000, interval: 50 },
        )
        .toBe(true);
      const rejoinMs = Date.now() - killedAt;
      await expect.poll(() => logLines(t.dir, victim).some((l) => l.msg === 'took over the registration of an earlier incarnation'), { timeout: 10_000 }).toBe(true);
      const job = await t.client.wait(jobId);
      await expectFrameExact(t, job, 360);
      // The old incarnation's segment was reassigned (its work fenced off), not lost.
      expect(job.history.some((h) => h.reason.startsWith('reassigned') && h.atMs >= killedAt)).toBe(true);
      // The restarted agent takes work: once it is ready again, the next job puts a segment on it.
      await expect.poll(async () => (await t.client.listNodes()).find((n) => n.id === victim)?.state, { timeout: 20_000, interval: 100 }).toBe('ready');
      const next = await t.client.wait((await t.client.submit({ inputUri: clip, ladder: LADDER })).jobId);
      await expectFrameExact(t, next, 360);
      // Assigned a segment (the trail says so: with work stealing its segment may then move to a node with a free slot).
      expect(next.history.some((h) => h.scope.startsWith('segment/') && h.nodeId === victim)).toBe(true);
      const boot = logLines(t.dir, victim)
        .filter((l) => l.msg === 'joined the cluster')
        .at(-1);
      process.stdout.write(
        `MEASURE agent restart under its id (lease TTL 30 s): registered again ${rejoinMs} ms after the kill, Node start included (joined at ${String(boot?.time)}); job ${job.finishedAtMs - job.createdAtMs} ms\n`,
      );
    } finally {
      await t.cluster.stopProcess(victim); // leaves the cluster (revokes its lease): later tests see the usual three nodes
    }
  });

  it('a registration takes over its id only from a dead predecessor, and only when allowed (TLS identity)', async () => {
    const etcd = t.cluster.client();
    const keys = new Keys('/tessera/');
    const log = createLogger('registration-test', 'silent');
    const record = (port: number): NodeRecord => ({ id: 'reg-test', address: `127.0.0.1:${port}`, slots: 1, encoders: [], version: '0', startedAtMs: port, metricsAddress: '' });
    const first = new Registration(etcd, keys, record(1), 2, log);
    await first.tryJoin();
    const notAllowed = new Registration(etcd, keys, record(2), 2, log, { mayTakeOver: false, isAlive: async () => false });
    await expect(notAllowed.tryJoin()).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    const predecessorAlive = new Registration(etcd, keys, record(3), 2, log, { mayTakeOver: true, isAlive: async () => true });
    await expect(predecessorAlive.tryJoin()).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect((JSON.parse((await etcd.get(keys.node('reg-test')).string())!) as NodeRecord).startedAtMs).toBe(1);
    const replaced = new Promise<NodeRecord>((r) => first.once('replaced', r));
    const restarted = new Registration(etcd, keys, record(4), 2, log, { mayTakeOver: true, isAlive: async () => false });
    await restarted.tryJoin();
    expect((JSON.parse((await etcd.get(keys.node('reg-test')).string())!) as NodeRecord).startedAtMs).toBe(4);
    // The old incarnation notices (its next heartbeat, or its lease revoked) and stands down.
    expect(await first.stillOurs()).toBe(false);
    expect((await replaced).startedAtMs).toBe(4);
    expect(await restarted.stillOurs()).toBe(true);
    await Promise.all([first.leave(), notAllowed.leave(), predecessorAlive.leave(), restarted.leave()]);
    expect(await etcd.get(keys.node('reg-test')).string()).toBeNull();
  });

  it('UploadAndSubmit retried with the same idempotency key: one job id, one stored object', async () => {
    // Objects under uploads/ that no accepted job reads (a finished job's input is deleted, so
    // count what is left over, not what is there).
    const strays = async (keep: string[]): Promise<string[]> => {
      const res = await t.s3.send(new ListObjectsV2Command({ Bucket: t.cluster.bucket, Prefix: 'uploads/' }));
      return (res.Contents ?? []).map((o) => `s3://${t.cluster.bucket}/${o.Key}`).filter((k) => !keep.includes(k));
    };
    const spec = { ladder: LADDER, idempotencyKey: `upload-${Date.now()}` };
    const a = await t.client.upload(clip, spec);
    const b = await t.client.upload(clip, spec);
    expect(b.jobId).toBe(a.jobId);
    // Concurrent retries of another upload settle on one job too.
    const spec2 = { ...spec, idempotencyKey: `upload-many-${Date.now()}` };
    const many = await Promise.all([1, 2, 3].map(() => t.client.upload(clip, spec2)));
    expect(new Set(many.map((r) => r.jobId)).size).toBe(1);
    const inputs = [a.job!.spec!.inputUri, many[0]!.job!.spec!.inputUri];
    expect(new Set(inputs).size).toBe(2);
    expect(await strays(inputs)).toEqual([]);
    // Another file under a used key is refused, and leaves nothing behind.
    const other = join(t.inputDir, 'other.mp4');
    await copyFile(await fixture(t.inputDir, 'clip-3s-240p.mp4', { seconds: 3, width: 426, height: 240, fps: 30 }), other);
    let code = '';
    try {
      await t.client.upload(other, spec);
    } catch (err) {
      code = isAppError(err) ? err.code : String(err);
    }
    expect(code).toBe('IDEMPOTENCY_CONFLICT');
    expect(await strays(inputs)).toEqual([]);
    for (const id of [a.jobId, many[0]!.jobId]) await expectFrameExact(t, await t.client.wait(id), 360);
  });

  it('the only etcd member frozen for 60 s mid-job: the job succeeds and every process registers again', async () => {
    const m = await outageMidJob(t, clip, 360, ['etcd0'], 60_000);
    process.stdout.write(
      `MEASURE etcd (1 member) frozen 60 s mid-job: all processes registered ${m.rejoinMs} ms after the thaw; job SUCCEEDED ${m.afterThawMs} ms after the thaw (job ${m.jobMs} ms in all); sub-segments transcoded twice ${m.redone}\n`,
    );
  });
});

describe('etcd outages (three etcd members)', () => {
  let t: TestCluster;
  let clip: string;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, etcdMembers: 3 });
    clip = await fixture(t.inputDir, 'clip-12s-240p.mp4', { seconds: 12, width: 426, height: 240, fps: 30 });
  });

  afterAll(async () => {
    await t?.close();
  });

  it('two of three etcd members frozen for 30 s mid-job (quorum lost): the job succeeds and every process registers again', async () => {
    const m = await outageMidJob(t, clip, 360, ['etcd0', 'etcd1'], 30_000);
    process.stdout.write(
      `MEASURE etcd quorum lost (2 of 3 frozen) 30 s mid-job: all processes registered ${m.rejoinMs} ms after the thaw; job SUCCEEDED ${m.afterThawMs} ms after the thaw (job ${m.jobMs} ms in all); sub-segments transcoded twice ${m.redone}\n`,
    );
  });

  it('two of three etcd members frozen for 60 s mid-job (quorum lost): the job succeeds and every process registers again', async () => {
    const m = await outageMidJob(t, clip, 360, ['etcd1', 'etcd2'], 60_000);
    process.stdout.write(
      `MEASURE etcd quorum lost (2 of 3 frozen) 60 s mid-job: all processes registered ${m.rejoinMs} ms after the thaw; job SUCCEEDED ${m.afterThawMs} ms after the thaw (job ${m.jobMs} ms in all); sub-segments transcoded twice ${m.redone}\n`,
    );
  });
});
