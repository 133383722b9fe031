import { toPictureTreatment } from '../transcoder/treatment.js';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerReadableStream } from '@grpc/grpc-js';
import { chunksOf, DEFAULT_STREAM_PACE, drainThenThrow, fileChunks, paced, partialSize, receiveChunks, type StreamPace } from '../common/chunks.js';
import { LocalHandoff, linkLocal } from '../common/local-handoff.js';
import { AppError, errorMessage, isAppError } from '../common/errors.js';
import { clientStream, serverStream, unary } from '../common/grpc.js';
import type { Logger } from '../common/logger.js';
import type { NodeAgentServer, ReleaseChunksRequest, ReleaseChunksResponse, RunSegmentRequest, SegmentChunk, SegmentRef, TransferStatus, SegmentEvent } from '../proto/gen/tessera/v1/agent.js';
import type { AgentMetrics } from './metrics.js';
import { traceIdOf } from '../common/trace.js';
import { ChunkControl, runSegmentWork, type SegmentWorkDeps } from './segment-work.js';
import { isHelperAttempt } from '../common/records.js';
import type { DiskSpace } from './disk-space.js';
import type { LeaderTermGate } from './leader-term.js';

/** A segment's work on this node: it runs whatever becomes of the RunSegment streams that follow it. */
interface Held {
  attempt: number;
  /** The owner key's revision this work was started under (its fencing token). */
  ownerRevision: number;
  abort: AbortController;
  /** The latest progress event (a stream that attaches gets it first). */
  last: SegmentEvent | undefined;
  /** Streams following the work (RunSegment calls, the first one and any re-attached). */
  listeners: Set<(ev: SegmentEvent) => void>;
  /** Settles when the work ends. */
  done: Promise<void>;
  /** The owner's run: its chunks not started yet can be released to a helper. */
  control: ChunkControl;
}

/** A segment this node finished recently: a leader that re-attaches after the end gets its last event. */
interface Finished {
  attempt: number;
  ownerRevision: number;
  last: SegmentEvent;
  atMs: number;
}

/** How long, and how many, finished segments are remembered for a re-attaching leader. */
const FINISHED_TTL_MS = 10 * 60_000;
const FINISHED_MAX = 512;

const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The held-work key: a segment's owner run, or a helper run (its own attempt number) beside it. */
function workKey(ref: { jobId: string; segment: number; attempt: number }): string {
  return isHelperAttempt(ref.attempt) ? `${ref.jobId}/${ref.segment}/h${ref.attempt}` : `${ref.jobId}/${ref.segment}`;
}

/** The node agent's gRPC service: segment transfer in, transcode with progress out. */
export class AgentService {
  /** Segments this node holds, by `<jobId>/<segment>`. */
  readonly held = new Map<string, Held>();
  private readonly finished = new Map<string, Finished>();
  draining = false;
  /** Streams that re-attached to work already running or finished (a new leader took over). */
  reattached = 0;
  segmentsDone = 0;

  constructor(
    private readonly stagingDir: string,
    private readonly maxSegmentBytes: number,
    private readonly deps: SegmentWorkDeps,
    private readonly metrics: AgentMetrics,
    private readonly log: Logger,
    private readonly pace: StreamPace = DEFAULT_STREAM_PACE,
    private readonly disk?: DiskSpace,
    /** Fencing of work-changing calls on the caller's leader term (absent: not checked). */
    private readonly terms?: LeaderTermGate,
    /** How often running work checks that its owner key is unchanged (ms; 0: never). */
    private readonly ownerCheckMs = 5_000,
    /** Segments named by a co-located coordinator are read from its staging (LOCAL_HANDOFF). */
    private readonly handoff = new LocalHandoff(undefined),
  ) {}

  private dirOf(ref: SegmentRef | undefined): string {
    if (!ref || !SAFE_ID.test(ref.jobId) || ref.segment < 0 || ref.attempt < 1) {
      throw new AppError('INVALID_ARGUMENT', 'a valid segment reference (job id, segment, attempt) is required');
    }
    return join(this.stagingDir, ref.jobId, `seg-${ref.segment}-a${ref.attempt}`);
  }

  private segmentFile(ref: SegmentRef | undefined): string {
    return join(this.dirOf(ref), 'segment.mkv');
  }

  /** Aborts everything this node holds (lease lost, shutdown). */
  dropAll(reason: string): void {
    for (const h of this.held.values()) h.abort.abort(new AppError('FENCED', reason));
  }

  private finishedEntry(key: string): Finished | undefined {
    const f = this.finished.get(key);
    if (f && Date.now() - f.atMs > FINISHED_TTL_MS) {
      this.finished.delete(key);
      return undefined;
    }
    return f;
  }

  /**
   * Starts a segment's work, decoupled from any stream: it ends when it is done, fails, is
   * dropped, is superseded by a later owner revision, or finds its owner key moved (checked every
   * `ownerCheckMs`: a segment reassigned while this node was partitioned stops here instead of
   * running on to a refused checkpoint write).
   */
  private start(ref: SegmentRef, req: RunSegmentRequest, file: string, traceId: string): Held {
    const key = workKey(ref);
    const abort = new AbortController();
    const control = new ChunkControl();
    const held: Held = { attempt: ref.attempt, ownerRevision: req.ownerRevision, abort, last: undefined, listeners: new Set(), done: Promise.resolve(), control };
    this.held.set(key, held);
    this.metrics.segmentsInFlight.set(this.held.size);
    const emit = (ev: SegmentEvent): void => {
      held.last = ev;
      for (const l of held.listeners) l(ev);
    };
    const poll =
      this.ownerCheckMs > 0
        ? setInterval(
            () =>
              void this.ownerMoved(ref, req.ownerRevision).then((moved) => {
                if (moved) abort.abort(new AppError('FENCED', `segment ${ref.segment} of job ${ref.jobId} is no longer ours (reassigned, or the job ended)`));
              }),
            this.ownerCheckMs,
          )
        : undefined;
    const log = this.log;
    held.done = (async () => {
      try {
        await runSegmentWork(
          {
            jobId: ref.jobId,
            traceId,
            segment: ref.segment,
            attempt: ref.attempt,
            ownerRevision: req.ownerRevision,
            renditions: req.renditions,
            fps: req.fps,
            frames: req.frames,
            treatment: toPictureTreatment(req.treatment),
            leadInFrames: req.leadInFrames,
            leadOutFrames: req.leadOutFrames,
            ...(req.constantRate ? { constantRate: req.constantRate } : {}),
            ...(req.keyframeGrid ? { keyframeGrid: req.keyframeGrid } : {}),
            segmentPath: file,
            workDir: this.dirOf(ref),
            uploaderAddress: req.uploaderAddress,
            uploaderId: req.uploaderId,
            // A helper's run takes a release too: its owner failed, the chunks it has not started go back.
            control,
            ...(req.helper ? { helperChunks: req.helper.chunks } : {}),
          },
          this.deps,
          emit,
          abort.signal,
        );
        this.segmentsDone++;
        if (held.last) {
          this.finished.set(key, { attempt: ref.attempt, ownerRevision: req.ownerRevision, last: held.last, atMs: Date.now() });
          while (this.finished.size > FINISHED_MAX) this.finished.delete(this.finished.keys().next().value!);
        }
        await rm(this.dirOf(ref), { recursive: true, force: true });
      } catch (err0) {
        // A full disk is this node's trouble: out of service, and the segment retried elsewhere.
        const err = this.disk && !abort.signal.aborted ? this.disk.classify(err0, `segment ${ref.segment} of job ${ref.jobId}`) : err0;
        if (isAppError(err, 'NO_SPACE')) await rm(this.dirOf(ref), { recursive: true, force: true });
        const lostClaim = isAppError(err, 'FENCED') || abort.signal.aborted;
        if (lostClaim) {
          // reassigned, dropped, or another incarnation took our id: drop the work and its files
          await rm(this.dirOf(ref), { recursive: true, force: true });
        }
        log.warn({ jobId: ref.jobId, traceId, segment: ref.segment, attempt: ref.attempt, err: errorMessage(err) }, 'segment ended without finishing');
        const out = abort.signal.aborted && !isAppError(err) ? abort.signal.reason : err;
        // An attempt that lost its claim (fenced or dropped) is not the segment's failure: the
        // coordinator that follows it may run the segment again (its own fenced assignment decides
        // whether it still may), so the answer says retryable.
        throw lostClaim && isAppError(out) && !out.retryable ? new AppError(out.code, out.message, { cause: out, retryable: true }) : out;
      } finally {
        if (poll) clearInterval(poll);
        if (this.held.get(key) === held) this.held.delete(key);
        this.metrics.segmentsInFlight.set(this.held.size);
      }
    })();
    held.done.catch(() => undefined); // followers see the error; nobody may be following
    return held;
  }

  /** True only when etcd answers that the segment's owner key has `ownerRevision`. */
  private async ownerIs(ref: SegmentRef, ownerRevision: number): Promise<boolean> {
    try {
      const res = await this.deps.etcd
        .get(this.deps.keys.segmentOwner(ref.jobId, ref.segment))
        .options({ deadline: new Date(Date.now() + 1_000) })
        .exec();
      return res.kvs[0]?.mod_revision === String(ownerRevision);
    } catch {
      return false;
    }
  }

  /**
   * True when the work is no longer wanted: the segment's owner key has another revision (or is
   * gone), or its job ended cancelled or failed (a cancel made while no leader could drop the
   * work). False when unknown (etcd unreachable: keep working; every write is fenced anyway).
   */
  private async ownerMoved(ref: SegmentRef, ownerRevision: number): Promise<boolean> {
    const { etcd, keys } = this.deps;
    const opts = { deadline: new Date(Date.now() + Math.max(500, this.ownerCheckMs)) };
    try {
      const [owner, cancelled, failed] = await Promise.all([
        etcd.get(keys.segmentOwner(ref.jobId, ref.segment)).options(opts).exec(),
        etcd.get(keys.jobStateEntry('CANCELLED', ref.jobId)).options(opts).exec(),
        etcd.get(keys.jobStateEntry('FAILED', ref.jobId)).options(opts).exec(),
      ]);
      return owner.kvs[0]?.mod_revision !== String(ownerRevision) || cancelled.kvs.length > 0 || failed.kvs.length > 0;
    } catch {
      return false;
    }
  }

  /**
   * Relays a work's progress to one stream until the work ends. The stream ending first (the
   * leader died or was partitioned away) only detaches it: the work runs on.
   */
  private follow(held: Held, send: (ev: SegmentEvent) => Promise<void>, signal: AbortSignal, attached: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let pending = Promise.resolve();
      const relay = (ev: SegmentEvent): void => {
        pending = pending.then(() => send(attached ? { ...ev, attached: true } : ev)).catch(() => undefined);
      };
      let ended = false;
      const end = (err?: unknown): void => {
        if (ended) return;
        ended = true;
        held.listeners.delete(relay);
        signal.removeEventListener('abort', onAbort);
        void pending.then(() => (err === undefined ? resolve() : reject(err instanceof Error ? err : new AppError('INTERNAL', String(err)))));
      };
      const onAbort = (): void => end(signal.reason);
      if (held.last) relay(held.last);
      held.listeners.add(relay);
      signal.addEventListener('abort', onAbort, { once: true });
      held.done.then(
        () => end(),
        (err: unknown) => end(err ?? new AppError('INTERNAL', 'segment failed')),
      );
    });
  }

  handlers(): NodeAgentServer {
    const log = this.log;
    return {
      getTransfer: unary(log, async (ref: SegmentRef): Promise<TransferStatus> => {
        const file = this.segmentFile(ref);
        if (this.disk?.full) await this.disk.admit(0, 'a segment'); // NO_SPACE before any byte is sent
        try {
          const st = await stat(file);
          return { receivedBytes: st.size, complete: true, sha256: '', crc32: '' };
        } catch {
          return { receivedBytes: await partialSize(file), complete: false, sha256: '', crc32: '' };
        }
      }),

      putSegment: clientStream(log, async (call: ServerReadableStream<SegmentChunk, TransferStatus>, signal) => {
        const it = call[Symbol.asyncIterator]() as AsyncIterator<SegmentChunk>;
        const first = await it.next();
        if (first.done) throw new AppError('INVALID_ARGUMENT', 'empty segment stream');
        const head = first.value;
        if (this.draining) throw new AppError('FAILED_PRECONDITION', 'node is draining', { retryable: true });
        // Refused after the first message: what the sender still has in flight is read and dropped.
        await this.terms?.check(head.ref?.leaderTerm, 'PutSegment', true).catch((err: unknown) => drainThenThrow(it, err));
        const file = this.segmentFile(head.ref);
        const held = await partialSize(file);
        // Room for the segment and its chunks cut from it (a second copy), before any byte lands.
        const need = 2 * Math.max(0, head.totalSize - held);
        await this.disk?.admit(need, `segment ${head.ref?.segment ?? '?'} of job ${head.ref?.jobId ?? '?'}`).catch((err: unknown) => drainThenThrow(it, err));
        // Local handoff: the coordinator's own file, read from disk (refused: it streams instead).
        const local = head.localPath ? await this.handoff.accept(head).catch((err: unknown) => drainThenThrow(it, err)) : undefined;
        // The coordinator's segment file is never rewritten in place: a link to it is the segment
        // (nothing read or written: copying two 58 MB segments took 0.8 s here).
        if (local && held === 0 && local.size === head.totalSize && local.size <= this.maxSegmentBytes && (await linkLocal(local.path, file))) {
          return { receivedBytes: local.size, complete: true, sha256: '', crc32: '' };
        }
        // Not fsynced: the agent wipes its staging when it starts (main.ts), so only this process
        // life reads the segment; a node that goes down gets its segments re-sent elsewhere.
        const res = await receiveChunks(
          local
            ? fileChunks(local.path, held)
            : paced(
                chunksOf(head, it, (n) => this.metrics.bytesStreamed.inc(n)),
                this.pace,
              ),
          { path: file, maxBytes: this.maxSegmentBytes, totalSize: head.totalSize, sha256: head.sha256 || undefined, crc32: head.crc32 || undefined, signal, durable: false },
        ).catch(async (err: unknown) => {
          const e = this.disk ? this.disk.classify(err, 'receiving a segment', need) : err;
          if (isAppError(e, 'NO_SPACE')) await rm(this.dirOf(head.ref), { recursive: true, force: true });
          throw e;
        });
        return { receivedBytes: res.bytes, complete: res.complete, sha256: res.sha256, crc32: res.crc32 };
      }),

      runSegment: serverStream(log, async (req, send, call, signal) => {
        const ref = req.ref;
        const file = this.segmentFile(ref);
        if (!ref) throw new AppError('INVALID_ARGUMENT', 'ref is required');
        if ((req.helper !== undefined) !== isHelperAttempt(ref.attempt)) throw new AppError('INVALID_ARGUMENT', 'a helper run needs a helper attempt number, and only a helper run may use one');
        await this.terms?.check(req.leaderTerm, 'RunSegment', true);
        const key = workKey(ref);
        const same = (x: { attempt: number; ownerRevision: number } | undefined): boolean => x !== undefined && x.attempt === ref.attempt && x.ownerRevision === req.ownerRevision;
        // Work started under a later owner revision is never replaced by an earlier one (a
        // stale leader, a late retry): the two would cancel each other's work.
        const stale = (x: { ownerRevision: number } | undefined): boolean => x !== undefined && x.ownerRevision > req.ownerRevision;
        // Decided twice: once before the checks a start needs (they wait), and again, without
        // waiting, right before starting, so two calls for one segment never both start it.
        let current = false; // etcd said this request's owner revision is the owner key's
        for (let checked = false; ;) {
          const cur = this.held.get(key);
          const fin = cur ? undefined : this.finishedEntry(key);
          if (!current && (stale(cur) || stale(fin))) {
            // etcd decides when it answers: an etcd restored from a backup counts revisions again,
            // and the request that names the owner key's revision is the current one.
            if (!(await this.ownerIs(ref, req.ownerRevision))) {
              throw new AppError('FENCED', `segment ${ref.segment} of job ${ref.jobId} runs under a later owner revision than ${req.ownerRevision}`, { retryable: false });
            }
            current = true;
            continue; // decide again on what holds now
          }
          if (same(cur)) {
            this.reattached++;
            log.info({ jobId: ref.jobId, segment: ref.segment, attempt: ref.attempt }, 're-attached to a running segment');
            return this.follow(cur!, send, signal, true);
          }
          if (same(fin)) {
            this.reattached++;
            log.info({ jobId: ref.jobId, segment: ref.segment, attempt: ref.attempt }, 're-attached to a finished segment');
            await send({ ...fin!.last, attached: true });
            return;
          }
          if (this.draining) throw new AppError('FAILED_PRECONDITION', 'node is draining', { retryable: true });
          if (!checked) {
            if (this.disk?.full) await this.disk.admit(0, 'a segment');
            try {
              await stat(file);
            } catch {
              throw new AppError('FAILED_PRECONDITION', `segment ${ref.segment} has not been fully transferred`, { retryable: true });
            }
            checked = true;
            continue;
          }
          this.finished.delete(key);
          cur?.abort.abort(new AppError('FENCED', 'superseded by a newer attempt'));
          return this.follow(this.start(ref, req, file, traceIdOf(call.metadata, ref.jobId)), send, signal, false);
        }
      }),

      dropSegment: unary(log, async (ref: SegmentRef) => {
        this.dirOf(ref);
        await this.terms?.check(ref.leaderTerm, 'DropSegment', true);
        const key = workKey(ref);
        const held = this.held.get(key);
        // Only the attempt named, or an older one: a late drop never stops newer work.
        if (held && held.attempt <= ref.attempt && (ref.ownerRevision === undefined || held.ownerRevision <= ref.ownerRevision)) held.abort.abort(new AppError('CANCELLED', 'segment dropped'));
        const fin = this.finished.get(key);
        if (fin && fin.attempt <= ref.attempt) this.finished.delete(key);
        await rm(this.dirOf(ref), { recursive: true, force: true });
        return {};
      }),

      releaseChunks: unary(log, async (req: ReleaseChunksRequest): Promise<ReleaseChunksResponse> => {
        const ref = req.ref;
        this.dirOf(ref);
        await this.terms?.check(ref!.leaderTerm, 'ReleaseChunks', true);
        const held = this.held.get(workKey(ref!));
        // Only the attempt named, under the owner revision named: a late call releases nothing.
        if (!held || held.attempt !== ref!.attempt || held.ownerRevision !== ref!.ownerRevision) return { released: [] };
        if (req.cancelRunning) {
          const stopped = held.control.cancelRunning(req.chunks);
          if (stopped.length > 0) log.info({ jobId: ref!.jobId, segment: ref!.segment, attempt: ref!.attempt, stopped }, 'chunks stopped: their duplicates were done first');
          return { released: stopped };
        }
        const released = held.control.release(req.chunks, req.all === true);
        if (released.length > 0) log.info({ jobId: ref!.jobId, segment: ref!.segment, attempt: ref!.attempt, released }, 'chunks released to a helper');
        return { released };
      }),
    };
  }
}
