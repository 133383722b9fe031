import { fits, whyNoNode, type Placement } from '../../common/placement.js';
import { jobLogFields, traceMetadata } from '../../common/trace.js';
import { AppError, errorMessage, isAppError } from '../../common/errors.js';
import { callUnary, deadline, iterateStream, openClientStream } from '../../common/grpc.js';
import { sendFileChunks } from '../../common/chunks.js';
import type { LocalFile, LocalHandoff } from '../../common/local-handoff.js';
import type { ClientCache } from '../../common/grpc-clients.js';
import type { Logger } from '../../common/logger.js';
import { retry, sleep } from '../../common/retry.js';
import { asAppError, isEtcdOutage, withEtcdRetry } from '../../common/etcd-retry.js';
import { NodeAgentClient } from '../../common/bulk-codec.js';
import type { ConstantRate, KeyframeGrid, SegmentChunk, SegmentEvent, SegmentRef, TransferStatus } from '../../proto/gen/tessera/v1/agent.js';
import type { PlannedRendition, VideoTreatment } from '../../proto/gen/tessera/v1/types.js';
import type { CoordinatorConfig } from '../config.js';
import type { SegmentRecord } from '../state/job-model.js';
import type { JobStore, LeaderFence } from '../state/job-store.js';
import type { CoordinatorMetrics } from '../metrics.js';
import { incarnation, type NodeRegistry, type NodeView } from '../state/node-registry.js';
import type { WorkStealer, WorkUnit } from '../scheduling/work-stealing.js';

export interface DispatchDeps {
  cfg: CoordinatorConfig;
  store: JobStore;
  registry: NodeRegistry;
  clients: ClientCache;
  metrics: CoordinatorMetrics;
  log: Logger;
  /** Segments this coordinator has in flight per node (for least-loaded placement). */
  load: Map<string, number>;
  /** Work stealing (absent or disabled: each segment's chunks stay on its owner). */
  stealer?: WorkStealer | undefined;
  /** LOCAL_HANDOFF: co-located node agents read the segment's file (absent or off: streamed). */
  handoff?: LocalHandoff | undefined;
}

/** A segment's file as the coordinator cut it, with its size and CRC-32 (the agent verifies streamed bytes against it; computed once, when first asked). */
export interface SegmentSource {
  file: string;
  bytes: number;
  crc32: () => Promise<string>;
}

export interface SegmentTask {
  jobId: string;
  seg: SegmentRecord;
  /**
   * The segment's file, made when first needed: a new leader that re-attaches to work already
   * running on the nodes never stages or cuts the input again.
   */
  source: () => Promise<SegmentSource>;
  /** The attempt the previous leader left running (its owner key): re-attached before anything is reassigned. */
  resume?: { nodeId: string; attempt: number; ownerRevision: number } | undefined;
  renditions: PlannedRendition[];
  fps: number;
  /** Rotation, deinterlacing, tone mapping: the same for every segment of the job. */
  treatment: VideoTreatment | undefined;
  /** Packets in the segment's file (the agent counts what it cuts against it). */
  fileFrames: number;
  /** Decoded frames the agent drops before the segment's first frame (a frame cut's lead-in, an edit list's). */
  leadInFrames: number;
  /** Decoded frames the agent drops after the segment's last frame (a frame cut's lead-out). */
  leadOutFrames: number;
  /** Convert to the job's constant rate: the rate and the segment's window on the presented timeline. */
  constantRate?: ConstantRate | undefined;
  /** Streaming output: IDR frames on the job's time grid. */
  keyframeGrid?: KeyframeGrid | undefined;
  /** What a node needs to take this segment (capabilities, labels); absent: any ready node. */
  placement?: Placement | undefined;
  uploaderAddress: string;
  uploaderId: string;
  /** The uploader for the next attempt (default: `uploaderAddress`/`uploaderId`): one that left is replaced. */
  uploader?: () => { address: string; id: string } | undefined;
  fence: LeaderFence;
  onEvent: (ev: SegmentEvent) => void;
}

/**
 * Picks a node: the preferred (planned) one while it is ready and has a free slot, else the least
 * loaded ready node. Without the free-slot condition every job's segment i would queue on the
 * i-th node by id while the rest of a large cluster idles (plans are made per job).
 */
export function pickNode(ready: NodeView[], load: ReadonlyMap<string, number>, preferred: string | undefined, avoid: ReadonlySet<string>): NodeView | undefined {
  // `avoid` holds incarnations (address and start time): a node restarted under its id is new.
  const pref = ready.find((n) => n.id === preferred && !avoid.has(incarnation(n)) && (load.get(n.id) ?? 0) < n.slots);
  if (pref) return pref;
  const candidates = ready.filter((n) => !avoid.has(incarnation(n)));
  const pool = candidates.length > 0 ? candidates : ready;
  return [...pool].sort((a, b) => (load.get(a.id) ?? 0) / a.slots - (load.get(b.id) ?? 0) / b.slots || (a.id < b.id ? -1 : 1))[0];
}

/**
 * Runs one segment to DONE: records the assignment (owner key + segment state, one transaction)
 * before any byte flows, streams the segment (resuming from the node's acknowledged offset), runs
 * it, and on node loss or a retryable failure reassigns it with a new attempt. The new owner gets
 * the checkpoint, so only sub-segments not yet done are transcoded again.
 */
export async function dispatchSegment(t: SegmentTask, d: DispatchDeps, signal: AbortSignal): Promise<void> {
  const log = d.log.child({ ...jobLogFields(t.jobId), segment: t.seg.index });
  const s: DispatchState = { seg: { ...t.seg }, preferred: t.seg.nodeId, avoid: new Set(), resume: t.resume, last: undefined };
  try {
    await retry(
      async () => {
        // Moved whole to an idle node by work stealing: not a failure, so not another attempt.
        for (;;) {
          try {
            return await runAttempt(t, d, s, log, signal);
          } catch (err) {
            if (!(err instanceof SegmentMoved)) throw err;
            log.info({ from: s.last?.node.id, to: err.to }, 'segment moved to an idle node');
            s.preferred = err.to;
          }
        }
      },
      {
        attempts: d.cfg.SEGMENT_ATTEMPTS,
        baseMs: 200,
        maxMs: 2_000,
        signal,
        isRetryable: reassigns,
        onRetry: (e) => {
          const last = s.last;
          d.metrics.retries.inc({ kind: 'segment' });
          log.warn({ err: errorMessage(e), nodeId: last?.node.id, attempt: last?.ref.attempt }, 'segment attempt failed; reassigning');
          if (!last) return;
          s.avoid.add(incarnation(last.node));
          s.preferred = undefined;
          // Free what the abandoned attempt left on that node (best effort, with a deadline).
          // Not awaited: a dead or paused node must not delay the reassignment.
          void callUnary(last.client, last.client.dropSegment, last.ref, d.cfg.RPC_TIMEOUT_MS, traceMetadata(t.jobId)).catch(() => undefined);
        },
      },
    );
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (!isAppError(err, 'NOT_LEADER') && !isEtcdOutage(err)) log.error({ err: errorMessage(err), attempt: s.last?.ref.attempt }, 'segment failed');
    throw err;
  }
}

/**
 * Whether a failed attempt makes the segment run again on another node: the error's own marker
 * decides (runAttempt classifies a node attempt's failure). An etcd outage is not the node's
 * fault: it ends the dispatch without blaming the node, and the job stays in flight
 * (job-runner.ts); NOT_LEADER and the segment's own failures are permanent.
 */
export function reassigns(err: unknown): boolean {
  return isAppError(err) && err.retryable && !isEtcdOutage(err);
}

/** What one segment's attempts share: where it may and may not go next, and the last attempt. */
interface DispatchState {
  seg: SegmentRecord;
  preferred: string | undefined;
  /** Incarnations an attempt failed on (not chosen again while others are ready). */
  avoid: Set<string>;
  /** The attempt the previous leader left running (re-attached once, first). */
  resume: SegmentTask['resume'];
  last: { node: NodeView; client: NodeAgentClient; ref: SegmentRef } | undefined;
}

/**
 * One attempt: records the assignment, streams and runs the segment on one node, and records it
 * DONE. Its failure comes out classified (asAppError): the node's answer keeps its marker; an
 * attempt ended by the node leaving is the abort's UNAVAILABLE; a failure of unknown kind is
 * TRANSCODE_FAILED, retryable (on another node).
 */
async function runAttempt(t: SegmentTask, d: DispatchDeps, s: DispatchState, log: Logger, signal: AbortSignal): Promise<void> {
  const etcdRetry = { signal, log, onRetry: () => d.metrics.retries.inc({ kind: 'etcd' }) };
  const leaderTerm = Number(t.fence.createRevision);
  if (signal.aborted) throw signal.reason;
  // A new leader first re-attaches to the attempt the last one left running, under its owner
  // revision (no new assignment: the agent's work and its checkpoints stay valid).
  let reattach: { node: NodeView; attempt: number; ownerRevision: number } | undefined;
  if (s.resume) {
    const r = s.resume;
    s.resume = undefined;
    const n = d.registry.get(r.nodeId);
    if (n && d.registry.reachable(n.id) && n.admission === 'admitted') reattach = { node: n, attempt: r.attempt, ownerRevision: r.ownerRevision };
  }
  let node: NodeView;
  let attempt: number;
  let ownerRevision: number;
  if (reattach) {
    ({ node, attempt, ownerRevision } = reattach);
    s.seg = { ...s.seg, nodeId: node.id, attempt };
  } else {
    const eligible = (): NodeView[] => d.registry.ready().filter((n) => fits(n, t.placement));
    let pick = pickNode(eligible(), d.load, s.preferred, s.avoid);
    if (!pick && t.placement) log.info({ reason: whyNoNode(d.registry.ready(), t.placement) }, 'segment waits for a node');
    while (!pick) {
      await sleep(250, signal);
      pick = pickNode(eligible(), d.load, s.preferred, s.avoid);
    }
    node = pick;
    attempt = s.seg.attempt + 1;
    const reason = s.last === undefined && s.seg.attempt === 0 ? 'assigned' : `reassigned (attempt ${attempt})`;
    s.seg = { ...s.seg, nodeId: node.id, attempt, state: 'TRANSFERRING' };
    // Segment writes ride out an etcd outage (retried with backoff); NOT_LEADER or a cancelled
    // job end them. Nothing is assigned until this write lands, so it needs no clean-up.
    const assigned = s.seg;
    const chosen = node;
    ownerRevision = Number(await withEtcdRetry('assign segment', () => d.store.putSegment(t.jobId, assigned, reason, t.fence, { nodeId: chosen.id, attempt, assignedAtMs: Date.now() }), etcdRetry));
  }
  d.load.set(node.id, (d.load.get(node.id) ?? 0) + 1);
  d.metrics.segmentsInFlight.inc();
  const ref: SegmentRef = { jobId: t.jobId, segment: s.seg.index, attempt, ownerRevision, leaderTerm };
  const client = d.clients.get(NodeAgentClient, node.address, node.id);
  s.last = { node, client, ref };
  // Abort this attempt when the node leaves the registry (lease expired, stopped), or when this
  // coordinator's health probes stop reaching it (an asymmetric partition).
  const attemptAbort = new AbortController();
  const attemptNode = node;
  const onRemoved = (id: string): void => {
    if (id === attemptNode.id) attemptAbort.abort(new AppError('UNAVAILABLE', `node ${id} left the cluster`));
  };
  const onUnreachable = (id: string): void => {
    if (id === attemptNode.id) attemptAbort.abort(new AppError('UNAVAILABLE', `node ${id} is unreachable from this coordinator`));
  };
  d.registry.on('removed', onRemoved);
  d.registry.on('unreachable', onUnreachable);
  const onOuter = (): void => attemptAbort.abort(signal.reason);
  signal.addEventListener('abort', onOuter, { once: true });
  // Work stealing: the owner run reports its chunk queue; idle nodes may take queued chunks.
  const stealing = d.stealer?.enabled
    ? d.stealer.registerOwner(
        { key: `${t.jobId}/${s.seg.index}`, jobId: t.jobId, segment: s.seg.index, nodeId: node.id, attempt, ownerRevision, leaderTerm, helper: false, placement: t.placement, last: undefined },
        t.onEvent,
        // A helper outlives a failed owner attempt until its running chunks are done (finishHelpers).
        (victim, thief, helperAttempt, chunks, onEvent, sig) => runHelper(t, d, victim, thief, helperAttempt, chunks, onEvent, AbortSignal.any([sig, signal])),
      )
    : undefined;
  const task: SegmentTask = stealing ? { ...t, onEvent: stealing.event } : t;
  try {
    let ran = false;
    if (reattach) {
      const startedAt = Date.now();
      try {
        // The trail entry is written before the segment's DONE (runRemote waits for it).
        const attached = await runRemote(client, ref, ownerRevision, task, d, attemptAbort.signal, () => {
          const at = { ...s.seg, state: 'TRANSCODING' as const };
          log.info({ nodeId: node.id, attempt, ms: Date.now() - startedAt }, 're-attached to the running attempt');
          return withEtcdRetry('record re-attach', () => d.store.putSegment(t.jobId, at, `re-attached (attempt ${attempt})`, t.fence), { ...etcdRetry, signal: attemptAbort.signal });
        });
        if (attached) d.metrics.segmentsReattached.inc();
        ran = true;
      } catch (err) {
        // Never fully received by the node: send it (resuming the transfer), then run it.
        if (!(isAppError(err, 'FAILED_PRECONDITION') && err.message.includes('not been fully transferred'))) throw err;
      }
    }
    if (!ran) {
      await transfer(client, node.id, ref, t, d, attemptAbort.signal);
      s.seg = { ...s.seg, state: 'TRANSCODING' };
      const transcoding = s.seg;
      await withEtcdRetry('record transfer', () => d.store.putSegment(t.jobId, transcoding, 'transfer verified', t.fence), { ...etcdRetry, signal: attemptAbort.signal });
      await runRemote(client, ref, ownerRevision, task, d, attemptAbort.signal);
    }
    // The whole segment was released to move to an idle node: a new attempt there.
    const movedTo = stealing?.movedTo();
    if (movedTo) throw new SegmentMoved(movedTo);
    // Chunks released to helpers: done when they are (a failed helper leaves them to a new attempt).
    if (stealing && !(await stealing.settle(d.cfg.SEGMENT_NO_PROGRESS_MS))) {
      throw new AppError('UNAVAILABLE', `segment ${s.seg.index}: chunks moved to another node were not done; the segment runs again for them`);
    }
    s.seg = { ...s.seg, state: 'DONE' };
    const done = s.seg;
    // The checkpoints already say every sub-segment is done: only the job's abort stops this.
    await withEtcdRetry('record segment done', () => d.store.putSegment(t.jobId, done, 'all sub-segments done', t.fence), etcdRetry);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (err instanceof SegmentMoved) throw err;
    // An attempt aborted because its node left fails with the abort's reason (the stream's
    // CANCELLED says nothing), unless the node had already reported the segment's own failure.
    const e = attemptAbort.signal.aborted && !isAppError(err, 'TRANSCODE_FAILED') ? (attemptAbort.signal.reason as unknown) : err;
    const failure = asAppError(e, { what: `segment ${s.seg.index}`, unknown: { code: 'TRANSCODE_FAILED', retryable: true } });
    // Before the segment runs again: chunks its helpers are running get done (and recorded) once.
    if (stealing && failure.retryable) await stealing.finishHelpers(d.cfg.SEGMENT_NO_PROGRESS_MS, signal);
    if (signal.aborted) throw signal.reason;
    throw failure;
  } finally {
    stealing?.close();
    d.registry.off('removed', onRemoved);
    d.registry.off('unreachable', onUnreachable);
    signal.removeEventListener('abort', onOuter);
    d.load.set(node.id, Math.max(0, (d.load.get(node.id) ?? 1) - 1));
    d.metrics.segmentsInFlight.dec();
  }
}

/** A segment whose owner released it whole, to run on `to` (work stealing). */
class SegmentMoved extends Error {
  constructor(readonly to: string) {
    super(`segment moved to ${to}`);
  }
}

/**
 * Streams the segment to the node, resuming from the offset it already holds. A broken stream is
 * retried on the same node (the retry policy, up to 5 tries): it asks the node what it holds and
 * sends the rest.
 */
async function transfer(client: NodeAgentClient, nodeId: string, ref: SegmentRef, task: SegmentTask, d: DispatchDeps, signal: AbortSignal): Promise<void> {
  const startedAt = Date.now();
  const t = await task.source();
  const sourcedAt = Date.now();
  let by = 'stream';
  const open = (): ReturnType<typeof openClientStream<SegmentChunk, TransferStatus>> =>
    openClientStream<SegmentChunk, TransferStatus>((cb) => client.putSegment(traceMetadata(task.jobId), deadline(d.cfg.SEGMENT_TRANSFER_TIMEOUT_MS), cb), signal);
  const msg = (offset: number, data: Buffer, crc32: string, local?: LocalFile): SegmentChunk => ({
    ref,
    offset,
    data,
    totalSize: t.bytes,
    sha256: '',
    crc32,
    localPath: local?.localPath ?? '',
    localIdentity: local?.localIdentity ?? '',
  });
  await retry(
    async () => {
      for (;;) {
        const st: TransferStatus = await callUnary(client, client.getTransfer, ref, d.cfg.RPC_TIMEOUT_MS, traceMetadata(task.jobId), signal);
        if (st.complete) return;
        const from = Math.min(st.receivedBytes, t.bytes);
        // A co-located node reads the file itself (and verifies it as it would the stream); one
        // that cannot (another host, handoff off there, an older agent) is streamed the bytes.
        const h = d.handoff;
        const local = h && from < t.bytes ? await h.offer(nodeId, t.file) : undefined;
        if (h && local) {
          try {
            const call = open();
            call.stream.write(msg(from, Buffer.alloc(0), '', local));
            call.stream.end();
            if ((await call.result).complete) {
              d.metrics.handoffs.inc({ kind: 'segment' });
              by = 'path';
              return;
            }
          } catch (err) {
            if (signal.aborted) throw err;
            d.log.info({ nodeId, err: errorMessage(err) }, 'local handoff of a segment refused; streaming it');
          }
          h.refusedBy(nodeId);
          continue;
        }
        const crc32 = await t.crc32();
        const call = open();
        if (from >= t.bytes) call.stream.write(msg(from, Buffer.alloc(0), crc32));
        else await sendFileChunks(call.stream, t.file, from, (offset, data) => msg(offset, data, crc32), { signal: call.signal, onSent: () => undefined });
        d.metrics.bytesStreamed.inc(t.bytes - from);
        call.stream.end();
        if ((await call.result).complete) return;
      }
    },
    {
      attempts: 5,
      baseMs: 200,
      maxMs: 3_200,
      signal,
      // The error's marker decides; but a full node stays full, so a NO_SPACE (retryable: on
      // another node) goes to dispatchSegment at once, which moves the segment.
      isRetryable: (e) => asAppError(e, { unknown: { code: 'UNAVAILABLE', retryable: true } }).retryable && !isAppError(e, 'NO_SPACE'),
      onRetry: () => d.metrics.retries.inc({ kind: 'transfer' }),
    },
  );
  d.log.info({ segment: ref.segment, nodeId, bytes: t.bytes, by, prepareMs: sourcedAt - startedAt, sendMs: Date.now() - sourcedAt }, 'segment sent');
}

/**
 * A helper run (work stealing): streams the segment to the idle node and runs the chunks its owner
 * released there, under the helper's attempt number and the owner's revision (its checkpoint
 * writes are fenced on it: a reassigned segment stops its helpers too).
 */
async function runHelper(
  t: SegmentTask,
  d: DispatchDeps,
  victim: WorkUnit,
  thief: NodeView,
  helperAttempt: number,
  chunks: number[],
  onEvent: (ev: SegmentEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const ref: SegmentRef = { jobId: t.jobId, segment: victim.segment, attempt: helperAttempt, ownerRevision: victim.ownerRevision, leaderTerm: victim.leaderTerm };
  const client = d.clients.get(NodeAgentClient, thief.address, thief.id);
  const abort = new AbortController();
  const onGone = (id: string): void => {
    if (id === thief.id) abort.abort(new AppError('UNAVAILABLE', `node ${id} left or is unreachable`));
  };
  d.registry.on('removed', onGone);
  d.registry.on('unreachable', onGone);
  const both = AbortSignal.any([signal, abort.signal]);
  d.load.set(thief.id, (d.load.get(thief.id) ?? 0) + 1);
  try {
    await transfer(client, thief.id, ref, t, d, both);
    await runRemote(client, ref, victim.ownerRevision, { ...t, onEvent }, d, both, undefined, chunks);
  } catch (err) {
    void callUnary(client, client.dropSegment, ref, d.cfg.RPC_TIMEOUT_MS, traceMetadata(t.jobId)).catch(() => undefined);
    throw err;
  } finally {
    d.registry.off('removed', onGone);
    d.registry.off('unreachable', onGone);
    d.load.set(thief.id, Math.max(0, (d.load.get(thief.id) ?? 1) - 1));
  }
}

/**
 * Runs the segment on the node and relays progress. The watchdog follows frames, not events: a
 * run whose frames (and finished chunks) stand still for SEGMENT_NO_PROGRESS_MS while it has a
 * chunk running is abandoned (a node that only heartbeats is as good as gone).
 */
async function runRemote(
  client: NodeAgentClient,
  ref: SegmentRef,
  ownerRevision: number,
  t: SegmentTask,
  d: DispatchDeps,
  signal: AbortSignal,
  onAttached?: () => Promise<unknown>,
  helperChunks?: number[],
): Promise<boolean> {
  const up = t.uploader?.() ?? { address: t.uploaderAddress, id: t.uploaderId };
  const call = client.runSegment(
    {
      ref,
      renditions: t.renditions,
      ownerRevision,
      uploaderAddress: up.address,
      uploaderId: up.id,
      frames: t.fileFrames,
      fps: t.fps,
      treatment: t.treatment,
      leadInFrames: t.leadInFrames,
      leadOutFrames: t.leadOutFrames,
      leaderTerm: ref.leaderTerm,
      ...(t.constantRate ? { constantRate: t.constantRate } : {}),
      ...(t.keyframeGrid ? { keyframeGrid: t.keyframeGrid } : {}),
      ...(helperChunks ? { helper: { chunks: helperChunks } } : {}),
    },
    traceMetadata(t.jobId),
    deadline(d.cfg.SEGMENT_RUN_TIMEOUT_MS),
  );
  let last = Date.now();
  let seen = '';
  let stalled = false;
  const watchdog = setInterval(
    () => {
      if (Date.now() - last > d.cfg.SEGMENT_NO_PROGRESS_MS) {
        stalled = true;
        call.cancel();
      }
    },
    Math.min(1_000, d.cfg.SEGMENT_NO_PROGRESS_MS),
  );
  const onAbort = (): void => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  let done = false;
  let attached = false;
  let recorded: Promise<unknown> = Promise.resolve();
  try {
    for await (const ev of iterateStream<SegmentEvent>(call)) {
      // Progress: frames or finished chunks moved, or nothing is running (waiting for a slot).
      const mark = `${ev.framesDone}/${ev.subSegmentsDone}`;
      if (mark !== seen || !ev.queue || ev.queue.running === 0 || ev.done) last = Date.now();
      seen = mark;
      if (ev.attached && !attached) {
        attached = true;
        recorded = onAttached?.().catch(() => undefined) ?? recorded;
      }
      t.onEvent(ev);
      if (ev.done) done = true;
    }
  } catch (err) {
    if (stalled) throw new AppError('UNAVAILABLE', `segment ${ref.segment}: no progress for ${d.cfg.SEGMENT_NO_PROGRESS_MS} ms`);
    throw err;
  } finally {
    clearInterval(watchdog);
    signal.removeEventListener('abort', onAbort);
  }
  if (!done) throw new AppError('UNAVAILABLE', `segment ${ref.segment}: the node ended the stream before finishing`);
  await recorded;
  return attached;
}
