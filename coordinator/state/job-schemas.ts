import { z } from 'zod';
import { jobRecordProblem, type HistoryRecord, type JobRecord, type JobRecordDraft, type ProgressRecord, type SegmentRecord } from './job-model.js';
import type { ResumeFacts } from './job-store.js';
import type { UploadSession } from '../api/upload-session.js';
import type { OutboxEntry } from '../api/webhooks.js';

/**
 * Schemas of the job records the coordinator keeps in etcd (common/record-schemas.ts has the
 * shared ones; `parseRecord` applies them). A job's spec, plan and result are protobuf JSON
 * written by this code: checked as objects; what the scheduler and the runner branch on is checked
 * field by field.
 */
const JOB_STATES = ['QUEUED', 'PREPARING', 'RUNNING', 'FINALIZING', 'SUCCEEDED', 'FAILED', 'CANCELLED'] as const;
const SEGMENT_STATES = ['PENDING', 'TRANSFERRING', 'TRANSCODING', 'DONE', 'FAILED'] as const;
const count = z.number().int().nonnegative();
const statusChange = z.looseObject({ atMs: z.number(), scope: z.string(), state: z.string(), nodeId: z.string(), attempt: z.number(), reason: z.string() });

export const jobRecordSchema = z
  .looseObject({
    id: z.string().min(1),
    spec: z.looseObject({ inputUri: z.string() }),
    specHash: z.string(),
    state: z.enum(JOB_STATES),
    stage: z.string(),
    createdAtMs: z.number(),
    updatedAtMs: z.number(),
    queueKey: z.string(),
    plan: z
      .looseObject({
        cuts: z.array(z.looseObject({ index: count, startSec: z.number(), endSec: z.number(), frames: count, nodeId: z.string() })),
        renditions: z.array(z.looseObject({ name: z.string() })),
      })
      .optional(),
    history: z.array(statusChange),
    timings: z.record(z.string(), z.number()),
  })
  // One shape per state (job-model.ts): a RUNNING job without its plan is refused on read, as on write.
  .superRefine((rec, ctx) => {
    const problem = jobRecordProblem(rec as unknown as JobRecordDraft);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  }) as unknown as z.ZodType<JobRecord>;

export const segmentRecordSchema = z.looseObject({
  index: count,
  state: z.enum(SEGMENT_STATES),
  nodeId: z.string(),
  attempt: count,
  startSec: z.number(),
  endSec: z.number(),
  frames: count,
}) satisfies z.ZodType<SegmentRecord>;

export const progressRecordSchema = z.looseObject({
  progress: z.number(),
  segments: z.record(z.string(), z.looseObject({ framesDone: z.number(), subSegments: z.number(), subSegmentsDone: z.number() })),
  etaP50Sec: z.number().optional(),
  etaP90Sec: z.number().optional(),
}) as unknown as z.ZodType<ProgressRecord>;

export const historyRecordSchema = z.looseObject({
  id: z.string().min(1),
  state: z.enum(JOB_STATES),
  spec: z.looseObject({}),
  createdAtMs: z.number(),
  finishedAtMs: z.number(),
  history: z.array(statusChange),
  archivedAtMs: z.number(),
}) as unknown as z.ZodType<HistoryRecord>;

export const resumeFactsSchema = z.looseObject({
  keyTimes: z.array(z.number()),
  fileFrames: z.array(count),
  leadIn: z.number(),
  totalFrames: z.number(),
  audioSentTo: z.string().optional(),
  inputStash: z.string().optional(),
}) as unknown as z.ZodType<ResumeFacts>;

/** `idempotency/<key>`: the job a key was first used for, and that job's spec hash. */
export const idempotencyRecordSchema = z.looseObject({ jobId: z.string().min(1), specHash: z.string() });

/** `uploadsessions/<resumeId>`: a resumable client upload. */
export const uploadSessionSchema = z.looseObject({
  resumeId: z.string().min(1),
  key: z.string().min(1),
  s3UploadId: z.string(),
  totalBytes: count,
  partBytes: count,
  parts: z.array(z.looseObject({ n: count, etag: z.string(), size: count })),
  createdAtMs: z.number(),
}) satisfies z.ZodType<UploadSession>;

/** `outbox/…`: one webhook delivery owed. */
export const outboxEntrySchema = z.looseObject({
  id: z.string().min(1),
  jobId: z.string().min(1),
  state: z.enum(JOB_STATES),
  url: z.string(),
  body: z.string(),
  createdAtMs: z.number(),
  attempts: count,
  nextAtMs: z.number(),
}) as unknown as z.ZodType<OutboxEntry>;
