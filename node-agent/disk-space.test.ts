import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, isNoSpace } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { DiskSpace } from './disk-space.js';

describe('DiskSpace', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-disk-space-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses work that does not fit above the reserve, with a retryable NO_SPACE, and stays out of service', async () => {
    let changes = 0;
    const disk = new DiskSpace(dir, 1024, createLogger('test', 'silent'), () => changes++);
    await disk.admit(1024, 'small');
    expect(disk.full).toBeUndefined();
    const free = await disk.freeBytes();
    const err = await disk.admit(free * 2, 'huge').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'NO_SPACE', retryable: true });
    expect(disk.full?.needBytes).toBe(free * 2 + 1024);
    expect(changes).toBe(1);
    await disk.recheck(); // still not room for what was refused
    expect(disk.full).toBeDefined();
    await expect(disk.admit(0, 'anything')).rejects.toMatchObject({ code: 'NO_SPACE' });
  });

  it('classifies ENOSPC and ffmpeg\'s "No space left on device" as a full disk, not another process\'s NO_SPACE', () => {
    const disk = new DiskSpace(dir, 0, createLogger('test', 'silent'));
    expect(isNoSpace(new AppError('NO_SPACE', 'uploader staging is full'))).toBe(false);
    expect(disk.classify(new Error('boom'), 'x')).toBeInstanceOf(Error);
    expect(disk.full).toBeUndefined();
    expect(isNoSpace(new AppError('TRANSCODE_FAILED', 'ffmpeg exited with code 1: av_interleaved_write_frame(): No space left on device'))).toBe(true);
    expect(disk.classify(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), 'writing')).toMatchObject({ code: 'NO_SPACE' });
    expect(disk.full).toBeDefined();
  });
});
