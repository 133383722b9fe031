import { createHash } from 'node:crypto';
import { JobState, SegmentState, type Job, type JobResult, type JobSpec, type PlannedRendition, type SourceInfo, type StatusChange } from '../../proto/gen/tessera/v1/types.js';
import type { CheckpointRecord } from '../../common/records.js';
import { AppError } from '../../common/errors.js';

export type JobStateName = 'QUEUED' | 'PREPARING' | 'RUNNING' | 'FINALIZING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
export type SegmentStateName = 'PENDING' | 'TRANSFERRING' | 'TRANSCODING' | 'DONE' | 'FAILED';

export const TERMINAL: ReadonlySet<JobStateName> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

export interface PlannedCut {
  index: number;
  startSec: number;
  endSec: number;
  /** Frames the segment shows (its share). */
  frames: number;
  nodeId: string;
  /**
   * Cut at exact frames (transcoder/frame-cuts.ts): the file's packet range, the decoded frames
   * dropped before and after the segment's own, and the time of the keyframe the file starts
   * with. Absent for a keyframe cut (a plan made before frame cuts, or open GOPs).
   */
  fromPacket?: number;
  toPacket?: number;
  leadIn?: number;
  leadOut?: number;
  originSec?: number;
}

/**
 * A conversion to a constant frame rate (spec `frame_rate`): the rate, the frames every rendition
 * has, and each segment's window on the presented timeline, in `cuts` order (frame-rate.ts).
 */
export interface ConstantRatePlan {
  num: number;
  den: number;
  frames: number;
  windows: { originSec: number; startSec: number; endSec: number }[];
}

/** Streaming output: IDR frames every `periodSec` of the presented timeline; each segment's window, in `cuts` order. */
export interface KeyframeGridPlan {
  periodSec: number;
  windows: { originSec: number; startSec: number; endSec: number }[];
}

/** A job's plan: its segments, renditions and where the archive goes (decided once, kept with the job). */
export interface JobPlan {
  cuts: PlannedCut[];
  renditions: PlannedRendition[];
  container: 'mp4' | 'mkv';
  bucket: string;
  key: string;
  constantRate?: ConstantRatePlan | undefined;
  keyframeGrid?: KeyframeGridPlan | undefined;
}

/** What every job record has, whatever its state. */
interface JobFields {
  id: string;
  spec: JobSpec;
  specHash: string;
  stage: string;
  errorCode?: string | undefined;
  errorMessage?: string | undefined;
  createdAtMs: number;
  updatedAtMs: number;
  finishedAtMs?: number | undefined;
  queueKey: string;
  source?: SourceInfo | undefined;
  plan?: JobPlan | undefined;
  uploaderId?: string | undefined;
  result?: JobResult | undefined;
  history: StatusChange[];
  timings: Record<string, number>;
}

/** Waiting for a slot, or being probed and planned (a PREPARING job a new leader resumes may have its plan already). */
export interface WaitingJob extends JobFields {
  state: 'QUEUED' | 'PREPARING';
}

/** Split and transcoding, or being merged: its plan, its source's facts and its uploader are fixed. */
export interface InFlightJob extends JobFields {
  state: 'RUNNING' | 'FINALIZING';
  plan: JobPlan;
  source: SourceInfo;
  uploaderId: string;
}

/** Done: the archive is in S3. */
export interface SucceededJob extends JobFields {
  state: 'SUCCEEDED';
  plan: JobPlan;
  result: JobResult;
  finishedAtMs: number;
}

/** Failed or cancelled, at whatever point it had reached. */
export interface EndedJob extends JobFields {
  state: 'FAILED' | 'CANCELLED';
  finishedAtMs: number;
}

/** `jobs/<id>`: the job record, one shape per state (asJobRecord checks a record against its state). */
export type JobRecord = WaitingJob | InFlightJob | SucceededJob | EndedJob;

/** True for a job past splitting (RUNNING, FINALIZING): its plan, source and uploader are there. */
export function isInFlight(rec: JobRecord): rec is InFlightJob {
  return rec.state === 'RUNNING' || rec.state === 'FINALIZING';
}

/** `rec` as a job past splitting, or INTERNAL: for code that has just moved it there. */
export function inFlight(rec: JobRecord): InFlightJob {
  if (!isInFlight(rec)) throw new AppError('INTERNAL', `job ${rec.id} is ${rec.state}, not past splitting`);
  return rec;
}

/** A job record being built: any state with any fields, until asJobRecord checks it. */
export type JobRecordDraft = JobFields & { state: JobStateName };

/**
 * The record `d` as its state requires it (a RUNNING or FINALIZING job has its plan, source and
 * uploader; a SUCCEEDED one its plan and result; a finished one its end time), or the reason it
 * is not one: written by this code, so a miss is a bug (INTERNAL), never written to etcd.
 */
export function jobRecordProblem(d: JobRecordDraft): string | undefined {
  switch (d.state) {
    case 'QUEUED':
    case 'PREPARING':
      return undefined;
    case 'RUNNING':
    case 'FINALIZING':
      return d.plan && d.source && d.uploaderId ? undefined : `a ${d.state} job has its plan, source and uploader`;
    case 'SUCCEEDED':
      return d.plan && d.result && d.finishedAtMs !== undefined ? undefined : 'a SUCCEEDED job has its plan, result and end time';
    case 'FAILED':
    case 'CANCELLED':
      return d.finishedAtMs !== undefined ? undefined : `a ${d.state} job has its end time`;
  }
}

/** `d` checked against its state (jobRecordProblem): the record, or INTERNAL naming what it lacks. */
export function asJobRecord(d: JobRecordDraft): JobRecord {
  const problem = jobRecordProblem(d);
  if (problem) throw new AppError('INTERNAL', `job ${d.id} record refused: ${problem}`);
  return d as JobRecord;
}

/** `jobs/<id>/segments/<n>`: one segment's assignment and state. */
export interface SegmentRecord {
  index: number;
  state: SegmentStateName;
  nodeId: string;
  attempt: number;
  startSec: number;
  endSec: number;
  frames: number;
}

/** `jobs/<id>/progress`: throttled progress, written by the leader. */
export interface ProgressRecord {
  progress: number;
  segments: Record<string, { framesDone: number; subSegments: number; subSegmentsDone: number }>;
  /** Remaining seconds, median and pessimistic (ProgressTracker's estimate); absent while unknown. */
  etaP50Sec?: number;
  etaP90Sec?: number;
}

/** Stable hash of a spec, ignoring the idempotency key, for "same key, different spec" detection. */
export function specHash(spec: JobSpec): string {
  const { idempotencyKey: _ignored, ...rest } = spec;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex');
}

export function toProtoJobState(s: JobStateName): JobState {
  return JobState[`JOB_STATE_${s}` as keyof typeof JobState];
}

export function fromProtoJobState(s: JobState): JobStateName | undefined {
  const name = String(s).replace(/^JOB_STATE_/, '');
  return name === 'UNSPECIFIED' ? undefined : (name as JobStateName);
}

function toProtoSegmentState(s: SegmentStateName): SegmentState {
  return SegmentState[`SEGMENT_STATE_${s}` as keyof typeof SegmentState];
}

/** Assembles the client's view of a job from its etcd keys. */
export function toProtoJob(rec: JobRecord, segments: SegmentRecord[], checkpoints: Map<number, CheckpointRecord>, progress: ProgressRecord | undefined): Job {
  const pct = rec.state === 'SUCCEEDED' ? 100 : Math.min(100, progress?.progress ?? 0);
  return {
    id: rec.id,
    state: toProtoJobState(rec.state),
    spec: rec.spec,
    progress: Math.round(pct * 100) / 100,
    stage: rec.stage,
    errorCode: rec.errorCode ?? '',
    errorMessage: rec.errorMessage ?? '',
    createdAtMs: rec.createdAtMs,
    updatedAtMs: rec.updatedAtMs,
    finishedAtMs: rec.finishedAtMs ?? 0,
    source: rec.source,
    segments: segments
      .sort((a, b) => a.index - b.index)
      .map((s) => {
        const cp = checkpoints.get(s.index);
        const p = progress?.segments[String(s.index)];
        return {
          index: s.index,
          nodeId: s.nodeId,
          attempt: s.attempt,
          // A job that ended without succeeding stopped its unfinished segments.
          state: (rec.state === 'CANCELLED' || rec.state === 'FAILED') && s.state !== 'DONE' && s.state !== 'FAILED' ? SegmentState.SEGMENT_STATE_CANCELLED : toProtoSegmentState(s.state),
          startSec: s.startSec,
          endSec: s.endSec,
          frames: s.frames,
          framesDone: s.state === 'DONE' ? s.frames : Math.min(s.frames, p?.framesDone ?? 0),
          subSegments: cp ? cp.boundaries.length - 1 : (p?.subSegments ?? 0),
          subSegmentsDone: cp ? cp.done.length : (p?.subSegmentsDone ?? 0),
        };
      }),
    result: rec.result,
    history: rec.history,
    etaP50Sec: TERMINAL.has(rec.state) ? 0 : (progress?.etaP50Sec ?? 0),
    etaP90Sec: TERMINAL.has(rec.state) ? 0 : (progress?.etaP90Sec ?? 0),
  };
}

/**
 * `history/<id>`: what is kept of a finished job once its working tree (segments, checkpoints,
 * progress, plan, upload state) is deleted. About 1 KB: enough for GetJob, ListJobs and
 * `tessera job <id>` to answer with the state, the result and the error.
 */
export interface HistoryRecord {
  id: string;
  state: JobStateName;
  /** The spec as submitted, minus secrets: the input URI without query or credentials, no webhook URL. */
  spec: JobSpec;
  specHash: string;
  errorCode?: string | undefined;
  errorMessage?: string | undefined;
  createdAtMs: number;
  updatedAtMs: number;
  finishedAtMs: number;
  source?: SourceInfo | undefined;
  /** The archive in S3 with each rendition's frames, duration, size and checksum. */
  result?: JobResult | undefined;
  /** The job's own state changes (segment entries are dropped). */
  history: StatusChange[];
  archivedAtMs: number;
}

/** The input as a user would recognise it, without a presigned query or credentials. */
export function inputName(uri: string): string {
  try {
    const u = new URL(uri);
    if (u.protocol === 'http:' || u.protocol === 'https:' || u.protocol === 's3:') return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    // a local path
  }
  return uri;
}

/** The compact record of a finished job. */
export function toHistoryRecord(rec: JobRecord, nowMs: number): HistoryRecord {
  return {
    id: rec.id,
    state: rec.state,
    spec: { ...rec.spec, inputUri: inputName(rec.spec.inputUri), webhookUrl: '' },
    specHash: rec.specHash,
    errorCode: rec.errorCode,
    errorMessage: rec.errorMessage,
    createdAtMs: rec.createdAtMs,
    updatedAtMs: rec.updatedAtMs,
    finishedAtMs: rec.finishedAtMs ?? rec.updatedAtMs,
    source: rec.source,
    result: rec.result,
    history: rec.history.filter((h) => h.scope === 'job').slice(-20),
    archivedAtMs: nowMs,
  };
}

/** The client's view of an archived job: state, result and error; no segments any more. */
export function historyToProtoJob(h: HistoryRecord): Job {
  return {
    id: h.id,
    state: toProtoJobState(h.state),
    spec: h.spec,
    progress: h.state === 'SUCCEEDED' ? 100 : 0,
    stage: h.state === 'SUCCEEDED' ? 'done' : h.state === 'FAILED' ? 'failed' : 'cancelled',
    errorCode: h.errorCode ?? '',
    errorMessage: h.errorMessage ?? '',
    createdAtMs: h.createdAtMs,
    updatedAtMs: h.updatedAtMs,
    finishedAtMs: h.finishedAtMs,
    source: h.source,
    segments: [],
    result: h.result,
    history: h.history,
    etaP50Sec: 0,
    etaP90Sec: 0,
  };
}
