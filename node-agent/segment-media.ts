import type { TranscodeOutput } from '../transcoder/ffmpeg-args.js';
import { readKeyframes } from '../transcoder/keyframes.js';
import { countFrames } from '../transcoder/probe.js';
import { splitVideo } from '../transcoder/split.js';
import { transcodeToRenditions } from '../transcoder/transcode.js';

/** What the coordinator says about a segment (RunSegment): its frame count and frame rate. */
export interface SegmentFacts {
  frames: number;
  fps: number;
}

/** One sub-segment ready to transcode: its file and exact frame count. */
export interface SubSegmentFile {
  path: string;
  frames: number;
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
  /** Cuts the segment at the interior boundaries (s) into files under `dir`, in play order. */
  split(segmentPath: string, dir: string, cutPoints: number[], facts: SegmentFacts, signal: AbortSignal): Promise<SubSegmentFile[]>;
  /** Writes every output (one per rendition); deletes partial outputs on failure. */
  transcode(input: SubSegmentFile, outputs: TranscodeOutput[], o: SubSegmentTranscode): Promise<void>;
}

/** The production media path: ffprobe packet scans, stream-copy cuts, one ffmpeg per sub-segment. */
export function ffmpegSegmentMedia(): SegmentMedia {
  return {
    keyframes: (segmentPath, _facts, signal) => readKeyframes(segmentPath, { signal }),
    split: async (segmentPath, dir, cutPoints, _facts, signal) => {
      const files = await splitVideo(segmentPath, dir, cutPoints, { signal });
      return Promise.all(files.map(async (path) => ({ path, frames: (await countFrames(path)).frames })));
    },
    transcode: (input, outputs, o) =>
      transcodeToRenditions(input.path, outputs, {
        fps: o.fps,
        container: 'mp4',
        ...(o.threads !== undefined ? { threads: o.threads } : {}),
        signal: o.signal,
        noProgressMs: o.noProgressMs,
        wallClockMs: o.wallClockMs,
        onProgress: (p) => o.onProgress(p.frame),
        ...(o.onSpawn ? { onSpawn: o.onSpawn } : {}),
      }),
  };
}
