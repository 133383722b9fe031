import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Client, s3ErrorName, s3Status } from '../common/s3-client.js';
import { startLocalS3, type LocalS3 } from './s3-local-server.js';

const BUCKET = 'tessera-test';

function client(endpoint: string): S3Client {
  return createS3Client({ endpoint, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, requestTimeoutMs: 10_000 });
}

async function failure(p: Promise<unknown>): Promise<{ name: string | undefined; status: number | undefined }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a failure').toBeDefined();
  return { name: s3ErrorName(err), status: s3Status(err) };
}

describe('startLocalS3', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-s3srv-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('listens on an OS-chosen port of 127.0.0.1 with the buckets, and closes despite keep-alive clients', async () => {
    const srv = await startLocalS3({ directory: join(dir, 'a'), port: 0, buckets: [BUCKET, 'second-bucket'] });
    expect(srv.port).toBeGreaterThan(0);
    expect(srv.endpoint).toBe(`http://127.0.0.1:${srv.port}`);
    const s3 = client(srv.endpoint);
    const res = await s3.send(new ListBucketsCommand({}));
    expect(res.Buckets?.map((b) => b.Name).sort()).toEqual(['second-bucket', BUCKET]);
    // Idle connections are kept 65 s, not Node's 5 s (fewer reuse races: "socket hang up").
    const hint = await fetch(`${srv.endpoint}/${BUCKET}`).then((r) => r.headers.get('keep-alive'));
    expect(hint).toBe('timeout=65');
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'k', Body: 'v' }));
    const started = Date.now();
    await srv.close(); // the client's keep-alive socket is still open
    expect(Date.now() - started).toBeLessThan(3000);
    await srv.close(); // idempotent
    s3.destroy();
    // data survives a restart on the same folder
    const again = await startLocalS3({ directory: join(dir, 'a'), buckets: [BUCKET] });
    const s3b = client(again.endpoint);
    const got = await s3b.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'k' }));
    expect(await got.Body?.transformToString()).toBe('v');
    s3b.destroy();
    await again.close();
  });

  it('rejects invalid bucket names and ports', async () => {
    await expect(startLocalS3({ directory: join(dir, 'b'), buckets: ['Bad_Bucket'] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(startLocalS3({ directory: join(dir, 'b'), port: 70_000 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  describe('multipart operations', () => {
    let srv: LocalS3;
    let stock: LocalS3;
    let s3: S3Client;
    let s3stock: S3Client;
    beforeAll(async () => {
      srv = await startLocalS3({ directory: join(dir, 'shim'), buckets: [BUCKET] });
      stock = await startLocalS3({ directory: join(dir, 'stock'), buckets: [BUCKET], emulateMultipart: false });
      s3 = client(srv.endpoint);
      s3stock = client(stock.endpoint);
    });
    afterAll(async () => {
      s3.destroy();
      s3stock.destroy();
      await srv.close();
      await stock.close();
    });

    it('stock s3rver: Create/UploadPart/Complete work; Abort, ListParts, ListMultipartUploads do not', async () => {
      const c = await s3stock.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'a/b.bin' }));
      const p = await s3stock.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'a/b.bin', UploadId: c.UploadId, PartNumber: 1, Body: Buffer.from('part') }));
      expect(p.ETag).toMatch(/^"[0-9a-f]{32}"$/);
      expect(await failure(s3stock.send(new ListPartsCommand({ Bucket: BUCKET, Key: 'a/b.bin', UploadId: c.UploadId })))).toEqual({ name: 'MethodNotAllowed', status: 405 });
      expect(await failure(s3stock.send(new ListMultipartUploadsCommand({ Bucket: BUCKET })))).toEqual({ name: 'NotImplemented', status: 501 });
      expect(await failure(s3stock.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'a/b.bin', UploadId: c.UploadId })))).toEqual({ name: 'MethodNotAllowed', status: 405 });
      const done = await s3stock.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: 'a/b.bin', UploadId: c.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p.ETag }] } }));
      expect(done.ETag).toBe(p.ETag); // s3rver: MD5 of the whole object, not S3's "…-N"
      // a repeated Complete is an InternalError (500) on stock s3rver
      expect(
        (await failure(s3stock.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: 'a/b.bin', UploadId: c.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p.ETag }] } }))))
          .status,
      ).toBe(500);
    });

    it('shim: ListParts, ListMultipartUploads, AbortMultipartUpload and NoSuchUpload answers', async () => {
      const key = 'dir/x y+z.bin';
      const c = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
      const c2 = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'other.bin' }));
      const p1 = await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId, PartNumber: 1, Body: Buffer.from('one') }));
      await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId, PartNumber: 2, Body: Buffer.from('second') }));
      const parts = await s3.send(new ListPartsCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId }));
      expect(parts.Parts?.map((p) => [p.PartNumber, p.ETag, p.Size])).toEqual([
        [1, p1.ETag, 3],
        [2, expect.stringMatching(/^"[0-9a-f]{32}"$/), 6],
      ]);
      const page = await s3.send(new ListPartsCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId, MaxParts: 1 }));
      expect(page.IsTruncated).toBe(true);
      expect(page.NextPartNumberMarker).toBe('1');

      const ups = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
      expect(ups.Uploads?.map((u) => [u.Key, u.UploadId]).sort()).toEqual(
        [
          [key, c.UploadId],
          ['other.bin', c2.UploadId],
        ].sort(),
      );
      const pre = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'dir/' }));
      expect(pre.Uploads?.map((u) => u.Key)).toEqual([key]);

      await s3.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId }));
      await s3.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'other.bin', UploadId: c2.UploadId }));
      expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }))).Uploads ?? []).toEqual([]);
      expect(await readdir(join(dir, 'shim', BUCKET, '._S3rver_uploads'))).toEqual([]);

      const gone = { name: 'NoSuchUpload', status: 404 };
      expect(await failure(s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId, PartNumber: 3, Body: Buffer.from('x') })))).toEqual(gone);
      expect(await failure(s3.send(new ListPartsCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId })))).toEqual(gone);
      expect(await failure(s3.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId })))).toEqual(gone);
      expect(await failure(s3.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: c.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.ETag }] } })))).toEqual(
        gone,
      );
      // an upload id is bound to its key
      const c3 = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'k3' }));
      expect(await failure(s3.send(new ListPartsCommand({ Bucket: BUCKET, Key: 'not-k3', UploadId: c3.UploadId })))).toEqual(gone);
      expect(await failure(s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'k3', UploadId: c3.UploadId, PartNumber: 10_001, Body: Buffer.from('x') })))).toEqual({
        name: 'InvalidArgument',
        status: 400,
      });
      await s3.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'k3', UploadId: c3.UploadId }));
      // unknown buckets are still s3rver's answer
      expect((await failure(s3.send(new ListMultipartUploadsCommand({ Bucket: 'no-such-bucket' })))).name).toBe('NoSuchBucket');
    });
  });
});
