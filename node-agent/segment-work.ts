import { setMaxListeners } from 'node:events';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { AppError, errorMessage, isAppError, isNoSpace } from '../common/errors.js';
import { deferred } from '../common/deferred.js';
import type { Keys } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import type { PlannedRendition } from '../proto/gen/tessera/v1/types.js';
import type { SegmentEvent } from '../proto/gen/tessera/v1/agent.js';
import type { UploaderClient } from '../proto/gen/tessera/v1/uploader.js';
import { planChunks, planCuts } from '../transcoder/plan-cuts.js';
import { frameCuts, gridChunkBoundaries, gridFrame } from '../transcoder/frame-cuts.js';
import { frameFactor, type PictureTreatment } from '../transcoder/treatment.js';
import { chunkGrids, chunkStarts, firstGridPoint } from '../transcoder/frame-rate.js';
import { resolvedFromPlan } from '../transcoder/ladder.js';
import type { WorkerPool } from '../transcoder/worker-pool.js';
import { sendPart } from '../uploader/part-client.js';
import type { LocalHandoff } from '../common/local-handoff.js';
import { jobTraceId } from '../common/trace.js';
import { SegmentFence } from '../common/segment-fence.js';
import { withEtcdRetry } from '../common/etcd-retry.js';
import { retryDelay, sleep } from '../common/retry.js';
import type { SegmentMedia, SubSegmentFile } from './segment-media.js';

export interface SegmentWorkDeps {
  etcd: Etcd3;
  keys: Keys;
  log: Logger;
  pool: WorkerPool;
  nodeId: string;
  slots: number;
  minSubSegmentSec: number;
  /** Longest chunk (s): segments longer than slots × this are cut into bounded chunks. */
  maxChunkSec: number;
  ffmpegThreads: number;
  noProgressMs: number;
  wallClockMs: number;
  subSegmentAttempts: number;
  uploadTimeoutMs: number;
  /** The uploader's client; with TLS its certificate must name `id`. */
  uploaderFor: (address: string, id: string) => UploaderClient;
  /** LOCAL_HANDOFF: parts go to a co-located uploader by path (absent or off: streamed). */
  handoff?: LocalHandoff;
  onHandoff?: () => void;
  onFenced: () => void;
  /** A chunk finished: its frames, the seconds its ffmpeg took, and the output pixels per frame (all renditions). */
  onSubSegmentDone: (frames: number, seconds: number, pixelsPerFrame: number) => void;
  onRetry: (kind: string) => void;
  onFfmpegSpawn?: (pid: number) => void;
  /** Keyframes, cuts and transcodes: ffmpeg in production (`ffmpegSegmentMedia`). */
  media: SegmentMedia;
}

export interface SegmentWorkRequest {
  jobId: string;
  /** The job's trace id (from the RunSegment call's traceparent). */
  traceId?: string;
  segment: number;
  attempt: number;
  ownerRevision: number;
  renditions: PlannedRendition[];
  fps: number;
  /** Frames in the segment, as the coordinator counted them (stored packets, lead-in included). */
  frames: number;
  /** Rotation, deinterlacing, colour: applied to every sub-segment. */
  treatment: PictureTreatment;
  /** Decoded frames dropped at the start of the first sub-segment (a frame cut's or an edit list's lead-in). */
  leadInFrames: number;
  /** Decoded frames dropped at the end of the last sub-segment (a frame cut's lead-out). */
  leadOutFrames: number;
  /** Convert to the job's constant rate (the rate, and where this segment lies on the presented timeline); absent: timestamps kept. */
  constantRate?: { num: number; den: number; originSec: number; startSec: number; endSec: number };
  /** Streaming output: IDR frames at every multiple of `periodSec` of the presented timeline. */
  keyframeGrid?: { periodSec: number; originSec: number; startSec: number };
  segmentPath: string;
  workDir: string;
  uploaderAddress: string;
  uploaderId: string;
  /**
   * A helper run (work stealing): transcode only these chunks of the segment, planned from the
   * checkpoint's boundaries, under this run's own attempt number. Absent: the owner's run.
   */
  helperChunks?: number[] | undefined;
  /** The owner's run: lets the node release chunks not started yet (ReleaseChunks). */
  control?: ChunkControl | undefined;
}

/**
 * The chunks of an owner's run that a helper may still take: queued, not started, not released.
 * A pool slot starts a chunk only if it was not released first (one thread: no race).
 */
export class ChunkControl {
  readonly released = new Set<number>();
  readonly started = new Set<number>();
  /** Running chunks: when each started, and how to stop it (a duplicate elsewhere won). */
  readonly running = new Map<number, { sinceMs: number; abort: AbortController }>();
  /** Chunks stopped because another node's copy was recorded done first. */
  readonly cancelled = new Set<number>();
  queue: number[] = [];

  /** Stops the named chunks where they run (their copies elsewhere won); answers those stopped. */
  cancelRunning(chunks: readonly number[]): number[] {
    const out: number[] = [];
    for (const c of chunks) {
      const r = this.running.get(c);
      if (!r) continue;
      this.cancelled.add(c);
      r.abort.abort(new AppError('CANCELLED', `chunk ${c} was done elsewhere first`));
      out.push(c);
    }
    return out;
  }

  /** Gives up the named chunks that have not started (with `all`: every one, or none); answers those it gave up. */
  release(chunks: readonly number[], all = false): number[] {
    const out: number[] = [];
    if (all && chunks.some((c) => !this.queue.includes(c) || this.started.has(c) || this.released.has(c))) return out;
    for (const c of chunks) {
      if (this.queue.includes(c) && !this.started.has(c) && !this.released.has(c)) {
        this.released.add(c);
        out.push(c);
      }
    }
    return out;
  }

  /** Chunks not started and not released, in the order the pool will start them. */
  queued(): number[] {
    return this.queue.filter((c) => !this.started.has(c) && !this.released.has(c));
  }
}

/**
 * How much of a segment's file is decoded but not shown (s): the lead-in before its first shown
 * frame and the lead-out after its last. Exact with a constant-rate window; otherwise estimated
 * from the frame counts at the segment's mean rate. Pure.
 */
export function shownSpan(req: Pick<SegmentWorkRequest, 'fps' | 'leadInFrames' | 'leadOutFrames' | 'constantRate'>, durationSec: number): { headSec: number; tailSec: number } {
  const cr = req.constantRate;
  const perFrame = req.fps > 0 ? 1 / req.fps : 0;
  const headSec = cr ? Math.max(0, cr.startSec - cr.originSec) : Math.max(0, req.leadInFrames) * perFrame;
  const tailSec = cr ? Math.max(0, cr.originSec + durationSec - cr.endSec) : Math.max(0, req.leadOutFrames) * perFrame;
  return { headSec: Math.min(headSec, durationSec), tailSec: Math.min(tailSec, Math.max(0, durationSec - headSec)) };
}

/**
 * Where one segment's file is cut into chunks (s from its start, 0 and its duration included): at
 * its keyframes, one balanced piece per worker up to slots × MAX_CHUNK_SEC, bounded chunks beyond.
 * Chunks are balanced over what the segment shows: the decoded lead-in before its first frame and
 * the lead-out after its last are nobody's share, so every chunk shows at least
 * MIN_SUB_SEGMENT_SEC (one showing less than an output frame at a lower frame_rate could not be
 * made). Pure.
 */
export function chunkBoundaries(
  req: Pick<SegmentWorkRequest, 'fps' | 'leadInFrames' | 'leadOutFrames' | 'constantRate'>,
  kf: { keyframes: readonly number[]; durationSec: number },
  o: Pick<SegmentWorkDeps, 'slots' | 'maxChunkSec' | 'minSubSegmentSec'>,
): number[] {
  const { headSec, tailSec } = shownSpan(req, kf.durationSec);
  const shownSec = kf.durationSec - headSec - tailSec;
  if (!(shownSec > 0)) return [0, kf.durationSec];
  const inner = kf.keyframes.map((k) => k - headSec).filter((k) => k > 0 && k < shownSec);
  const chunks = Math.ceil(shownSec / o.maxChunkSec);
  const cuts =
    chunks > o.slots
      ? planChunks(inner, shownSec, chunks, o.minSubSegmentSec)
      : planCuts({ keyframes: inner, durationSec: shownSec, weights: Array.from({ length: o.slots }, () => 1), minSegmentSec: o.minSubSegmentSec });
  return [0, ...cuts.slice(0, -1).map((c) => c.endSec + headSec), kf.durationSec];
}

/** Backoff between a chunk's tries (full jitter, 500 ms doubling to 5 s, never under 200 ms). */
export const CHUNK_RETRY = { baseMs: 500, maxMs: 5_000, minMs: 200 };

/**
 * Transcodes one segment on this node: cuts it into sub-segments on keyframes (boundaries from
 * the checkpoint when an earlier attempt chose them), runs one ffmpeg per sub-segment that is not
 * yet done on the local worker pool, hands every rendition part to the uploader, and records each
 * finished sub-segment in the fenced checkpoint. Progress goes out through `emit`.
 */
export async function runSegmentWork(req: SegmentWorkRequest, deps: SegmentWorkDeps, emit: (ev: SegmentEvent) => void, signal: AbortSignal): Promise<void> {
  const log = deps.log.child({ jobId: req.jobId, traceId: req.traceId ?? jobTraceId(req.jobId), segment: req.segment, attempt: req.attempt });
  const fence = new SegmentFence(deps.etcd, deps.keys, req.jobId, req.segment, req.ownerRevision, deps.onFenced);
  const facts = { frames: req.frames, fps: req.fps };

  // 1. Sub-segment boundaries: re-use the checkpoint's, or choose them. Chosen ones are recorded
  //    with the first finished sub-segment (same fenced transaction): until then nothing of this
  //    segment is done, so a later attempt may as well choose again — one etcd write saved.
  // etcd reads and writes ride out an outage (retried with backoff while the segment is ours to
  // run); only FENCED or an abort ends them.
  const etcdRetry = { signal, log, onRetry: () => deps.onRetry('etcd') };
  let cp = (await withEtcdRetry('read checkpoint', () => fence.readCheckpoint(), etcdRetry))?.value;
  const helper = req.helperChunks;
  if (helper && (!cp || cp.boundaries.length < 3)) {
    throw new AppError('FAILED_PRECONDITION', `segment ${req.segment} of job ${req.jobId} has no recorded chunks to help with`, { retryable: false });
  }
  const recorded = cp !== undefined;
  const leadIn = Math.max(0, req.leadInFrames);
  const leadOut = Math.max(0, req.leadOutFrames);
  const oneChunk = deps.slots <= 1 && req.frames > 0 && req.fps > 0 && req.frames / req.fps <= deps.maxChunkSec;
  // Streaming output: chunks start at the frames on the job's keyframe grid, wherever the source's
  // keyframes are (each decoded from the keyframe before it), so no chunk adds an IDR off the grid.
  let frameChunks: FrameChunk[] | undefined;
  if (req.keyframeGrid && deps.media.packets && deps.media.splitFrames && (cp ? cp.boundaries.length > 2 : !oneChunk)) {
    const planned = await planGridChunks(req, deps, cp?.boundaries, signal);
    if (planned) {
      frameChunks = planned.chunks; // none: one grid interval or less, the segment is the one chunk
      cp ??= { boundaries: planned.boundaries, done: [], transcodedByAttempt: {} };
    }
  }
  if ((!cp || cp.boundaries.length < 2) && oneChunk) {
    // One worker: the whole segment is the one sub-segment, no keyframe scan needed.
    cp = { boundaries: [0, req.frames / req.fps], done: [], transcodedByAttempt: {} };
  } else if (!cp || cp.boundaries.length < 2) {
    const kf = await deps.media.keyframes(req.segmentPath, facts, signal);
    cp = { boundaries: chunkBoundaries(req, kf, deps), done: [], transcodedByAttempt: {} };
  }
  const planned = cp;
  if (!recorded && !helper && planned.boundaries.length - 1 > deps.slots) {
    // More chunks than workers: some wait in the queue, and an idle node may take them (work
    // stealing plans them from these boundaries). One write per segment, fenced.
    await withEtcdRetry('record chunks', () => fence.updateCheckpoint((cur) => (cur ? undefined : planned)), etcdRetry);
  } else {
    await withEtcdRetry('check ownership', () => fence.assertOwner(), etcdRetry);
  }
  const boundaries = cp.boundaries;
  log.info({ chunks: boundaries.length - 1, cut: frameChunks ? 'grid frames' : 'keyframes' }, 'chunks planned');
  const subCount = boundaries.length - 1;

  // 2. Cut again (stream copy) at the same boundaries: the same keyframes give the same
  //    sub-segments. One sub-segment is the segment itself, as the coordinator cut and counted it
  //    (no copy, no count: those took half a second before a 1080p segment's ffmpeg started).
  // Each chunk's file, counted. Keyframe cuts of a longer segment arrive one by one while the
  // stream copy runs, and each chunk's ffmpeg starts as soon as its file is there (a 40-minute
  // segment's copy takes a while); what they add up to is checked before any chunk is recorded.
  // A chunk nobody runs (done before, or not a helper's) may fail unseen.
  const arrivals = Array.from({ length: subCount }, () => deferred<SubSegmentFile>());
  const arrived = (i: number, f: SubSegmentFile): void => arrivals[i]?.resolve(f);
  let cutting: Promise<SubSegmentFile[]>;
  // Frames of the first chunk when it is read from the segment file itself (it then ends on them).
  let firstFromSegment: number | undefined;
  if (frameChunks) {
    const subDir = join(req.workDir, 'subs');
    await rm(subDir, { recursive: true, force: true });
    await mkdir(subDir, { recursive: true });
    const paths = await deps.media.splitFrames!(req.segmentPath, subDir, frameChunks, req.frames, signal);
    cutting = Promise.resolve(frameChunks.map((c, i) => ({ path: paths[i]!, frames: c.frames, durationSec: c.durationSec })));
  } else if (subCount === 1 && req.frames > 0 && req.fps > 0) {
    cutting = Promise.resolve([{ path: req.segmentPath, frames: req.frames, durationSec: Math.max(boundaries[1]! - boundaries[0]!, req.frames / req.fps) }]);
  } else {
    const subDir = join(req.workDir, 'subs');
    await rm(subDir, { recursive: true, force: true });
    await mkdir(subDir, { recursive: true });
    // The first chunk is the segment's start: it is decoded straight from the segment file (ffmpeg
    // stops reading once its last frame is through) while the cut runs, instead of waiting for
    // its own file to be copied and counted (0.3–0.5 s before a 1080p segment's first ffmpeg).
    // Its frame count comes from the packet scan that placed the cuts; its file must agree.
    const first = cp.done.some((d) => d.sub === 0) ? undefined : deps.media.plannedFrames?.(req.segmentPath, boundaries.slice(1, -1))?.[0];
    cutting = deps.media.split(req.segmentPath, subDir, boundaries.slice(1, -1), facts, signal, arrived);
    if (first !== undefined && first > 0) {
      firstFromSegment = first;
      arrived(0, { path: req.segmentPath, frames: first, durationSec: boundaries[1]! - boundaries[0]! });
    }
  }
  // Until a chunk's file is counted, its frames and length are estimated from its boundaries.
  const estimate = (i: number): number => Math.max(0, Math.round((boundaries[i + 1]! - boundaries[i]!) * req.fps));
  const subFrames = Array.from({ length: subCount }, (_, i) => cp!.done.find((d) => d.sub === i)?.frames ?? estimate(i));
  // What each sub-segment lasts (s): its outputs are capped in time and size from it.
  const subSeconds = Array.from({ length: subCount }, (_, i) => boundaries[i + 1]! - boundaries[i]!);
  const framesTotal = req.frames > 0 ? req.frames : subFrames.reduce((a, b) => a + b, 0);
  const cutChecked = cutting.then((files) => {
    if (files.length !== subCount) throw new AppError('INTERNAL', `split produced ${files.length} sub-segments, expected ${subCount}`);
    if (firstFromSegment !== undefined && files[0]!.frames !== firstFromSegment) {
      throw new AppError('UNSUPPORTED_FORMAT', `segment ${req.segment}'s first chunk holds ${files[0]!.frames} frames after cutting, its scan said ${firstFromSegment}`, { retryable: false });
    }
    const total = files.reduce((a, f) => a + f.frames, 0);
    // The coordinator derived the segment's frame count from its cut; what we cut must add up to it,
    // or the renditions could not be frame-exact (deterministic: retrying elsewhere cannot help).
    if (req.frames > 0 && total !== req.frames) {
      throw new AppError('UNSUPPORTED_FORMAT', `segment ${req.segment} holds ${total} frames after cutting, ${req.frames} were planned; the input cannot be cut frame-exactly`, {
        retryable: false,
      });
    }
    // Files not handed over while they were cut start now (a cut that does not add up starts none).
    files.forEach((f, i) => arrived(i, f));
  });
  cutChecked.catch((err: unknown) => {
    for (const a of arrivals) a.reject(err);
  });
  // Settled by the hand-over, or by the finished cut (every file, or its error).
  const fileOf = async (sub: number): Promise<SubSegmentFile> => {
    const f = await arrivals[sub]!.promise;
    subFrames[sub] = f.frames;
    subSeconds[sub] = Math.max(f.durationSec, req.fps > 0 ? f.frames / req.fps : 0);
    return f;
  };

  // A helper reports only its own chunks (the coordinator adds the owner's and the helpers').
  const doneSubs = new Set(helper ? [] : cp.done.map((d) => d.sub));
  const doneBefore = new Set(cp.done.map((d) => d.sub));
  const framesDone = subFrames.map((f, i) => (doneSubs.has(i) ? f : 0));
  let transcoded = 0;
  let running = 0;
  const control = req.control ?? new ChunkControl();
  // Longest first: the queue's tail is the shortest chunks, so workers finish together (and a
  // helper takes from the tail). A helper run does only its chunks. Known before the first event:
  // an empty queue with nothing running would read as an idle node.
  // Chunks within a tenth of the longest's length count as equally long: among them the earlier
  // goes first (its file is cut first).
  const step = Math.max(...subSeconds, 0) / 10 || 1;
  const todo = subSeconds
    .map((_, i) => i)
    .filter((i) => !doneBefore.has(i) && (!helper || helper.includes(i)))
    .sort((a, b) => Math.floor(subSeconds[b]! / step) - Math.floor(subSeconds[a]! / step) || a - b);
  control.queue = todo;
  const progress = (done = false): SegmentEvent => ({
    framesDone: framesDone.reduce((a, b) => a + b, 0),
    framesTotal,
    subSegments: subCount,
    subSegmentsDone: doneSubs.size,
    done,
    subSegmentsTranscoded: transcoded,
    queue: {
      queued: control.queued(),
      running,
      runningChunks: [...control.running].map(([chunk, r]) => ({ chunk, framesDone: framesDone[chunk] ?? 0, framesTotal: subFrames[chunk] ?? 0, elapsedMs: Date.now() - r.sinceMs })),
    },
  });
  emit(progress());

  const outDir = join(req.workDir, 'out');
  await mkdir(outDir, { recursive: true });
  const renditions = req.renditions.map(resolvedFromPlan);

  // The frames this segment shows: the first chunk drops the lead-in, the last the lead-out; a
  // chunk cut at a frame also drops the frames decoded before it (from its keyframe).
  const lastSub = subCount - 1;
  if (leadIn + leadOut >= framesTotal && framesTotal > 0) throw new AppError('INTERNAL', `segment ${req.segment}: lead-in ${leadIn} and lead-out ${leadOut} leave no frame of ${framesTotal}`);
  const trimOf = (sub: number): { leadInFrames?: number; keepFrames?: number } => {
    const fc = frameChunks?.[sub];
    const start = (sub === 0 ? leadIn : 0) + (fc?.leadIn ?? 0);
    const out: { leadInFrames?: number; keepFrames?: number } = start > 0 ? { leadInFrames: start } : {};
    if (fc) out.keepFrames = fc.frames - (sub === 0 ? leadIn : 0) - (sub === lastSub ? leadOut : 0);
    else if (sub === 0 && firstFromSegment !== undefined && lastSub > 0) out.keepFrames = firstFromSegment - start;
    else if (sub === lastSub && leadOut > 0) out.keepFrames = (subFrames[sub] ?? 0) - start - leadOut;
    if (out.keepFrames !== undefined && out.keepFrames <= 0) throw new AppError('INTERNAL', `segment ${req.segment}: the lead-out reaches before its last chunk`);
    return out;
  };

  // A constant rate: each chunk makes exactly its share of the job's output grid, computed from
  // the same boundaries the checkpoint records (the coordinator joins on the same numbers).
  const cr = req.constantRate;
  const rate = cr ? { num: cr.num, den: cr.den } : undefined;
  const grids = cr && rate ? chunkGrids(rate, cr, boundaries) : undefined;
  if (grids?.some((g) => g.frames <= 0))
    throw new AppError('UNSUPPORTED_FORMAT', `segment ${req.segment} has a chunk shorter than one frame at ${cr!.num}/${cr!.den} fps; choose a higher frame_rate`, { retryable: false });

  // Streaming: each chunk's first grid point, from where the chunk starts on the presented
  // timeline (its first output frame's time when converted to a constant rate).
  const kg = req.keyframeGrid;
  const starts = kg ? chunkStarts(kg, boundaries) : undefined;
  const keyframeGridOf = (sub: number): { periodSec: number; firstSec: number } | undefined => {
    if (!kg || !starts) return undefined;
    const g = grids?.[sub];
    const at = g && rate ? (g.firstSlot * rate.den) / rate.num : starts[sub]!;
    return { periodSec: kg.periodSec, firstSec: firstGridPoint(at, kg.periodSec) };
  };

  const runSub = async (sub: number, taskSignal: AbortSignal): Promise<void> => {
    // Released to a helper while it waited for a slot: not ours any more.
    if (control.released.has(sub)) return;
    control.started.add(sub);
    const abort = new AbortController();
    control.running.set(sub, { sinceMs: Date.now(), abort });
    running++;
    try {
      await transcodeSub(sub, AbortSignal.any([taskSignal, abort.signal]));
    } catch (err) {
      // A duplicate on another node was recorded done first: this copy is not needed.
      if (control.cancelled.has(sub) && !taskSignal.aborted) {
        log.info({ sub }, 'chunk done elsewhere first: this copy stopped');
        return;
      }
      throw err;
    } finally {
      running--;
      control.running.delete(sub);
    }
  };

  const transcodeSub = async (sub: number, taskSignal: AbortSignal): Promise<void> => {
    const input = await fileOf(sub);
    const grid = grids?.[sub];
    const keyframeGrid = keyframeGridOf(sub);
    // Progress in source frames: ffmpeg counts output frames, which a rate conversion changes.
    const toSource = grid ? (subFrames[sub] ?? 0) / grid.frames : 1;
    const outputs = renditions.map((r) => ({ path: join(outDir, `${r.name}-${String(sub).padStart(4, '0')}.mp4`), rendition: r }));
    let seconds = 0;
    let hashes: Record<string, string> = {};
    for (let attempt = 1; ; attempt++) {
      const started = Date.now();
      log.info({ sub, try: attempt }, 'sub-segment started');
      try {
        await deps.media.transcode(input, outputs, {
          // Output frames per second (the GOP follows it): doubled when each field becomes a frame.
          fps: rate ? rate.num / rate.den : req.fps * frameFactor(req.treatment),
          treatment: req.treatment,
          ...trimOf(sub),
          ...(rate && grid ? { constantRate: { rate, grid } } : {}),
          ...(keyframeGrid ? { keyframeGrid } : {}),
          ...(deps.ffmpegThreads > 0 ? { threads: deps.ffmpegThreads } : {}),
          ...((subSeconds[sub] ?? 0) > 0 ? { expectedDurationSec: subSeconds[sub]! } : {}),
          signal: taskSignal,
          noProgressMs: deps.noProgressMs,
          wallClockMs: deps.wallClockMs,
          onProgress: (frame) => {
            framesDone[sub] = Math.min(subFrames[sub] ?? 0, Math.round(frame * toSource));
          },
          ...(deps.onFfmpegSpawn ? { onSpawn: deps.onFfmpegSpawn } : {}),
        });
        seconds = (Date.now() - started) / 1000;
        // Parts are durable with the uploader before the checkpoint says "done". All renditions'
        // parts at once: the uploader fsyncs each, and one stream left the others waiting.
        const acks = await Promise.all(
          outputs.map((o) =>
            sendPart(
              deps.uploaderFor(req.uploaderAddress, req.uploaderId),
              { jobId: req.jobId, rendition: o.rendition.name, segment: req.segment, subSegment: sub, attempt: req.attempt, ...(req.ownerRevision > 0 ? { ownerRevision: req.ownerRevision } : {}) },
              o.path,
              {
                timeoutMs: deps.uploadTimeoutMs,
                signal: taskSignal,
                onRetry: () => deps.onRetry('part_upload'),
                ...(deps.handoff?.enabled ? { handoff: { local: deps.handoff, peer: req.uploaderAddress, ...(deps.onHandoff ? { onHandoff: deps.onHandoff } : {}) } } : {}),
              },
            ),
          ),
        );
        hashes = Object.fromEntries(outputs.map((o, i) => [o.rendition.name, acks[i]!.sha256]));
        break;
      } catch (err) {
        // A full disk stays full for the next try here: the segment goes elsewhere (service.ts).
        if (taskSignal.aborted || isAppError(err, 'FENCED') || isAppError(err, 'CANCELLED') || isNoSpace(err)) throw err;
        const retryable = isAppError(err) ? err.retryable : true;
        if (!retryable || attempt >= deps.subSegmentAttempts) {
          throw isAppError(err, 'TRANSCODE_FAILED')
            ? new AppError('TRANSCODE_FAILED', `sub-segment ${sub} of segment ${req.segment} failed after ${attempt} attempt(s): ${err.message}`, { retryable: false })
            : err;
        }
        deps.onRetry('ffmpeg');
        // The project's backoff before the next try: a cause that lasts a moment (memory, the
        // uploader restarting) is not met again at once, and a failing chunk does not spin.
        const delayMs = retryDelay(attempt - 1, CHUNK_RETRY);
        log.warn({ sub, attempt, delayMs, err: errorMessage(err) }, 'sub-segment failed; retrying');
        framesDone[sub] = 0;
        await sleep(delayMs, taskSignal);
      }
    }
    transcoded++;
    // The parts are durable with the uploader: an etcd outage now delays the checkpoint (retried
    // with backoff) but never re-encodes the sub-segment. The write outlives a cancelled
    // RunSegment (a leader deposed by the same outage cancels it): it is fenced on our owner
    // revision, so it lands only if the segment is still ours, and a later attempt then finds
    // the sub-segment done instead of transcoding it again.
    // Recorded only once the whole cut is known to add up to the planned frames.
    await cutChecked;
    await withEtcdRetry(
      'write checkpoint',
      () =>
        fence.updateCheckpoint((cur) => {
          // Only the owner writes the checkpoint, and we read it after we became the owner: the
          // boundaries there are ours (or our sibling sub-segments'). Anything else is a bug.
          if (cur && !sameBoundaries(cur.boundaries, boundaries)) throw new AppError('INTERNAL', `segment ${req.segment}: checkpoint boundaries changed underneath`, { retryable: true });
          const base = cur ?? { boundaries, done: [], transcodedByAttempt: {} };
          const key = String(req.attempt);
          const counts = { ...base.transcodedByAttempt, [key]: (base.transcodedByAttempt[key] ?? 0) + 1 };
          if (base.done.some((d) => d.sub === sub)) return { ...base, transcodedByAttempt: counts };
          return {
            ...base,
            transcodedByAttempt: counts,
            done: [...base.done, { sub, attempt: req.attempt, nodeId: deps.nodeId, frames: subFrames[sub] ?? 0, sha256: hashes }].sort((a, b) => a.sub - b.sub),
          };
        }),
      { log, onRetry: () => deps.onRetry('etcd') },
    );
    if (taskSignal.aborted) throw taskSignal.reason;
    framesDone[sub] = subFrames[sub] ?? 0;
    doneSubs.add(sub);
    deps.onSubSegmentDone(
      subFrames[sub] ?? 0,
      seconds,
      renditions.reduce((a, r) => a + r.width * r.height, 0),
    );
    emit(progress());
  };

  // 3. Every sub-segment not yet done, on the shared bounded pool. The first failure aborts the rest.
  const inner = new AbortController();
  setMaxListeners(0, inner.signal);
  const onOuter = (): void => inner.abort(signal.reason);
  // A cut that fails (or does not add up) stops the chunks already running from its first files.
  cutChecked.catch((err: unknown) => inner.abort(err));
  signal.addEventListener('abort', onOuter, { once: true });
  const ticker = setInterval(() => emit(progress()), 500);
  try {
    const results = await Promise.allSettled(
      todo.map((sub) =>
        deps.pool
          .run((taskSignal) => runSub(sub, AbortSignal.any([taskSignal, inner.signal])), inner.signal)
          .catch((err: unknown) => {
            inner.abort(err);
            throw err;
          }),
      ),
    );
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) {
      // Prefer the root cause over the "aborted because a sibling failed" errors.
      throw signal.aborted ? signal.reason : (inner.signal.reason ?? failure.reason);
    }
    // Every chunk may have been done before (a resumed segment): the cut is checked all the same.
    await cutChecked;
    emit(progress(true));
    log.info({ subSegments: subCount, transcoded, released: control.released.size, helper: helper !== undefined }, helper ? 'helper run done' : 'segment done');
  } finally {
    clearInterval(ticker);
    signal.removeEventListener('abort', onOuter);
  }
}

function sameBoundaries(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A chunk of a streaming job's segment cut at exact frames: its packets, lead-in and shown frames. */
interface FrameChunk {
  fromPacket: number;
  toPacket: number;
  /** Frames decoded before its first frame (from the keyframe its file starts with), dropped. */
  leadIn: number;
  /** Presented frames of the segment file it stands for ([startFrame, endFrame): the segment's lead-in/out included at the ends). */
  frames: number;
  durationSec: number;
}

/**
 * Chunks of a streaming job's segment whose every interior boundary is the frame that starts a
 * point of the job's keyframe grid: `slots` of them at least, more when the segment is longer than
 * slots × MAX_CHUNK_SEC. The boundaries (presented times in the segment file, as the checkpoint
 * records them) come from the checkpoint when an earlier attempt chose them. Undefined when the
 * segment's GOPs do not allow frame cuts (open GOPs): the agent cuts on keyframes then.
 */
async function planGridChunks(
  req: SegmentWorkRequest,
  deps: SegmentWorkDeps,
  recorded: number[] | undefined,
  signal: AbortSignal,
): Promise<{ chunks: FrameChunk[] | undefined; boundaries: number[] } | undefined> {
  const kg = req.keyframeGrid!;
  const s = await deps.media.packets!(req.segmentPath, signal);
  const pts = s.presentedSec;
  const n = pts.length;
  if (s.frames !== req.frames || n !== s.frames) {
    throw new AppError('UNSUPPORTED_FORMAT', `segment ${req.segment} holds ${s.frames} frames (${n} presented), ${req.frames} were planned; the input cannot be cut frame-exactly`, {
      retryable: false,
    });
  }
  let frames: number[];
  if (recorded) {
    frames = [0, ...recorded.slice(1, -1).map((b) => gridFrame(pts, 0, b)), n];
  } else {
    const first = Math.max(0, req.leadInFrames);
    const end = n - Math.max(0, req.leadOutFrames);
    const seconds = pts[end - 1]! - pts[first]! + (s.frameSec || (req.fps > 0 ? 1 / req.fps : 0));
    const want = Math.max(deps.slots, Math.ceil(seconds / deps.maxChunkSec));
    frames = [0, ...gridChunkBoundaries(pts, kg.originSec, first, end, kg.periodSec, want).slice(1, -1), n];
  }
  if (frames.length < 3) return { chunks: undefined, boundaries: [0, s.durationSec] };
  const cuts = frameCuts(s, frames);
  if (!cuts) return undefined;
  return {
    chunks: cuts.map((c) => ({ fromPacket: c.fromPacket, toPacket: c.toPacket, leadIn: c.leadIn, frames: c.endFrame - c.startFrame, durationSec: c.endSec - c.startSec })),
    boundaries: recorded ?? [0, ...frames.slice(1, -1).map((f) => pts[f]!), s.durationSec],
  };
}
