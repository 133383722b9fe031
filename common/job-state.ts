import type { Etcd3 } from 'etcd3';
import type { Keys } from './keys.js';
import { readJobStateTx } from './etcd-tx/read-job-state.js';

/** States after which a job needs nothing staged anywhere. */
export const FINAL_STATES: ReadonlySet<string> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/**
 * A job's state as etcd records it (its working record, else its history record), in one
 * transaction; 'GONE' when neither exists (dropped by retention, or never a job here). For
 * processes that clean up after jobs without knowing the coordinator's model.
 */
export function readJobState(etcd: Etcd3, keys: Keys, jobId: string): Promise<string> {
  return readJobStateTx(etcd, keys, jobId);
}

/** True when nothing staged for the job is needed any more (final, or gone from etcd). */
export function isFinished(state: string): boolean {
  return state === 'GONE' || FINAL_STATES.has(state);
}
