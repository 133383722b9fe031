import type { Etcd3 } from 'etcd3';
import type { LeaderFence } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import type { JobRecord } from '../job-model.js';
import { appendTrail, stageName } from './job-writes.js';
import { updateJob } from './update-job.js';

export type ClaimOutcome = { ok: true; rec: JobRecord; revision: string } | { ok: false; reason: 'not-queued' | 'fenced' | 'contention' };

/**
 * Takes a job off the queue as the leader: QUEUED → PREPARING, its queue entry deleted, in one
 * transaction fenced on the leader term. A queue entry whose job is gone or no longer QUEUED
 * (cancelled while waiting) is deleted and answers `not-queued`.
 */
export async function claimJob(etcd: Etcd3, keys: Keys, queueKey: string, jobId: string, fence: LeaderFence, historyLimit: number): Promise<ClaimOutcome> {
  const out = await updateJob(
    etcd,
    keys,
    jobId,
    {
      step: (rec) => {
        if (rec.state !== 'QUEUED') return Promise.resolve(undefined);
        const now = Date.now();
        const next: JobRecord = {
          ...rec,
          state: 'PREPARING',
          stage: stageName('PREPARING'),
          history: appendTrail(rec, [{ atMs: now, scope: 'job', state: 'PREPARING', nodeId: '', attempt: 0, reason: 'picked up by the scheduler' }], historyLimit),
        };
        return Promise.resolve({ next, ops: [etcd.delete().key(queueKey)] });
      },
    },
    { fence, maxAttempts: 10 },
  );
  if (out.ok && out.changed) return { ok: true, rec: out.rec, revision: out.revision };
  if (!out.ok && out.reason !== 'missing') return { ok: false, reason: out.reason };
  await etcd.delete().key(queueKey);
  return { ok: false, reason: 'not-queued' };
}
