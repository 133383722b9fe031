import type { TranscodeOutput } from '../transcoder/ffmpeg-args.js';
import { keyframeTimes, readPacketSummary, summarizePackets, type PacketSummary } from '../transcoder/keyframes.js';
import { readMatroskaPackets } from '../transcoder/matroska-packets.js';
import { countFrames } from '../transcoder/probe.js';
import { SEGMENT_DEMUXER, segmentFrameCounts, segmentSpans, splitFrameCuts, splitVideo, type InputOptions } from '../transcoder/split.js';
import type { FfmpegLimits } from '../transcoder/ffmpeg-limits.js';
import { WorkerPool } from '../transcoder/worker-pool.js';
import { transcodeToRenditions } from '../transcoder/transcode.js';
import type { ChunkGrid, Rate } from '../transcoder/frame-rate.js';
import type { PictureTreatment } from '../transcoder/treatment.js';

/** What the coordinator says about a segment (RunSegment): its frame count and frame rate. */
export interface SegmentFacts {
  frames: number;
  fps: number;
}

/** One sub-segment ready to transcode: its file, exact frame count and duration (s). */
export interface SubSegmentFile {
  path: string;
  frames: number;
  durationSec: number;
}

export interface SubSegmentTranscode {
  fps: number;
  /** ffmpeg threads (absent: ffmpeg decides). */
  threads?: number;
  signal: AbortSignal;
  noProgressMs: number;
  wallClockMs: number;
  /** Frames of the sub-segment done so far. */
  onProgress: (frame: number) => void;
  onSpawn?: (pid: number) => void;
  /** What the sub-segment lasts (s): outputs are capped in time (-t) and size (-fs) from it. */
  expectedDurationSec?: number;
  /** Rotation, deinterlacing, colour (default: none needed). */
  treatment?: PictureTreatment;
  /** Decoded frames to drop at the start (an edit list's or a frame cut's lead-in). */
  leadInFrames?: number;
  /** Frames to keep after the lead-in (the rest is a frame cut's lead-out); all when absent. */
  keepFrames?: number;
  /** Convert to the job's constant rate: this chunk's share of its grid. */
  constantRate?: { rate: Rate; grid: Pick<ChunkGrid, 'frames' | 'shiftSec'> };
  /** Streaming: IDR frames forced on the job's time grid (local time of the first, and the period). */
  keyframeGrid?: { periodSec: number; firstSec: number };
}

/**
 * Everything the node agent does to media, and nothing else: find keyframes, cut a segment into
 * sub-segments, transcode a sub-segment into every rendition. The agent's protocol (transfer,
 * fenced checkpoints, parts to the uploader, progress) is the same whatever does this;
 * production uses ffmpeg (`ffmpegSegmentMedia`), the control-plane benchmark a simulation.
 */
export interface SegmentMedia {
  /** Keyframe times (s from the segment start, first 0) and the segment's duration (s). */
  keyframes(segmentPath: string, facts: SegmentFacts, signal: AbortSignal): Promise<{ keyframes: number[]; durationSec: number }>;
  /**
   * Cuts the segment at the interior boundaries (s) into files under `dir`, in play order. With
   * `onFile`, each file may be handed over (counted) as soon as it is complete, before the rest.
   */
  split(segmentPath: string, dir: string, cutPoints: number[], facts: SegmentFacts, signal: AbortSignal, onFile?: (index: number, file: SubSegmentFile) => void): Promise<SubSegmentFile[]>;
  /**
   * The frames of each file a split at these cut points makes, from the packet scan that found the
   * keyframes (no file needed): the first chunk is transcoded straight from the segment file while
   * the cut runs. Undefined without that scan (optional: the simulation has none).
   */
  plannedFrames?(segmentPath: string, cutPoints: readonly number[]): number[] | undefined;
  /** The segment's packets (presented times, keyframes): streaming jobs cut chunks at exact frames. Optional (the simulation has none). */
  packets?(segmentPath: string, signal: AbortSignal): Promise<PacketSummary>;
  /** Cuts packet ranges [fromPacket, toPacket) of the segment into files under `dir`, in order (ranges may share a GOP). */
  splitFrames?(segmentPath: string, dir: string, cuts: readonly { fromPacket: number; toPacket: number }[], totalPackets: number, signal: AbortSignal): Promise<string[]>;
  /** Writes every output (one per rendition); deletes partial outputs on failure. */
  transcode(input: SubSegmentFile, outputs: TranscodeOutput[], o: SubSegmentTranscode): Promise<void>;
}

/** A segment file's packets from its Matroska headers; undefined (then ffprobe scans it) for a file the reader does not take. */
async function headerPackets(path: string): Promise<PacketSummary | undefined> {
  try {
    const rows = await readMatroskaPackets(path);
    return rows ? summarizePackets(rows) : undefined;
  } catch {
    return undefined; // unreadable or unplannable here: ffprobe's scan reports it
  }
}

/**
 * The production media path: packet lists from the segments' Matroska headers (an ffprobe scan
 * when the reader does not take a file), stream-copy cuts, one ffmpeg per sub-segment. Segments
 * are Matroska files our coordinator cut: they are opened as nothing else, with the decoder
 * picture cap and the kernel limits of `limits`.
 */
export function ffmpegSegmentMedia(o: { maxPixels?: number; limits?: FfmpegLimits } = {}): SegmentMedia {
  const seg: InputOptions = {
    format: SEGMENT_DEMUXER,
    ...(o.maxPixels !== undefined ? { maxPixels: o.maxPixels } : {}),
    ...(o.limits ? { limits: o.limits } : {}),
  };
  // The packet scan that found a segment's keyframes also serves its split, which follows at once
  // (one scan, not two; another segment's scan in between only costs its split a scan).
  let scanned: { path: string; summary: PacketSummary } | undefined;
  // Our segments' packets come from their Matroska block headers, read here (a few ms); ffprobe
  // scans only a file that reader does not take.
  const scan = async (segmentPath: string, signal: AbortSignal): Promise<PacketSummary> => {
    signal.throwIfAborted();
    return (await headerPackets(segmentPath)) ?? readPacketSummary(segmentPath, { signal, ...seg });
  };
  return {
    keyframes: async (segmentPath, _facts, signal) => {
      const summary = await scan(segmentPath, signal);
      scanned = { path: segmentPath, summary };
      return keyframeTimes(summary);
    },
    plannedFrames: (segmentPath, cutPoints) => (scanned?.path === segmentPath ? segmentFrameCounts(scanned.summary, cutPoints) : undefined),
    packets: (segmentPath, signal) => scan(segmentPath, signal),
    splitFrames: (segmentPath, dir, cuts, totalPackets, signal) => splitFrameCuts(segmentPath, dir, cuts, totalPackets, { signal, ...seg }),
    split: async (segmentPath, dir, cutPoints, _facts, signal, onFile) => {
      const packets = scanned?.path === segmentPath ? scanned.summary : undefined;
      if (packets) scanned = undefined;
      if (packets) {
        // The copy cuts before the scan's keyframe packets (-segment_frames), so each file holds
        // the packets between two of them: counted from the scan, not by an ffprobe per file. (An
        // ffprobe starts in 0.12–0.2 s here, against a few ms of copying: 120 half-second chunks
        // made a segment's first chunks wait over 15 s for CPU on a busy 2-core machine.) The
        // merged renditions are still counted against the source before anything is recorded.
        const spans = segmentSpans(packets, cutPoints);
        const file = (i: number, path: string): SubSegmentFile => ({ path, ...spans[i]! });
        const paths = await splitVideo(segmentPath, dir, cutPoints, { signal, ...seg, packets, onFile: (i, path) => onFile?.(i, file(i, path)) });
        return paths.map((path, i) => file(i, path));
      }
      // Without the scan (another segment's came in between), every chunk is counted from its own
      // file (the agent checks the sum against the plan) as soon as the copy has closed it, two at a time: a long segment has dozens of chunks, and as
      // many ffprobes at once starved the process (its etcd lease keep-alive included) of CPU.
      const counting = new WorkerPool(2);
      const counted: Promise<SubSegmentFile>[] = [];
      const count = (i: number, path: string): void => {
        if (counted[i]) return;
        counted[i] = counting.run(async () => {
          const f = { path, ...(await countFrames(path, { ...seg, signal })) };
          onFile?.(i, f);
          return f;
        }, signal);
        counted[i].catch(() => undefined);
      };
      const files = await splitVideo(segmentPath, dir, cutPoints, { signal, ...seg, onFile: count });
      files.forEach((f, i) => count(i, f));
      return Promise.all(files.map((_, i) => counted[i]!));
    },
    transcode: (input, outputs, t) =>
      transcodeToRenditions(input.path, outputs, {
        fps: t.fps,
        container: 'mp4',
        inputFormat: SEGMENT_DEMUXER,
        ...(seg.maxPixels !== undefined ? { maxPixels: seg.maxPixels } : {}),
        ...(seg.limits ? { limits: seg.limits } : {}),
        ...(t.expectedDurationSec !== undefined ? { expectedDurationSec: t.expectedDurationSec } : {}),
        ...(t.threads !== undefined ? { threads: t.threads } : {}),
        ...(t.treatment ? { treatment: t.treatment } : {}),
        ...(t.leadInFrames !== undefined ? { leadInFrames: t.leadInFrames } : {}),
        ...(t.keepFrames !== undefined ? { keepFrames: t.keepFrames } : {}),
        ...(t.constantRate ? { constantRate: t.constantRate } : {}),
        ...(t.keyframeGrid ? { keyframeGrid: t.keyframeGrid } : {}),
        signal: t.signal,
        noProgressMs: t.noProgressMs,
        wallClockMs: t.wallClockMs,
        onProgress: (p) => t.onProgress(p.frame),
        ...(t.onSpawn ? { onSpawn: t.onSpawn } : {}),
      }),
  };
}
