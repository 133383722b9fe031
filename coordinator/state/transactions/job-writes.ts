import type { Etcd3 } from 'etcd3';
import type { TxOp } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import type { StatusChange } from '../../../proto/gen/tessera/v1/types.js';
import { TERMINAL, type JobRecord, type JobRecordDraft, type JobStateName } from '../job-model.js';
import type { JobMutation } from './update-job.js';
import { outboxPut } from '../../api/webhooks.js';

/** The job's trail with `entries` appended, keeping the newest `limit`. */
export function appendTrail(rec: JobRecord, entries: readonly StatusChange[], limit: number): StatusChange[] {
  const h = [...rec.history, ...entries];
  return h.length > limit ? h.slice(h.length - limit) : h;
}

/** A change to a job in flight: the record it becomes, and the trail entries it adds. */
export type ActiveJobChange = (rec: JobRecord, now: number) => { next: JobRecordDraft; trail?: readonly StatusChange[] } | undefined;

/**
 * The one way a job in flight changes: a finished job (SUCCEEDED, FAILED, CANCELLED) is left as it
 * is (no change), and the change's trail entries are appended to the job's, keeping the newest
 * `limit`. Every writer of a running job's record goes through it.
 */
export function whileActive(change: ActiveJobChange, limit: number): JobMutation {
  return (rec) => {
    if (TERMINAL.has(rec.state)) return undefined;
    const out = change(rec, Date.now());
    if (!out) return undefined;
    return out.trail?.length ? { ...out.next, history: appendTrail(rec, out.trail, limit) } : out.next;
  };
}

/**
 * What follows a job record into the same transaction when its state changes: the state index
 * entry moves, a job that just finished joins the queue of trees to archive, and a state its
 * webhook is told about gets its outbox entry (written if and only if the state is).
 */
export function jobIndexOps(etcd: Etcd3, keys: Keys, prev: JobRecord, next: JobRecord): TxOp[] {
  if (prev.state === next.state) return [];
  const ops: TxOp[] = [etcd.delete().key(keys.jobStateEntry(prev.state, next.id)), etcd.put(keys.jobStateEntry(next.state, next.id)).value('')];
  if (TERMINAL.has(next.state) && !TERMINAL.has(prev.state)) {
    ops.push(etcd.put(keys.finishedEntry(next.finishedAtMs ?? next.updatedAtMs, next.id)).value(next.id));
  }
  const event = outboxPut(keys, prev, next);
  if (event) ops.push(etcd.put(event[0]).value(event[1]));
  return ops;
}

/** The stage line a job shows in each state. */
export function stageName(s: JobStateName): string {
  switch (s) {
    case 'QUEUED':
      return 'waiting in the queue';
    case 'PREPARING':
      return 'probing and splitting the input';
    case 'RUNNING':
      return 'transcoding segments';
    case 'FINALIZING':
      return 'merging, zipping and uploading';
    case 'SUCCEEDED':
      return 'done';
    case 'FAILED':
      return 'failed';
    case 'CANCELLED':
      return 'cancelled';
  }
}
