import type { Etcd3 } from 'etcd3';
import { commitTx } from '../../common/etcd-tx/compare.js';
import type { Keys } from '../../common/keys.js';
import { parseRecord } from '../../common/record-schemas.js';
import { TERMINAL, toHistoryRecord } from '../job-model.js';
import { jobRecordSchema } from '../job-schemas.js';

/**
 * Moves a finished job to history in one transaction, compared on the record's revision: the
 * compact record is written and the working tree (record, segments, owners, checkpoints,
 * progress, plan), the uploader's record of its upload and the finished-queue entry are deleted.
 * `gone`: no record (the entry is dropped); `busy`: not final, or it changed meanwhile.
 */
export async function archiveJob(etcd: Etcd3, keys: Keys, finishedKey: string, jobId: string, nowMs: number): Promise<'archived' | 'gone' | 'busy'> {
  const kv = (await etcd.get(keys.job(jobId)).exec()).kvs[0];
  if (!kv) {
    await etcd.delete().key(finishedKey);
    return 'gone';
  }
  const rec = parseRecord(jobRecordSchema, kv.value, keys.job(jobId));
  if (!TERMINAL.has(rec.state)) return 'busy';
  const res = await commitTx(
    etcd,
    [{ key: keys.job(jobId), target: 'Mod', op: '==', value: kv.mod_revision }],
    [
      etcd.put(keys.historyEntry(jobId)).value(JSON.stringify(toHistoryRecord(rec, nowMs))),
      etcd.delete().key(keys.job(jobId)),
      etcd.delete().prefix(keys.jobTree(jobId)),
      etcd.delete().key(keys.upload(jobId)),
      etcd.delete().key(finishedKey),
    ],
  );
  return res.succeeded ? 'archived' : 'busy';
}
