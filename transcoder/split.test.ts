import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../common/errors.js';
import { readKeyframes, readPacketSummary } from './keyframes.js';
import { countFrames, streamDurations } from './probe.js';
import { audioAlignFilter, cutFramesForTimes, extractAudio, segmentFrameCounts, segmentSpans, splitFrameCuts, splitVideo } from './split.js';
import { inspectFile, makeClip, makeTempDir } from '../test/support/media-fixtures.js';

const run = promisify(execFile);

describe('cutFramesForTimes', () => {
  const keys = [
    { timeSec: 0, index: 0 },
    { timeSec: 1.001, index: 30 },
    { timeSec: 2.002, index: 60 },
  ];
  it('maps keyframe times to decode-order packet indices', () => {
    expect(cutFramesForTimes(keys, [1.001, 2.002], 0.01)).toEqual([30, 60]);
    expect(cutFramesForTimes(keys, [1.0010004], 0.01)).toEqual([30]);
  });
  it('rejects cuts off keyframes, at 0, or out of order', () => {
    for (const cuts of [[1.5], [0], [2.002, 1.001], [1.001, 1.001], [-1]]) {
      expect(() => cutFramesForTimes(keys, cuts, 0.01)).toThrow(AppError);
    }
  });
});

describe('audioAlignFilter', () => {
  it('delays late audio and trims early audio', () => {
    expect(audioAlignFilter(0)).toBe('asetpts=PTS-STARTPTS');
    expect(audioAlignFilter(0.0666)).toBe('asetpts=PTS-STARTPTS,adelay=delays=67:all=1');
    expect(audioAlignFilter(-0.021)).toBe('asetpts=PTS-STARTPTS,atrim=start=0.021000,asetpts=PTS-STARTPTS');
  });
});

describe('splitVideo (real ffmpeg)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let plain: string;
  let bframes: string;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    [plain, bframes] = await Promise.all([
      makeClip(dir, 'gop30', { seconds: 5, gop: 30, audio: true }),
      // NTSC rate + B-frames + audio: B-frame delay, an edit list and non-integer timestamps.
      makeClip(dir, 'bframes', { seconds: 5, gop: 30, bframes: 3, rate: '30000/1001', audio: true }),
    ]);
  });
  afterAll(async () => cleanup());

  async function checkSplit(input: string, name: string, cuts: number[], total: number): Promise<string[]> {
    const out = join(dir, name);
    await mkdir(out);
    const files = await splitVideo(input, out, cuts);
    expect(files).toEqual(cuts.concat(0).map((_, i) => join(out, `seg-${String(i).padStart(4, '0')}.mkv`)));
    const frames = await Promise.all(files.map((f) => countFrames(f)));
    expect(frames.reduce((a, b) => a + b.frames, 0)).toBe(total);
    // The counts the coordinator derives from its packet scan are what the cut really holds.
    const scan = await readPacketSummary(input);
    expect(segmentFrameCounts(scan, cuts)).toEqual(frames.map((f) => f.frames));
    // ...and so are the lengths the agent takes from the same scan instead of an ffprobe per file.
    const spans = segmentSpans(scan, cuts);
    expect(spans.map((x) => x.frames)).toEqual(frames.map((f) => f.frames));
    spans.forEach((x, i) => expect(Math.abs(x.durationSec - frames[i]!.durationSec), `file ${i} length`).toBeLessThanOrEqual(0.034));
    const facts = await Promise.all(files.map((f) => inspectFile(f)));
    facts.forEach((x, i) => {
      expect(x.firstIsKey).toBe(true); // each segment starts with a keyframe
      expect(x.firstPts).toBe(0); // timestamps restart at 0 in every segment
      expect(x.streamTypes).toEqual(['video']); // video only
      // Every packet decodes: nothing in a segment references a frame of the previous one.
      expect(x.decodedFrames).toBe(frames[i]!.frames);
    });
    return files;
  }

  it('cuts an x264 -g 30 clip on keyframes with the frame sum preserved', async () => {
    const kf = await readKeyframes(plain);
    expect(kf.keyframes).toEqual([0, 1, 2, 3, 4]);
    const files = await checkSplit(plain, 'plain', [1, 3], 150);
    expect(await Promise.all(files.map(async (f) => (await countFrames(f)).frames))).toEqual([30, 60, 60]);
  });

  it('cuts a clip with B-frames at 29.97 fps exactly', async () => {
    const kf = await readKeyframes(bframes);
    expect(kf.frames).toBe(150);
    expect(kf.keyframes.length).toBe(5);
    const files = await checkSplit(bframes, 'bframes', [kf.keyframes[1]!, kf.keyframes[2]!, kf.keyframes[4]!], 150);
    expect(await Promise.all(files.map(async (f) => (await countFrames(f)).frames))).toEqual([30, 30, 60, 30]);
  });

  it('hands on each segment as soon as it is made, in order and complete', async () => {
    const out = join(dir, 'streamed');
    await mkdir(out);
    const seen: { i: number; frames: number }[] = [];
    const pending: Promise<void>[] = [];
    const pk = await readPacketSummary(plain);
    // Frame cuts whose middle segment joins two pieces (the boundary GOPs go to both neighbours).
    const files = await splitFrameCuts(
      plain,
      out,
      [
        { fromPacket: 0, toPacket: 60 },
        { fromPacket: 30, toPacket: 120 },
        { fromPacket: 90, toPacket: 150 },
      ],
      pk.frames,
      {
        onSegment: (i, f) => {
          pending.push(
            countFrames(f).then((c) => {
              seen.push({ i, frames: c.frames });
            }),
          );
        },
      },
    );
    await Promise.all(pending);
    expect(seen.map((x) => x.i)).toEqual([0, 1, 2]);
    expect(seen.map((x) => x.frames)).toEqual([60, 90, 60]);
    expect(files).toHaveLength(3);
  });

  it('a segment that fails to build fails the call with its error, not the process', async () => {
    // The build fails while the split is still cutting: before the fix that was an unhandled
    // rejection, which ended the coordinator that ran it (a cancelled job on lost leadership).
    const out = join(dir, 'failing');
    await mkdir(out);
    const pk = await readPacketSummary(plain);
    const cuts = Array.from({ length: 5 }, (_, i) => ({ fromPacket: i * 30, toPacket: (i + 1) * 30 }));
    const err = await splitFrameCuts(plain, out, cuts, pk.frames, {
      onSegment: (i) => {
        if (i === 0) throw new AppError('CANCELLED', 'the job was cancelled');
      },
    }).catch((e: unknown) => e);
    expect(isAppError(err, 'CANCELLED')).toBe(true);
  });

  it('writes one segment when there is no cut', async () => {
    await mkdir(join(dir, 'whole'));
    const files = await splitVideo(bframes, join(dir, 'whole'), []);
    expect(files).toEqual([join(dir, 'whole', 'seg-0000.mkv')]);
    expect(await countFrames(files[0]!)).toMatchObject({ frames: 150 });
    expect((await inspectFile(files[0]!)).firstPts).toBe(0);
  });

  it('rejects a cut that is not on a keyframe', async () => {
    await mkdir(join(dir, 'bad'));
    const err = await splitVideo(plain, join(dir, 'bad'), [1.5]).catch((e: unknown) => e);
    expect(isAppError(err, 'INVALID_ARGUMENT')).toBe(true);
  });

  it('extracts the audio once to AAC in .m4a', async () => {
    const out = join(dir, 'audio.m4a');
    let last = 0;
    await extractAudio(bframes, out, {
      bitrateKbps: 96,
      onProgress: (s) => {
        last = s;
      },
    });
    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,codec_name', '-of', 'csv=p=0', out]);
    expect(stdout.trim()).toBe('aac,audio');
    const d = await streamDurations(out);
    expect(d.videoSec).toBe(0);
    expect(d.audioSec).toBeGreaterThan(4.9);
    expect(d.audioSec).toBeLessThan(5.1);
    expect(last).toBeGreaterThan(4);
    const err = await extractAudio(bframes, out, { bitrateKbps: 5 }).catch((e: unknown) => e);
    expect(isAppError(err, 'INVALID_ARGUMENT')).toBe(true);
  });
});
