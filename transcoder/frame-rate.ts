import { AppError } from '../common/errors.js';

/** A frame rate as a fraction (frames per `den` seconds). */
export interface Rate {
  num: number;
  den: number;
}

/** What `frame_rate` asks for: keep the source's timestamps, a constant rate chosen from the source, or a given one. */
export type FrameRateSetting = { kind: 'source' } | { kind: 'auto' } | { kind: 'rate'; rate: Rate };

/** Highest constant rate a job may ask for (and the lowest: one frame a second). */
export const MAX_OUTPUT_FPS = 240;

/** The NTSC rates written as decimals, as people write them. */
const NTSC: Record<string, Rate> = {
  '23.976': { num: 24000, den: 1001 },
  '23.98': { num: 24000, den: 1001 },
  '29.97': { num: 30000, den: 1001 },
  '47.952': { num: 48000, den: 1001 },
  '59.94': { num: 60000, den: 1001 },
  '119.88': { num: 120000, den: 1001 },
};

/** Standard rates a measured one snaps to (within 1 %). */
const STANDARD: Rate[] = [
  { num: 24000, den: 1001 },
  { num: 24, den: 1 },
  { num: 25, den: 1 },
  { num: 30000, den: 1001 },
  { num: 30, den: 1 },
  { num: 48, den: 1 },
  { num: 50, den: 1 },
  { num: 60000, den: 1001 },
  { num: 60, den: 1 },
  { num: 100, den: 1 },
  { num: 120000, den: 1001 },
  { num: 120, den: 1 },
];

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Parses a job's `frame_rate`: "" or "source" (timestamps kept), "auto" (a constant rate chosen
 * from the source), or a rate: an integer ("30"), a fraction ("30000/1001") or an NTSC decimal
 * ("29.97"). Anything else, or a rate outside 1..MAX_OUTPUT_FPS → INVALID_ARGUMENT. Pure.
 */
export function parseFrameRate(text: string): FrameRateSetting {
  const s = text.trim();
  if (s === '' || s === 'source') return { kind: 'source' };
  if (s === 'auto') return { kind: 'auto' };
  const bad = (): never => {
    throw new AppError(
      'INVALID_ARGUMENT',
      `frame_rate "${s.slice(0, 32)}" is not valid: use "source" (keep the source's timestamps), "auto" (a constant rate chosen from the source), or a rate such as 25, 30000/1001 or 29.97 (1 to ${MAX_OUTPUT_FPS} fps)`,
    );
  };
  let rate: Rate;
  const ntsc = NTSC[s];
  if (ntsc) rate = ntsc;
  else if (/^\d{1,6}$/.test(s)) rate = { num: Number(s), den: 1 };
  else if (/^\d{1,6}\/\d{1,6}$/.test(s)) {
    const [n, d] = s.split('/').map(Number) as [number, number];
    if (d === 0) return bad();
    const g = gcd(n, d) || 1;
    rate = { num: n / g, den: d / g };
  } else return bad();
  const fps = rate.num / rate.den;
  if (!(fps >= 1 && fps <= MAX_OUTPUT_FPS)) return bad();
  return { kind: 'rate', rate };
}

/** The rate as ffmpeg and the manifest write it ("30000/1001"). */
export function formatRate(r: Rate): string {
  return `${r.num}/${r.den}`;
}

/** Re-checks a rate that travelled (integers, 1..MAX_OUTPUT_FPS fps). */
export function assertRate(r: Rate): void {
  const ok = Number.isInteger(r.num) && Number.isInteger(r.den) && r.num > 0 && r.den > 0 && r.den <= 1_000_000 && r.num / r.den >= 1 && r.num / r.den <= MAX_OUTPUT_FPS;
  if (!ok) throw new AppError('INVALID_ARGUMENT', `frame rate ${String(r.num)}/${String(r.den)} is not valid`);
}

/**
 * The constant rate "auto" picks for a source from its presented frame times: the rate of its
 * fastest sustained part (the mean of the intervals within 5 % of the 5th percentile), snapped to a standard rate within
 * 1 %, else rounded to whole frames per second — so a phone's 24-then-30 fps clip becomes 30 fps
 * and no motion is dropped. Pure.
 */
export function chooseSourceRate(presentedSec: readonly number[], fallbackFps: number): Rate {
  const gaps: number[] = [];
  for (let i = 1; i < presentedSec.length; i++) {
    const g = presentedSec[i]! - presentedSec[i - 1]!;
    if (g > 1e-6) gaps.push(g);
  }
  gaps.sort((a, b) => a - b);
  const p5 = gaps.length ? gaps[Math.floor(gaps.length * 0.05)]! : 0;
  // The fast part's mean interval: millisecond timestamps alternate (33, 34, 33 ms at 29.97 fps).
  const fast = gaps.filter((g) => g <= p5 * 1.05);
  const interval = fast.length ? fast.reduce((a, b) => a + b, 0) / fast.length : 0;
  const fps = interval > 0 ? 1 / interval : fallbackFps > 0 ? fallbackFps : 30;
  let best: Rate | undefined;
  for (const r of STANDARD) {
    const d = Math.abs(r.num / r.den - fps);
    if (d <= 0.01 * fps && (!best || d < Math.abs(best.num / best.den - fps))) best = r;
  }
  return best ?? { num: Math.min(MAX_OUTPUT_FPS, Math.max(1, Math.round(fps))), den: 1 };
}

/**
 * How close after an output frame's time a source frame may start and still be the one shown
 * there: the cut files' Matroska timestamps are rounded to the millisecond, so a source frame
 * that sits exactly on the output grid must not slip to the next output frame.
 */
export const GRID_TOLERANCE_SEC = 0.001;

/** The first output frame (index on the job's grid) at or after presented time `t` (less the tolerance). Pure. */
export function slotAt(t: number, r: Rate): number {
  return Math.ceil(((t - GRID_TOLERANCE_SEC) * r.num) / r.den) || 0; // never -0
}

/** Output frames of a presentation lasting `durationSec`: one per grid point before its end. Pure. */
export function constantRateFrames(durationSec: number, r: Rate): number {
  return Math.max(0, slotAt(durationSec, r) - slotAt(0, r));
}

/** Where one segment lies on the presented timeline (s), as the coordinator planned it. */
export interface RateWindow {
  /** Presented time of the first frame stored in the segment's file (a frame cut's keyframe; may be < 0 for an edit list's lead-in). */
  originSec: number;
  /** Presented time of the segment's first shown frame. */
  startSec: number;
  /** Presented time where the segment ends (the next one's start, or the end of the source). */
  endSec: number;
}

/** One chunk's share of the output grid: its frames and the shift that puts its first one on grid point 0. */
export interface ChunkGrid {
  /** Output frames the chunk makes. */
  frames: number;
  /** Seconds added to the chunk's timestamps (its first shown frame at 0) before the fps filter; ≤ 0. */
  shiftSec: number;
  /** The chunk's first output frame on the job's grid. */
  firstSlot: number;
}

/**
 * Each chunk's share of the job's constant-rate grid, from the segment's window and the chunk
 * boundaries (s from the start of the segment's file, as the agent cut them and the checkpoint
 * records them). Grid point n shows the latest source frame that starts no later than n/rate
 * (+ tolerance); it belongs to the chunk holding that frame. Neighbours compute their shared edge
 * from the same numbers, so every grid point is made exactly once. Pure; the node agent and the
 * coordinator (part durations at the join) call it with the same values.
 */
/**
 * Where each chunk of a segment starts on the presented timeline, and (last) where the segment
 * ends: the first at the segment's start, the others at the segment's origin plus their boundary
 * (s from the start of the segment's file). Pure.
 */
export function chunkStarts(w: Pick<RateWindow, 'originSec' | 'startSec'> & { endSec?: number }, boundaries: readonly number[]): number[] {
  const n = boundaries.length - 1;
  if (n < 1) throw new AppError('INTERNAL', 'a segment needs at least one chunk');
  return Array.from({ length: n + 1 }, (_, j) => (j === 0 ? w.startSec : j === n && w.endSec !== undefined ? w.endSec : w.originSec + boundaries[j]!));
}

/**
 * The local time (s from a chunk's first frame) of the first multiple of `periodSec` of the
 * presented timeline at or after the chunk's start (`startSec`). Pure.
 */
export function firstGridPoint(startSec: number, periodSec: number): number {
  const k = Math.ceil((startSec - GRID_TOLERANCE_SEC) / periodSec);
  return Math.max(0, k * periodSec - startSec);
}

export function chunkGrids(r: Rate, w: RateWindow, boundaries: readonly number[]): ChunkGrid[] {
  const n = boundaries.length - 1;
  const starts = chunkStarts(w, boundaries);
  const out: ChunkGrid[] = [];
  for (let j = 0; j < n; j++) {
    const firstSlot = slotAt(starts[j]!, r);
    const frames = slotAt(starts[j + 1]!, r) - firstSlot;
    const shiftSec = starts[j]! - GRID_TOLERANCE_SEC - (firstSlot * r.den) / r.num;
    out.push({ frames: Math.max(0, frames), shiftSec: Math.min(0, shiftSec), firstSlot });
  }
  return out;
}

/**
 * The filters that put one chunk on the constant-rate grid: its timestamps shifted so that grid
 * point 0 is its first output frame, the last frame held a little longer (the fps filter drops a
 * final frame it has no end time for), the fps filter choosing for each grid point the latest
 * frame at or before it, and exactly `frames` kept. Pure; numbers only.
 */
export function constantRateFilters(r: Rate, g: Pick<ChunkGrid, 'frames' | 'shiftSec'>): string[] {
  assertRate(r);
  if (!(Number.isInteger(g.frames) && g.frames > 0 && g.frames <= 100_000_000)) throw new AppError('INTERNAL', `a chunk of ${String(g.frames)} output frames is not valid`);
  if (!(Number.isFinite(g.shiftSec) && g.shiftSec <= 0 && g.shiftSec > -2)) throw new AppError('INTERNAL', `grid shift ${String(g.shiftSec)} s is not valid`);
  const hold = Math.max(1, (3 * r.den) / r.num);
  return [`setpts=PTS-STARTPTS-${(-g.shiftSec).toFixed(6)}/TB`, `tpad=stop_mode=clone:stop_duration=${hold.toFixed(3)}`, `fps=fps=${r.num}/${r.den}:round=up`, `trim=end_frame=${g.frames}`];
}
