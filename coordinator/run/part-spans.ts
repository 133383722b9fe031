import { chunkGrids, type Rate, type RateWindow } from '../../transcoder/frame-rate.js';

/** A segment as the plan cut it: its start on the source's presented timeline (s). */
export interface SpanCut {
  index: number;
  startSec: number;
  /** Time of the keyframe the segment's file starts with (a frame cut's); default: its start. */
  originSec?: number | undefined;
}

/** Agent boundaries within a segment are Matroska times (ms); a source keyframe this close is the same cut. */
const SNAP_SEC = 0.002;

function snap(t: number, keyTimes: readonly number[]): number {
  let best = t;
  let bestD = SNAP_SEC;
  for (const k of keyTimes) {
    const d = Math.abs(k - t);
    if (d <= bestD) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

/**
 * Where a segment's file starts on the presented timeline: its `originSec` keyframe (a frame
 * cut's), else segment 0 at the first keyframe (an edit list's lead-in keyframe lies below 0) and
 * every later one at its own cut. `first`: the earliest keyframe time. Pure.
 */
export function segmentOrigin(c: SpanCut, position: number, first: number): number {
  return c.originSec ?? (position === 0 ? Math.min(0, first) : c.startSec);
}

/**
 * Each segment's window on the presented timeline for a constant-rate conversion, in play order:
 * where its file starts, where it starts and where it ends (the next one's start; the last at
 * the end of the source, `durationSec`). Pure.
 */
export function rateWindows(cuts: readonly SpanCut[], keyTimes: readonly number[], durationSec: number): RateWindow[] {
  const ordered = [...cuts].sort((a, b) => a.index - b.index);
  const first = keyTimes.length ? Math.min(...keyTimes) : 0;
  return ordered.map((c, s) => ({
    originSec: segmentOrigin(c, s, first),
    startSec: s === 0 ? 0 : c.startSec,
    endSec: s + 1 < ordered.length ? ordered[s + 1]!.startSec : durationSec,
  }));
}

/**
 * What every part lasts (s) when converted to a constant rate: its frames on the job's grid ÷ the
 * rate — the same grid shares the node agents made (chunkGrids, from the checkpoint's
 * boundaries), so the join needs no source timestamps. `windows` and `boundaries` in play order. Pure.
 */
export function constantRateSpans(rate: Rate, windows: readonly RateWindow[], boundaries: readonly (readonly number[])[]): number[][] {
  return windows.map((w, s) => chunkGrids(rate, w, boundaries[s] ?? [0, 0]).map((g) => (g.frames * rate.den) / rate.num));
}

/**
 * The exact span (s) of the source that every part shows, per segment and chunk, in play order;
 * undefined for the job's last part (it ends where the source ends). Pure.
 *
 * Chunk boundaries come back from the agents in Matroska milliseconds; each is put back on the
 * source keyframe it was cut at (`keyTimes`: the source's keyframe times, relative to the first
 * presented frame, an edit list's lead-in keyframe below 0). A segment's file starts at its
 * `originSec` keyframe (a frame cut starts at the keyframe before its first frame; without one,
 * segment 0 starts at the first keyframe and every later one at its own cut); its first part
 * shows from the segment's start.
 */
export function partSpans(cuts: readonly SpanCut[], boundaries: ReadonlyMap<number, readonly number[]>, keyTimes: readonly number[]): (number | undefined)[][] {
  const ordered = [...cuts].sort((a, b) => a.index - b.index);
  const first = keyTimes.length ? Math.min(...keyTimes) : 0;
  const starts: number[][] = ordered.map((c, s) => {
    const b = boundaries.get(c.index) ?? [0, 0];
    const origin = segmentOrigin(c, s, first);
    return b.slice(0, -1).map((x, j) => (j === 0 ? (s === 0 ? 0 : c.startSec) : snap(origin + x, keyTimes)));
  });
  const flat = starts.flat();
  let k = 0;
  return starts.map((subs) =>
    subs.map(() => {
      const next = flat[k + 1];
      const here = flat[k++]!;
      return next === undefined ? undefined : Math.round((next - here) * 1e6) / 1e6;
    }),
  );
}
