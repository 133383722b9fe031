import { parseRecord } from '../../common/record-schemas.js';
import { DeleteObjectCommand, DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Etcd3 } from 'etcd3';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import { s3Send, toAppError } from '../../common/s3-client.js';
import { abandonUpload } from '../../uploader/upload-record.js';
import type { JobRecord } from '../state/job-model.js';
import { resumeFactsSchema } from '../state/job-schemas.js';

export interface LeftoverDeps {
  etcd: Etcd3;
  keys: Keys;
  s3: S3Client;
  /** The bucket UploadAndSubmit stores uploads in (`S3_BUCKET`). */
  bucket: string;
  /** Keep a succeeded job's uploaded input (KEEP_SUCCEEDED_UPLOADS). */
  keepSucceededInput?: boolean;
  log: Logger;
}

/** The S3 key of an input UploadAndSubmit stored (`s3://<bucket>/uploads/…`), else undefined. */
export function uploadedInputKey(inputUri: string, bucket: string): string | undefined {
  const prefix = `s3://${bucket}/uploads/`;
  return inputUri.startsWith(prefix) && !inputUri.includes('?') ? inputUri.slice(`s3://${bucket}/`.length) : undefined;
}

/**
 * What a finished job leaves in S3 and etcd goes: for one that did not succeed, its incomplete
 * multipart upload is aborted (with `uploads/<jobId>`, and an archive that reached S3 anyway);
 * for every one, the input UploadAndSubmit stored for it is deleted (a succeeded job keeps its
 * archive). Idempotent; throws when S3 or etcd cannot be
 * reached, so the caller can try again.
 */
export async function releaseLeftovers(d: LeftoverDeps, rec: JobRecord): Promise<void> {
  await deleteInputStash(d, rec.id);
  if (rec.state !== 'FAILED' && rec.state !== 'CANCELLED' && rec.state !== 'SUCCEEDED') return;
  if (rec.state === 'SUCCEEDED' && d.keepSucceededInput) return;
  // A succeeded job's archive is the result; its uploaded input has served (one copy per run
  // piled up under uploads/ before).
  const r = rec.state === 'SUCCEEDED' ? { aborted: false, deletedObject: false } : await abandonUpload(d.etcd, d.keys, d.s3, rec.id);
  const streamFiles = rec.state === 'SUCCEEDED' ? 0 : await deleteStreamFiles(d, rec);
  const input = uploadedInputKey(rec.spec.inputUri, d.bucket);
  if (input) {
    try {
      await s3Send('DeleteObject', () => d.s3.send(new DeleteObjectCommand({ Bucket: d.bucket, Key: input })));
    } catch (err) {
      throw toAppError(err, `DeleteObject s3://${d.bucket}/${input}`);
    }
  }
  if (r.aborted || r.deletedObject || input || streamFiles) d.log.info({ jobId: rec.id, state: rec.state, ...r, deletedInput: input ?? '', streamFiles }, 'leftovers of a finished job removed');
}

/**
 * HLS/DASH files a job that did not succeed put under its output prefix (`<key>/stream/`, put
 * before the job's record said SUCCEEDED: a failure or cancel in between left them). Returns how
 * many were deleted.
 */
async function deleteStreamFiles(d: LeftoverDeps, rec: JobRecord): Promise<number> {
  if (!rec.plan || !rec.spec.package || !/hls|dash/.test(rec.spec.package)) return 0;
  const bucket = rec.plan.bucket;
  const prefix = `${rec.plan.key.replace(/\.zip$/, '')}/stream/`;
  let deleted = 0;
  try {
    for (let token: string | undefined; ;) {
      const page = await s3Send('ListObjectsV2', () => d.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) })));
      const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length) await s3Send('DeleteObjects', () => d.s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } })));
      deleted += keys.length;
      if (!page.IsTruncated || !page.NextContinuationToken) break;
      token = page.NextContinuationToken;
    }
  } catch (err) {
    throw toAppError(err, `deleting s3://${bucket}/${prefix}`);
  }
  return deleted;
}

/**
 * Tessera's copy of an http(s) input (`jobs/<id>/plan` names it; job-runner.ts) goes when its job
 * ends, whatever the outcome: it only served a new leader that had to cut a segment again.
 */
async function deleteInputStash(d: LeftoverDeps, jobId: string): Promise<void> {
  const raw = await d.etcd.get(d.keys.jobPlan(jobId)).string();
  const stash = raw ? parseRecord(resumeFactsSchema, raw, d.keys.jobPlan(jobId)).inputStash : undefined;
  const m = stash ? /^s3:\/\/([^/]+)\/(.+)$/.exec(stash) : null;
  if (!m) return;
  try {
    await s3Send('DeleteObject', () => d.s3.send(new DeleteObjectCommand({ Bucket: m[1]!, Key: m[2]! })));
  } catch (err) {
    throw toAppError(err, `DeleteObject ${stash ?? ''}`);
  }
  d.log.info({ jobId, stash }, "the input's copy in S3 removed");
}
