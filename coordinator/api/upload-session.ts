import { parseRecord } from '../../common/record-schemas.js';
import { AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, HeadObjectCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Etcd3 } from 'etcd3';
import { RESUME_ID, type IncomingChunk } from '../../common/chunks.js';
import { AppError } from '../../common/errors.js';
import { withEtcdRetry } from '../../common/etcd-retry.js';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import { s3Send } from '../../common/s3-client.js';
import { uploadSessionSchema } from '../state/job-schemas.js';

export { RESUME_ID };

/** The object a resumable upload becomes. */
export function uploadKeyOf(resumeId: string): string {
  return `uploads/r${resumeId}`;
}

/** S3's limits for multipart uploads: at most 10,000 parts, each at least 5 MiB (but the last) and at most 5 GiB. */
export const S3_MAX_PARTS = 10_000;
export const S3_MIN_PART_BYTES = 5 * 1024 ** 2;
export const S3_MAX_PART_BYTES = 5 * 1024 ** 3;
/** S3's largest object (5 TiB): no upload limit may exceed it. */
export const S3_MAX_OBJECT_BYTES = 5 * 1024 ** 4;
/** The part size we start from: large enough for few etcd writes, small enough to buffer. */
export const DEFAULT_PART_BYTES = 16 * 1024 ** 2;

/**
 * The part size for an upload of `total` bytes: DEFAULT_PART_BYTES, or larger when 10,000 of those
 * would not hold it (rounded up to a MiB). Pure.
 */
export function partBytesFor(total: number, base = DEFAULT_PART_BYTES): number {
  const need = Math.ceil(total / S3_MAX_PARTS);
  const size = Math.max(base, S3_MIN_PART_BYTES, Math.ceil(need / 1024 ** 2) * 1024 ** 2);
  if (size > S3_MAX_PART_BYTES) throw new AppError('LIMIT_EXCEEDED', `an upload of ${total} bytes exceeds what S3 can store in one object`);
  return size;
}

/** `uploadsessions/<resumeId>`: one resumable upload and the parts S3 holds. */
export interface UploadSession {
  resumeId: string;
  /** The object the upload becomes (`uploads/r<resumeId>`). */
  key: string;
  s3UploadId: string;
  totalBytes: number;
  partBytes: number;
  /** Stored parts, in order: part n (1-based) holds bytes [(n-1) × partBytes, …). */
  parts: { n: number; etag: string; size: number }[];
  createdAtMs: number;
}

/** Bytes S3 holds of the upload (every part but the last is `partBytes` long). Pure. */
export function receivedBytes(s: Pick<UploadSession, 'parts'>): number {
  return s.parts.reduce((a, p) => a + p.size, 0);
}

export interface UploadSessionDeps {
  etcd: Etcd3;
  keys: Keys;
  s3: S3Client;
  bucket: string;
  log: Logger;
  /** Part size for new uploads (tests shrink it; S3 needs ≥ 5 MiB but the last). */
  partBytes?: number;
  onPart?: (bytes: number) => void;
}

/**
 * Resumable client uploads: the bytes go to S3 as multipart parts while they arrive (one part
 * buffered, so memory stays bounded whatever the size), and every stored part is recorded in
 * etcd before the next is taken. An interrupted upload — client, network or coordinator — keeps
 * its stored parts; the client asks how much is held (GetUpload) and sends only the rest, to any
 * coordinator.
 */
export class UploadSessions {
  constructor(private readonly d: UploadSessionDeps) {}

  private key(id: string): string {
    return this.d.keys.uploadSession(id);
  }

  async get(resumeId: string): Promise<UploadSession | undefined> {
    if (!RESUME_ID.test(resumeId)) throw new AppError('INVALID_ARGUMENT', 'resume_id must be 8-64 characters of a-z, 0-9 and -');
    const raw = await withEtcdRetry('read upload session', () => this.d.etcd.get(this.key(resumeId)).string(), { log: this.d.log });
    return raw === null ? undefined : parseRecord(uploadSessionSchema, raw, this.key(resumeId));
  }

  /** The session for `resumeId`, started (an S3 multipart upload) if there is none. */
  async open(resumeId: string, totalBytes: number, objectKey = uploadKeyOf(resumeId)): Promise<UploadSession> {
    const have = await this.get(resumeId);
    if (have) {
      if (have.totalBytes !== totalBytes) throw new AppError('FAILED_PRECONDITION', `upload ${resumeId} is of ${have.totalBytes} bytes, not ${totalBytes}: a different file (use another resume id)`);
      return have;
    }
    const key = objectKey;
    const created = await s3Send('CreateMultipartUpload', () => this.d.s3.send(new CreateMultipartUploadCommand({ Bucket: this.d.bucket, Key: key })));
    if (!created.UploadId) throw new AppError('INTERNAL', 'S3 gave no multipart upload id');
    const s: UploadSession = { resumeId, key, s3UploadId: created.UploadId, totalBytes, partBytes: partBytesFor(totalBytes, this.d.partBytes), parts: [], createdAtMs: Date.now() };
    // Create-only: two clients racing on one id get one session (the loser's S3 upload is aborted).
    const txn = await withEtcdRetry(
      'create upload session',
      () =>
        this.d.etcd
          .if(this.key(resumeId), 'Create', '==', 0)
          .then(this.d.etcd.put(this.key(resumeId)).value(JSON.stringify(s)))
          .commit(),
      { log: this.d.log },
    );
    if (!txn.succeeded) {
      await this.abortS3(key, created.UploadId);
      return this.open(resumeId, totalBytes, objectKey);
    }
    return s;
  }

  /**
   * Stores the incoming bytes as parts until the upload is whole. The first chunk must start at
   * what S3 holds; chunks must be contiguous. A stream that ends short leaves the session to be
   * resumed (INVALID_ARGUMENT says from where).
   */
  async receive(session: UploadSession, chunks: AsyncIterable<IncomingChunk>, signal: AbortSignal): Promise<UploadSession> {
    let s = session;
    let pos = receivedBytes(s);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async (final: boolean): Promise<void> => {
      while (pendingBytes >= s.partBytes || (final && pendingBytes > 0)) {
        const all = Buffer.concat(pending, pendingBytes);
        const size = Math.min(s.partBytes, all.length);
        const body = all.subarray(0, size);
        pending = size < all.length ? [all.subarray(size)] : [];
        pendingBytes = all.length - size;
        const n = s.parts.length + 1;
        const res = await s3Send(
          'UploadPart',
          (opts) => this.d.s3.send(new UploadPartCommand({ Bucket: this.d.bucket, Key: s.key, UploadId: s.s3UploadId, PartNumber: n, Body: body, ContentLength: size }), opts),
          { signal },
        );
        if (!res.ETag) throw new AppError('INTERNAL', `S3 gave no ETag for part ${n}`);
        const next = { ...s, parts: [...s.parts, { n, etag: res.ETag, size }] };
        await withEtcdRetry('record upload part', () => this.d.etcd.put(this.key(s.resumeId)).value(JSON.stringify(next)).exec(), { log: this.d.log, signal });
        s = next;
        this.d.onPart?.(size);
      }
    };
    for await (const c of chunks) {
      if (signal.aborted) throw new AppError('CANCELLED', 'upload aborted');
      if (c.data.length === 0) continue;
      if (c.offset !== pos) {
        throw new AppError('FAILED_PRECONDITION', `upload ${s.resumeId}: bytes at offset ${c.offset}, expected ${pos} (the cluster holds ${receivedBytes(s)} bytes; resume from there)`);
      }
      if (pos + c.data.length > s.totalBytes) throw new AppError('INVALID_ARGUMENT', `upload ${s.resumeId} is longer than the ${s.totalBytes} bytes announced`);
      pending.push(Buffer.from(c.data));
      pendingBytes += c.data.length;
      pos += c.data.length;
      if (pendingBytes >= s.partBytes) await flush(false);
    }
    if (pos !== s.totalBytes) {
      throw new AppError('INVALID_ARGUMENT', `upload ${s.resumeId} ended at ${pos} of ${s.totalBytes} bytes; resume from ${receivedBytes(s)}`);
    }
    await flush(true);
    return s;
  }

  /** Joins the parts into the object and forgets the session. */
  async complete(s: UploadSession, signal?: AbortSignal): Promise<void> {
    if (receivedBytes(s) !== s.totalBytes) throw new AppError('INTERNAL', `upload ${s.resumeId} holds ${receivedBytes(s)} of ${s.totalBytes} bytes`);
    try {
      await s3Send(
        'CompleteMultipartUpload',
        (opts) =>
          this.d.s3.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.d.bucket,
              Key: s.key,
              UploadId: s.s3UploadId,
              MultipartUpload: { Parts: s.parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
            }),
            opts,
          ),
        { signal },
      );
    } catch (err) {
      // Completed before (its answer or the session's deletion was lost): the object says so.
      const head = await s3Send('HeadObject', () => this.d.s3.send(new HeadObjectCommand({ Bucket: this.d.bucket, Key: s.key }))).catch(() => undefined);
      if (head?.ContentLength !== s.totalBytes) throw err;
    }
    await withEtcdRetry('delete upload session', () => this.d.etcd.delete().key(this.key(s.resumeId)).exec(), { log: this.d.log });
  }

  /** Drops an upload that will not be finished: its parts in S3 and its session. */
  async abort(s: UploadSession): Promise<void> {
    await this.abortS3(s.key, s.s3UploadId);
    await withEtcdRetry('delete upload session', () => this.d.etcd.delete().key(this.key(s.resumeId)).exec(), { log: this.d.log });
  }

  /** Sessions older than `maxAgeMs` are abandoned: their parts are deleted from S3. Returns how many. */
  async sweep(maxAgeMs: number, now = Date.now()): Promise<number> {
    const all = await this.d.etcd.getAll().prefix(this.d.keys.uploadSessions()).limit(1000).strings();
    let n = 0;
    for (const [key, raw] of Object.entries(all)) {
      const s = parseRecord(uploadSessionSchema, raw, key);
      if (now - s.createdAtMs < maxAgeMs) continue;
      await this.abort(s).catch((err: unknown) => this.d.log.warn({ err, resumeId: s.resumeId }, 'could not drop an abandoned upload'));
      n++;
    }
    return n;
  }

  private async abortS3(key: string, uploadId: string): Promise<void> {
    await s3Send('AbortMultipartUpload', () => this.d.s3.send(new AbortMultipartUploadCommand({ Bucket: this.d.bucket, Key: key, UploadId: uploadId }))).catch((err: unknown) => {
      this.d.log.warn({ err, key }, 'could not abort a multipart upload');
    });
  }
}
