import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys } from '../common/keys.js';
import { createLogger } from '../common/logger.js';
import type { CheckpointRecord } from '../common/records.js';
import { HistorySweeper } from '../coordinator/state/history-sweeper.js';
import { specHash, type JobRecord } from '../coordinator/state/job-model.js';
import { JobStore, stageName, type LeaderFence } from '../coordinator/state/job-store.js';
import { newJobId } from '../coordinator/api/job-service.js';
import { JobSpec, JobState, SourceInfo } from '../proto/gen/tessera/v1/types.js';
import { dbSize, keyCount, startEtcdServer, type EtcdServer } from './etcd-server.js';

/**
 * Churn with retention on: jobs go through the JobStore exactly as the leader's runner drives
 * them (submit, claim, RUNNING with a plan, segment assignments with owner keys, checkpoints,
 * progress, the uploader's record, FINALIZING, then SUCCEEDED / FAILED / CANCELLED) and the
 * real HistorySweeper runs between batches, as its timer would. No ffmpeg: the media does not
 * change what etcd holds.
 */
describe('history retention under churn (real etcd)', () => {
  let e: EtcdServer;
  let store: JobStore;
  let sweeper: HistorySweeper;
  let fence: LeaderFence;
  const keys = new Keys('/tessera/');
  const MAX_JOBS = 100;

  beforeAll(async () => {
    e = await startEtcdServer();
    store = new JobStore(e.client, keys, 500);
    sweeper = new HistorySweeper(store, { archiveAfterMs: 0, maxAgeMs: 0, maxJobs: MAX_JOBS, batch: 500, intervalMs: 60_000 }, () => true, createLogger('test', 'warn'));
    const el = await e.client.put(keys.election()).value('coordinator-test').exec();
    fence = { key: keys.election(), createRevision: el.header.revision };
  });
  afterAll(async () => {
    await sweeper?.stop();
    await e?.stop();
  });

  /** One job from submission to a terminal state; `n` picks the outcome and the idempotency key. */
  const runJob = async (n: number): Promise<string> => {
    const now = Date.now();
    const spec = JobSpec.fromPartial({
      inputUri: `s3://in/clip-${n}.mp4?X-Amz-Signature=secret`,
      ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' }],
      container: 'mp4',
      outputUri: '',
      dryRun: false,
      idempotencyKey: n % 3 === 0 ? `churn-${n}` : '',
      priority: 0,
      webhookUrl: '',
      audioBitrateKbps: 128,
    });
    const rec: JobRecord = {
      id: newJobId(),
      spec,
      specHash: specHash(spec),
      state: 'QUEUED',
      stage: stageName('QUEUED'),
      createdAtMs: now,
      updatedAtMs: now,
      queueKey: keys.queueEntry(0, now.toString(36).padStart(9, '0'), ''),
      history: [{ atMs: now, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'accepted' }],
      timings: {},
    };
    rec.queueKey = keys.queueEntry(0, now.toString(36).padStart(9, '0'), rec.id);
    const { job } = await store.create(rec, spec.idempotencyKey || undefined);
    const id = job.id;
    if (n % 15 === 14) {
      await store.cancel(id, 'cancelled by the user');
      return id;
    }
    await store.claim(rec.queueKey, id, fence);
    const cuts = [0, 1, 2].map((i) => ({ index: i, startSec: i * 4, endSec: i * 4 + 4, frames: 120, nodeId: `node-${i}` }));
    await store.transition(
      id,
      'RUNNING',
      'segments planned',
      {
        source: SourceInfo.fromPartial({ format: 'mov,mp4', videoCodec: 'h264', width: 640, height: 360, fps: 30, durationSec: 12, frames: 360, hasAudio: true, audioCodec: 'aac', bytes: 1_000_000 }),
        plan: { cuts, renditions: [], container: 'mp4', bucket: 'out', key: `jobs/${id}.zip` },
      },
      fence,
    );
    await Promise.all(
      cuts.map(async (c) => {
        const seg = { index: c.index, state: 'TRANSFERRING' as const, nodeId: c.nodeId, attempt: 1, startSec: c.startSec, endSec: c.endSec, frames: c.frames };
        await store.putSegment(id, seg, 'assigned', fence, { nodeId: c.nodeId, attempt: 1, assignedAtMs: Date.now() });
        await store.putSegment(id, { ...seg, state: 'TRANSCODING' }, 'transferred', fence);
        // The agent's fenced checkpoint write, as node-agent/fence.ts makes it.
        const cp: CheckpointRecord = { boundaries: [0, 2, 4], done: [0, 1].map((sub) => ({ sub, attempt: 1, nodeId: c.nodeId, frames: 60 })), transcodedByAttempt: { '1': 2 } };
        await e.client.put(keys.checkpoint(id, c.index)).value(JSON.stringify(cp));
        await store.putSegment(id, { ...seg, state: 'DONE' }, 'segment done', fence);
      }),
    );
    await store.setProgress(id, { progress: 100, segments: { '0': { framesDone: 120, subSegments: 2, subSegmentsDone: 2 } } });
    await e.client.put(keys.upload(id)).value(JSON.stringify({ uploadId: 'u', parts: [1, 2] }));
    if (n % 10 === 9) {
      await store.transition(id, 'FAILED', 'transcode failed', { errorCode: 'TRANSCODE_FAILED', errorMessage: 'ffmpeg exited with code 1' }, fence);
      return id;
    }
    await store.transition(id, 'FINALIZING', 'all segments done', {}, fence);
    const result = {
      uri: `s3://out/jobs/${id}.zip`,
      bucket: 'out',
      key: `jobs/${id}.zip`,
      bytes: 123_456,
      sha256: 'ab'.repeat(32),
      renditions: [{ name: '360p', file: '360p.mp4', width: 640, height: 360, codec: 'h264', videoBitrateKbps: 800, durationSec: 12, frames: 360, bytes: 120_000, sha256: 'cd'.repeat(32) }],
    };
    await store.transition(id, 'SUCCEEDED', 'archive uploaded', { result, stage: 'done' }, fence);
    return id;
  };

  /** `count` jobs, 8 at a time, with a sweep after every 50 (the leader's timer, made deterministic). */
  const churn = async (from: number, count: number, ids: string[]): Promise<void> => {
    for (let b = from; b < from + count; b += 50) {
      let next = b;
      const end = Math.min(b + 50, from + count);
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < end) {
            const n = next++;
            ids[n] = await runJob(n);
          }
        }),
      );
      await sweeper.sweep();
    }
    // Drain what the last batch left: at most one sweep's batch per call.
    while ((await sweeper.sweep()).archived + (await sweeper.sweep()).dropped > 0);
  };

  it('keeps etcd key count and DB size flat over 1,000 jobs (retention: 100 jobs), and history still answers', async () => {
    const ids: string[] = [];
    await churn(0, 200, ids); // warm-up: history fills to its limit
    const warmKeys = await keyCount(e.client, keys.prefix);
    const warmDb = await dbSize(e.client);
    await churn(200, 1_000, ids);
    const endKeys = await keyCount(e.client, keys.prefix);
    const endDb = await dbSize(e.client);
    console.log(
      `retention churn: keys ${warmKeys} after 200 jobs, ${endKeys} after 1,200; DB ${warmDb.bytes} B -> ${endDb.bytes} B (compacted + defragmented; revision ${warmDb.revision} -> ${endDb.revision})`,
    );

    // What is left: the election key, 100 history records, their state index entries, and the
    // idempotency keys of those that had one. Nothing of the 1,100 older jobs.
    expect(await keyCount(e.client, keys.history())).toBe(MAX_JOBS);
    expect(await keyCount(e.client, keys.jobStates())).toBe(MAX_JOBS);
    expect(await keyCount(e.client, keys.jobs())).toBe(0);
    expect(await keyCount(e.client, keys.finished())).toBe(0);
    expect(await keyCount(e.client, keys.prefix + 'uploads/')).toBe(0);
    expect(await keyCount(e.client, keys.queue())).toBe(0);
    expect(endKeys).toBeLessThanOrEqual(warmKeys);
    // Flat: the same data set, so the same size within etcd's page granularity (a few pages).
    expect(endDb.bytes).toBeLessThanOrEqual(warmDb.bytes + 64 * 1024);

    // The newest jobs answer from history with their state, result and error, as GetJob returns them.
    const recent = ids.slice(-30);
    const views = await Promise.all(recent.map((id) => store.view(id)));
    for (const j of views) {
      expect(j.segments).toEqual([]);
      expect(j.spec?.inputUri).not.toContain('secret');
      if (j.state === JobState.JOB_STATE_SUCCEEDED) expect(j.result?.uri).toBe(`s3://out/jobs/${j.id}.zip`);
      else if (j.state === JobState.JOB_STATE_FAILED) expect(j.errorCode).toBe('TRANSCODE_FAILED');
      else expect(j.state).toBe(JobState.JOB_STATE_CANCELLED);
    }
    expect(views.map((j) => j.history.filter((h) => h.scope === 'job').at(-1)?.state)).toEqual(views.map((j) => JobState[j.state].replace('JOB_STATE_', '')));
    // The oldest are gone, with their idempotency keys: the same key submits a new job.
    await expect(store.view(ids[0]!)).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' });
    expect(await e.client.get(keys.idempotency('churn-0')).string()).toBeNull();
    // A job in history still holds its key: a retried submit gets the same job back.
    const kept = ids.length - 3; // n = 1197: n % 3 === 0
    const { job } = await store.create({ ...(await rebuild(kept)) }, `churn-${kept}`);
    expect(job.id).toBe(ids[kept]);

    // Listing and counting read the index only.
    const page = await store.listPage(50);
    expect(page.ids).toEqual([...ids].sort().reverse().slice(0, 50));
    const counts = await store.countByState();
    expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(MAX_JOBS);
  });

  it('drops history by age as well, oldest first, bounded per sweep, with index entries and idempotency keys', async () => {
    const aged = new HistorySweeper(store, { archiveAfterMs: 0, maxAgeMs: 30 * 60_000, maxJobs: 0, batch: 60, intervalMs: 60_000 }, () => true, createLogger('test', 'warn'));
    expect(await aged.sweep(Date.now())).toEqual({ archived: 0, dropped: 0 }); // nothing is 30 minutes old yet
    const hourLater = Date.now() + 3_600_000;
    expect(await aged.sweep(hourLater)).toEqual({ archived: 0, dropped: 60 });
    expect(await keyCount(e.client, keys.history())).toBe(MAX_JOBS - 60);
    expect(await aged.sweep(hourLater)).toEqual({ archived: 0, dropped: MAX_JOBS - 60 });
    // Only the election key is left: no history, index entry or idempotency key.
    expect(await keyCount(e.client, keys.prefix)).toBe(1);
  });

  it('indexes job records written before the state index, once: in-flight jobs resume, finished ones get archived', async () => {
    const legacy = new Keys('/legacy/');
    const old = new JobStore(e.client, legacy, 500);
    const rec = async (state: JobRecord['state'], ageMs: number): Promise<string> => {
      const r = await rebuild(0);
      const now = Date.now() - ageMs;
      const id = `j${now.toString(36).padStart(9, '0')}${state.toLowerCase()}`;
      await e.client.put(legacy.job(id)).value(JSON.stringify({ ...r, id, state, createdAtMs: now, updatedAtMs: now, ...(state === 'SUCCEEDED' ? { finishedAtMs: now } : {}) }));
      await e.client.put(legacy.segment(id, 0)).value('{}');
      return id;
    };
    const running = await rec('RUNNING', 3_000);
    const finished = [await rec('SUCCEEDED', 2_000), await rec('SUCCEEDED', 1_000)];
    expect(await old.ensureStateIndex()).toBe(3);
    const inFlight: string[] = [];
    for await (const ids of old.inFlightIds()) inFlight.push(...ids);
    expect(inFlight).toEqual([running]);
    expect((await old.finishedDue(Date.now(), 10)).map((d) => d.jobId)).toEqual(finished);
    expect([...(await old.countByState())].filter(([, n]) => n > 0)).toEqual([
      ['RUNNING', 1],
      ['SUCCEEDED', 2],
    ]);
    expect(await old.ensureStateIndex()).toBe(0); // once per cluster
  });

  /** A submission with the same spec as job `n` (for the idempotent retry). */
  const rebuild = async (n: number): Promise<JobRecord> => {
    const spec = JobSpec.fromPartial({
      inputUri: `s3://in/clip-${n}.mp4?X-Amz-Signature=secret`,
      ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' }],
      container: 'mp4',
      outputUri: '',
      dryRun: false,
      idempotencyKey: `churn-${n}`,
      priority: 0,
      webhookUrl: '',
      audioBitrateKbps: 128,
    });
    const now = Date.now();
    const id = newJobId();
    return { id, spec, specHash: specHash(spec), state: 'QUEUED', stage: stageName('QUEUED'), createdAtMs: now, updatedAtMs: now, queueKey: keys.queueEntry(0, 'x', id), history: [], timings: {} };
  };
});
