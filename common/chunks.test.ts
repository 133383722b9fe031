import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from './errors.js';
import { fileDigest, paced, partialSize, receiveChunks, type IncomingChunk } from './chunks.js';

async function* gen(chunks: IncomingChunk[]): AsyncGenerator<IncomingChunk> {
  for (const c of chunks) yield c;
}

describe('receiveChunks', () => {
  const data = Buffer.from('0123456789abcdef');
  const sha = createHash('sha256').update(data).digest('hex');

  it('resumes a broken transfer from the bytes already held and verifies the digest', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const path = join(dir, 'seg.bin');
    const first = await receiveChunks(gen([{ offset: 0, data: data.subarray(0, 6) }]), { path, maxBytes: 100, totalSize: 16, sha256: sha });
    expect(first.complete).toBe(false);
    expect(await partialSize(path)).toBe(6);
    // A resend of bytes we hold (identical) is acknowledged; then the rest follows.
    const second = await receiveChunks(
      gen([
        { offset: 4, data: data.subarray(4, 6) },
        { offset: 6, data: data.subarray(6) },
      ]),
      { path, maxBytes: 100, totalSize: 16, sha256: sha },
    );
    expect(second).toEqual({ bytes: 16, sha256: sha, crc32: '', complete: true });
    expect(await readFile(path)).toEqual(data);
  });

  it('verifies a CRC-32 instead when the sender gives one, across a resume too', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const path = join(dir, 'seg.bin');
    await writeFile(join(dir, 'src'), data);
    const digest = await fileDigest(join(dir, 'src'), 'crc32');
    expect(digest).toEqual({ hex: crc32(data).toString(16).padStart(8, '0'), bytes: 16 });
    const crc = digest.hex.toUpperCase(); // the hex digits' case does not matter
    const first = await receiveChunks(gen([{ offset: 0, data: data.subarray(0, 5) }]), { path, maxBytes: 100, totalSize: 16, crc32: crc });
    expect(first.complete).toBe(false);
    const second = await receiveChunks(gen([{ offset: 5, data: data.subarray(5) }]), { path, maxBytes: 100, totalSize: 16, crc32: crc });
    expect(second).toEqual({ bytes: 16, sha256: '', crc32: crc.toLowerCase(), complete: true });
    expect(await readFile(path)).toEqual(data);
    // One flipped bit anywhere fails the check, and the bytes are thrown away.
    const bad = Buffer.from(data);
    bad[9]! ^= 0x01;
    await expect(receiveChunks(gen([{ offset: 0, data: bad }]), { path: join(dir, 'bad'), maxBytes: 100, totalSize: 16, crc32: crc })).rejects.toMatchObject({
      code: 'CHECKSUM_MISMATCH',
      message: expect.stringContaining('crc32 mismatch'),
    });
    expect(await partialSize(join(dir, 'bad'))).toBe(0);
  });

  it('rejects gaps and overlaps with the expected offset, and enforces the size limit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const gap = receiveChunks(
      gen([
        { offset: 0, data: data.subarray(0, 4) },
        { offset: 8, data: data.subarray(8) },
      ]),
      { path: join(dir, 'a'), maxBytes: 100 },
    );
    await expect(gap).rejects.toMatchObject({ code: 'BAD_OFFSET', message: expect.stringContaining('expected offset 4') });
    const over = receiveChunks(
      gen([
        { offset: 0, data: data.subarray(0, 4) },
        { offset: 2, data: Buffer.from('zz') },
      ]),
      { path: join(dir, 'b'), maxBytes: 100 },
    );
    await expect(over).rejects.toBeInstanceOf(AppError);
    const big = receiveChunks(gen([{ offset: 0, data }]), { path: join(dir, 'c'), maxBytes: 8 });
    await expect(big).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
  });

  it('writes a many-chunk transfer byte for byte in order (the file, not only the stream hash)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const path = join(dir, 'big.bin');
    const src = Buffer.from(Array.from({ length: 64 * 65536 }, (_, i) => (i * 7 + (i >> 16)) & 0xff));
    async function* many(): AsyncGenerator<IncomingChunk> {
      for (let off = 0; off < src.length; off += 65536) yield { offset: off, data: Buffer.from(src.subarray(off, off + 65536)) };
    }
    const sha256 = createHash('sha256').update(src).digest('hex');
    const res = await receiveChunks(many(), { path, maxBytes: src.length, totalSize: src.length, sha256 });
    expect(res.complete).toBe(true);
    expect((await readFile(path)).equals(src)).toBe(true);
    // Without fsync (the node agent's segments): the same bytes, the same verification.
    const loose = join(dir, 'loose.bin');
    expect(await receiveChunks(many(), { path: loose, maxBytes: src.length, totalSize: src.length, sha256, durable: false })).toMatchObject({ complete: true, sha256 });
    expect((await readFile(loose)).equals(src)).toBe(true);
  });

  it('throws away bytes that fail the checksum', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const path = join(dir, 'x');
    await expect(receiveChunks(gen([{ offset: 0, data }]), { path, maxBytes: 100, totalSize: 16, sha256: 'f'.repeat(64) })).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    expect(await partialSize(path)).toBe(0);
  });
});

describe('paced', () => {
  async function* slow(n: number, everyMs: number, size: number): AsyncGenerator<IncomingChunk> {
    for (let i = 0; i < n; i++) {
      await new Promise((r) => setTimeout(r, everyMs));
      yield { offset: i * size, data: Buffer.alloc(size) };
    }
  }
  const drain = async (it: AsyncIterable<IncomingChunk>): Promise<number> => {
    let bytes = 0;
    for await (const c of it) bytes += c.data.length;
    return bytes;
  };

  it('passes a stream that keeps its pace', async () => {
    expect(await drain(paced(slow(5, 10, 1000), { deadlineMs: 5_000, minBytesPerSec: 1_000, graceMs: 20 }))).toBe(5000);
  });

  it('cuts a stream slower than the minimum rate after the grace period (slow loris)', async () => {
    await expect(drain(paced(slow(100, 50, 10), { deadlineMs: 60_000, minBytesPerSec: 10_000, graceMs: 300 }))).rejects.toMatchObject({
      code: 'DEADLINE_EXCEEDED',
      message: expect.stringContaining('too slow'),
    });
  });

  it('cuts a stream that stalls, even with no chunk arriving, and one past its deadline', async () => {
    async function* stall(): AsyncGenerator<IncomingChunk> {
      yield { offset: 0, data: Buffer.alloc(10) };
      await new Promise(() => undefined); // never sends again
    }
    const t0 = Date.now();
    await expect(drain(paced(stall(), { deadlineMs: 400, minBytesPerSec: 0, graceMs: 0 }))).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED', message: expect.stringContaining('deadline') });
    expect(Date.now() - t0).toBeLessThan(3_000);
  });
});
