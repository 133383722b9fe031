import type { Etcd3 } from 'etcd3';
import { casUpdate } from '../../../common/etcd-tx/cas-update.js';
import type { Keys } from '../../../common/keys.js';
import { TERMINAL, toHistoryRecord, type JobRecord } from '../job-model.js';
import { jobRecordSchema } from '../job-schemas.js';

/**
 * Moves a finished job to history in one transaction, compared on the record's revision: the
 * compact record is written and the working tree (record, segments, owners, checkpoints,
 * progress, plan), the uploader's record of its upload and the finished-queue entry are deleted.
 * `gone`: no record (the entry is dropped); `busy`: not final, or it changed meanwhile.
 */
export async function archiveJob(etcd: Etcd3, keys: Keys, finishedKey: string, jobId: string, nowMs: number): Promise<'archived' | 'gone' | 'busy'> {
  const out = await casUpdate<JobRecord>(
    etcd,
    keys.job(jobId),
    jobRecordSchema,
    (rec) =>
      TERMINAL.has(rec!.state)
        ? {
            ops: [
              etcd.put(keys.historyEntry(jobId)).value(JSON.stringify(toHistoryRecord(rec!, nowMs))),
              etcd.delete().key(keys.job(jobId)),
              etcd.delete().prefix(keys.jobTree(jobId)),
              etcd.delete().key(keys.upload(jobId)),
              etcd.delete().key(finishedKey),
            ],
          }
        : undefined,
    { maxAttempts: 1 }, // a record that changed meanwhile is busy: the sweeper comes back to it
  );
  if (!out.ok && out.reason === 'missing') {
    await etcd.delete().key(finishedKey);
    return 'gone';
  }
  return out.ok && out.changed ? 'archived' : 'busy';
}
