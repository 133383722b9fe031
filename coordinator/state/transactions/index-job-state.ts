import type { Etcd3 } from 'etcd3';
import { casUpdate } from '../../../common/etcd-tx/cas-update.js';
import type { TxOp } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import { TERMINAL, type JobRecord } from '../job-model.js';
import { jobRecordSchema } from '../job-schemas.js';

export type IndexJobStateOutcome = 'indexed' | 'present' | 'gone' | 'contention';

/**
 * Indexes one job record written before the state index existed: its state entry, and the
 * archive queue entry of a finished one, compared on the record's revision (read again if it
 * changed in between). `present`: already indexed; `gone`: no record.
 */
export async function indexJobState(etcd: Etcd3, keys: Keys, jobId: string, maxAttempts = 20): Promise<IndexJobStateOutcome> {
  const out = await casUpdate<JobRecord>(
    etcd,
    keys.job(jobId),
    jobRecordSchema,
    async (rec) => {
      const entry = keys.jobStateEntry(rec!.state, jobId);
      if (await etcd.get(entry).exists()) return undefined;
      const ops: TxOp[] = [etcd.put(entry).value('')];
      if (TERMINAL.has(rec!.state)) ops.push(etcd.put(keys.finishedEntry(rec!.finishedAtMs ?? rec!.updatedAtMs, jobId)).value(jobId));
      return { ops }; // the record itself is not rewritten: the entries go in only while it is as read
    },
    { maxAttempts },
  );
  if (!out.ok) return out.reason === 'missing' ? 'gone' : 'contention';
  return out.changed ? 'indexed' : 'present';
}
