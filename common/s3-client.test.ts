import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { GetObjectCommand, HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from './errors.js';
import { createS3Client, ensureBucket, isTransientS3Error, isValidBucketName, parseS3Uri, S3_ATTEMPTS, s3Send, toAppError, withDeadline } from './s3-client.js';
import { startLocalS3, type LocalS3 } from '../deploy/s3-local-server.js';

function s3err(name: string, status: number): Error {
  return Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
}

describe('parseS3Uri', () => {
  it('splits bucket and key, keeping the key literally', () => {
    expect(parseS3Uri('s3://tessera-output/jobs/j1.zip')).toEqual({ bucket: 'tessera-output', key: 'jobs/j1.zip' });
    expect(parseS3Uri('S3://my.bucket-1/a%20b/c?d#e')).toEqual({ bucket: 'my.bucket-1', key: 'a%20b/c?d#e' });
    expect(parseS3Uri('s3://abc/x/')).toEqual({ bucket: 'abc', key: 'x/' });
  });
  it('rejects other schemes, bad bucket names and empty keys', () => {
    for (const bad of [
      'http://abc/k',
      'abc/k',
      's3:/abc/k',
      's3://abc',
      's3://abc/',
      's3:///k',
      's3://ab/k',
      's3://Upper/k',
      's3://under_score/k',
      's3://-abc/k',
      's3://abc-/k',
      's3://a..b/k',
      's3://192.168.1.1/k',
      's3://xn--abc/k',
      `s3://${'a'.repeat(64)}/k`,
      `s3://abc/${'k'.repeat(1025)}`,
    ]) {
      expect(() => parseS3Uri(bad), bad).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT' }) as Error);
    }
  });
  it('knows the bucket naming rules', () => {
    expect(isValidBucketName('tessera-output')).toBe(true);
    expect(isValidBucketName('a.b.c')).toBe(true);
    expect(isValidBucketName('a-.b')).toBe(false);
    expect(isValidBucketName('ab')).toBe(false);
  });
});

describe('error classification', () => {
  it('retries 5xx, throttling, timeouts and network errors, never other 4xx or cancellation', () => {
    expect(isTransientS3Error(s3err('InternalError', 500))).toBe(true);
    expect(isTransientS3Error(s3err('SlowDown', 503))).toBe(true);
    expect(isTransientS3Error(s3err('TooManyRequests', 429))).toBe(true);
    expect(isTransientS3Error(s3err('RequestTimeout', 400))).toBe(true);
    expect(isTransientS3Error(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isTransientS3Error(Object.assign(new Error('t'), { name: 'TimeoutError' }))).toBe(true);
    expect(isTransientS3Error(s3err('AccessDenied', 403))).toBe(false);
    expect(isTransientS3Error(s3err('NoSuchUpload', 404))).toBe(false);
    expect(isTransientS3Error(s3err('EntityTooSmall', 400))).toBe(false);
    expect(isTransientS3Error(Object.assign(new Error('aborted'), { name: 'AbortError' }))).toBe(false);
    expect(isTransientS3Error(new AppError('CANCELLED', 'x'))).toBe(false);
    expect(isTransientS3Error(new AppError('DEADLINE_EXCEEDED', 'x'))).toBe(true);
  });
  it('maps to AppError codes', () => {
    expect(toAppError(s3err('AccessDenied', 403), 'op')).toMatchObject({ code: 'PERMISSION_DENIED', retryable: false });
    expect(toAppError(s3err('InvalidAccessKeyId', 403), 'op')).toMatchObject({ code: 'UNAUTHENTICATED', retryable: false });
    expect(toAppError(s3err('NoSuchBucket', 404), 'op')).toMatchObject({ code: 'NOT_FOUND', retryable: false });
    expect(toAppError(s3err('BadDigest', 400), 'op')).toMatchObject({ code: 'CHECKSUM_MISMATCH', retryable: false });
    expect(toAppError(s3err('EntityTooLarge', 400), 'op')).toMatchObject({ code: 'LIMIT_EXCEEDED', retryable: false });
    expect(toAppError(s3err('ServiceUnavailable', 503), 'op')).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    const e = toAppError(s3err('InternalError', 500), 'PutObject s3://b/k');
    expect(e.message).toContain('PutObject s3://b/k failed: InternalError (HTTP 500)');
  });
});

describe('withDeadline', () => {
  const hang = (s: AbortSignal): Promise<never> => new Promise((_r, reject) => s.addEventListener('abort', () => reject(new Error('aborted'))));
  it('turns the deadline into a retryable DEADLINE_EXCEEDED', async () => {
    await expect(withDeadline('op', 20, undefined, hang)).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED', retryable: true });
  });
  it('turns the caller’s signal into CANCELLED', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 10);
    await expect(withDeadline('op', 10_000, ac.signal, hang)).rejects.toMatchObject({ code: 'CANCELLED', retryable: false });
    await expect(withDeadline('op', 10_000, ac.signal, () => Promise.resolve(1))).rejects.toMatchObject({ code: 'CANCELLED' });
  });
  it('passes results and other errors through', async () => {
    expect(await withDeadline('op', 1000, undefined, () => Promise.resolve(7))).toBe(7);
    await expect(withDeadline('op', 1000, undefined, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  });
});

describe('createS3Client against the local S3 server', () => {
  let dir: string;
  let srv: LocalS3;
  let s3: S3Client;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-s3c-'));
    srv = await startLocalS3({ directory: dir });
    s3 = createS3Client({ endpoint: srv.endpoint, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, requestTimeoutMs: 10_000 });
  });
  afterAll(async () => {
    s3.destroy();
    await srv.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('ensureBucket creates a bucket once and is idempotent', async () => {
    await ensureBucket(s3, 'made-here');
    await ensureBucket(s3, 'made-here');
    await Promise.all([ensureBucket(s3, 'raced'), ensureBucket(s3, 'raced')]);
    await s3.send(new HeadBucketCommand({ Bucket: 'made-here' }));
    await expect(ensureBucket(s3, 'Bad_Name')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('stores streamed bodies verbatim (no aws-chunked checksum trailer)', async () => {
    await ensureBucket(s3, 'streams');
    const body = Buffer.from('hello world');
    await s3.send(new PutObjectCommand({ Bucket: 'streams', Key: 's', Body: Readable.from([body]), ContentLength: body.length }));
    const got = await s3.send(new GetObjectCommand({ Bucket: 'streams', Key: 's' }));
    expect(await got.Body?.transformToString()).toBe('hello world');
  });

  it('wrong credentials are a permanent error (s3rver only knows the access key S3RVER)', async () => {
    const bad = createS3Client({ endpoint: srv.endpoint, region: 'us-east-1', accessKeyId: 'nope', secretAccessKey: 'nope', forcePathStyle: true, requestTimeoutMs: 10_000 });
    try {
      // HEAD answers carry no error body: only the 403 is known
      await expect(ensureBucket(bad, 'whatever')).rejects.toMatchObject({ code: 'PERMISSION_DENIED', retryable: false });
      const err = await bad.send(new GetObjectCommand({ Bucket: 'streams', Key: 's' })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(toAppError(err, 'GetObject')).toMatchObject({ code: 'UNAUTHENTICATED', retryable: false });
    } finally {
      bad.destroy();
    }
  });
});

describe('createS3Client request timeout', () => {
  let silent: Server;
  let port: number;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    // accepts connections, never answers
    silent = createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    port = (silent.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const sock of sockets) sock.destroy();
    await new Promise((r) => silent.close(r));
  });

  it('gives up on a server that never answers', async () => {
    const s3 = createS3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, requestTimeoutMs: 200 });
    const started = Date.now();
    try {
      const err = await ensureBucket(s3, 'abc').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED', retryable: true });
    } finally {
      s3.destroy();
    }
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('S3 calls are retried by one layer', () => {
  let server: HttpServer;
  let endpoint: string;
  let requests = 0;
  beforeAll(async () => {
    // Every request answered 503 SlowDown-style: transient, so each layer that retries shows up.
    server = createHttpServer((req, res) => {
      requests++;
      req.resume();
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it('the client makes one attempt and s3Send makes S3_ATTEMPTS, no more', async () => {
    const s3 = createS3Client({ endpoint, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, requestTimeoutMs: 5_000 });
    try {
      requests = 0;
      const direct = await s3.send(new GetObjectCommand({ Bucket: 'abc', Key: 'k' })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(toAppError(direct, 'GetObject')).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(requests).toBe(1);

      requests = 0;
      const err = await s3Send('GetObject', (opts) => s3.send(new GetObjectCommand({ Bucket: 'abc', Key: 'k' }), opts)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(toAppError(err, 'GetObject')).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(requests).toBe(S3_ATTEMPTS);
    } finally {
      s3.destroy();
    }
  });
});
