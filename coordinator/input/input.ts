import { createWriteStream } from 'node:fs';
import { copyFile, constants as fsConstants, mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { AppError } from '../../common/errors.js';
import type { InputRef } from '../api/spec.js';
import { pinnedRequest, vetTarget, type OutboundPolicy } from './safe-http.js';
import { s3Send } from '../../common/s3-client.js';

export interface StageOptions {
  maxBytes: number;
  timeoutMs: number;
  s3: S3Client;
  /** Who http(s) inputs may come from (address ranges, host allow-list, the one resolver). */
  policy: OutboundPolicy;
  signal?: AbortSignal | undefined;
  /** Called with the input's size, when known, before a byte is written (staging space is checked there). */
  room?: ((bytes: number) => Promise<void>) | undefined;
  /** Fetch only the first this many bytes of a remote input (a ranged read: dry runs); the rest is never read. */
  prefixBytes?: number | undefined;
}

/** What was staged: the whole input, or (`prefixBytes`) its first bytes, and its size when known. */
export interface Staged {
  partial: boolean;
  totalBytes?: number | undefined;
}

/** "bytes 0-99/12345" → 12345. */
function rangeTotal(contentRange: string | undefined): number | undefined {
  const m = /\/(\d+)\s*$/.exec(contentRange ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * Writes the first `n` bytes of `body` to `dest`, then lets the stream go (a server that ignored
 * the Range header would otherwise send the whole file).
 */
async function writePrefix(body: Readable, dest: string, n: number, signal: AbortSignal): Promise<void> {
  const out = createWriteStream(dest);
  let written = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      signal.throwIfAborted();
      const part = chunk.length > n - written ? chunk.subarray(0, n - written) : chunk;
      if (!out.write(part)) await new Promise<void>((r) => out.once('drain', r));
      written += part.length;
      if (written >= n) break;
    }
  } finally {
    body.destroy();
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
}

export async function stageInput(input: InputRef, dest: string, o: StageOptions): Promise<Staged> {
  await mkdir(dirname(dest), { recursive: true });
  await rm(dest, { force: true });
  const signal = AbortSignal.any([AbortSignal.timeout(o.timeoutMs), ...(o.signal ? [o.signal] : [])]);
  const prefix = o.prefixBytes;
  try {
    if (input.kind === 'local') {
      const size = (await stat(input.path)).size;
      await o.room?.(size);
      await copyFile(input.path, dest, fsConstants.COPYFILE_FICLONE);
      return { partial: false, totalBytes: size };
    } else if (input.kind === 's3') {
      const res = await s3Send('GetObject', (opts) => o.s3.send(new GetObjectCommand({ Bucket: input.bucket, Key: input.key, ...(prefix ? { Range: `bytes=0-${prefix - 1}` } : {}) }), opts), {
        signal,
      });
      const total = rangeTotal(res.ContentRange) ?? res.ContentLength;
      if ((total ?? 0) > o.maxBytes) throw new AppError('LIMIT_EXCEEDED', `the input is ${total} bytes; the limit is ${o.maxBytes}`);
      if (res.ContentLength)
        await o.room?.(res.ContentLength).catch((err: unknown) => {
          (res.Body as Readable).destroy();
          throw err;
        });
      if (prefix) await writePrefix(res.Body as Readable, dest, prefix, signal);
      else await pipeline(res.Body as Readable, capBytes(o.maxBytes), createWriteStream(dest), { signal });
      return { partial: prefix !== undefined && (total === undefined || total > prefix), totalBytes: total };
    } else {
      return await fetchHttp(input.url, dest, o, signal);
    }
  } catch (err) {
    await rm(dest, { force: true });
    if (err instanceof AppError) throw err;
    const name = (err as { name?: string }).name;
    if (name === 'NoSuchKey' || name === 'NotFound') throw new AppError('INPUT_NOT_FOUND', 'the input object does not exist in S3');
    if (name === 'NoSuchBucket') throw new AppError('INPUT_NOT_FOUND', 'the input bucket does not exist');
    if (name === 'AccessDenied') throw new AppError('PERMISSION_DENIED', 'access to the input object was denied');
    if (o.signal?.aborted) throw new AppError('CANCELLED', 'cancelled while fetching the input');
    if (signal.aborted) throw new AppError('DEADLINE_EXCEEDED', `fetching the input took longer than ${o.timeoutMs} ms`, { retryable: false });
    throw new AppError('UNAVAILABLE', `could not fetch the input: ${(err as Error).message}`, { cause: err });
  }
}

function capBytes(max: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) cb(new AppError('LIMIT_EXCEEDED', `the input exceeds the limit of ${max} bytes`));
      else cb(null, chunk);
    },
  });
}

async function fetchHttp(raw: string, dest: string, o: StageOptions, signal: AbortSignal): Promise<Staged> {
  let url = new URL(raw);
  const prefix = o.prefixBytes;
  for (let hop = 0; hop < 5; hop++) {
    // Resolved once and checked; the connection goes to that very address (no second lookup).
    const target = await vetTarget(url, o.policy, 'input');
    const res = await pinnedRequest(url, target, { signal, ...(prefix ? { headers: { range: `bytes=0-${prefix - 1}` } } : {}) });
    const location = res.headers.location;
    if (res.status >= 300 && res.status < 400 && location) {
      res.body.destroy();
      url = new URL(location, url); // every redirect target is vetted again
      continue;
    }
    if (res.status === 404) {
      res.body.destroy();
      throw new AppError('INPUT_NOT_FOUND', `the input URL answered 404`);
    }
    if (res.status < 200 || res.status >= 300) {
      res.body.destroy();
      throw new AppError('UNAVAILABLE', `the input URL answered ${res.status}`, { retryable: res.status >= 500 });
    }
    const len = Number(res.headers['content-length'] ?? '0');
    const ranged = res.status === 206 ? rangeTotal(res.headers['content-range'] as string | undefined) : undefined;
    const total = ranged ?? (len > 0 ? len : undefined);
    if ((total ?? 0) > o.maxBytes) {
      res.body.destroy();
      throw new AppError('LIMIT_EXCEEDED', `the input is ${total} bytes; the limit is ${o.maxBytes}`);
    }
    if (prefix) {
      // A server that ignores Range sends it all: we keep the first bytes and hang up.
      await writePrefix(res.body, dest, prefix, signal);
      return { partial: total === undefined || total > prefix, totalBytes: total };
    }
    await pipeline(res.body, capBytes(o.maxBytes), createWriteStream(dest), { signal });
    return { partial: false, totalBytes: total };
  }
  throw new AppError('INVALID_ARGUMENT', 'too many redirects fetching the input');
}
