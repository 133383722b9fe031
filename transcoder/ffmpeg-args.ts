import { INPUT_DEMUXERS } from './ffprobe.js';
import { isAbsolute } from 'node:path';
import { AppError } from '../common/errors.js';
import { assertRendition, type ResolvedRendition } from './ladder.js';

/** One file to write: a rendition of the input. `path` is ours (absolute), never user text. */
export interface TranscodeOutput {
  path: string;
  rendition: ResolvedRendition;
}

/** Seconds between forced keyframes: every part and every HLS/DASH-style chunk starts on one. */
export const GOP_SECONDS = 2;

/** Peak/average ratio for VBV: lets hard scenes borrow bits without unbounded spikes. */
const MAXRATE_FACTOR = 1.5;
/** VBV buffer in seconds of the average bitrate. */
const BUFSIZE_SECONDS = 2;

/** Keyframe interval in frames for a frame rate: ≈ GOP_SECONDS of frames, at least 1. */
export function gopFrames(fps: number): number {
  return Math.max(1, Math.round(fps * GOP_SECONDS));
}

function checkPath(p: string, what: string): void {
  // Our own paths only: absolute, one line, no NUL (a newline would corrupt concat lists later).
  // eslint-disable-next-line no-control-regex
  if (!isAbsolute(p) || /[\u0000-\u001f]/.test(p)) throw new AppError('INTERNAL', `${what} path must be absolute and printable`);
}

/** Encoder-specific arguments: rate control, fixed closed GOP, preset, threads. */
function encoderArgs(r: ResolvedRendition, gop: number, threads: number | undefined, container: 'mp4' | 'mkv'): string[] {
  const b = r.videoBitrateKbps;
  const rate = ['-b:v', `${b}k`, '-maxrate', `${Math.round(b * MAXRATE_FACTOR)}k`, '-bufsize', `${Math.round(b * BUFSIZE_SECONDS)}k`];
  const gopArgs = ['-g', String(gop), '-keyint_min', String(gop)];
  const thr = threads !== undefined ? ['-threads', String(threads)] : [];
  switch (r.encoder) {
    case 'libx264':
      // x264 GOPs are closed by default; no scene-cut keyframes keeps the GOP grid fixed.
      return ['-c:v', 'libx264', '-preset', r.preset, ...rate, ...gopArgs, '-sc_threshold', '0', ...thr];
    case 'libx265': {
      // x265 defaults to open GOPs (CRA); closed GOPs make every keyframe a clean entry point.
      const params = ['scenecut=0', 'open-gop=0', 'log-level=error'];
      if (threads !== undefined) params.push(`pools=${threads}`);
      return ['-c:v', 'libx265', '-preset', r.preset, ...rate, ...gopArgs, '-x265-params', params.join(':'), ...(container === 'mp4' ? ['-tag:v', 'hvc1'] : [])];
    }
    case 'libsvtav1':
      // SVT-AV1 runs -b:v as a VBR target; its max bitrate applies only to capped CRF, so no VBV caps here.
      return ['-c:v', 'libsvtav1', '-preset', r.preset, '-b:v', `${b}k`, ...gopArgs, ...(threads !== undefined ? ['-svtav1-params', `lp=${threads}`] : [])];
    case 'libaom-av1': {
      // cpu-used 7-8 in "good" mode is still ~10x slower than realtime mode here; both keep the fixed GOP.
      const usage = Number(r.preset) >= 7 ? 'realtime' : 'good';
      return ['-c:v', 'libaom-av1', '-usage', usage, '-cpu-used', r.preset, '-row-mt', '1', ...rate, ...gopArgs, ...thr];
    }
    default:
      throw new AppError('UNSUPPORTED_CODEC', `encoder "${r.encoder}" is not supported`);
  }
}

/**
 * ffmpeg arguments (without the binary) for ONE process that decodes `input` once and writes
 * every rendition: `split=N` → `scale=W:H` per branch → one video-only output per rendition.
 * Pure; every value comes from allow-lists or numbers (renditions are re-validated).
 *
 * Frame-exact by construction: no fps filter, `-fps_mode passthrough` (no frame dropped or
 * duplicated), so each output has exactly the input's frame count. Fixed closed GOP of
 * ≈ 2 s (`-g`/`-keyint_min`, no scene-cut keyframes): each output starts with an IDR frame at
 * timestamp 0 (the input parts from splitVideo start at 0), ready for the concat demuxer.
 */
export function buildTranscodeArgs(input: string, outputs: TranscodeOutput[], opts: { fps: number; threads?: number; container: 'mp4' | 'mkv' }): string[] {
  if (outputs.length === 0) throw new AppError('INTERNAL', 'no renditions to transcode');
  if (!(Number.isFinite(opts.fps) && opts.fps > 0 && opts.fps <= 1000)) throw new AppError('INVALID_ARGUMENT', `frame rate ${String(opts.fps)} is not valid`);
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1 && opts.threads <= 64)) {
    throw new AppError('INVALID_ARGUMENT', `thread count ${String(opts.threads)} is not valid (1..64)`);
  }
  if (opts.container !== 'mp4' && opts.container !== 'mkv') throw new AppError('UNSUPPORTED_CONTAINER', 'container must be mp4 or mkv');
  checkPath(input, 'input');
  const seen = new Set<string>();
  for (const o of outputs) {
    checkPath(o.path, 'output');
    if (seen.has(o.path) || o.path === input) throw new AppError('INTERNAL', 'output paths must be distinct from each other and from the input');
    seen.add(o.path);
    assertRendition(o.rendition);
  }

  const n = outputs.length;
  const gop = gopFrames(opts.fps);
  const branches = outputs.map((_, i) => `[s${i}]`).join('');
  const scales = outputs.map((o, i) => `[s${i}]scale=${o.rendition.width}:${o.rendition.height}:flags=bicubic,format=yuv420p[v${i}]`);
  const graph = [`[0:V:0]split=${n}${branches}`, ...scales].join(';');

  const args = [
    '-hide_banner', '-nostdin', '-y', '-loglevel', 'error', '-nostats', '-progress', 'pipe:1',
    ...(opts.threads !== undefined ? ['-threads', String(opts.threads)] : []),
    '-protocol_whitelist', 'file', '-format_whitelist', INPUT_DEMUXERS, '-i', `file:${input}`,
    '-filter_complex', graph,
  ];
  outputs.forEach((o, i) => {
    args.push(
      '-map', `[v${i}]`,
      '-an', '-sn', '-dn', '-map_metadata', '-1', '-map_chapters', '-1',
      ...encoderArgs(o.rendition, gop, opts.threads, opts.container),
      '-pix_fmt', 'yuv420p',
      '-fps_mode', 'passthrough',
      ...(opts.container === 'mp4' ? ['-f', 'mp4'] : ['-f', 'matroska']),
      `file:${o.path}`,
    );
  });
  return args;
}

/** Shell-quotes one argument (POSIX single quotes) unless it is plainly safe. */
function shellQuote(a: string): string {
  if (/^[A-Za-z0-9_\/.,:=+@%-]+$/.test(a)) return a;
  return `'${a.replace(/'/g, `'\\''`)}'`;
}

/** The ffmpeg command line for display (dry runs, logs); never executed through a shell. */
export function formatCommand(args: string[]): string {
  return ['ffmpeg', ...args.map(shellQuote)].join(' ');
}
