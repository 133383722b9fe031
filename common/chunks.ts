import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat, rename, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { AppError } from './errors.js';
import { writeWithBackpressure } from './grpc.js';

/** Largest chunk we put in one gRPC message: 1 MiB, well under the 4 MiB message limit. */
export const CHUNK_BYTES = 1024 * 1024;

/**
 * Read buffer size for `bytes` bytes of a file: a chunk, or less for a small file (a stream
 * allocates a full highWaterMark buffer per read: 1 MiB for every 3 KB part kept the garbage
 * collector busy for a fifth of the time at scale).
 */
export function readBufferFor(bytes: number, cap = CHUNK_BYTES): number {
  return Math.max(1, Math.min(cap, bytes));
}

/**
 * Checksums a transfer can carry: SHA-256, or CRC-32 (zlib/IEEE polynomial, 8 hex digits) where
 * throughput matters more than a cryptographic hash (segments to node agents: 5 GB/s vs 1.9).
 */
export type DigestAlgorithm = 'sha256' | 'crc32';

/** A digest fed in pieces; `hex()` ends it. */
export interface RunningDigest {
  update(data: Buffer): void;
  hex(): string;
}

export function runningDigest(algorithm: DigestAlgorithm): RunningDigest {
  if (algorithm === 'sha256') {
    const h = createHash('sha256');
    return { update: (d) => void h.update(d), hex: () => h.digest('hex') };
  }
  let v = 0;
  return {
    update: (d) => {
      v = crc32(d, v);
    },
    hex: () => v.toString(16).padStart(8, '0'),
  };
}

/** Digest (hex; SHA-256 unless told) and size of a file, streamed. */
export async function fileDigest(path: string, algorithm: DigestAlgorithm = 'sha256'): Promise<{ hex: string; bytes: number }> {
  const digest = runningDigest(algorithm);
  let bytes = 0;
  const size = (await stat(path)).size;
  for await (const chunk of createReadStream(path, { highWaterMark: readBufferFor(size) })) {
    digest.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { hex: digest.hex(), bytes };
}

interface Writable<T> {
  write(msg: T): boolean;
  once(ev: 'drain', cb: () => void): unknown;
  off(ev: 'drain', cb: () => void): unknown;
}

/**
 * Streams a file from `fromOffset` as messages of at most `chunkBytes`, waiting for 'drain'
 * whenever the transport says so (back-pressure). Memory stays at about one chunk.
 */
export async function sendFileChunks<T>(
  stream: Writable<T>,
  path: string,
  fromOffset: number,
  makeMsg: (offset: number, data: Buffer) => T,
  opts: { chunkBytes?: number; signal?: AbortSignal; onSent?: (offset: number) => void } = {},
): Promise<number> {
  let offset = fromOffset;
  for await (const c of fileChunks(path, fromOffset, opts.chunkBytes)) {
    await writeWithBackpressure(stream, makeMsg(c.offset, c.data), opts.signal);
    offset = c.offset + c.data.length;
    opts.onSent?.(offset);
  }
  return offset;
}

/**
 * A file's bytes from `fromOffset` on, as chunks of at most `chunkBytes` (1 MiB) with their
 * offsets: what a sender streams, and what a receiver reads itself from a file handed over by path.
 */
export async function* fileChunks(path: string, fromOffset: number, chunkBytes = CHUNK_BYTES): AsyncGenerator<IncomingChunk> {
  const size = (await stat(path)).size;
  if (fromOffset >= size) return;
  let offset = fromOffset;
  const rs = createReadStream(path, { start: fromOffset, highWaterMark: readBufferFor(size - fromOffset, Math.min(chunkBytes, CHUNK_BYTES)) });
  try {
    for await (const chunk of rs) {
      const data = chunk as Buffer;
      yield { offset, data };
      offset += data.length;
    }
  } finally {
    rs.destroy();
  }
}

/** A client's id for one resumable upload: 8–64 of [a-z0-9-]. */
export const RESUME_ID = /^[a-z0-9-]{8,64}$/;

export interface IncomingChunk {
  offset: number;
  data: Buffer;
}

export interface ReceiveOptions {
  /** Final path; bytes land in `<path>.partial` until complete and verified. */
  path: string;
  maxBytes: number;
  /** Expected total size and SHA-256 when known up front (verified before rename). */
  totalSize?: number | undefined;
  sha256?: string | undefined;
  /** Expected CRC-32 (8 hex digits): when set, verified instead of SHA-256 (and only it is computed). */
  crc32?: string | undefined;
  signal?: AbortSignal;
  /**
   * fsync before acknowledging (default true). Off only where the bytes are never read by a later
   * process life: a node agent wipes its staging when it starts, so a segment it received is used
   * by the same process (hence the same boot) or re-sent from the coordinator's staged copy.
   */
  durable?: boolean;
}

/** Bytes already held for a resumable transfer (the `.partial` file's size). */
export async function partialSize(path: string): Promise<number> {
  try {
    return (await stat(`${path}.partial`)).size;
  } catch {
    return 0;
  }
}

/** A receiver starts a background fdatasync after this many new bytes. */
const FLUSH_EVERY_BYTES = 32 * 1024 * 1024;

/**
 * Writes a stream of chunks at contiguous offsets into `<path>.partial` (appending to what a
 * previous, broken transfer left), then fsyncs (unless `durable` is false), verifies size and digest, and renames to `path`.
 * A chunk that repeats bytes we already have identically is acknowledged; a gap or overlap is
 * rejected with the expected offset. Returns the bytes written in total and the digest: SHA-256,
 * or CRC-32 when the caller expects one (`o.crc32`).
 */
export async function receiveChunks(chunks: AsyncIterable<IncomingChunk>, o: ReceiveOptions): Promise<{ bytes: number; sha256: string; crc32: string; complete: boolean }> {
  await mkdir(dirname(o.path), { recursive: true });
  const partial = `${o.path}.partial`;
  const durable = o.durable ?? true;
  const fh = await open(partial, 'a+');
  let writing: Promise<void> | undefined;
  try {
    let size = (await fh.stat()).size;
    // Hash while writing (one pass over the bytes); a resumed transfer first hashes what it holds.
    const algorithm: DigestAlgorithm = o.crc32 ? 'crc32' : 'sha256';
    const digest = runningDigest(algorithm);
    if (size > 0) {
      for await (const chunk of createReadStream(partial, { end: size - 1, highWaterMark: readBufferFor(size) })) digest.update(chunk as Buffer);
    }
    // Writes stay one at a time and in order: the file is opened for append (O_APPEND), where
    // Linux ignores pwrite's position, so overlapping writes could land out of order. But the
    // next chunk is received and hashed while the previous one is being written.
    let flushedAt = size;
    let flushing: Promise<void> | undefined;
    let writeError: unknown;
    const settle = async (): Promise<void> => {
      await writing;
      writing = undefined;
      if (writeError !== undefined) throw writeError;
    };
    for await (const c of chunks) {
      if (o.signal?.aborted) throw new AppError('CANCELLED', 'transfer aborted');
      if (c.data.length === 0) continue;
      if (c.offset !== size) {
        if (c.offset < size && c.offset + c.data.length <= size) {
          await settle();
          const have = Buffer.alloc(c.data.length);
          await fh.read(have, 0, have.length, c.offset);
          if (have.equals(c.data)) continue; // an identical duplicate (a retried send): acknowledged
        }
        // Retryable: the sender asks how much is held and sends from there.
        throw new AppError('BAD_OFFSET', `chunk at offset ${c.offset} does not continue the transfer; expected offset ${size}`, { retryable: true });
      }
      if (size + c.data.length > o.maxBytes) {
        throw new AppError('LIMIT_EXCEEDED', `transfer exceeds the limit of ${o.maxBytes} bytes`);
      }
      digest.update(c.data);
      await settle();
      // Not awaited here: the error is kept and thrown by the next settle() (a rejection left
      // pending while we wait for the next chunk would be unhandled).
      writing = fh.write(c.data, 0, c.data.length, size).then(
        () => undefined,
        (err: unknown) => {
          writeError = err;
        },
      );
      size += c.data.length;
      // Flush to disk in the background as we go, so the final fsync (durable before we
      // acknowledge) finds little left to write instead of the whole transfer.
      if (durable && size - flushedAt >= FLUSH_EVERY_BYTES && !flushing) {
        flushedAt = size;
        flushing = fh.datasync().then(
          () => {
            flushing = undefined;
          },
          () => {
            flushing = undefined;
          }, // the final fsync reports what matters
        );
      }
    }
    await settle();
    await flushing;
    if (durable) await fh.sync();
    const complete = o.totalSize === undefined || size === o.totalSize;
    if (o.totalSize !== undefined && size > o.totalSize) {
      throw new AppError('BAD_OFFSET', `received ${size} bytes but the sender announced ${o.totalSize}`);
    }
    if (!complete) return { bytes: size, sha256: '', crc32: '', complete: false };
    await fh.close();
    const got = digest.hex();
    const expected = algorithm === 'crc32' ? o.crc32 : o.sha256;
    if (expected && got !== expected.toLowerCase()) {
      await unlink(partial).catch(() => undefined); // start over: the bytes we hold are wrong
      throw new AppError('CHECKSUM_MISMATCH', `${algorithm} mismatch: expected ${expected}, received ${got}`, { retryable: true });
    }
    await rename(partial, o.path);
    // The rename itself is durable only once its directory is: without this a crash can leave
    // the acknowledged part under its .partial name (or not at all) after the fsync above.
    if (durable) await syncDir(dirname(o.path));
    return { bytes: size, sha256: algorithm === 'sha256' ? got : '', crc32: algorithm === 'crc32' ? got : '', complete: true };
  } finally {
    await writing; // never rejects; the file is closed only after the last write lands
    await fh.close().catch(() => undefined);
  }
}

/** fsyncs a directory (its entries: a rename or a new file in it). */
export async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Pace limits from a process config (`STREAM_*`, see common/config-schema.ts). */
export function paceFromConfig(c: { STREAM_DEADLINE_MS: number; STREAM_MIN_BYTES_PER_SEC: number; STREAM_GRACE_MS: number }): StreamPace {
  return { deadlineMs: c.STREAM_DEADLINE_MS, minBytesPerSec: c.STREAM_MIN_BYTES_PER_SEC, graceMs: c.STREAM_GRACE_MS };
}

/** The defaults of the `STREAM_*` settings. */
export const DEFAULT_STREAM_PACE: StreamPace = { deadlineMs: 6 * 3_600_000, minBytesPerSec: 64 * 1024, graceMs: 15_000 };

/** Pace limits of one incoming stream (slow-loris and stuck-peer protection). */
export interface StreamPace {
  /** The whole stream must end within this many ms. */
  deadlineMs: number;
  /** Average bytes/s since the start, checked once `graceMs` have passed. */
  minBytesPerSec: number;
  graceMs: number;
}

/**
 * Passes chunks through while the stream keeps its pace: it fails with DEADLINE_EXCEEDED when the
 * stream runs past its deadline, or when after the grace period its average rate falls below the
 * minimum — also while it waits for a chunk that never comes (the check runs on a timer).
 */
export async function* paced(chunks: AsyncIterable<IncomingChunk>, p: StreamPace, now: () => number = Date.now): AsyncGenerator<IncomingChunk> {
  const it = chunks[Symbol.asyncIterator]();
  const start = now();
  let bytes = 0;
  const verdict = (): AppError | undefined => {
    const elapsed = now() - start;
    if (elapsed >= p.deadlineMs) return new AppError('DEADLINE_EXCEEDED', `the stream ran past its deadline of ${p.deadlineMs} ms`);
    const rate = bytes / Math.max(elapsed / 1000, 1e-3);
    if (elapsed >= p.graceMs && rate < p.minBytesPerSec) {
      return new AppError('DEADLINE_EXCEEDED', `the stream is too slow: ${Math.round(rate)} bytes/s on average, the minimum is ${p.minBytesPerSec}`);
    }
    return undefined;
  };
  for (;;) {
    const next = it.next();
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      const tick = (): void => {
        const err = verdict();
        if (err) reject(err);
        else timer = setTimeout(tick, 200);
      };
      tick();
    });
    let r: IteratorResult<IncomingChunk>;
    try {
      r = await Promise.race([next, limit]);
    } catch (err) {
      next.catch(() => undefined); // the abandoned read settles when the call is torn down
      // Not awaited: a source stuck inside an await would never finish returning.
      it.return?.().catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
      limit.catch(() => undefined);
    }
    if (r.done) return;
    bytes += r.value.data.length;
    yield r.value;
  }
}

/**
 * For a receiver that refuses a client stream after its first message: reads (and drops) what the
 * sender still has in flight, then throws `err`. A client stream whose writer is blocked on flow
 * control never sees the status otherwise, and the transfer would hang.
 */
export async function drainThenThrow(rest: AsyncIterator<unknown>, err: unknown): Promise<never> {
  while (!(await rest.next()).done) {
    /* discard */
  }
  throw err;
}

/**
 * Adapts a client stream (whose first message the handler already read for its header) into the
 * chunk iterable `receiveChunks` consumes; `onBytes` sees every chunk's size (metrics).
 */
export async function* chunksOf<T extends IncomingChunk>(first: T, rest: AsyncIterator<T>, onBytes: (n: number) => void = () => undefined): AsyncGenerator<IncomingChunk> {
  let msg: T | undefined = first;
  while (msg) {
    onBytes(msg.data.length);
    yield { offset: msg.offset, data: msg.data };
    const next = await rest.next();
    msg = next.done ? undefined : next.value;
  }
}
