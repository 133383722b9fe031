import type { Etcd3 } from 'etcd3';
import { AppError } from './errors.js';
import type { Keys } from './keys.js';
import type { CheckpointRecord } from './records.js';
import { checkpointSchema, parseRecord } from './record-schemas.js';

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

  private get ownerKey(): string {
    return this.keys.segmentOwner(this.jobId, this.segment);
  }
  private get checkpointKey(): string {
    return this.keys.checkpoint(this.jobId, this.segment);
  }

  async readCheckpoint(): Promise<{ value: CheckpointRecord; modRevision: string } | undefined> {
    const res = await this.etcd.get(this.checkpointKey).exec();
    const kv = res.kvs[0];
    return kv ? { value: parseRecord(checkpointSchema, kv.value, this.checkpointKey), modRevision: kv.mod_revision } : undefined;
  }

  /** Throws FENCED unless we still own the segment. */
  async assertOwner(): Promise<void> {
    const res = await this.etcd.get(this.ownerKey).exec();
    if (res.kvs[0]?.mod_revision !== String(this.ownerRevision)) this.reject();
  }

  /**
   * Compare-and-swap on the checkpoint, fenced on the owner. `mutate` gets the current record
   * (undefined if none) and returns the next one, or undefined for "no change".
   */
  async updateCheckpoint(mutate: (cur: CheckpointRecord | undefined) => CheckpointRecord | undefined): Promise<CheckpointRecord> {
    for (let i = 0; i < 50; i++) {
      const cur = await this.readCheckpoint();
      const next = mutate(cur?.value);
      if (next === undefined) {
        if (!cur) throw new AppError('INTERNAL', 'checkpoint mutation returned nothing for an empty checkpoint');
        await this.assertOwner();
        return cur.value;
      }
      const res = await this.etcd
        .if(this.ownerKey, 'Mod', '==', this.ownerRevision)
        .and(this.checkpointKey, 'Mod', '==', cur ? cur.modRevision : 0)
        .then(this.etcd.put(this.checkpointKey).value(JSON.stringify(next)))
        .commit();
      if (res.succeeded) return next;
      await this.assertOwner(); // distinguishes "fenced" from "a sibling sub-segment wrote first"
    }
    throw new AppError('UNAVAILABLE', 'checkpoint contention');
  }

  private reject(): never {
    this.rejections++;
    this.onRejected();
    throw new AppError('FENCED', `segment ${this.segment} of job ${this.jobId} was reassigned: write rejected`, { retryable: false });
  }
}
