import { AppError } from '../common/errors.js';
import { firstVideoStream, num, parseProbeJson, rational, runFfprobe, streamDuration, type ProbeJson, type ProbeOptions } from './ffprobe.js';
import { timelineFromProbe, type SourceTimeline } from './timeline.js';

/** What the pipeline needs to know about an input file. */
export interface MediaInfo {
  /** ffprobe's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2". */
  formatName: string;
  /** Duration in seconds: of the video stream when the container says, else of the file. */
  durationSec: number;
  /** File size in bytes. */
  bytes: number;
  /** Number of streams of any kind in the file. */
  streamCount: number;
  video: {
    codec: string;
    width: number;
    height: number;
    /** Frames per second (average; the nominal rate when the average is unknown). */
    fps: number;
    /** Exact number of video packets (= frames) in the first video stream. */
    frames: number;
    pixFmt: string;
  };
  audio?: { codec: string; channels: number; sampleRate: number; durationSec: number };
  /** Every stream: kind (video, audio, subtitle, data, attachment), codec and codec tag. */
  streams: { type: string; codec: string; tag: string }[];
  /** What a player shows: rotation, field order, colour, audio tracks (see timeline.ts). */
  timeline: SourceTimeline;
}

/** Demuxers that read single pictures: an image is not a video even though ffprobe says "video". */
function isImageFormat(formatName: string): boolean {
  return formatName === 'image2' || formatName.endsWith('_pipe') || formatName === 'webp_pipe';
}

/**
 * The picture size a decoder refused, from ffprobe's stderr (libavutil's av_image_check_size2:
 * "Picture size WxH is invalid" / "... exceeds specified max pixel count N"); the largest one
 * named, or undefined. Pure.
 */
export function refusedPictureSize(stderr: string): { width: number; height: number } | undefined {
  let best: { width: number; height: number } | undefined;
  for (const m of stderr.matchAll(/Picture size (\d{1,10})x(\d{1,10}) (?:is invalid|exceeds specified max pixel count)/g)) {
    const width = Number(m[1]);
    const height = Number(m[2]);
    if (!best || width * height > best.width * best.height) best = { width, height };
  }
  return best;
}

/**
 * Turns ffprobe JSON (`-show_format -show_streams -count_packets`) into MediaInfo. Pure.
 * No video stream, a still image or zero frames → AppError('INPUT_NOT_VIDEO').
 *
 * A header claiming a picture too large for the decoder (over `-max_pixels`, or past what
 * libavcodec can address at all, e.g. 100000×100000) comes back from ffprobe as 0×0; the size it
 * claimed is taken from `stderr` instead, so the input gate can refuse it as over the limit.
 */
export function mediaInfoFromProbe(j: ProbeJson, bytes: number, stderr = ''): MediaInfo {
  const streams = j.streams ?? [];
  const formatName = j.format?.format_name ?? '';
  const v = firstVideoStream(streams);
  if (!v) {
    const kinds = [...new Set(streams.map((s) => s.codec_type ?? 'unknown'))];
    throw new AppError('INPUT_NOT_VIDEO', kinds.length ? `the input has no video stream (only ${kinds.join(', ')})` : 'the input has no video stream');
  }
  if (isImageFormat(formatName)) throw new AppError('INPUT_NOT_VIDEO', `the input is a still image (${formatName}), not a video`);
  let width = num(v.width) ?? 0;
  let height = num(v.height) ?? 0;
  if (width <= 0 || height <= 0) {
    const claimed = refusedPictureSize(stderr);
    if (claimed) ({ width, height } = claimed);
  }
  if (width <= 0 || height <= 0) throw new AppError('INPUT_NOT_VIDEO', 'the input video stream has no picture size (corrupt or unsupported)');
  const frames = num(v.nb_read_packets) ?? 0;
  if (frames <= 0) throw new AppError('INPUT_NOT_VIDEO', 'the input video stream has no frames');
  const formatDuration = num(j.format?.duration);
  let fps = rational(v.avg_frame_rate) ?? rational(v.r_frame_rate) ?? 0;
  const vDuration = streamDuration(v) ?? formatDuration ?? (fps > 0 ? frames / fps : 0);
  if (fps <= 0 && vDuration > 0) fps = frames / vDuration;

  const a = streams.find((s) => s.codec_type === 'audio');
  const info: MediaInfo = {
    formatName,
    durationSec: vDuration,
    bytes: num(j.format?.size) ?? bytes,
    streamCount: num(j.format?.nb_streams) ?? streams.length,
    video: { codec: v.codec_name ?? 'unknown', width, height, fps, frames, pixFmt: v.pix_fmt ?? '' },
    streams: streams.map((s) => ({ type: s.codec_type ?? 'unknown', codec: s.codec_name ?? 'unknown', tag: (s as { codec_tag_string?: string }).codec_tag_string ?? '' })),
    timeline: timelineFromProbe({ ...j, streams: streams.map((s) => (s === v ? { ...s, width, height } : s)) }),
  };
  if (a) {
    info.audio = {
      codec: a.codec_name ?? 'unknown',
      channels: num(a.channels) ?? 0,
      sampleRate: num(a.sample_rate) ?? 0,
      durationSec: streamDuration(a) ?? formatDuration ?? 0,
    };
  }
  return info;
}

/**
 * Probes a local file with ffprobe (format + streams + exact packet counts; reads the whole file,
 * fine for our input sizes). Errors: missing → INPUT_NOT_FOUND, 0 bytes → INPUT_EMPTY, not a
 * parseable video → INPUT_NOT_VIDEO, slower than `timeoutMs` → DEADLINE_EXCEEDED, abort → CANCELLED,
 * a kernel limit hit → LIMIT_EXCEEDED. `opts.maxPixels` caps the decoders ffprobe opens.
 */
export async function probeMedia(path: string, opts?: ProbeOptions): Promise<MediaInfo> {
  const { stdout, stderr, bytes } = await runFfprobe(path, ['-show_format', '-show_streams', '-count_packets', '-of', 'json'], opts);
  return mediaInfoFromProbe(parseProbeJson(stdout), bytes, stderr);
}

/**
 * Frame count (video packets) and duration in seconds of a file's first video stream; used to
 * verify our own outputs (segments, parts, merged renditions).
 */
export async function countFrames(path: string, opts?: ProbeOptions): Promise<{ frames: number; durationSec: number }> {
  const { stdout } = await runFfprobe(path, ['-select_streams', 'V:0', '-count_packets', '-show_format', '-show_streams', '-of', 'json'], opts);
  const j = parseProbeJson(stdout);
  const v = firstVideoStream(j.streams ?? []);
  if (!v) throw new AppError('INPUT_NOT_VIDEO', 'the file has no video stream');
  const frames = num(v.nb_read_packets) ?? 0;
  const durationSec = streamDuration(v) ?? num(j.format?.duration) ?? 0;
  return { frames, durationSec };
}

/**
 * Durations in seconds of the first video and first audio stream (header data only, no packet
 * scan). `videoSec` is 0 for a file without video (e.g. the job's .m4a audio); `audioSec` is
 * undefined without audio.
 */
export async function streamDurations(path: string, opts?: ProbeOptions): Promise<{ videoSec: number; audioSec: number | undefined }> {
  const { stdout } = await runFfprobe(path, ['-show_format', '-show_streams', '-of', 'json'], opts);
  const j = parseProbeJson(stdout);
  const streams = j.streams ?? [];
  const formatDuration = num(j.format?.duration);
  const v = firstVideoStream(streams);
  const a = streams.find((s) => s.codec_type === 'audio');
  return {
    videoSec: v ? (streamDuration(v) ?? formatDuration ?? 0) : 0,
    audioSec: a ? (streamDuration(a) ?? formatDuration) : undefined,
  };
}
