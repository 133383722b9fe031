import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKET_LIST_ARGS, parsePacketRows, readPacketSummary, summarizePackets, type PacketRow } from './keyframes.js';
import { readMatroskaPackets } from './matroska-packets.js';
import { splitFrameCuts, splitVideo } from './split.js';
import { makeClip, makeTempDir } from '../test/support/media-fixtures.js';

const run = promisify(execFile);

/** What ffprobe lists for the file (a duration of 0 and an unknown one are the same to the planner). */
async function ffprobeRows(path: string): Promise<PacketRow[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', ...PACKET_LIST_ARGS, '-i', path], { maxBuffer: 64 * 1024 * 1024 });
  return parsePacketRows(stdout).map((r) => ({ ...r, duration: r.duration === 0 ? undefined : r.duration }));
}

describe('readMatroskaPackets (real ffmpeg and ffprobe)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let bframes: string;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    // NTSC film rate with B-frames: reordered, non-integer timestamps in the source.
    bframes = await makeClip(dir, 'bframes', { seconds: 6, gop: 24, bframes: 3, rate: '24000/1001' });
  });
  afterAll(async () => cleanup());

  /** Every file: the same rows as ffprobe's scan, and so the same summary the agents plan from. */
  async function expectAsFfprobe(files: string[]): Promise<void> {
    for (const f of files) {
      const mine = await readMatroskaPackets(f);
      expect(mine, f).toBeDefined();
      expect(mine, f).toEqual(await ffprobeRows(f));
      expect(summarizePackets(mine!), f).toEqual(await readPacketSummary(f));
    }
  }

  it('reads the segments a keyframe cut writes as ffprobe does (B-frames, 24000/1001)', async () => {
    const out = join(dir, 'keyframe-cut');
    await mkdir(out);
    const files = await splitVideo(bframes, out, [2.002, 4.004]);
    await expectAsFfprobe(files);
    expect((await readMatroskaPackets(files[1]!))!.filter((r) => r.key)).toHaveLength(2);
  });

  it('reads the segments a frame cut joins from pieces as ffprobe does', async () => {
    const out = join(dir, 'frame-cut');
    await mkdir(out);
    // Keyframes every 24 packets. Segment 0: packets 0–71 (through the GOP at 48, which both
    // share); segment 1 from the keyframe at 48 to the end: each is joined from two pieces.
    const files = await splitFrameCuts(
      bframes,
      out,
      [
        { fromPacket: 0, toPacket: 72 },
        { fromPacket: 48, toPacket: 144 },
      ],
      144,
    );
    await expectAsFfprobe(files);
    expect(await readMatroskaPackets(files[0]!)).toHaveLength(72);
    expect(await readMatroskaPackets(files[1]!)).toHaveLength(96);
  });

  it('gives no time to a leading picture before the file starts (an open-GOP HEVC piece), as ffmpeg does', async () => {
    const src = join(dir, 'hevc.mp4');
    await run('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=25', '-t', '6', '-c:v', 'libx265', '-x265-params', 'log-level=error', '-g', '50', src]);
    const out = join(dir, 'hevc');
    await mkdir(out);
    // x265's keyframes fall where it decides (about every 2 s); cut at the first two past 1.5 s and 3.5 s.
    await run('ffmpeg', [
      '-v',
      'error',
      '-i',
      src,
      '-map',
      '0:V:0',
      '-c',
      'copy',
      '-f',
      'segment',
      '-segment_format',
      'matroska',
      '-segment_frames',
      '38,88',
      '-reset_timestamps',
      '1',
      '-avoid_negative_ts',
      'disabled',
      join(out, 'p%02d.mkv'),
    ]);
    const files = (await readdir(out)).sort().map((f) => join(out, f));
    expect(files.length).toBeGreaterThan(1);
    await expectAsFfprobe(files);
    // A piece after the first starts with the keyframe, and the pictures decoded after it but shown before it have no time.
    const later = await Promise.all(files.slice(1).map((f) => readMatroskaPackets(f)));
    expect(later.some((rows) => rows!.some((r) => r.pts === undefined))).toBe(true);
  });

  it('leaves to ffprobe what it does not read: another container, a truncated file, unknown sizes', async () => {
    expect(await readMatroskaPackets(bframes)).toBeUndefined(); // MP4
    const whole = join(dir, 'whole.mkv');
    await run('ffmpeg', ['-v', 'error', '-i', bframes, '-map', '0:V:0', '-c', 'copy', '-f', 'matroska', whole]);
    const bytes = await readFile(whole);
    const cut = join(dir, 'truncated.mkv');
    await writeFile(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    expect(await readMatroskaPackets(cut)).toBeUndefined();
    // Written to a pipe: the segment and its clusters have no size.
    const { stdout } = await run('ffmpeg', ['-v', 'error', '-i', bframes, '-map', '0:V:0', '-c', 'copy', '-f', 'matroska', 'pipe:1'], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
    const piped = join(dir, 'piped.mkv');
    await writeFile(piped, stdout);
    expect(await readMatroskaPackets(piped)).toBeUndefined();
    await expect(readMatroskaPackets(join(dir, 'missing.mkv'))).rejects.toThrow(/ENOENT/);
  });
});
