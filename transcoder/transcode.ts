import { rm, stat } from 'node:fs/promises';
import { AppError } from '../common/errors.js';
import { buildTranscodeArgs, outputCaps, type TranscodeArgsOptions, type TranscodeOutput } from './ffmpeg-args.js';
import { runFfmpeg, type RunOptions } from './run-ffmpeg.js';

/**
 * Transcodes one input (a split part) into every rendition with a single ffmpeg (decode once,
 * see buildTranscodeArgs). On any failure the partial outputs are deleted, so a half-written
 * file can never pass for a finished part; the error is runFfmpeg's (CANCELLED, TRANSCODE_FAILED,
 * LIMIT_EXCEEDED). ffmpeg ends an output quietly when it reaches its `-fs` cap: such an output
 * is cut short, so reaching the cap is LIMIT_EXCEEDED too.
 */
export async function transcodeToRenditions(input: string, outputs: TranscodeOutput[], opts: TranscodeArgsOptions & RunOptions): Promise<void> {
  const { fps, container, threads, inputFormat, maxPixels, expectedDurationSec, treatment, leadInFrames, keepFrames, constantRate, keyframeGrid, ...run } = opts;
  const args = buildTranscodeArgs(input, outputs, {
    fps,
    container,
    ...(threads !== undefined ? { threads } : {}),
    ...(inputFormat !== undefined ? { inputFormat } : {}),
    ...(maxPixels !== undefined ? { maxPixels } : {}),
    ...(expectedDurationSec !== undefined ? { expectedDurationSec } : {}),
    ...(treatment !== undefined ? { treatment } : {}),
    ...(leadInFrames !== undefined ? { leadInFrames } : {}),
    ...(keepFrames !== undefined ? { keepFrames } : {}),
    ...(constantRate !== undefined ? { constantRate } : {}),
    ...(keyframeGrid !== undefined ? { keyframeGrid } : {}),
  });
  try {
    await runFfmpeg(args, { ...run, binary: 'ffmpeg' });
    if (expectedDurationSec !== undefined) {
      for (const o of outputs) {
        const cap = outputCaps(o.rendition, expectedDurationSec).sizeBytes;
        const size = (await stat(o.path).catch(() => undefined))?.size;
        if (size === undefined) throw new AppError('TRANSCODE_FAILED', `ffmpeg wrote no ${o.rendition.name} output`);
        if (size >= cap) throw new AppError('LIMIT_EXCEEDED', `rendition ${o.rendition.name} reached its size cap of ${cap} bytes for ${expectedDurationSec.toFixed(3)} s of video; stopped`);
      }
    }
  } catch (err) {
    await Promise.all(outputs.map((o) => rm(o.path, { force: true }).catch(() => undefined)));
    throw err;
  }
}
