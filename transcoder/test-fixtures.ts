import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { processAlive } from '../common/process.js';

const run = promisify(execFile);

/** Options of a generated test clip (kept tiny: the CI machine has 2 cores). */
export interface ClipOptions {
  seconds?: number;
  width?: number;
  height?: number;
  /** Frame rate as ffmpeg accepts it, e.g. '30' or '30000/1001'. */
  rate?: string;
  /** Keyframe interval in frames. */
  gop?: number;
  /** Max consecutive B-frames (0 = none). */
  bframes?: number;
  audio?: boolean;
  /** Output extension decides the container (mp4, mkv, ts). */
  ext?: string;
}

/** A fresh temporary directory (test setup only) and its cleanup. */
export async function makeTempDir(prefix = 'tessera-tx-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Generates a synthetic H.264 clip (testsrc2 + optional sine audio) with ffmpeg; returns its path. Test-only. */
export async function makeClip(dir: string, name: string, o: ClipOptions = {}): Promise<string> {
  const seconds = o.seconds ?? 4;
  const path = join(dir, `${name}.${o.ext ?? 'mp4'}`);
  const args = [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${o.width ?? 320}x${o.height ?? 240}:rate=${o.rate ?? '30'}:duration=${seconds}`,
  ];
  if (o.audio) args.push('-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`);
  args.push(
    '-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p',
    '-g', String(o.gop ?? 30), '-keyint_min', String(o.gop ?? 30), '-sc_threshold', '0',
    '-bf', String(o.bframes ?? 0),
  );
  if (o.audio) args.push('-c:a', 'aac', '-b:a', '64k', '-ac', '2');
  args.push(path);
  await run('ffmpeg', args);
  return path;
}

/** Facts about a produced file for assertions: stream kinds, decodable frames, first video packet. Test-only. */
export async function inspectFile(path: string): Promise<{ streamTypes: string[]; decodedFrames: number; firstPts: number; firstIsKey: boolean }> {
  const [all, first] = await Promise.all([
    run('ffprobe', ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_type,nb_read_frames', '-of', 'json', path]),
    run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-read_intervals', '%+#1', '-show_entries', 'packet=pts_time,flags', '-of', 'json', path]),
  ]);
  const streams = (JSON.parse(all.stdout) as { streams: { codec_type: string; nb_read_frames?: string }[] }).streams;
  const packets = (JSON.parse(first.stdout) as { packets?: { pts_time?: string; flags?: string }[] }).packets ?? [];
  const v = streams.find((s) => s.codec_type === 'video');
  return {
    streamTypes: streams.map((s) => s.codec_type),
    decodedFrames: Number(v?.nb_read_frames ?? 0),
    firstPts: Number(packets[0]?.pts_time ?? NaN),
    firstIsKey: (packets[0]?.flags ?? '').startsWith('K'),
  };
}

/** True while a process (or its zombie) exists. */
export const processExists = processAlive;
