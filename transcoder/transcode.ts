import { rm } from 'node:fs/promises';
import { buildTranscodeArgs, type TranscodeOutput } from './ffmpeg-args.js';
import { runFfmpeg, type RunOptions } from './run-ffmpeg.js';

/**
 * Transcodes one input (a split part) into every rendition with a single ffmpeg (decode once,
 * see buildTranscodeArgs). On any failure the partial outputs are deleted, so a half-written
 * file can never pass for a finished part; the error is runFfmpeg's (CANCELLED, TRANSCODE_FAILED).
 */
export async function transcodeToRenditions(
  input: string,
  outputs: TranscodeOutput[],
  opts: { fps: number; container: 'mp4' | 'mkv'; threads?: number } & RunOptions,
): Promise<void> {
  const { fps, container, threads, ...run } = opts;
  const args = buildTranscodeArgs(input, outputs, { fps, container, ...(threads !== undefined ? { threads } : {}) });
  try {
    await runFfmpeg(args, { ...run, binary: 'ffmpeg' });
  } catch (err) {
    await Promise.all(outputs.map((o) => rm(o.path, { force: true }).catch(() => undefined)));
    throw err;
  }
}
