import type { Etcd3 } from 'etcd3';
import type { LeaderFence } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import type { SegmentOwner } from '../../../common/records.js';
import { type JobStateName, type SegmentRecord } from '../job-model.js';
import { whileActive } from './job-writes.js';
import { updateJob } from './update-job.js';

/** One segment's new record, with the reason for its trail entry and, for an assignment, its owner record. */
export interface SegmentWrite {
  seg: SegmentRecord;
  reason: string;
  /** The new owner record (assign-owner): its mod revision is the attempt's fencing token. */
  ownerPut?: SegmentOwner | undefined;
}

export type SegmentWritesOutcome = { ok: true; revision: string } | { ok: false; reason: 'finished'; state: JobStateName } | { ok: false; reason: 'missing' | 'fenced' | 'contention' };

/**
 * Records segments' new states in one transaction, fenced on the leader when `fence` is given:
 * each segment record and owner key, and one trail entry per segment appended to the job record
 * (compared on its revision). Refused with `finished` once the job is in a final state. The
 * revision is the transaction's, so for an assignment it is the owner key's mod revision.
 * Distinct segments only: etcd refuses a key twice in one transaction.
 */
export async function commitSegmentWrites(
  etcd: Etcd3,
  keys: Keys,
  jobId: string,
  writes: readonly SegmentWrite[],
  fence: LeaderFence | undefined,
  historyLimit: number,
): Promise<SegmentWritesOutcome> {
  const extraPuts: [string, string][] = [];
  for (const w of writes) {
    extraPuts.push([keys.segment(jobId, w.seg.index), JSON.stringify(w.seg)]);
    if (w.ownerPut) extraPuts.push([keys.segmentOwner(jobId, w.seg.index), JSON.stringify(w.ownerPut)]);
  }
  const out = await updateJob(
    etcd,
    keys,
    jobId,
    whileActive(
      (rec, now) => ({ next: rec, trail: writes.map((w) => ({ atMs: now, scope: `segment/${w.seg.index}`, state: w.seg.state, nodeId: w.seg.nodeId, attempt: w.seg.attempt, reason: w.reason })) }),
      historyLimit,
    ),
    { fence, extraPuts },
  );
  if (!out.ok) return out;
  if (!out.changed) return { ok: false, reason: 'finished', state: out.rec.state };
  return { ok: true, revision: out.revision };
}
