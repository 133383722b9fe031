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
    // No keyframe after the end: the range runs to the last packet, the rest is its lead-out.
    const b = endFrame < total ? keys.find((k) => k.position >= endFrame && k.timeSec >= -EPS) : undefined;
    const fromPacket = a.packet;
    const toPacket = b ? b.packet : s.frames;
    const hidden = a.packet === 0 ? s.leadIn : 0;
    const leadIn = hidden + startFrame - a.position;
    const leadOut = b ? b.position - endFrame : total - endFrame;
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

/** How close (s) a frame must start to a grid point to count as on it (ffprobe prints µs; cut files round to ms). */
const GRID_TOL = 0.001;

/**
 * The presented frame that starts the k-th grid point at or after time `t` of a timeline whose
 * frame times are `pts` (ascending, s) shifted by `originSec`: the first frame at or after
 * `k · periodSec` (within a millisecond), the frame an encoder forcing keyframes on that grid makes
 * an IDR. Pure.
 */
export function gridFrame(pts: readonly number[], originSec: number, gridSec: number): number {
  return lowerBound(pts, gridSec - originSec - GRID_TOL);
}

/**
 * Moves segment boundaries (frame numbers, [0, …, total]) onto a keyframe grid: each interior
 * boundary goes to the frame that starts the grid point nearest to it. Boundaries that meet (two
 * segments on one grid interval) merge: fewer, larger segments. Pure.
 */
export function snapToGrid(bounds: readonly number[], pts: readonly number[], periodSec: number): number[] {
  const total = bounds[bounds.length - 1]!;
  const out = [0];
  for (const b of bounds.slice(1, -1)) {
    const f = gridFrame(pts, 0, Math.round(pts[b]! / periodSec) * periodSec);
    if (f > out[out.length - 1]! && f < total) out.push(f);
  }
  out.push(total);
  return out;
}

/**
 * Chunk boundaries of one segment on the job's keyframe grid (streaming output): frame numbers
 * [first, …, end) of the segment file's presented frames, every interior one the frame that starts
 * a grid point, so no chunk adds a keyframe off the grid. `pts` are the file's presented times,
 * `originSec` where the file starts on the job's timeline; the shown frames are [first, end).
 * Aims at `chunks` chunks of equal length (the nearest grid points); fewer when the segment has
 * fewer grid points. Pure.
 */
export function gridChunkBoundaries(pts: readonly number[], originSec: number, first: number, end: number, periodSec: number, chunks: number): number[] {
  if (!(end > first)) throw new AppError('INTERNAL', `a segment of frames [${first}, ${end}) shows nothing`);
  const candidates: number[] = [];
  const startT = originSec + pts[first]!;
  for (let k = Math.floor((startT + GRID_TOL) / periodSec) + 1; ; k++) {
    const f = gridFrame(pts, originSec, k * periodSec);
    if (f >= end) break;
    if (f > first && f !== candidates[candidates.length - 1]) candidates.push(f);
  }
  const out = [first];
  let from = 0;
  for (let j = 1; j < chunks && from < candidates.length; j++) {
    const target = first + ((end - first) * j) / chunks;
    let best = -1;
    for (let i = from; i < candidates.length; i++) if (best < 0 || Math.abs(candidates[i]! - target) < Math.abs(candidates[best]! - target)) best = i;
    // Leave room for the chunks still to come (one grid point each).
    const room = candidates.length - (chunks - j);
    if (room >= from) best = Math.min(best, room);
    out.push(candidates[best]!);
    from = best + 1;
  }
  out.push(end);
  return out;
}
