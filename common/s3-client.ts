import { CreateBucketCommand, HeadBucketCommand, S3Client, type BucketLocationConstraint } from '@aws-sdk/client-s3';
import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { AppError, isAppError, type ErrorCode } from './errors.js';
import { retry } from './retry.js';

/** How to reach an S3-protocol service (AWS, MinIO, or the local s3rver). */
export interface S3Settings {
  /** Base URL of an S3-compatible service; omitted → AWS's regional endpoint. */
  endpoint?: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style URLs (`http://host/bucket/key`); needed by s3rver and most MinIO setups. */
  forcePathStyle: boolean;
  /** Per HTTP request: connect + wait for the response headers, and the socket idle limit. */
  requestTimeoutMs: number;
  /** Extra CA (PEM) trusted for an https endpoint with a private certificate. */
  ca?: Buffer;
  /**
   * The SDK's own attempts per request (default 1: the product retries with s3Send). Tools and
   * tests that call `send` directly take 3: a keep-alive socket the server closed just as it was
   * reused fails with "socket hang up", and only another attempt answers that.
   */
  sdkAttempts?: number;
}

/**
 * An S3 client with timeouts that makes one attempt per request: retries are this module's
 * (s3Send, and uploader/s3-multipart.ts), one layer with the project's retry policy. (The SDK's
 * own 3 attempts used to run inside those: up to 18 requests per call; and it cannot retry a
 * streamed body, which s3Send re-creates for every attempt.)
 *
 * `requestChecksumCalculation: 'WHEN_REQUIRED'`: since SDK 3.729 the client otherwise adds CRC32
 * checksums to every PutObject/UploadPart, and for streamed bodies switches to `aws-chunked`
 * encoding with a trailing checksum, which s3rver stores verbatim (chunk framing inside the
 * object) and some S3-compatible servers reject. Integrity of what we send is covered by the
 * Content-MD5 header set by uploader/s3-multipart.ts. Response checksums stay validated when the
 * server sends them (s3rver sends none, so nothing is checked there).
 */
export function createS3Client(s: S3Settings): S3Client {
  if (!Number.isFinite(s.requestTimeoutMs) || s.requestTimeoutMs <= 0) {
    throw new AppError('INVALID_ARGUMENT', `requestTimeoutMs must be > 0, got ${s.requestTimeoutMs}`);
  }
  return new S3Client({
    ...(s.endpoint !== undefined ? { endpoint: s.endpoint } : {}),
    region: s.region,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    forcePathStyle: s.forcePathStyle,
    maxAttempts: s.sdkAttempts ?? 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_SUPPORTED',
    requestHandler: new NodeHttpHandler({
      connectionTimeout: Math.min(s.requestTimeoutMs, 10_000),
      requestTimeout: s.requestTimeoutMs,
      throwOnRequestTimeout: true,
      socketTimeout: s.requestTimeoutMs,
      ...(s.ca ? { httpsAgent: new HttpsAgent({ keepAlive: true, ca: s.ca }) } : {}),
    }),
  });
}

/**
 * S3 bucket naming rules (general purpose buckets): 3–63 characters of lowercase letters, digits,
 * dots and hyphens; starts and ends with a letter or digit; no "..", ".-" or "-."; not shaped like
 * an IPv4 address; none of the reserved prefixes/suffixes.
 */
export function isValidBucketName(name: string): boolean {
  return (
    name.length >= 3 &&
    name.length <= 63 &&
    /^[a-z0-9][a-z0-9.-]*[a-z0-9]$/.test(name) &&
    !/\.\.|\.-|-\./.test(name) &&
    !/^\d{1,3}(\.\d{1,3}){3}$/.test(name) &&
    !/^(xn--|sthree-|amzn-s3-demo-)/.test(name) &&
    !/(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$/.test(name)
  );
}

/**
 * Splits `s3://bucket/key` into its bucket and object key. The key is taken literally (no
 * percent-decoding), must be non-empty and at most 1024 UTF-8 bytes. Throws INVALID_ARGUMENT.
 */
export function parseS3Uri(uri: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/is.exec(uri);
  if (!m) throw new AppError('INVALID_ARGUMENT', `not an s3:// URI: ${JSON.stringify(uri)}`);
  const bucket = m[1] ?? '';
  const key = m[2] ?? '';
  if (!isValidBucketName(bucket)) throw new AppError('INVALID_ARGUMENT', `invalid S3 bucket name in ${JSON.stringify(uri)}`);
  if (key === '') throw new AppError('INVALID_ARGUMENT', `the S3 URI ${JSON.stringify(uri)} names no object key`);
  if (Buffer.byteLength(key, 'utf8') > 1024) throw new AppError('INVALID_ARGUMENT', 'S3 object keys are at most 1024 bytes');
  return { bucket, key };
}

/** Deadline and cancellation of one S3 operation. */
export interface S3CallOptions {
  signal?: AbortSignal;
  /** Default 30 s. */
  timeoutMs?: number;
}

/** Attempts of one S3 call by default (the first and 5 retries). */
export const S3_ATTEMPTS = 6;

/** One S3 call under the retry policy: its attempts, its deadline, its cancellation. */
export interface S3SendOptions {
  signal?: AbortSignal | undefined;
  /** Deadline of each attempt, ms (until the answer's headers); default none beyond the client's request timeout. */
  timeoutMs?: number | undefined;
  /** Default S3_ATTEMPTS. */
  attempts?: number | undefined;
}

/**
 * Runs one S3 call with the retry policy (full-jitter backoff, 200 ms doubling to 10 s): transient
 * failures (isTransientS3Error: 5xx, throttling, network trouble, deadlines) are tried again, up to
 * `attempts` times; other 4xx answers and cancellation never. `fn` builds the request (and any
 * streamed body) afresh for each attempt, and hands send its `options` (the attempt's abort signal).
 * Errors come back as the SDK raised them (map them with
 * toAppError where they are answered).
 */
export function s3Send<T>(what: string, fn: (options: { abortSignal?: AbortSignal }) => Promise<T>, o: S3SendOptions = {}): Promise<T> {
  const once = (): Promise<T> => {
    if (o.timeoutMs !== undefined) return withDeadline(what, o.timeoutMs, o.signal, (abortSignal) => fn({ abortSignal }));
    return fn(o.signal ? { abortSignal: o.signal } : {});
  };
  return retry(once, { attempts: o.attempts ?? S3_ATTEMPTS, baseMs: 200, maxMs: 10_000, signal: o.signal, isRetryable: isTransientS3Error });
}

/** Creates the bucket unless it exists (a concurrent creation by us counts as success). */
export async function ensureBucket(client: S3Client, bucket: string, opts: S3CallOptions = {}): Promise<void> {
  if (!isValidBucketName(bucket)) throw new AppError('INVALID_ARGUMENT', `invalid S3 bucket name: ${JSON.stringify(bucket)}`);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const exists = async (): Promise<boolean> => {
    try {
      await s3Send(`HeadBucket ${bucket}`, (options) => client.send(new HeadBucketCommand({ Bucket: bucket }), options), { signal: opts.signal, timeoutMs });
      return true;
    } catch (err) {
      if (s3Status(err) === 404) return false;
      throw toAppError(err, `HeadBucket ${bucket}`);
    }
  };
  if (await exists()) return;
  const region = await client.config.region();
  try {
    await s3Send(
      `CreateBucket ${bucket}`,
      (options) =>
        client.send(
          new CreateBucketCommand({
            Bucket: bucket,
            ...(region && region !== 'us-east-1' ? { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } } : {}),
          }),
          options,
        ),
      { signal: opts.signal, timeoutMs },
    );
  } catch (err) {
    const name = s3ErrorName(err);
    if (name === 'BucketAlreadyOwnedByYou') return;
    if (name === 'BucketAlreadyExists' && (await exists())) return; // s3rver answers this for a race we lost
    throw toAppError(err, `CreateBucket ${bucket}`);
  }
}

/**
 * Runs `fn` with an abort signal that fires on the caller's `signal` or after `timeoutMs`.
 * Cancellation becomes AppError CANCELLED, the deadline AppError DEADLINE_EXCEEDED (retryable);
 * other errors pass through unchanged.
 */
export async function withDeadline<T>(what: string, timeoutMs: number, signal: AbortSignal | undefined, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
  if (signal?.aborted) throw new AppError('CANCELLED', `${what}: cancelled`, { cause: signal.reason });
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort(new AppError('DEADLINE_EXCEEDED', `${what}: no answer within ${timeoutMs} ms`, { retryable: true }));
  }, timeoutMs);
  const onAbort = (): void => ac.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await fn(ac.signal);
  } catch (err) {
    if (signal?.aborted) throw new AppError('CANCELLED', `${what}: cancelled`, { cause: signal.reason ?? err });
    if (timedOut) throw new AppError('DEADLINE_EXCEEDED', `${what}: no answer within ${timeoutMs} ms`, { cause: err, retryable: true });
    throw err;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** HTTP status of an S3 service error, if the error came from an HTTP answer. */
export function s3Status(err: unknown): number | undefined {
  const md = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata;
  return typeof md?.httpStatusCode === 'number' ? md.httpStatusCode : undefined;
}

/** S3 error code (`NoSuchUpload`, `AccessDenied`, ...) or the error's name. */
export function s3ErrorName(err: unknown): string | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const e = err as { Code?: unknown; name?: unknown };
  if (typeof e.Code === 'string') return e.Code;
  return typeof e.name === 'string' ? e.name : undefined;
}

const TRANSIENT_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeTooSkewed', 'SlowDown', 'InternalError', 'ServiceUnavailable', 'Throttling', 'ThrottlingException']);
const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'ERR_STREAM_PREMATURE_CLOSE']);

/**
 * True for failures worth retrying: 5xx, 408, 429, throttling/timeouts, network errors and
 * DEADLINE_EXCEEDED. Never for other 4xx answers or cancellation.
 */
export function isTransientS3Error(err: unknown): boolean {
  if (isAppError(err)) return err.retryable;
  const status = s3Status(err);
  const name = s3ErrorName(err);
  if (name === 'AbortError') return false;
  if (status !== undefined) return status >= 500 || status === 408 || status === 429 || (name !== undefined && TRANSIENT_NAMES.has(name));
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  if (name !== undefined && TRANSIENT_NAMES.has(name)) return true;
  // No HTTP answer at all (socket trouble, truncated response): infrastructure, worth a retry.
  return err instanceof Error && !(err instanceof TypeError) && !(err instanceof RangeError);
}

/** True when the server does not implement the operation (s3rver: 405 MethodNotAllowed / 501 NotImplemented). */
export function isUnsupportedS3Operation(err: unknown): boolean {
  const status = s3Status(err);
  const name = s3ErrorName(err);
  return status === 501 || status === 405 || name === 'NotImplemented' || name === 'MethodNotAllowed';
}

/** Maps any failure of an S3 operation to an AppError (AppErrors pass through unchanged). */
export function toAppError(err: unknown, what: string): AppError {
  if (isAppError(err)) return err;
  const status = s3Status(err);
  const name = s3ErrorName(err) ?? 'Error';
  const detail = err instanceof Error ? err.message : String(err);
  const msg = `${what} failed: ${name}${status !== undefined ? ` (HTTP ${status})` : ''}${detail && detail !== name ? `: ${detail}` : ''}`;
  if (isTransientS3Error(err)) {
    const code: ErrorCode = name === 'TimeoutError' || status === 408 ? 'DEADLINE_EXCEEDED' : 'UNAVAILABLE';
    return new AppError(code, msg, { cause: err, retryable: true });
  }
  let code: ErrorCode = 'INTERNAL';
  if (name === 'BadDigest' || name === 'InvalidDigest' || name === 'XAmzContentSHA256Mismatch') code = 'CHECKSUM_MISMATCH';
  else if (name === 'EntityTooLarge' || name === 'QuotaExceeded') code = 'LIMIT_EXCEEDED';
  else if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'ExpiredToken' || status === 401) code = 'UNAUTHENTICATED';
  else if (status === 403) code = 'PERMISSION_DENIED';
  else if (status === 404) code = 'NOT_FOUND';
  else if (name === 'InvalidBucketName' || name === 'KeyTooLongError') code = 'INVALID_ARGUMENT';
  return new AppError(code, msg, { cause: err, retryable: false });
}

/** S3 settings from a process config with the shared `S3_*` variables (see common/config-schema.ts). */
export function s3SettingsFromConfig(c: {
  S3_ENDPOINT?: string | undefined;
  S3_REGION: string;
  S3_ACCESS_KEY_ID: string;
  S3_SECRET_ACCESS_KEY: string;
  S3_FORCE_PATH_STYLE: boolean;
  S3_REQUEST_TIMEOUT_MS: number;
  S3_CA_FILE?: string | undefined;
}): S3Settings {
  return {
    ...(c.S3_CA_FILE ? { ca: readFileSync(c.S3_CA_FILE) } : {}),
    ...(c.S3_ENDPOINT ? { endpoint: c.S3_ENDPOINT } : {}),
    region: c.S3_REGION,
    accessKeyId: c.S3_ACCESS_KEY_ID,
    secretAccessKey: c.S3_SECRET_ACCESS_KEY,
    forcePathStyle: c.S3_FORCE_PATH_STYLE,
    requestTimeoutMs: c.S3_REQUEST_TIMEOUT_MS,
  };
}
