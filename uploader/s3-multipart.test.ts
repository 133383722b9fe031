import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateMultipartUploadCommand, GetObjectCommand, HeadObjectCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { createS3Client } from '../common/s3-client.js';
import { startLocalS3, type LocalS3 } from '../deploy/s3-local-server.js';
import { abortUpload, listIncompleteUploads, uploadFileMultipart, type MultipartState, type MultipartStateStore, type UploadFileOptions } from './s3-multipart.js';

const BUCKET = 'tessera-test';
const MiB = 1024 * 1024;
const PART = 5 * MiB;

let dir: string;
let file: string;
let fileSha: string;
let fileBytes: number;
let other: string;
let otherSha: string;
let srv: LocalS3; // with the multipart shim (ListParts, Abort, ListMultipartUploads)
let stock: LocalS3; // plain s3rver

function newClient(endpoint: string): S3Client {
  return createS3Client({ endpoint, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, requestTimeoutMs: 20_000 });
}

/** State kept in memory, serialised like the etcd store does. */
function memStore(): MultipartStateStore & { state: MultipartState | undefined; saves: number } {
  const m = {
    state: undefined as MultipartState | undefined,
    saves: 0,
    load: async () => (m.state ? (JSON.parse(JSON.stringify(m.state)) as MultipartState) : undefined),
    save: async (s: MultipartState) => {
      m.saves++;
      m.state = JSON.parse(JSON.stringify(s)) as MultipartState;
    },
    clear: async () => {
      m.state = undefined;
    },
  };
  return m;
}

type Hook = (command: string, input: Record<string, unknown>, phase: 'before' | 'after') => void;

/** Runs `hook` around every command, outside the SDK's retries (initialize) or inside them (deserialize). */
function hook(client: S3Client, step: 'initialize' | 'deserialize', fn: Hook): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const cmd = context.commandName ?? '';
      const input = args.input as Record<string, unknown>;
      fn(cmd, input, 'before');
      const out = await next(args);
      fn(cmd, input, 'after');
      return out;
    },
    { step, name: `test-hook-${Math.random()}` } as { step: 'initialize' },
  );
}

function s3err(name: string, status: number): Error {
  return Object.assign(new Error(`injected ${name}`), { name, $fault: status < 500 ? 'client' : 'server', $metadata: { httpStatusCode: status } });
}

async function download(client: S3Client, key: string): Promise<{ sha: string; bytes: number; meta: Record<string, string> | undefined }> {
  const res = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  const body = Buffer.from(await res.Body!.transformToByteArray());
  return { sha: createHash('sha256').update(body).digest('hex'), bytes: body.length, meta: res.Metadata };
}

async function uploadsDirEntries(root: string): Promise<string[]> {
  const p = join(root, BUCKET, '._S3rver_uploads');
  return existsSync(p) ? readdir(p) : [];
}

async function failure(p: Promise<unknown>): Promise<{ code: string; retryable: boolean; message: string }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isAppError(err), `expected an AppError, got ${String(err)}`).toBe(true);
  return err as { code: string; retryable: boolean; message: string };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-mpu-'));
  file = join(dir, 'archive.zip');
  const data = randomBytes(12 * MiB + 12_345); // 3 parts: 5 + 5 + ~2 MiB
  await writeFile(file, data);
  fileBytes = data.length;
  fileSha = createHash('sha256').update(data).digest('hex');
  other = join(dir, 'other.zip');
  const data2 = randomBytes(6 * MiB);
  await writeFile(other, data2);
  otherSha = createHash('sha256').update(data2).digest('hex');
  srv = await startLocalS3({ directory: join(dir, 's3'), buckets: [BUCKET] });
  stock = await startLocalS3({ directory: join(dir, 's3-stock'), buckets: [BUCKET], emulateMultipart: false });
});

afterAll(async () => {
  await srv?.close();
  await stock?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('uploadFileMultipart', () => {
  let s3: S3Client;
  beforeAll(() => {
    s3 = newClient(srv.endpoint);
  });
  afterAll(() => s3.destroy());

  const base = (key: string, store: MultipartStateStore, extra: Partial<UploadFileOptions> = {}): UploadFileOptions => ({
    client: s3,
    bucket: BUCKET,
    key,
    filePath: file,
    fileSha256: fileSha,
    partSize: PART,
    store,
    maxRetries: 2,
    partsInFlight: 1, // these tests follow one part at a time; concurrency has its own test below
    ...extra,
  });

  it('uploads a 12 MiB file in 5 MiB parts with its sha256 as metadata', async () => {
    const store = memStore();
    const progress: number[] = [];
    const parts: number[] = [];
    const res = await uploadFileMultipart(
      base('jobs/full.zip', store, {
        onProgress: (sent, total) => {
          expect(total).toBe(fileBytes);
          progress.push(sent);
        },
        onPartUploaded: (n) => parts.push(n),
      }),
    );
    expect(res).toMatchObject({ bucket: BUCKET, key: 'jobs/full.zip', bytes: fileBytes, partsSent: 3, resumed: false });
    expect(res.etag).toMatch(/^[0-9a-f-]+$/); // unquoted
    expect(parts).toEqual([1, 2, 3]);
    expect(progress).toEqual([0, PART, 2 * PART, fileBytes]);
    const got = await download(s3, 'jobs/full.zip');
    expect(got).toEqual({ sha: fileSha, bytes: fileBytes, meta: { sha256: fileSha } });
    // state: saved before the first part (1) + after each part (3) + completed (1)
    expect(store.saves).toBe(5);
    expect(store.state).toMatchObject({ completed: true, partSize: PART, fileBytes, fileSha256: fileSha });
    expect(store.state!.parts.map((p) => [p.partNumber, p.bytes])).toEqual([
      [1, PART],
      [2, PART],
      [3, fileBytes - 2 * PART],
    ]);
    expect(await listIncompleteUploads(s3, BUCKET)).toBe(0);

    // run again with the completed state: nothing is sent
    const again = await uploadFileMultipart(base('jobs/full.zip', store, { onPartUploaded: () => expect.unreachable() }));
    expect(again).toMatchObject({ partsSent: 0, resumed: true, bytes: fileBytes, etag: res.etag });
  });

  it('uploads several parts at a time, records every one, and resumes after a crash mid-flight', async () => {
    const store = memStore();
    const crash = new Error('crash after part 2');
    const first = await uploadFileMultipart(
      base('jobs/parallel.zip', store, {
        partsInFlight: 3,
        onPartUploaded: (n) => {
          if (n === 2) throw crash;
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(first).toBe(crash);
    // Parts 1 and 3 were in flight with 2: whatever finished is recorded, 2 always is.
    const recorded = store.state!.parts.map((p) => p.partNumber);
    expect(recorded).toContain(2);
    const sent: number[] = [];
    const res = await uploadFileMultipart(base('jobs/parallel.zip', store, { partsInFlight: 3, onPartUploaded: (n) => sent.push(n) }));
    expect(res).toMatchObject({ resumed: true, bytes: fileBytes, partsSent: 3 - recorded.length });
    expect([...recorded, ...sent].sort()).toEqual([1, 2, 3]);
    expect(store.state!.parts.map((p) => p.partNumber)).toEqual([1, 2, 3]);
    expect(await download(s3, 'jobs/parallel.zip')).toMatchObject({ sha: fileSha, bytes: fileBytes });
    expect(await listIncompleteUploads(s3, BUCKET, { prefix: 'jobs/parallel' })).toBe(0);
  });

  it('sends a file up to singlePutMaxBytes as one PutObject, verified, and records it complete', async () => {
    const store = memStore();
    const res = await uploadFileMultipart(base('jobs/single.zip', store, { singlePutMaxBytes: fileBytes, onPartUploaded: () => expect.unreachable() }));
    expect(res).toMatchObject({ bytes: fileBytes, partsSent: 0, resumed: false });
    expect(await download(s3, 'jobs/single.zip')).toEqual({ sha: fileSha, bytes: fileBytes, meta: { sha256: fileSha } });
    expect(store.state).toMatchObject({ completed: true, fileBytes, fileSha256: fileSha });
    expect(await listIncompleteUploads(s3, BUCKET, { prefix: 'jobs/single' })).toBe(0);
    // Again: the recorded state and HeadObject say it is there; nothing is sent.
    expect(await uploadFileMultipart(base('jobs/single.zip', store, { singlePutMaxBytes: fileBytes }))).toMatchObject({ resumed: true, partsSent: 0, bytes: fileBytes });
    // A file that is not the announced one is refused before anything is sent.
    const bad = memStore();
    const e = await failure(uploadFileMultipart(base('jobs/single-bad.zip', bad, { fileSha256: otherSha, singlePutMaxBytes: fileBytes })));
    expect(e).toMatchObject({ code: 'CHECKSUM_MISMATCH', retryable: false });
    await expect(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'jobs/single-bad.zip' }))).rejects.toThrow();
  });

  it('sends a writer-hashed MD5 as Content-MD5 without reading the file first; the server refuses bytes that differ', async () => {
    const md5 = createHash('md5')
      .update(await readFile(file))
      .digest('base64');
    const res = await uploadFileMultipart(base('jobs/single-md5.zip', memStore(), { singlePutMaxBytes: fileBytes, fileMd5Base64: md5 }));
    expect(res).toMatchObject({ bytes: fileBytes, partsSent: 0, resumed: false });
    expect(await download(s3, 'jobs/single-md5.zip')).toEqual({ sha: fileSha, bytes: fileBytes, meta: { sha256: fileSha } });
    // An MD5 of other bytes (the file changed after it was hashed): S3 refuses the PutObject.
    const other = createHash('md5').update('something else').digest('base64');
    const e = await failure(uploadFileMultipart(base('jobs/single-md5-bad.zip', memStore(), { singlePutMaxBytes: fileBytes, fileMd5Base64: other })));
    expect(e).toMatchObject({ retryable: false });
    await expect(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'jobs/single-md5-bad.zip' }))).rejects.toThrow();
  });

  it('resumes after a crash, sending only the missing parts', async () => {
    const store = memStore();
    const crash = new Error('crash after part 1');
    const first = await uploadFileMultipart(
      base('jobs/resume.zip', store, {
        onPartUploaded: (n) => {
          if (n === 1) throw crash;
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(first).toBe(crash); // the callback's error, unchanged
    expect(store.state?.parts.map((p) => p.partNumber)).toEqual([1]);
    expect(await listIncompleteUploads(s3, BUCKET, { prefix: 'jobs/resume' })).toBe(1); // kept for the resume

    const sent: number[] = [];
    const progress: number[] = [];
    const res = await uploadFileMultipart(base('jobs/resume.zip', store, { onPartUploaded: (n) => sent.push(n), onProgress: (b) => progress.push(b) }));
    expect(res).toMatchObject({ partsSent: 2, resumed: true, bytes: fileBytes });
    expect(sent).toEqual([2, 3]);
    expect(progress[0]).toBe(PART);
    expect(await download(s3, 'jobs/resume.zip')).toMatchObject({ sha: fileSha, bytes: fileBytes });
    expect(await listIncompleteUploads(s3, BUCKET)).toBe(0);
  });

  it('adopts a part the server has but the state missed (crash between UploadPart and save)', async () => {
    const store = memStore();
    const realSave = store.save;
    store.save = async (s) => {
      if (s.parts.length === 2) throw new Error('store down');
      await realSave(s);
    };
    await expect(uploadFileMultipart(base('jobs/adopt.zip', store))).rejects.toThrow('store down');
    expect(store.state?.parts.map((p) => p.partNumber)).toEqual([1]); // part 2 is on the server only
    store.save = realSave;
    const sent: number[] = [];
    const res = await uploadFileMultipart(base('jobs/adopt.zip', store, { onPartUploaded: (n) => sent.push(n) }));
    expect(sent).toEqual([3]);
    expect(res).toMatchObject({ partsSent: 1, resumed: true });
    expect(await download(s3, 'jobs/adopt.zip')).toMatchObject({ sha: fileSha });
  });

  it('re-sends a recorded part the server lost', async () => {
    const store = memStore();
    await expect(
      uploadFileMultipart(
        base('jobs/lost.zip', store, {
          onPartUploaded: (n) => {
            if (n === 2) throw new Error('crash');
          },
        }),
      ),
    ).rejects.toThrow('crash');
    // the server lost part 1 (e.g. a different upload id's data): ListParts reconciliation re-sends it
    const state = store.state!;
    await rm(join(dir, 's3', BUCKET, '._S3rver_uploads', state.uploadId, '1'));
    await rm(join(dir, 's3', BUCKET, '._S3rver_uploads', state.uploadId, '1.md5'));
    const sent: number[] = [];
    const res = await uploadFileMultipart(base('jobs/lost.zip', store, { onPartUploaded: (n) => sent.push(n) }));
    expect(sent).toEqual([1, 3]);
    expect(res).toMatchObject({ partsSent: 2, resumed: true });
    expect(await download(s3, 'jobs/lost.zip')).toMatchObject({ sha: fileSha });
  });

  it('starts over when the recorded upload no longer exists', async () => {
    const store = memStore();
    await expect(
      uploadFileMultipart(
        base('jobs/expired.zip', store, {
          onPartUploaded: () => {
            throw new Error('crash');
          },
        }),
      ),
    ).rejects.toThrow('crash');
    const old = store.state!;
    await abortUpload(s3, old); // like S3's lifecycle rule for incomplete uploads
    const res = await uploadFileMultipart(base('jobs/expired.zip', store));
    expect(res).toMatchObject({ partsSent: 3, resumed: false });
    expect(store.state!.uploadId).not.toBe(old.uploadId);
    expect(await download(s3, 'jobs/expired.zip')).toMatchObject({ sha: fileSha });
  });

  it('replaces (and aborts) a state recorded for another file', async () => {
    const store = memStore();
    await expect(
      uploadFileMultipart(
        base('jobs/replaced.zip', store, {
          filePath: other,
          fileSha256: otherSha,
          onPartUploaded: () => {
            throw new Error('crash');
          },
        }),
      ),
    ).rejects.toThrow('crash');
    const stale = store.state!;
    expect(await listIncompleteUploads(s3, BUCKET, { prefix: 'jobs/replaced' })).toBe(1);
    const res = await uploadFileMultipart(base('jobs/replaced.zip', store));
    expect(res).toMatchObject({ partsSent: 3, resumed: false });
    expect(store.state!.uploadId).not.toBe(stale.uploadId);
    expect(await listIncompleteUploads(s3, BUCKET, { prefix: 'jobs/replaced' })).toBe(0);
    expect(await download(s3, 'jobs/replaced.zip')).toMatchObject({ sha: fileSha });
  });

  it('treats a Complete whose answer is lost as done when HeadObject shows our object', async () => {
    const c = newClient(srv.endpoint);
    let completes = 0;
    hook(c, 'initialize', (cmd, _in, phase) => {
      if (cmd === 'CompleteMultipartUploadCommand' && phase === 'after') {
        completes++;
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      }
    });
    try {
      const store = memStore();
      const res = await uploadFileMultipart(base('jobs/complete-lost.zip', store, { client: c }));
      expect(completes).toBe(1); // HeadObject settled it, Complete was not repeated
      expect(res).toMatchObject({ partsSent: 3, resumed: false, bytes: fileBytes });
      expect(res.etag).toMatch(/^[0-9a-f]{32}$/);
      expect(store.state?.completed).toBe(true);
      expect(await download(s3, 'jobs/complete-lost.zip')).toMatchObject({ sha: fileSha });
      expect(await listIncompleteUploads(s3, BUCKET)).toBe(0);
    } finally {
      c.destroy();
    }
  });

  it('survives the SDK retrying a Complete that had succeeded (NoSuchUpload on the retry)', async () => {
    const c = newClient(srv.endpoint);
    let attempts = 0;
    hook(c, 'deserialize', (cmd, _in, phase) => {
      if (cmd === 'CompleteMultipartUploadCommand' && phase === 'after' && ++attempts === 1) {
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET', $metadata: {} });
      }
    });
    try {
      const res = await uploadFileMultipart(base('jobs/complete-retried.zip', memStore(), { client: c }));
      expect(res).toMatchObject({ partsSent: 3, bytes: fileBytes });
      expect(await download(s3, 'jobs/complete-retried.zip')).toMatchObject({ sha: fileSha });
    } finally {
      c.destroy();
    }
  });

  it('retries transient part failures', async () => {
    const c = newClient(srv.endpoint);
    let calls = 0;
    hook(c, 'initialize', (cmd, input, phase) => {
      if (cmd === 'UploadPartCommand' && input.PartNumber === 2 && phase === 'before' && ++calls <= 2) throw s3err('SlowDown', 503);
    });
    try {
      const res = await uploadFileMultipart(base('jobs/transient.zip', memStore(), { client: c }));
      expect(calls).toBe(3);
      expect(res.partsSent).toBe(3);
      expect(await download(s3, 'jobs/transient.zip')).toMatchObject({ sha: fileSha });
    } finally {
      c.destroy();
    }
  });

  it('keeps the upload for a later resume when transient failures outlast the retries', async () => {
    const c = newClient(srv.endpoint);
    hook(c, 'initialize', (cmd, input, phase) => {
      if (cmd === 'UploadPartCommand' && input.PartNumber === 2 && phase === 'before') throw s3err('ServiceUnavailable', 503);
    });
    const store = memStore();
    try {
      const err = await failure(uploadFileMultipart(base('jobs/outage.zip', store, { client: c, maxRetries: 1 })));
      expect(err).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(store.state?.parts.length).toBe(1);
      expect(await listIncompleteUploads(s3, BUCKET, { prefix: 'jobs/outage' })).toBe(1);
    } finally {
      c.destroy();
    }
    const res = await uploadFileMultipart(base('jobs/outage.zip', store));
    expect(res).toMatchObject({ partsSent: 2, resumed: true });
  });

  it('aborts the upload and clears the state on a permanent failure', async () => {
    const c = newClient(srv.endpoint);
    let calls = 0;
    hook(c, 'initialize', (cmd, input, phase) => {
      if (cmd === 'UploadPartCommand' && input.PartNumber === 2 && phase === 'before') {
        calls++;
        throw s3err('AccessDenied', 403);
      }
    });
    const store = memStore();
    try {
      const err = await failure(uploadFileMultipart(base('jobs/denied.zip', store, { client: c })));
      expect(err).toMatchObject({ code: 'PERMISSION_DENIED', retryable: false });
      expect(calls).toBe(1); // never retried
    } finally {
      c.destroy();
    }
    expect(store.state).toBeUndefined();
    expect(await listIncompleteUploads(s3, BUCKET)).toBe(0);
    expect(await uploadsDirEntries(join(dir, 's3'))).toEqual([]);
    await expect(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'jobs/denied.zip' }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
  });

  it('refuses to complete when the file is not the announced sha256', async () => {
    const store = memStore();
    const err = await failure(uploadFileMultipart(base('jobs/bad-sha.zip', store, { fileSha256: otherSha })));
    expect(err.code).toBe('CHECKSUM_MISMATCH');
    expect(store.state).toBeUndefined();
    expect(await listIncompleteUploads(s3, BUCKET)).toBe(0);
    await expect(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'jobs/bad-sha.zip' }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
  });

  it('stops on cancel, keeping the state, and resumes later', async () => {
    const store = memStore();
    const ac = new AbortController();
    const err = await failure(uploadFileMultipart(base('jobs/cancel.zip', store, { signal: ac.signal, onPartUploaded: (n) => n === 1 && ac.abort() })));
    expect(err.code).toBe('CANCELLED');
    expect(store.state?.parts.length).toBe(1);
    const res = await uploadFileMultipart(base('jobs/cancel.zip', store));
    expect(res).toMatchObject({ partsSent: 2, resumed: true });
  });

  it('puts an empty file with one PutObject', async () => {
    const empty = join(dir, 'empty.zip');
    await writeFile(empty, '');
    const sha = createHash('sha256').digest('hex');
    const res = await uploadFileMultipart(base('jobs/empty.zip', memStore(), { filePath: empty, fileSha256: sha }));
    expect(res).toMatchObject({ bytes: 0, partsSent: 0, resumed: false });
    expect(await download(s3, 'jobs/empty.zip')).toEqual({ sha, bytes: 0, meta: { sha256: sha } });
  });

  it('validates its arguments', async () => {
    expect((await failure(uploadFileMultipart(base('k', memStore(), { partSize: 1024 })))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(uploadFileMultipart(base('k', memStore(), { fileSha256: 'abc' })))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(uploadFileMultipart(base('', memStore())))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(uploadFileMultipart(base('k', memStore(), { bucket: 'No' })))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(uploadFileMultipart(base('k', memStore(), { filePath: join(dir, 'missing') })))).code).toBe('NOT_FOUND');
  });
});

describe('uploadFileMultipart on stock s3rver (no ListParts, no Abort)', () => {
  let s3: S3Client;
  beforeAll(() => {
    s3 = newClient(stock.endpoint);
  });
  afterAll(() => s3.destroy());

  it('resumes from the recorded part list', async () => {
    const store = memStore();
    await expect(
      uploadFileMultipart({
        client: s3,
        bucket: BUCKET,
        key: 'r.zip',
        filePath: file,
        fileSha256: fileSha,
        partSize: PART,
        store,
        partsInFlight: 1,
        onPartUploaded: (n) => {
          if (n === 1) throw new Error('crash');
        },
      }),
    ).rejects.toThrow('crash');
    const sent: number[] = [];
    const res = await uploadFileMultipart({
      client: s3,
      bucket: BUCKET,
      key: 'r.zip',
      filePath: file,
      fileSha256: fileSha,
      partSize: PART,
      store,
      partsInFlight: 1,
      onPartUploaded: (n) => sent.push(n),
    });
    expect(sent).toEqual([2, 3]);
    expect(res).toMatchObject({ partsSent: 2, resumed: true });
    expect(await download(s3, 'r.zip')).toEqual({ sha: fileSha, bytes: fileBytes, meta: { sha256: fileSha } });
    expect(await uploadsDirEntries(join(dir, 's3-stock'))).toEqual([]);
  });

  it('recovers a lost Complete answer although the repeated Complete is a 500 there', async () => {
    const c = newClient(stock.endpoint);
    let attempts = 0;
    hook(c, 'deserialize', (cmd, _in, phase) => {
      if (cmd === 'CompleteMultipartUploadCommand' && phase === 'after' && ++attempts === 1) {
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET', $metadata: {} });
      }
    });
    try {
      const res = await uploadFileMultipart({ client: c, bucket: BUCKET, key: 'lost.zip', filePath: file, fileSha256: fileSha, partSize: PART, store: memStore() });
      expect(res.partsSent).toBe(3);
      expect(await download(s3, 'lost.zip')).toMatchObject({ sha: fileSha });
    } finally {
      c.destroy();
    }
  });

  it('clears the state on a permanent failure; the parts stay on disk (s3rver cannot abort)', async () => {
    const store = memStore();
    const err = await failure(uploadFileMultipart({ client: s3, bucket: BUCKET, key: 'bad.zip', filePath: file, fileSha256: otherSha, partSize: PART, store }));
    expect(err.code).toBe('CHECKSUM_MISMATCH');
    expect(store.state).toBeUndefined();
    expect((await uploadsDirEntries(join(dir, 's3-stock'))).length).toBe(1);
    expect((await failure(listIncompleteUploads(s3, BUCKET))).code).toBe('FAILED_PRECONDITION');
    const upload = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'x' }));
    const state: MultipartState = { uploadId: upload.UploadId!, bucket: BUCKET, key: 'x', partSize: PART, fileBytes: 1, fileSha256: fileSha, parts: [] };
    await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'x', UploadId: state.uploadId, PartNumber: 1, Body: Buffer.from('x') }));
    expect((await failure(abortUpload(s3, state))).code).toBe('FAILED_PRECONDITION');
  });
});
