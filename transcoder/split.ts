import { copyFile, link, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { AppError } from '../common/errors.js';
import { maxPixelsArg, type FfmpegLimits } from './ffmpeg-limits.js';
import { audioStartOffset, checkInputFile, demuxerArgs, INPUT_DEMUXERS, inputSource, parseProbeJson, runFfprobe, type InputDemuxer } from './ffprobe.js';
import { readPacketSummary, type KeyframeAt, type PacketSummary } from './keyframes.js';
import { runFfmpeg } from './run-ffmpeg.js';

/** Segments and sub-segments are always Matroska files written by splitVideo. */
export const SEGMENT_DEMUXER: InputDemuxer = 'matroska';

/** How an input is opened: the demuxer (when known), decoder picture cap, kernel limits. */
export interface InputOptions {
  /** `-f` for the input: the probed demuxer for user media, SEGMENT_DEMUXER for our segments. */
  format?: InputDemuxer;
  /** `-max_pixels` for the input's decoders (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
  /** Kernel limits of each ffmpeg/ffprobe process (default: FfmpegLimits' defaults). */
  limits?: FfmpegLimits;
}

/** Input options every ffmpeg reading the input gets (a staged file or a ranged read), ending with `-i <url>`. */
export function inputArgs(abs: string, o: InputOptions | undefined): string[] {
  const src = inputSource(abs);
  return [...src.protocol, '-format_whitelist', INPUT_DEMUXERS, '-max_pixels', maxPixelsArg(o?.maxPixels), ...demuxerArgs(o?.format), '-i', src.url];
}

/** File name of segment `i` written by splitVideo (we name every file; nothing comes from users). */
export function segmentFileName(i: number): string {
  return `seg-${String(i).padStart(4, '0')}.mkv`;
}

/**
 * Maps cut times (s, relative to the stream start, as readKeyframes reports them) to the
 * decode-order packet indices of the keyframes they name. Pure.
 *
 * Why indices: the segment muxer's `-segment_frames` cuts at "the first keyframe whose packet
 * index ≥ N", which does not depend on timestamps at all, whereas `-segment_times` compares
 * against timestamps that ffmpeg has already shifted by the file's start offset (e.g. audio that
 * starts before the video) and that ffprobe printed rounded to 1 µs — either could move a cut to
 * the next keyframe. A cut more than `toleranceSec` from any keyframe → INVALID_ARGUMENT.
 */
export function cutFramesForTimes(keys: readonly KeyframeAt[], cutTimesSec: readonly number[], toleranceSec: number): number[] {
  const out: number[] = [];
  for (const t of cutTimesSec) {
    if (!Number.isFinite(t) || t <= 0) throw new AppError('INVALID_ARGUMENT', `cut time ${t} s must be > 0 (0 is the start, not a cut)`);
    let best: KeyframeAt | undefined;
    for (const k of keys) {
      if (!best || Math.abs(k.timeSec - t) < Math.abs(best.timeSec - t)) best = k;
    }
    if (!best || Math.abs(best.timeSec - t) > toleranceSec) {
      throw new AppError('INVALID_ARGUMENT', `cut time ${t.toFixed(6)} s is not on a keyframe`);
    }
    const prev = out[out.length - 1];
    if (best.index <= 0 || (prev !== undefined && best.index <= prev)) {
      throw new AppError('INVALID_ARGUMENT', `cut times must name distinct keyframes in increasing order (at ${t.toFixed(6)} s)`);
    }
    out.push(best.index);
  }
  return out;
}

/** Half a frame tells neighbouring keyframes apart; ≥ 1 ms covers ffprobe's µs rounding. */
function cutTolerance(s: PacketSummary): number {
  return Math.max(0.001, Math.min(0.25, s.frameSec > 0 ? s.frameSec / 2 : 0.25));
}

/**
 * The frame (packet) count of each file splitVideo writes for these cuts: the segment muxer cuts
 * at exactly the keyframe packets `cutFramesForTimes` names, so segment i holds the packets from
 * its cut to the next. Pure; the node agents count what they receive against it.
 */
export function segmentFrameCounts(s: PacketSummary, cutTimesSec: readonly number[]): number[] {
  return segmentSpans(s, cutTimesSec).map((x) => x.frames);
}

/**
 * What each file of `splitVideo(…, cutTimesSec, { packets: s })` holds, from the scan alone: its
 * packets and its length, from keyframe to keyframe (the last file to
 * the end of the stream). The copy cuts before exactly those packets, so no file needs reading.
 */
export function segmentSpans(s: PacketSummary, cutTimesSec: readonly number[]): { frames: number; durationSec: number }[] {
  const at = cutFramesForTimes(s.keys, cutTimesSec, cutTolerance(s));
  const byIndex = new Map(s.keys.map((k) => [k.index, k.timeSec]));
  const packets = [0, ...at, s.frames];
  const times = [0, ...at.map((i) => byIndex.get(i)!), s.durationSec];
  return packets.slice(1).map((end, i) => ({ frames: end - packets[i]!, durationSec: Math.max(0, times[i + 1]! - times[i]!) }));
}

/** `outDir` as a segment-muxer filename pattern: '%' in our directory must not read as a format directive. */
function segmentPattern(outDir: string): string {
  return `file:${join(resolve(outDir), 'seg-').replace(/%/g, '%%')}%04d.mkv`;
}

/**
 * Cuts the first video stream of `input` at the given interior keyframe times (s, relative to the
 * stream start, not including 0) by stream copy (no re-encode) into Matroska files
 * `outDir/seg-0000.mkv`, ... and returns their absolute paths in play order.
 *
 * Every frame lands in exactly one file (the frame counts add up to the input's) and each file
 * starts with a keyframe and at timestamp 0. Audio, subtitles and data are dropped (audio is
 * encoded once, separately: extractAudio). A cut not on a keyframe → INVALID_ARGUMENT.
 */
export async function splitVideo(
  input: string,
  outDir: string,
  cutTimesSec: number[],
  /**
   * `packets`: the input's packet summary when the caller already read it (saves a scan).
   * `cutPackets`: cut before these decode-order packet indices (keyframes) instead of at
   * `cutTimesSec` (which must then list as many entries, for the file count).
   */
  opts?: {
    signal?: AbortSignal;
    timeoutMs?: number;
    packets?: PacketSummary;
    cutPackets?: number[];
    /** Each file as soon as it is complete (in order), while later ones are still being cut. */
    onFile?: (index: number, path: string) => void;
  } & InputOptions,
): Promise<string[]> {
  const { abs } = await checkInputFile(input);
  const probeOpts = {
    ...(opts?.signal ? { signal: opts.signal } : {}),
    ...(opts?.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    ...(opts?.format ? { format: opts.format } : {}),
    ...(opts?.maxPixels !== undefined ? { maxPixels: opts.maxPixels } : {}),
    ...(opts?.limits ? { limits: opts.limits } : {}),
  };
  const common = [
    '-hide_banner',
    '-nostdin',
    '-y',
    '-loglevel',
    'error',
    '-nostats',
    '-progress',
    'pipe:1',
    ...inputArgs(abs, opts),
    // V = video but not cover art; copy only, no decoder in the loop.
    '-map',
    '0:V:0',
    '-c',
    'copy',
    '-an',
    '-sn',
    '-dn',
    '-map_metadata',
    '-1',
    '-map_chapters',
    '-1',
  ];
  let args: string[];
  if (cutTimesSec.length === 0) {
    args = [...common, '-avoid_negative_ts', 'disabled', '-f', 'matroska', `file:${join(resolve(outDir), segmentFileName(0))}`];
  } else {
    const summary = opts?.cutPackets ? undefined : (opts?.packets ?? (await readPacketSummary(abs, probeOpts)));
    const frames = opts?.cutPackets ?? cutFramesForTimes(summary!.keys, cutTimesSec, cutTolerance(summary!));
    if (frames.length !== cutTimesSec.length || frames.some((f, i) => !Number.isInteger(f) || f <= 0 || (i > 0 && f <= frames[i - 1]!))) {
      throw new AppError('INTERNAL', 'packet cuts must be increasing positive indices, one per cut');
    }
    args = [
      ...common,
      '-f',
      'segment',
      '-segment_format',
      'matroska',
      '-segment_frames',
      frames.join(','),
      '-reset_timestamps',
      '1',
      // The default (make non-negative) would shift the first segment by the B-frame delay; with it
      // disabled every segment's first frame is at 0 (Matroska stores presentation times only).
      '-avoid_negative_ts',
      'disabled',
      // The muxer lists each file once it is closed: the caller may send it while the rest are cut.
      ...(opts?.onFile ? ['-segment_list', `file:${join(resolve(outDir), 'segments.list')}`, '-segment_list_type', 'flat'] : []),
      segmentPattern(outDir),
    ];
  }
  const files = Array.from({ length: cutTimesSec.length + 1 }, (_, i) => join(resolve(outDir), segmentFileName(i)));
  let reported = 0;
  const report = (upTo: number): void => {
    for (; reported < Math.min(upTo, files.length); reported++) opts?.onFile?.(reported, files[reported]!);
  };
  let polling = false;
  const poll =
    opts?.onFile && cutTimesSec.length > 0
      ? setInterval(() => {
          if (polling) return;
          polling = true;
          void readFile(join(resolve(outDir), 'segments.list'), 'utf8')
            .then((list) => report(list.split('\n').filter((l) => l.trim() !== '').length))
            .catch(() => undefined)
            .finally(() => {
              polling = false;
            });
        }, 50)
      : undefined;
  try {
    await runFfmpeg(args, {
      ...(opts?.signal ? { signal: opts.signal } : {}),
      ...(opts?.timeoutMs !== undefined ? { wallClockMs: opts.timeoutMs } : {}),
      ...(opts?.limits ? { limits: opts.limits } : {}),
    });
  } finally {
    if (poll) clearInterval(poll);
  }
  for (const f of files) {
    const st = await stat(f).catch(() => undefined);
    if (!st || st.size === 0) {
      throw new AppError('TRANSCODE_FAILED', `splitting produced fewer segments than the ${files.length} planned (missing ${segmentFileName(files.indexOf(f))})`);
    }
  }
  report(files.length);
  return files;
}

/**
 * The audio filter that puts the first audio sample where it belongs relative to the first video
 * frame: video segments restart at 0 at the first video frame, so audio must start `offsetSec`
 * (= audio start − video start, s) after it: delayed with silence when positive, trimmed when
 * negative. Pure; numbers only.
 */
export function audioAlignFilter(offsetSec: number): string {
  const base = 'asetpts=PTS-STARTPTS';
  if (!Number.isFinite(offsetSec) || Math.abs(offsetSec) < 0.001) return base;
  if (offsetSec > 0) return `${base},adelay=delays=${Math.round(offsetSec * 1000)}:all=1`;
  return `${base},atrim=start=${(-offsetSec).toFixed(6)},asetpts=PTS-STARTPTS`;
}

/** Audio track `track`'s start relative to the first video stream's (s), by ffprobe (the rule the probe's timeline uses). */
async function audioOffset(abs: string, track: number, opts: { signal?: AbortSignal } & InputOptions): Promise<number> {
  const { stdout } = await runFfprobe(abs, ['-show_streams', '-of', 'json'], {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.format ? { format: opts.format } : {}),
    ...(opts.maxPixels !== undefined ? { maxPixels: opts.maxPixels } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
  const j = parseProbeJson(stdout);
  const a = (j.streams ?? []).filter((s) => s.codec_type === 'audio')[track];
  if (!a) throw new AppError('INPUT_NOT_VIDEO', `the input has no audio track ${track} to extract`);
  return audioStartOffset(j, a);
}

/**
 * Encodes audio track `track` (0-based among the audio streams; default 0) of `input` once, to
 * AAC at `bitrateKbps` in an .m4a (`-vn`), aligned so that t=0 is the first presented video
 * frame (see audioAlignFilter; edit lists are applied by the demuxer), keeping its channels or,
 * with `downmix`, as a stereo downmix. `offsetSec` is the track's start relative to the first
 * video frame when the caller knows it from its probe (else one ffprobe finds it). `onProgress`
 * gets the encoded position in seconds.
 */
export async function extractAudio(
  input: string,
  outPath: string,
  opts: { bitrateKbps: number; track?: number; downmix?: boolean; offsetSec?: number; signal?: AbortSignal; onProgress?: (sec: number) => void } & InputOptions,
): Promise<void> {
  const track = opts.track ?? 0;
  if (!Number.isInteger(track) || track < 0 || track > 63) throw new AppError('INVALID_ARGUMENT', `audio track ${String(track)} is not valid`);
  if (!Number.isInteger(opts.bitrateKbps) || opts.bitrateKbps < 16 || opts.bitrateKbps > 1024) {
    throw new AppError('INVALID_ARGUMENT', `audio bitrate must be an integer from 16 to 1024 kbps, got ${String(opts.bitrateKbps)}`);
  }
  const { abs } = await checkInputFile(input);
  const offset = opts.offsetSec ?? (await audioOffset(abs, track, opts));
  const args = [
    '-hide_banner',
    '-nostdin',
    '-y',
    '-loglevel',
    'error',
    '-nostats',
    '-progress',
    'pipe:1',
    ...inputArgs(abs, opts),
    '-map',
    `0:a:${track}`,
    '-vn',
    '-sn',
    '-dn',
    '-map_metadata',
    '-1',
    '-map_chapters',
    '-1',
    '-af',
    audioAlignFilter(offset),
    ...(opts.downmix ? ['-ac', '2'] : []),
    '-c:a',
    'aac',
    '-b:a',
    `${opts.bitrateKbps}k`,
    '-f',
    'mp4',
    `file:${resolve(outPath)}`,
  ];
  await runFfmpeg(args, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.onProgress ? { onProgress: (p: { outTimeSec: number }) => opts.onProgress?.(p.outTimeSec) } : {}),
  });
}

/**
 * Writes one Matroska file per frame cut (`segmentFileName(i)` under `outDir`) holding exactly its
 * packet range [fromPacket, toPacket), by stream copy: the input is cut once at every range edge,
 * and a segment made of several pieces (its head and tail are the boundary GOPs it shares with
 * its neighbours) is joined from them with the concat demuxer. Returns the files in cut order.
 */
export async function splitFrameCuts(
  input: string,
  outDir: string,
  cuts: readonly { fromPacket: number; toPacket: number }[],
  totalPackets: number,
  opts?: { signal?: AbortSignal; timeoutMs?: number; onSegment?: (index: number, path: string) => void } & InputOptions,
): Promise<string[]> {
  const edges = [...new Set(cuts.flatMap((c) => [c.fromPacket, c.toPacket]))].filter((e) => e > 0 && e < totalPackets).sort((a, b) => a - b);
  const piecesDir = join(resolve(outDir), 'pieces');
  await mkdir(piecesDir, { recursive: true });
  const starts = [0, ...edges];
  const spans = cuts.map((c, i) => {
    const first = starts.indexOf(c.fromPacket);
    const last = c.toPacket >= totalPackets ? starts.length - 1 : starts.indexOf(c.toPacket) - 1;
    if (first < 0 || last < first) throw new AppError('INTERNAL', `cut ${i} [${c.fromPacket}, ${c.toPacket}) does not match the pieces`);
    return { first, last };
  });
  const pieces = Array.from({ length: starts.length }, (_, i) => join(piecesDir, segmentFileName(i)));
  const out: string[] = [];
  // Segment i is made (and handed on) as soon as the pieces it needs are cut; one at a time, in order.
  let piecesReady = 0;
  let building: Promise<void> = Promise.resolve();
  const buildReady = (): void => {
    building = building.then(async () => {
      while (out.length < cuts.length && spans[out.length]!.last < piecesReady) {
        const i = out.length;
        out.push(await buildSegment(i, spans[i]!.first, spans[i]!.last));
        opts?.onSegment?.(i, out[i]!);
      }
    });
    // Awaited below once the split ends; until then a failed build (cancelled with the job, say)
    // must not be an unhandled rejection, which would end the whole process.
    building.catch(() => undefined);
  };
  const { onSegment: _onSegment, ...splitOpts } = opts ?? {};
  const split = splitVideo(
    input,
    piecesDir,
    edges.map((_, i) => i + 1),
    {
      ...splitOpts,
      cutPackets: edges,
      onFile: (i) => {
        piecesReady = i + 1;
        buildReady();
      },
    },
  );
  // A failed build ends the split too (its error is the one that counts).
  const built = split.then(
    () => building,
    async (err: unknown) => {
      await building.catch(() => undefined);
      throw err;
    },
  );
  await built;
  if (out.length !== cuts.length) throw new AppError('INTERNAL', `made ${out.length} of ${cuts.length} segments from the pieces`);
  await rm(piecesDir, { recursive: true, force: true });
  return out;

  async function buildSegment(i: number, first: number, last: number): Promise<string> {
    const target = join(resolve(outDir), segmentFileName(i));
    if (first === last) {
      // A piece that is a whole segment becomes it without a copy (the pieces go at the end); a
      // piece two segments share (a boundary GOP) is linked twice, which is as good: nothing writes to it.
      await link(pieces[first]!, target).catch(() => copyFile(pieces[first]!, target));
    } else {
      const list = join(piecesDir, `concat-${i}.txt`);
      await writeFile(
        list,
        `ffconcat version 1.0\n${pieces
          .slice(first, last + 1)
          .map((p) => `file '${basename(p)}'`)
          .join('\n')}\n`,
      );
      await runFfmpeg(
        [
          '-hide_banner',
          '-nostdin',
          '-y',
          '-loglevel',
          'error',
          '-nostats',
          '-progress',
          'pipe:1',
          '-protocol_whitelist',
          'file',
          '-format_whitelist',
          'concat,matroska',
          '-f',
          'concat',
          '-safe',
          '1',
          '-i',
          `file:${list}`,
          '-map',
          '0:V:0',
          '-c',
          'copy',
          '-map_metadata',
          '-1',
          '-map_chapters',
          '-1',
          '-avoid_negative_ts',
          'disabled',
          '-f',
          'matroska',
          `file:${target}`,
        ],
        {
          ...(opts?.signal ? { signal: opts.signal } : {}),
          ...(opts?.timeoutMs !== undefined ? { wallClockMs: opts.timeoutMs } : {}),
          ...(opts?.limits ? { limits: opts.limits } : {}),
        },
      );
    }
    return target;
  }
}
