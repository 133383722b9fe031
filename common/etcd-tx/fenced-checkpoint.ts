import type { Etcd3 } from 'etcd3';
import type { Keys } from '../keys.js';
import type { CheckpointRecord } from '../records.js';
import { checkpointSchema, parseRecord } from '../record-schemas.js';
import { casUpdate } from './cas-update.js';
import { compareHolds, ownerFenceCompare } from './compare.js';

/** One segment attempt: the owner key's mod revision it was handed is its fencing token. */
export interface SegmentAttempt {
  jobId: string;
  segment: number;
  ownerRevision: number;
}

export type CheckpointOutcome = { ok: true; changed: boolean; checkpoint: CheckpointRecord | undefined; revision: string } | { ok: false; reason: 'fenced' | 'contention' };

/** The segment's checkpoint with its mod revision; undefined when none was written yet. */
export async function readCheckpoint(etcd: Etcd3, keys: Keys, jobId: string, segment: number): Promise<{ value: CheckpointRecord; modRevision: string } | undefined> {
  const key = keys.checkpoint(jobId, segment);
  const kv = (await etcd.get(key).exec()).kvs[0];
  return kv ? { value: parseRecord(checkpointSchema, kv.value, key), modRevision: kv.mod_revision } : undefined;
}

/** True while the segment's owner key still has the attempt's revision (nobody reassigned it). */
export function ownerHolds(etcd: Etcd3, keys: Keys, a: SegmentAttempt): Promise<boolean> {
  return compareHolds(etcd, ownerFenceCompare(keys.segmentOwner(a.jobId, a.segment), a.ownerRevision));
}

/**
 * Compare-and-swap on a segment's checkpoint, fenced on its owner key: commits only while the
 * owner key has the attempt's revision and the checkpoint is as read (a sibling sub-segment that
 * wrote first makes it read again). `mutate` returns undefined for "no change"; that too answers
 * `fenced` once the segment was reassigned, so a caller never mistakes a lost segment for a done one.
 */
export async function updateCheckpointFenced(
  etcd: Etcd3,
  keys: Keys,
  a: SegmentAttempt,
  mutate: (cur: CheckpointRecord | undefined) => CheckpointRecord | undefined,
  maxAttempts = 50,
): Promise<CheckpointOutcome> {
  const fence = ownerFenceCompare(keys.segmentOwner(a.jobId, a.segment), a.ownerRevision);
  const out = await casUpdate<CheckpointRecord>(
    etcd,
    keys.checkpoint(a.jobId, a.segment),
    checkpointSchema,
    (cur) => {
      const next = mutate(cur);
      return next === undefined ? undefined : { next };
    },
    { fence, allowCreate: true, maxAttempts },
  );
  if (!out.ok) return { ok: false, reason: out.reason === 'fenced' ? 'fenced' : 'contention' };
  if (!out.changed && !(await compareHolds(etcd, fence))) return { ok: false, reason: 'fenced' };
  return { ok: true, changed: out.changed, checkpoint: out.value, revision: out.revision };
}
