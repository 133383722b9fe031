import { AppError } from '../common/errors.js';
import type { PacketSummary } from './keyframes.js';

/**
 * One segment cut at exact frame numbers, wherever the keyframes are. Its file holds the packets
 * [fromPacket, toPacket) in decode order: from the keyframe at or before its first frame to the
 * keyframe at or after its end, so every frame it shows can be decoded. The node decodes the
 * `leadIn` frames before its first frame and the `leadOut` frames after its last, and drops them;
 * the frames just around a boundary are decoded by both neighbours, shown by one.
 */
export interface FrameCut {
  index: number;
  /** First presented frame (0-based, presentation order) and one past the last. */
  startFrame: number;
  endFrame: number;
  /** Presentation time (s from the first presented frame) of startFrame, and of endFrame (or the end). */
  startSec: number;
  endSec: number;
  fromPacket: number;
  toPacket: number;
  leadIn: number;
  leadOut: number;
  /** Presentation time (s, same origin) of the keyframe the file starts with. */
  originSec: number;
}

/**
 * Frame boundaries for shares of `total` frames proportional to `weights`: segment i gets
 * round(total · w_i / Σw) frames, no segment fewer than `minFrames` (fewer segments then, for the
 * largest weights first). Pure. Returns the boundaries [0, …, total].
 */
export function shareBoundaries(total: number, weights: readonly number[], minFrames: number): number[] {
  if (!(Number.isInteger(total) && total > 0)) throw new AppError('INVALID_ARGUMENT', `frame count must be > 0, got ${String(total)}`);
  if (weights.length === 0 || !weights.every((w) => Number.isFinite(w) && w > 0)) throw new AppError('INVALID_ARGUMENT', 'weights must be finite and > 0');
  const k = Math.max(1, Math.min(weights.length, Math.floor(total / Math.max(1, minFrames))));
  const ws = weights.slice(0, k);
  const sum = ws.reduce((a, b) => a + b, 0);
  const bounds = [0];
  let acc = 0;
  for (let i = 0; i < k - 1; i++) {
    acc += ws[i]!;
    bounds.push(Math.round((total * acc) / sum));
  }
  bounds.push(total);
  return bounds;
}

/** Index of the first element of ascending `xs` that is ≥ x (xs.length when none). */
function lowerBound(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Half a microsecond: ffprobe prints times to the µs. */
const EPS = 5e-7;

/**
 * Packet ranges, lead-ins and lead-outs for segments with frame `boundaries` ([0, …, presented
 * frame count]). Pure. Undefined when the stream's GOPs do not let a packet range hold exactly
 * its frames (open GOPs: frames before a keyframe in presentation order that decode after it) —
 * the caller then cuts on keyframes only.
 */
export function frameCuts(s: PacketSummary, boundaries: readonly number[]): FrameCut[] | undefined {
  const pts = s.presentedSec;
  const total = pts.length;
  if (total !== s.frames - s.leadIn || boundaries[0] !== 0 || boundaries[boundaries.length - 1] !== total) return undefined;
  // Keyframes in decode order, each with its position among the presented frames.
  const keys = [...s.keys].sort((a, b) => a.index - b.index).map((k) => ({ packet: k.index, timeSec: k.timeSec, position: k.timeSec < -EPS ? 0 : lowerBound(pts, k.timeSec - EPS) }));
  if (keys.length === 0 || keys[0]!.packet !== 0) return undefined;
  for (let i = 1; i < keys.length; i++) if (keys[i]!.position <= keys[i - 1]!.position && keys[i]!.timeSec >= -EPS) return undefined;
  const cuts: FrameCut[] = [];
  for (let i = 0; i + 1 < boundaries.length; i++) {
    const startFrame = boundaries[i]!;
    const endFrame = boundaries[i + 1]!;
    if (!(endFrame > startFrame)) return undefined;
    // The last keyframe at or before the first frame, the first at or after the end.
    let a = keys[0]!;
    for (const k of keys) if (k.position <= startFrame && k.timeSec <= pts[startFrame]! + EPS) a = k;
    const b = endFrame < total ? keys.find((k) => k.position >= endFrame && k.timeSec >= -EPS) : undefined;
    if (endFrame < total && !b) return undefined;
    const fromPacket = a.packet;
    const toPacket = b ? b.packet : s.frames;
    const hidden = a.packet === 0 ? s.leadIn : 0;
    const leadIn = hidden + startFrame - a.position;
    const leadOut = b ? b.position - endFrame : 0;
    // Closed GOPs: the range holds exactly its lead-in, its frames and its lead-out.
    if (toPacket - fromPacket !== leadIn + (endFrame - startFrame) + leadOut) return undefined;
    cuts.push({
      index: i,
      startFrame,
      endFrame,
      startSec: pts[startFrame]!,
      endSec: endFrame < total ? pts[endFrame]! : s.durationSec,
      fromPacket,
      toPacket,
      leadIn,
      leadOut,
      originSec: a.timeSec,
    });
  }
  return cuts;
}
