import type { Etcd3 } from 'etcd3';
import { prefixEnd, rangePages } from '../../common/etcd.js';
import { leaderFenceCompare, type LeaderFence } from '../../common/etcd-tx/compare.js';
import { fencedPut } from '../../common/etcd-tx/fenced-put.js';
import { AppError } from '../../common/errors.js';
import type { Keys } from '../../common/keys.js';
import type { CheckpointRecord, SegmentOwner } from '../../common/records.js';
import type { Job } from '../../proto/gen/tessera/v1/types.js';
import { historyToProtoJob, TERMINAL, toProtoJob, type HistoryRecord, type JobRecord, type JobRecordDraft, type JobStateName, type ProgressRecord, type SegmentRecord } from './job-model.js';
import { checkpointSchema, parseRecord, segmentOwnerSchema } from '../../common/record-schemas.js';
import { historyRecordSchema, jobRecordSchema, progressRecordSchema, resumeFactsSchema, segmentRecordSchema } from './job-schemas.js';
import { archiveJob } from './transactions/archive-job.js';
import { claimJob } from './transactions/claim-job.js';
import { createJob } from './transactions/create-job.js';
import { dropHistoryRecord } from './transactions/drop-history.js';
import { indexJobState } from './transactions/index-job-state.js';
import { stageName, whileActive, type ActiveJobChange } from './transactions/job-writes.js';
import { reopenSubSegments } from './transactions/reopen-sub-segments.js';
import { commitSegmentWrites, type SegmentWrite } from './transactions/segment-writes.js';
import { updateJob } from './transactions/update-job.js';

export type { LeaderFence };
export { stageName };

/** Every job state, in the order status reports them. */
export const JOB_STATES: readonly JobStateName[] = ['QUEUED', 'PREPARING', 'RUNNING', 'FINALIZING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];
const IN_FLIGHT: readonly JobStateName[] = ['PREPARING', 'RUNNING', 'FINALIZING'];

/** One page of a job listing, newest first; `next` continues after its last job. */
export interface JobPage {
  ids: string[];
  next: string | undefined;
}

interface PendingSegmentWrite extends SegmentWrite {
  fence: LeaderFence | undefined;
  resolve: (revision: string) => void;
  reject: (err: unknown) => void;
}

/** How a job transaction can fail (each function adds the ones that apply to it). */
type JobTxFailure = { ok: false; reason: 'missing' | 'fenced' | 'contention' } | { ok: false; reason: 'finished'; state: JobStateName };

function sameFence(a: LeaderFence | undefined, b: LeaderFence | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.key === b.key && a.createRevision === b.createRevision);
}

const SEGMENT_KEY = /\/segments\/(\d+)$/;
const CHECKPOINT_KEY = /\/segments\/(\d+)\/checkpoint$/;

/** Job records, segments, progress and the queue in etcd. */
export class JobStore {
  /** Transactions refused because the leader fence no longer held. */
  fencingRejections = 0;
  /** Called after a transaction of this store moved a job into a final state (journal, metrics). */
  onFinished: ((rec: JobRecord) => void) | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly historyLimit: number,
  ) {}

  /**
   * Writes a new job (record + queue entry, + idempotency key when given) in one transaction.
   * With an idempotency key already used: the same spec returns the existing job; another spec
   * is refused with IDEMPOTENCY_CONFLICT. An id that exists already is not overwritten
   * (`created: false`).
   */
  async create(rec: JobRecord, idempotencyKey: string | undefined): Promise<{ job: Pick<JobRecord, 'id'>; created: boolean }> {
    const out = await createJob(this.etcd, this.keys, rec, idempotencyKey);
    if (out.ok) return { job: { id: out.jobId }, created: out.created };
    switch (out.reason) {
      case 'exists':
        return { job: { id: out.jobId }, created: false };
      case 'conflict':
        throw new AppError('IDEMPOTENCY_CONFLICT', `idempotency key "${idempotencyKey}" was already used for job ${out.jobId} with a different spec`);
      case 'contention':
        throw new AppError('UNAVAILABLE', 'could not settle the idempotency key; retry');
    }
  }

  async get(jobId: string): Promise<JobRecord | undefined> {
    const raw = await this.etcd.get(this.keys.job(jobId)).string();
    return raw === null ? undefined : parseRecord(jobRecordSchema, raw, this.keys.job(jobId));
  }

  /** The record, segments, checkpoints and progress of one job. */
  async tree(jobId: string): Promise<{ rec: JobRecord; segments: SegmentRecord[]; checkpoints: Map<number, CheckpointRecord>; progress: ProgressRecord | undefined } | undefined> {
    const rec = await this.get(jobId);
    if (!rec) return undefined;
    const sub: [string, string][] = [];
    const treePrefix = this.keys.jobTree(jobId);
    for await (const page of rangePages(this.etcd, { start: treePrefix, end: prefixEnd(treePrefix) })) for (const kv of page) sub.push([kv.key, kv.value]);
    const segments: SegmentRecord[] = [];
    const checkpoints = new Map<number, CheckpointRecord>();
    let progress: ProgressRecord | undefined;
    for (const [k, v] of sub) {
      let m: RegExpExecArray | null;
      if ((m = SEGMENT_KEY.exec(k))) segments.push(parseRecord(segmentRecordSchema, v, k));
      else if ((m = CHECKPOINT_KEY.exec(k))) checkpoints.set(Number(m[1]), parseRecord(checkpointSchema, v, k));
      else if (k === this.keys.jobProgress(jobId)) progress = parseRecord(progressRecordSchema, v, k);
    }
    return { rec, segments, checkpoints, progress };
  }

  /** The client's view of a job: from its working tree, or from history once archived. */
  async view(jobId: string): Promise<Job> {
    const t = await this.tree(jobId);
    if (t) return toProtoJob(t.rec, t.segments, t.checkpoints, t.progress);
    const h = await this.getHistory(jobId);
    if (h) return historyToProtoJob(h);
    throw new AppError('JOB_NOT_FOUND', `no job with id ${jobId}`);
  }

  async getHistory(jobId: string): Promise<HistoryRecord | undefined> {
    const raw = await this.etcd.get(this.keys.historyEntry(jobId)).string();
    return raw === null ? undefined : parseRecord(historyRecordSchema, raw, this.keys.historyEntry(jobId));
  }

  /**
   * One page of job ids, newest first (ids sort by submission time), from the state index: one
   * keys-only range of at most `pageSize + 1` keys per state asked for, whatever etcd holds.
   * `before` is the last id of the previous page.
   */
  async listPage(pageSize: number, states: readonly JobStateName[] = JOB_STATES, before?: string): Promise<JobPage> {
    // One transaction of one keys-only range per state: a single round trip to etcd.
    const res = await this.etcd.kv.txn({
      compare: [],
      success: states.map((st) => {
        const prefix = this.keys.jobState(st);
        return {
          request_range: {
            key: Buffer.from(prefix),
            range_end: Buffer.from(before ? prefix + before : prefixEnd(prefix)),
            limit: pageSize + 1,
            sort_target: 'Key',
            sort_order: 'Descend',
            keys_only: true,
          },
        };
      }),
    });
    const per = states.map((st, i) => (res.responses[i]?.response_range.kvs ?? []).map((kv) => kv.key.toString().slice(this.keys.jobState(st).length)));
    const ids = [...new Set(per.flat())].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
    if (ids.length <= pageSize) return { ids, next: undefined };
    const page = ids.slice(0, pageSize);
    return { ids: page, next: page[page.length - 1] };
  }

  /**
   * The listing view of jobs, in the order given: state, progress, stage, spec, result, error
   * and trail, without segments (GetJob has them). Jobs are read in one transaction per 40 (a
   * record, its history record and its progress each: 120 reads, under etcd's 128 operations
   * per transaction), not one round trip per key; a job gone meanwhile is left out.
   */
  async summaries(ids: readonly string[]): Promise<Job[]> {
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += 40) chunks.push(ids.slice(i, i + 40));
    const read = async (chunk: string[]): Promise<(Job | undefined)[]> => {
      const res = await this.etcd.kv.txn({
        compare: [],
        success: chunk.flatMap((id) => [this.keys.job(id), this.keys.historyEntry(id), this.keys.jobProgress(id)].map((k) => ({ request_range: { key: Buffer.from(k) } }))),
      });
      return chunk.map((_, i) => {
        const value = (n: number): string | undefined => res.responses[i * 3 + n]?.response_range.kvs[0]?.value.toString();
        const rec = value(0);
        if (rec !== undefined) {
          const progress = value(2);
          return toProtoJob(
            parseRecord(jobRecordSchema, rec, this.keys.job(chunk[i]!)),
            [],
            new Map(),
            progress === undefined ? undefined : parseRecord(progressRecordSchema, progress, this.keys.jobProgress(chunk[i]!)),
          );
        }
        const h = value(1);
        return h === undefined ? undefined : historyToProtoJob(parseRecord(historyRecordSchema, h, this.keys.historyEntry(chunk[i]!)));
      });
    };
    const out = (await Promise.all(chunks.map(read))).flat();
    return out.filter((j): j is Job => j !== undefined);
  }

  /**
   * Indexes job records written before the state index existed (a cluster upgraded with jobs in
   * etcd): their state entry, and the archive queue entry of finished ones. Runs once per
   * cluster (a marker key records it), reading `jobs/` in bounded keys-only pages and each
   * record once (again if it changed in between).
   */
  async ensureStateIndex(): Promise<number> {
    if ((await this.etcd.get(this.keys.jobStateIndexed()).string()) !== null) return 0;
    let indexed = 0;
    const prefix = this.keys.jobs();
    for await (const page of rangePages(this.etcd, { start: prefix, end: prefixEnd(prefix) }, { keysOnly: true, pageSize: 1_000 })) {
      const ids = page.map((kv) => kv.key.slice(prefix.length)).filter((rest) => rest.length > 0 && !rest.includes('/'));
      await Promise.all(
        ids.map(async (id) => {
          if ((await indexJobState(this.etcd, this.keys, id)) === 'indexed') indexed++;
        }),
      );
    }
    await this.etcd.put(this.keys.jobStateIndexed()).value(JSON.stringify({ atMs: Date.now(), indexed }));
    return indexed;
  }

  /** Jobs per state, counted by etcd (count-only ranges on the state index, one transaction): no record is read. */
  async countByState(): Promise<Map<JobStateName, number>> {
    const res = await this.etcd.kv.txn({
      compare: [],
      success: JOB_STATES.map((st) => ({ request_range: { key: Buffer.from(this.keys.jobState(st)), range_end: Buffer.from(prefixEnd(this.keys.jobState(st))), count_only: true } })),
    });
    return new Map(JOB_STATES.map((st, i) => [st, Number(res.responses[i]?.response_range.count ?? 0)]));
  }

  /** Ids of jobs a leader must drive (PREPARING, RUNNING, FINALIZING), page by page. */
  async *inFlightIds(): AsyncGenerator<string[]> {
    for (const st of IN_FLIGHT) {
      const prefix = this.keys.jobState(st);
      for await (const page of rangePages(this.etcd, { start: prefix, end: prefixEnd(prefix) }, { keysOnly: true })) {
        yield page.map((kv) => kv.key.slice(prefix.length));
      }
    }
  }

  /**
   * Compare-and-swap on a job record, optionally fenced on the leader, with extra puts in the
   * same transaction. `mutate` returns undefined for "no change". Returns the record as written.
   */
  async update(
    jobId: string,
    mutate: (rec: JobRecord) => JobRecordDraft | undefined,
    opts: { fence?: LeaderFence | undefined; extraPuts?: [string, string][] } = {},
  ): Promise<{ rec: JobRecord; revision: string; changed: boolean }> {
    const out = this.settle(jobId, await updateJob(this.etcd, this.keys, jobId, mutate, opts));
    if (out.changed && TERMINAL.has(out.rec.state) && !TERMINAL.has(out.previous.state)) this.onFinished?.(out.rec);
    return { rec: out.rec, revision: out.revision, changed: out.changed };
  }

  /** The one place a failed job transaction becomes an error (and a refused fence a count). */
  private settle<T extends { ok: true }>(jobId: string, out: T | JobTxFailure): T {
    if (out.ok) return out;
    switch (out.reason) {
      case 'missing':
        throw new AppError('JOB_NOT_FOUND', `no job with id ${jobId}`);
      case 'fenced':
        throw this.notLeader();
      case 'contention':
        throw new AppError('UNAVAILABLE', `too much contention on job ${jobId}`);
      case 'finished':
        throw new AppError('CANCELLED', `job ${jobId} is ${out.state}`);
    }
  }

  private notLeader(): AppError {
    this.fencingRejections++;
    return new AppError('NOT_LEADER', 'this coordinator is no longer the leader', { retryable: false });
  }

  /** Moves a job to a new state with a trail entry; refuses to leave a terminal state. */
  async transition(jobId: string, to: JobStateName, reason: string, patch: Partial<JobRecordDraft> = {}, fence?: LeaderFence): Promise<JobRecord> {
    const res = await this.updateActive(
      jobId,
      (rec, now) => ({
        next: { ...rec, ...patch, state: to, stage: patch.stage ?? stageName(to), ...(TERMINAL.has(to) ? { finishedAtMs: now } : {}) },
        trail: [{ atMs: now, scope: 'job', state: to, nodeId: '', attempt: 0, reason }],
      }),
      { fence },
    );
    if (!res.changed) throw new AppError('FAILED_PRECONDITION', `job ${jobId} is already ${res.rec.state}`);
    return res.rec;
  }

  /**
   * Changes a job in flight (whileActive: a finished job is left as it is and `changed` is false;
   * the change's trail entries are appended). Compare-and-swap, fenced like `update`.
   */
  updateActive(
    jobId: string,
    change: ActiveJobChange,
    opts: { fence?: LeaderFence | undefined; extraPuts?: [string, string][] } = {},
  ): Promise<{ rec: JobRecord; revision: string; changed: boolean }> {
    return this.update(jobId, whileActive(change, this.historyLimit), opts);
  }

  /** The stage line of a job in flight (what it waits for), fenced on the leader; a finished job is left as it is. */
  async setStage(jobId: string, stage: string, fence?: LeaderFence): Promise<void> {
    await this.updateActive(jobId, (rec) => (rec.stage === stage ? undefined : { next: { ...rec, stage } }), { fence });
  }

  /**
   * Records a segment's new state (and its trail entry in the job) in one transaction, fenced on
   * the leader, and resolves with that transaction's revision (for an assignment: the owner key's
   * mod revision, the agent's fencing token).
   *
   * Group commit: the segments of one job all append to the job record, so concurrent writes
   * would only fail each other's compare-and-swap. While one write for a job is in flight, the
   * next ones queue and then go together in one transaction (each segment's record and owner key,
   * every trail entry, one job-record write). Each caller still gets its write durable before it
   * resolves, with the same fencing and the same errors as a write of its own.
   */
  putSegment(jobId: string, seg: SegmentRecord, reason: string, fence?: LeaderFence, ownerPut?: SegmentOwner): Promise<string> {
    return new Promise((resolve, reject) => {
      let q = this.segmentQueues.get(jobId);
      if (!q) {
        q = { waiting: [], busy: false };
        this.segmentQueues.set(jobId, q);
      }
      q.waiting.push({ seg, reason, fence, ownerPut, resolve, reject });
      if (!q.busy) void this.drainSegmentQueue(jobId, q);
    });
  }

  private readonly segmentQueues = new Map<string, { waiting: PendingSegmentWrite[]; busy: boolean }>();

  private async drainSegmentQueue(jobId: string, q: { waiting: PendingSegmentWrite[]; busy: boolean }): Promise<void> {
    q.busy = true;
    try {
      while (q.waiting.length > 0) {
        // One transaction takes writes with the same fence and distinct segments (etcd refuses a
        // key twice in one transaction); the rest wait for the next round.
        const first = q.waiting[0]!;
        const seen = new Set<number>();
        const batch: PendingSegmentWrite[] = [];
        while (q.waiting.length > 0) {
          const w = q.waiting[0]!;
          if (seen.has(w.seg.index) || !sameFence(w.fence, first.fence)) break;
          seen.add(w.seg.index);
          batch.push(q.waiting.shift()!);
        }
        try {
          const revision = await this.writeSegments(jobId, batch, first.fence);
          for (const w of batch) w.resolve(revision);
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      q.busy = false;
      if (q.waiting.length === 0 && this.segmentQueues.get(jobId) === q) this.segmentQueues.delete(jobId);
    }
  }

  private async writeSegments(jobId: string, batch: PendingSegmentWrite[], fence: LeaderFence | undefined): Promise<string> {
    return this.settle(jobId, await commitSegmentWrites(this.etcd, this.keys, jobId, batch, fence, this.historyLimit)).revision;
  }

  /**
   * Parts the uploader lost: their sub-segments are no longer done. In one transaction, fenced on
   * the leader and compared on every checkpoint it rewrites: those sub-segments leave their
   * checkpoints, their segments go back to PENDING (a dispatch then transcodes only what is not
   * done, under a new attempt whose owner key fences off any older one), and the job goes back
   * from FINALIZING to RUNNING with `uploaderId` (the uploader that reported the loss) and a trail
   * entry per segment. Returns the sub-segments invalidated.
   */
  async reopenSubSegments(jobId: string, lost: ReadonlyMap<number, readonly number[]>, uploaderId: string, reason: string, fence: LeaderFence): Promise<number> {
    return this.settle(jobId, await reopenSubSegments(this.etcd, this.keys, jobId, lost, uploaderId, reason, fence, this.historyLimit)).invalidated;
  }

  /** The key schema (for callers that add puts to a transaction). */
  keysFor(): Keys {
    return this.keys;
  }

  async checkpoints(jobId: string): Promise<Map<number, CheckpointRecord>> {
    return (await this.tree(jobId))?.checkpoints ?? new Map();
  }

  async setProgress(jobId: string, p: ProgressRecord): Promise<void> {
    await this.etcd.put(this.keys.jobProgress(jobId)).value(JSON.stringify(p));
  }

  async getProgress(jobId: string): Promise<ProgressRecord | undefined> {
    const raw = await this.etcd.get(this.keys.jobProgress(jobId)).string();
    return raw ? parseRecord(progressRecordSchema, raw, this.keys.jobProgress(jobId)) : undefined;
  }

  /** Queue entries in run order (priority, then submission order). */
  async queued(limit: number): Promise<{ key: string; jobId: string }[]> {
    const all = await this.etcd.getAll().prefix(this.keys.queue()).sort('Key', 'Ascend').limit(limit).strings();
    return Object.entries(all)
      .map(([key, jobId]) => ({ key, jobId }))
      .sort((a, b) => (a.key < b.key ? -1 : 1));
  }

  async queueDepth(): Promise<number> {
    return this.etcd.getAll().prefix(this.keys.queue()).count();
  }

  /** Takes a job off the queue and marks it PREPARING, atomically, as the leader. */
  async claim(queueKey: string, jobId: string, fence: LeaderFence): Promise<JobRecord | undefined> {
    const out = await claimJob(this.etcd, this.keys, queueKey, jobId, fence, this.historyLimit);
    if (out.ok) return out.rec;
    if (out.reason === 'fenced') this.fencingRejections++;
    return undefined;
  }

  /**
   * Finished jobs whose tree is still under `jobs/` and that finished before `finishedBeforeMs`,
   * oldest first, at most `limit` (one bounded range).
   */
  async finishedDue(finishedBeforeMs: number, limit: number): Promise<{ key: string; jobId: string }[]> {
    const res = await this.etcd.kv.range({
      key: Buffer.from(this.keys.finished()),
      range_end: Buffer.from(this.keys.finishedEntry(finishedBeforeMs, '')),
      limit,
      sort_target: 'Key',
      sort_order: 'Ascend',
    });
    return res.kvs.map((kv) => ({ key: kv.key.toString(), jobId: kv.value.toString() }));
  }

  /**
   * Moves a finished job to history in one transaction: the compact record is written and the
   * working tree (record, segments, owners, checkpoints, progress, plan) and the
   * uploader's record of its multipart upload are deleted. The state index entry stays (it now
   * points at history) and so does the idempotency key (a retried submit still finds the job);
   * both go when retention drops the history record. The archive in S3 is not touched.
   */
  archive(finishedKey: string, jobId: string, nowMs = Date.now()): Promise<'archived' | 'gone' | 'busy'> {
    return archiveJob(this.etcd, this.keys, finishedKey, jobId, nowMs);
  }

  /**
   * Drops history past retention, oldest submitted first: records beyond `maxJobs` (0: no
   * count limit) and records of jobs that finished more than `maxAgeMs` ago (0: no age limit),
   * at most `limit` per call, each with its state index entry and idempotency key. History is
   * ordered by submission, so the age pass stops at the first record still young: a job that
   * ran for long may hold back younger records by its own run time, no more.
   */
  async dropExpiredHistory(o: { maxJobs: number; maxAgeMs: number; limit: number; nowMs?: number }): Promise<number> {
    const now = o.nowMs ?? Date.now();
    let excess = o.maxJobs > 0 ? Math.max(0, (await this.etcd.getAll().prefix(this.keys.history()).count()) - o.maxJobs) : 0;
    let dropped = 0;
    const prefix = this.keys.history();
    scan: for await (const page of rangePages(this.etcd, { start: prefix, end: prefixEnd(prefix) }, { pageSize: Math.min(o.limit, 500) })) {
      for (const kv of page) {
        if (dropped >= o.limit) break scan;
        let h: HistoryRecord;
        try {
          h = parseRecord(historyRecordSchema, kv.value, kv.key);
        } catch {
          continue; // not ours (or unreadable: the sweep skips it rather than stop)
        }
        const expired = o.maxAgeMs > 0 && h.finishedAtMs < now - o.maxAgeMs;
        if (excess <= 0 && !expired) break scan;
        if (!(await dropHistoryRecord(this.etcd, this.keys, h, kv.key))) continue;
        excess--;
        dropped++;
      }
    }
    return dropped;
  }

  /** Cancels a job from any coordinator: terminal at once; the leader's runner sees it and stops. */
  async cancel(jobId: string, reason: string): Promise<JobRecord> {
    const res = await this.updateActive(jobId, (rec, now) => ({
      next: { ...rec, state: 'CANCELLED', stage: stageName('CANCELLED'), finishedAtMs: now, errorCode: 'CANCELLED', errorMessage: reason },
      trail: [{ atMs: now, scope: 'job', state: 'CANCELLED', nodeId: '', attempt: 0, reason }],
    }));
    if (res.changed) await this.etcd.delete().key(res.rec.queueKey);
    return res.rec;
  }

  /** The owner keys of a job's segments `indexes`, with their mod revisions (each attempt's fencing token). */
  async segmentOwners(jobId: string, indexes: readonly number[]): Promise<Map<number, SegmentOwner & { revision: number }>> {
    const out = new Map<number, SegmentOwner & { revision: number }>();
    await Promise.all(
      indexes.map(async (n) => {
        const kv = (await this.etcd.get(this.keys.segmentOwner(jobId, n)).exec()).kvs[0];
        if (kv) out.set(n, { ...parseRecord(segmentOwnerSchema, kv.value, kv.key.toString()), revision: Number(kv.mod_revision) });
      }),
    );
    return out;
  }

  /** What a new leader needs to resume a job past splitting without its input (`jobs/<id>/plan`). */
  async getResumeFacts(jobId: string): Promise<ResumeFacts | undefined> {
    const raw = await this.etcd.get(this.keys.jobPlan(jobId)).string();
    return raw ? parseRecord(resumeFactsSchema, raw, `resume facts of ${jobId}`) : undefined;
  }

  /** Writes the resume facts, fenced on the leader. */
  async putResumeFacts(jobId: string, facts: ResumeFacts, fence: LeaderFence): Promise<void> {
    const out = await fencedPut(this.etcd, leaderFenceCompare(fence), this.keys.jobPlan(jobId), JSON.stringify(facts));
    if (!out.ok) throw this.notLeader();
  }
}

/**
 * `jobs/<id>/plan`: the facts of the cut that finalize and dispatch need besides the job record,
 * written with the split. With them a new leader resumes a job past splitting without fetching,
 * probing or cutting its input again (it does that only if a segment must be sent again).
 */
export interface ResumeFacts {
  /** The source's keyframe times (s from the first presented frame): where parts join. */
  keyTimes: number[];
  /** Packets in each segment's file (what its node cuts and counts). */
  fileFrames: number[];
  /** Decoded frames segment 0 drops (an edit list's lead-in) when its cut does not say. */
  leadIn: number;
  /** Frames of the whole job (progress). */
  totalFrames: number;
  /** The uploader that holds every audio track of the job, once sent. */
  audioSentTo?: string;
  /** Tessera's own copy of the input (`s3://…`), once stored: read instead of the input's URL. */
  inputStash?: string;
}
