import { AppError } from '../common/errors.js';
import type { ResolvedRendition } from './ladder.js';
import type { IdetCounts, SourceTimeline } from './timeline.js';
import { idetVerdict } from './timeline.js';

/**
 * How every chunk's pictures are treated so that each rendition shows what a player shows of the
 * source: decided once per job from the source timeline (coordinator), applied identically on
 * every node (node agent → buildTranscodeArgs). Every field is an allow-listed value or a number;
 * `assertTreatment` re-checks one that travelled over the network.
 */
export interface PictureTreatment {
  /** Clockwise degrees applied to the coded picture (the renditions are stored upright). */
  rotation: 0 | 90 | 180 | 270;
  /** '' progressive; 'frame' keeps the frame rate; 'field' makes one frame per field. */
  deinterlace: '' | 'frame' | 'field';
  /** The field shown first: 'auto' reads each frame's flags. */
  fieldParity: 'auto' | 'tff' | 'bff';
  /** Deinterlace every frame, not only the frames flagged interlaced (always, for an interlaced source). */
  deinterlaceAll: boolean;
  /** The source's dynamic range: 'pq' and 'hlg' are tone-mapped for SDR renditions. */
  dynamicRange: 'sdr' | 'pq' | 'hlg';
  /** The source's YUV matrix, for the conversion to BT.709. */
  colorMatrix: 'bt709' | 'bt601' | 'bt2020';
  colorRange: 'tv' | 'pc';
  /** HDR10 mastering display (x265 syntax, numbers only) and content light level; ''/0 when none. */
  masterDisplay: string;
  maxCll: number;
  maxFall: number;
}

/** A progressive SDR BT.709 source needs nothing but scaling. */
export const PLAIN_TREATMENT: Readonly<PictureTreatment> = Object.freeze({
  rotation: 0,
  deinterlace: '',
  fieldParity: 'auto',
  deinterlaceAll: false,
  dynamicRange: 'sdr',
  colorMatrix: 'bt709',
  colorRange: 'tv',
  masterDisplay: '',
  maxCll: 0,
  maxFall: 0,
});

/** The job settings that choose between faithful treatments. */
export interface TreatmentOptions {
  /** Interlaced sources: keep the frame rate ('frame', default) or double it to the field rate. */
  deinterlace?: 'frame' | 'field';
}

/** ffmpeg's colour-space names → the matrix swscale converts from. */
function matrixOf(space: string, height: number): PictureTreatment['colorMatrix'] {
  if (space === 'bt709') return 'bt709';
  if (space === 'smpte170m' || space === 'bt470bg' || space === 'fcc') return 'bt601';
  if (space === 'bt2020nc' || space === 'bt2020c') return 'bt2020';
  // Untagged: what players assume (SD is BT.601, HD is BT.709).
  return height >= 720 ? 'bt709' : 'bt601';
}

/**
 * The treatment for a source: rotation from its display matrix; deinterlacing when its field
 * order says interlaced or an idet sample finds fields in most frames; tone mapping for PQ/HLG.
 * Pure.
 */
export function decideTreatment(tl: SourceTimeline, idet: IdetCounts | undefined, o: TreatmentOptions = {}): PictureTreatment {
  const verdict = idetVerdict(idet);
  const flagged = tl.fieldOrder === 'tff' || tl.fieldOrder === 'bff';
  const interlaced = flagged || verdict.interlaced;
  return {
    rotation: tl.rotation,
    deinterlace: interlaced ? (o.deinterlace ?? 'frame') : '',
    fieldParity: flagged ? 'auto' : interlaced ? verdict.parity : 'auto',
    // Every frame of an interlaced source: per-frame flags are not reliable (an MBAFF stream can
    // leave some frames unflagged, which then stay combed).
    deinterlaceAll: interlaced,
    dynamicRange: tl.dynamicRange,
    colorMatrix: matrixOf(tl.color.matrix, Math.min(tl.coded.width, tl.coded.height)),
    colorRange: tl.color.range === 'pc' ? 'pc' : 'tv',
    masterDisplay: tl.hdr?.masterDisplay ?? '',
    maxCll: tl.hdr?.maxCll ?? 0,
    maxFall: tl.hdr?.maxFall ?? 0,
  };
}

/** x265's master-display syntax with integers only. */
const MASTER_DISPLAY_RE = /^G\(\d{1,6},\d{1,6}\)B\(\d{1,6},\d{1,6}\)R\(\d{1,6},\d{1,6}\)WP\(\d{1,6},\d{1,6}\)L\(\d{1,10},\d{1,10}\)$/;

/** Re-checks a treatment that travelled through storage or the network (every value allow-listed). */
export function assertTreatment(t: PictureTreatment): void {
  const bad = (what: string): never => {
    throw new AppError('INVALID_ARGUMENT', `video treatment: ${what} is not valid`);
  };
  if (![0, 90, 180, 270].includes(t.rotation)) bad('rotation');
  if (!['', 'frame', 'field'].includes(t.deinterlace)) bad('deinterlace');
  if (!['auto', 'tff', 'bff'].includes(t.fieldParity)) bad('field parity');
  if (typeof t.deinterlaceAll !== 'boolean') bad('deinterlace_all');
  if (!['sdr', 'pq', 'hlg'].includes(t.dynamicRange)) bad('dynamic range');
  if (!['bt709', 'bt601', 'bt2020'].includes(t.colorMatrix)) bad('colour matrix');
  if (!['tv', 'pc'].includes(t.colorRange)) bad('colour range');
  if (t.masterDisplay !== '' && !MASTER_DISPLAY_RE.test(t.masterDisplay)) bad('master display');
  for (const v of [t.maxCll, t.maxFall]) if (!Number.isInteger(v) || v < 0 || v > 65535) bad('content light level');
}

/** Output frames per presented source frame: 2 when each field becomes a frame. Pure. */
export function frameFactor(t: Pick<PictureTreatment, 'deinterlace'>): number {
  return t.deinterlace === 'field' ? 2 : 1;
}

/**
 * The filters applied once to the decoded picture before the ladder splits it: drop an edit
 * list's lead-in, deinterlace, rotate upright. Pure; numbers and allow-listed names only.
 */
export function commonFilters(t: PictureTreatment, leadInFrames: number, keepFrames?: number): string[] {
  if (!Number.isInteger(leadInFrames) || leadInFrames < 0 || leadInFrames > 1_000_000) throw new AppError('INVALID_ARGUMENT', `lead-in ${String(leadInFrames)} is not valid`);
  if (keepFrames !== undefined && !(Number.isInteger(keepFrames) && keepFrames > 0 && keepFrames <= 100_000_000))
    throw new AppError('INVALID_ARGUMENT', `frames to keep ${String(keepFrames)} is not valid`);
  const f: string[] = [];
  // The lead-in is decoded (its frames are references) and then dropped; the first presented
  // frame becomes t=0, as the coordinator aligned the audio to it. A lead-out is decoded and
  // dropped after the frames kept.
  if (leadInFrames > 0 || keepFrames !== undefined) {
    const trim = [leadInFrames > 0 ? `start_frame=${leadInFrames}` : '', keepFrames !== undefined ? `end_frame=${leadInFrames + keepFrames}` : ''].filter(Boolean).join(':');
    f.push(`trim=${trim}`);
    if (leadInFrames > 0) f.push('setpts=PTS-STARTPTS');
  }
  if (t.deinterlace !== '') {
    f.push(`bwdif=mode=${t.deinterlace === 'field' ? 'send_field' : 'send_frame'}:parity=${t.fieldParity}:deint=${t.deinterlaceAll ? 'all' : 'interlaced'}`);
  }
  if (t.rotation === 90) f.push('transpose=clock');
  else if (t.rotation === 270) f.push('transpose=cclock');
  else if (t.rotation === 180) f.push('hflip', 'vflip');
  return f;
}

/** True when the rendition keeps the source's HDR (10-bit, PQ/HLG). */
export function isHdrRendition(r: Pick<ResolvedRendition, 'dynamicRange'>): boolean {
  return r.dynamicRange === 'hdr';
}

/**
 * One rendition's branch: scale to its size, then either keep HDR (10-bit) or make BT.709 SDR —
 * tone-mapped (zscale + tonemap, Hable) from PQ/HLG, or converted from the source's matrix. Pure.
 */
export function renditionFilters(t: PictureTreatment, r: ResolvedRendition): string {
  const size = `scale=${r.width}:${r.height}:flags=bicubic`;
  if (isHdrRendition(r)) return `${size},format=yuv420p10le`;
  if (t.dynamicRange !== 'sdr') {
    const tin = t.dynamicRange === 'pq' ? 'smpte2084' : 'arib-std-b67';
    const min = t.colorMatrix === 'bt2020' ? 'bt2020nc' : t.colorMatrix === 'bt601' ? '170m' : '709';
    return [
      size,
      `zscale=tin=${tin}:min=${min}:pin=bt2020:rin=${t.colorRange === 'pc' ? 'full' : 'limited'}:t=linear:npl=100`,
      'format=gbrpf32le',
      'zscale=p=bt709',
      'tonemap=tonemap=hable:desat=0',
      'zscale=t=bt709:m=bt709:r=limited',
      'format=yuv420p',
    ].join(',');
  }
  // BT.709 limited range already: nothing to convert (and swscale's plain path is the fast one).
  if (t.colorMatrix === 'bt709' && t.colorRange === 'tv') return `${size},format=yuv420p`;
  return `${size}:in_color_matrix=${t.colorMatrix}:out_color_matrix=bt709:in_range=${t.colorRange}:out_range=tv,format=yuv420p`;
}

/** Container/bitstream colour tags of a rendition's output (`-color_*`). Pure. */
export function colorTagArgs(t: PictureTreatment, r: ResolvedRendition): string[] {
  if (isHdrRendition(r)) {
    return ['-color_primaries', 'bt2020', '-color_trc', t.dynamicRange === 'hlg' ? 'arib-std-b67' : 'smpte2084', '-colorspace', 'bt2020nc', '-color_range', 'tv'];
  }
  return ['-color_primaries', 'bt709', '-color_trc', 'bt709', '-colorspace', 'bt709', '-color_range', 'tv'];
}

/** A treatment as it travels: the same fields, as plain strings and numbers. */
export interface TreatmentWire {
  rotation?: number;
  deinterlace?: string;
  fieldParity?: string;
  deinterlaceAll?: boolean;
  dynamicRange?: string;
  colorMatrix?: string;
  colorRange?: string;
  masterDisplay?: string;
  maxCll?: number;
  maxFall?: number;
}

/**
 * A treatment that travelled (proto strings) as a checked PictureTreatment; undefined or empty
 * fields mean "nothing to do" for old senders. Bad values → INVALID_ARGUMENT.
 */
export function toPictureTreatment(v: TreatmentWire | undefined): PictureTreatment {
  if (!v) return { ...PLAIN_TREATMENT };
  const t = {
    rotation: v.rotation ?? 0,
    deinterlace: v.deinterlace ?? '',
    fieldParity: v.fieldParity || 'auto',
    deinterlaceAll: v.deinterlaceAll ?? false,
    dynamicRange: v.dynamicRange || 'sdr',
    colorMatrix: v.colorMatrix || 'bt709',
    colorRange: v.colorRange || 'tv',
    masterDisplay: v.masterDisplay ?? '',
    maxCll: v.maxCll ?? 0,
    maxFall: v.maxFall ?? 0,
  } as PictureTreatment;
  assertTreatment(t);
  return t;
}
