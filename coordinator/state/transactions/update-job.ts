import type { Etcd3 } from 'etcd3';
import { casUpdate } from '../../../common/etcd-tx/cas-update.js';
import { leaderFenceCompare, type Compare, type LeaderFence, type TxOp } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import { asJobRecord, type JobRecord, type JobRecordDraft } from '../job-model.js';
import { jobRecordSchema } from '../job-schemas.js';
import { jobIndexOps } from './job-writes.js';

/**
 * The next record, or undefined for "no change". Runs again on every retry: no side effects. What
 * it returns is checked against its state before it is written (asJobRecord: INTERNAL if not).
 */
export type JobMutation = (rec: JobRecord) => JobRecordDraft | undefined;

/** A job mutation that also needs reads, compares and writes of its own in the same transaction. */
export type JobStep = (rec: JobRecord) => Promise<{ next: JobRecordDraft; compares?: readonly Compare[]; ops?: readonly TxOp[] } | undefined>;

export interface UpdateJobOptions {
  /** Commit only while this leader term holds; a lost term ends with `fenced`. */
  fence?: LeaderFence | undefined;
  /** Puts in the same transaction (segment records, owner keys). */
  extraPuts?: readonly (readonly [string, string])[];
  maxAttempts?: number;
}

export type UpdateJobOutcome =
  | { ok: true; changed: true; rec: JobRecord; previous: JobRecord; revision: string }
  | { ok: true; changed: false; rec: JobRecord; revision: string }
  | { ok: false; reason: 'missing' | 'fenced' | 'contention' };

/**
 * Compare-and-swap on a job record (casUpdate), optionally fenced on the leader: the record, its
 * state index, finished-queue and outbox entries and `extraPuts` in one transaction. The record's
 * `updatedAtMs` is set to now. `revision` is the transaction's (or, unchanged, the record's).
 */
export async function updateJob(etcd: Etcd3, keys: Keys, jobId: string, mutate: JobMutation | { step: JobStep }, opts: UpdateJobOptions = {}): Promise<UpdateJobOutcome> {
  const step: JobStep =
    typeof mutate === 'function'
      ? (rec) => {
          const next = mutate(rec);
          return Promise.resolve(next ? { next } : undefined);
        }
      : mutate.step;
  const out = await casUpdate<JobRecord>(
    etcd,
    keys.job(jobId),
    jobRecordSchema,
    async (cur) => {
      const s = await step(cur!);
      if (!s) return undefined;
      const next: JobRecord = asJobRecord({ ...s.next, updatedAtMs: Date.now() });
      const puts = (opts.extraPuts ?? []).map(([k, v]) => etcd.put(k).value(v));
      return { next, compares: s.compares ?? [], ops: [...puts, ...(s.ops ?? []), ...jobIndexOps(etcd, keys, cur!, next)] };
    },
    { fence: opts.fence ? leaderFenceCompare(opts.fence) : undefined, maxAttempts: opts.maxAttempts ?? 50 },
  );
  if (!out.ok) return out;
  if (!out.changed) return { ok: true, changed: false, rec: out.value!, revision: out.revision };
  return { ok: true, changed: true, rec: out.value, previous: out.previous!, revision: out.revision };
}
