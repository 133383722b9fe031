import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startBareSink } from './bare-sink.js';

// The transfer benchmark's two references, in their own process as the benchmark starts them.
describe('bare sink (transfer benchmark references)', () => {
  it('counts a stream, and writes one to a file it deletes afterwards', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bare-sink-'));
    const file = join(dir, 'blob.bin');
    const size = 3 * 1024 * 1024 + 5;
    await writeFile(file, randomBytes(size));
    const work = join(dir, 'work');
    await mkdir(work);
    const sink = await startBareSink(work);
    try {
      expect(await sink.send('put', file, size)).toMatchObject({ receivedBytes: size, complete: true });
      expect(await sink.send('putToDisk', file, size)).toMatchObject({ receivedBytes: size, complete: true });
      expect(await readdir(work)).toEqual([]);
    } finally {
      sink.stop();
    }
  });
});
