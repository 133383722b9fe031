import { codecFamilies } from '../../common/placement.js';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { dirname, extname, join, normalize, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Metadata, type ChannelCredentials } from '@grpc/grpc-js';
import { AppError, isAppError, type ErrorCode } from '../../common/errors.js';
import { ClientCache } from '../../common/grpc-clients.js';
import { callUnary, deadline, iterateStream, openClientStream } from '../../common/grpc.js';
import type { Logger } from '../../common/logger.js';
import type { TlsMaterial } from '../../common/tls.js';
import { JobServiceClient } from '../../common/bulk-codec.js';
import { AdminClient, ClusterStatus, NodeInfo } from '../../proto/gen/tessera/v1/admin.js';
import { UploadChunk, type JobEvent, type ListJobsRequest, type SubmitJobResponse } from '../../proto/gen/tessera/v1/jobs.js';
import { Job, JobSpec, JobState, jobStateFromJSON, jobStateToJSON, segmentStateToJSON } from '../../proto/gen/tessera/v1/types.js';
import { parseLadderArg } from '../../sdk/ladder-arg.js';
import { s3Send } from '../../common/s3-client.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const STATIC_DIR = join(HERE, 'static');
const REPO_ROOT = join(HERE, '..', '..');
/** Front-end libraries served from node_modules (no build step; see docs/console.md). */
const VENDOR: Record<string, string> = {
  '/vendor/chart.umd.js': join(REPO_ROOT, 'node_modules', 'chart.js', 'dist', 'chart.umd.js'),
};
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml' };

/** The custom header every mutating request must carry (a cross-site form or image cannot set it). */
export const CSRF_HEADER = 'x-tessera-console';

export interface ConsoleOptions {
  host: string;
  port: number;
  /** The coordinator's own gRPC address (loopback) and how to dial it. */
  grpcAddress: string;
  creds: ChannelCredentials;
  /** With TLS: the name the coordinator's certificate carries (its id). */
  identity?: string;
  /** With TLS the console serves HTTPS with the coordinator's server certificate. */
  tls?: TlsMaterial;
  s3: S3Client;
  log: Logger;
  /** Deadline of each unary call to the API, ms. */
  timeoutMs: number;
  /** Jobs list (default 2 s) and cluster (3 s) streams: how often the server re-reads the API for each view, ms. */
  jobsIntervalMs?: number;
  clusterIntervalMs?: number;
}

export interface ConsoleServer {
  server: Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  JOB_NOT_FOUND: 404,
  INVALID_ARGUMENT: 400,
  INPUT_EMPTY: 400,
  LIMIT_EXCEEDED: 413,
  FAILED_PRECONDITION: 409,
  IDEMPOTENCY_CONFLICT: 409,
  UNAVAILABLE: 503,
  NOT_LEADER: 503,
  DEADLINE_EXCEEDED: 504,
};

/**
 * A node as the console shows it: its capability families as it advertised them (codec families,
 * 10-bit, and hardware encoders only when a probe encode succeeded; common/placement.ts), not
 * ffmpeg's encoder names.
 */
function nodeJson(n: NodeInfo): unknown {
  return { ...(NodeInfo.toJSON(n) as object), codecFamilies: n.capabilities.length ? n.capabilities : codecFamilies(n.encoders) };
}

/**
 * The web console: static pages plus a JSON and streaming API that calls the coordinator's own
 * gRPC API over loopback with the caller's bearer token, so every view and action is authorised
 * exactly as the API authorises it (one policy, one source of truth: no second state store).
 * Streams are `text/event-stream` read with fetch (EventSource cannot send a header).
 */
export async function startConsoleServer(o: ConsoleOptions): Promise<ConsoleServer> {
  const clients = new ClientCache(o.creds);
  const jobs = (): JobServiceClient => clients.get(JobServiceClient, o.grpcAddress, o.identity);
  const admin = (): AdminClient => clients.get(AdminClient, o.grpcAddress, o.identity);
  const log = o.log;
  // Download links: issued after a GetJob with the caller's token, valid a few minutes (a link
  // cannot carry a header); the id is random and names the job's own result object.
  const links = new Map<string, { jobId: string; bucket: string; key: string; expMs: number }>();
  // Throughput samples for the cluster chart, taken from cluster-status reads (one per interval at most).
  const fps: { atMs: number; fps: number }[] = [];
  const sampleFps = (v: number): void => {
    const now = Date.now();
    if (fps.length > 0 && now - fps[fps.length - 1]!.atMs < clusterEvery * 0.9) return;
    fps.push({ atMs: now, fps: v });
    while (fps.length > 0 && now - fps[0]!.atMs > 10 * 60_000) fps.shift();
  };
  const streams = new Set<AbortController>();
  const jobsEvery = o.jobsIntervalMs ?? 2_000;
  const clusterEvery = o.clusterIntervalMs ?? 3_000;

  /**
   * One reader per (view, token), shared by every stream that shows it: it re-reads the API every
   * `every` ms while anyone listens and hands on an answer only when it changed. An error ends
   * it (and its streams: the browser reconnects with backoff).
   */
  type PollEvent = { data?: string; err?: AppError };
  type Poll = { subs: Set<(ev: PollEvent) => void>; last?: string; stop: () => void };
  const polls = new Map<string, Poll>();
  const joinPoll = (key: string, every: number, read: () => Promise<unknown>, sub: (ev: PollEvent) => void): (() => void) => {
    let poll = polls.get(key);
    if (!poll) {
      const pac = new AbortController();
      const p: Poll = { subs: new Set(), stop: () => pac.abort() };
      polls.set(key, p);
      poll = p;
      void (async () => {
        while (!pac.signal.aborted) {
          try {
            const s = JSON.stringify(await read());
            if (s !== p.last && !pac.signal.aborted) {
              p.last = s;
              for (const f of [...p.subs]) f({ data: s });
            }
          } catch (err) {
            const e = isAppError(err) ? err : new AppError('INTERNAL', 'internal error');
            if (!isAppError(err)) log.error({ err }, 'console view read failed');
            for (const f of [...p.subs]) f({ err: e });
            break;
          }
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, every);
            pac.signal.addEventListener(
              'abort',
              () => {
                clearTimeout(t);
                resolve();
              },
              { once: true },
            );
          });
        }
        p.stop();
        if (polls.get(key) === p) polls.delete(key);
      })();
    }
    const p = poll;
    p.subs.add(sub);
    if (p.last !== undefined) sub({ data: p.last });
    let left = false;
    return () => {
      if (left) return;
      left = true;
      p.subs.delete(sub);
      if (p.subs.size === 0) {
        p.stop();
        if (polls.get(key) === p) polls.delete(key);
      }
    };
  };

  const md = (req: IncomingMessage): Metadata => {
    const m = new Metadata();
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && auth.length > 0 && auth.length < 4096) m.set('authorization', auth);
    return m;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://console');
    const path = url.pathname;
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('referrer-policy', 'no-referrer');
    if (!path.startsWith('/api/')) return serveStatic(req, res, path);
    res.setHeader('cache-control', 'no-store');
    const method = req.method ?? 'GET';
    if (method === 'POST') checkCsrf(req);
    else if (method !== 'GET') throw new AppError('INVALID_ARGUMENT', `method ${method} is not allowed`);
    let parts: string[]; // ['api', ...]
    try {
      parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      throw new AppError('INVALID_ARGUMENT', 'malformed path');
    }
    const route = `${method} /${parts
      .slice(1)
      .map((p, i) => (i === 1 && ['jobs', 'nodes', 'download'].includes(parts[1]!) ? ':id' : p))
      .join('/')}`;
    const id = parts[2] ?? '';
    switch (route) {
      case 'GET /jobs': {
        const r = await listJobs(req, url.searchParams.get('state') ?? '', Number(url.searchParams.get('limit') ?? 50));
        return sendJson(res, 200, r);
      }
      case 'GET /jobs/:id': {
        const j = await callUnary<{ jobId: string }, Job>(jobs(), jobs().getJob, { jobId: id }, o.timeoutMs, md(req));
        return sendJson(res, 200, jobJson(j, true));
      }
      case 'POST /jobs/:id/cancel': {
        const j = await callUnary<{ jobId: string }, Job>(jobs(), jobs().cancelJob, { jobId: id }, o.timeoutMs, md(req));
        log.info({ jobId: id, state: j.state }, 'job cancelled from the console');
        return sendJson(res, 200, jobJson(j, false));
      }
      case 'POST /jobs/:id/download-link': {
        // Authorised like GetJob (read): the link then works without a header for a few minutes.
        const j = await callUnary<{ jobId: string }, Job>(jobs(), jobs().getJob, { jobId: id }, o.timeoutMs, md(req));
        if (!j.result?.key) throw new AppError('FAILED_PRECONDITION', `job ${id} has no result to download yet`);
        const now = Date.now();
        for (const [k, v] of links) if (v.expMs < now) links.delete(k);
        const link = randomBytes(24).toString('base64url');
        links.set(link, { jobId: j.id, bucket: j.result.bucket, key: j.result.key, expMs: now + 5 * 60_000 });
        return sendJson(res, 200, { url: `/api/download/${link}` });
      }
      case 'GET /download/:id':
        return download(req, res, id);
      case 'POST /upload':
        return upload(req, res, url);
      case 'GET /nodes': {
        const r = await callUnary<object, { nodes: NodeInfo[] }>(admin(), admin().listNodes, {}, o.timeoutMs, md(req));
        return sendJson(res, 200, { nodes: r.nodes.map(nodeJson) });
      }
      case 'POST /nodes/:id/drain':
      case 'POST /nodes/:id/undrain': {
        const c = admin();
        const n = await callUnary<{ nodeId: string }, NodeInfo>(c, route.endsWith('/drain') ? c.drainNode : c.undrainNode, { nodeId: id }, o.timeoutMs, md(req));
        log.info({ nodeId: id, state: n.state }, `node ${route.endsWith('/drain') ? 'drain' : 'undrain'} from the console`);
        return sendJson(res, 200, nodeJson(n));
      }
      case 'GET /cluster':
        return sendJson(res, 200, await cluster(req));
      case 'GET /stream':
        return stream(req, res, url);
      default:
        throw new AppError('NOT_FOUND', `no console endpoint ${method} ${path}`);
    }
  };

  /** Mutations need a custom header (a cross-site form cannot send one without a CORS preflight, which is never granted) and, when the browser names it, this origin. */
  const checkCsrf = (req: IncomingMessage): void => {
    if (req.headers[CSRF_HEADER] !== '1') throw new AppError('PERMISSION_DENIED', `a console mutation needs the ${CSRF_HEADER} header (cross-site request refused)`);
    const origin = req.headers.origin;
    if (origin !== undefined) {
      let host = '';
      try {
        host = new URL(origin).host;
      } catch {
        // not a URL: refused below
      }
      if (host !== req.headers.host) throw new AppError('PERMISSION_DENIED', `cross-origin request from ${origin} refused`);
    }
  };

  const listJobs = async (req: IncomingMessage, state: string, limit: number): Promise<{ jobs: unknown[] }> => {
    const st = state ? jobStateFromJSON(state.startsWith('JOB_STATE_') ? state : `JOB_STATE_${state.toUpperCase()}`) : JobState.JOB_STATE_UNSPECIFIED;
    if (st === JobState.UNRECOGNIZED) throw new AppError('INVALID_ARGUMENT', `unknown job state "${state}"`);
    const r = await callUnary<ListJobsRequest, { jobs: Job[] }>(
      jobs(),
      jobs().listJobs,
      { limit: Number.isFinite(limit) && limit > 0 ? Math.min(limit, 200) : 50, state: st, pageToken: '' },
      o.timeoutMs,
      md(req),
    );
    return { jobs: r.jobs.map((j) => jobJson(j, false)) };
  };

  const cluster = async (req: IncomingMessage): Promise<unknown> => {
    const s = await callUnary<object, ClusterStatus>(admin(), admin().getClusterStatus, {}, o.timeoutMs, md(req));
    sampleFps(s.framesPerSecond1m);
    const json = ClusterStatus.toJSON(s) as Record<string, unknown>;
    return { ...json, nodes: s.nodes.map(nodeJson), fpsHistory: fps };
  };

  /** POST /api/upload?name=&ladder=&package=: the body is the file, streamed into UploadAndSubmit. */
  const upload = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const total = Number(req.headers['content-length'] ?? 0);
    if (!(total > 0)) {
      req.resume();
      throw new AppError('INPUT_EMPTY', 'the upload is empty (or has no Content-Length)');
    }
    const name = (url.searchParams.get('name') ?? 'upload').slice(0, 255);
    const ladderArg = url.searchParams.get('ladder') ?? '';
    let spec: JobSpec;
    try {
      spec = JobSpec.fromPartial({
        ladder: ladderArg ? parseLadderArg(ladderArg) : [],
        ...(url.searchParams.get('package') ? { package: url.searchParams.get('package')! } : {}),
        ...(url.searchParams.get('container') ? { container: url.searchParams.get('container')! } : {}),
      });
    } catch (err) {
      req.resume();
      throw err;
    }
    const ac = new AbortController();
    req.on('close', () => {
      if (!req.complete) ac.abort(new AppError('CANCELLED', 'the browser stopped the upload'));
    });
    const client = jobs();
    const call = openClientStream<UploadChunk, SubmitJobResponse>((cb) => client.uploadAndSubmit(md(req), deadline(3_600_000), cb), ac.signal);
    const resumeId = randomBytes(16).toString('hex');
    let offset = 0;
    // The body goes into the call with back-pressure (the request pauses while the call's buffer
    // is full). Once the call fails (a refused token, a bad file) the rest of the body is read and
    // dropped, so that the browser, still sending, reads the answer rather than a reset.
    let failed = false;
    void call.result.catch(() => {
      failed = true;
      req.resume();
    });
    await new Promise<void>((resolve) => {
      req.on('data', (data: Buffer) => {
        if (failed) return;
        const msg = UploadChunk.fromPartial({ offset, data, ...(offset === 0 ? { spec, fileName: name, resumeId, totalBytes: total } : {}) });
        offset += data.length;
        if (!call.stream.write(msg)) {
          req.pause();
          call.stream.once('drain', () => req.resume());
        }
      });
      req.on('end', resolve);
      req.on('close', resolve);
    });
    if (!failed) call.stream.end();
    const r = await call.result;
    log.info({ jobId: r.jobId, bytes: offset, name }, 'job submitted by upload from the console');
    sendJson(res, 200, { jobId: r.jobId });
  };

  const download = async (req: IncomingMessage, res: ServerResponse, linkId: string): Promise<void> => {
    const link = links.get(linkId);
    if (!link || link.expMs < Date.now()) throw new AppError('UNAUTHENTICATED', 'the download link is not valid or has expired: open the job again');
    const j = { id: link.jobId, result: { bucket: link.bucket, key: link.key } };
    const got = await s3Send('GetObject', (opts) => o.s3.send(new GetObjectCommand({ Bucket: j.result.bucket, Key: j.result.key }), opts), {
      signal: AbortSignal.timeout(3_600_000),
    });
    res.writeHead(200, {
      'content-type': 'application/zip',
      'content-disposition': `attachment; filename="${link.jobId}.zip"`,
      ...(got.ContentLength !== undefined ? { 'content-length': String(got.ContentLength) } : {}),
    });
    const body = got.Body as Readable;
    req.on('close', () => body.destroy());
    body.pipe(res);
  };

  /** One streaming response (`text/event-stream`): `topic=jobs` (list), `job` (WatchJob) or `cluster` (admin status). */
  const stream = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const topic = url.searchParams.get('topic') ?? '';
    if (!['jobs', 'job', 'cluster'].includes(topic)) throw new AppError('INVALID_ARGUMENT', 'topic must be jobs, job or cluster');
    const ac = new AbortController();
    streams.add(ac);
    req.on('close', () => ac.abort());
    res.on('close', () => ac.abort());
    let started = false;
    const start = (): void => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    };
    const send = (event: string, data: unknown): void => {
      start();
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const ping = setInterval(() => {
      if (started) res.write(': ping\n\n');
    }, 15_000);
    try {
      if (topic === 'job') {
        const id = url.searchParams.get('id') ?? '';
        const c = jobs();
        const call = c.watchJob({ jobId: id }, md(req));
        ac.signal.addEventListener('abort', () => call.cancel(), { once: true });
        for await (const ev of iterateStream<JobEvent>(call)) if (ev.job) send('job', jobJson(ev.job, true));
        send('end', {});
      } else {
        const every = topic === 'jobs' ? jobsEvery : clusterEvery;
        const state = url.searchParams.get('state') ?? '';
        const limit = Number(url.searchParams.get('limit') ?? 50);
        // Consoles open with the same token and view share one reader (the same answer is theirs).
        const key = [topic, state, limit, req.headers.authorization ?? ''].join('\n');
        await new Promise<void>((resolve, reject) => {
          const leave = joinPoll(
            key,
            every,
            () => (topic === 'jobs' ? listJobs(req, state, limit) : cluster(req)),
            (ev) => {
              if (ev.err) {
                leave();
                reject(ev.err);
              } else {
                start();
                res.write(`event: ${topic}\ndata: ${ev.data}\n\n`);
              }
            },
          );
          ac.signal.addEventListener(
            'abort',
            () => {
              leave();
              resolve();
            },
            { once: true },
          );
        });
      }
    } catch (err) {
      if (!ac.signal.aborted) {
        const e = isAppError(err) ? err : new AppError('INTERNAL', 'internal error');
        if (!started) throw e; // an ordinary error answer (401/403 …) when nothing was streamed yet
        send('error', { code: e.code, message: e.message });
      }
    } finally {
      clearInterval(ping);
      streams.delete(ac);
      if (started && !res.writableEnded) res.end();
    }
  };

  const serveStatic = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new AppError('INVALID_ARGUMENT', 'static files are read-only');
    let file = VENDOR[path];
    if (!file) {
      const rel = path === '/' || !extname(path) ? 'index.html' : path.slice(1);
      file = normalize(join(STATIC_DIR, rel));
      if (!file.startsWith(STATIC_DIR + sep)) throw new AppError('NOT_FOUND', 'no such file');
    }
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) throw new AppError('NOT_FOUND', `no such file ${path}`);
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': String(st.size),
      'cache-control': 'no-cache',
      // The pages load scripts and styles from this origin only.
      'content-security-policy': "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
      'x-frame-options': 'DENY',
    });
    if (req.method === 'HEAD') return void res.end();
    createReadStream(file).pipe(res);
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((err: unknown) => {
      const e = isAppError(err) ? err : new AppError('INTERNAL', 'internal error');
      if (!isAppError(err)) log.error({ err, url: req.url }, 'console request failed');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(res, HTTP_STATUS[e.code] ?? 500, { error: { code: e.code, message: e.message } });
    });
  };
  const server = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, onRequest) : createHttpServer(onRequest);
  // A slow client holds no socket for long before it sends its headers.
  server.headersTimeout = 20_000;
  server.requestTimeout = 0; // uploads and streams may last
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = o.host === '0.0.0.0' || o.host === '::' ? 'localhost' : o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    server,
    port,
    url: `${o.tls ? 'https' : 'http'}://${shownHost}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of streams) s.abort();
        server.closeAllConnections();
        server.close(() => resolve());
        clients.closeAll();
      }),
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

/** A job as JSON (enum names, defaults filled so the page need not guess). */
function jobJson(j: Job, full: boolean): unknown {
  // Lists carry neither segments nor the trail (and no clock: an unchanged list is not re-sent).
  const x = Job.toJSON({ ...j, segments: [], history: full ? j.history : [] }) as Record<string, unknown>;
  return {
    ...x,
    id: j.id,
    state: jobStateToJSON(j.state),
    progress: j.progress,
    createdAtMs: j.createdAtMs,
    updatedAtMs: j.updatedAtMs,
    finishedAtMs: j.finishedAtMs,
    etaP50Sec: j.etaP50Sec,
    etaP90Sec: j.etaP90Sec,
    errorCode: j.errorCode,
    errorMessage: j.errorMessage,
    segments: full
      ? j.segments.map((s) => ({
          index: s.index,
          nodeId: s.nodeId,
          attempt: s.attempt,
          state: segmentStateToJSON(s.state),
          startSec: s.startSec,
          endSec: s.endSec,
          frames: s.frames,
          framesDone: s.framesDone,
          subSegments: s.subSegments,
          subSegmentsDone: s.subSegmentsDone,
        }))
      : [],
    history: full ? j.history : [],
    ...(full ? { nowMs: Date.now() } : {}),
  };
}
