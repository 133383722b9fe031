import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSample } from '../deploy/sample.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { ffmpegSegmentMedia, type SubSegmentFile } from './segment-media.js';

describe('the agent’s ffmpeg media layer (real ffmpeg)', () => {
  let dir: string;
  let segment: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'segment-media-'));
    const mp4 = join(dir, 'clip.mp4');
    // 6 s at 30 fps with a keyframe every second; segments are Matroska, as the coordinator cuts them.
    await makeSample(mp4, { seconds: 6, width: 320, height: 240, fps: 30, audio: false });
    segment = join(dir, 'segment.mkv');
    await runFfmpeg(['-hide_banner', '-nostdin', '-y', '-loglevel', 'error', '-i', mp4, '-map', '0:v:0', '-c', 'copy', '-f', 'matroska', segment], { noProgressMs: 30_000 });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hands over each chunk once, counted, and returns the same files', async () => {
    const media = ffmpegSegmentMedia();
    const signal = new AbortController().signal;
    const facts = { frames: 180, fps: 30 };
    const kf = await media.keyframes(segment, facts, signal);
    expect(kf.keyframes).toEqual([0, 1, 2, 3, 4, 5]);
    const handed: [number, SubSegmentFile][] = [];
    await mkdir(join(dir, 'subs'));
    const files = await media.split(segment, join(dir, 'subs'), [2, 4], facts, signal, (i, f) => handed.push([i, f]));
    expect(files.map((f) => f.frames)).toEqual([60, 60, 60]);
    expect(handed.map(([i]) => i).sort()).toEqual([0, 1, 2]);
    for (const [i, f] of handed) expect(f).toEqual(files[i]);
  });

  it('plans and cuts a segment without ffprobe: its packets come from the Matroska headers', async () => {
    // Only ffmpeg on the PATH: an ffprobe scan or count would fail.
    const bin = join(dir, 'bin-without-ffprobe');
    await mkdir(bin);
    await symlink(execFileSync('sh', ['-c', 'command -v ffmpeg']).toString().trim(), join(bin, 'ffmpeg'));
    const path = process.env['PATH'];
    process.env['PATH'] = bin;
    try {
      const signal = new AbortController().signal;
      const facts = { frames: 180, fps: 30 };
      const kf = await ffmpegSegmentMedia().keyframes(segment, facts, signal);
      expect(kf).toEqual({ keyframes: [0, 1, 2, 3, 4, 5], frames: 180, durationSec: 6 });
      expect((await ffmpegSegmentMedia().packets!(segment, signal)).presentedSec).toHaveLength(180);
      // The split that follows counts its chunks from what the headers said.
      const media = ffmpegSegmentMedia();
      await media.keyframes(segment, facts, signal);
      await mkdir(join(dir, 'subs-headers'));
      const files = await media.split(segment, join(dir, 'subs-headers'), [1, 5], facts, signal);
      expect(files.map((f) => [f.frames, f.durationSec])).toEqual([
        [30, 1],
        [120, 4],
        [30, 1],
      ]);
    } finally {
      process.env['PATH'] = path;
    }
  });
});
