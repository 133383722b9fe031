import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedFfmpegAnswer } from './ffmpeg-info-cache.js';

describe('cachedFfmpegAnswer', () => {
  let dir: string;
  const before = process.env.TESSERA_CACHE_DIR;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-ffcache-'));
    process.env.TESSERA_CACHE_DIR = dir;
  });
  afterAll(async () => {
    if (before === undefined) delete process.env.TESSERA_CACHE_DIR;
    else process.env.TESSERA_CACHE_DIR = before;
    await rm(dir, { recursive: true, force: true });
  });

  it('asks ffmpeg once per question; the next process reads the answer from disk', async () => {
    let asked = 0;
    const ask = (answer: string) => async () => {
      asked++;
      return answer;
    };
    expect(await cachedFfmpegAnswer('-encoders', ask('x264 list'))).toBe('x264 list');
    expect(await cachedFfmpegAnswer('-encoders', ask('other'))).toBe('x264 list');
    expect(asked).toBe(1);
    expect(await cachedFfmpegAnswer('-h encoder=libx265', ask('x265 help'))).toBe('x265 help');
    expect(asked).toBe(2);
    expect((await readdir(dir)).filter((f) => f.endsWith('.json'))).toHaveLength(2);
  });

  it('never keeps a failure, and asks again after a day', async () => {
    await expect(cachedFfmpegAnswer('-h encoder=libsvtav1', () => Promise.reject(new Error('ffmpeg failed')))).rejects.toThrow('ffmpeg failed');
    expect(await cachedFfmpegAnswer('-h encoder=libsvtav1', () => Promise.resolve('svt help'))).toBe('svt help');
    // Age the kept answer past a day: the next call asks ffmpeg again.
    for (const f of await readdir(dir)) {
      const kept = JSON.parse(await readFile(join(dir, f), 'utf8')) as { question: string; at: number };
      if (kept.question === '-h encoder=libsvtav1') await writeFile(join(dir, f), JSON.stringify({ ...kept, at: Date.now() - 25 * 3600_000 }));
    }
    expect(await cachedFfmpegAnswer('-h encoder=libsvtav1', () => Promise.resolve('newer help'))).toBe('newer help');
  });

  it('is off with TESSERA_FFMPEG_INFO_CACHE=0', async () => {
    process.env.TESSERA_FFMPEG_INFO_CACHE = '0';
    try {
      expect(await cachedFfmpegAnswer('-encoders', () => Promise.resolve('asked'))).toBe('asked');
    } finally {
      delete process.env.TESSERA_FFMPEG_INFO_CACHE;
    }
  });
});
