import { cachedFfmpegAnswer } from './ffmpeg-info-cache.js';
import { runFfmpeg } from './run-ffmpeg.js';

/**
 * Parses `ffmpeg -hide_banner -encoders` output into encoder names. Pure. Entry lines look like
 * " V....D libx264   libx264 H.264 / AVC ..."; the legend lines (" V..... = Video") are skipped.
 */
export function parseEncoderList(stdout: string): Set<string> {
  const names = new Set<string>();
  for (const line of stdout.split('\n')) {
    const m = /^\s*[VAS][A-Z.]{5}\s+([A-Za-z0-9_.-]+)\s/.exec(line);
    if (m?.[1] && m[1] !== '=') names.add(m[1]);
  }
  return names;
}

let cached: Promise<Set<string>> | undefined;

/**
 * The encoders this machine's ffmpeg has (e.g. libx264, libsvtav1, aac). Asked once per process
 * (and kept on disk for the next: cachedFfmpegAnswer); a failed attempt is not cached, so the next call retries.
 */
export async function availableEncoders(): Promise<Set<string>> {
  if (!cached) {
    const args = ['-hide_banner', '-nostdin', '-encoders'];
    const attempt = cachedFfmpegAnswer(args.join(' '), async () => (await runFfmpeg(args, { wallClockMs: 30_000, noProgressMs: 30_000 })).stdout).then(parseEncoderList);
    cached = attempt;
    attempt.catch(() => {
      if (cached === attempt) cached = undefined;
    });
  }
  return new Set(await cached);
}
