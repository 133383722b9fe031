import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '../../common/errors.js';
import { runFfmpeg } from '../../transcoder/run-ffmpeg.js';
import type { SegmentFacts, SegmentMedia, SubSegmentFile } from '../../node-agent/segment-media.js';

export interface SimulatedTranscoderOptions {
  /** Seconds of sleep per second of media in a sub-segment (0.1: ten times faster than real time). */
  secondsPerMediaSecond: number;
  /** Where the tiny stand-in clips are made (one per distinct frame count and rate, then re-used). */
  clipDir: string;
  /** How often progress is reported while "transcoding", ms (default 100). */
  progressEveryMs?: number;
}

/**
 * A stand-in for ffmpeg in the node agent, for the control-plane benchmark: the agent's whole
 * protocol runs for real (segment transfer, RunSegment with progress, fenced checkpoints, parts to
 * the uploader), but the media work is simulated:
 * - keyframes: every frame of the segment (its frame count and rate come with RunSegment), so
 *   sub-segment boundaries fall on frame boundaries without an ffprobe;
 * - split: no cut, only the frame count of each sub-segment;
 * - transcode: sleeps `secondsPerMediaSecond` × the sub-segment's media length, reporting
 *   progress, then writes, for every rendition, a tiny real H.264 clip with exactly the
 *   sub-segment's frame count — so the real uploader's merge, frame check and zip still pass.
 *   Each clip is generated once (per frame count and rate) and copied after that.
 */
export function simulatedTranscoder(o: SimulatedTranscoderOptions): SegmentMedia {
  const clips = new Map<string, Promise<string>>();
  const clipFor = (frames: number, fps: number): Promise<string> => {
    const key = `${frames}@${fps}`;
    let p = clips.get(key);
    if (!p) {
      const path = join(o.clipDir, `clip-${frames}f-${fps}fps.mp4`);
      p = makeClip(path, frames, fps).then(() => path);
      p.catch(() => clips.delete(key)); // a failed make is retried by the next caller
      clips.set(key, p);
    }
    return p;
  };
  const progressEveryMs = o.progressEveryMs ?? 100;

  return {
    // Async so that a bad request rejects rather than throws.
    keyframes: async (_path, facts) => {
      checkFacts(facts);
      const keyframes = Array.from({ length: facts.frames }, (_, i) => i / facts.fps);
      return { keyframes, durationSec: facts.frames / facts.fps };
    },

    split: async (path, _dir, cutPoints, facts) => {
      checkFacts(facts);
      const at = [0, ...cutPoints.map((t) => Math.round(t * facts.fps)), facts.frames];
      const subs: SubSegmentFile[] = [];
      for (let i = 0; i + 1 < at.length; i++) {
        const frames = at[i + 1]! - at[i]!;
        if (frames <= 0) throw new AppError('INVALID_ARGUMENT', `sub-segment ${i} would have ${frames} frames`);
        subs.push({ path, frames, durationSec: frames / facts.fps });
      }
      return subs;
    },

    transcode: async (input, outputs, t) => {
      const clip = clipFor(input.frames, t.fps);
      const totalMs = (input.frames / t.fps) * o.secondsPerMediaSecond * 1000;
      const started = Date.now();
      try {
        for (;;) {
          const elapsed = Date.now() - started;
          t.onProgress(Math.min(input.frames, Math.floor((elapsed / Math.max(1, totalMs)) * input.frames)));
          if (elapsed >= totalMs) break;
          await sleepUnlessAborted(Math.min(progressEveryMs, totalMs - elapsed), t.signal);
        }
        const src = await clip;
        await Promise.all(outputs.map((out) => copyFile(src, out.path)));
        t.onProgress(input.frames);
      } catch (err) {
        await Promise.all(outputs.map((out) => rm(out.path, { force: true }).catch(() => undefined)));
        throw err;
      }
    },
  };
}

function checkFacts(f: SegmentFacts): void {
  if (!(f.frames > 0) || !(f.fps > 0)) throw new AppError('INVALID_ARGUMENT', `the simulated transcoder needs the segment's frames and fps (got ${f.frames} frames at ${f.fps} fps)`);
}

function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new AppError('CANCELLED', 'simulated transcode cancelled'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AppError('CANCELLED', 'simulated transcode cancelled'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** A 64x36 H.264 clip of exactly `frames` frames (no B-frames, one keyframe a second). */
async function makeClip(path: string, frames: number, fps: number): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await runFfmpeg(
    [
      '-hide_banner',
      '-nostdin',
      '-y',
      '-loglevel',
      'error',
      '-f',
      'lavfi',
      '-i',
      `testsrc2=size=64x36:rate=${fps}`,
      '-frames:v',
      String(frames),
      '-c:v',
      'libx264',
      '-preset',
      'ultrafast',
      '-pix_fmt',
      'yuv420p',
      '-bf',
      '0',
      '-g',
      String(Math.max(1, Math.round(fps))),
      '-an',
      '-movflags',
      '+faststart',
      `file:${path}`,
    ],
    { noProgressMs: 60_000, wallClockMs: 120_000 },
  );
}
