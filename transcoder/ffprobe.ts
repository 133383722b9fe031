import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { AppError } from '../common/errors.js';
import { maxPixelsArg, type FfmpegLimits } from './ffmpeg-limits.js';
import { runFailureKind, runFfmpeg } from './run-ffmpeg.js';
import type { SideData } from './timeline.js';

/** Options shared by the ffprobe-based readers. */
export interface ProbeOptions {
  /** Wall-clock limit of the ffprobe run in ms (default 120 s; packet counting reads the whole file). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * The demuxer to use (`-f`), when the file's format is known: the probed one for user media
   * (demuxerFor), 'matroska' for our segments, 'mov' for our parts. Without it ffprobe guesses
   * within INPUT_DEMUXERS.
   */
  format?: InputDemuxer;
  /** `-max_pixels` for the decoders ffprobe opens (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
  /** Kernel limits of the ffprobe process (default: FfmpegLimits' defaults). */
  limits?: FfmpegLimits;
}

/** Caps on how much ffprobe reads to *detect* streams (bytes / µs); a hostile file cannot make it scan forever. */
const PROBE_SIZE_BYTES = 50_000_000;
const ANALYZE_DURATION_US = 30_000_000;
const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * The only demuxers ffmpeg/ffprobe may use on an input (`-format_whitelist`): playlists and other
 * reference formats (hls, dash, concat, image2, sdp, rtp, …) cannot even be opened, so a hostile
 * file never makes ffmpeg read another file or reach the network.
 */
export const INPUT_DEMUXERS = 'mov,matroska,mpegts,avi,mxf';

/** One demuxer of INPUT_DEMUXERS: the only values `-f` ever gets for an input. */
export type InputDemuxer = 'mov' | 'matroska' | 'mpegts' | 'avi' | 'mxf';

/** ffprobe's format names (as the input gate accepts them) → the demuxer that read them. */
const DEMUXER_BY_FORMAT: Readonly<Record<string, InputDemuxer>> = {
  'mov,mp4,m4a,3gp,3g2,mj2': 'mov',
  'matroska,webm': 'matroska',
  mpegts: 'mpegts',
  avi: 'avi',
  mxf: 'mxf',
};

/**
 * The demuxer to force (`-f`) for a probed input, so later ffmpeg runs cannot pick another one
 * from the file's bytes. Anything else → UNSUPPORTED_FORMAT. Pure.
 */
export function demuxerFor(formatName: string): InputDemuxer {
  const d = DEMUXER_BY_FORMAT[formatName];
  if (!d || !Object.hasOwn(DEMUXER_BY_FORMAT, formatName)) throw new AppError('UNSUPPORTED_FORMAT', `the container "${formatName}" is not accepted`);
  return d;
}

/** `-f <demuxer>` when one is known (checked against the allow-list again), else nothing. */
export function demuxerArgs(format: InputDemuxer | undefined): string[] {
  if (format === undefined) return [];
  if (!Object.values(DEMUXER_BY_FORMAT).includes(format)) throw new AppError('INTERNAL', `demuxer "${String(format)}" is not allowed`);
  return ['-f', format];
}

/**
 * A remote input read in ranges through the coordinator's loopback range server
 * (coordinator/input/range-source.ts): `http://127.0.0.1:<port>/<token>`. Nothing else but a local file
 * is ever opened.
 */
const RANGED_INPUT = /^http:\/\/127\.0\.0\.1:\d{1,5}\/[A-Za-z0-9_-]{16,}$/;

export function isRangedInput(p: string): boolean {
  return RANGED_INPUT.test(p);
}

/**
 * How ffmpeg/ffprobe open an input: a local file with the file protocol only (`file:<abs>`), or
 * the loopback range server with http over tcp only and a read timeout (it seeks with Range).
 */
export function inputSource(p: string): { protocol: string[]; url: string } {
  if (isRangedInput(p)) return { protocol: ['-protocol_whitelist', 'http,tcp', '-rw_timeout', '60000000'], url: p };
  return { protocol: ['-protocol_whitelist', 'file'], url: `file:${resolve(p)}` };
}

/**
 * Checks that `path` names a non-empty regular file (or a ranged input that answers); returns its
 * absolute path (the URL) and size.
 * ENOENT → INPUT_NOT_FOUND, zero bytes → INPUT_EMPTY, anything but a file → INPUT_NOT_VIDEO.
 */
export async function checkInputFile(path: string): Promise<{ abs: string; bytes: number }> {
  if (isRangedInput(path)) {
    const res = await fetch(path, { method: 'HEAD', signal: AbortSignal.timeout(10_000) }).catch((err: unknown) => {
      throw new AppError('UNAVAILABLE', `the input's range server did not answer: ${(err as Error).message}`, { retryable: true });
    });
    if (!res.ok) throw new AppError('INPUT_NOT_FOUND', 'the input is no longer open for reading');
    return { abs: path, bytes: Number(res.headers.get('content-length') ?? 0) };
  }
  const abs = resolve(path);
  let st;
  try {
    st = await stat(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new AppError('INPUT_NOT_FOUND', 'the input file does not exist', { cause: err });
    throw new AppError('INPUT_NOT_FOUND', `the input file cannot be read (${code ?? 'error'})`, { cause: err });
  }
  if (!st.isFile()) throw new AppError('INPUT_NOT_VIDEO', 'the input is not a regular file');
  if (st.size === 0) throw new AppError('INPUT_EMPTY', 'the input file is empty (0 bytes)');
  return { abs, bytes: st.size };
}

/**
 * Runs ffprobe on one local file (opened as `file:<abs>` with only the file protocol allowed,
 * the demuxer forced when `opts.format` is known, decoders capped by `-max_pixels`, under the
 * kernel limits) and returns its stdout and stderr tail. Our staging path is removed from error
 * messages (they reach users). ffprobe failure → INPUT_NOT_VIDEO; timeout → DEADLINE_EXCEEDED
 * (not retryable: a file that takes this long to probe will do so again); a kernel limit hit →
 * LIMIT_EXCEEDED; abort → CANCELLED.
 */
export async function runFfprobe(path: string, args: readonly string[], opts: ProbeOptions = {}): Promise<{ stdout: string; stderr: string; bytes: number }> {
  const { abs, bytes } = await checkInputFile(path);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const full = [
    '-hide_banner',
    '-v',
    'error',
    ...inputSource(abs).protocol,
    '-format_whitelist',
    INPUT_DEMUXERS,
    '-probesize',
    String(PROBE_SIZE_BYTES),
    '-analyzeduration',
    String(ANALYZE_DURATION_US),
    '-max_pixels',
    maxPixelsArg(opts.maxPixels),
    ...args,
    ...demuxerArgs(opts.format),
    '-i',
    inputSource(abs).url,
  ];
  try {
    const { stdout, stderr } = await runFfmpeg(full, {
      binary: 'ffprobe',
      wallClockMs: timeoutMs,
      noProgressMs: timeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.limits ? { limits: opts.limits } : {}),
    });
    return { stdout, stderr, bytes };
  } catch (err) {
    const kind = runFailureKind(err);
    if (kind === 'cancelled' || kind === 'stdout-limit') throw err;
    if (kind === 'resource-limit') throw new AppError('LIMIT_EXCEEDED', scrubPath((err as Error).message, abs), { cause: err, retryable: false });
    if (kind === 'watchdog') throw new AppError('DEADLINE_EXCEEDED', `probing the input took longer than ${timeoutMs} ms`, { cause: err, retryable: false });
    if (kind === 'signal' || kind === 'spawn') throw err;
    const msg = err instanceof Error ? scrubPath(err.message, abs) : String(err);
    throw new AppError('INPUT_NOT_VIDEO', `the input is not a readable video (${msg.replace(/^ffprobe exited with code \S+: /, '')})`, { cause: err });
  }
}

/** Replaces our internal path (and its `file:` URL form) in a message by "input". */
function scrubPath(message: string, abs: string): string {
  let out = message.split(`file:${abs}`).join('input').split(abs).join('input');
  const base = basename(abs);
  if (base.length >= 4) out = out.split(base).join('input');
  return out;
}

/** Parses a number field of ffprobe output ("N/A", missing, non-finite → undefined). */
export function num(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v !== 'string' || v.trim() === '' || v === 'N/A') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** Parses a rational like "30000/1001" (0/0 and garbage → undefined). */
export function rational(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+)\/(\d+)$/.exec(v.trim());
  if (!m) return num(v);
  const n = Number(m[1]);
  const d = Number(m[2]);
  return d > 0 && n > 0 ? n / d : undefined;
}

/** Parses Matroska's DURATION tag ("HH:MM:SS.nnnnnnnnn") into seconds. */
export function parseClock(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$/.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]);
}

/** One ffprobe JSON stream entry (only the fields we read). */
export interface ProbeStream {
  index?: number;
  codec_type?: string;
  codec_name?: string;
  width?: number;
  height?: number;
  pix_fmt?: string;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  duration?: string;
  start_time?: string;
  nb_read_packets?: string;
  channels?: number;
  sample_rate?: string;
  disposition?: { attached_pic?: number };
  tags?: Record<string, string>;
  channel_layout?: string;
  field_order?: string;
  color_range?: string;
  color_space?: string;
  color_transfer?: string;
  color_primaries?: string;
  bits_per_raw_sample?: string;
  /** Display matrix, mastering display, content light level (see timeline.ts). */
  side_data_list?: SideData[];
}

/** One ffprobe JSON output with -show_format/-show_streams. */
export interface ProbeJson {
  streams?: ProbeStream[];
  format?: { format_name?: string; duration?: string; size?: string; nb_streams?: number; start_time?: string };
}

/** Parses ffprobe `-of json` output; garbage → INPUT_NOT_VIDEO. */
export function parseProbeJson(stdout: string): ProbeJson {
  try {
    const v: unknown = JSON.parse(stdout);
    if (v && typeof v === 'object') return v as ProbeJson;
  } catch {
    /* fall through */
  }
  throw new AppError('INPUT_NOT_VIDEO', 'ffprobe returned no usable stream information for the input');
}

/** The first real video stream (cover art / attached pictures are not video), like the `V:0` specifier. */
export function firstVideoStream(streams: readonly ProbeStream[]): ProbeStream | undefined {
  return streams.find((s) => s.codec_type === 'video' && s.disposition?.attached_pic !== 1);
}

/**
 * An audio stream's start relative to the first video stream's (s): > 0 starts late. A stream
 * without a start time of its own starts with the video; without video, 0. Pure.
 */
export function audioStartOffset(j: ProbeJson, audio: ProbeStream): number {
  const v = firstVideoStream(j.streams ?? []);
  if (!v) return 0;
  const videoStart = num(v.start_time) ?? num(j.format?.start_time) ?? 0;
  return (num(audio.start_time) ?? videoStart) - videoStart;
}

/** A stream's duration in seconds: its own field, else Matroska's DURATION tag, else undefined. */
export function streamDuration(s: ProbeStream): number | undefined {
  const d = num(s.duration);
  if (d !== undefined && d > 0) return d;
  const tags = s.tags ?? {};
  for (const [k, v] of Object.entries(tags)) {
    if (k.toUpperCase() === 'DURATION') {
      const t = parseClock(v);
      if (t !== undefined && t > 0) return t;
    }
  }
  return undefined;
}
