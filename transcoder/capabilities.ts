import { existsSync } from 'node:fs';
import { codecFamilies, HARDWARE } from '../common/placement.js';
import { cachedFfmpegAnswer } from './ffmpeg-info-cache.js';
import { runFfmpeg } from './run-ffmpeg.js';

/** The software encoder whose pixel formats say whether a family has 10-bit output. */
const TEN_BIT: Record<string, string[]> = { h264: ['libx264'], hevc: ['libx265'], av1: ['libsvtav1', 'libaom-av1'] };

/** True when `ffmpeg -h encoder=<name>` lists a 10-bit 4:2:0 pixel format. Pure. */
export function hasTenBit(encoderHelp: string): boolean {
  const line = /Supported pixel formats:([^\n]*)/.exec(encoderHelp)?.[1] ?? '';
  return /\byuv420p10le\b|\bp010le\b/.test(line);
}

/** A tiny encode on the device behind a hardware family (the encoder being in the build proves nothing). */
function probeArgs(family: string, encoder: string, device: string): string[] {
  const src = ['-f', 'lavfi', '-i', 'color=c=gray:s=256x144:d=0.2'];
  if (family === 'vaapi') return ['-hide_banner', '-vaapi_device', device, ...src, '-vf', 'format=nv12,hwupload', '-c:v', encoder, '-f', 'null', '-'];
  if (family === 'qsv') return ['-hide_banner', '-init_hw_device', 'qsv=hw', '-filter_hw_device', 'hw', ...src, '-vf', 'hwupload=extra_hw_frames=16,format=qsv', '-c:v', encoder, '-f', 'null', '-'];
  return ['-hide_banner', ...src, '-c:v', encoder, '-f', 'null', '-'];
}

/**
 * What this node can encode, as capability families: `h264`, `hevc`, `av1` (its software
 * encoders), `<family>-10bit` when that encoder takes 10-bit input, and `nvenc`/`qsv`/`vaapi` only
 * when a probe encode on the device succeeds. Probes run in parallel, each with a 10 s deadline.
 */
export async function probeCapabilities(encoders: ReadonlySet<string>, opts: { renderDevice?: string } = {}): Promise<string[]> {
  const device = opts.renderDevice ?? '/dev/dri/renderD128';
  const families = codecFamilies(encoders);
  const run = (args: string[]) => runFfmpeg(args, { wallClockMs: 10_000, noProgressMs: 10_000 });
  const tenBit = families.map(async (f) => {
    const enc = TEN_BIT[f]?.find((e) => encoders.has(e));
    if (!enc) return undefined;
    const args = ['-hide_banner', '-h', `encoder=${enc}`];
    const help = await cachedFfmpegAnswer(args.join(' '), async () => (await run(args)).stdout).catch(() => '');
    return hasTenBit(help) ? `${f}-10bit` : undefined;
  });
  const hardware = Object.entries(HARDWARE).map(async ([family, names]) => {
    const enc = names.find((e) => encoders.has(e));
    if (!enc) return undefined;
    if ((family === 'vaapi' || family === 'qsv') && !existsSync(device)) return undefined;
    if (family === 'nvenc' && !existsSync('/dev/nvidiactl')) return undefined;
    return run(probeArgs(family, enc, device)).then(
      () => family,
      () => undefined,
    );
  });
  const found = await Promise.all([...tenBit, ...hardware]);
  return [...families, ...found.filter((f): f is string => f !== undefined)].sort();
}
