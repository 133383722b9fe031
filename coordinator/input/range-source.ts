import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { AppError, errorMessage } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { InputRef } from '../api/spec.js';
import { pinnedRequest, vetTarget, type OutboundPolicy, type VettedTarget } from './safe-http.js';
import { s3Send } from '../../common/s3-client.js';

/** A remote input read in ranges: ffmpeg and ffprobe open `url` (loopback), Tessera fetches what they ask for. */
export interface RangedInput {
  url: string;
  totalBytes: number;
  /** Bytes fetched from the origin so far (what a full staging would have fetched at once). */
  bytesFetched(): number;
  close(): void;
}

interface Source {
  totalBytes: number;
  fetched: number;
  /** Streams bytes [from, to] (inclusive) of the input. */
  read(from: number, to: number, signal: AbortSignal): Promise<Readable>;
}

/** How much of the input one request to the origin asks for (a long read is several, in turn). */
const RANGE_WINDOW_BYTES = 8 * 1024 * 1024;

/** "bytes=a-b" / "bytes=a-" → [a, b] within the size; undefined: no (usable) range. */
export function parseRange(header: string | undefined, size: number): [number, number] | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec((header ?? '').trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Math.min(size, Number(m[2])); // a suffix: the last n bytes
    return [size - n, size - 1];
  }
  const from = Number(m[1]);
  const to = m[2] === '' ? size - 1 : Math.min(size - 1, Number(m[2]));
  return from <= to ? [from, to] : undefined;
}

/** "bytes 0-0/12345" → 12345. */
function rangeTotal(contentRange: string | string[] | undefined): number | undefined {
  const m = /\/(\d+)\s*$/.exec(String(contentRange ?? ''));
  return m ? Number(m[1]) : undefined;
}

/**
 * Remote inputs (s3://, http(s)://) read in ranges instead of staged whole: one loopback HTTP
 * server per coordinator serves each open input under an unguessable path, and every request
 * ffmpeg or ffprobe makes (a Range, as they seek) becomes a ranged GetObject or a ranged GET to
 * the origin — pinned to the address vetted when the input was opened (no second DNS lookup, no
 * redirect that was not vetted). Nothing but the segments cut from the input lands on disk.
 */
export class RangeServer {
  private server: Server | undefined;
  private port = 0;
  private readonly sources = new Map<string, Source>();

  constructor(private readonly log: Logger) {}

  private async listen(): Promise<number> {
    if (this.server) return this.port;
    const server = createServer((req, res) => void this.serve(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    server.unref();
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this.port;
  }

  /**
   * Opens a remote input for ranged reads. Undefined when the origin does not serve ranges (it
   * answered a Range request with the whole file): the caller stages the input then.
   */
  async open(input: InputRef, o: { s3: S3Client; policy: OutboundPolicy; timeoutMs: number; maxBytes: number; signal?: AbortSignal | undefined }): Promise<RangedInput | undefined> {
    if (input.kind === 'local') return undefined;
    const signal = AbortSignal.any([AbortSignal.timeout(o.timeoutMs), ...(o.signal ? [o.signal] : [])]);
    let source: Source | undefined;
    if (input.kind === 's3') {
      const head = await s3Send('HeadObject', (opts) => o.s3.send(new HeadObjectCommand({ Bucket: input.bucket, Key: input.key }), opts), { signal }).catch((err: unknown) => {
        const name = (err as { name?: string }).name;
        if (name === 'NotFound' || name === 'NoSuchKey') throw new AppError('INPUT_NOT_FOUND', 'the input object does not exist in S3');
        if (name === 'NoSuchBucket') throw new AppError('INPUT_NOT_FOUND', 'the input bucket does not exist');
        if (name === 'AccessDenied' || name === 'Forbidden') throw new AppError('PERMISSION_DENIED', 'access to the input object was denied');
        throw new AppError('UNAVAILABLE', `could not read the input's size from S3: ${errorMessage(err)}`, { cause: err });
      });
      const total = head.ContentLength ?? 0;
      const s: Source = {
        totalBytes: total,
        fetched: 0,
        read: async (from, to, sig) => {
          const r = await s3Send('GetObject', (opts) => o.s3.send(new GetObjectCommand({ Bucket: input.bucket, Key: input.key, Range: `bytes=${from}-${to}` }), opts), { signal: sig });
          return r.Body as Readable;
        },
      };
      source = s;
    } else {
      // The first byte, asked for as a range: learns the size and whether ranges are served, and
      // settles the redirects (each target vetted) once for every later request.
      let url = new URL(input.url);
      let target: VettedTarget | undefined;
      let total: number | undefined;
      for (let hop = 0; hop < 5 && total === undefined; hop++) {
        target = await vetTarget(url, o.policy, 'input');
        const res = await pinnedRequest(url, target, { signal, headers: { range: 'bytes=0-0' } });
        res.body.destroy();
        const location = res.headers.location;
        if (res.status >= 300 && res.status < 400 && location) {
          url = new URL(location, url);
          continue;
        }
        if (res.status === 404) throw new AppError('INPUT_NOT_FOUND', 'the input URL answered 404');
        if (res.status === 200) return undefined; // Range ignored: stage it whole
        if (res.status !== 206) throw new AppError('UNAVAILABLE', `the input URL answered ${res.status}`, { retryable: res.status >= 500 });
        total = rangeTotal(res.headers['content-range']);
        if (total === undefined) return undefined;
      }
      if (total === undefined || !target) throw new AppError('INVALID_ARGUMENT', 'too many redirects fetching the input');
      const final = url;
      const pinned = target;
      source = {
        totalBytes: total,
        fetched: 0,
        read: async (from, to, sig) => {
          const res = await pinnedRequest(final, pinned, { signal: sig, headers: { range: `bytes=${from}-${to}` } });
          if (res.status !== 206) {
            res.body.destroy();
            throw new AppError('UNAVAILABLE', `the input URL answered ${res.status} to a range request`, { retryable: true });
          }
          return res.body;
        },
      };
    }
    if (source.totalBytes <= 0) throw new AppError('INPUT_EMPTY', 'the input is empty (0 bytes)');
    if (source.totalBytes > o.maxBytes) throw new AppError('LIMIT_EXCEEDED', `the input is ${source.totalBytes} bytes; the limit is ${o.maxBytes}`);
    const port = await this.listen();
    const token = randomBytes(18).toString('base64url');
    this.sources.set(token, source);
    const src = source;
    return {
      url: `http://127.0.0.1:${port}/${token}`,
      totalBytes: src.totalBytes,
      bytesFetched: () => src.fetched,
      close: () => {
        this.sources.delete(token);
      },
    };
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const source = this.sources.get((req.url ?? '').replace(/^\//, ''));
    if (!source || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404).end();
      return;
    }
    const size = source.totalBytes;
    const range = req.headers.range ? parseRange(req.headers.range, size) : undefined;
    if (req.headers.range && !range) {
      res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
      return;
    }
    const [from, to] = range ?? [0, size - 1];
    const headers = { 'accept-ranges': 'bytes', 'content-length': String(to - from + 1), 'content-type': 'application/octet-stream' };
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'content-length': String(size) }).end();
      return;
    }
    // The reader (ffmpeg) hangs up when it seeks elsewhere: the origin's stream stops with it.
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    try {
      // From the origin in windows, one after the other: a reader that seeks away after a few
      // kilobytes (ffmpeg does, for an index at the end) costs at most one window there.
      res.writeHead(range ? 206 : 200, range ? { ...headers, 'content-range': `bytes ${from}-${to}/${size}` } : headers);
      for (let at = from; at <= to && !abort.signal.aborted; at += RANGE_WINDOW_BYTES) {
        const body = await source.read(at, Math.min(to, at + RANGE_WINDOW_BYTES - 1), abort.signal);
        body.on('data', (c: Buffer) => {
          source.fetched += c.length;
        });
        await pipeline(body, res, { end: false });
      }
      res.end();
    } catch (err) {
      if (abort.signal.aborted) return;
      this.log.warn({ err: errorMessage(err), from, to }, 'a ranged read of the input failed');
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    }
  }

  close(): void {
    this.sources.clear();
    this.server?.close();
    this.server = undefined;
  }
}
