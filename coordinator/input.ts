import { createWriteStream } from 'node:fs';
import { copyFile, constants as fsConstants, mkdir, rm } from 'node:fs/promises';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { AppError } from '../common/errors.js';
import type { InputRef } from './spec.js';

export interface StageOptions {
  maxBytes: number;
  timeoutMs: number;
  s3: S3Client;
  httpAllowedHosts: readonly string[];
  httpAllowPrivate: boolean;
  signal?: AbortSignal | undefined;
}

/**
 * Brings the input to `dest`, a path we generated: ffmpeg only ever reads files we staged.
 * Remote inputs are fetched by Tessera (never by ffmpeg) with a size cap and a deadline.
 */
export async function stageInput(input: InputRef, dest: string, o: StageOptions): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  await rm(dest, { force: true });
  const signal = AbortSignal.any([AbortSignal.timeout(o.timeoutMs), ...(o.signal ? [o.signal] : [])]);
  try {
    if (input.kind === 'local') {
      await copyFile(input.path, dest, fsConstants.COPYFILE_FICLONE);
    } else if (input.kind === 's3') {
      const res = await o.s3.send(new GetObjectCommand({ Bucket: input.bucket, Key: input.key }), { abortSignal: signal });
      if ((res.ContentLength ?? 0) > o.maxBytes) throw new AppError('LIMIT_EXCEEDED', `the input is ${res.ContentLength} bytes; the limit is ${o.maxBytes}`);
      await pipeline(res.Body as Readable, capBytes(o.maxBytes), createWriteStream(dest), { signal });
    } else {
      await fetchHttp(input.url, dest, o, signal);
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

/** True for loopback, private, link-local, unique-local, CGNAT and unspecified addresses. */
export function isPrivateAddress(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a = 0, b = 0] = ip.split('.').map(Number);
    return a === 10 || a === 127 || a === 0 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
  }
  const v6 = ip.toLowerCase();
  if (v6.startsWith('::ffff:')) return isPrivateAddress(v6.slice(7));
  return v6 === '::1' || v6 === '::' || v6.startsWith('fe80:') || v6.startsWith('fc') || v6.startsWith('fd');
}

/** Checks a URL's host against the allow-list and (unless allowed) private address ranges. */
async function checkHost(url: URL, o: StageOptions): Promise<void> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (o.httpAllowedHosts.length > 0 && !o.httpAllowedHosts.includes(host)) {
    throw new AppError('PERMISSION_DENIED', `input host ${host} is not in the allowed hosts list`);
  }
  if (o.httpAllowPrivate) return;
  const addrs = isIP(host) ? [host] : (await lookup(host, { all: true }).catch(() => [])).map((a) => a.address);
  if (addrs.length === 0) throw new AppError('INPUT_NOT_FOUND', `cannot resolve input host ${host}`);
  if (addrs.some(isPrivateAddress)) throw new AppError('PERMISSION_DENIED', `input host ${host} resolves to a private or loopback address`);
}

async function fetchHttp(raw: string, dest: string, o: StageOptions, signal: AbortSignal): Promise<void> {
  let url = new URL(raw);
  for (let hop = 0; hop < 5; hop++) {
    await checkHost(url, o);
    const res = await fetch(url, { redirect: 'manual', signal });
    if (res.status >= 300 && res.status < 400 && res.headers.get('location')) {
      url = new URL(res.headers.get('location')!, url); // every redirect target is checked again
      await res.body?.cancel();
      continue;
    }
    if (res.status === 404) throw new AppError('INPUT_NOT_FOUND', `the input URL answered 404`);
    if (!res.ok || !res.body) throw new AppError('UNAVAILABLE', `the input URL answered ${res.status}`, { retryable: res.status >= 500 });
    const len = Number(res.headers.get('content-length') ?? '0');
    if (len > o.maxBytes) throw new AppError('LIMIT_EXCEEDED', `the input is ${len} bytes; the limit is ${o.maxBytes}`);
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), capBytes(o.maxBytes), createWriteStream(dest), { signal });
    return;
  }
  throw new AppError('INVALID_ARGUMENT', 'too many redirects fetching the input');
}
