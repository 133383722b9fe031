import { AppError } from '../common/errors.js';
import { audioStartOffset, firstVideoStream, num, parseProbeJson, rational, runFfprobe, streamDuration, type ProbeJson, type ProbeOptions, type ProbeStream } from './ffprobe.js';
import { runFfmpeg } from './run-ffmpeg.js';
import { inputArgs, type InputOptions } from './split.js';

/**
 * What a player shows of a source, beyond its frames: orientation, field structure, colour, HDR
 * metadata, where each stream starts, every audio track. The probe fills it; planning, cutting,
 * transcoding and merging all follow it, so what a player shows of the source is what every
 * rendition shows (docs/media.md).
 */
export interface SourceTimeline {
  /** Clockwise degrees the coded picture is turned for display (0, 90, 180, 270). */
  rotation: Rotation;
  coded: { width: number; height: number };
  /** The picture as a player shows it (rotation applied). */
  display: { width: number; height: number };
  fieldOrder: FieldOrder;
  color: ColorInfo;
  dynamicRange: DynamicRange;
  bitDepth: number;
  /** HDR10 static metadata, when the source carries it. */
  hdr?: HdrMetadata;
  /** Presentation start of the video stream (s, container time). */
  videoStartSec: number;
  /** Every audio track, in stream order. */
  audio: AudioTrack[];
}

export type Rotation = 0 | 90 | 180 | 270;
export type FieldOrder = 'progressive' | 'tff' | 'bff' | 'unknown';
export type DynamicRange = 'sdr' | 'pq' | 'hlg';

export interface ColorInfo {
  /** ffmpeg's names ('bt709', 'bt2020', 'smpte170m', ...), '' when the source does not say. */
  primaries: string;
  transfer: string;
  matrix: string;
  range: 'tv' | 'pc' | '';
}

export interface HdrMetadata {
  /** Mastering display in x265's `master-display` syntax (chromaticity in 0.00002, luminance in 0.0001 cd/m²). */
  masterDisplay?: string;
  /** Content light level: MaxCLL, MaxFALL (cd/m²). */
  maxCll?: number;
  maxFall?: number;
}

export interface AudioTrack {
  /** Position among the audio streams (ffmpeg's `a:N`). */
  index: number;
  codec: string;
  channels: number;
  layout: string;
  /** ISO 639-2 code, '' when untagged or not a code. */
  language: string;
  /** Title tag, printable and at most 64 characters, '' when none. */
  title: string;
  /** Start relative to the first presented video frame (s): > 0 starts late. */
  offsetSec: number;
  durationSec: number;
}

/** ffprobe's `field_order` → the field shown first. */
const FIELD_ORDER: Readonly<Record<string, FieldOrder>> = { progressive: 'progressive', tt: 'tff', bt: 'tff', bb: 'bff', tb: 'bff' };

/** Parses ffprobe's display matrix dump ("00000000: a b u\n00000001: c d v\n..."), 9 numbers or undefined. Pure. */
export function parseDisplayMatrix(dump: string): number[] | undefined {
  const values: number[] = [];
  for (const line of dump.split('\n')) {
    const m = /^\s*[0-9a-f]{8}:\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s*$/i.exec(line);
    if (m) values.push(Number(m[1]), Number(m[2]), Number(m[3]));
  }
  return values.length === 9 ? values : undefined;
}

/**
 * The clockwise rotation a player applies, from ffprobe's display-matrix side data (its
 * `rotation` is counter-clockwise degrees). Mirrored matrices and angles that are not a multiple
 * of 90° → UNSUPPORTED_ROTATION (a wrong picture must never pass silently). Pure.
 */
export function rotationOf(v: ProbeStream): Rotation {
  const dm = v.side_data_list?.find((d) => d.side_data_type === 'Display Matrix');
  if (!dm) return 0;
  const matrix = typeof dm.displaymatrix === 'string' ? parseDisplayMatrix(dm.displaymatrix) : undefined;
  if (matrix) {
    const det = matrix[0]! * matrix[4]! - matrix[1]! * matrix[3]!;
    if (det < 0) throw new AppError('UNSUPPORTED_ROTATION', 'the source is mirrored by its display matrix; mirrored video is not supported');
  }
  const ccw = num(dm.rotation) ?? 0;
  const cw = ((-Math.round(ccw) % 360) + 360) % 360;
  if (cw % 90 !== 0 || Math.abs(Math.round(ccw) - ccw) > 0.01) {
    throw new AppError('UNSUPPORTED_ROTATION', `the source is rotated by ${ccw}° for display; only multiples of 90° are supported`);
  }
  return cw as Rotation;
}

/** Bits per sample of a pixel format name (yuv420p10le → 10), 8 when it names none. Pure. */
export function bitDepthOf(pixFmt: string, bitsPerRawSample?: unknown): number {
  const m = /p(\d{2})(le|be)?$/.exec(pixFmt);
  if (m) return Number(m[1]);
  const raw = num(bitsPerRawSample);
  return raw !== undefined && raw > 8 && raw <= 16 ? raw : 8;
}

/** A chromaticity or luminance ratio "34000/50000" in units of `unit` (x265 wants integers). */
function scaled(v: unknown, unit: number): number | undefined {
  const r = typeof v === 'string' ? (/^\d+\/\d+$/.test(v) ? rational(v) : num(v)) : num(v);
  if (r === undefined || !(r >= 0)) return undefined;
  return Math.round(r * unit);
}

/** One side-data entry as ffprobe prints it (only the fields we read). */
export interface SideData {
  side_data_type?: string;
  rotation?: number | string;
  displaymatrix?: string;
  red_x?: string;
  red_y?: string;
  green_x?: string;
  green_y?: string;
  blue_x?: string;
  blue_y?: string;
  white_point_x?: string;
  white_point_y?: string;
  min_luminance?: string;
  max_luminance?: string;
  max_content?: number | string;
  max_average?: number | string;
}

/** HDR10 static metadata from stream or frame side data; undefined without any. Pure. */
export function hdrMetadataOf(side: readonly SideData[] | undefined): HdrMetadata | undefined {
  if (!side) return undefined;
  const out: HdrMetadata = {};
  const md = side.find((d) => d.side_data_type === 'Mastering display metadata');
  if (md) {
    const c = (v: unknown): number | undefined => scaled(v, 50_000);
    const l = (v: unknown): number | undefined => scaled(v, 10_000);
    const xs = [c(md.green_x), c(md.green_y), c(md.blue_x), c(md.blue_y), c(md.red_x), c(md.red_y), c(md.white_point_x), c(md.white_point_y), l(md.max_luminance), l(md.min_luminance)];
    if (xs.every((x): x is number => x !== undefined && Number.isSafeInteger(x))) {
      const [gx, gy, bx, by, rx, ry, wx, wy, lmax, lmin] = xs as number[];
      out.masterDisplay = `G(${gx},${gy})B(${bx},${by})R(${rx},${ry})WP(${wx},${wy})L(${lmax},${lmin})`;
    }
  }
  const cll = side.find((d) => d.side_data_type === 'Content light level metadata');
  if (cll) {
    const maxCll = num(cll.max_content);
    const maxFall = num(cll.max_average);
    if (maxCll !== undefined && Number.isInteger(maxCll) && maxCll >= 0 && maxCll <= 65535) out.maxCll = maxCll;
    if (maxFall !== undefined && Number.isInteger(maxFall) && maxFall >= 0 && maxFall <= 65535) out.maxFall = maxFall;
  }
  return out.masterDisplay !== undefined || out.maxCll !== undefined ? out : undefined;
}

/** ISO 639-2 language code of a stream's tags, '' when absent or malformed. Pure. */
function languageOf(tags: Record<string, string> | undefined): string {
  const l = (tags?.language ?? '').trim().toLowerCase();
  return /^[a-z]{3}$/.test(l) && l !== 'und' ? l : '';
}

/** A title tag made safe to carry: control characters dropped, at most 64 characters. Pure. */
export function cleanTitle(v: string | undefined): string {
  // eslint-disable-next-line no-control-regex
  const s = (v ?? '').replace(/[\u0000-\u001f\u007f]/g, '').trim();
  return [...s].slice(0, 64).join('');
}

function tagOf(tags: Record<string, string> | undefined, key: string): string | undefined {
  if (!tags) return undefined;
  for (const [k, v] of Object.entries(tags)) if (k.toLowerCase() === key) return v;
  return undefined;
}

/**
 * The source timeline from ffprobe's `-show_streams -show_format` JSON. Pure. `frameSide` is the
 * first video frame's side data (HDR10 metadata often lives only there, in the HEVC SEI).
 */
export function timelineFromProbe(j: ProbeJson, frameSide?: readonly SideData[]): SourceTimeline {
  const streams = j.streams ?? [];
  const v = firstVideoStream(streams);
  if (!v) throw new AppError('INPUT_NOT_VIDEO', 'the input has no video stream');
  const rotation = rotationOf(v);
  const coded = { width: num(v.width) ?? 0, height: num(v.height) ?? 0 };
  const display = rotation === 90 || rotation === 270 ? { width: coded.height, height: coded.width } : { ...coded };
  const transfer = v.color_transfer ?? '';
  const dynamicRange: DynamicRange = transfer === 'smpte2084' ? 'pq' : transfer === 'arib-std-b67' ? 'hlg' : 'sdr';
  const range = v.color_range === 'pc' || v.color_range === 'tv' ? v.color_range : (v.pix_fmt ?? '').startsWith('yuvj') ? 'pc' : '';
  const videoStartSec = num(v.start_time) ?? num(j.format?.start_time) ?? 0;
  const formatDuration = num(j.format?.duration);
  const audio: AudioTrack[] = streams
    .filter((s) => s.codec_type === 'audio')
    .map((a, index) => ({
      index,
      codec: a.codec_name ?? 'unknown',
      channels: num(a.channels) ?? 0,
      layout: a.channel_layout ?? '',
      language: languageOf(a.tags),
      title: cleanTitle(tagOf(a.tags, 'title')),
      offsetSec: audioStartOffset(j, a),
      durationSec: streamDuration(a) ?? formatDuration ?? 0,
    }));
  const hdr = dynamicRange === 'pq' ? (hdrMetadataOf(v.side_data_list) ?? hdrMetadataOf(frameSide)) : undefined;
  return {
    rotation,
    coded,
    display,
    fieldOrder: FIELD_ORDER[v.field_order ?? ''] ?? 'unknown',
    color: { primaries: v.color_primaries ?? '', transfer, matrix: v.color_space ?? '', range },
    dynamicRange,
    bitDepth: bitDepthOf(v.pix_fmt ?? '', v.bits_per_raw_sample),
    ...(hdr ? { hdr } : {}),
    videoStartSec,
    audio,
  };
}

/** idet's multi-frame counts over a sample of frames. */
export interface IdetCounts {
  tff: number;
  bff: number;
  progressive: number;
  undetermined: number;
}

/** Parses idet's summary from ffmpeg's stderr; undefined when it printed none. Pure. */
export function parseIdet(stderr: string): IdetCounts | undefined {
  const m = /Multi frame detection:\s*TFF:\s*(\d+)\s*BFF:\s*(\d+)\s*Progressive:\s*(\d+)\s*Undetermined:\s*(\d+)/.exec(stderr);
  if (!m) return undefined;
  return { tff: Number(m[1]), bff: Number(m[2]), progressive: Number(m[3]), undetermined: Number(m[4]) };
}

/** Frames of the source that idet looks at (enough to tell, cheap even at 4K). */
export const IDET_SAMPLE_FRAMES = 60;

/**
 * Runs ffmpeg's `idet` over the first IDET_SAMPLE_FRAMES frames of `path` (hardened like every
 * ffmpeg on user media: file protocol only, forced demuxer, capped decoder).
 */
export async function sampleIdet(path: string, o: InputOptions & { signal?: AbortSignal; timeoutMs?: number }): Promise<IdetCounts | undefined> {
  const args = [
    '-hide_banner',
    '-nostdin',
    '-loglevel',
    'info',
    '-nostats',
    ...inputArgs(path, o),
    '-map',
    '0:V:0',
    '-an',
    '-sn',
    '-dn',
    '-frames:v',
    String(IDET_SAMPLE_FRAMES),
    '-vf',
    'idet',
    '-f',
    'null',
    '-',
  ];
  const { stderr } = await runFfmpeg(args, {
    wallClockMs: o.timeoutMs ?? 60_000,
    noProgressMs: o.timeoutMs ?? 60_000,
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.limits ? { limits: o.limits } : {}),
  });
  return parseIdet(stderr);
}

/** Whether idet saw interlaced frames in most of the sample, and which field came first. Pure. */
export function idetVerdict(c: IdetCounts | undefined): { interlaced: boolean; parity: 'tff' | 'bff' } {
  if (!c) return { interlaced: false, parity: 'tff' };
  const fields = c.tff + c.bff;
  return { interlaced: fields >= 4 && fields > c.progressive, parity: c.bff > c.tff ? 'bff' : 'tff' };
}

/** The first video frame's side data (HDR10 metadata in HEVC SEI), via one-frame ffprobe. */
export async function firstFrameSideData(path: string, opts?: ProbeOptions): Promise<SideData[]> {
  const { stdout } = await runFfprobe(path, ['-select_streams', 'V:0', '-read_intervals', '%+#1', '-show_frames', '-show_entries', 'frame=side_data_list', '-of', 'json'], opts);
  const j = parseProbeJson(stdout) as ProbeJson & { frames?: { side_data_list?: SideData[] }[] };
  return j.frames?.[0]?.side_data_list ?? [];
}
