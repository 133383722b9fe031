import type { Etcd3 } from 'etcd3';
import { commitTx } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import type { HistoryRecord } from '../job-model.js';
import type { IdempotencyRecord } from './create-job.js';

/**
 * Drops one history record past retention with its state index entry, and then its idempotency
 * key if that still names this job (the exact value createJob wrote: a key reused since stays).
 * `key` is where the record was read. False when the record was already gone (another sweeper got there first).
 */
export async function dropHistoryRecord(etcd: Etcd3, keys: Keys, h: HistoryRecord, key = keys.historyEntry(h.id)): Promise<boolean> {
  const res = await commitTx(etcd, [{ key, target: 'Mod', op: '>', value: 0 }], [etcd.delete().key(key), etcd.delete().key(keys.jobStateEntry(h.state, h.id))]);
  if (!res.succeeded) return false;
  if (h.spec.idempotencyKey) {
    const idem = keys.idempotency(h.spec.idempotencyKey);
    const named: IdempotencyRecord = { jobId: h.id, specHash: h.specHash };
    await commitTx(etcd, [{ key: idem, target: 'Value', op: '==', value: JSON.stringify(named) }], [etcd.delete().key(idem)]);
  }
  return true;
}
