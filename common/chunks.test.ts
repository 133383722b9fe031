import { createHash } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from './errors.js';
import { partialSize, receiveChunks, type IncomingChunk } from './chunks.js';

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
    const second = await receiveChunks(gen([{ offset: 4, data: data.subarray(4, 6) }, { offset: 6, data: data.subarray(6) }]), { path, maxBytes: 100, totalSize: 16, sha256: sha });
    expect(second).toEqual({ bytes: 16, sha256: sha, complete: true });
    expect(await readFile(path)).toEqual(data);
  });

  it('rejects gaps and overlaps with the expected offset, and enforces the size limit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const gap = receiveChunks(gen([{ offset: 0, data: data.subarray(0, 4) }, { offset: 8, data: data.subarray(8) }]), { path: join(dir, 'a'), maxBytes: 100 });
    await expect(gap).rejects.toMatchObject({ code: 'BAD_OFFSET', message: expect.stringContaining('expected offset 4') });
    const over = receiveChunks(gen([{ offset: 0, data: data.subarray(0, 4) }, { offset: 2, data: Buffer.from('zz') }]), { path: join(dir, 'b'), maxBytes: 100 });
    await expect(over).rejects.toBeInstanceOf(AppError);
    const big = receiveChunks(gen([{ offset: 0, data }]), { path: join(dir, 'c'), maxBytes: 8 });
    await expect(big).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
  });

  it('throws away bytes that fail the checksum', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'chunks-'));
    const path = join(dir, 'x');
    await expect(receiveChunks(gen([{ offset: 0, data }]), { path, maxBytes: 100, totalSize: 16, sha256: 'f'.repeat(64) })).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    expect(await partialSize(path)).toBe(0);
  });
});
