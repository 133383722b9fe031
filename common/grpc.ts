import {
  Metadata,
  status as GrpcStatus,
  type ServiceError,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServerReadableStream,
  type sendUnaryData,
  type ClientReadableStream,
  type CallOptions,
  type Client,
} from '@grpc/grpc-js';
import { AppError, GRPC_STATUS_BY_CODE, type ErrorCode } from './errors.js';
import { asAppError, isEtcdLibraryError } from './etcd-retry.js';
import type { Logger } from './logger.js';

const ERROR_CODE_KEY = 'tessera-error-code';
const RETRYABLE_KEY = 'tessera-retryable';

/** Turns any thrown value into a ServiceError; non-AppErrors become a generic INTERNAL. */
export function toServiceError(err: unknown, log?: Logger): Partial<ServiceError> {
  const md = new Metadata();
  if (err instanceof AppError) {
    md.set(ERROR_CODE_KEY, err.code);
    md.set(RETRYABLE_KEY, String(err.retryable));
    return { code: err.grpcStatus, details: err.message, message: err.message, metadata: md };
  }
  if (isEtcdLibraryError(err)) {
    // Classified by the etcd adapter (an outage: UNAVAILABLE, retryable; a refused request:
    // permanent); the text stays generic, since etcd's own names hosts and ports.
    const e = asAppError(err, { what: 'the cluster store' });
    log?.warn({ err }, 'etcd error in handler');
    const text = e.code === 'UNAVAILABLE' ? 'the cluster store is unavailable; retry' : 'internal error';
    md.set(ERROR_CODE_KEY, e.code);
    md.set(RETRYABLE_KEY, String(e.retryable));
    return { code: e.grpcStatus, details: text, message: text, metadata: md };
  }
  log?.error({ err }, 'unexpected error in handler');
  md.set(ERROR_CODE_KEY, 'INTERNAL');
  return { code: GrpcStatus.INTERNAL, details: 'internal error', message: 'internal error', metadata: md };
}

const CODE_BY_STATUS: Partial<Record<GrpcStatus, ErrorCode>> = {
  [GrpcStatus.UNAVAILABLE]: 'UNAVAILABLE',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'DEADLINE_EXCEEDED',
  [GrpcStatus.CANCELLED]: 'CANCELLED',
  [GrpcStatus.NOT_FOUND]: 'NOT_FOUND',
  [GrpcStatus.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [GrpcStatus.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [GrpcStatus.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [GrpcStatus.ABORTED]: 'FENCED',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'LIMIT_EXCEEDED',
  [GrpcStatus.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
};

/**
 * Statuses that did not come from a Tessera handler (no error code in the trailers) but from the
 * transport: the connection dropped or was reset (grpc-js reports a reset stream as INTERNAL), the
 * server went away mid-call (CANCELLED), or a deadline passed. Another try may succeed, so the
 * AppError made of one is retryable; the caller's own cancellation is its signal's business.
 */
const TRANSPORT_RETRYABLE: ReadonlySet<GrpcStatus> = new Set([GrpcStatus.UNAVAILABLE, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.CANCELLED, GrpcStatus.INTERNAL]);

/** Turns a gRPC client error back into an AppError with the server's code and retryable marker. */
export function fromServiceError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const se = err as Partial<ServiceError>;
  if (typeof se?.code !== 'number') return new AppError('INTERNAL', String((err as Error)?.message ?? err), { cause: err });
  const raw = se.metadata?.get(ERROR_CODE_KEY)[0];
  const ours = typeof raw === 'string' && raw in GRPC_STATUS_BY_CODE;
  const code = (ours ? raw : (CODE_BY_STATUS[se.code] ?? 'INTERNAL')) as ErrorCode;
  const marker = se.metadata?.get(RETRYABLE_KEY)[0];
  const retryable = marker !== undefined ? marker === 'true' : ours ? undefined : TRANSPORT_RETRYABLE.has(se.code) || undefined;
  return new AppError(code, clientMessage(se.details || se.message || 'error'), retryable === undefined ? { cause: err } : { cause: err, retryable });
}

/**
 * grpc-js's own connection errors, made readable: an empty "Resolution note:" dropped, and
 * "No connection established" said plainly.
 */
export function clientMessage(m: string): string {
  const text = m.replace(/\s*Resolution note:\s*$/, '').replace(/\.\s*$/, '');
  const refused = /^No connection established\. Last error: (?:Error: )?(.*)$/s.exec(text);
  return refused ? `cannot connect: ${refused[1]}` : text;
}

/** Wraps an async unary handler: errors become statuses in one place. */
export function unary<Req, Res>(log: Logger, fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>): (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void {
  return (call, cb) => {
    fn(call.request, call).then(
      (res) => cb(null, res),
      (err: unknown) => cb(toServiceError(err, log)),
    );
  };
}

/** Wraps an async server-streaming handler. The handler writes with `send` (honours back-pressure). */
export function serverStream<Req, Res>(
  log: Logger,
  fn: (req: Req, send: (msg: Res) => Promise<void>, call: ServerWritableStream<Req, Res>, signal: AbortSignal) => Promise<void>,
): (call: ServerWritableStream<Req, Res>) => void {
  return (call) => {
    const ac = new AbortController();
    call.on('cancelled', () => ac.abort(new AppError('CANCELLED', 'client cancelled')));
    call.on('close', () => ac.abort(new AppError('CANCELLED', 'stream closed')));
    const send = (msg: Res): Promise<void> =>
      new Promise((resolve, reject) => {
        if (ac.signal.aborted) return reject(ac.signal.reason);
        if (call.write(msg)) return resolve();
        const onDrain = (): void => {
          ac.signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          call.off('drain', onDrain);
          reject(ac.signal.reason);
        };
        call.once('drain', onDrain);
        ac.signal.addEventListener('abort', onAbort, { once: true });
      });
    fn(call.request, send, call, ac.signal).then(
      () => {
        if (!ac.signal.aborted) call.end();
      },
      (err: unknown) => {
        if (!call.cancelled) call.emit('error', toServiceError(err, log));
      },
    );
  };
}

/** Wraps an async client-streaming handler. */
export function clientStream<Req, Res>(
  log: Logger,
  fn: (call: ServerReadableStream<Req, Res>, signal: AbortSignal) => Promise<Res>,
): (call: ServerReadableStream<Req, Res>, cb: sendUnaryData<Res>) => void {
  return (call, cb) => {
    const ac = new AbortController();
    call.on('cancelled', () => ac.abort(new AppError('CANCELLED', 'client cancelled')));
    fn(call, ac.signal).then(
      (res) => cb(null, res),
      (err: unknown) => {
        call.destroy();
        cb(toServiceError(err, log));
      },
    );
  };
}

/** Call options with a deadline `ms` from now (every network call has one). */
export function deadline(ms: number, extra: Partial<CallOptions> = {}): Partial<CallOptions> {
  return { ...extra, deadline: new Date(Date.now() + ms) };
}

type UnaryMethod<Req, Res> = (req: Req, metadata: Metadata, options: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/** Promisified unary call with a deadline; errors come back as AppError. */
export function callUnary<Req, Res>(client: Client, method: UnaryMethod<Req, Res>, req: Req, timeoutMs: number, metadata: Metadata = new Metadata(), signal?: AbortSignal): Promise<Res> {
  // Already aborted: not sent at all (the 'abort' event would not fire again to cancel it).
  if (signal?.aborted) return Promise.reject(signal.reason ?? new AppError('CANCELLED', 'aborted'));
  return new Promise((resolve, reject) => {
    const call = method.call(client, req, metadata, deadline(timeoutMs), (err, res) => {
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(fromServiceError(err));
      else resolve(res);
    }) as { cancel?: () => void };
    const onAbort = (): void => call.cancel?.();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Consumes a server stream as an async iterator; errors come back as AppError. */
export async function* iterateStream<T>(stream: ClientReadableStream<T>): AsyncGenerator<T> {
  try {
    for await (const msg of stream) yield msg as T;
  } catch (err) {
    throw fromServiceError(err);
  }
}

/** Writes to a client stream honouring back-pressure: waits for 'drain' when write() says so. */
export function writeWithBackpressure<T>(
  stream: { write(msg: T): boolean; once(ev: 'drain', cb: () => void): unknown; off(ev: 'drain', cb: () => void): unknown },
  msg: T,
  signal?: AbortSignal,
): Promise<void> {
  // A signal aborted before this call never fires its 'abort' event again: without this check a
  // write to a cancelled stream that reports a full buffer waited for a 'drain' that never came.
  if (signal?.aborted) return Promise.reject(signal.reason ?? new AppError('CANCELLED', 'aborted'));
  if (stream.write(msg)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    };
    const onAbort = (): void => {
      stream.off('drain', onDrain);
      reject(signal?.reason ?? new AppError('CANCELLED', 'aborted'));
    };
    stream.once('drain', onDrain);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * HTTP/2 receive windows (bytes in flight before the receiver must grant more): Node's default is
 * 64 KiB, a round trip per 64 KiB. A stream may have 4 MiB (four 1 MiB chunks) in flight, a
 * connection 8 MiB; a receiver that stops reading still holds at most that per peer.
 */
export const RECEIVE_WINDOW = { stream: 4 * 1024 * 1024, connection: 8 * 1024 * 1024 } as const;

/** Channel options used by every client and server: keepalive on long streams, 4 MiB messages. */
export const CHANNEL_OPTIONS = {
  'grpc-node.flow_control_window': RECEIVE_WINDOW.stream,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': 4 * 1024 * 1024,
  'grpc.max_send_message_length': 4 * 1024 * 1024,
} as const;

export const SERVER_OPTIONS = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_receive_message_length': 4 * 1024 * 1024,
} as const;

/**
 * Opens a client-streaming call and returns the writable side plus a promise of the response
 * (errors as AppError).
 */
export function openClientStream<Req, Res>(
  open: (cb: (err: ServiceError | null, res: Res) => void) => import('@grpc/grpc-js').ClientWritableStream<Req>,
  parent?: AbortSignal,
): { stream: import('@grpc/grpc-js').ClientWritableStream<Req>; result: Promise<Res>; signal: AbortSignal } {
  let resolveFn!: (r: Res) => void;
  let rejectFn!: (e: unknown) => void;
  const result = new Promise<Res>((resolve, reject) => {
    resolveFn = resolve;
    rejectFn = reject;
  });
  // Aborts when the call fails (so a writer waiting for 'drain' wakes up) or the parent aborts.
  const ac = new AbortController();
  const stream = open((err, res) => {
    if (err) {
      const e = fromServiceError(err);
      ac.abort(e);
      rejectFn(e);
    } else resolveFn(res);
  });
  const onParent = (): void => {
    ac.abort(parent?.reason);
    stream.cancel();
  };
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  void result.catch(() => undefined).finally(() => parent?.removeEventListener('abort', onParent));
  // Write errors surface through the callback; avoid an unhandled 'error' event.
  stream.on('error', () => undefined);
  return { stream, result, signal: ac.signal };
}
