import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import { commitTx, type Compare } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import { parseRecord } from '../../../common/record-schemas.js';
import type { JobRecord } from '../job-model.js';

/** `idempotency/<key>`: the job a client's idempotency key created, and the hash of its spec. */
export const idempotencyRecordSchema = z.looseObject({ jobId: z.string().min(1), specHash: z.string() });
export type IdempotencyRecord = z.infer<typeof idempotencyRecordSchema>;

export type CreateJobOutcome =
  | { ok: true; created: true; jobId: string; revision: string }
  /** The idempotency key already names this spec's job (still in etcd or in history): a retried submit. */
  | { ok: true; created: false; jobId: string }
  /** A job with this id exists already. */
  | { ok: false; reason: 'exists'; jobId: string }
  /** The idempotency key names a job with another spec. */
  | { ok: false; reason: 'conflict'; jobId: string }
  | { ok: false; reason: 'contention' };

/**
 * Writes a new job (record, queue entry, state index entry, and the idempotency key when given) in
 * one transaction that requires the job id to be new and the idempotency key unused. A key that
 * names a job gone past retention is freed (compared on its revision) and the write tried again.
 */
export async function createJob(etcd: Etcd3, keys: Keys, rec: JobRecord, idempotencyKey: string | undefined, maxAttempts = 10): Promise<CreateJobOutcome> {
  const jobKey = keys.job(rec.id);
  const ops = [etcd.put(jobKey).value(JSON.stringify(rec)), etcd.put(rec.queueKey).value(rec.id), etcd.put(keys.jobStateEntry(rec.state, rec.id)).value('')];
  const jobIsNew: Compare = { key: jobKey, target: 'Create', op: '==', value: 0 };
  if (!idempotencyKey) {
    const res = await commitTx(etcd, [jobIsNew], ops);
    return res.succeeded ? { ok: true, created: true, jobId: rec.id, revision: res.revision } : { ok: false, reason: 'exists', jobId: rec.id };
  }
  const idemKey = keys.idempotency(idempotencyKey);
  const idem: IdempotencyRecord = { jobId: rec.id, specHash: rec.specHash };
  for (let i = 0; i < maxAttempts; i++) {
    const res = await commitTx(etcd, [jobIsNew, { key: idemKey, target: 'Create', op: '==', value: 0 }], [etcd.put(idemKey).value(JSON.stringify(idem)), ...ops], [etcd.get(idemKey)]);
    if (res.succeeded) return { ok: true, created: true, jobId: rec.id, revision: res.revision };
    const kv = res.responses[0]?.response_range?.kvs[0];
    if (!kv) {
      if (await etcd.get(jobKey).exists()) return { ok: false, reason: 'exists', jobId: rec.id };
      continue; // the key was deleted in between: try again
    }
    const prior = parseRecord(idempotencyRecordSchema, kv.value, idemKey);
    if (prior.specHash !== rec.specHash) return { ok: false, reason: 'conflict', jobId: prior.jobId };
    const [live, archived] = await Promise.all([etcd.get(keys.job(prior.jobId)).exists(), etcd.get(keys.historyEntry(prior.jobId)).exists()]);
    if (live || archived) return { ok: true, created: false, jobId: prior.jobId };
    // The job it named is gone (past retention): the key is free again, unless it moved meanwhile.
    await commitTx(etcd, [{ key: idemKey, target: 'Mod', op: '==', value: kv.mod_revision }], [etcd.delete().key(idemKey)]);
  }
  return { ok: false, reason: 'contention' };
}
