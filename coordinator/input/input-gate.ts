import { AppError } from '../../common/errors.js';
import type { MediaInfo } from '../../transcoder/probe.js';

export interface GateLimits {
  maxDurationSec: number;
  maxWidth: number;
  maxHeight: number;
  maxFps: number;
  maxStreams: number;
  maxAudioChannels: number;
  /** Most pixels a job may ask the cluster to decode and encode: frames × width × height. */
  maxWorkPixels: number;
}

/**
 * The work an input claims, in pixels: its frames (the larger of the packets it holds and what
 * its duration × frame rate claims — either may be the lie) times its picture size.
 */
export function claimedWork(m: MediaInfo): { frames: number; pixels: number } {
  const frames = Math.max(m.video.frames, Math.round(m.durationSec * m.video.fps));
  return { frames, pixels: frames * m.video.width * m.video.height };
}

/** Containers we accept, as ffprobe names them (its demuxer name lists). */
const FORMATS = ['mov,mp4,m4a,3gp,3g2,mj2', 'matroska,webm', 'mpegts', 'avi', 'mxf'];
/** Demuxers that follow references to other files or URLs: never accepted. */
const REFERENCE_FORMATS = ['hls', 'dash', 'concat', 'ffconcat', 'image2', 'sdp', 'rtp', 'rtsp', 'tee', 'data', 'subfile', 'mpegtsraw'];
const VIDEO_CODECS = new Set(['h264', 'hevc', 'vp8', 'vp9', 'av1', 'mpeg2video', 'mpeg4', 'prores', 'mpeg1video', 'mjpeg']);
const AUDIO_CODECS = new Set(['aac', 'mp3', 'mp2', 'opus', 'vorbis', 'ac3', 'eac3', 'flac', 'alac', 'pcm_s16le', 'pcm_s24le', 'pcm_s32le', 'pcm_f32le', 'pcm_s16be', 'pcm_s24be']);
/** MP4 sample entries of encrypted (CENC) tracks. */
const ENCRYPTED_TAGS = new Set(['encv', 'enca', 'encs', 'enct']);

/**
 * The input gate: only an allow-list of containers and codecs passes, never a playlist or any
 * other reference format, no attachments or encrypted tracks, and everything within the limits.
 * Each refusal is a permanent error with a message the user can act on.
 */
export function gateInput(m: MediaInfo, l: GateLimits): void {
  const fmt = m.formatName;
  if (REFERENCE_FORMATS.some((r) => fmt.split(',').includes(r))) {
    throw new AppError('UNSUPPORTED_FORMAT', `"${fmt}" inputs (playlists and other files that point at further files) are not accepted; send the media file itself`);
  }
  if (!FORMATS.includes(fmt)) throw new AppError('UNSUPPORTED_FORMAT', `the container "${fmt}" is not accepted; use MP4/MOV, Matroska/WebM, MPEG-TS, AVI or MXF`);
  if (!VIDEO_CODECS.has(m.video.codec)) throw new AppError('UNSUPPORTED_CODEC', `the video codec "${m.video.codec}" is not accepted`);
  for (const s of m.streams) {
    if (s.type === 'attachment') throw new AppError('UNSUPPORTED_FORMAT', 'inputs with attachments (fonts, files) are not accepted');
    if (ENCRYPTED_TAGS.has(s.tag)) throw new AppError('UNSUPPORTED_FORMAT', 'encrypted media is not accepted');
  }
  if (m.audio && !AUDIO_CODECS.has(m.audio.codec)) throw new AppError('UNSUPPORTED_CODEC', `the audio codec "${m.audio.codec}" is not accepted`);
  const fail = (what: string): never => {
    throw new AppError('LIMIT_EXCEEDED', what);
  };
  if (m.streamCount > l.maxStreams) fail(`the input has ${m.streamCount} streams; the limit is ${l.maxStreams}`);
  if (m.video.width > l.maxWidth || m.video.height > l.maxHeight) fail(`the input is ${m.video.width}x${m.video.height}; the limit is ${l.maxWidth}x${l.maxHeight}`);
  if (!(m.durationSec > 0)) throw new AppError('INPUT_NOT_VIDEO', 'the input has no duration');
  if (m.durationSec > l.maxDurationSec) fail(`the input lasts ${Math.round(m.durationSec)} s; the limit is ${l.maxDurationSec} s`);
  if (m.video.fps > l.maxFps) fail(`the input runs at ${m.video.fps} fps; the limit is ${l.maxFps}`);
  if (m.audio && m.audio.channels > l.maxAudioChannels) fail(`the input has ${m.audio.channels} audio channels; the limit is ${l.maxAudioChannels}`);
  // Each limit above may hold while their product is a compute bomb: a 10 MB file claiming 6 h
  // of 8K at 240 fps (5.2 M frames, 1.7e14 pixels) passes them all.
  const work = claimedWork(m);
  if (work.pixels > l.maxWorkPixels) {
    fail(
      `the input claims ${work.frames} frames of ${m.video.width}x${m.video.height} (${work.pixels.toExponential(2)} pixels to transcode); the work limit MAX_WORK_PIXELS is ${l.maxWorkPixels.toExponential(2)}`,
    );
  }
  // A container that claims far more time than its frames cover (e.g. 1 frame "lasting" hours)
  // is lying: refuse it rather than plan segments for a duration that is not there.
  const covered = m.video.frames / Math.max(m.video.fps, 1);
  if (m.durationSec > 60 && m.durationSec > covered * 10) {
    throw new AppError('UNSUPPORTED_FORMAT', `the input claims ${Math.round(m.durationSec)} s but its ${m.video.frames} frames cover ${covered.toFixed(1)} s`);
  }
}

/**
 * Recognises playlists and reference formats by their first bytes, before any ffmpeg tool opens
 * the file: such inputs are refused outright with a clear reason.
 */
export function sniffReference(head: Buffer): string | undefined {
  const text = head
    .toString('latin1')
    .replace(/^\uFEFF/, '')
    .trimStart();
  if (text.startsWith('#EXTM3U')) return 'an HLS playlist (m3u8)';
  if (/^ffconcat\s+version/i.test(text) || /^file\s+'/m.test(text.slice(0, 200))) return 'an ffconcat list';
  if (text.startsWith('<?xml') && text.includes('<MPD')) return 'a DASH manifest (mpd)';
  if (text.startsWith('v=0')) return 'an SDP description';
  if (text.startsWith('[playlist]') || text.startsWith('<?wpl') || text.startsWith('#EXTINF')) return 'a playlist';
  return undefined;
}
