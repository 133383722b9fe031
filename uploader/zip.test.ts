import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import yauzl from 'yauzl';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../common/errors.js';
import { extractZip, readZipEntries, writeZip, type ZipEntry } from './zip.js';

let dir: string;
let video: string;
let videoBytes: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-zip-'));
  video = join(dir, 'in.mp4');
  videoBytes = randomBytes(1024 * 1024 + 17);
  await writeFile(video, videoBytes);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function entries(): ZipEntry[] {
  return [
    { name: '720p.mp4', path: video },
    { name: 'manifest.json', content: '{"tessera":{"version":"1"}}' },
    { name: 'empty.bin', content: Buffer.alloc(0) },
    { name: 'raw.bin', content: Buffer.from([0, 1, 2, 255]) },
  ];
}

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isAppError(err), String(err)).toBe(true);
  expect((err as { code: string }).code).toBe(code);
}

/** A STORE zip written by hand, so entry names archiver would refuse can be tried. */
function handMadeZip(files: { name: string; data: Buffer; mode?: number }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, 'utf8');
    const crc = crc32(f.data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0x0800, 6);
    lh.writeUInt16LE(0, 8);
    lh.writeUInt16LE(0, 10);
    lh.writeUInt16LE(0x21, 12);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(f.data.length, 18);
    lh.writeUInt32LE(f.data.length, 22);
    lh.writeUInt16LE(name.length, 26);
    lh.writeUInt16LE(0, 28);
    locals.push(lh, name, f.data);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(0x031e, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0x0800, 8);
    ch.writeUInt16LE(0, 10);
    ch.writeUInt16LE(0, 12);
    ch.writeUInt16LE(0x21, 14);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(f.data.length, 20);
    ch.writeUInt32LE(f.data.length, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(((f.mode ?? 0o100644) << 16) >>> 0, 38);
    ch.writeUInt32LE(offset, 42);
    centrals.push(ch, name);
    offset += 30 + name.length + f.data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(files.length, 8);
  eocd.writeUInt16LE(files.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/** Python's zipfile reads the archive (checking every CRC) and lists name, size, CRC-32 and method. */
const PY_LIST = 'import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nfor i in z.infolist(): print(i.filename, i.file_size, i.CRC, i.compress_type)';

describe('writeZip', () => {
  it('round-trips through yauzl, in STORE mode, with the sha256 of the written bytes', async () => {
    const out = join(dir, 'rt', 'job.zip');
    let progress = 0;
    const res = await writeZip(out, entries(), { onProgress: (b) => (progress = b) });
    const bytes = await readFile(out);
    expect(res.bytes).toBe(bytes.length);
    expect(res.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(res.md5Base64).toBe(createHash('md5').update(bytes).digest('base64'));
    expect(progress).toBe(bytes.length);

    const got = await readZipEntries(out);
    expect([...got.keys()]).toEqual(['720p.mp4', 'manifest.json', 'empty.bin', 'raw.bin']);
    expect(got.get('720p.mp4')!.equals(videoBytes)).toBe(true);
    expect(got.get('manifest.json')!.toString()).toBe('{"tessera":{"version":"1"}}');
    expect(got.get('empty.bin')!.length).toBe(0);
    expect([...got.get('raw.bin')!]).toEqual([0, 1, 2, 255]);

    const zip = await yauzl.openPromise(out, { lazyEntries: true });
    try {
      for await (const e of zip.eachEntry()) {
        expect(e.compressionMethod).toBe(0);
        expect(e.compressedSize).toBe(e.uncompressedSize);
        expect(e.getLastModDate({ timezone: 'UTC' }).toISOString()).toBe('2000-01-01T00:00:00.000Z');
      }
    } finally {
      zip.close();
    }
    // nothing but the archive is left in the folder (the temporary file was renamed)
    expect(await readdir(join(dir, 'rt'))).toEqual(['job.zip']);
  });

  it('is read by Info-ZIP and Python as well as yauzl, with each entry’s CRC-32', async () => {
    const out = join(dir, 'interop.zip');
    await writeZip(out, entries());
    // `unzip -t` checks every entry's CRC-32 against its bytes.
    expect(execFileSync('unzip', ['-t', out]).toString()).toMatch(/No errors detected/);
    const listed = execFileSync('python3', ['-c', PY_LIST, out]).toString().trim().split('\n');
    expect(listed).toEqual([
      `720p.mp4 ${videoBytes.length} ${crc32(videoBytes)} 0`,
      'manifest.json 27 ' + crc32('{"tessera":{"version":"1"}}') + ' 0',
      'empty.bin 0 0 0',
      `raw.bin 4 ${crc32(Buffer.from([0, 1, 2, 255]))} 0`,
    ]);
  });

  it('writes ZIP64 sizes and offsets past its threshold (4 GiB; lowered here), and every reader follows them', async () => {
    const out = join(dir, 'zip64.zip');
    const res = await writeZip(out, entries(), { zip64From: 0 });
    const bytes = await readFile(out);
    expect(res.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    // the ZIP64 end of central directory record and its locator are there
    expect(bytes.includes(Buffer.from([0x50, 0x4b, 0x06, 0x06]))).toBe(true);
    expect(bytes.includes(Buffer.from([0x50, 0x4b, 0x06, 0x07]))).toBe(true);
    const got = await readZipEntries(out);
    expect(got.get('720p.mp4')!.equals(videoBytes)).toBe(true);
    expect([...got.get('raw.bin')!]).toEqual([0, 1, 2, 255]);
    expect(execFileSync('unzip', ['-t', out]).toString()).toMatch(/No errors detected/);
    const listed = execFileSync('python3', ['-c', PY_LIST, out]).toString().trim().split('\n');
    expect(listed[0]).toBe(`720p.mp4 ${videoBytes.length} ${crc32(videoBytes)} 0`);
    expect(listed).toHaveLength(4);
  });

  it('makes a last entry from the digests of those before it, hashed as they were copied', async () => {
    const out = join(dir, 'lazy.zip');
    let seen: readonly { name: string; bytes: number; sha256: string }[] = [];
    const res = await writeZip(
      out,
      [
        { name: '720p.mp4', path: video },
        {
          name: 'manifest.json',
          content: async (written) => {
            seen = [...written];
            await new Promise((r) => setTimeout(r, 20)); // e.g. waiting for checks running beside
            return JSON.stringify(written);
          },
        },
      ],
      { entryDigests: true },
    );
    const videoSha = createHash('sha256').update(videoBytes).digest('hex');
    expect(seen).toEqual([{ name: '720p.mp4', bytes: videoBytes.length, sha256: videoSha }]);
    expect(res.entries.map((e) => e.name)).toEqual(['720p.mp4', 'manifest.json']);
    const got = await readZipEntries(out);
    expect(JSON.parse(got.get('manifest.json')!.toString())).toEqual([{ name: '720p.mp4', bytes: videoBytes.length, sha256: videoSha }]);
    expect(res.entries[1]!.sha256).toBe(createHash('sha256').update(got.get('manifest.json')!).digest('hex'));
    // A failing maker fails the archive and leaves nothing behind.
    const failed = join(dir, 'lazy-failed', 'x.zip');
    await rejects(
      writeZip(failed, [
        { name: 'a.bin', path: video },
        { name: 'm.json', content: () => Promise.reject(new AppError('INTERNAL', 'a rendition lacks frames')) },
      ]),
      'INTERNAL',
    );
    expect(await readdir(join(dir, 'lazy-failed'))).toEqual([]);
  });

  it('gives the same bytes for the same input, whatever the files’ dates', async () => {
    const a = await writeZip(join(dir, 'a.zip'), entries());
    await utimes(video, new Date('2011-11-11T11:11:11Z'), new Date('2011-11-11T11:11:11Z'));
    const b = await writeZip(join(dir, 'b.zip'), entries());
    expect(b).toEqual(a);
    expect((await readFile(join(dir, 'a.zip'))).equals(await readFile(join(dir, 'b.zip')))).toBe(true);
  });

  it('rejects unsafe or ambiguous entries before writing anything', async () => {
    const out = join(dir, 'bad.zip');
    for (const name of ['../x', 'a/b', 'a\\b', '/abs', '', '.', '..', 'é.mp4', 'a b', 'C:x', 'x'.repeat(256)]) {
      await rejects(writeZip(out, [{ name, content: 'x' }]), 'INVALID_ARGUMENT');
    }
    await rejects(
      writeZip(out, [
        { name: 'a', content: 'x' },
        { name: 'a', content: 'y' },
      ]),
      'INVALID_ARGUMENT',
    );
    await rejects(writeZip(out, [{ name: 'a', content: 'x', path: video }]), 'INVALID_ARGUMENT');
    await rejects(writeZip(out, [{ name: 'a' }]), 'INVALID_ARGUMENT');
    await rejects(writeZip(out, [{ name: 'a', path: join(dir, 'missing.mp4') }]), 'NOT_FOUND');
    await rejects(writeZip(out, [{ name: 'a', path: dir }]), 'INVALID_ARGUMENT');
    expect(existsSync(out)).toBe(false);
  });

  it('stops on cancel and leaves neither the archive nor a temporary file', async () => {
    const sub = join(dir, 'cancel');
    const ac = new AbortController();
    ac.abort();
    await rejects(writeZip(join(sub, 'x.zip'), entries(), { signal: ac.signal }), 'CANCELLED');
    const ac2 = new AbortController();
    const big = join(dir, 'big.bin');
    await writeFile(big, Buffer.alloc(8 * 1024 * 1024, 7));
    await rejects(writeZip(join(sub, 'y.zip'), [{ name: 'big.bin', path: big }], { signal: ac2.signal, onProgress: (b) => b > 1024 * 1024 && ac2.abort() }), 'CANCELLED');
    expect(existsSync(sub) ? await readdir(sub) : []).toEqual([]);
  });
});

describe('extractZip', () => {
  it('unpacks our archives and returns the written paths', async () => {
    const zipPath = join(dir, 'x.zip');
    await writeZip(zipPath, entries());
    const dest = join(dir, 'out');
    const files = await extractZip(zipPath, dest);
    expect(files).toEqual(['720p.mp4', 'manifest.json', 'empty.bin', 'raw.bin'].map((n) => join(dest, n)));
    expect((await readFile(join(dest, '720p.mp4'))).equals(videoBytes)).toBe(true);
    // a second download into the same folder overwrites
    await extractZip(zipPath, dest);
    expect((await readFile(join(dest, 'manifest.json'))).toString()).toBe('{"tessera":{"version":"1"}}');
  });

  it('allows sub-folders written with forward slashes', async () => {
    const zipPath = join(dir, 'sub.zip');
    await writeFile(zipPath, handMadeZip([{ name: 'a/b/c.txt', data: Buffer.from('deep') }]));
    const dest = join(dir, 'out-sub');
    expect(await extractZip(zipPath, dest)).toEqual([join(dest, 'a', 'b', 'c.txt')]);
    expect(await readFile(join(dest, 'a', 'b', 'c.txt'), 'utf8')).toBe('deep');
  });

  it('rejects path traversal, absolute paths, backslashes and symlinks without writing anything', async () => {
    const cases = ['../evil.txt', 'ok/../../evil.txt', '/tmp/evil.txt', 'C:/evil.txt', 'a\\..\\evil.txt', 'a//b', './x', 'x\u0001'];
    for (const [i, bad] of cases.entries()) {
      const zipPath = join(dir, `evil${i}.zip`);
      // a harmless first entry: it must not be written either
      await writeFile(
        zipPath,
        handMadeZip([
          { name: 'first.txt', data: Buffer.from('1') },
          { name: bad, data: Buffer.from('pwned') },
        ]),
      );
      const dest = join(dir, `evil-out${i}`, 'inner');
      await rejects(extractZip(zipPath, dest), 'INVALID_ARGUMENT');
      expect(await readdir(dest)).toEqual([]);
      await rejects(readZipEntries(zipPath), 'INVALID_ARGUMENT');
    }
    expect(existsSync(join(dir, 'evil.txt'))).toBe(false);

    const link = join(dir, 'link.zip');
    await writeFile(link, handMadeZip([{ name: 'l', data: Buffer.from('/etc/passwd'), mode: 0o120777 }]));
    await rejects(extractZip(link, join(dir, 'link-out')), 'INVALID_ARGUMENT');

    const dup = join(dir, 'dup.zip');
    await writeFile(
      dup,
      handMadeZip([
        { name: 'a', data: Buffer.from('1') },
        { name: 'a', data: Buffer.from('2') },
      ]),
    );
    await rejects(extractZip(dup, join(dir, 'dup-out')), 'INVALID_ARGUMENT');
  });

  it('reports a missing or corrupt archive', async () => {
    await rejects(extractZip(join(dir, 'nope.zip'), join(dir, 'nope')), 'NOT_FOUND');
    const junk = join(dir, 'junk.zip');
    await writeFile(junk, randomBytes(1000));
    await rejects(readZipEntries(junk), 'INVALID_ARGUMENT');
  });
});
