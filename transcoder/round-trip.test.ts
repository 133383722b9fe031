import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { availableEncoders, parseEncoderList } from './encoders.js';
import { decoderPixelCap } from './ffmpeg-limits.js';
import { readKeyframes } from './keyframes.js';
import { resolveLadder } from './ladder.js';
import { planCuts } from './plan-cuts.js';
import { countFrames, probeMedia } from './probe.js';
import { runFfmpeg } from './run-ffmpeg.js';
import { extractAudio, splitVideo } from './split.js';
import { transcodeToRenditions } from './transcode.js';
import { inspectFile, makeClip, makeTempDir } from '../test/support/media-fixtures.js';

const run = promisify(execFile);

/** Concat-demuxer merge by stream copy, as the uploader does it (list entries relative, safe=1). */
async function concat(listDir: string, parts: string[], out: string, audio?: string): Promise<void> {
  const list = join(listDir, `list-${Math.random().toString(36).slice(2)}.txt`);
  await writeFile(list, `ffconcat version 1.0\n${parts.map((p) => `file '${p.slice(listDir.length + 1)}'`).join('\n')}\n`);
  const args = ['-hide_banner', '-nostdin', '-y', '-loglevel', 'error', '-protocol_whitelist', 'file', '-f', 'concat', '-safe', '1', '-i', `file:${list}`];
  if (audio) args.push('-protocol_whitelist', 'file', '-i', `file:${audio}`);
  args.push('-map', '0:v:0', ...(audio ? ['-map', '1:a:0'] : []), '-c', 'copy', '-f', 'mp4', `file:${out}`);
  await runFfmpeg(args);
}

/** Sorted presentation times of a file's video packets (s). */
async function videoPts(path: string): Promise<number[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time', '-of', 'csv=p=0', path]);
  return stdout
    .trim()
    .split('\n')
    .map(Number)
    .sort((a, b) => a - b);
}

describe('split → transcode → concat round trip (real ffmpeg)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
  });
  afterAll(async () => cleanup());

  it('merges parts into renditions with exactly the source frame count and duration', async () => {
    // 5 s, 29.97 fps, B-frames, 1 s GOPs, audio: the awkward-but-common case.
    const src = await makeClip(dir, 'source', { seconds: 5, width: 320, height: 240, rate: '30000/1001', gop: 30, bframes: 3, audio: true });
    const media = await probeMedia(src);
    expect(media.video.frames).toBe(150);
    const kf = await readKeyframes(src);
    const cuts = planCuts({ keyframes: kf.keyframes, durationSec: kf.durationSec, weights: [1, 1, 1], minSegmentSec: 1 });
    expect(cuts).toHaveLength(3);

    const segDir = join(dir, 'seg');
    const partDir = join(dir, 'parts');
    await Promise.all([mkdir(segDir), mkdir(partDir)]);
    const segs = await splitVideo(
      src,
      segDir,
      cuts.slice(1).map((c) => c.startSec),
    );
    const segFrames = await Promise.all(segs.map(async (s) => (await countFrames(s)).frames));
    expect(segFrames.reduce((a, b) => a + b, 0)).toBe(150);

    const renditions = resolveLadder([{ height: 240 }, { height: 120, codec: 'hevc', videoBitrateKbps: 200 }], media.video, await availableEncoders());
    expect(renditions.map((r) => `${r.width}x${r.height}`)).toEqual(['320x240', '160x120']);
    const partsOf = new Map(renditions.map((r) => [r.name, [] as string[]]));
    let progressed = 0;
    for (const [i, seg] of segs.entries()) {
      const outputs = renditions.map((r) => ({ path: join(partDir, `${r.name}-${String(i).padStart(4, '0')}.mp4`), rendition: r }));
      await transcodeToRenditions(seg, outputs, {
        fps: media.video.fps,
        container: 'mp4',
        threads: 1,
        onProgress: (p) => {
          progressed = Math.max(progressed, p.frame);
        },
      });
      for (const o of outputs) partsOf.get(o.rendition.name)!.push(o.path);
    }
    expect(progressed).toBeGreaterThan(0);

    // Every part: same frames as its segment, starts with a keyframe at t=0, decodes fully.
    for (const parts of partsOf.values()) {
      const facts = await Promise.all(parts.map((p) => inspectFile(p)));
      const counts = await Promise.all(parts.map(async (p) => (await countFrames(p)).frames));
      expect(counts).toEqual(segFrames);
      facts.forEach((f, i) => {
        expect(f.firstIsKey).toBe(true);
        expect(f.firstPts).toBe(0);
        expect(f.streamTypes).toEqual(['video']);
        expect(f.decodedFrames).toBe(segFrames[i]);
      });
    }

    const audio = join(dir, 'audio.m4a');
    await extractAudio(src, audio, { bitrateKbps: 64 });
    const frameSec = 1 / media.video.fps;
    for (const [name, parts] of partsOf) {
      const merged = join(dir, `${name}.mp4`);
      await concat(partDir, parts, merged, audio);
      const m = await countFrames(merged);
      expect(m.frames).toBe(media.video.frames); // 150 = 150: no frame lost or duplicated
      expect(Math.abs(m.durationSec - media.durationSec)).toBeLessThanOrEqual(frameSec);
      const f = await inspectFile(merged);
      expect(f.decodedFrames).toBe(150);
      expect(f.streamTypes).toEqual(['video', 'audio']);
      // Seamless: presentation times advance by one frame everywhere, also across the seams.
      const pts = await videoPts(merged);
      expect(pts[0]).toBe(0);
      for (let i = 1; i < pts.length; i++) {
        const step = pts[i]! - pts[i - 1]!;
        expect(step).toBeGreaterThan(frameSec * 0.5);
        expect(step).toBeLessThan(frameSec * 1.5);
      }
    }
  });

  it('builds working commands for every AV1/HEVC encoder (tiny smoke test)', async () => {
    const src = await makeClip(dir, 'tiny', { seconds: 1, width: 192, height: 144, gop: 10 });
    const encoders = await availableEncoders();
    const renditions = resolveLadder(
      [
        { height: 144, codec: 'av1', name: 'svt' },
        { height: 96, codec: 'hevc' },
      ],
      { width: 192, height: 144 },
      encoders,
    );
    const aom = resolveLadder([{ height: 72, codec: 'av1', name: 'aom' }], { width: 192, height: 144 }, new Set(['libaom-av1']));
    const all = [...renditions, ...aom];
    const outputs = all.map((r) => ({ path: join(dir, `smoke-${r.name}.mkv`), rendition: r }));
    await transcodeToRenditions(src, outputs, { fps: 30, container: 'mkv' });
    for (const o of outputs) {
      expect((await countFrames(o.path)).frames).toBe(30);
      expect((await inspectFile(o.path)).firstIsKey).toBe(true);
    }
  });

  it('deletes partial outputs when the transcode fails', async () => {
    const bad = join(dir, 'bad.mkv');
    await writeFile(bad, 'not a video at all');
    const [r] = resolveLadder([{ height: 120 }], { width: 160, height: 120 }, new Set(['libx264']));
    const out = join(dir, 'bad-out.mp4');
    const err = await transcodeToRenditions(bad, [{ path: out, rendition: r! }], { fps: 30, container: 'mp4' }).catch((e: unknown) => e);
    expect(isAppError(err, 'TRANSCODE_FAILED')).toBe(true);
    await expect(run('ls', [out])).rejects.toThrow();
  });
});

describe('transcode hardening (real ffmpeg)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    src = await makeClip(dir, 'caps', { seconds: 4, width: 160, height: 120, ext: 'mkv' });
  });
  afterAll(async () => cleanup());
  const [r] = resolveLadder([{ height: 120, preset: 'ultrafast' }], { width: 160, height: 120 }, new Set(['libx264']));

  it('applies -max_pixels to the decoder and the forced demuxer to the input', async () => {
    const out = join(dir, 'px.mp4');
    const tooSmall = await transcodeToRenditions(src, [{ path: out, rendition: r! }], { fps: 30, container: 'mp4', inputFormat: 'matroska', maxPixels: 160 * 119 }).catch((e: unknown) => e);
    expect(isAppError(tooSmall, 'TRANSCODE_FAILED')).toBe(true);
    expect((tooSmall as Error).message).toMatch(/exceeds specified max pixel count 19040/);
    const wrongDemuxer = await transcodeToRenditions(src, [{ path: out, rendition: r! }], { fps: 30, container: 'mp4', inputFormat: 'mpegts' }).catch((e: unknown) => e);
    expect(isAppError(wrongDemuxer, 'TRANSCODE_FAILED')).toBe(true);
    await transcodeToRenditions(src, [{ path: out, rendition: r! }], { fps: 30, container: 'mp4', inputFormat: 'matroska', maxPixels: decoderPixelCap(160, 120), expectedDurationSec: 4 });
    expect((await countFrames(out)).frames).toBe(120);
  });

  it('caps an output at the expected duration plus its margin', async () => {
    // A part that claims 0.5 s gets -t 2.5: of its 4 s only 75 frames are written.
    const out = join(dir, 'short.mp4');
    await transcodeToRenditions(src, [{ path: out, rendition: r! }], { fps: 30, container: 'mp4', inputFormat: 'matroska', expectedDurationSec: 0.5 });
    expect((await countFrames(out)).frames).toBe(75);
  });
});

describe('availableEncoders', () => {
  it('parses the encoder list', () => {
    const set = parseEncoderList(' V..... = Video\n ------\n V....D libx264              libx264 H.264\n A..... aac                  AAC\n V..... libsvtav1            SVT\n');
    expect([...set].sort()).toEqual(['aac', 'libsvtav1', 'libx264']);
  });
  it('finds the encoders of this machine and caches them', async () => {
    const a = await availableEncoders();
    expect(a.has('libx264')).toBe(true);
    expect(a.has('aac')).toBe(true);
    expect(a.has('=')).toBe(false);
    a.delete('libx264'); // callers get a copy; the cache is not mutated
    expect((await availableEncoders()).has('libx264')).toBe(true);
  });
});
