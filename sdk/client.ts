import { createHash, randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Metadata, type Client } from '@grpc/grpc-js';
import { fileDigest, sendFileChunks } from '../common/chunks.js';
import { AppError, isAppError } from '../common/errors.js';
import { ClientCache } from '../common/grpc-clients.js';
import { channelCredentials, type TlsMaterial } from '../common/tls.js';
import { callUnary, deadline, iterateStream, openClientStream } from '../common/grpc.js';
import { retry, retryDelay, sleep } from '../common/retry.js';
import { ADMIN_METHODS, JOB_METHODS, mayRepeat, type MethodDescriptor } from './idempotency.js';
import { AdminClient, type ClusterStatus, type NodeInfo } from '../proto/gen/tessera/v1/admin.js';
import { JobServiceClient } from '../common/bulk-codec.js';
import { UploadChunk, type GetUploadResponse, type SubmitJobResponse, type JobEvent } from '../proto/gen/tessera/v1/jobs.js';
import { JobSpec, JobState, type Job } from '../proto/gen/tessera/v1/types.js';

export type { Job, JobSpec, SubmitJobResponse, NodeInfo, ClusterStatus };
export { JobState };

export interface TesseraClientOptions {
  /** One or more coordinator addresses (host:port); calls fail over between them. */
  addresses: string[];
  /** Bearer token sent with every call, when the cluster requires one. */
  token?: string;
  /**
   * Asked for the bearer token before each call (instead of `token`): an OIDC token source
   * (`oidcTokenSource`) returns its cached access token and gets a new one when it expires.
   */
  tokenProvider?: () => Promise<string | undefined>;
  /** Deadline of each unary call, ms (default 15 s). */
  timeoutMs?: number;
  /** Attempts for idempotent calls on a retryable error (default 6, with backoff and jitter). */
  attempts?: number;
  /** TLS: the CA that signed the coordinators' certificates, and our client certificate and key (mutual TLS). */
  tls?: TlsMaterial;
  /**
   * TLS: the name the coordinators' certificates carry, checked instead of the dialled host (an
   * IP address is not a TLS server name; a local cluster's coordinators carry `localhost`).
   */
  tlsServerName?: string;
}

const TERMINAL = new Set<JobState>([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]);

/** True when a job state is final. */
export function isTerminal(state: JobState): boolean {
  return TERMINAL.has(state);
}

/**
 * The typed Tessera client. Calls the protos mark idempotent (get, list, cancel, watch, drain),
 * and submit or upload with their key, are retried with backoff on another coordinator when an
 * error is retryable; other calls are sent once.
 */
export class TesseraClient {
  private readonly clients: ClientCache;
  private current = 0;
  private readonly timeoutMs: number;
  private readonly attempts: number;

  constructor(private readonly o: TesseraClientOptions) {
    if (o.addresses.length === 0) throw new AppError('INVALID_ARGUMENT', 'at least one coordinator address is required');
    this.clients = new ClientCache(channelCredentials(o.tls));
    this.timeoutMs = o.timeoutMs ?? 15_000;
    this.attempts = o.attempts ?? 6;
  }

  private async md(): Promise<Metadata> {
    const md = new Metadata();
    const token = this.o.tokenProvider ? await this.o.tokenProvider() : this.o.token;
    if (token) md.set('authorization', `Bearer ${token}`);
    return md;
  }

  private jobs(): JobServiceClient {
    return this.clients.get(JobServiceClient, this.o.addresses[this.current % this.o.addresses.length]!, this.o.tls ? this.o.tlsServerName : undefined);
  }

  private admin(): AdminClient {
    return this.clients.get(AdminClient, this.o.addresses[this.current % this.o.addresses.length]!, this.o.tls ? this.o.tlsServerName : undefined);
  }

  /**
   * Runs a call of `method`. Repeated (on the next coordinator, with the retry policy) only when
   * the protos mark the method idempotent, or it is keyed and called with its key (mayRepeat),
   * and only for errors marked retryable; any other call is sent once, since it may have reached
   * the server.
   */
  private call<T>(method: MethodDescriptor, fn: () => Promise<T>, o: { signal?: AbortSignal | undefined; keyed?: boolean } = {}): Promise<T> {
    if (!mayRepeat(method, o.keyed)) return fn();
    return retry(fn, {
      attempts: this.attempts,
      baseMs: 200,
      maxMs: 3_000,
      signal: o.signal,
      isRetryable: (err) => isAppError(err) && err.retryable,
      onRetry: () => {
        this.current++;
      },
    });
  }

  private async unary<C extends Client, Req, Res>(get: () => C, method: (c: C) => Parameters<typeof callUnary<Req, Res>>[1], req: Req, signal?: AbortSignal): Promise<Res> {
    const md = await this.md();
    const c = get();
    return callUnary<Req, Res>(c, method(c), req, this.timeoutMs, md, signal);
  }

  /** Submits a job by input URI. With `idempotencyKey` set, safe to retry. */
  submit(spec: Partial<JobSpec> & { inputUri: string }): Promise<SubmitJobResponse> {
    const full = JobSpec.fromPartial(spec);
    const call = (): Promise<SubmitJobResponse> =>
      this.unary(
        () => this.jobs(),
        (c) => c.submitJob,
        { spec: full },
      );
    return this.call(JOB_METHODS.submitJob, call, { keyed: full.idempotencyKey !== '' });
  }

  /**
   * Streams a local file to the cluster and submits it (client-streaming, back-pressured). The
   * upload is resumable: the cluster stores it in S3 part by part under `resumeId` (default: a
   * fresh random id), so a retry — here, on UNAVAILABLE, or a later call with the same
   * `resumeId` — asks how much the cluster holds and sends only the rest. The resume id is the
   * job's idempotency key when `spec` has none, so a retry after a lost answer gets the same job.
   * `onProgress(sent, total)` counts from what the cluster already held.
   */
  async upload(
    filePath: string,
    spec: Partial<JobSpec> = {},
    opts: { onProgress?: (sent: number, total: number) => void; signal?: AbortSignal; resumeId?: string; onResume?: (heldBytes: number, total: number) => void } = {},
  ): Promise<SubmitJobResponse> {
    const st = await stat(filePath).catch(() => {
      throw new AppError('INPUT_NOT_FOUND', `no such file: ${filePath}`);
    });
    if (!st.isFile()) throw new AppError('INPUT_NOT_FOUND', `not a regular file: ${filePath}`);
    if (st.size === 0) throw new AppError('INPUT_EMPTY', `the file is empty: ${filePath}`);
    // With an idempotency key the resume id names the key and the file's content: a retry of the
    // same file under the key is the same upload (and job); another file under it is a conflict.
    const resumeId =
      opts.resumeId ??
      (spec.idempotencyKey
        ? createHash('sha256')
            .update(`${spec.idempotencyKey}\n${(await fileDigest(filePath, 'sha256')).hex}`)
            .digest('hex')
            .slice(0, 32)
        : newResumeId());
    return this.call(JOB_METHODS.uploadAndSubmit, () => this.uploadOnce(filePath, st.size, spec, resumeId, opts), { signal: opts.signal, keyed: true });
  }

  /** How much of a resumable upload the cluster holds. */
  uploadStatus(resumeId: string, signal?: AbortSignal): Promise<GetUploadResponse> {
    return this.call(
      JOB_METHODS.getUpload,
      () =>
        this.unary(
          () => this.jobs(),
          (c) => c.getUpload,
          { resumeId },
          signal,
        ),
      { signal },
    );
  }

  private async uploadOnce(
    filePath: string,
    size: number,
    spec: Partial<JobSpec>,
    resumeId: string,
    opts: { onProgress?: (sent: number, total: number) => void; signal?: AbortSignal; onResume?: (heldBytes: number, total: number) => void },
  ): Promise<SubmitJobResponse> {
    const held = await this.uploadStatus(resumeId, opts.signal);
    const from = held.found && held.totalBytes === size ? Math.min(held.receivedBytes, size) : 0;
    if (from > 0) opts.onResume?.(from, size);
    const md = await this.md();
    const client = this.jobs();
    const full = JobSpec.fromPartial({ ...spec, inputUri: '' });
    const call = openClientStream<UploadChunk, SubmitJobResponse>((cb) => client.uploadAndSubmit(md, deadline(Math.max(this.timeoutMs, 3_600_000)), cb), opts.signal);
    try {
      let first = true;
      const header = (offset: number, data: Buffer): UploadChunk => {
        const msg = UploadChunk.fromPartial({ offset, data, ...(first ? { spec: full, fileName: basename(filePath), resumeId, totalBytes: size } : {}) });
        first = false;
        return msg;
      };
      // Every byte already held: only the header goes (the cluster completes and submits).
      if (from >= size) call.stream.write(header(size, Buffer.alloc(0)));
      else await sendFileChunks(call.stream, filePath, from, header, { signal: call.signal, onSent: (sent) => opts.onProgress?.(sent, size) });
      call.stream.end();
    } catch (err) {
      await call.result;
      throw err;
    }
    return call.result;
  }

  get(jobId: string, signal?: AbortSignal): Promise<Job> {
    return this.call(
      JOB_METHODS.getJob,
      () =>
        this.unary(
          () => this.jobs(),
          (c) => c.getJob,
          { jobId },
          signal,
        ),
      { signal },
    );
  }

  cancel(jobId: string): Promise<Job> {
    return this.call(JOB_METHODS.cancelJob, () =>
      this.unary(
        () => this.jobs(),
        (c) => c.cancelJob,
        { jobId },
      ),
    );
  }

  async list(opts: { limit?: number; state?: JobState } = {}): Promise<Job[]> {
    return (await this.listPage(opts)).jobs;
  }

  /** One page of jobs, newest first; pass `nextPageToken` back as `pageToken` for the next (empty: none). */
  listPage(opts: { limit?: number; state?: JobState; pageToken?: string } = {}): Promise<{ jobs: Job[]; nextPageToken: string }> {
    return this.call(JOB_METHODS.listJobs, () =>
      this.unary(
        () => this.jobs(),
        (c) => c.listJobs,
        { limit: opts.limit ?? 50, state: opts.state ?? JobState.JOB_STATE_UNSPECIFIED, pageToken: opts.pageToken ?? '' },
      ),
    );
  }

  /**
   * Job snapshots as they change, ending with the terminal one. When the coordinator goes away
   * the watch reconnects (to another coordinator if given) and continues: every snapshot carries
   * the full state and status trail, so no state change is missed.
   */
  async *watch(jobId: string, opts: { signal?: AbortSignal } = {}): AsyncGenerator<Job> {
    let lastJson = '';
    let failures = 0;
    for (;;) {
      const md = await this.md();
      const client = this.jobs();
      const call = client.watchJob({ jobId }, md);
      const onAbort = (): void => call.cancel();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        for await (const ev of iterateStream<JobEvent>(call)) {
          failures = 0;
          if (!ev.job) continue;
          const s = JSON.stringify(ev.job);
          if (s === lastJson) continue;
          lastJson = s;
          yield ev.job;
          if (isTerminal(ev.job.state)) return;
        }
        // The server ends the stream only at a terminal state; anything else: reconnect.
      } catch (err) {
        if (opts.signal?.aborted) throw new AppError('CANCELLED', 'watch cancelled');
        // WatchJob has no side effects (its level in the protos): reconnect on what is retryable.
        if (!mayRepeat(JOB_METHODS.watchJob) || !isAppError(err) || !err.retryable || ++failures > this.attempts * 3) throw err;
        this.current++;
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
      }
      await sleep(retryDelay(failures - 1, { baseMs: 100, maxMs: 2_000, minMs: 50 }), opts.signal);
    }
  }

  /** Resolves with the job once it reaches a terminal state. */
  async wait(jobId: string, onUpdate?: (job: Job) => void, signal?: AbortSignal): Promise<Job> {
    let last: Job | undefined;
    for await (const job of this.watch(jobId, signal ? { signal } : {})) {
      last = job;
      onUpdate?.(job);
    }
    if (!last) throw new AppError('INTERNAL', 'watch ended without a job');
    return last;
  }

  listNodes(): Promise<NodeInfo[]> {
    return this.call(ADMIN_METHODS.listNodes, () =>
      this.unary(
        () => this.admin(),
        (c) => c.listNodes,
        {},
      ),
    ).then((r) => r.nodes);
  }

  clusterStatus(): Promise<ClusterStatus> {
    return this.call(ADMIN_METHODS.getClusterStatus, () =>
      this.unary(
        () => this.admin(),
        (c) => c.getClusterStatus,
        {},
      ),
    );
  }

  drain(nodeId: string): Promise<NodeInfo> {
    return this.call(ADMIN_METHODS.drainNode, () =>
      this.unary(
        () => this.admin(),
        (c) => c.drainNode,
        { nodeId },
      ),
    );
  }

  undrain(nodeId: string): Promise<NodeInfo> {
    return this.call(ADMIN_METHODS.undrainNode, () =>
      this.unary(
        () => this.admin(),
        (c) => c.undrainNode,
        { nodeId },
      ),
    );
  }

  jobDetail(jobId: string): Promise<Job> {
    return this.call(ADMIN_METHODS.getJobDetail, () =>
      this.unary(
        () => this.admin(),
        (c) => c.getJobDetail,
        { jobId },
      ),
    );
  }

  close(): void {
    this.clients.closeAll();
  }
}

/** A fresh resume id for an upload (32 hex digits). */
export function newResumeId(): string {
  return randomBytes(16).toString('hex');
}
