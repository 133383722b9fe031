import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';

export interface SampleOptions {
  seconds: number;
  width: number;
  height: number;
  fps: number;
  /** Keyframe interval in frames (default: one per second). */
  gop?: number;
  audio?: boolean;
  /** x264 preset for making the sample (default ultrafast: the sample is not what we measure). */
  preset?: string;
}

/**
 * Generates a test clip with real motion (testsrc2) and a 440 Hz tone: H.264 in MP4, closed GOPs
 * with a keyframe every `gop` frames, AAC audio. Used by the demo, the tests and the benchmarks.
 */
export function sampleArgs(path: string, o: SampleOptions): string[] {
  const gop = o.gop ?? o.fps;
  const args = ['-hide_banner', '-nostdin', '-y', '-f', 'lavfi', '-i', `testsrc2=size=${o.width}x${o.height}:rate=${o.fps}:duration=${o.seconds}`];
  if (o.audio !== false) args.push('-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${o.seconds}`);
  args.push('-c:v', 'libx264', '-preset', o.preset ?? 'ultrafast', '-pix_fmt', 'yuv420p', '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0', '-bf', '2');
  if (o.audio !== false) args.push('-c:a', 'aac', '-b:a', '128k', '-shortest');
  args.push('-movflags', '+faststart', `file:${path}`);
  return args;
}

export async function makeSample(path: string, o: SampleOptions): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await runFfmpeg(sampleArgs(path, o), { noProgressMs: 120_000 });
}
