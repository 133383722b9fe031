import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Logger } from '../../common/logger.js';
import { s3Send, s3Status } from '../../common/s3-client.js';
import type { JobSpec, JobResult } from '../../proto/gen/tessera/v1/types.js';
import type { JobRecord, JobStateName } from './job-model.js';

/**
 * The acceptance journal: a record, outside etcd, of every job the cluster accepted and of how
 * it ended, so that a cluster restored from an etcd snapshot can tell which accepted jobs the
 * snapshot does not know (accepted after it: reported as lost) and which jobs it holds as in
 * flight that in fact finished after it (marked finished, not run again).
 *
 * One small S3 object per event, in the cluster's bucket:
 * - `<prefix>accepted/<jobId>.json` ({@link AcceptedEntry}), written after the job's etcd
 *   transaction and before the client is answered;
 * - `<prefix>finished/<jobId>.json` ({@link FinishedEntry}), written when the job reaches a
 *   final state.
 * Job ids sort by creation time, so "accepted since T" is one listing from a start key.
 */
export interface AcceptedEntry {
  id: string;
  acceptedAtMs: number;
  spec: JobSpec;
}

export interface FinishedEntry {
  id: string;
  state: JobStateName;
  finishedAtMs: number;
  result?: JobResult | undefined;
  /** How the job was cut and what its source was: a snapshot taken before the plan was recorded lacks them, and a SUCCEEDED record needs its plan. */
  plan?: JobRecord['plan'];
  source?: JobRecord['source'];
  errorCode?: string | undefined;
  errorMessage?: string | undefined;
}

export class Journal {
  /** Journal writes that failed for good (counted on `tessera_journal_write_failures_total`). */
  failures = 0;

  constructor(
    private readonly s3: S3Client,
    readonly bucket: string,
    readonly prefix: string,
    private readonly log: Logger,
    private readonly onFailure: () => void = () => undefined,
  ) {}

  acceptedKey(jobId: string): string {
    return `${this.prefix}accepted/${jobId}.json`;
  }

  finishedKey(jobId: string): string {
    return `${this.prefix}finished/${jobId}.json`;
  }

  /** Records an accepted job. Never throws: the job is accepted (it is in etcd) whatever happens here. */
  async accepted(rec: JobRecord): Promise<void> {
    const e: AcceptedEntry = { id: rec.id, acceptedAtMs: rec.createdAtMs, spec: rec.spec };
    await this.put(this.acceptedKey(rec.id), e);
  }

  /** Records a job's final state. Never throws. */
  async finished(rec: JobRecord): Promise<void> {
    const e: FinishedEntry = {
      id: rec.id,
      state: rec.state,
      finishedAtMs: rec.finishedAtMs ?? rec.updatedAtMs,
      ...(rec.result ? { result: rec.result } : {}),
      ...(rec.plan ? { plan: rec.plan } : {}),
      ...(rec.source ? { source: rec.source } : {}),
      ...(rec.errorCode ? { errorCode: rec.errorCode } : {}),
      ...(rec.errorMessage ? { errorMessage: rec.errorMessage } : {}),
    };
    await this.put(this.finishedKey(rec.id), e);
  }

  private async put(key: string, body: unknown): Promise<void> {
    try {
      // A few seconds of retries: an accept waits for this before it answers.
      await s3Send('PutObject', (opts) => this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: JSON.stringify(body), ContentType: 'application/json' }), opts), {
        timeoutMs: 10_000,
        attempts: 4,
      });
    } catch (err) {
      this.failures++;
      this.onFailure();
      this.log.error({ err, key }, 'could not write the acceptance journal: a restore from a backup will not know this event');
    }
  }
}

/** Reads one JSON object from S3 (journal entries, backup descriptions); undefined when absent. */
export async function readJsonObject<T>(s3: S3Client, bucket: string, key: string): Promise<T | undefined> {
  try {
    const res = await s3Send('GetObject', () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: key })));
    return JSON.parse(await res.Body!.transformToString()) as T;
  } catch (err) {
    if (s3Status(err) === 404 || (err as { name?: string }).name === 'NoSuchKey') return undefined;
    throw err;
  }
}
