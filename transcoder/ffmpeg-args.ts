import { isAbsolute } from 'node:path';
import { AppError } from '../common/errors.js';
import { maxPixelsArg } from './ffmpeg-limits.js';
import { demuxerArgs, INPUT_DEMUXERS, type InputDemuxer } from './ffprobe.js';
import { assertRendition, type ResolvedRendition } from './ladder.js';
import { constantRateFilters, type ChunkGrid, type Rate } from './frame-rate.js';
import { assertTreatment, colorTagArgs, commonFilters, isHdrRendition, PLAIN_TREATMENT, renditionFilters, type PictureTreatment } from './treatment.js';

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

/** Output caps: `-t` is the expected duration plus this share of it, and at least OUTPUT_TIME_MARGIN_SEC more. */
const OUTPUT_TIME_MARGIN = 0.1;
const OUTPUT_TIME_MARGIN_SEC = 2;
/** `-fs`: this many times the bits the rendition's average bitrate spends on (duration + VBV seconds), plus a floor. */
const OUTPUT_SIZE_FACTOR = 4;
const OUTPUT_SIZE_FLOOR_BYTES = 8 * 1024 * 1024;

/**
 * Caps for one output of a part expected to last `durationSec`: `-t` (s, 3 decimals) and `-fs`
 * (bytes). Pure. Far above what a real encode writes (VBV keeps x264/x265/libaom under
 * 1.5 × bitrate × duration + a 2 s buffer; SVT-AV1's VBR overshoots short parts, hence the
 * floor), so they only bite when the input lies about its length or the encoder runs away.
 */
export function outputCaps(r: ResolvedRendition, durationSec: number): { timeSec: string; sizeBytes: number } {
  if (!(Number.isFinite(durationSec) && durationSec > 0 && durationSec <= 7 * 24 * 3600)) throw new AppError('INVALID_ARGUMENT', `expected duration ${String(durationSec)} s is not valid`);
  const t = durationSec + Math.max(OUTPUT_TIME_MARGIN_SEC, durationSec * OUTPUT_TIME_MARGIN);
  const bytesPerSec = (r.videoBitrateKbps * 1000) / 8;
  const sizeBytes = OUTPUT_SIZE_FLOOR_BYTES + Math.ceil(OUTPUT_SIZE_FACTOR * bytesPerSec * (t + BUFSIZE_SECONDS));
  return { timeSec: t.toFixed(3), sizeBytes };
}

/** Options of buildTranscodeArgs. */
export interface TranscodeArgsOptions {
  fps: number;
  threads?: number;
  container: 'mp4' | 'mkv';
  /** `-f` for the input (SEGMENT_DEMUXER for our split parts); without it ffmpeg guesses within INPUT_DEMUXERS. */
  inputFormat?: InputDemuxer;
  /** `-max_pixels` for the decoder (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
  /** The input's duration in s: each output gets `-t`/`-fs` caps from it (outputCaps). */
  expectedDurationSec?: number;
  /** Rotation, deinterlacing, colour: how the source's pictures become what a player shows (default: none needed). */
  treatment?: PictureTreatment;
  /** Decoded frames to drop at the start (a frame cut's or an edit list's lead-in: a segment's first chunk). */
  leadInFrames?: number;
  /** Frames to keep after the lead-in (a frame cut's lead-out follows: a segment's last chunk); all when absent. */
  keepFrames?: number;
  /** Convert to a constant rate: the job's rate and this chunk's share of its grid (frame-rate.ts); `fps` should be the rate. */
  constantRate?: { rate: Rate; grid: Pick<ChunkGrid, 'frames' | 'shiftSec'> };
  /** Streaming: IDR frames forced at `firstSec` (local time) and every `periodSec` after it. */
  keyframeGrid?: { periodSec: number; firstSec: number };
}

/**
 * The encoder's time base: fine enough for any source's timestamps (ms-exact Matroska segments,
 * variable frame rate) so that none collide or move; the default (1/frame rate) rounds a VFR
 * source's timestamps onto one rate's grid.
 */
export const ENCODER_TIME_BASE = '1:90000';

/** HDR10 mastering display in SVT-AV1's syntax (decimal chromaticity and cd/m²) from x265's integer one. Pure. */
export function svtMasterDisplay(x265: string): string {
  const m = /^G\((\d+),(\d+)\)B\((\d+),(\d+)\)R\((\d+),(\d+)\)WP\((\d+),(\d+)\)L\((\d+),(\d+)\)$/.exec(x265);
  if (!m) throw new AppError('INVALID_ARGUMENT', 'master display is not valid');
  const c = (i: number): string => (Number(m[i]) / 50_000).toFixed(4);
  const l = (i: number): string => (Number(m[i]) / 10_000).toFixed(4);
  return `G(${c(1)},${c(2)})B(${c(3)},${c(4)})R(${c(5)},${c(6)})WP(${c(7)},${c(8)})L(${l(9)},${l(10)})`;
}

/** Keyframe interval in frames for a frame rate: ≈ GOP_SECONDS of frames, at least 1. */
export function gopFrames(fps: number): number {
  return Math.max(1, Math.round(fps * GOP_SECONDS));
}

function checkPath(p: string, what: string): void {
  // Our own paths only: absolute, one line, no NUL (a newline would corrupt concat lists later).
  // eslint-disable-next-line no-control-regex
  if (!isAbsolute(p) || /[\u0000-\u001f]/.test(p)) throw new AppError('INTERNAL', `${what} path must be absolute and printable`);
}

/** x265 parameters that signal HDR (PQ with HDR10 static metadata, or HLG). */
function x265HdrParams(t: PictureTreatment): string[] {
  if (t.dynamicRange === 'hlg') return ['colorprim=bt2020', 'transfer=arib-std-b67', 'colormatrix=bt2020nc'];
  const p = ['hdr10=1', 'repeat-headers=1', 'colorprim=bt2020', 'transfer=smpte2084', 'colormatrix=bt2020nc'];
  if (t.masterDisplay) p.push(`master-display=${t.masterDisplay}`);
  if (t.maxCll > 0 || t.maxFall > 0) p.push(`max-cll=${t.maxCll},${t.maxFall}`);
  return p;
}

/** SVT-AV1 parameters that carry HDR10 static metadata. */
function svtHdrParams(t: PictureTreatment): string[] {
  const p: string[] = [];
  if (t.dynamicRange === 'pq' && t.masterDisplay) p.push(`mastering-display=${svtMasterDisplay(t.masterDisplay)}`);
  if (t.dynamicRange === 'pq' && (t.maxCll > 0 || t.maxFall > 0)) p.push(`content-light=${t.maxCll},${t.maxFall}`);
  return p;
}

/** Encoder-specific arguments: rate control, fixed closed GOP, preset, threads; HDR signalling for HDR rungs. */
function encoderArgs(r: ResolvedRendition, gop: number, threads: number | undefined, container: 'mp4' | 'mkv', t: PictureTreatment): string[] {
  const hdr = isHdrRendition(r);
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
      const params = ['scenecut=0', 'open-gop=0', 'log-level=error', ...(hdr ? x265HdrParams(t) : [])];
      if (threads !== undefined) params.push(`pools=${threads}`);
      return ['-c:v', 'libx265', '-preset', r.preset, ...rate, ...gopArgs, '-x265-params', params.join(':'), ...(container === 'mp4' ? ['-tag:v', 'hvc1'] : [])];
    }
    case 'libsvtav1': {
      // SVT-AV1 runs -b:v as a VBR target; its max bitrate applies only to capped CRF, so no VBV caps here.
      const params = [...(threads !== undefined ? [`lp=${threads}`] : []), ...(hdr ? svtHdrParams(t) : [])];
      return ['-c:v', 'libsvtav1', '-preset', r.preset, '-b:v', `${b}k`, ...gopArgs, ...(params.length ? ['-svtav1-params', params.join(':')] : [])];
    }
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
 * Frame-exact by construction: `-fps_mode passthrough` (no frame dropped or duplicated), so each
 * output has exactly the input's frame count — or, converting to a constant rate, exactly the
 * chunk's share of the job's output grid (an fps filter, then a trim to that count). Fixed closed GOP of
 * ≈ 2 s (`-g`/`-keyint_min`, no scene-cut keyframes): each output starts with an IDR frame at
 * timestamp 0 (the input parts from splitVideo start at 0), ready for the concat demuxer.
 *
 * Hardening: stdin off, only the file protocol, the demuxer forced when known and otherwise
 * limited to INPUT_DEMUXERS, the decoder's picture size capped (`-max_pixels`), every output
 * capped in time and size when the duration is known, no input metadata or chapters copied.
 */
export function buildTranscodeArgs(input: string, outputs: TranscodeOutput[], opts: TranscodeArgsOptions): string[] {
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

  const t = opts.treatment ?? PLAIN_TREATMENT;
  assertTreatment(t);
  const g = opts.keyframeGrid;
  if (g && !(Number.isFinite(g.periodSec) && g.periodSec >= 0.5 && g.periodSec <= 30 && Number.isFinite(g.firstSec) && g.firstSec >= 0 && g.firstSec <= 30))
    throw new AppError('INVALID_ARGUMENT', 'keyframe grid is not valid');
  // The k-th forced IDR at firstSec + k × period (a millisecond early: cut files' times are rounded).
  const kf = g ? `expr:gte(t,${Math.max(0, g.firstSec - 0.001).toFixed(6)}+n_forced*${g.periodSec.toFixed(6)})` : undefined;
  const n = outputs.length;
  const gop = gopFrames(opts.fps);
  const branches = outputs.map((_, i) => `[s${i}]`).join('');
  const pre = [...commonFilters(t, opts.leadInFrames ?? 0, opts.keepFrames), ...(opts.constantRate ? constantRateFilters(opts.constantRate.rate, opts.constantRate.grid) : [])];
  const scales = outputs.map((o, i) => `[s${i}]${renditionFilters(t, o.rendition)}[v${i}]`);
  const graph = [`[0:V:0]${[...pre, `split=${n}`].join(',')}${branches}`, ...scales].join(';');

  const args = [
    '-hide_banner',
    '-nostdin',
    '-y',
    '-loglevel',
    'error',
    '-nostats',
    '-progress',
    'pipe:1',
    // A worker's thread budget holds for its filters too: unset, the graph's scalers slice-thread
    // over every core, beside the other workers (two 1-thread workers on 2 cores: 1.5 % faster).
    ...(opts.threads !== undefined ? ['-threads', String(opts.threads), '-filter_complex_threads', String(opts.threads)] : []),
    '-protocol_whitelist',
    'file',
    '-format_whitelist',
    INPUT_DEMUXERS,
    '-max_pixels',
    maxPixelsArg(opts.maxPixels),
    ...demuxerArgs(opts.inputFormat),
    '-i',
    `file:${input}`,
    '-filter_complex',
    graph,
  ];
  outputs.forEach((o, i) => {
    const caps = opts.expectedDurationSec !== undefined ? outputCaps(o.rendition, opts.expectedDurationSec) : undefined;
    args.push(
      '-map',
      `[v${i}]`,
      '-an',
      '-sn',
      '-dn',
      '-map_metadata',
      '-1',
      '-map_chapters',
      '-1',
      ...(caps ? ['-t', caps.timeSec, '-fs', String(caps.sizeBytes)] : []),
      ...encoderArgs(o.rendition, gop, opts.threads, opts.container, t),
      ...(kf ? ['-force_key_frames:v', kf] : []),
      '-pix_fmt',
      isHdrRendition(o.rendition) ? 'yuv420p10le' : 'yuv420p',
      ...colorTagArgs(t, o.rendition),
      '-fps_mode',
      'passthrough',
      '-enc_time_base:v',
      ENCODER_TIME_BASE,
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
