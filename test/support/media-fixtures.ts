import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { processAlive } from '../../common/process.js';

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
  const args = ['-hide_banner', '-nostdin', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=${o.width ?? 320}x${o.height ?? 240}:rate=${o.rate ?? '30'}:duration=${seconds}`];
  if (o.audio) args.push('-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`);
  args.push('-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', '-g', String(o.gop ?? 30), '-keyint_min', String(o.gop ?? 30), '-sc_threshold', '0', '-bf', String(o.bframes ?? 0));
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

/** One EBML element: its ID (bytes as written, length marker included) and its body. */
function ebml(id: number, body: Buffer | Buffer[]): Buffer {
  const data = Array.isArray(body) ? Buffer.concat(body) : body;
  const idBytes = Buffer.from(id.toString(16).padStart(id > 0xffffff ? 8 : id > 0xffff ? 6 : id > 0xff ? 4 : 2, '0'), 'hex');
  // Size as an 8-byte VINT (0x01 marker + 7 bytes): valid for any length we write.
  const size = Buffer.alloc(8);
  size.writeUInt32BE(0x01000000 + Math.floor(data.length / 2 ** 32), 0);
  size.writeUInt32BE(data.length >>> 0, 4);
  return Buffer.concat([idBytes, size, data]);
}
const ebmlUint = (id: number, v: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  let i = 0;
  while (i < 7 && b[i] === 0) i++;
  return ebml(id, b.subarray(i));
};
const ebmlFloat = (id: number, v: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(v);
  return ebml(id, b);
};
const ebmlString = (id: number, v: string): Buffer => ebml(id, Buffer.from(v, 'ascii'));

/**
 * Writes a hand-built Matroska file whose header claims a picture of `width`×`height` (ffmpeg
 * cannot produce such a file): one VP9 video track, `frames` tiny keyframe blocks whose payload
 * is not a real picture, 40 ms apart — or, with `fps`, one frame period apart (the timestamp
 * unit is one frame) with a default frame duration of 1/fps, and with `durationSec` the segment
 * claims that long a duration whatever the blocks cover. Test-only: forged headers for the
 * hostile-input suite.
 */
export async function writeForgedMatroska(path: string, o: { width: number; height: number; frames?: number; codecId?: string; fps?: number; durationSec?: number }): Promise<string> {
  const frames = o.frames ?? 25;
  // Timestamp unit (ns) and block spacing (units): 1 ms and 40, or one frame and 1.
  const scaleNs = o.fps ? Math.round(1e9 / o.fps) : 1_000_000;
  const step = o.fps ? 1 : 40;
  const durationUnits = o.durationSec !== undefined ? (o.durationSec * 1e9) / scaleNs : frames * step;
  const header = ebml(0x1a45dfa3, [ebmlUint(0x4286, 1), ebmlUint(0x42f7, 1), ebmlUint(0x42f2, 4), ebmlUint(0x42f3, 8), ebmlString(0x4282, 'matroska'), ebmlUint(0x4287, 4), ebmlUint(0x4285, 2)]);
  const info = ebml(0x1549a966, [ebmlUint(0x2ad7b1, scaleNs), ebmlFloat(0x4489, durationUnits), ebmlString(0x4d80, 'forged'), ebmlString(0x5741, 'forged')]);
  const tracks = ebml(0x1654ae6b, [
    ebml(0xae, [
      ebmlUint(0xd7, 1),
      ebmlUint(0x73c5, 1),
      ebmlUint(0x83, 1),
      ebmlString(0x86, o.codecId ?? 'V_VP9'),
      ...(o.fps ? [ebmlUint(0x23e383, scaleNs)] : []),
      ebml(0xe0, [ebmlUint(0xb0, o.width), ebmlUint(0xba, o.height)]),
    ]),
  ]);
  // Block timestamps are 16-bit offsets from their cluster's: a new cluster every 32000 units.
  const perCluster = Math.floor(32_000 / step);
  const clusters: Buffer[] = [];
  for (let first = 0; first < frames; first += perCluster) {
    const n = Math.min(perCluster, frames - first);
    const blocks = Array.from({ length: n }, (_, i) => {
      const b = Buffer.from([0x81, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]);
      b.writeInt16BE(i * step, 1);
      return ebml(0xa3, b);
    });
    clusters.push(ebml(0x1f43b675, [ebmlUint(0xe7, first * step), ...blocks]));
  }
  const segment = ebml(0x18538067, [info, tracks, ...clusters]);
  await writeFile(path, Buffer.concat([header, segment]));
  return path;
}
