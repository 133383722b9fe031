import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Etcd3 } from 'etcd3';
import type { Keys } from '../common/keys.js';
import type { JobResult } from '../proto/gen/tessera/v1/types.js';
import { abortUpload, type MultipartState } from './s3-multipart.js';
import { s3Send } from '../common/s3-client.js';
import { parseRecord } from '../common/record-schemas.js';
import { z } from 'zod';

/** What etcd holds under `uploads/<jobId>`: the multipart state, then the final result. */
export interface UploadRecord {
  multipart?: MultipartState | undefined;
  result?: JobResult | undefined;
}

/** `uploads/<jobId>` (the uploader's): its multipart upload in progress, then the job's result. */
export const uploadRecordSchema = z.looseObject({
  multipart: z.looseObject({ uploadId: z.string(), bucket: z.string(), key: z.string(), partSize: z.number(), fileBytes: z.number() }).optional(),
  result: z.looseObject({ key: z.string() }).optional(),
}) as unknown as z.ZodType<UploadRecord>;

/** What abandonUpload found and did. */
export interface AbandonResult {
  /** An incomplete multipart upload was aborted (its parts deleted by S3). */
  aborted: boolean;
  /** An archive already in S3 was deleted (the job ended without success after its upload). */
  deletedObject: boolean;
}

/**
 * For a job that ended without success: aborts its incomplete multipart upload, deletes an
 * archive that reached S3 anyway (a cancel that won the race with the last write), and deletes
 * `uploads/<jobId>` (compared on its revision). Idempotent: an upload S3 no longer knows counts
 * as aborted, and a missing record does nothing. Throws when S3 or etcd cannot be reached (the
 * record then stays, so a later call tries again).
 */
export async function abandonUpload(etcd: Etcd3, keys: Keys, s3: S3Client, jobId: string): Promise<AbandonResult> {
  const key = keys.upload(jobId);
  const kv = (await etcd.get(key).exec()).kvs[0];
  if (!kv) return { aborted: false, deletedObject: false };
  let rec: UploadRecord;
  try {
    rec = parseRecord(uploadRecordSchema, kv.value, key);
  } catch {
    rec = {};
  }
  const out: AbandonResult = { aborted: false, deletedObject: false };
  const mp = rec.multipart;
  if (mp && !mp.completed && mp.uploadId) {
    await abortUpload(s3, mp);
    out.aborted = true;
  }
  const done = rec.result ? { bucket: rec.result.bucket, key: rec.result.key } : mp?.completed ? { bucket: mp.bucket, key: mp.key } : undefined;
  if (done) {
    await s3Send('DeleteObject', () => s3.send(new DeleteObjectCommand({ Bucket: done.bucket, Key: done.key })));
    out.deletedObject = true;
  }
  await etcd.if(key, 'Mod', '==', kv.mod_revision).then(etcd.delete().key(key)).commit();
  return out;
}
