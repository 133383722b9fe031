import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import S3rver from 's3rver';
import { AppError } from '../common/errors.js';
import { isValidBucketName } from '../common/s3-client.js';

/**
 * The local S3-protocol server: s3rver 3.7.1 storing objects under a folder.
 *
 * What stock s3rver 3.7.1 implements for multipart uploads (read from its lib/routes.js and
 * lib/controllers/object.js):
 *   - CreateMultipartUpload   POST   /b/k?uploads            yes
 *   - UploadPart              PUT    /b/k?uploadId&partNumber yes (never answers NoSuchUpload: it
 *                                                             recreates the upload folder)
 *   - CompleteMultipartUpload POST   /b/k?uploadId           yes (no ETag/size checks; the object
 *                                                             ETag is the MD5 of the whole object,
 *                                                             not S3's "md5-of-md5s-N"; a repeated
 *                                                             Complete answers 500 InternalError)
 *   - AbortMultipartUpload    DELETE /b/k?uploadId           no: 405 MethodNotAllowed
 *   - ListParts               GET    /b/k?uploadId           no: 405 MethodNotAllowed
 *   - ListMultipartUploads    GET    /b?uploads              no: 501 NotImplemented
 *
 * Unless `emulateMultipart` is false, a small middleware in front of s3rver fills those gaps from
 * s3rver's own on-disk layout (`<dir>/<bucket>/._S3rver_uploads/<uploadId>/{key,metadata,N,N.md5}`):
 * it answers AbortMultipartUpload, ListParts and ListMultipartUploads, and answers UploadPart and
 * CompleteMultipartUpload for an unknown or aborted upload with 404 NoSuchUpload, as S3 does.
 * Stock s3rver ignores Content-MD5; here, as on S3, a PutObject or UploadPart whose stored bytes
 * have another MD5 is answered 400 BadDigest (the object just stored is deleted again; a part is
 * left to be overwritten by the retry).
 * The shim's requests skip s3rver's authentication (s3rver does not verify V4 signatures anyway;
 * it only requires the access key id "S3RVER").
 */
export interface LocalS3Options {
  /** Folder holding the buckets (created if missing). */
  directory: string;
  /** TCP port on 127.0.0.1; 0 (the default) lets the OS pick. */
  port?: number;
  /** Buckets created at start (existing ones are kept). */
  buckets?: string[];
  /** Serve Abort/ListParts/ListMultipartUploads and NoSuchUpload answers (default true). */
  emulateMultipart?: boolean;
  /** Serve HTTPS with this certificate and key (PEM) instead of HTTP. */
  tls?: { cert: Buffer; key: Buffer };
}

/** A running local S3 server. */
export interface LocalS3 {
  /** Base URL for the S3 client (`forcePathStyle: true`, credentials S3RVER/S3RVER). */
  endpoint: string;
  /** The real port (useful when 0 was asked). */
  port: number;
  /** Stops listening and drops open connections (at most ~1 s grace). */
  close(): Promise<void>;
}

/**
 * Starts s3rver bound to 127.0.0.1 with silent logging and the given buckets (see LocalS3Options
 * for which multipart operations work). Clients must use `forcePathStyle: true` and the access key
 * id "S3RVER" (s3rver rejects any other with InvalidAccessKeyId; it does not check signatures).
 */
export async function startLocalS3(opts: LocalS3Options): Promise<LocalS3> {
  const buckets = opts.buckets ?? [];
  for (const b of buckets) {
    if (!isValidBucketName(b)) throw new AppError('INVALID_ARGUMENT', `invalid bucket name: ${JSON.stringify(b)}`);
  }
  const port = opts.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new AppError('INVALID_ARGUMENT', `invalid port: ${port}`);
  await mkdir(opts.directory, { recursive: true });
  const server = new S3rver({
    address: '127.0.0.1',
    port,
    silent: true,
    directory: opts.directory,
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
    ...(opts.tls ? { cert: opts.tls.cert, key: opts.tls.key } : {}),
  });
  // Koa composes app.middleware when the HTTP server starts, so this runs before s3rver's router.
  if (opts.emulateMultipart ?? true) server.middleware.unshift(multipartShim(server));
  server.middleware.unshift(contentMd5Check(server));
  let address;
  try {
    address = await server.run();
  } catch (err) {
    throw new AppError('UNAVAILABLE', `local S3 server could not listen on 127.0.0.1:${port}`, { cause: err });
  }
  const http = server.httpServer;
  if (http) {
    // Idle keep-alive connections are kept 65 s (Node's default is 5 s), as AWS's load balancers
    // do: a client reusing one just as the server closes it gets "socket hang up", and the
    // clients here often wait a few seconds between requests.
    http.keepAliveTimeout = 65_000;
    http.headersTimeout = 66_000;
  }
  let closing: Promise<void> | undefined;
  return {
    endpoint: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${address.port}`,
    port: address.port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        if (!http) return resolve();
        // close() waits for every connection; keep-alive sockets of S3 clients are dropped after a grace.
        const force = setTimeout(() => http.closeAllConnections(), 1000);
        force.unref();
        http.close(() => {
          clearTimeout(force);
          resolve();
        });
        http.closeIdleConnections();
      });
      return closing;
    },
  };
}

type Ctx = S3rver['middleware'][number] extends (ctx: infer C, next: never) => unknown ? C : never;

const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** Content-MD5 checked against what was stored (s3rver answers the stored bytes' MD5 as the ETag). */
function contentMd5Check(server: S3rver): S3rver['middleware'][number] {
  return async (ctx, next) => {
    const sent = ctx.method === 'PUT' ? ctx.get('content-md5') : '';
    await next();
    if (!sent || ctx.status !== 200) return;
    const stored = ctx.response.get('ETag').replace(/"/g, '');
    const expected = Buffer.from(sent, 'base64').toString('hex');
    if (!stored || stored === expected) return;
    const route = parsePath(ctx.path);
    if (route?.key !== undefined && ctx.query.uploadId === undefined) await server.store.deleteObject(route.bucket, route.key).catch(() => undefined);
    ctx.remove('ETag');
    s3Error(ctx, 400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.');
  };
}

function multipartShim(server: S3rver): S3rver['middleware'][number] {
  return async (ctx, next) => {
    const route = parsePath(ctx.path);
    if (!route) return next();
    const uploadsRoot = server.store.getResourcePath(route.bucket, undefined, 'uploads');
    if (!(await isDir(dirname(uploadsRoot)))) return next(); // s3rver answers NoSuchBucket
    const q = ctx.query;
    if (route.key === undefined) {
      if (ctx.method === 'GET' && 'uploads' in q) return listUploads(ctx, route.bucket, uploadsRoot);
      return next();
    }
    const uploadId = q.uploadId;
    if (uploadId === undefined) return next();
    const known = typeof uploadId === 'string' && UPLOAD_ID.test(uploadId) && (await uploadKey(uploadsRoot, uploadId)) === route.key;
    if (!known) {
      return s3Error(ctx, 404, 'NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.');
    }
    const dir = join(uploadsRoot, uploadId);
    switch (ctx.method) {
      case 'GET':
        return listParts(ctx, route.bucket, route.key, uploadId, dir);
      case 'DELETE':
        await rm(dir, { recursive: true, force: true });
        ctx.status = 204;
        ctx.body = null;
        return;
      case 'PUT': {
        const n = Number(q.partNumber);
        if (!Number.isInteger(n) || n < 1 || n > 10_000) {
          return s3Error(ctx, 400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive');
        }
        return next();
      }
      default:
        return next();
    }
  };
}

function parsePath(path: string): { bucket: string; key?: string } | undefined {
  const m = /^\/([^/]+)(?:\/(.*))?$/.exec(path);
  if (!m?.[1]) return undefined;
  try {
    const bucket = decodeURIComponent(m[1]);
    return m[2] === undefined || m[2] === '' ? { bucket } : { bucket, key: decodeURIComponent(m[2]) };
  } catch {
    return undefined;
  }
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function uploadKey(uploadsRoot: string, uploadId: string): Promise<string | undefined> {
  try {
    return await readFile(join(uploadsRoot, uploadId, 'key'), 'utf8');
  } catch {
    return undefined;
  }
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function bounded(v: string | string[] | undefined, def: number, max: number): number {
  const n = Number(one(v) ?? def);
  return Number.isInteger(n) && n >= 0 ? Math.min(n, max) : def;
}

async function listUploads(ctx: Ctx, bucket: string, uploadsRoot: string): Promise<void> {
  const prefix = one(ctx.query.prefix) ?? '';
  const keyMarker = one(ctx.query['key-marker']) ?? '';
  const idMarker = one(ctx.query['upload-id-marker']) ?? '';
  const max = bounded(ctx.query['max-uploads'], 1000, 1000);
  let ids: string[] = [];
  try {
    ids = await readdir(uploadsRoot);
  } catch {
    // no upload was ever started in this bucket
  }
  const uploads: { key: string; id: string; initiated: Date }[] = [];
  for (const id of ids) {
    const key = await uploadKey(uploadsRoot, id);
    if (key === undefined || !key.startsWith(prefix)) continue;
    if (key < keyMarker || (key === keyMarker && (idMarker === '' || id <= idMarker))) continue;
    const st = await stat(join(uploadsRoot, id, 'key'));
    uploads.push({ key, id, initiated: st.mtime });
  }
  uploads.sort((a, b) => (a.key === b.key ? cmp(a.id, b.id) : cmp(a.key, b.key)));
  const page = uploads.slice(0, max);
  const truncated = uploads.length > page.length;
  const last = page[page.length - 1];
  xml(ctx, 'ListMultipartUploadsResult', [
    el('Bucket', bucket),
    el('KeyMarker', keyMarker),
    el('UploadIdMarker', idMarker),
    ...(truncated && last ? [el('NextKeyMarker', last.key), el('NextUploadIdMarker', last.id)] : []),
    el('Prefix', prefix),
    el('MaxUploads', String(max)),
    el('IsTruncated', String(truncated)),
    ...page.map((u) => `<Upload>${el('Key', u.key)}${el('UploadId', u.id)}${el('Initiated', u.initiated.toISOString())}${el('StorageClass', 'STANDARD')}</Upload>`),
  ]);
}

async function listParts(ctx: Ctx, bucket: string, key: string, uploadId: string, dir: string): Promise<void> {
  const marker = bounded(ctx.query['part-number-marker'], 0, 10_000);
  const max = bounded(ctx.query['max-parts'], 1000, 1000);
  const numbers = (await readdir(dir))
    .filter((f) => /^[0-9]+$/.test(f))
    .map(Number)
    .filter((n) => n > marker)
    .sort((a, b) => a - b);
  const page = numbers.slice(0, max);
  const truncated = numbers.length > page.length;
  const parts: string[] = [];
  for (const n of page) {
    const [st, md5] = await Promise.all([stat(join(dir, String(n))), readFile(join(dir, `${n}.md5`), 'utf8').catch(() => '')]);
    parts.push(`<Part>${el('PartNumber', String(n))}${el('LastModified', st.mtime.toISOString())}${el('ETag', `"${md5}"`)}${el('Size', String(st.size))}</Part>`);
  }
  xml(ctx, 'ListPartsResult', [
    el('Bucket', bucket),
    el('Key', key),
    el('UploadId', uploadId),
    el('StorageClass', 'STANDARD'),
    el('PartNumberMarker', String(marker)),
    el('NextPartNumberMarker', String(page[page.length - 1] ?? marker)),
    el('MaxParts', String(max)),
    el('IsTruncated', String(truncated)),
    ...parts,
  ]);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function esc(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] ?? c);
}

function el(name: string, text: string): string {
  return `<${name}>${esc(text)}</${name}>`;
}

function xml(ctx: Ctx, root: string, children: string[]): void {
  ctx.status = 200;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${children.join('')}</${root}>`;
}

function s3Error(ctx: Ctx, status: number, code: string, message: string): void {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${el('Code', code)}${el('Message', message)}</Error>`;
}
