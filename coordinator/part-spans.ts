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
    const origin = c.originSec ?? (s === 0 ? Math.min(0, first) : c.startSec);
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
