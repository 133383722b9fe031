import type { LocalHandoff } from '../../common/local-handoff.js';
import { setMaxListeners } from 'node:events';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { jobLogFields, traceMetadata } from '../../common/trace.js';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { fileDigest } from '../../common/chunks.js';
import { AppError, errorMessage, isAppError } from '../../common/errors.js';
import { deferred } from '../../common/deferred.js';
import { callUnary, deadline, iterateStream } from '../../common/grpc.js';
import type { ClientCache } from '../../common/grpc-clients.js';
import type { Logger } from '../../common/logger.js';
import { retry, sleep } from '../../common/retry.js';
import { asAppError, isEtcdOutage, withEtcdRetry } from '../../common/etcd-retry.js';
import { checkpointComplete, type SegmentOwner, type UploaderRecord } from '../../common/records.js';
import { NodeAgentClient, UploaderClient } from '../../common/bulk-codec.js';
import type { FinalizeEvent, PartRef } from '../../proto/gen/tessera/v1/uploader.js';
import type { JobResult } from '../../proto/gen/tessera/v1/types.js';
import { type SourcePlan } from './source-plan.js';
import { constantRateSpans, partSpans } from './part-spans.js';
import { extractAudio, splitFrameCuts, splitVideo } from '../../transcoder/split.js';
import { BACKGROUND_NICE, FOREGROUND_NICE } from '../../transcoder/ffmpeg-limits.js';
import { sendPart } from '../../uploader/part-client.js';
import type { CoordinatorConfig } from '../config.js';
import { inFlight, isInFlight, TERMINAL, type InFlightJob, type JobRecord, type PlannedCut, type SegmentRecord } from '../state/job-model.js';
import type { JobStore, LeaderFence, ResumeFacts } from '../state/job-store.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { NodeRegistry, NodeView } from '../state/node-registry.js';
import { fits, jobPlacement, whyNoNode, type Placement } from '../../common/placement.js';
import { examineInput, planCuts, planJob, refuseReferences, type PlannedCuts, type ScannedInput } from './job-preparation.js';
import { ProgressTracker } from './progress.js';
import { dispatchSegment, type DispatchDeps, type SegmentSource } from './segment-dispatch.js';
import type { WorkStealer } from '../scheduling/work-stealing.js';
import type { RangedInput, RangeServer } from '../input/range-source.js';
import { Readable } from 'node:stream';
import { classifyInput, outputKey, parseOutput, keyframePeriod, parsePackage, resolveLocalInput } from '../api/spec.js';
import { GOP_SECONDS } from '../../transcoder/ffmpeg-args.js';
import { stageInput } from '../input/input.js';
import { ensureRoom, neverFits } from '../../common/staging-space.js';
import { outboundPolicy } from '../input/safe-http.js';

export interface RunnerDeps {
  cfg: CoordinatorConfig;
  store: JobStore;
  registry: NodeRegistry;
  clients: ClientCache;
  s3: S3Client;
  log: Logger;
  metrics: CoordinatorMetrics;
  encoders: ReadonlySet<string>;
  stagingDir: string;
  load: Map<string, number>;
  /** Reads remote inputs in ranges (absent: they are staged whole). */
  ranges?: RangeServer | undefined;
  /** Work stealing between the nodes (absent: off). */
  stealer?: WorkStealer | undefined;
  /** Segments go to co-located node agents by path (LOCAL_HANDOFF; absent: streamed). */
  handoff?: LocalHandoff | undefined;
  /** Jobs waiting for a node their placement allows (the autoscaler grows the matching pool). */
  waiting?: Map<string, Placement>;
  /** Called with newly reported transcoded frames (throughput, metrics). */
  onFrames: (frames: number) => void;
  /** A job that did not succeed: abort its S3 upload, delete its uploaded input (after the uploader's Cleanup). */
  releaseLeftovers?: (rec: JobRecord) => Promise<void>;
}

/**
 * Drives one job from PREPARING to a terminal state on the leader. Re-entrant: a new leader
 * calls it for a job in any non-terminal state and it continues from what etcd records (the
 * plan, the segments already DONE, the checkpoints of the rest).
 */
export class JobRunner {
  private readonly log: Logger;
  private readonly dir: string;
  /** Each segment's file, settled as soon as the split has made it (dispatch does not wait for the rest). */
  private segmentReady: Promise<string>[] = [];
  /** The source's keyframe times (s from the first presented frame): where parts join exactly. */
  private keyTimes: number[] = [];
  /** Packets in each segment's file (what its node cuts and counts). */
  private fileFrames: number[] = [];
  /** What resolving the ladder against the source changed (status trail, manifest). */
  private ladderNotes: string[] = [];

  constructor(
    private readonly d: RunnerDeps,
    private readonly jobId: string,
    private readonly fence: LeaderFence,
  ) {
    this.log = d.log.child(jobLogFields(jobId));
    this.dir = join(d.stagingDir, jobId);
  }

  async run(signal: AbortSignal): Promise<void> {
    try {
      // A round ends early when the uploader lost parts at finalize (they are transcoded again).
      for (this.reopened = false; ; this.reopened = false) {
        await this.runOnce(signal);
        if (!this.reopened || signal.aborted) return;
      }
    } finally {
      this.rangedInput?.close();
    }
  }

  /** The remote input, open for ranged reads while this runner needs it. */
  private rangedInput: RangedInput | undefined;

  /** Parts lost on the uploader were reopened this round: run() goes round again. */
  private reopened = false;
  private reopens = 0;

  /**
   * The uploader lost parts (its disk, or a new uploader): their sub-segments leave the
   * checkpoints and the job goes back to RUNNING on that uploader, in one fenced transaction.
   * The next round dispatches only what is not done and sends the audio again.
   */
  private async reopenLost(err: LostPartsError, signal: AbortSignal): Promise<void> {
    if (++this.reopens > MAX_REOPENS) throw new AppError('FAILED_PRECONDITION', `the uploader lost parts ${MAX_REOPENS} times: ${err.message}`, { retryable: false });
    const lost = new Map<number, number[]>();
    for (const p of err.missing) if (p.rendition !== 'audio') lost.set(p.segment, [...new Set([...(lost.get(p.segment) ?? []), p.subSegment])]);
    if (err.missing.some((p) => p.rendition === 'audio')) {
      // The next round sends the audio again (from the input): it is no longer at the uploader.
      const facts = await withEtcdRetry('read resume facts', () => this.d.store.getResumeFacts(this.jobId), { signal, log: this.log });
      if (facts) {
        const { audioSentTo: _gone, ...rest } = facts;
        await withEtcdRetry('record audio lost', () => this.d.store.putResumeFacts(this.jobId, rest, this.fence), { signal, log: this.log });
      }
    }
    const invalidated = await withEtcdRetry(
      'reopen lost parts',
      () => this.d.store.reopenSubSegments(this.jobId, lost, err.uploaderId, `uploader ${err.uploaderId} lacks ${err.missing.length} part(s)`, this.fence),
      { signal, log: this.log },
    );
    this.d.metrics.retries.inc({ kind: 'lost_parts' });
    this.log.warn({ uploaderId: err.uploaderId, missing: err.missing.length, segments: lost.size, subSegments: invalidated }, 'parts lost on the uploader: transcoding them again');
    this.reopened = true;
  }

  private async runOnce(signal: AbortSignal): Promise<void> {
    const { store } = this.d;
    let rec = await store.get(this.jobId);
    if (!rec || TERMINAL.has(rec.state)) return;
    const tracker = new ProgressTracker((p) => store.setProgress(this.jobId, p), this.d.cfg.PROGRESS_INTERVAL_MS, await store.getProgress(this.jobId));
    const timings: Record<string, number> = { ...rec.timings };
    const t0 = Date.now();
    try {
      // Past splitting (RUNNING, FINALIZING) with the cut's facts recorded: resume without the
      // input. It is fetched and cut again only if a segment must be sent to a node again.
      const facts = rec.state === 'RUNNING' || rec.state === 'FINALIZING' ? await store.getResumeFacts(this.jobId) : undefined;
      const prepared = facts && isInFlight(rec) ? await this.resumeWithoutInput(rec, facts, tracker, signal) : await this.prepare(rec, tracker, signal);
      const job = prepared.rec;
      timings.prepareMs = Date.now() - t0;
      const plan = job.plan;
      const uploader = prepared.uploader;

      // RUNNING: every segment not DONE, in parallel, each to its node.
      const t1 = Date.now();
      // A first run's segments were just written PENDING (nothing to read back: two etcd round trips saved).
      const tree = prepared.fresh ? undefined : await store.tree(this.jobId);
      const segs = new Map((tree?.segments ?? []).map((s) => [s.index, s]));
      // What the previous leader left running: re-attached by job, segment, attempt and owner revision.
      const owners = prepared.fresh
        ? new Map<number, SegmentOwner & { revision: number }>()
        : await store.segmentOwners(
            this.jobId,
            plan.cuts.filter((c) => segs.get(c.index)?.state !== 'DONE').map((c) => c.index),
          );
      const inner = new AbortController();
      setMaxListeners(0, inner.signal);
      const onOuter = (): void => inner.abort(signal.reason);
      signal.addEventListener('abort', onOuter, { once: true });
      const lastFrames = new Map<number, number>();
      const dispatchDeps: DispatchDeps = {
        cfg: this.d.cfg,
        store,
        registry: this.d.registry,
        clients: this.d.clients,
        metrics: this.d.metrics,
        log: this.log,
        load: this.d.load,
        stealer: this.d.stealer,
        handoff: this.d.handoff,
      };
      const placement = jobPlacement(job.spec); // the same for every segment of the job
      try {
        const results = await Promise.allSettled(
          plan.cuts.map(async (cut, position) => {
            const seg: SegmentRecord = segs.get(cut.index) ?? { index: cut.index, state: 'PENDING', nodeId: cut.nodeId, attempt: 0, startSec: cut.startSec, endSec: cut.endSec, frames: cut.frames };
            if (seg.state === 'DONE') {
              tracker.segment(cut.index, { framesDone: cut.frames, framesTotal: cut.frames, subSegments: 0, subSegmentsDone: 0, done: true, subSegmentsTranscoded: 0 });
              return;
            }
            // Every sub-segment checkpointed (it finished while no leader watched): done.
            const cp = tree?.checkpoints.get(cut.index);
            if (checkpointComplete(cp)) {
              const doneSeg: SegmentRecord = { ...seg, state: 'DONE' };
              await withEtcdRetry('record segment done', () => store.putSegment(this.jobId, doneSeg, 'all sub-segments done (found in the checkpoint)', this.fence), {
                signal: inner.signal,
                log: this.log,
              });
              tracker.segment(cut.index, { framesDone: cut.frames, framesTotal: cut.frames, subSegments: 0, subSegmentsDone: 0, done: true, subSegmentsTranscoded: 0 });
              return;
            }
            const owner = owners.get(cut.index);
            await dispatchSegment(
              {
                jobId: this.jobId,
                seg,
                source: () => this.segmentSource(cut.index, tracker, signal),
                resume:
                  owner && owner.attempt === seg.attempt && owner.nodeId === seg.nodeId && seg.attempt > 0 && (seg.state === 'TRANSFERRING' || seg.state === 'TRANSCODING')
                    ? { nodeId: owner.nodeId, attempt: owner.attempt, ownerRevision: owner.revision }
                    : undefined,
                renditions: plan.renditions,
                fps: job.source.fps || 30,
                treatment: prepared.treatment,
                fileFrames: this.fileFrames[cut.index] ?? seg.frames,
                // A frame cut says what to drop; a keyframe cut drops only an edit list's lead-in.
                leadInFrames: cut.leadIn ?? (cut.index === 0 ? prepared.leadIn : 0),
                leadOutFrames: cut.leadOut ?? 0,
                constantRate: plan.constantRate ? { num: plan.constantRate.num, den: plan.constantRate.den, ...plan.constantRate.windows[position]! } : undefined,
                placement,
                keyframeGrid: plan.keyframeGrid
                  ? { periodSec: plan.keyframeGrid.periodSec, originSec: plan.keyframeGrid.windows[position]!.originSec, startSec: plan.keyframeGrid.windows[position]!.startSec }
                  : undefined,
                uploaderAddress: uploader.address,
                uploaderId: uploader.id,
                // Per attempt: the job's uploader, or another while it is gone (lost parts follow at finalize).
                uploader: () => this.pickUploader(uploader.id),
                fence: this.fence,
                onEvent: (ev) => {
                  const before = lastFrames.get(cut.index) ?? 0;
                  if (ev.framesDone > before) this.d.onFrames(ev.framesDone - before);
                  lastFrames.set(cut.index, Math.max(before, ev.framesDone));
                  tracker.segment(cut.index, ev);
                },
              },
              dispatchDeps,
              inner.signal,
            ).catch((err: unknown) => {
              inner.abort(err);
              throw err;
            });
          }),
        );
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw signal.aborted ? signal.reason : (inner.signal.reason ?? failed.reason);
      } finally {
        signal.removeEventListener('abort', onOuter);
      }
      timings.transcodeMs = Date.now() - t1;
      await prepared.audio;

      // FINALIZING: the canonical part of every sub-segment, in order, to the uploader.
      const t2 = Date.now();
      const finalizing = inFlight(await withEtcdRetry('record FINALIZING', () => store.transition(this.jobId, 'FINALIZING', 'all segments done', { timings }, this.fence), { signal, log: this.log }));
      // The uploader may restart mid-finalize: parts are durable there and finalize resumes its
      // multipart upload, so retry transient failures (with backoff) on the same uploader id.
      const result = await retry(async () => this.finalize(finalizing, await this.waitForUploader(signal, finalizing.uploaderId), tracker, timings, signal), {
        attempts: 30,
        baseMs: 250,
        maxMs: 5_000,
        signal,
        // The error's own marker decides (lost parts are permanent here: reopened below).
        isRetryable: (e) => asAppError(e).retryable,
        onRetry: (e, n) => {
          this.d.metrics.retries.inc({ kind: 'finalize' });
          this.log.warn({ err: errorMessage(e), attempt: n }, 'finalize failed; retrying');
        },
      }).catch(async (e: unknown) => {
        if (!(e instanceof LostPartsError)) throw e;
        await this.reopenLost(e, signal);
        return undefined;
      });
      if (!result) return; // reopened: run() goes round again
      timings.finalizeMs = Date.now() - t2;
      timings.totalMs = Date.now() - finalizing.createdAtMs;
      await tracker.flush();
      // The archive is in S3: keep trying to say so through an etcd outage (a retry after a
      // lost answer finds the job SUCCEEDED already and ends quietly).
      await withEtcdRetry('record SUCCEEDED', () => store.transition(this.jobId, 'SUCCEEDED', 'archive uploaded', { result, timings, stage: 'done' }, this.fence), { signal, log: this.log });
      this.log.info({ key: result.key, bytes: result.bytes, timings }, 'job succeeded');
    } catch (err) {
      tracker.stop();
      await tracker.flush();
      if (isAppError(err, 'NOT_LEADER')) {
        this.log.warn('lost leadership; leaving the job to the new leader');
        // The new leader works from etcd (and cuts the input again if it must): this copy of the
        // input and its segments would only hold the disk.
        await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
        return;
      }
      // Classified once, by the etcd adapter's boundary: raw etcd3 errors arrive as AppErrors.
      const e = asAppError(err, { what: 'job run' });
      if (!signal.aborted && isEtcdOutage(e)) {
        // Not the job's fault: it stays in flight and the scheduler runs it again (same leader
        // term) once etcd answers; segments resume from their checkpoints.
        this.log.warn({ err: errorMessage(err) }, 'etcd unavailable: the job stays in flight and is resumed');
        return;
      }
      const now = await withEtcdRetry('read job', () => store.get(this.jobId), { signal, log: this.log }).catch(() => undefined);
      if (now && TERMINAL.has(now.state)) return; // cancelled while we ran
      if (signal.aborted && !isAppError(err)) return;
      this.log.warn({ code: e.code, err: e.message }, 'job failed');
      // Retried through an etcd outage; if it still cannot be written the job stays in flight
      // and the scheduler runs it again (no runner ends without a final state).
      await withEtcdRetry(
        'record FAILED',
        () => store.transition(this.jobId, 'FAILED', e.message, { errorCode: e.code, errorMessage: e.code === 'INTERNAL' && !isAppError(err) ? 'internal error' : e.message, timings }, this.fence),
        { signal, log: this.log },
      ).catch((e2: unknown) => this.log.warn({ err: e2 }, 'could not record the failure'));
    } finally {
      tracker.stop();
      const final = await store.get(this.jobId).catch(() => undefined);
      if (final && TERMINAL.has(final.state)) await this.cleanup(final);
    }
  }

  /**
   * An uploader for the job (its own when it has one). While none is registered (restarting,
   * re-joining after an etcd outage) it waits, up to UPLOADER_WAIT_MS; then the job fails
   * rather than waiting for ever.
   */
  private async waitForUploader(signal: AbortSignal, preferred?: string): Promise<UploaderRecord> {
    const deadline = Date.now() + this.d.cfg.UPLOADER_WAIT_MS;
    for (let warned = false; ;) {
      const pick = this.pickUploader(preferred);
      if (pick) return pick;
      if (Date.now() >= deadline) {
        throw new AppError('UNAVAILABLE', `no uploader registered for ${this.d.cfg.UPLOADER_WAIT_MS} ms${preferred ? ` (this job's is ${preferred})` : ''}`, { retryable: false });
      }
      if (!warned) {
        warned = true;
        this.log.warn({ uploaderId: preferred, waitMs: this.d.cfg.UPLOADER_WAIT_MS }, 'no uploader registered; waiting');
      }
      await sleep(250, signal);
    }
  }

  /** The job's uploader while registered, else one chosen by job id (the same each time). */
  private pickUploader(preferred?: string): UploaderRecord | undefined {
    const list = this.d.registry.uploaderList();
    return list.find((u) => u.id === preferred) ?? list[hash(this.jobId) % Math.max(1, list.length)];
  }

  /**
   * The ready nodes the job may run on (the capabilities its rungs need, the labels it is pinned
   * to). While there is none it waits, saying in the job's stage what each ready node lacks.
   */
  private async nodesForPlan(rec: JobRecord, signal: AbortSignal): Promise<NodeView[]> {
    const placement = jobPlacement(rec.spec);
    const eligible = (): NodeView[] => this.eligibleNodes(rec);
    let nodes = eligible();
    if (nodes.length > 0) return nodes;
    let said = '';
    this.d.waiting?.set(this.jobId, placement);
    try {
      while (nodes.length === 0) {
        const why = whyNoNode(this.d.registry.ready(), placement);
        if (why !== said) {
          await this.d.store.setStage(this.jobId, why, this.fence);
          this.log.info({ reason: why }, 'job waits for a node');
          said = why;
        }
        await sleep(250, signal);
        nodes = eligible();
      }
    } finally {
      this.d.waiting?.delete(this.jobId);
    }
    return nodes;
  }

  /** Ready nodes the job may run on (none: the plan waits for one, nodesForPlan). */
  private eligibleNodes(rec: JobRecord): NodeView[] {
    const placement = jobPlacement(rec.spec);
    return this.d.registry.ready().filter((n) => fits(n, placement));
  }

  /** The cut this runner runs (a preparation tried again stops and awaits the one before). */
  private split: { stop: AbortController; run: Promise<void> } | undefined;

  /**
   * Cuts the input by `cuts` with stream copy (deterministic: a new leader re-cuts identically),
   * in the background: each segment is sent once it is cut, so the first node starts before the
   * last segment exists (and a long input is never all on disk at once).
   */
  private startSplit(inputPath: string, cuts: readonly PlannedCut[], scanned: ScannedInput, signal: AbortSignal): void {
    const previous = this.split;
    previous?.stop.abort(new AppError('CANCELLED', 'the input is cut again'));
    const stop = new AbortController();
    const cutSignal = AbortSignal.any([signal, stop.signal]);
    const segDir = join(this.dir, 'segments');
    const ready = cuts.map(() => deferred<string>());
    this.segmentReady = ready.map((r) => r.promise);
    const onSegment = (i: number, file: string): void => ready[i]?.resolve(file);
    // Above the encodes (and the job's audio): every node waits for its segment's file.
    const opts = { signal: cutSignal, ...scanned.source, limits: { ...scanned.source.limits, nice: FOREGROUND_NICE } };
    const run = (async () => {
      await previous?.run;
      await rm(segDir, { recursive: true, force: true });
      await mkdir(segDir, { recursive: true });
      const files = cuts.every((c) => c.fromPacket !== undefined && c.toPacket !== undefined)
        ? // Frame cuts: each file holds its packet range (boundary GOPs go to both neighbours).
          await splitFrameCuts(
            inputPath,
            segDir,
            cuts.map((c) => ({ fromPacket: c.fromPacket!, toPacket: c.toPacket! })),
            scanned.packets.frames,
            { ...opts, onSegment },
          )
        : // Keyframe cuts (open GOPs, or a plan made before frame cuts).
          await splitVideo(
            inputPath,
            segDir,
            cuts.slice(1).map((c) => c.startSec),
            { ...opts, packets: scanned.packets, onFile: onSegment },
          );
      if (files.length !== cuts.length) throw new AppError('INTERNAL', `split produced ${files.length} segments, planned ${cuts.length}`);
    })().catch((err: unknown) => {
      if (!stop.signal.aborted) this.log.warn({ err: errorMessage(err) }, 'cutting the input failed');
      for (const r of ready) r.reject(err);
    });
    this.split = { stop, run };
  }

  /** PREPARING: stage, probe, plan, split by node count, start the audio task; → RUNNING. */
  private async prepare(rec0: JobRecord, tracker: ProgressTracker, signal: AbortSignal, opts: { audio: boolean } = { audio: true }): Promise<Prepared> {
    try {
      return await this.prepareOnce(rec0, tracker, signal, opts);
    } catch (err) {
      this.split?.stop.abort(err); // a cut started before the preparation failed stops with it
      throw err;
    }
  }

  private async prepareOnce(rec0: JobRecord, tracker: ProgressTracker, signal: AbortSignal, opts: { audio: boolean }): Promise<Prepared> {
    const { cfg, store } = this.d;
    let rec = rec0;
    const uploader = await this.waitForUploader(signal, rec.uploaderId);
    await mkdir(this.dir, { recursive: true });
    let inputPath = join(this.dir, 'input.src');
    const resumed = rec.plan !== undefined;
    // Past the first split, Tessera's own copy of an http(s) input replaces its URL.
    this.facts ??= resumed ? await store.getResumeFacts(this.jobId) : undefined;
    const stashed = this.facts?.inputStash;
    let input = classifyInput(stashed ?? rec.spec.inputUri);
    if (input.kind === 'local') input = await resolveLocalInput(input.path, cfg.INPUT_ROOT, cfg.MAX_INPUT_BYTES);
    if (stashed) this.log.info({ stash: stashed }, 'reading the input from its copy in S3');
    const stashNeeded = !stashed && input.kind === 'http' && cfg.STASH_HTTP_INPUTS;
    // A remote input is read in ranges where its origin serves them: never staged whole.
    let ranged: RangedInput | undefined;
    if (!existsSync(inputPath) && input.kind !== 'local' && cfg.RANGED_INPUTS && this.d.ranges) {
      ranged = await this.d.ranges.open(input, { s3: this.d.s3, policy: outboundPolicy(cfg), timeoutMs: cfg.HTTP_INPUT_TIMEOUT_MS, maxBytes: cfg.MAX_INPUT_BYTES, signal });
      if (ranged) {
        this.rangedInput?.close();
        this.rangedInput = ranged;
        inputPath = ranged.url;
        this.log.info({ bytes: ranged.totalBytes }, 'reading the input in ranges (not staged)');
      }
    }
    if (!ranged && !existsSync(inputPath)) {
      await stageInput(input, inputPath, {
        maxBytes: cfg.MAX_INPUT_BYTES,
        timeoutMs: cfg.HTTP_INPUT_TIMEOUT_MS,
        s3: this.d.s3,
        policy: outboundPolicy(cfg),
        signal,
        // Room for the input before a byte is written: a disk too small fails the job with its own
        // code; a disk busy with other jobs is waited for (never filled, so never evicted).
        // (the input, the GOP pieces a frame cut copies, and the segments: three times its size at the peak)
        room: (bytes) => this.stagingRoom(3 * bytes, 'the input and the segments cut from it', signal),
      });
    }
    // And for the segments cut from it (stream copies: twice the input's size at the peak).
    const inputBytes = ranged ? ranged.totalBytes : (await stat(inputPath)).size;
    await this.stagingRoom(2 * inputBytes, 'the segments cut from the input', signal);
    tracker.preparing(0.2);
    await refuseReferences(inputPath);
    // Probe, gate, packet scan, timeline: the same preparation as the dry run's (job-preparation.ts).
    // The cut starts as soon as the packets are known (with the nodes ready then), beside the idet
    // sample and the timeline: its files depend on the packets and the nodes only.
    const planBase = { minSegmentSec: cfg.MIN_SEGMENT_SEC, recorded: rec.plan };
    // (assigned in the callback: the cast keeps TypeScript from narrowing it to undefined)
    let early = undefined as (PlannedCuts & { nodes: NodeView[] }) | undefined;
    const examined = await examineInput(inputPath, rec.spec, cfg, {
      signal,
      onProbed: () => tracker.preparing(0.4),
      onScanned: (s) => {
        const nodes = rec.plan ? [] : this.eligibleNodes(rec);
        if (!rec.plan && nodes.length === 0) return; // cut once a node is there (below)
        early = { nodes, ...planCuts(s, rec.spec, { ...planBase, nodes }) };
        this.startSplit(inputPath, early.cuts, s, signal);
      },
    });
    const { source, sourcePlan } = examined;
    const nodes = early?.nodes ?? (rec.plan ? [] : await this.nodesForPlan(rec, signal));
    const planned = planJob(examined, rec.spec, { ...planBase, nodes, encoders: this.d.encoders, output: outputOf(rec.spec, cfg, this.jobId), cut: early });
    this.keyTimes = planned.keyTimes;
    this.ladderNotes = planned.ladderNotes;
    this.fileFrames = planned.fileFrames;
    const cuts = planned.plan.cuts;
    const sourceInfo = planned.sourceInfo;
    const total = planned.totalFrames;
    const { constantRate, keyframeGrid } = planned.plan;
    if (!rec.plan) rec = { ...rec, plan: planned.plan };

    if (!early) this.startSplit(inputPath, cuts, examined, signal);
    tracker.setTotalFrames(total);
    tracker.preparing(0.8);

    // Audio: every kept track taken out and encoded once for the whole job, in parallel with the
    // video work, each aligned to the first presented video frame. Recorded once the uploader has
    // it, so a new leader does not need the input for it.
    const facts: ResumeFacts = { keyTimes: this.keyTimes, fileFrames: this.fileFrames, leadIn: sourcePlan.leadIn, totalFrames: total, ...(stashed ? { inputStash: stashed } : {}) };
    // The audio's and the stash's records follow the facts' first write (else it could erase them).
    let factsWritten: () => void = () => undefined;
    const factsReady = new Promise<void>((r) => {
      factsWritten = r;
    });
    // The input's copy in S3, stored beside the work (awaited before finalize).
    const stash = !stashNeeded
      ? Promise.resolve()
      : (async () => {
          const key = `staging/${this.jobId}/input`;
          const size = inputBytes;
          const body = ranged ? Readable.fromWeb((await fetch(inputPath, { signal })).body! as import('node:stream/web').ReadableStream) : createReadStream(inputPath);
          await this.d.s3.send(new PutObjectCommand({ Bucket: cfg.S3_BUCKET, Key: key, Body: body, ContentLength: size }), { abortSignal: signal });
          await factsReady;
          await this.updateFacts({ inputStash: `s3://${cfg.S3_BUCKET}/${key}` }, signal);
          this.log.info({ bucket: cfg.S3_BUCKET, key, bytes: size }, 'input copied to S3');
        })().catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'could not copy the input to S3; a new leader would fetch it again'));
    const audio = !opts.audio
      ? Promise.resolve()
      : (async () => {
          await Promise.all(
            sourcePlan.audioTracks.map(async (t, k) => {
              const audioPath = join(this.dir, `audio-${k}.m4a`);
              // Below the cut and the first encodes the nodes wait for: the audio is needed at finalize.
              await extractAudio(inputPath, audioPath, {
                bitrateKbps: rec.spec.audioBitrateKbps || 128,
                track: t.index,
                downmix: t.downmix,
                offsetSec: t.offsetSec,
                signal,
                ...source,
                limits: { ...source.limits, nice: BACKGROUND_NICE },
              });
              await sendPart(this.d.clients.get(UploaderClient, uploader.address, uploader.id), audioRef(this.jobId, k), audioPath, { timeoutMs: cfg.SEGMENT_TRANSFER_TIMEOUT_MS, signal });
            }),
          );
          await factsReady;
          await this.updateFacts({ audioSentTo: uploader.id }, signal);
        })();
    audio.catch(() => undefined); // awaited before finalize; avoid an unhandled rejection meanwhile

    if (!resumed || rec0.state === 'PREPARING') {
      const plan = { ...planned.plan, ...(constantRate ? { constantRate } : {}), ...(keyframeGrid ? { keyframeGrid } : {}) };
      const segPuts: [string, string][] = cuts.map((c) => [
        this.d.store.keysFor().segment(this.jobId, c.index),
        JSON.stringify({ index: c.index, state: 'PENDING', nodeId: c.nodeId, attempt: 0, startSec: c.startSec, endSec: c.endSec, frames: c.frames } satisfies SegmentRecord),
      ]);
      const res = await store.updateActive(
        this.jobId,
        (r, now) => ({
          next: { ...r, state: 'RUNNING', stage: 'transcoding segments', source: sourceInfo, plan, uploaderId: uploader.id },
          trail: [
            ...this.ladderNotes.map((reason) => ({ atMs: now, scope: 'ladder', state: 'CHANGED', nodeId: '', attempt: 0, reason })),
            { atMs: now, scope: 'job', state: 'RUNNING', nodeId: '', attempt: 0, reason: `split into ${cuts.length} segment(s) for ${new Set(cuts.map((c) => c.nodeId)).size} node(s)` },
          ],
        }),
        { fence: this.fence, extraPuts: [...(resumed ? [] : segPuts), [store.keysFor().jobPlan(this.jobId), JSON.stringify(facts)]] },
      );
      if (!res.changed) throw new AppError('CANCELLED', 'job is no longer active');
      rec = res.rec;
    } else if (opts.audio) {
      await withEtcdRetry('record resume facts', () => store.putResumeFacts(this.jobId, facts, this.fence), { signal, log: this.log });
    }
    if (opts.audio || !this.facts) this.facts = facts;
    factsWritten();
    tracker.preparing(1);
    const sent = Promise.all([audio, stash]).then(() => undefined);
    sent.catch(() => undefined); // awaited before finalize, as the audio alone was
    return { rec: inFlight(rec), uploader, audio: sent, treatment: sourceInfo.treatment, leadIn: sourcePlan.leadIn, fresh: !resumed };
  }

  /** The cut's facts as this runner last wrote or read them. */
  private facts: ResumeFacts | undefined;
  private factsChain: Promise<void> = Promise.resolve();

  /** Adds to the cut's facts (fenced; one write at a time: the audio and the stash both add). */
  private updateFacts(patch: Partial<ResumeFacts>, signal: AbortSignal): Promise<void> {
    const next = this.factsChain.then(async () => {
      if (!this.facts) return;
      const f: ResumeFacts = { ...this.facts, ...patch };
      await withEtcdRetry('record resume facts', () => this.d.store.putResumeFacts(this.jobId, f, this.fence), { signal, log: this.log });
      this.facts = f;
    });
    this.factsChain = next.catch(() => undefined);
    return next;
  }

  /** The input staged and cut again, once per runner, only when a segment must be sent again. */
  private materializing: Promise<Prepared> | undefined;

  /** The job record a resumed runner started from (materialize re-cuts by its plan). */
  private resumedFrom: JobRecord | undefined;

  /** Segment `index`'s file with its size and CRC-32; cut from the input first if this runner has not. */
  private async segmentSource(index: number, tracker: ProgressTracker, signal: AbortSignal): Promise<SegmentSource> {
    if (this.segmentReady[index] === undefined && this.resumedFrom) {
      const from = this.resumedFrom;
      this.materializing ??= (async () => {
        this.log.info({ segment: index }, 'a segment must be sent again: staging and cutting the input');
        return this.prepare(from, tracker, signal, { audio: false });
      })();
      await this.materializing;
    }
    const ready = this.segmentReady[index];
    if (ready === undefined) throw new AppError('INTERNAL', `segment ${index} has no file`);
    const file = await ready;
    await this.checkNodeStaging(index, file);
    // The CRC-32 guards a streamed copy; a node that reads the file itself (local handoff) needs
    // none, and the pass over the segment (0.4 s for two 58 MB segments here) is not made for it.
    let crc: Promise<string> | undefined;
    return { file, bytes: (await stat(file)).size, crc32: () => (crc ??= fileDigest(file, 'crc32').then((d) => d.hex)) };
  }

  /**
   * A job past splitting, resumed by a new leader from what etcd records (plan, source facts,
   * the cut's facts): no input is fetched, probed or cut. Segments the nodes still run are
   * re-attached; only a segment that must go to a node again makes this runner cut the input.
   * Without the audio at the job's uploader it takes the full path (the audio needs the input).
   */
  private async resumeWithoutInput(rec: InFlightJob, facts: ResumeFacts, tracker: ProgressTracker, signal: AbortSignal): Promise<Prepared> {
    const uploader = await this.waitForUploader(signal, rec.uploaderId);
    if (facts.audioSentTo !== uploader.id) {
      this.log.info({ uploaderId: uploader.id, audioSentTo: facts.audioSentTo ?? '' }, 'the audio is not recorded at the uploader: resuming from the input');
      return this.prepare(rec, tracker, signal);
    }
    this.keyTimes = facts.keyTimes;
    this.fileFrames = facts.fileFrames;
    this.facts = facts;
    this.resumedFrom = rec;
    tracker.setTotalFrames(facts.totalFrames);
    tracker.preparing(1);
    this.log.info({ state: rec.state }, 'resuming past splitting without the input');
    return { rec, uploader, audio: Promise.resolve(), treatment: rec.source.treatment, leadIn: facts.leadIn };
  }

  private async finalize(rec: InFlightJob, uploader: UploaderRecord, tracker: ProgressTracker, timings: Record<string, number>, signal: AbortSignal): Promise<JobResult> {
    const plan = rec.plan;
    const checkpoints = await this.d.store.checkpoints(this.jobId);
    for (const cut of plan.cuts) if (!checkpoints.get(cut.index)) throw new AppError('INTERNAL', `segment ${cut.index} has no checkpoint`);
    // Each part's exact span of the source: the merge joins on the source's timestamps.
    const spans = partSpans(plan.cuts, new Map(plan.cuts.map((c) => [c.index, checkpoints.get(c.index)!.boundaries])), this.keyTimes);
    // Converted to a constant rate: each part lasts its frames on the job's grid.
    const cr = plan.constantRate;
    const gridSpans = cr
      ? constantRateSpans(
          cr,
          cr.windows,
          plan.cuts.map((c) => checkpoints.get(c.index)!.boundaries),
        )
      : undefined;
    const parts: PartRef[] = [];
    plan.cuts.forEach((cut, s) => {
      const cp = checkpoints.get(cut.index)!;
      const subs = cp.boundaries.length - 1;
      for (let sub = 0; sub < subs; sub++) {
        const done = cp.done.find((x) => x.sub === sub);
        if (!done) throw new AppError('INTERNAL', `segment ${cut.index} sub-segment ${sub} is not done`);
        const durationSec = gridSpans ? gridSpans[s]?.[sub] : this.keyTimes.length ? spans[s]?.[sub] : undefined;
        for (const r of plan.renditions) {
          const sha256 = done.sha256?.[r.name];
          parts.push({
            jobId: this.jobId,
            rendition: r.name,
            segment: cut.index,
            subSegment: sub,
            attempt: done.attempt,
            ...(durationSec !== undefined ? { durationSec } : {}),
            ...(sha256 ? { sha256 } : {}),
          });
        }
      }
    });
    const pkg = parsePackage(rec.spec.package ?? '');
    const streamFormats = pkg.streaming;
    const client = this.d.clients.get(UploaderClient, uploader.address, uploader.id);
    const call = client.finalize(
      {
        jobId: this.jobId,
        parts,
        audio: undefined,
        audioTracks: (rec.source?.audioTracks ?? []).map((info, k) => ({ part: audioRef(this.jobId, k), info })),
        expectedFrames: cr ? cr.frames : Math.round((rec.source?.frames ?? 0) * (rec.source?.fieldRateFactor || 1)),
        renditions: plan.renditions,
        container: plan.container,
        bucket: plan.bucket,
        key: plan.key,
        source: rec.source,
        timingsJson: JSON.stringify(timings),
        notes: rec.history.filter((h) => h.scope === 'ladder').map((h) => h.reason),
        ...(streamFormats.length
          ? { packaging: { formats: streamFormats, segmentSec: rec.plan?.keyframeGrid?.periodSec ?? keyframePeriod(rec.spec) ?? GOP_SECONDS, ...(pkg.zip ? {} : { noZip: true }) } }
          : {}),
      },
      traceMetadata(this.jobId),
      deadline(this.d.cfg.FINALIZE_TIMEOUT_MS),
    );
    const onAbort = (): void => call.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
    const missing: PartRef[] = [];
    try {
      let result: JobResult | undefined;
      try {
        for await (const ev of iterateStream<FinalizeEvent>(call)) {
          if (ev.missing.length > 0) missing.push(...ev.missing);
          else tracker.finalizing(ev.progress);
          if (ev.result) result = ev.result;
        }
      } catch (err) {
        if (missing.length > 0 && isAppError(err, 'FAILED_PRECONDITION')) throw new LostPartsError(uploader.id, missing, err);
        throw err;
      }
      if (!result) throw new AppError('UNAVAILABLE', 'the uploader ended finalize without a result');
      return result;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * A segment no node's staging can ever hold (it takes the segment and its chunks, twice its
   * size) fails the job now with STAGING_TOO_SMALL, instead of going round every node until its
   * attempts run out. Nodes that do not say what they hold are not judged.
   */
  private async checkNodeStaging(i: number, file: string): Promise<void> {
    const nodes = this.d.registry.all().filter((n) => !n.draining);
    const caps = nodes.map((n) => n.stats?.stagingBytes);
    if (caps.length === 0 || caps.some((c) => c === undefined)) return;
    const largest = Math.max(...(caps as number[]));
    const never = neverFits(2 * (await stat(file)).size, largest, 0, `segment ${i} (with the chunks cut from it)`, `the largest node staging (${nodes.length} node(s))`);
    if (never) throw never;
  }

  /** Waits for `bytes` of room in this coordinator's staging (STAGING_TOO_SMALL when they can never fit). */
  private async stagingRoom(bytes: number, what: string, signal: AbortSignal): Promise<void> {
    await ensureRoom(this.dir, bytes, this.d.cfg.STAGING_RESERVE_BYTES, what, {
      signal,
      onWait: (msg) => {
        this.log.warn({ bytes }, msg);
        void this.d.store.setStage(this.jobId, msg, this.fence).catch(() => undefined);
      },
    });
  }

  /** Terminal: free staging space on the uploader, the nodes and here; S3 leftovers of a job that did not succeed. Best effort. */
  private async cleanup(rec: JobRecord): Promise<void> {
    const { clients, registry, cfg } = this.d;
    const tasks: Promise<unknown>[] = [];
    // Each step is handled at once: one that fails while we await the segment tree must not be
    // an unhandled rejection (that took the coordinator down under load).
    const add = (p: Promise<unknown>): void => {
      p.catch(() => undefined);
      tasks.push(p);
    };
    add(rm(this.dir, { recursive: true, force: true }));
    const up = rec.uploaderId ? registry.uploader(rec.uploaderId) : undefined;
    if (up) {
      const c = clients.get(UploaderClient, up.address, up.id);
      add(callUnary(c, c.cleanup, { jobId: this.jobId }, cfg.RPC_TIMEOUT_MS, traceMetadata(this.jobId)));
    }
    if (rec.state !== 'SUCCEEDED') {
      const tree = await this.d.store.tree(this.jobId).catch(() => undefined);
      for (const s of tree?.segments ?? []) {
        const n = registry.get(s.nodeId);
        if (!n || s.attempt === 0) continue;
        const c = clients.get(NodeAgentClient, n.address, n.id);
        add(callUnary(c, c.dropSegment, { jobId: this.jobId, segment: s.index, attempt: s.attempt, leaderTerm: Number(this.fence.createRevision) }, cfg.RPC_TIMEOUT_MS, traceMetadata(this.jobId)));
      }
    }
    const res = await Promise.allSettled(tasks);
    for (const r of res) if (r.status === 'rejected') this.log.debug({ err: errorMessage(r.reason) }, 'cleanup step failed');
    // After the uploader's Cleanup (its finalize has stopped): nothing re-creates the upload now.
    // If this fails (S3 down, or this leader dies first), the history sweeper does it before archiving.
    await this.d.releaseLeftovers?.(rec).catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'could not remove the leftovers of the job; the history sweeper tries again'));
  }
}

/** What preparing (or resuming) a job hands to the dispatch and finalize. */
interface Prepared {
  /** The job past splitting: its plan, source and uploader fixed. */
  rec: InFlightJob;
  uploader: UploaderRecord;
  /** Every audio track sent to the uploader (resolved at once when it already has them). */
  audio: Promise<void>;
  treatment: SourcePlan['info']['treatment'];
  /** Decoded frames segment 0 drops when its cut does not say (an edit list's lead-in). */
  leadIn: number;
  /** Its segments were written just now, all PENDING, with no checkpoint and no owner (a first run). */
  fresh?: boolean;
}

/** Rounds of lost parts one runner transcodes again before the job fails (a disk lost 3 times). */
const MAX_REOPENS = 3;

/** The uploader `uploaderId` does not hold these parts: they must be made again, not re-asked. */
class LostPartsError extends AppError {
  constructor(
    readonly uploaderId: string,
    readonly missing: PartRef[],
    cause: AppError,
  ) {
    super('FAILED_PRECONDITION', cause.message, { cause, retryable: false });
  }
}

/** Audio track `k` of the job's output, as a part the uploader keeps (sub-segment = track). */
function audioRef(jobId: string, k: number): PartRef {
  return { jobId, rendition: 'audio', segment: 0, subSegment: k, attempt: 0 };
}

/** Where the job's archive goes: the spec's output, else the cluster's bucket and prefix. */
function outputOf(spec: JobRecord['spec'], cfg: CoordinatorConfig, jobId: string): { bucket: string; key: string } {
  const out = parseOutput(spec.outputUri, cfg.S3_BUCKET, cfg.OUTPUT_PREFIX);
  return { bucket: out.bucket, key: outputKey(out, jobId) };
}

function hash(s: string): number {
  let h = 0;
  for (const c of s) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return h;
}
