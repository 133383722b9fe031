import type { Etcd3 } from 'etcd3';
import { AppError } from './errors.js';
import type { Keys } from './keys.js';
import type { CheckpointRecord } from './records.js';
import { ownerHolds, readCheckpoint, updateCheckpointFenced, type SegmentAttempt } from './etcd-tx/fenced-checkpoint.js';

/**
 * Writes for one segment assignment, fenced: each is a single transaction that only succeeds
 * while the owner key still has the revision the coordinator handed us. Once the segment is
 * reassigned (or our lease lapsed and the coordinator moved on), every write fails with FENCED.
 */
export class SegmentFence {
  rejections = 0;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly jobId: string,
    private readonly segment: number,
    private readonly ownerRevision: number,
    private readonly onRejected: () => void = () => undefined,
  ) {}

  private get attempt(): SegmentAttempt {
    return { jobId: this.jobId, segment: this.segment, ownerRevision: this.ownerRevision };
  }

  readCheckpoint(): Promise<{ value: CheckpointRecord; modRevision: string } | undefined> {
    return readCheckpoint(this.etcd, this.keys, this.jobId, this.segment);
  }

  /** Throws FENCED unless we still own the segment. */
  async assertOwner(): Promise<void> {
    if (!(await ownerHolds(this.etcd, this.keys, this.attempt))) this.reject();
  }

  /**
   * Compare-and-swap on the checkpoint, fenced on the owner. `mutate` gets the current record
   * (undefined if none) and returns the next one, or undefined for "no change".
   */
  async updateCheckpoint(mutate: (cur: CheckpointRecord | undefined) => CheckpointRecord | undefined): Promise<CheckpointRecord> {
    const out = await updateCheckpointFenced(this.etcd, this.keys, this.attempt, (cur) => {
      const next = mutate(cur);
      if (next === undefined && cur === undefined) throw new AppError('INTERNAL', 'checkpoint mutation returned nothing for an empty checkpoint');
      return next;
    });
    if (out.ok) return out.checkpoint!;
    if (out.reason === 'fenced') this.reject();
    throw new AppError('UNAVAILABLE', 'checkpoint contention');
  }

  private reject(): never {
    this.rejections++;
    this.onRejected();
    throw new AppError('FENCED', `segment ${this.segment} of job ${this.jobId} was reassigned: write rejected`, { retryable: false });
  }
}
