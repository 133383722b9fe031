import { AppError } from '../common/errors.js';

/** What planCuts needs: where it may cut, how long the input is, and how strong each worker is. */
export interface CutPlanInput {
  /** Keyframe presentation times in seconds from the stream start (any order; 0 and outliers ignored). */
  keyframes: number[];
  /** Input duration in seconds (> 0). */
  durationSec: number;
  /** Relative throughput of each worker, one per possible segment (> 0 each). */
  weights: number[];
  /** No segment is shorter than this many seconds (≥ 0). */
  minSegmentSec: number;
}

/** Segment `index` covers [startSec, endSec) of the input, in seconds. */
export interface Cut {
  index: number;
  startSec: number;
  endSec: number;
}

/** Keyframes considered on each side of a boundary's ideal position (keeps the search O(k·64²)). */
const WINDOW = 32;
/** Slack for float comparisons of times in seconds (ffprobe prints µs). */
const EPS = 1e-9;

interface Solution {
  bounds: number[];
  makespan: number;
}

/** Nearest `WINDOW` candidates on each side of `target` (all of them when few). */
function windowAround(cand: readonly number[], target: number): number[] {
  if (cand.length <= 2 * WINDOW) return cand.map((_, i) => i);
  let lo = 0;
  let hi = cand.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cand[mid]! < target) lo = mid + 1;
    else hi = mid;
  }
  const from = Math.max(0, Math.min(lo - WINDOW, cand.length - 2 * WINDOW));
  return Array.from({ length: 2 * WINDOW }, (_, i) => from + i);
}

/**
 * Best k-segment plan for weights `ws`: first the smallest makespan max(len_i / w_i) (the time
 * the slowest worker needs), then, among plans that reach it, boundaries closest (least squares)
 * to their proportional positions. Undefined when no plan satisfies the minimum length.
 */
function solve(cand: readonly number[], D: number, ws: readonly number[], m: number): Solution | undefined {
  const k = ws.length;
  if (k === 1) return { bounds: [0, D], makespan: D / ws[0]! };
  const W = ws.reduce((a, b) => a + b, 0);
  const targets: number[] = [];
  let acc = 0;
  for (let i = 0; i < k - 1; i++) {
    acc += ws[i]!;
    targets.push((D * acc) / W);
  }
  const sets = targets.map((t) => windowAround(cand, t));
  const okLen = (len: number): boolean => len > EPS && len + EPS >= m;

  // Phase 1: min-max DP. f[i][j] = best makespan of segments 0..i with boundary i+1 at sets[i][j].
  const f: number[][] = sets.map((s) => s.map(() => Infinity));
  sets[0]!.forEach((c, j) => {
    const len = cand[c]!;
    if (okLen(len)) f[0]![j] = len / ws[0]!;
  });
  for (let i = 1; i < k - 1; i++) {
    sets[i]!.forEach((c, j) => {
      let best = Infinity;
      sets[i - 1]!.forEach((p, q) => {
        const prev = f[i - 1]![q]!;
        const len = cand[c]! - cand[p]!;
        if (prev === Infinity || !okLen(len)) return;
        best = Math.min(best, Math.max(prev, len / ws[i]!));
      });
      f[i]![j] = best;
    });
  }
  let makespan = Infinity;
  sets[k - 2]!.forEach((c, j) => {
    const len = D - cand[c]!;
    if (f[k - 2]![j] !== Infinity && okLen(len)) makespan = Math.min(makespan, Math.max(f[k - 2]![j]!, len / ws[k - 1]!));
  });
  if (makespan === Infinity) return undefined;

  // Phase 2: least squared distance to the targets among plans whose every segment fits the makespan.
  const cap = makespan * (1 + 1e-9) + EPS;
  const fits = (len: number, w: number): boolean => okLen(len) && len / w <= cap;
  const g: number[][] = sets.map((s) => s.map(() => Infinity));
  const parent: number[][] = sets.map((s) => s.map(() => -1));
  sets[0]!.forEach((c, j) => {
    if (fits(cand[c]!, ws[0]!)) g[0]![j] = (cand[c]! - targets[0]!) ** 2;
  });
  for (let i = 1; i < k - 1; i++) {
    sets[i]!.forEach((c, j) => {
      const own = (cand[c]! - targets[i]!) ** 2;
      sets[i - 1]!.forEach((p, q) => {
        const prev = g[i - 1]![q]!;
        if (prev === Infinity || !fits(cand[c]! - cand[p]!, ws[i]!)) return;
        if (prev + own < g[i]![j]!) {
          g[i]![j] = prev + own;
          parent[i]![j] = q;
        }
      });
    });
  }
  let end = -1;
  let bestCost = Infinity;
  sets[k - 2]!.forEach((c, j) => {
    if (g[k - 2]![j]! < bestCost && fits(D - cand[c]!, ws[k - 1]!)) {
      bestCost = g[k - 2]![j]!;
      end = j;
    }
  });
  if (end < 0) return undefined; // unreachable: phase 1 found a plan within the cap
  const inner: number[] = [];
  for (let i = k - 2, j = end; i >= 0; i--) {
    inner.unshift(cand[sets[i]![j]!]!);
    j = parent[i]![j]!;
  }
  return { bounds: [0, ...inner, D], makespan };
}

/**
 * Splits [0, durationSec) into at most `weights.length` segments for parallel work. Pure.
 *
 * - every interior boundary is a keyframe time (stream copy can only cut there);
 * - no segment is shorter than `minSegmentSec` and none is empty; boundaries strictly increase;
 * - segment lengths are as close to proportional to the weights as the keyframes allow: the
 *   plan minimises the finishing time max(length_i / weight_i), ties broken by closeness to the
 *   exact proportional boundaries;
 * - the number of segments k is the one with the earliest finish (ties → fewer segments), so a
 *   short input or sparse keyframes give fewer segments than weights (shorter than
 *   2·minSegmentSec, or no usable keyframe → 1 segment).
 *
 * Segment i corresponds to weights[i] when all weights are used. When k < weights.length the
 * segments are sized for the k largest weights in descending order (segment 0 for the largest):
 * the caller hands them to its strongest workers (coordinator/scheduling/plan.ts does).
 * Invalid input (no weights, weight ≤ 0, duration ≤ 0, negative minimum) → INVALID_ARGUMENT.
 */
export function planCuts(input: CutPlanInput): Cut[] {
  const D = input.durationSec;
  const m = input.minSegmentSec;
  const weights = input.weights;
  if (!(Number.isFinite(D) && D > 0)) throw new AppError('INVALID_ARGUMENT', `duration must be > 0 s, got ${String(D)}`);
  if (!(Number.isFinite(m) && m >= 0)) throw new AppError('INVALID_ARGUMENT', `minimum segment length must be ≥ 0 s, got ${String(m)}`);
  if (weights.length === 0) throw new AppError('INVALID_ARGUMENT', 'at least one weight is needed');
  if (!weights.every((w) => Number.isFinite(w) && w > 0)) throw new AppError('INVALID_ARGUMENT', 'weights must be finite and > 0');

  // Usable cut points: strictly inside, leaving at least m on both sides.
  const cand = [...new Set(input.keyframes)].filter((t) => Number.isFinite(t) && t > EPS && t < D - EPS && t + EPS >= m && D - t + EPS >= m).sort((a, b) => a - b);

  const n = weights.length;
  const maxK = Math.min(n, cand.length + 1, m > 0 ? Math.floor((D + EPS) / m) : Infinity);
  const descending = [...weights].sort((a, b) => b - a);
  let best: Solution = { bounds: [0, D], makespan: D / (n === 1 ? weights[0]! : descending[0]!) };
  for (let k = 2; k <= maxK; k++) {
    const ws = k === n ? weights : descending.slice(0, k);
    const s = solve(cand, D, ws, m);
    // Strictly better only: an extra segment must buy a measurably earlier finish.
    if (s && s.makespan < best.makespan * (1 - 1e-9)) best = s;
  }
  const b = best.bounds;
  return b.slice(0, -1).map((startSec, index) => ({ index, startSec, endSec: b[index + 1]! }));
}

/**
 * Splits [0, durationSec) into `count` chunks of about equal length for a worker queue. Pure.
 * Each interior boundary is the keyframe nearest its ideal position (durationSec·i/count) that
 * keeps every chunk at least `minSec` long and boundaries increasing; ideal positions without
 * such a keyframe are skipped, so sparse keyframes give fewer, longer chunks. Bounded chunks keep
 * a crash's rework, the per-chunk limits and the worker queue's tail small whatever the source's
 * length; planCuts balances a few pieces across workers instead.
 */
export function planChunks(keyframes: readonly number[], durationSec: number, count: number, minSec: number): Cut[] {
  const D = durationSec;
  if (!(Number.isFinite(D) && D > 0)) throw new AppError('INVALID_ARGUMENT', `duration must be > 0 s, got ${String(D)}`);
  if (!(Number.isInteger(count) && count >= 1)) throw new AppError('INVALID_ARGUMENT', `chunk count must be a whole number ≥ 1, got ${String(count)}`);
  const cand = [...new Set(keyframes)].filter((t) => Number.isFinite(t) && t > EPS && t < D - EPS).sort((a, b) => a - b);
  const bounds = [0];
  let from = 0;
  for (let i = 1; i < count; i++) {
    const target = (D * i) / count;
    const prev = bounds[bounds.length - 1]!;
    let best = -1;
    for (let j = from; j < cand.length; j++) {
      const t = cand[j]!;
      if (t + EPS < prev + minSec) continue;
      if (D - t + EPS < minSec) break;
      if (best < 0 || Math.abs(t - target) < Math.abs(cand[best]! - target)) best = j;
      else if (t > target) break;
    }
    // Skip an ideal position whose nearest keyframe is closer to a neighbour's ideal position.
    if (best < 0 || Math.abs(cand[best]! - target) > D / count / 2 + EPS) continue;
    bounds.push(cand[best]!);
    from = best + 1;
  }
  bounds.push(D);
  return bounds.slice(0, -1).map((startSec, index) => ({ index, startSec, endSec: bounds[index + 1]! }));
}
