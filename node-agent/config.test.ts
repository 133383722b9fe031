import { describe, expect, it } from 'vitest';
import { ffmpegThreads, loadConfig } from './config.js';

describe('node agent CPU settings', () => {
  it('defaults WORKER_SLOTS to CPU_CORES', () => {
    expect(loadConfig({ CPU_CORES: '3' }).WORKER_SLOTS).toBe(3);
    expect(loadConfig({ CPU_CORES: '3', WORKER_SLOTS: '1' }).WORKER_SLOTS).toBe(1);
  });

  it("gives each worker its share of the agent's cores when that is less than the machine has", () => {
    // Two agents on a 2-core machine, one worker each: one thread per encoder, not ffmpeg's 2-core sizing.
    expect(ffmpegThreads({ CPU_CORES: 1, WORKER_SLOTS: 1, FFMPEG_THREADS: 0 }, 2)).toBe(1);
    expect(ffmpegThreads({ CPU_CORES: 8, WORKER_SLOTS: 2, FFMPEG_THREADS: 0 }, 16)).toBe(4);
    expect(ffmpegThreads({ CPU_CORES: 1, WORKER_SLOTS: 4, FFMPEG_THREADS: 0 }, 2)).toBe(1);
    // The whole machine for one worker: ffmpeg decides.
    expect(ffmpegThreads({ CPU_CORES: 2, WORKER_SLOTS: 1, FFMPEG_THREADS: 0 }, 2)).toBeUndefined();
    // An explicit setting wins.
    expect(ffmpegThreads({ CPU_CORES: 1, WORKER_SLOTS: 1, FFMPEG_THREADS: 3 }, 2)).toBe(3);
  });
});
