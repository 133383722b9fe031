import { z } from 'zod';
import { AppError } from './errors.js';
import type { CheckpointRecord, NodeRecord, NodeStats, SegmentOwner, UploaderRecord } from './records.js';

/**
 * Every record read out of etcd is parsed against its schema here (not `JSON.parse(...) as T`):
 * a record that is not JSON, or lacks what the code relies on, fails with one clear INTERNAL
 * error naming its key, instead of an `undefined` deep inside a scheduler. Fields a newer version
 * adds pass through (loose objects), so a rolling upgrade reads its peers' records.
 */
const int = z.number().int();
const count = int.nonnegative();

export const nodeRecordSchema = z.looseObject({
  id: z.string().min(1),
  address: z.string(),
  slots: z.number(),
  encoders: z.array(z.string()),
  version: z.string(),
  startedAtMs: z.number(),
  metricsAddress: z.string(),
  capabilities: z.array(z.string()).optional(),
  cores: z.number().optional(),
  labels: z.record(z.string(), z.string()).optional(),
}) satisfies z.ZodType<NodeRecord>;

export const nodeStatsSchema = z.looseObject({
  busySlots: z.number(),
  segmentsDone: z.number(),
  subSegmentsDone: z.number(),
  heartbeatMs: z.number(),
  speedMps: z.number().optional(),
  notReady: z.string().optional(),
  stagingBytes: z.number().optional(),
}) satisfies z.ZodType<NodeStats>;

export const uploaderRecordSchema = z.looseObject({
  id: z.string().min(1),
  address: z.string(),
  metricsAddress: z.string(),
  startedAtMs: z.number(),
}) satisfies z.ZodType<UploaderRecord>;

export const segmentOwnerSchema = z.looseObject({
  nodeId: z.string(),
  attempt: count,
  assignedAtMs: z.number(),
}) satisfies z.ZodType<SegmentOwner>;

export const checkpointSchema = z.looseObject({
  boundaries: z.array(z.number()),
  done: z.array(
    z.looseObject({
      sub: count,
      attempt: count,
      nodeId: z.string(),
      frames: count,
      sha256: z.record(z.string(), z.string()).optional(),
    }),
  ),
  transcodedByAttempt: z.record(z.string(), z.number()),
  helpers: z.record(z.string(), z.looseObject({ nodeId: z.string(), chunks: z.array(count) })).optional(),
}) satisfies z.ZodType<CheckpointRecord>;

/** Parses one etcd value against `schema`; INTERNAL (not retryable) naming `key` when it does not fit. */
export function parseRecord<T>(schema: z.ZodType<T>, raw: string | Buffer, key: string): T {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString());
  } catch {
    throw new AppError('INTERNAL', `the record at ${key} is not JSON`, { retryable: false });
  }
  const res = schema.safeParse(value);
  if (!res.success) {
    const first = res.error.issues[0];
    throw new AppError('INTERNAL', `the record at ${key} is malformed: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid'}`, { retryable: false });
  }
  return res.data;
}
