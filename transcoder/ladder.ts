import { AppError } from '../common/errors.js';
import type { PlannedRendition } from '../proto/gen/tessera/v1/types.js';

/** One requested rung of a bitrate ladder (user input: every field is validated). */
export interface RungRequest {
  name?: string;
  /** Output height in pixels (16..4320). */
  height: number;
  /** Target video bitrate in kbit/s (50..100000); default from the nearest default rung. */
  videoBitrateKbps?: number;
  /** 'h264' (default), 'hevc' or 'av1'. */
  codec?: string;
  /** Encoder preset from a fixed allow-list per encoder (see PRESETS). */
  preset?: string;
  /** 'sdr' (default) or 'hdr': HEVC or AV1 (SVT-AV1), 10-bit, keeping an HDR source's PQ/HLG. */
  dynamicRange?: string;
}

/** A rung ready for ffmpeg: every field checked against our allow-lists. */
export interface ResolvedRendition {
  name: string;
  width: number;
  height: number;
  videoBitrateKbps: number;
  codec: 'h264' | 'hevc' | 'av1';
  encoder: string;
  preset: string;
  /** 'sdr': 8-bit BT.709 (HDR sources tone-mapped); 'hdr': 10-bit with the source's transfer. */
  dynamicRange: 'sdr' | 'hdr';
}

/** The ladder used when a job asks for none (H.264). */
export const DEFAULT_LADDER: readonly RungRequest[] = Object.freeze([
  { height: 1080, videoBitrateKbps: 5000, codec: 'h264' },
  { height: 720, videoBitrateKbps: 2800, codec: 'h264' },
  { height: 480, videoBitrateKbps: 1400, codec: 'h264' },
  { height: 360, videoBitrateKbps: 800, codec: 'h264' },
]);

/** Codecs we produce, in the order we name them to users. */
export const SUPPORTED_CODECS: readonly ResolvedRendition['codec'][] = ['h264', 'hevc', 'av1'];

/** Encoder candidates per codec, preferred first (AV1: SVT-AV1 is ~10x faster than libaom). */
const ENCODERS_BY_CODEC: Readonly<Record<ResolvedRendition['codec'], readonly string[]>> = {
  h264: ['libx264'],
  hevc: ['libx265'],
  av1: ['libsvtav1', 'libaom-av1'],
};

const X26X_PRESETS = ['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium', 'slow', 'slower', 'veryslow'] as const;

/**
 * The only preset strings that ever reach ffmpeg, per encoder ('placebo' is left out on
 * purpose: it costs a multiple of veryslow for no visible gain). SVT-AV1: preset 0..13;
 * libaom-av1: cpu-used 0..8.
 */
export const PRESETS: Readonly<Record<string, readonly string[]>> = {
  libx264: X26X_PRESETS,
  libx265: X26X_PRESETS,
  libsvtav1: Array.from({ length: 14 }, (_, i) => String(i)),
  'libaom-av1': Array.from({ length: 9 }, (_, i) => String(i)),
};

/** Preset used when a rung names none. */
export const DEFAULT_PRESET: Readonly<Record<string, string>> = {
  libx264: 'veryfast',
  libx265: 'veryfast',
  libsvtav1: '10',
  'libaom-av1': '8',
};

const NAME_RE = /^[a-z0-9_-]{1,32}$/;
export const MIN_HEIGHT = 16;
export const MAX_HEIGHT = 4320;
export const MIN_BITRATE_KBPS = 50;
export const MAX_BITRATE_KBPS = 100_000;

function clip(s: string, max = 32): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** Default bitrate (kbit/s) for a height: that of the default rung nearest in height. */
export function defaultBitrateFor(height: number): number {
  let best = DEFAULT_LADDER[0]!;
  for (const r of DEFAULT_LADDER) if (Math.abs(r.height - height) < Math.abs(best.height - height)) best = r;
  return best.videoBitrateKbps ?? 2800;
}

/** An even number ≥ 2 (4:2:0 chroma needs even dimensions). */
function even(n: number): number {
  return Math.max(2, Math.round(n / 2) * 2);
}

/** The even number at or below `n` (an odd requested height never rounds up past the source). */
function floorEven(n: number): number {
  return Math.floor(n / 2) * 2;
}

/** Width for `height` keeping the source's aspect ratio, rounded to an even number. */
export function scaledWidth(source: { width: number; height: number }, height: number): number {
  return even((source.width * height) / source.height);
}

/**
 * Output size for a rung whose height names the short side (as platforms label portrait video:
 * "720p" portrait is 720x1280): the short side becomes `short`, the long side keeps the aspect
 * ratio (even). Landscape sources are unchanged by this rule. Pure.
 */
export function rungSize(source: { width: number; height: number }, short: number): { width: number; height: number } {
  if (source.height > source.width) return { width: short, height: even((source.height * short) / source.width) };
  return { width: scaledWidth(source, short), height: short };
}

function normalizeCodec(codec: string | undefined): ResolvedRendition['codec'] {
  if (codec === undefined || codec === '') return 'h264';
  const c = codec.trim().toLowerCase();
  if ((SUPPORTED_CODECS as readonly string[]).includes(c)) return c as ResolvedRendition['codec'];
  throw new AppError('UNSUPPORTED_CODEC', `codec "${clip(codec)}" is not supported; supported codecs: ${SUPPORTED_CODECS.join(', ')}`);
}

function pickEncoder(codec: ResolvedRendition['codec'], encoders: ReadonlySet<string>): string {
  const enc = ENCODERS_BY_CODEC[codec].find((e) => encoders.has(e));
  if (enc) return enc;
  const usable = SUPPORTED_CODECS.filter((c) => ENCODERS_BY_CODEC[c].some((e) => encoders.has(e)));
  throw new AppError('UNSUPPORTED_CODEC', `codec "${codec}" is not available on this cluster (needs ${ENCODERS_BY_CODEC[codec].join(' or ')}); supported codecs: ${usable.join(', ') || 'none'}`);
}

function checkPreset(encoder: string, preset: string | undefined): string {
  const allowed = PRESETS[encoder] ?? [];
  if (preset === undefined || preset === '') return DEFAULT_PRESET[encoder] ?? allowed[0] ?? '';
  if (!allowed.includes(preset)) {
    throw new AppError('INVALID_ARGUMENT', `preset "${clip(preset)}" is not valid for ${encoder}; allowed: ${allowed.join(', ')}`);
  }
  return preset;
}

function checkHeight(height: number): void {
  if (!Number.isInteger(height) || height < MIN_HEIGHT || height > MAX_HEIGHT) {
    throw new AppError('INVALID_ARGUMENT', `rung height must be an integer from ${MIN_HEIGHT} to ${MAX_HEIGHT}, got ${String(height)}`);
  }
}

function checkBitrate(kbps: number): void {
  if (!Number.isInteger(kbps) || kbps < MIN_BITRATE_KBPS || kbps > MAX_BITRATE_KBPS) {
    throw new AppError('INVALID_ARGUMENT', `video bitrate must be an integer from ${MIN_BITRATE_KBPS} to ${MAX_BITRATE_KBPS} kbps, got ${String(kbps)}`);
  }
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new AppError('INVALID_ARGUMENT', `rendition name "${clip(name)}" must be 1-32 characters of a-z, 0-9, _ or -`);
  }
}

interface CheckedRung {
  name: string | undefined;
  height: number;
  bitrate: number | undefined;
  codec: ResolvedRendition['codec'];
  encoder: string;
  preset: string;
  dynamicRange: 'sdr' | 'hdr';
}

/** Encoders that write 10-bit HDR with its static metadata. */
const HDR_ENCODERS: ReadonlySet<string> = new Set(['libx265', 'libsvtav1']);

function checkDynamicRange(v: string | undefined, encoder: string, source: LadderSource): 'sdr' | 'hdr' {
  const d = (v ?? '').trim().toLowerCase();
  if (d === '' || d === 'sdr') return 'sdr';
  if (d !== 'hdr') throw new AppError('INVALID_ARGUMENT', `dynamic range "${clip(v ?? '')}" is not valid; use sdr or hdr`);
  if (!HDR_ENCODERS.has(encoder)) throw new AppError('UNSUPPORTED_CODEC', `an HDR rendition needs hevc (libx265) or av1 (libsvtav1), not ${encoder}`);
  if (source.dynamicRange === 'sdr') throw new AppError('UNSUPPORTED_DYNAMIC_RANGE', 'an HDR rendition was asked for, but the source is SDR (no PQ or HLG transfer)');
  return 'hdr';
}

/**
 * The picture a ladder is resolved against: the size a player shows (rotation applied), and its
 * dynamic range when known ('sdr', 'pq', 'hlg'; undefined before probing).
 */
export interface LadderSource {
  width: number;
  height: number;
  dynamicRange?: 'sdr' | 'pq' | 'hlg' | undefined;
}

/**
 * Resolves a requested ladder against a source and the encoders this cluster has. Pure.
 *
 * Empty/undefined → DEFAULT_LADDER. Every rung is validated (also those dropped later): height
 * 16..4320, bitrate 50..100000 kbps, codec known and encodable here (else UNSUPPORTED_CODEC),
 * preset in the encoder's allow-list, name /^[a-z0-9_-]{1,32}$/ and unique (else
 * INVALID_ARGUMENT). Never upscales: rungs taller than the source are dropped; if none is left,
 * one rung at the source height (made even) is produced, with the settings of the smallest
 * requested rung. Widths keep the aspect ratio; all dimensions are even. Repeated heights
 * collapse to the first. Output keeps the request order.
 */
export function resolveLadder(rungs: readonly RungRequest[] | undefined, source: LadderSource, encoders: ReadonlySet<string>): ResolvedRendition[] {
  if (!(source.width > 0 && source.height > 0)) throw new AppError('INVALID_ARGUMENT', `source size ${source.width}x${source.height} is not valid`);
  const requested = rungs && rungs.length > 0 ? rungs : DEFAULT_LADDER;
  if (requested.length > 16) throw new AppError('INVALID_ARGUMENT', `a ladder has at most 16 rungs, got ${requested.length}`);

  const checked: CheckedRung[] = requested.map((r) => {
    checkHeight(r.height);
    if (r.videoBitrateKbps !== undefined) checkBitrate(r.videoBitrateKbps);
    if (r.name !== undefined) checkName(r.name);
    const codec = normalizeCodec(r.codec);
    const encoder = pickEncoder(codec, encoders);
    const preset = checkPreset(encoder, r.preset);
    const dynamicRange = checkDynamicRange(r.dynamicRange, encoder, source);
    return { name: r.name, height: r.height, bitrate: r.videoBitrateKbps, codec, encoder, preset, dynamicRange };
  });
  const explicit = new Set<string>();
  for (const c of checked) {
    if (c.name === undefined) continue;
    if (explicit.has(c.name)) throw new AppError('INVALID_ARGUMENT', `rendition name "${c.name}" is used twice`);
    explicit.add(c.name);
  }

  // Heights name the short side: a portrait source's "720p" is 720 wide.
  const short = Math.min(source.width, source.height);
  const sourceHeight = Math.max(2, floorEven(short));
  let kept = checked.filter((c) => c.height <= short);
  if (kept.length === 0) {
    const smallest = checked.reduce((a, b) => (b.height < a.height ? b : a));
    const h = sourceHeight;
    const bitrate = Math.min(smallest.bitrate ?? Infinity, Math.max(MIN_BITRATE_KBPS, defaultBitrateFor(h)));
    kept = [{ ...smallest, height: h, bitrate }];
  }

  const seen = new Set<string>();
  const out: ResolvedRendition[] = [];
  for (const c of kept) {
    const height = Math.min(floorEven(c.height), sourceHeight);
    const key = `${height}/${c.dynamicRange}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({
      name: c.name ?? (c.dynamicRange === 'hdr' ? `${height}p-hdr` : `${height}p`),
      ...rungSize(source, height),
      videoBitrateKbps: c.bitrate ?? defaultBitrateFor(height),
      codec: c.codec,
      encoder: c.encoder,
      preset: c.preset,
      dynamicRange: c.dynamicRange,
    });
  }
  const names = new Set<string>();
  for (const r of out) {
    if (names.has(r.name)) throw new AppError('INVALID_ARGUMENT', `rendition name "${r.name}" is used twice`);
    names.add(r.name);
  }
  return out;
}

/**
 * Re-checks a rendition that travelled through storage or the network before its fields become
 * ffmpeg arguments (defence in depth: the encoder, preset and numbers must be ones we allow).
 * Throws INVALID_ARGUMENT / UNSUPPORTED_CODEC.
 */
export function assertRendition(r: ResolvedRendition): void {
  checkName(r.name);
  if (!(SUPPORTED_CODECS as readonly string[]).includes(r.codec)) normalizeCodec(r.codec);
  if (!ENCODERS_BY_CODEC[r.codec].includes(r.encoder)) {
    throw new AppError('UNSUPPORTED_CODEC', `encoder "${clip(r.encoder)}" does not produce ${r.codec}`);
  }
  if (!(PRESETS[r.encoder] ?? []).includes(r.preset)) {
    throw new AppError('INVALID_ARGUMENT', `preset "${clip(r.preset)}" is not valid for ${r.encoder}; allowed: ${(PRESETS[r.encoder] ?? []).join(', ')}`);
  }
  for (const [what, v] of [
    ['width', r.width],
    ['height', r.height],
  ] as const) {
    if (!Number.isInteger(v) || v < 2 || v > 8192 || v % 2 !== 0) {
      throw new AppError('INVALID_ARGUMENT', `rendition ${what} must be an even integer from 2 to 8192, got ${String(v)}`);
    }
  }
  checkBitrate(r.videoBitrateKbps);
  if (r.dynamicRange !== 'sdr' && r.dynamicRange !== 'hdr') throw new AppError('INVALID_ARGUMENT', 'rendition dynamic range must be sdr or hdr');
  if (r.dynamicRange === 'hdr' && !HDR_ENCODERS.has(r.encoder)) throw new AppError('UNSUPPORTED_CODEC', `an HDR rendition needs libx265 or libsvtav1, not ${r.encoder}`);
}

/**
 * What resolveLadder changed in a requested ladder, as sentences for the job's status trail, the
 * CLI and the manifest: rungs taller than the source's short side are dropped (never upscaled),
 * or, when none is left, replaced by one at the source's size. Pure; [] for the default ladder.
 */
export function ladderNotes(rungs: readonly RungRequest[] | undefined, source: LadderSource): string[] {
  if (!rungs || rungs.length === 0) return [];
  const short = Math.min(source.width, source.height);
  const tall = rungs.filter((r) => r.height > short).map((r) => r.name || `${r.height}p`);
  if (tall.length === 0) return [];
  if (tall.length === rungs.length) {
    return [`every requested rung (${tall.join(', ')}) is taller than the source's ${short}-pixel short side: one rendition at the source's size is made instead (never upscaled)`];
  }
  return [`rung${tall.length > 1 ? 's' : ''} ${tall.join(', ')} dropped: taller than the source's ${short}-pixel short side (never upscaled)`];
}

/** A rendition as a job's plan records it (protobuf), back to what the encoder arguments take. */
export function resolvedFromPlan(r: PlannedRendition): ResolvedRendition {
  return {
    name: r.name,
    width: r.width,
    height: r.height,
    videoBitrateKbps: r.videoBitrateKbps,
    codec: r.codec as ResolvedRendition['codec'],
    encoder: r.encoder,
    preset: r.preset,
    dynamicRange: r.dynamicRange === 'hdr' ? 'hdr' : 'sdr',
  };
}
