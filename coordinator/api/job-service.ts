import { parseRecord } from '../../common/record-schemas.js';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createReadStream } from 'node:fs';
import type { ServerReadableStream } from '@grpc/grpc-js';
import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { receivedBytes, RESUME_ID, uploadKeyOf, UploadSessions } from './upload-session.js';
import { callTenant } from '../../common/auth.js';
import { checkS3, tenantUploadPrefix, unconfiguredTenant, type Tenant } from '../../common/tenants.js';
import type { Metadata } from '@grpc/grpc-js';
import { displayName } from './spec.js';
import type { Etcd3 } from 'etcd3';
import { chunksOf, paceFromConfig, paced, receiveChunks } from '../../common/chunks.js';
import { AppError, isAppError } from '../../common/errors.js';
import { withEtcdRetry } from '../../common/etcd-retry.js';
import { retry } from '../../common/retry.js';
import { isTransientS3Error, s3Send } from '../../common/s3-client.js';
import { clientStream, serverStream, unary } from '../../common/grpc.js';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import { safeField } from '../../common/logger.js';
import { ResilientWatch } from '../../common/watch.js';
import type { JobServiceServer, SubmitJobResponse, UploadChunk } from '../../proto/gen/tessera/v1/jobs.js';
import { JobSpec, type Job } from '../../proto/gen/tessera/v1/types.js';
import type { CoordinatorConfig } from '../config.js';
import { fromProtoJobState, specHash, TERMINAL, type JobRecord } from '../state/job-model.js';
import { stageName, type JobStore } from '../state/job-store.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { NodeRegistry } from '../state/node-registry.js';
import { dryRun } from './dry-run.js';
import type { Journal } from '../state/journal.js';
import { outboundPolicy, vetTarget } from '../input/safe-http.js';
import { resolveLocalInput, validateSpec } from './spec.js';
import { idempotencyRecordSchema } from '../state/job-schemas.js';

export interface JobServiceDeps {
  cfg: CoordinatorConfig;
  etcd: Etcd3;
  keys: Keys;
  store: JobStore;
  registry: NodeRegistry;
  s3: S3Client;
  encoders: ReadonlySet<string>;
  stagingDir: string;
  metrics: CoordinatorMetrics;
  log: Logger;
  onSubmitted: () => void;
  /** Records each accepted job outside etcd (for restores from a backup) before the client is answered. */
  journal?: Journal | undefined;
}

/** Job ids sort by creation time: base-36 milliseconds, then random bits. */
export function newJobId(): string {
  return `j${Date.now().toString(36).padStart(9, '0')}${randomBytes(5).toString('hex')}`;
}

const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/;

function checkJobId(id: string): string {
  if (!JOB_ID.test(id)) throw new AppError('INVALID_ARGUMENT', 'job_id is malformed');
  return id;
}

/**
 * A job's webhook URL must reach a public address (the rules of http(s) inputs; HTTP_ALLOW_PRIVATE
 * lifts them) and the cluster must sign webhooks. A name that does not resolve yet is accepted:
 * every delivery attempt resolves and checks it again, and connects to the address it checked.
 */
async function checkWebhook(d: JobServiceDeps, webhookUrl: string): Promise<void> {
  if (!webhookUrl) return;
  if (!d.cfg.WEBHOOK_SECRET) throw new AppError('FAILED_PRECONDITION', 'this cluster sends no webhooks: WEBHOOK_SECRET is not set on the coordinators');
  try {
    await vetTarget(new URL(webhookUrl), outboundPolicy(d.cfg, { hostList: false }), 'webhook');
  } catch (err) {
    if (!isAppError(err, 'INPUT_NOT_FOUND')) throw err;
  }
}

/** The client API: submit, upload, get, watch, cancel, list. */
export function jobServiceHandlers(d: JobServiceDeps): JobServiceServer {
  const { log, store } = d;

  // Tenants (common/tenants.ts): a caller's tenant, from the access interceptor. One named by an
  // OIDC claim but not configured gets the defaults and no S3 locations beyond its uploads.
  const tenants = new Map(d.cfg.TENANTS.map((t) => [t.name, t]));
  const tenantOf = (md: Metadata): Tenant | undefined => {
    const name = callTenant(md);
    return name ? (tenants.get(name) ?? unconfiguredTenant(name)) : undefined;
  };
  /** A job as the caller may see it: another tenant's is "not found", as a missing one is. */
  const viewFor = async (id: string, tenant: Tenant | undefined): Promise<Job> => {
    const job = await store.view(id);
    if (tenant && job.spec?.tenant !== tenant.name) throw new AppError('JOB_NOT_FOUND', `no job with id ${id}`);
    return job;
  };
  /** Jobs of a tenant not yet finished, against its quota (read from the state index). */
  const activeJobsOf = async (tenant: string): Promise<number> => {
    let n = 0;
    let before: string | undefined;
    for (;;) {
      const page = await store.listPage(1000, ['QUEUED', 'PREPARING', 'RUNNING', 'FINALIZING'], before);
      n += (await store.summaries(page.ids)).filter((j) => j.spec?.tenant === tenant).length;
      if (!page.next) return n;
      before = page.next;
    }
  };
  /** Per tenant, bytes of uploads in flight on this coordinator; and all uploads and watches here. */
  const uploadBytes = new Map<string, number>();
  let uploads = 0;
  let watches = 0;

  const submit = async (rawSpec: JobSpec | undefined, tenant?: Tenant): Promise<SubmitJobResponse> => {
    const scoped = rawSpec ? scopeSpec(rawSpec, tenant) : rawSpec;
    const { spec, input } = validateSpec(scoped, d.encoders, { bucket: d.cfg.S3_BUCKET, prefix: d.cfg.OUTPUT_PREFIX });
    if (tenant) {
      // Local paths are the operator's; s3:// locations only where the tenant is allowed.
      if (input.kind === 'local') throw new AppError('PERMISSION_DENIED', `tenant ${tenant.name} may not read local paths: upload the file, or name an s3:// location it is allowed`);
      checkS3(tenant, spec.inputUri, 'input', d.cfg.S3_BUCKET);
      if (spec.outputUri) checkS3(tenant, spec.outputUri, 'output', d.cfg.S3_BUCKET);
    }
    await checkWebhook(d, spec.webhookUrl);
    const resolved = input.kind === 'local' ? await resolveLocalInput(input.path, d.cfg.INPUT_ROOT, d.cfg.MAX_INPUT_BYTES) : input;
    if (spec.dryRun) return { jobId: '', job: undefined, plan: await dryRun(d, spec, resolved) };
    if (tenant && !(spec.idempotencyKey && (await priorSubmission(d, spec.idempotencyKey)))) {
      const active = await activeJobsOf(tenant.name);
      if (active >= tenant.maxActiveJobs)
        throw new AppError('QUOTA_EXCEEDED', `tenant ${tenant.name} has ${active} job(s) queued or running, its quota (maxActiveJobs ${tenant.maxActiveJobs}); submit again when some have finished`);
    }
    const id = newJobId();
    const now = Date.now();
    const seq = `${now.toString(36).padStart(9, '0')}`;
    const rec: JobRecord = {
      id,
      spec,
      specHash: specHash(spec),
      state: 'QUEUED',
      stage: stageName('QUEUED'),
      createdAtMs: now,
      updatedAtMs: now,
      queueKey: d.keys.queueEntry(spec.priority, seq, id),
      history: [{ atMs: now, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'accepted' }],
      timings: {},
    };
    const { job, created } = await store.create(rec, spec.idempotencyKey || undefined);
    if (created) {
      await d.journal?.accepted(rec);
      d.metrics.jobsSubmitted.inc();
      log.info({ jobId: job.id, input: safeField(spec.inputUri) }, 'job accepted');
      d.onSubmitted();
    }
    return { jobId: job.id, job: await store.view(job.id), plan: undefined };
  };

  /**
   * The answer to an upload retried under an idempotency key that already made a job: that job;
   * IDEMPOTENCY_CONFLICT when the key was used for another spec or file; undefined when the key
   * made no job (yet).
   */
  const priorAnswer = async (full: JobSpec, idemKey: string): Promise<SubmitJobResponse | undefined> => {
    const prior = await priorSubmission(d, idemKey);
    if (!prior) return undefined;
    const { spec: normal } = validateSpec(full, d.encoders, { bucket: d.cfg.S3_BUCKET, prefix: d.cfg.OUTPUT_PREFIX });
    if (prior.specHash !== specHash(normal)) throw new AppError('IDEMPOTENCY_CONFLICT', `idempotency key "${idemKey}" was already used for job ${prior.jobId} with a different spec or file`);
    const job = await store.get(prior.jobId);
    return job ? { jobId: job.id, job: await store.view(job.id), plan: undefined } : undefined;
  };

  const active = new Map<string, Promise<void>>();
  const sessions = new UploadSessions({ etcd: d.etcd, keys: d.keys, s3: d.s3, bucket: d.cfg.S3_BUCKET, log, partBytes: d.cfg.UPLOAD_PART_BYTES, onPart: () => d.metrics.uploadPartsStored.inc() });
  let lastSweep = 0;
  /** Abandoned resumable uploads are dropped now and then, on any coordinator that takes uploads. */
  const sweepSessions = (): void => {
    if (Date.now() - lastSweep < Math.min(600_000, d.cfg.UPLOAD_SESSION_MAX_AGE_MS)) return;
    lastSweep = Date.now();
    sessions.sweep(d.cfg.UPLOAD_SESSION_MAX_AGE_MS).catch((err: unknown) => log.warn({ err }, 'upload session sweep failed'));
  };

  /**
   * A resumable upload: the bytes go straight to S3 as multipart parts (nothing staged on this
   * coordinator's disk), each recorded in etcd; an interrupted one is resumed by any coordinator
   * from what S3 holds. The job is submitted once the object is whole.
   */
  const resumableUpload = async (head: UploadChunk, it: AsyncIterator<UploadChunk>, spec: JobSpec, signal: AbortSignal, tenant: Tenant | undefined): Promise<SubmitJobResponse> => {
    sweepSessions();
    const given = head.resumeId ?? '';
    const total = head.totalBytes ?? 0;
    if (!RESUME_ID.test(given)) throw new AppError('INVALID_ARGUMENT', 'resume_id must be 8-64 characters of a-z, 0-9 and -');
    if (!(total > 0)) throw new AppError('INPUT_EMPTY', 'the uploaded file is empty (0 bytes)');
    if (total > d.cfg.MAX_UPLOAD_BYTES) throw new AppError('LIMIT_EXCEEDED', `the upload is ${total} bytes; the limit is ${d.cfg.MAX_UPLOAD_BYTES}`);
    // A tenant's resume ids are its own: the session id is scoped, the object under its prefix.
    const resumeId = sessionIdFor(given, tenant);
    const key = tenant ? `${tenantUploadPrefix(tenant.name)}r${given}` : uploadKeyOf(resumeId);
    // The resume id is the idempotency key when the client gave none: a retry after a lost answer
    // gets the same job, and never overwrites the object that job reads.
    const full = { ...spec, inputUri: `s3://${d.cfg.S3_BUCKET}/${key}`, idempotencyKey: spec.idempotencyKey || `${tenant ? `${tenant.name}:` : ''}upload-${given}` };
    // The same upload twice at once on this coordinator (a client retrying over a slow answer):
    // the later one waits for the first, then finds its job.
    const before = active.get(resumeId);
    if (before) await before.catch(() => undefined);
    let release = (): void => undefined;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    active.set(resumeId, mine);
    try {
      return await storeAndSubmit(head, it, full, resumeId, total, signal, key, tenant);
    } finally {
      release();
      if (active.get(resumeId) === mine) active.delete(resumeId);
    }
  };

  const storeAndSubmit = async (
    head: UploadChunk,
    it: AsyncIterator<UploadChunk>,
    full: JobSpec,
    resumeId: string,
    total: number,
    signal: AbortSignal,
    key: string,
    tenant: Tenant | undefined,
  ): Promise<SubmitJobResponse> => {
    const prior = await priorAnswer(full, full.idempotencyKey);
    if (prior) return prior;
    let session = await sessions.open(resumeId, total, key);
    if (receivedBytes(session) < session.totalBytes) {
      const chunks = paced(
        chunksOf(head, it, (n) => d.metrics.uploadBytes.inc(n)),
        paceFromConfig(d.cfg),
      );
      session = await sessions.receive(session, chunks, signal);
      log.info({ resumeId, bytes: total, parts: session.parts.length }, 'upload stored');
    }
    await sessions.complete(session, signal);
    return submit(full, tenant);
  };

  return {
    submitJob: unary(log, async (req, call) => submit(req.spec, tenantOf(call.metadata))),

    getUpload: unary(log, async (req, call) => {
      if (!RESUME_ID.test(req.resumeId)) throw new AppError('INVALID_ARGUMENT', 'resume_id must be 8-64 characters of a-z, 0-9 and -');
      const s = await sessions.get(sessionIdFor(req.resumeId, tenantOf(call.metadata)));
      return s ? { found: true, receivedBytes: receivedBytes(s), totalBytes: s.totalBytes, partBytes: s.partBytes } : { found: false, receivedBytes: 0, totalBytes: 0, partBytes: 0 };
    }),

    uploadAndSubmit: clientStream(log, async (call: ServerReadableStream<UploadChunk, SubmitJobResponse>, signal) => {
      const tenant = tenantOf(call.metadata);
      // Uploads in flight here, and a tenant's bytes in flight (by their declared size): bounded.
      if (uploads >= d.cfg.MAX_CONCURRENT_UPLOADS) throw new AppError('QUOTA_EXCEEDED', `this coordinator already takes ${uploads} uploads (MAX_CONCURRENT_UPLOADS); try again shortly`);
      uploads++;
      let reserved = 0;
      try {
        const it = call[Symbol.asyncIterator]() as AsyncIterator<UploadChunk>;
        const first = await it.next();
        if (first.done || !first.value.spec) throw new AppError('INVALID_ARGUMENT', 'the first message must carry the job spec');
        const head = first.value;
        if (tenant) {
          const inFlight = uploadBytes.get(tenant.name) ?? 0;
          reserved = head.totalBytes ?? 0;
          if (inFlight + reserved > tenant.maxUploadBytes)
            throw new AppError(
              'QUOTA_EXCEEDED',
              `tenant ${tenant.name} has ${inFlight} bytes of uploads in flight; with ${reserved} more it would pass its quota (maxUploadBytes ${tenant.maxUploadBytes})`,
            );
          uploadBytes.set(tenant.name, inFlight + reserved);
        }
        return await receiveUpload(head, it, tenant, signal);
      } finally {
        uploads--;
        if (tenant && reserved > 0) uploadBytes.set(tenant.name, Math.max(0, (uploadBytes.get(tenant.name) ?? 0) - reserved));
      }
    }),

    getJob: unary(log, async (req, call) => viewFor(checkJobId(req.jobId), tenantOf(call.metadata))),

    watchJob: serverStream(log, async (req, send, call, signal) => {
      const id = checkJobId(req.jobId);
      await viewFor(id, tenantOf(call.metadata));
      if (watches >= d.cfg.MAX_OPEN_WATCHES) throw new AppError('QUOTA_EXCEEDED', `this coordinator already serves ${watches} watches (MAX_OPEN_WATCHES); try again shortly`);
      watches++;
      try {
        await watchJob(id, send, signal);
      } finally {
        watches--;
      }
    }),

    cancelJob: unary(log, async (req, call) => {
      const id = checkJobId(req.jobId);
      await viewFor(id, tenantOf(call.metadata));
      const rec = await store.cancel(id, 'cancelled by the user');
      log.info({ jobId: id, state: rec.state }, 'cancel requested');
      return store.view(id);
    }),

    listJobs: unary(log, async (req, call) => {
      const tenant = tenantOf(call.metadata);
      const state = fromProtoJobState(req.state);
      const limit = req.limit > 0 ? Math.min(req.limit, 1000) : 50;
      const before = req.pageToken ? checkJobId(req.pageToken) : undefined;
      const page = await store.listPage(limit, state ? [state] : undefined, before);
      // A tenant's page holds only its jobs (it may be shorter than the limit; the token goes on).
      const jobs = (await store.summaries(page.ids)).filter((j) => !tenant || j.spec?.tenant === tenant.name);
      return { jobs, nextPageToken: page.next ?? '' };
    }),
  };

  /** The bytes of one upload, then its job: resumable (multipart, straight to S3) or staged here first. */
  async function receiveUpload(head: UploadChunk, it: AsyncIterator<UploadChunk>, tenant: Tenant | undefined, signal: AbortSignal): Promise<SubmitJobResponse> {
    const spec = scopeSpec(JobSpec.fromPartial({ ...head.spec, inputUri: 's3://placeholder/upload', inputName: displayName(head.fileName) }), tenant);
    validateSpec(spec, d.encoders, { bucket: d.cfg.S3_BUCKET, prefix: d.cfg.OUTPUT_PREFIX }); // fail fast, before the bytes
    if (tenant && spec.outputUri) checkS3(tenant, spec.outputUri, 'output', d.cfg.S3_BUCKET);
    await checkWebhook(d, spec.webhookUrl);
    if (head.resumeId !== undefined) return resumableUpload(head, it, spec, signal, tenant);
    const uploadId = `u${Date.now().toString(36)}${randomBytes(5).toString('hex')}`;
    const dir = join(d.stagingDir, 'uploads');
    await mkdir(dir, { recursive: true });
    const path = join(dir, uploadId);
    try {
      const got = await receiveChunks(paced(chunksOf(head, it), paceFromConfig(d.cfg)), { path, maxBytes: d.cfg.MAX_UPLOAD_BYTES, signal });
      if (got.bytes === 0) throw new AppError('INPUT_EMPTY', 'the uploaded file is empty (0 bytes)');
      const idemKey = spec.idempotencyKey;
      // With an idempotency key the object is named by the key and the file's SHA-256: a retry
      // of the same upload names the same object and the same spec (so the same job), a
      // different file under the same key is a different spec (IDEMPOTENCY_CONFLICT).
      const prefix = tenant ? tenantUploadPrefix(tenant.name) : 'uploads/';
      const key = idemKey ? `${prefix}k${sha256Hex(idemKey).slice(0, 24)}-${got.sha256.slice(0, 32)}` : `${prefix}${uploadId}`;
      const full = { ...spec, inputUri: `s3://${d.cfg.S3_BUCKET}/${key}` };
      if (idemKey) {
        // A retry of an accepted upload: answer with that job; nothing is stored again.
        const prior = await priorAnswer(full, idemKey);
        if (prior) return prior;
      }
      // Durable before we acknowledge: the upload goes to S3, where any coordinator can read it
      // (multipart above one part's size: S3 refuses a single PUT over 5 GiB). Retried on
      // transient errors with a fresh stream each time (a used stream cannot be re-sent; s3rver
      // answers 500 when a concurrent delete of the last object under uploads/ removes the folder).
      await retry(
        async () => {
          const put = new Upload({
            client: d.s3,
            params: { Bucket: d.cfg.S3_BUCKET, Key: key, Body: createReadStream(path), ContentLength: got.bytes },
            partSize: d.cfg.UPLOAD_PART_BYTES,
            queueSize: 2,
            leavePartsOnError: false,
          });
          const onAbort = (): void => void put.abort();
          signal.addEventListener('abort', onAbort, { once: true });
          try {
            await put.done();
          } finally {
            signal.removeEventListener('abort', onAbort);
          }
        },
        { attempts: 4, baseMs: 200, maxMs: 2_000, signal, isRetryable: isTransientS3Error },
      );
      try {
        return await submit(full, tenant);
      } catch (err) {
        // Lost a race to a different file under the same key: our object serves no job. (The
        // same file would name the same object, which the winner's job reads: kept.)
        if (idemKey && isAppError(err, 'IDEMPOTENCY_CONFLICT')) {
          const winner = await priorSubmission(d, idemKey);
          const winnerJob = winner ? await store.get(winner.jobId) : undefined;
          if (winnerJob && winnerJob.spec.inputUri !== full.inputUri) {
            await s3Send('DeleteObject', () => d.s3.send(new DeleteObjectCommand({ Bucket: d.cfg.S3_BUCKET, Key: key }))).catch((e: unknown) =>
              log.warn({ err: e, key }, 'could not delete an unused upload'),
            );
          }
        }
        throw err;
      }
    } finally {
      await rm(path, { force: true });
      await rm(`${path}.partial`, { force: true });
    }
  }

  /** Sends the job at once and after every change until it ends or the caller goes. */
  async function watchJob(id: string, send: (msg: { seq: number; job: Job }) => Promise<void>, signal: AbortSignal): Promise<void> {
    let wake: (() => void) | undefined;
    let dirty = true;
    const poke = (): void => {
      dirty = true;
      wake?.();
    };
    // Watch first, then read: no change can slip between the snapshot and the watch.
    // Re-watched after compaction (a re-read follows): the stream never stalls on a dead watch.
    const handlers = { put: poke, delete: poke, disconnected: poke, resync: poke };
    const w1 = await ResilientWatch.open(d.etcd, { key: d.keys.job(id) }, handlers, log);
    const w2 = await ResilientWatch.open(d.etcd, { prefix: `${d.keys.job(id)}/` }, handlers, log).catch(async (err: unknown) => {
      await w1.cancel();
      throw err;
    });
    // Re-read now and then as well: a watch can lag. One timer per watcher, cleared at the end.
    const relist = setInterval(() => poke(), 5_000);
    const onAbort = (): void => wake?.();
    signal.addEventListener('abort', onAbort, { once: true });
    let seq = 0;
    let last = '';
    try {
      for (;;) {
        if (dirty) {
          dirty = false;
          // Through an etcd outage the stream stays open and shows the job again afterwards.
          const job: Job = await withEtcdRetry('watch job', () => store.view(id), { signal });
          const s = JSON.stringify(job);
          if (s !== last) {
            last = s;
            await send({ seq: ++seq, job });
          }
          const st = fromProtoJobState(job.state);
          if (st && TERMINAL.has(st)) return;
        }
        if (signal.aborted) return;
        if (!dirty)
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        wake = undefined;
      }
    } finally {
      clearInterval(relist);
      signal.removeEventListener('abort', onAbort);
      await Promise.allSettled([w1.cancel(), w2.cancel()]);
    }
  }
}

/** A spec as its caller's tenant submits it: the tenant set by the cluster, the idempotency key in the tenant's namespace. */
function scopeSpec(spec: JobSpec, tenant: Tenant | undefined): JobSpec {
  const { tenant: _sent, ...rest } = spec;
  if (!tenant) return rest as JobSpec;
  const key = rest.idempotencyKey && !rest.idempotencyKey.startsWith(`${tenant.name}:`) ? `${tenant.name}:${rest.idempotencyKey}` : rest.idempotencyKey;
  return { ...rest, tenant: tenant.name, idempotencyKey: key };
}

/** A tenant's resume ids are its own: the session id is derived from the tenant and the client's id. */
function sessionIdFor(resumeId: string, tenant: Tenant | undefined): string {
  return tenant ? `t${createHash('sha256').update(`${tenant.name}\0${resumeId}`).digest('hex').slice(0, 40)}` : resumeId;
}

/** What `idempotency/<key>` records: the job a key was first used for, and that job's spec hash. */
async function priorSubmission(d: JobServiceDeps, idempotencyKey: string): Promise<{ jobId: string; specHash: string } | undefined> {
  const raw = await d.etcd.get(d.keys.idempotency(idempotencyKey)).string();
  return raw === null ? undefined : parseRecord(idempotencyRecordSchema, raw, d.keys.idempotency(idempotencyKey));
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
