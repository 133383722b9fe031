import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../common/errors.js';
import { readKeyframes } from './keyframes.js';
import { countFrames, probeMedia, refusedPictureSize, streamDurations } from './probe.js';
import { makeClip, makeTempDir, writeForgedMatroska } from '../test/support/media-fixtures.js';

describe('probe (real ffprobe)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let clip: string;
  let bclip: string;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    [clip, bclip] = await Promise.all([makeClip(dir, 'av', { seconds: 4, audio: true, gop: 30 }), makeClip(dir, 'bframes', { seconds: 3, gop: 25, bframes: 3, rate: '25', ext: 'mkv' })]);
  });
  afterAll(async () => cleanup());

  it('probes a generated clip: frames, fps, size, audio', async () => {
    const m = await probeMedia(clip);
    expect(m.video).toEqual({ codec: 'h264', width: 320, height: 240, fps: 30, frames: 120, pixFmt: 'yuv420p' });
    expect(m.durationSec).toBeCloseTo(4, 2);
    expect(m.streamCount).toBe(2);
    expect(m.formatName).toContain('mp4');
    expect(m.bytes).toBeGreaterThan(1000);
    expect(m.audio).toMatchObject({ codec: 'aac', channels: 2, sampleRate: 48000 });
    expect(m.audio!.durationSec).toBeGreaterThan(3.9);
  });

  it('probes a Matroska clip with B-frames (duration from the DURATION tag)', async () => {
    const m = await probeMedia(bclip);
    expect(m.video.frames).toBe(75);
    expect(m.video.fps).toBe(25);
    expect(m.durationSec).toBeCloseTo(3, 2);
    expect(m.audio).toBeUndefined();
  });

  it('counts frames and stream durations', async () => {
    expect(await countFrames(clip)).toEqual({ frames: 120, durationSec: 4 });
    const d = await streamDurations(clip);
    expect(d.videoSec).toBeCloseTo(4, 3);
    expect(d.audioSec).toBeGreaterThan(3.9);
    expect((await streamDurations(bclip)).audioSec).toBeUndefined();
  });

  it('reads keyframe times without decoding', async () => {
    const k = await readKeyframes(clip);
    expect(k.keyframes).toEqual([0, 1, 2, 3]);
    expect(k.frames).toBe(120);
    expect(k.durationSec).toBeCloseTo(4, 3);
    const b = await readKeyframes(bclip);
    expect(b.keyframes).toEqual([0, 1, 2]);
    expect(b.frames).toBe(75);
    expect(b.durationSec).toBeCloseTo(3, 2);
  });

  const expectCode = async (p: Promise<unknown>, code: string): Promise<AppError> => {
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe(code);
    return err as AppError;
  };

  it('rejects a zero-byte file with INPUT_EMPTY', async () => {
    const p = join(dir, 'empty.mp4');
    await writeFile(p, '');
    await expectCode(probeMedia(p), 'INPUT_EMPTY');
    await expectCode(readKeyframes(p), 'INPUT_EMPTY');
  });

  it('rejects a missing file with INPUT_NOT_FOUND', async () => {
    await expectCode(probeMedia(join(dir, 'nope.mp4')), 'INPUT_NOT_FOUND');
  });

  it('rejects random bytes with INPUT_NOT_VIDEO and a readable message without our path', async () => {
    const p = join(dir, 'random-bytes.bin');
    await writeFile(p, randomBytes(64 * 1024));
    const err = await expectCode(probeMedia(p), 'INPUT_NOT_VIDEO');
    expect(err.message).toMatch(/not a readable video/);
    expect(err.message).not.toContain(dir);
  });

  it('rejects audio-only files and still images with INPUT_NOT_VIDEO', async () => {
    const audio = join(dir, 'tone.m4a');
    const png = join(dir, 'still.png');
    execFileSync('ffmpeg', ['-nostdin', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=duration=1', '-c:a', 'aac', audio]);
    execFileSync('ffmpeg', ['-nostdin', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:duration=0.1', '-frames:v', '1', png]);
    const e1 = await expectCode(probeMedia(audio), 'INPUT_NOT_VIDEO');
    expect(e1.message).toMatch(/no video stream/);
    await expectCode(probeMedia(png), 'INPUT_NOT_VIDEO');
    expect(await streamDurations(audio)).toMatchObject({ videoSec: 0 });
  });

  it('reads the picture size a forged header claims, even when the decoder refuses it', async () => {
    // Hand-built Matroska (ffmpeg cannot write these): libavcodec zeroes sizes it refuses.
    const huge = await writeForgedMatroska(join(dir, 'forged-100k.mkv'), { width: 100000, height: 100000 });
    const big = await writeForgedMatroska(join(dir, 'forged-16k.mkv'), { width: 16000, height: 16000 });
    const ok = await writeForgedMatroska(join(dir, 'forged-small.mkv'), { width: 640, height: 360 });
    const m = await probeMedia(huge);
    expect(m.formatName).toBe('matroska,webm');
    expect(m.video).toMatchObject({ codec: 'vp9', width: 100000, height: 100000, frames: 25 });
    // 16000×16000 is within what libavcodec can address: only -max_pixels (default 7680×4320) stops the decoder.
    expect((await probeMedia(big)).video).toMatchObject({ width: 16000, height: 16000 });
    expect((await probeMedia(big, { maxPixels: 16000 * 16000 })).video).toMatchObject({ width: 16000, height: 16000 });
    expect((await probeMedia(ok)).video).toMatchObject({ width: 640, height: 360, frames: 25 });
  });

  it('parses refused picture sizes from ffprobe stderr', () => {
    expect(refusedPictureSize('[vp9 @ 0x1] [IMGUTILS @ 0x2] Picture size 100000x100000 is invalid\n')).toEqual({ width: 100000, height: 100000 });
    expect(refusedPictureSize('Picture size 16000x16000 exceeds specified max pixel count 33177600, see the documentation\nPicture size 9000x10 is invalid')).toEqual({ width: 16000, height: 16000 });
    expect(refusedPictureSize('Invalid frame marker')).toBeUndefined();
  });

  it('opens a file only with the demuxer it is told to use', async () => {
    const err = await expectCode(probeMedia(clip, { format: 'matroska' }), 'INPUT_NOT_VIDEO');
    expect(err.message).not.toContain(dir);
    expect((await probeMedia(clip, { format: 'mov' })).video.frames).toBe(120);
  });

  it('honours abort', async () => {
    const err = await probeMedia(clip, { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(isAppError(err, 'CANCELLED')).toBe(true);
  });
});
