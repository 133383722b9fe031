import type { Etcd3 } from 'etcd3';
import type { TxOp } from '../../common/etcd-tx/compare.js';
import type { Keys } from '../../common/keys.js';
import type { StatusChange } from '../../proto/gen/tessera/v1/types.js';
import { TERMINAL, type JobRecord, type JobStateName } from '../job-model.js';
import { outboxPut } from '../webhooks.js';

/** The job's trail with `entries` appended, keeping the newest `limit`. */
export function appendTrail(rec: JobRecord, entries: readonly StatusChange[], limit: number): StatusChange[] {
  const h = [...rec.history, ...entries];
  return h.length > limit ? h.slice(h.length - limit) : h;
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
