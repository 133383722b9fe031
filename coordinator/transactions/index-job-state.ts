import type { Etcd3 } from 'etcd3';
import { commitTx, type TxOp } from '../../common/etcd-tx/compare.js';
import type { Keys } from '../../common/keys.js';
import { parseRecord } from '../../common/record-schemas.js';
import { TERMINAL } from '../job-model.js';
import { jobRecordSchema } from '../job-schemas.js';

export type IndexJobStateOutcome = 'indexed' | 'present' | 'gone' | 'contention';

/**
 * Indexes one job record written before the state index existed: its state entry, and the
 * archive queue entry of a finished one, compared on the record's revision (read again if it
 * changed in between). `present`: already indexed; `gone`: no record.
 */
export async function indexJobState(etcd: Etcd3, keys: Keys, jobId: string, maxAttempts = 20): Promise<IndexJobStateOutcome> {
  for (let i = 0; i < maxAttempts; i++) {
    const kv = (await etcd.get(keys.job(jobId)).exec()).kvs[0];
    if (!kv) return 'gone';
    const rec = parseRecord(jobRecordSchema, kv.value, keys.job(jobId));
    const entry = keys.jobStateEntry(rec.state, jobId);
    if (await etcd.get(entry).exists()) return 'present';
    const ops: TxOp[] = [etcd.put(entry).value('')];
    if (TERMINAL.has(rec.state)) ops.push(etcd.put(keys.finishedEntry(rec.finishedAtMs ?? rec.updatedAtMs, jobId)).value(jobId));
    const res = await commitTx(etcd, [{ key: keys.job(jobId), target: 'Mod', op: '==', value: kv.mod_revision }], ops);
    if (res.succeeded) return 'indexed';
  }
  return 'contention';
}
