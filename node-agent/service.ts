import { toPictureTreatment } from '../transcoder/treatment.js';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerReadableStream } from '@grpc/grpc-js';
import { chunksOf, DEFAULT_STREAM_PACE, paced, partialSize, receiveChunks, type StreamPace } from '../common/chunks.js';
import { AppError, errorMessage, isAppError } from '../common/errors.js';
import { clientStream, serverStream, unary } from '../common/grpc.js';
import type { Logger } from '../common/logger.js';
import type { NodeAgentServer, SegmentChunk, SegmentRef, TransferStatus, SegmentEvent } from '../proto/gen/tessera/v1/agent.js';
import type { AgentMetrics } from './metrics.js';
import { runSegmentWork, type SegmentWorkDeps } from './segment-work.js';
import type { DiskSpace } from './disk-space.js';

interface Held {
  attempt: number;
  abort: AbortController;
}

const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The node agent's gRPC service: segment transfer in, transcode with progress out. */
export class AgentService {
  /** Segments this node holds, by `<jobId>/<segment>`. */
  readonly held = new Map<string, Held>();
  draining = false;
  segmentsDone = 0;

  constructor(
    private readonly stagingDir: string,
    private readonly maxSegmentBytes: number,
    private readonly deps: SegmentWorkDeps,
    private readonly metrics: AgentMetrics,
    private readonly log: Logger,
    private readonly pace: StreamPace = DEFAULT_STREAM_PACE,
    private readonly disk?: DiskSpace,
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
        const file = this.segmentFile(head.ref);
        // Room for the segment and its chunks cut from it (a second copy), before any byte lands.
        const need = 2 * Math.max(0, head.totalSize - (await partialSize(file)));
        await this.disk?.admit(need, `segment ${head.ref?.segment ?? '?'} of job ${head.ref?.jobId ?? '?'}`).catch(async (err: unknown) => {
          // Read (and drop) what the sender has in flight: a client stream whose writer is blocked
          // on flow control never sees our status otherwise, and the transfer would hang.
          while (!(await it.next()).done) { /* discard */ }
          throw err;
        });
        // Not fsynced: the agent wipes its staging when it starts (main.ts), so only this process
        // life reads the segment; a node that goes down gets its segments re-sent elsewhere.
        const res = await receiveChunks(paced(chunksOf(head, it, (n) => this.metrics.bytesStreamed.inc(n)), this.pace), { path: file, maxBytes: this.maxSegmentBytes, totalSize: head.totalSize, sha256: head.sha256 || undefined, crc32: head.crc32 || undefined, signal, durable: false })
          .catch(async (err: unknown) => {
            const e = this.disk ? this.disk.classify(err, 'receiving a segment', need) : err;
            if (isAppError(e, 'NO_SPACE')) await rm(this.dirOf(head.ref), { recursive: true, force: true });
            throw e;
          });
        return { receivedBytes: res.bytes, complete: res.complete, sha256: res.sha256, crc32: res.crc32 };
      }),

      runSegment: serverStream(log, async (req, send, _call, signal) => {
        const ref = req.ref;
        const file = this.segmentFile(ref);
        if (!ref) throw new AppError('INVALID_ARGUMENT', 'ref is required');
        if (this.draining) throw new AppError('FAILED_PRECONDITION', 'node is draining', { retryable: true });
        if (this.disk?.full) await this.disk.admit(0, 'a segment');
        try {
          await stat(file);
        } catch {
          throw new AppError('FAILED_PRECONDITION', `segment ${ref.segment} has not been fully transferred`, { retryable: true });
        }
        const key = `${ref.jobId}/${ref.segment}`;
        this.held.get(key)?.abort.abort(new AppError('FENCED', 'superseded by a newer attempt'));
        const abort = new AbortController();
        const held: Held = { attempt: ref.attempt, abort };
        this.held.set(key, held);
        this.metrics.segmentsInFlight.set(this.held.size);
        const onCall = (): void => abort.abort(signal.reason);
        signal.addEventListener('abort', onCall, { once: true });
        let pending = Promise.resolve();
        const emit = (ev: SegmentEvent): void => {
          pending = pending.then(() => send(ev)).catch(() => undefined);
        };
        try {
          await runSegmentWork(
            {
              jobId: ref.jobId,
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
              segmentPath: file,
              workDir: this.dirOf(ref),
              uploaderAddress: req.uploaderAddress,
              uploaderId: req.uploaderId,
            },
            this.deps,
            emit,
            abort.signal,
          );
          await pending;
          this.segmentsDone++;
          await rm(this.dirOf(ref), { recursive: true, force: true });
        } catch (err0) {
          // A full disk is this node's trouble: out of service, and the segment retried elsewhere.
          const err = this.disk && !abort.signal.aborted ? this.disk.classify(err0, `segment ${ref.segment} of job ${ref.jobId}`) : err0;
          if (isAppError(err, 'NO_SPACE')) await rm(this.dirOf(ref), { recursive: true, force: true });
          if (isAppError(err, 'FENCED') || abort.signal.aborted) {
            // reassigned, cancelled or our lease lapsed: drop the work and its files
            await rm(this.dirOf(ref), { recursive: true, force: true });
          }
          log.warn({ jobId: ref.jobId, segment: ref.segment, attempt: ref.attempt, err: errorMessage(err) }, 'segment ended without finishing');
          throw abort.signal.aborted && !isAppError(err) ? abort.signal.reason : err;
        } finally {
          signal.removeEventListener('abort', onCall);
          if (this.held.get(key) === held) this.held.delete(key);
          this.metrics.segmentsInFlight.set(this.held.size);
        }
      }),

      dropSegment: unary(log, async (ref: SegmentRef) => {
        const key = `${ref.jobId}/${ref.segment}`;
        const held = this.held.get(key);
        if (held && held.attempt <= ref.attempt) held.abort.abort(new AppError('CANCELLED', 'segment dropped'));
        await rm(this.dirOf(ref), { recursive: true, force: true });
        return {};
      }),
    };
  }
}
