import type { Etcd3 } from 'etcd3';
import { prefixEnd, rangePages } from '../common/etcd.js';
import { AppError } from '../common/errors.js';
import type { Keys } from '../common/keys.js';
import type { CheckpointRecord, SegmentOwner } from '../common/records.js';
import type { Job, StatusChange } from '../proto/gen/tessera/v1/types.js';
import { historyToProtoJob, TERMINAL, toHistoryRecord, toProtoJob, type HistoryRecord, type JobRecord, type JobStateName, type ProgressRecord, type SegmentRecord } from './job-model.js';
import { outboxPut } from './webhooks.js';
import { checkpointSchema, parseRecord, segmentOwnerSchema } from '../common/record-schemas.js';
import { historyRecordSchema, jobRecordSchema, progressRecordSchema, resumeFactsSchema, segmentRecordSchema } from './job-schemas.js';

/** Every job state, in the order status reports them. */
export const JOB_STATES: readonly JobStateName[] = ['QUEUED', 'PREPARING', 'RUNNING', 'FINALIZING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];
const IN_FLIGHT: readonly JobStateName[] = ['PREPARING', 'RUNNING', 'FINALIZING'];

/** One page of a job listing, newest first; `next` continues after its last job. */
export interface JobPage {
  ids: string[];
  next: string | undefined;
}

/**
 * The leader's fencing token: the create revision of its election key. Writes made by the
 * leader's job runners compare it inside the same transaction, so a deposed leader cannot write.
 */
export interface LeaderFence {
  key: string;
  createRevision: string;
}

interface PendingSegmentWrite {
  seg: SegmentRecord;
  reason: string;
  fence: LeaderFence | undefined;
  ownerPut: SegmentOwner | undefined;
  resolve: (revision: string) => void;
  reject: (err: unknown) => void;
}

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
   * is refused with IDEMPOTENCY_CONFLICT.
   */
  async create(rec: JobRecord, idempotencyKey: string | undefined): Promise<{ job: Pick<JobRecord, 'id'>; created: boolean }> {
    const ops = [this.etcd.put(this.keys.job(rec.id)).value(JSON.stringify(rec)), this.etcd.put(rec.queueKey).value(rec.id), this.etcd.put(this.keys.jobStateEntry(rec.state, rec.id)).value('')];
    if (!idempotencyKey) {
      await this.etcd
        .if(this.keys.job(rec.id), 'Create', '==', 0)
        .then(...ops)
        .commit();
      return { job: rec, created: true };
    }
    const idemKey = this.keys.idempotency(idempotencyKey);
    for (let i = 0; i < 10; i++) {
      const res = await this.etcd
        .if(idemKey, 'Create', '==', 0)
        .then(this.etcd.put(idemKey).value(JSON.stringify({ jobId: rec.id, specHash: rec.specHash })), ...ops)
        .else(this.etcd.get(idemKey))
        .commit();
      if (res.succeeded) return { job: rec, created: true };
      const kv = res.responses[0]?.response_range?.kvs[0];
      if (!kv) continue; // deleted in between: try again
      const prior = JSON.parse(kv.value.toString()) as { jobId: string; specHash: string };
      if (prior.specHash !== rec.specHash) {
        throw new AppError('IDEMPOTENCY_CONFLICT', `idempotency key "${idempotencyKey}" was already used for job ${prior.jobId} with a different spec`);
      }
      if ((await this.get(prior.jobId)) ?? (await this.getHistory(prior.jobId))) return { job: { id: prior.jobId }, created: false };
      // The job it named is gone (past retention): the key is free again, unless it moved meanwhile.
      await this.etcd.if(idemKey, 'Mod', '==', kv.mod_revision).then(this.etcd.delete().key(idemKey)).commit();
    }
    throw new AppError('UNAVAILABLE', 'could not settle the idempotency key; retry');
  }

  async get(jobId: string): Promise<JobRecord | undefined> {
    const raw = await this.etcd.get(this.keys.job(jobId)).string();
    return raw === null ? undefined : parseRecord(jobRecordSchema, raw, this.keys.job(jobId));
  }

  private async getWithRevision(jobId: string): Promise<{ rec: JobRecord; rev: string } | undefined> {
    const res = await this.etcd.get(this.keys.job(jobId)).exec();
    const kv = res.kvs[0];
    return kv ? { rec: parseRecord(jobRecordSchema, kv.value, kv.key.toString()), rev: kv.mod_revision } : undefined;
  }

  /** The record, segments, checkpoints and progress of one job. */
  async tree(jobId: string): Promise<{ rec: JobRecord; segments: SegmentRecord[]; checkpoints: Map<number, CheckpointRecord>; progress: ProgressRecord | undefined } | undefined> {
    const rec = await this.get(jobId);
    if (!rec) return undefined;
    const sub: [string, string][] = [];
    const treePrefix = `${this.keys.job(jobId)}/`;
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
          for (let i = 0; i < 20; i++) {
            const cur = await this.getWithRevision(id);
            if (!cur) return;
            const entry = this.keys.jobStateEntry(cur.rec.state, id);
            if (await this.etcd.get(entry).exists()) return;
            const ops = [this.etcd.put(entry).value('')];
            if (TERMINAL.has(cur.rec.state)) ops.push(this.etcd.put(this.keys.finishedEntry(cur.rec.finishedAtMs ?? cur.rec.updatedAtMs, id)).value(id));
            // Only if the record is still what was read (else read it again).
            const res = await this.etcd
              .if(this.keys.job(id), 'Mod', '==', cur.rev)
              .then(...ops)
              .commit();
            if (res.succeeded) {
              indexed++;
              return;
            }
          }
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

  private history(rec: JobRecord, entries: StatusChange[]): StatusChange[] {
    const h = [...rec.history, ...entries];
    return h.length > this.historyLimit ? h.slice(h.length - this.historyLimit) : h;
  }

  /**
   * Compare-and-swap on a job record, optionally fenced on the leader, with extra puts in the
   * same transaction. `mutate` returns undefined for "no change". Returns the record as written.
   */
  async update(
    jobId: string,
    mutate: (rec: JobRecord) => JobRecord | undefined,
    opts: { fence?: LeaderFence | undefined; extraPuts?: [string, string][] } = {},
  ): Promise<{ rec: JobRecord; revision: string; changed: boolean }> {
    for (let i = 0; i < 50; i++) {
      const cur = await this.getWithRevision(jobId);
      if (!cur) throw new AppError('JOB_NOT_FOUND', `no job with id ${jobId}`);
      const next = mutate(cur.rec);
      if (!next) return { rec: cur.rec, revision: cur.rev, changed: false };
      next.updatedAtMs = Date.now();
      let cmp = this.etcd.if(this.keys.job(jobId), 'Mod', '==', cur.rev);
      if (opts.fence) cmp = cmp.and(opts.fence.key, 'Create', '==', opts.fence.createRevision);
      const puts = [this.etcd.put(this.keys.job(jobId)).value(JSON.stringify(next)), ...(opts.extraPuts ?? []).map(([k, v]) => this.etcd.put(k).value(v)), ...this.indexOps(cur.rec, next)];
      const res = await cmp.then(...puts).commit();
      if (res.succeeded) {
        if (TERMINAL.has(next.state) && !TERMINAL.has(cur.rec.state)) this.onFinished?.(next);
        return { rec: next, revision: res.header.revision, changed: true };
      }
      if (opts.fence) {
        const el = await this.etcd.get(opts.fence.key).exec();
        if (el.kvs[0]?.create_revision !== opts.fence.createRevision) {
          this.fencingRejections++;
          throw new AppError('NOT_LEADER', 'this coordinator is no longer the leader', { retryable: false });
        }
      }
    }
    throw new AppError('UNAVAILABLE', `too much contention on job ${jobId}`);
  }

  /**
   * The state index follows the record in the same transaction; a job that just finished joins
   * the queue of trees to archive; a state its webhook is told about gets its outbox entry.
   */
  private indexOps(prev: JobRecord, next: JobRecord): (ReturnType<Etcd3['put']> | ReturnType<Etcd3['delete']>)[] {
    if (prev.state === next.state) return [];
    const ops: (ReturnType<Etcd3['put']> | ReturnType<Etcd3['delete']>)[] = [
      this.etcd.delete().key(this.keys.jobStateEntry(prev.state, next.id)),
      this.etcd.put(this.keys.jobStateEntry(next.state, next.id)).value(''),
    ];
    if (TERMINAL.has(next.state) && !TERMINAL.has(prev.state)) {
      ops.push(this.etcd.put(this.keys.finishedEntry(next.finishedAtMs ?? next.updatedAtMs, next.id)).value(next.id));
    }
    // The webhook event this change owes, in the same transaction: written if and only if the
    // state is (the outbox), and delivered by whichever coordinator leads from then on.
    const event = outboxPut(this.keys, prev, next);
    if (event) ops.push(this.etcd.put(event[0]).value(event[1]));
    return ops;
  }

  /** Moves a job to a new state with a trail entry; refuses to leave a terminal state. */
  async transition(jobId: string, to: JobStateName, reason: string, patch: Partial<JobRecord> = {}, fence?: LeaderFence): Promise<JobRecord> {
    const res = await this.update(
      jobId,
      (rec) => {
        if (TERMINAL.has(rec.state)) return undefined;
        const now = Date.now();
        const next: JobRecord = { ...rec, ...patch, state: to, stage: patch.stage ?? stageName(to) };
        if (TERMINAL.has(to)) next.finishedAtMs = now;
        next.history = this.history(rec, [{ atMs: now, scope: 'job', state: to, nodeId: '', attempt: 0, reason }]);
        return next;
      },
      { fence },
    );
    if (!res.changed) throw new AppError('FAILED_PRECONDITION', `job ${jobId} is already ${res.rec.state}`);
    return res.rec;
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
    const extraPuts: [string, string][] = [];
    for (const w of batch) {
      extraPuts.push([this.keys.segment(jobId, w.seg.index), JSON.stringify(w.seg)]);
      if (w.ownerPut) extraPuts.push([this.keys.segmentOwner(jobId, w.seg.index), JSON.stringify(w.ownerPut)]);
    }
    const res = await this.update(
      jobId,
      (rec) => {
        if (TERMINAL.has(rec.state)) return undefined;
        const now = Date.now();
        return {
          ...rec,
          history: this.history(
            rec,
            batch.map((w) => ({ atMs: now, scope: `segment/${w.seg.index}`, state: w.seg.state, nodeId: w.seg.nodeId, attempt: w.seg.attempt, reason: w.reason })),
          ),
        };
      },
      { fence, extraPuts },
    );
    if (!res.changed) throw new AppError('CANCELLED', `job ${jobId} is ${res.rec.state}`);
    return res.revision;
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
    for (let i = 0; i < 20; i++) {
      const cur = await this.getWithRevision(jobId);
      if (!cur) throw new AppError('JOB_NOT_FOUND', `no job with id ${jobId}`);
      if (TERMINAL.has(cur.rec.state)) throw new AppError('CANCELLED', `job ${jobId} is ${cur.rec.state}`);
      let cmp = this.etcd.if(this.keys.job(jobId), 'Mod', '==', cur.rev).and(fence.key, 'Create', '==', fence.createRevision);
      const puts: [string, string][] = [];
      const trail: StatusChange[] = [];
      let invalidated = 0;
      const now = Date.now();
      for (const [index, subs] of lost) {
        const [segKv, cpKv] = await Promise.all([this.etcd.get(this.keys.segment(jobId, index)).exec(), this.etcd.get(this.keys.checkpoint(jobId, index)).exec()]);
        const seg = segKv.kvs[0] ? parseRecord(segmentRecordSchema, segKv.kvs[0].value, segKv.kvs[0].key.toString()) : undefined;
        const cp = cpKv.kvs[0] ? parseRecord(checkpointSchema, cpKv.kvs[0].value, cpKv.kvs[0].key.toString()) : undefined;
        if (!seg || !cp) continue;
        const done = cp.done.filter((d) => !subs.includes(d.sub));
        invalidated += cp.done.length - done.length;
        cmp = cmp.and(this.keys.checkpoint(jobId, index), 'Mod', '==', cpKv.kvs[0]!.mod_revision);
        puts.push([this.keys.checkpoint(jobId, index), JSON.stringify({ ...cp, done } satisfies CheckpointRecord)]);
        puts.push([this.keys.segment(jobId, index), JSON.stringify({ ...seg, state: 'PENDING' } satisfies SegmentRecord)]);
        trail.push({ atMs: now, scope: `segment/${index}`, state: 'PENDING', nodeId: seg.nodeId, attempt: seg.attempt, reason: `${reason}: sub-segment(s) ${subs.join(', ')} to transcode again` });
      }
      const next: JobRecord = {
        ...cur.rec,
        state: 'RUNNING',
        stage: 'transcoding lost parts again',
        uploaderId,
        updatedAtMs: now,
        history: this.history(cur.rec, [...trail, { atMs: now, scope: 'job', state: 'RUNNING', nodeId: '', attempt: 0, reason }]),
      };
      const res = await cmp.then(this.etcd.put(this.keys.job(jobId)).value(JSON.stringify(next)), ...puts.map(([k, v]) => this.etcd.put(k).value(v)), ...this.indexOps(cur.rec, next)).commit();
      if (res.succeeded) return invalidated;
      const el = await this.etcd.get(fence.key).exec();
      if (el.kvs[0]?.create_revision !== fence.createRevision) {
        this.fencingRejections++;
        throw new AppError('NOT_LEADER', 'this coordinator is no longer the leader', { retryable: false });
      }
    }
    throw new AppError('UNAVAILABLE', `too much contention on job ${jobId}`);
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
    for (let i = 0; i < 10; i++) {
      const cur = await this.getWithRevision(jobId);
      if (!cur || cur.rec.state !== 'QUEUED') {
        await this.etcd.delete().key(queueKey);
        return undefined;
      }
      const now = Date.now();
      const next: JobRecord = {
        ...cur.rec,
        state: 'PREPARING',
        stage: stageName('PREPARING'),
        updatedAtMs: now,
        history: this.history(cur.rec, [{ atMs: now, scope: 'job', state: 'PREPARING', nodeId: '', attempt: 0, reason: 'picked up by the scheduler' }]),
      };
      const res = await this.etcd
        .if(this.keys.job(jobId), 'Mod', '==', cur.rev)
        .and(fence.key, 'Create', '==', fence.createRevision)
        .then(this.etcd.put(this.keys.job(jobId)).value(JSON.stringify(next)), this.etcd.delete().key(queueKey), ...this.indexOps(cur.rec, next))
        .commit();
      if (res.succeeded) return next;
    }
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
  async archive(finishedKey: string, jobId: string, nowMs = Date.now()): Promise<'archived' | 'gone' | 'busy'> {
    const cur = await this.getWithRevision(jobId);
    if (!cur) {
      await this.etcd.delete().key(finishedKey);
      return 'gone';
    }
    if (!TERMINAL.has(cur.rec.state)) return 'busy';
    const tree = `${this.keys.job(jobId)}/`;
    const res = await this.etcd
      .if(this.keys.job(jobId), 'Mod', '==', cur.rev)
      .then(
        this.etcd.put(this.keys.historyEntry(jobId)).value(JSON.stringify(toHistoryRecord(cur.rec, nowMs))),
        this.etcd.delete().key(this.keys.job(jobId)),
        this.etcd.delete().prefix(tree),
        this.etcd.delete().key(this.keys.upload(jobId)),
        this.etcd.delete().key(finishedKey),
      )
      .commit();
    return res.succeeded ? 'archived' : 'busy';
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
        const res = await this.etcd
          .if(kv.key, 'Mod', '>', 0)
          .then(this.etcd.delete().key(kv.key), this.etcd.delete().key(this.keys.jobStateEntry(h.state, h.id)))
          .commit();
        if (!res.succeeded) continue;
        excess--;
        dropped++;
        if (h.spec.idempotencyKey) {
          const idem = this.keys.idempotency(h.spec.idempotencyKey);
          // Only if it still names this job (the exact value create() wrote).
          await this.etcd
            .if(idem, 'Value', '==', JSON.stringify({ jobId: h.id, specHash: h.specHash }))
            .then(this.etcd.delete().key(idem))
            .commit();
        }
      }
    }
    return dropped;
  }

  /** Cancels a job from any coordinator: terminal at once; the leader's runner sees it and stops. */
  async cancel(jobId: string, reason: string): Promise<JobRecord> {
    const res = await this.update(
      jobId,
      (rec) => {
        if (TERMINAL.has(rec.state)) return undefined;
        const now = Date.now();
        return {
          ...rec,
          state: 'CANCELLED',
          stage: stageName('CANCELLED'),
          finishedAtMs: now,
          errorCode: 'CANCELLED',
          errorMessage: reason,
          history: this.history(rec, [{ atMs: now, scope: 'job', state: 'CANCELLED', nodeId: '', attempt: 0, reason }]),
        };
      },
      { extraPuts: [] },
    );
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
    const res = await this.etcd
      .if(fence.key, 'Create', '==', fence.createRevision)
      .then(this.etcd.put(this.keys.jobPlan(jobId)).value(JSON.stringify(facts)))
      .commit();
    if (!res.succeeded) {
      this.fencingRejections++;
      throw new AppError('NOT_LEADER', 'this coordinator is no longer the leader', { retryable: false });
    }
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

export function stageName(s: JobStateName): string {
  switch (s) {
    case 'QUEUED':
      return 'waiting in the queue';
    case 'PREPARING':
      return 'probing and splitting the input';
    case 'RUNNING':
      return 'transcoding segments';
    case 'FINALIZING':
      return 'merging, zipping and uploading';
    case 'SUCCEEDED':
      return 'done';
    case 'FAILED':
      return 'failed';
    case 'CANCELLED':
      return 'cancelled';
  }
}
