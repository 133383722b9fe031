import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import yauzl from 'yauzl';
import { AppError, isAppError } from '../common/errors.js';

/** What an archive holds of one file entry written before (for content made last). */
export interface ZipWritten {
  name: string;
  bytes: number;
  /** SHA-256 (hex) of the entry's bytes, hashed as they were copied ('' unless `entryDigests`). */
  sha256: string;
}

/** One file of an archive: its name inside the zip and either a local file or literal content. */
export interface ZipEntry {
  /** 1–255 characters of [A-Za-z0-9._-], not "." or ".."; unique within the archive. */
  name: string;
  /** Local file to store (exactly one of path and content). */
  path?: string;
  /**
   * The bytes, or a function that makes them when the entry's turn comes, given the entries
   * written before it (a manifest that lists their digests, or waits for checks running beside).
   */
  content?: Buffer | string | ((written: readonly ZipWritten[]) => Promise<Buffer | string>);
}

/** Size and digests of a written archive. */
export interface ZipResult {
  bytes: number;
  sha256: string;
  /** MD5 of the archive (base64, as S3's Content-MD5 wants it), hashed in the same pass. */
  md5Base64: string;
  /** Every entry, in order (with its SHA-256 when `entryDigests` was asked). */
  entries: ZipWritten[];
}

/** Every entry gets this date and mode, so the same input always gives the same bytes. */
export const ZIP_ENTRY_DATE = new Date('2000-01-01T00:00:00Z');
const ZIP_ENTRY_MODE = 0o644;
const ENTRY_NAME = /^[A-Za-z0-9._-]{1,255}$/;
/** Sizes and offsets from here on need ZIP64 records. */
const ZIP64_FROM = 0xffffffff;
const COPY_BUFFER_BYTES = 4 * 1024 * 1024;

/** MS-DOS date and time fields of `d` (UTC). */
function dosDateTime(d: Date): { date: number; time: number } {
  return {
    date: ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate(),
    time: (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | Math.floor(d.getUTCSeconds() / 2),
  };
}

/**
 * Writes a STORE-mode zip (video is already compressed) at `outPath`: written to a temporary file
 * next to it, fsynced, then renamed into place (and the folder fsynced), so `outPath` is either
 * absent or complete. Entries keep their order and get fixed dates and modes: the same names and
 * bytes give the same archive. Returns the archive's size, SHA-256 and MD5, hashed while writing.
 * Throws INVALID_ARGUMENT for a bad entry, NOT_FOUND for a missing file, CANCELLED on `signal`.
 *
 * One pass over every byte, in this process: each entry's CRC-32 (zlib's, native) and the
 * archive's digests are computed on the 4 MiB buffers as they are copied. Entries carry a data
 * descriptor (general purpose bit 3) and, from 4 GiB on (a feature-length rendition), ZIP64
 * sizes and offsets. This replaced archiver here: its JavaScript CRC-32 and stream plumbing took
 * 0.35–0.5 s for a 75 MB archive, on the critical path of every job, and the upload then read the
 * archive once more for its MD5. `zip64From` (tests) lowers the ZIP64 threshold.
 */
export async function writeZip(
  outPath: string,
  entries: ZipEntry[],
  opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void; zip64From?: number; entryDigests?: boolean } = {},
): Promise<ZipResult> {
  const seen = new Set<string>();
  for (const e of entries) {
    if (!ENTRY_NAME.test(e.name) || e.name === '.' || e.name === '..') throw new AppError('INVALID_ARGUMENT', `invalid zip entry name: ${JSON.stringify(e.name)} (allowed: [A-Za-z0-9._-])`);
    if (seen.has(e.name)) throw new AppError('INVALID_ARGUMENT', `duplicate zip entry name: ${e.name}`);
    seen.add(e.name);
    if ((e.path === undefined) === (e.content === undefined)) throw new AppError('INVALID_ARGUMENT', `zip entry ${e.name} needs exactly one of path and content`);
  }
  // Every file is there before anything is written; its size now is what the archive must hold.
  const fileSizes: (number | undefined)[] = [];
  for (const e of entries) {
    if (e.path === undefined) {
      fileSizes.push(undefined);
      continue;
    }
    let st;
    try {
      st = await stat(e.path);
    } catch (err) {
      throw new AppError('NOT_FOUND', `zip entry ${e.name}: no such file ${e.path}`, { cause: err });
    }
    if (!st.isFile()) throw new AppError('INVALID_ARGUMENT', `zip entry ${e.name}: ${e.path} is not a regular file`);
    fileSizes.push(st.size);
  }
  const { signal } = opts;
  const cancelled = (cause?: unknown): AppError => new AppError('CANCELLED', `writing ${outPath} cancelled`, { cause: cause ?? signal?.reason });
  if (signal?.aborted) throw cancelled();

  const dir = dirname(resolve(outPath));
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(outPath)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const limit = opts.zip64From ?? ZIP64_FROM;
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  const { date, time } = dosDateTime(ZIP_ENTRY_DATE);
  let offset = 0;
  let out: FileHandle | undefined;
  const written: ZipWritten[] = [];
  const emit = async (buf: Buffer): Promise<void> => {
    sha.update(buf);
    md5.update(buf);
    for (let at = 0; at < buf.length;) at += (await out!.write(buf, at, buf.length - at)).bytesWritten;
    offset += buf.length;
    opts.onProgress?.(offset);
  };
  try {
    out = await open(tmp, 'w', 0o644);
    const central: Buffer[] = [];
    const copy = Buffer.allocUnsafe(COPY_BUFFER_BYTES);
    for (const [i, e] of entries.entries()) {
      if (signal?.aborted) throw cancelled();
      const content = typeof e.content === 'function' ? await e.content(written) : e.content;
      const literal = content === undefined ? undefined : typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
      if (signal?.aborted) throw cancelled();
      const size = literal ? literal.length : fileSizes[i]!;
      const entrySha = opts.entryDigests ? createHash('sha256') : undefined;
      const name = Buffer.from(e.name, 'ascii');
      const at = offset;
      const big = size >= limit || at >= limit;
      // Local header: CRC and sizes follow the data (bit 3); a ZIP64 entry names its sizes here too.
      const local = Buffer.alloc(30 + name.length + (big ? 20 : 0));
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(big ? 45 : 20, 4);
      local.writeUInt16LE(0x0008, 6);
      local.writeUInt16LE(0, 8); // STORE
      local.writeUInt16LE(time, 10);
      local.writeUInt16LE(date, 12);
      local.writeUInt32LE(0, 14);
      local.writeUInt32LE(big ? 0xffffffff : 0, 18);
      local.writeUInt32LE(big ? 0xffffffff : 0, 22);
      local.writeUInt16LE(name.length, 26);
      local.writeUInt16LE(big ? 20 : 0, 28);
      name.copy(local, 30);
      if (big) {
        local.writeUInt16LE(0x0001, 30 + name.length);
        local.writeUInt16LE(16, 32 + name.length);
        local.writeBigUInt64LE(BigInt(size), 34 + name.length);
        local.writeBigUInt64LE(BigInt(size), 42 + name.length);
      }
      await emit(local);
      let crc = 0;
      let copied = 0;
      if (e.path === undefined) {
        const data = literal ?? Buffer.alloc(0);
        entrySha?.update(data);
        crc = crc32(data);
        copied = data.length;
        if (data.length > 0) await emit(data);
      } else {
        const src = await open(e.path, fsc.O_RDONLY).catch((err: unknown) => {
          throw new AppError('NOT_FOUND', `zip entry ${e.name}: cannot open ${e.path}`, { cause: err });
        });
        try {
          for (;;) {
            if (signal?.aborted) throw cancelled();
            const { bytesRead } = await src.read(copy, 0, copy.length, null);
            if (bytesRead === 0) break;
            const chunk = copy.subarray(0, bytesRead);
            crc = crc32(chunk, crc);
            entrySha?.update(chunk);
            copied += bytesRead;
            await emit(chunk);
          }
        } finally {
          await src.close();
        }
      }
      if (copied !== size) throw new AppError('INTERNAL', `zip entry ${e.name}: ${e.path ?? 'content'} changed while it was archived (${copied} bytes read, ${size} expected)`);
      // Data descriptor: 8-byte sizes exactly when the local header has the ZIP64 field.
      const desc = Buffer.alloc(big ? 24 : 16);
      desc.writeUInt32LE(0x08074b50, 0);
      desc.writeUInt32LE(crc >>> 0, 4);
      if (big) {
        desc.writeBigUInt64LE(BigInt(size), 8);
        desc.writeBigUInt64LE(BigInt(size), 16);
      } else {
        desc.writeUInt32LE(size, 8);
        desc.writeUInt32LE(size, 12);
      }
      await emit(desc);
      const cd = Buffer.alloc(46 + name.length + (big ? 28 : 0));
      cd.writeUInt32LE(0x02014b50, 0);
      cd.writeUInt16LE((3 << 8) | (big ? 45 : 20), 4); // made by: Unix (the mode below)
      cd.writeUInt16LE(big ? 45 : 20, 6);
      cd.writeUInt16LE(0x0008, 8);
      cd.writeUInt16LE(0, 10);
      cd.writeUInt16LE(time, 12);
      cd.writeUInt16LE(date, 14);
      cd.writeUInt32LE(crc >>> 0, 16);
      cd.writeUInt32LE(big ? 0xffffffff : size, 20);
      cd.writeUInt32LE(big ? 0xffffffff : size, 24);
      cd.writeUInt16LE(name.length, 28);
      cd.writeUInt16LE(big ? 28 : 0, 30);
      cd.writeUInt16LE(0, 32); // comment
      cd.writeUInt16LE(0, 34); // disk
      cd.writeUInt16LE(0, 36); // internal attributes
      cd.writeUInt32LE(((0o100000 | ZIP_ENTRY_MODE) << 16) >>> 0, 38);
      cd.writeUInt32LE(big ? 0xffffffff : at, 42);
      name.copy(cd, 46);
      if (big) {
        const x = 46 + name.length;
        cd.writeUInt16LE(0x0001, x);
        cd.writeUInt16LE(24, x + 2);
        cd.writeBigUInt64LE(BigInt(size), x + 4);
        cd.writeBigUInt64LE(BigInt(size), x + 12);
        cd.writeBigUInt64LE(BigInt(at), x + 20);
      }
      central.push(cd);
      written.push({ name: e.name, bytes: size, sha256: entrySha?.digest('hex') ?? '' });
    }
    const cdAt = offset;
    const cdBytes = central.reduce((a, b) => a + b.length, 0);
    await emit(Buffer.concat(central));
    const count = entries.length;
    const zip64 = cdAt >= limit || cdBytes >= limit || count >= 0xffff || written.some((w) => w.bytes >= limit);
    if (zip64) {
      const recAt = offset;
      const rec = Buffer.alloc(56 + 20);
      rec.writeUInt32LE(0x06064b50, 0);
      rec.writeBigUInt64LE(44n, 4);
      rec.writeUInt16LE((3 << 8) | 45, 12);
      rec.writeUInt16LE(45, 14);
      rec.writeUInt32LE(0, 16);
      rec.writeUInt32LE(0, 20);
      rec.writeBigUInt64LE(BigInt(count), 24);
      rec.writeBigUInt64LE(BigInt(count), 32);
      rec.writeBigUInt64LE(BigInt(cdBytes), 40);
      rec.writeBigUInt64LE(BigInt(cdAt), 48);
      rec.writeUInt32LE(0x07064b50, 56); // locator
      rec.writeUInt32LE(0, 60);
      rec.writeBigUInt64LE(BigInt(recAt), 64);
      rec.writeUInt32LE(1, 72);
      await emit(rec);
    }
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(0, 4);
    end.writeUInt16LE(0, 6);
    end.writeUInt16LE(Math.min(count, 0xffff), 8);
    end.writeUInt16LE(Math.min(count, 0xffff), 10);
    end.writeUInt32LE(zip64 ? Math.min(cdBytes, 0xffffffff) : cdBytes, 12);
    end.writeUInt32LE(zip64 ? 0xffffffff : cdAt, 16);
    end.writeUInt16LE(0, 20);
    await emit(end);
    await out.sync();
    await out.close();
    out = undefined;
    await rename(tmp, outPath);
  } catch (err) {
    await out?.close().catch(() => undefined);
    await rm(tmp, { force: true });
    if (signal?.aborted) throw cancelled(signal.reason ?? err);
    if (isAppError(err)) throw err;
    throw new AppError('INTERNAL', `cannot write ${outPath}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  await syncDir(dir);
  return { bytes: offset, sha256: sha.digest('hex'), md5Base64: md5.digest('base64'), entries: written };
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } catch {
    // some filesystems refuse fsync on a folder; the file itself is synced
  } finally {
    await d.close();
  }
}

/**
 * Reads every file entry of a zip into memory (for tests and small archives), keyed by entry name.
 * Entry names are checked as by extractZip. Throws INVALID_ARGUMENT for a bad or unsafe archive.
 */
export async function readZipEntries(zipPath: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  await eachZipFile(zipPath, async (name, stream) => {
    const chunks: Buffer[] = [];
    await pipeline(
      stream,
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    );
    out.set(name, Buffer.concat(chunks));
  });
  return out;
}

/**
 * Unpacks a zip into `destDir` (created if missing) and returns the written files' paths, in
 * archive order. The whole central directory is checked before anything is written: entry names
 * with "..", ".", empty segments, absolute paths, drive letters, backslashes or control characters,
 * duplicate names, symlinks and encrypted entries are rejected (INVALID_ARGUMENT). Forward-slash
 * sub-folders are allowed and created. Existing files are overwritten; symlinks are not followed.
 */
export async function extractZip(zipPath: string, destDir: string): Promise<string[]> {
  const root = resolve(destDir);
  await mkdir(root, { recursive: true });
  const written: string[] = [];
  await eachZipFile(zipPath, async (name, stream) => {
    const target = resolve(root, ...name.split('/'));
    if (!target.startsWith(root + sep)) throw new AppError('INVALID_ARGUMENT', `zip entry ${JSON.stringify(name)} escapes ${root}`);
    await mkdir(dirname(target), { recursive: true });
    // O_NOFOLLOW: a symlink planted in destDir is not followed; the stream closes the handle.
    const fh = await open(target, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o644);
    await pipeline(stream, fh.createWriteStream());
    written.push(target);
  });
  return written;
}

/** Why a zip entry name is unsafe to extract, or undefined when it is fine. */
function unsafeEntryName(name: string): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name.includes('\\')) return 'backslash';
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return 'absolute path';
  // eslint-disable-next-line no-control-regex -- control characters are what it refuses
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'control character';
  const segs = name.split('/');
  if (segs.includes('..')) return '".." segment';
  if (segs.some((s, i) => s === '.' || (s === '' && i !== segs.length - 1))) return 'empty or "." segment';
  return undefined;
}

/**
 * Opens a zip, validates every entry, then calls `onFile` for each file entry (folders skipped)
 * with a stream of its uncompressed bytes.
 */
async function eachZipFile(zipPath: string, onFile: (name: string, stream: NodeJS.ReadableStream) => Promise<void>): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    // decodeStrings: false → raw names, validated here rather than rewritten by yauzl.
    zip = await yauzl.openPromise(zipPath, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true, autoClose: false });
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === 'ENOENT') throw new AppError('NOT_FOUND', `no such file: ${zipPath}`, { cause: err });
    throw new AppError('INVALID_ARGUMENT', `${zipPath} is not a readable zip: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  try {
    const files: { name: string; entry: yauzl.Entry }[] = [];
    const names = new Set<string>();
    try {
      for await (const entry of zip.eachEntry()) {
        const raw = entry.fileName as unknown as Buffer | string;
        const utf8 = (entry.generalPurposeBitFlag & 0x800) !== 0;
        const name = typeof raw === 'string' ? raw : raw.toString(utf8 ? 'utf8' : 'latin1');
        const why = unsafeEntryName(name);
        if (why) throw new AppError('INVALID_ARGUMENT', `unsafe zip entry name ${JSON.stringify(name)}: ${why}`);
        if (names.has(name)) throw new AppError('INVALID_ARGUMENT', `duplicate zip entry name ${JSON.stringify(name)}`);
        names.add(name);
        if (((entry.externalFileAttributes >>> 16) & 0o170000) === 0o120000) throw new AppError('INVALID_ARGUMENT', `zip entry ${JSON.stringify(name)} is a symlink`);
        if (entry.isEncrypted()) throw new AppError('INVALID_ARGUMENT', `zip entry ${JSON.stringify(name)} is encrypted`);
        if (name.endsWith('/')) continue;
        files.push({ name, entry });
      }
    } catch (err) {
      if (isAppError(err)) throw err;
      throw new AppError('INVALID_ARGUMENT', `${zipPath} is not a valid zip: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    for (const f of files) {
      let stream;
      try {
        stream = await zip.openReadStreamPromise(f.entry);
      } catch (err) {
        throw new AppError('INVALID_ARGUMENT', `cannot read zip entry ${f.name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      await onFile(f.name, stream);
    }
  } finally {
    zip.close();
  }
}
