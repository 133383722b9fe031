import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { constants as fsc, createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Archiver, ZipOptions } from 'archiver';
import yauzl from 'yauzl';
import { AppError, isAppError } from '../common/errors.js';

/** One file of an archive: its name inside the zip and either a local file or literal content. */
export interface ZipEntry {
  /** 1–255 characters of [A-Za-z0-9._-], not "." or ".."; unique within the archive. */
  name: string;
  /** Local file to store (exactly one of path and content). */
  path?: string;
  content?: Buffer | string;
}

/** Size and sha256 of a written archive. */
export interface ZipResult {
  bytes: number;
  sha256: string;
}

/** Every entry gets this date and mode, so the same input always gives the same bytes. */
export const ZIP_ENTRY_DATE = new Date('2000-01-01T00:00:00Z');
const ZIP_ENTRY_MODE = 0o644;
const ENTRY_NAME = /^[A-Za-z0-9._-]{1,255}$/;

// archiver 7 is a CommonJS vending function, while @types/archiver 8 describes archiver 8's
// class exports (`new ZipArchive()`): load it at runtime and accept both shapes.
const requireCjs = createRequire(import.meta.url);
type ArchiverModule = ((format: 'zip', options: ZipOptions) => Archiver) | { ZipArchive: new (options: ZipOptions) => Archiver };

function newZipArchive(options: ZipOptions): Archiver {
  const mod = requireCjs('archiver') as ArchiverModule;
  return typeof mod === 'function' ? mod('zip', options) : new mod.ZipArchive(options);
}

/**
 * Writes a STORE-mode zip (video is already compressed) at `outPath`: written to a temporary file
 * next to it, fsynced, then renamed into place (and the folder fsynced), so `outPath` is either
 * absent or complete. Entries keep their order and get fixed dates and modes: the same names and
 * bytes give the same archive. Returns the archive's size and sha256, hashed while writing.
 * Throws INVALID_ARGUMENT for a bad entry, NOT_FOUND for a missing file, CANCELLED on `signal`.
 */
export async function writeZip(outPath: string, entries: ZipEntry[], opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {}): Promise<ZipResult> {
  const seen = new Set<string>();
  for (const e of entries) {
    if (!ENTRY_NAME.test(e.name) || e.name === '.' || e.name === '..') throw new AppError('INVALID_ARGUMENT', `invalid zip entry name: ${JSON.stringify(e.name)} (allowed: [A-Za-z0-9._-])`);
    if (seen.has(e.name)) throw new AppError('INVALID_ARGUMENT', `duplicate zip entry name: ${e.name}`);
    seen.add(e.name);
    if ((e.path === undefined) === (e.content === undefined)) throw new AppError('INVALID_ARGUMENT', `zip entry ${e.name} needs exactly one of path and content`);
  }
  for (const e of entries) {
    if (e.path === undefined) continue;
    let st;
    try {
      st = await stat(e.path);
    } catch (err) {
      throw new AppError('NOT_FOUND', `zip entry ${e.name}: no such file ${e.path}`, { cause: err });
    }
    if (!st.isFile()) throw new AppError('INVALID_ARGUMENT', `zip entry ${e.name}: ${e.path} is not a regular file`);
  }
  const { signal } = opts;
  if (signal?.aborted) throw new AppError('CANCELLED', `writing ${outPath} cancelled`, { cause: signal.reason });

  const dir = dirname(resolve(outPath));
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(outPath)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const archive = newZipArchive({ store: true, forceLocalTime: false });
  const hash = createHash('sha256');
  let bytes = 0;
  const tee = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      opts.onProgress?.(bytes);
      cb(null, chunk);
    },
  });
  // archiver reports unreadable files as 'warning' and skips them: an archive missing a file is an error here.
  archive.on('warning', (err) => archive.destroy(err));
  try {
    // One entry at a time ('entry' fires when it is written): archive order is input order and
    // at most one source file is open. (archive.file() would reorder entries behind its stat queue.)
    const done = pipeline(archive, tee, createWriteStream(tmp, { mode: 0o644 }), signal ? { signal } : {});
    const feed = (async () => {
      for (const e of entries) {
        const written = once(archive, 'entry');
        const data = { name: e.name, date: ZIP_ENTRY_DATE, mode: ZIP_ENTRY_MODE };
        if (e.path !== undefined) archive.append(createReadStream(e.path), data);
        else archive.append(typeof e.content === 'string' ? Buffer.from(e.content, 'utf8') : (e.content ?? Buffer.alloc(0)), data);
        await written;
      }
      await archive.finalize();
    })();
    feed.catch(() => undefined); // a failed pipeline also fails the feed; `done` reports it
    await Promise.all([done, feed]);
    const fh = await open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, outPath);
  } catch (err) {
    archive.abort();
    await rm(tmp, { force: true });
    if (signal?.aborted) throw new AppError('CANCELLED', `writing ${outPath} cancelled`, { cause: signal.reason ?? err });
    if (isAppError(err)) throw err;
    throw new AppError('INTERNAL', `cannot write ${outPath}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  await syncDir(dir);
  return { bytes, sha256: hash.digest('hex') };
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
