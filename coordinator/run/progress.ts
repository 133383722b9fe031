import type { SegmentEvent } from '../../proto/gen/tessera/v1/agent.js';
import type { ProgressRecord } from '../state/job-model.js';

/** Share of the bar each phase covers: preparing 0–5 %, transcoding 5–90 %, finalizing 90–100 %. */
const PREPARE_END = 5;
const TRANSCODE_END = 90;

/** Seconds of history a throughput sample spans, and the spacing of samples. */
const RATE_WINDOW_MS = 10_000;
const SAMPLE_EVERY_MS = 1_000;
/** Rate samples kept (the most recent): about the last minute and a half of a job. */
const MAX_SAMPLES = 90;
/** The latest samples the p50 follows (each spans 10 s, so about the last 15 s of the job). */
const RECENT_SAMPLES = 5;
/** Finalize time (merge, zip, upload) as a share of the transcode time so far, until it starts. */
const MERGE_SHARE = 0.05;
/** The p90's least margin over the p50 at the start of a job (shrinking with the frames left). */
const P90_MIN_MARGIN = 0.2;

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.floor(q * (sorted.length - 1))))]!;
}

/**
 * Remaining time of a job from the frames its cluster encoded recently. Pure apart from the
 * clock it is given. Throughput is sampled every second over a sliding 10 s window; the median of
 * the last few samples gives the p50 estimate, the 10th-percentile (slow) sample of all of them
 * the p90 one. (The median of all samples let a slow start hold the p50 down long after the
 * cluster had sped up: with 120 half-second chunks on a busy 2-core machine it read 229 s at a
 * quarter of a job that had 21 s left.) Merging is
 * estimated from its own progress once it has started, and until then as a twentieth of the
 * transcode time so far (stream copies, a zip and an upload: 3-4 % of the transcode in the 30 and
 * 60 s 1080p benchmarks of 2026-12-01, 7 % with HLS and DASH packaging; a tenth, used until then,
 * put the p50 22 % over at three quarters of a job).
 */
export class EtaEstimator {
  private points: { t: number; frames: number }[] = [];
  /** Rate samples (frames/s) and the seconds each one's window spans. */
  private rates: { rate: number; spanSec: number }[] = [];
  private lastSample = -Infinity;
  private transcodeStart: number | undefined;
  private finalizeStart: number | undefined;
  private finalizeFraction = 0;

  /** Frames encoded so far (of `total`) at `now` (ms). */
  frames(now: number, done: number): void {
    this.transcodeStart ??= now;
    // Throughput counts from the first frame encoded. The seconds before it (segments crossing to
    // their nodes, cut into chunks, the encoders starting) do not recur; in the windows of the
    // first samples they read as a rate of a few frames a second, and the p90 of a 44 s job was
    // 690 s at a quarter of it (BENCHMARKS.md, ETA error).
    if (this.points.length === 0 && done <= 0) return;
    this.points.push({ t: now, frames: done });
    while (this.points.length > 2 && this.points[1]!.t <= now - RATE_WINDOW_MS) this.points.shift();
    if (now - this.lastSample < SAMPLE_EVERY_MS) return;
    const first = this.points[0]!;
    const dt = (now - first.t) / 1000;
    if (dt < 0.5) return;
    this.lastSample = now;
    this.rates.push({ rate: Math.max(0, (done - first.frames) / dt), spanSec: dt });
    if (this.rates.length > MAX_SAMPLES) this.rates.shift();
  }

  /** Merging is `fraction` done at `now`. */
  finalizing(now: number, fraction: number): void {
    this.finalizeStart ??= now;
    this.finalizeFraction = Math.max(this.finalizeFraction, fraction);
  }

  /** Seconds left as [p50, p90] at `now` for `remainingFrames`; undefined while unknown. */
  estimate(now: number, remainingFrames: number): [number, number] | undefined {
    if (this.finalizeStart !== undefined) {
      const f = this.finalizeFraction;
      if (f < 0.05) return undefined;
      const left = (((now - this.finalizeStart) / 1000) * (1 - f)) / f;
      return [left, left * 1.5];
    }
    const positive = this.rates.filter((r) => r.rate > 0);
    if (positive.length === 0 || this.transcodeStart === undefined) return undefined;
    // The p90's slow sample: from windows of at least half the full span once there are any. The
    // shorter windows of the first seconds catch one node's progress event and not the other's,
    // or an encoder filling its lookahead, and read as half the rate or less (the p90 said 63-86 s
    // for 32 s left at a quarter of a 60 s 1080p job).
    const settled = positive.filter((r) => r.spanSec >= RATE_WINDOW_MS / 2000);
    const sorted = (settled.length > 0 ? settled : positive).map((r) => r.rate).sort((a, b) => a - b);
    const recent = positive
      .slice(-RECENT_SAMPLES)
      .map((r) => r.rate)
      .sort((a, b) => a - b);
    const merge = ((now - this.transcodeStart) / 1000) * MERGE_SHARE;
    const p50 = remainingFrames / quantile(recent, 0.5) + merge;
    const p90 = remainingFrames / quantile(sorted, 0.1) + merge * 1.5;
    // However steady the samples, the farther the end the less they say about it: the p90 is at
    // least the p50 plus a fifth of it times the share of the frames still to do.
    const doneFrames = this.points.at(-1)?.frames ?? 0;
    const ahead = remainingFrames / Math.max(1, remainingFrames + doneFrames);
    return [p50, Math.max(p50 * (1 + P90_MIN_MARGIN * ahead), p90)];
  }
}

/**
 * A job's progress as one number that never goes backwards (a reassigned segment restarts its
 * frame count from its checkpoint, which must not move the bar back), written to etcd at most
 * every `intervalMs`.
 */
export class ProgressTracker {
  private segments: ProgressRecord['segments'] = {};
  private totalFrames = 1;
  private pct = 0;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private writing: Promise<void> = Promise.resolve();
  private framesDone = 0;
  private readonly eta = new EtaEstimator();

  constructor(
    private readonly write: (p: ProgressRecord) => Promise<void>,
    private readonly intervalMs: number,
    initial?: ProgressRecord,
    private readonly now: () => number = Date.now,
  ) {
    if (initial) {
      this.pct = initial.progress;
      this.segments = { ...initial.segments };
    }
  }

  get percent(): number {
    return this.pct;
  }

  setTotalFrames(n: number): void {
    this.totalFrames = Math.max(1, n);
  }

  preparing(fraction: number): void {
    this.bump(PREPARE_END * Math.min(1, fraction));
  }

  segment(index: number, ev: SegmentEvent): void {
    const prev = this.segments[String(index)];
    this.segments[String(index)] = {
      framesDone: Math.max(prev?.framesDone ?? 0, ev.framesDone),
      subSegments: ev.subSegments,
      subSegmentsDone: Math.max(prev?.subSegmentsDone ?? 0, ev.subSegmentsDone),
    };
    const done = Object.values(this.segments).reduce((a, s) => a + s.framesDone, 0);
    this.framesDone = done;
    this.eta.frames(this.now(), done);
    this.bump(PREPARE_END + (TRANSCODE_END - PREPARE_END) * Math.min(1, done / this.totalFrames));
  }

  finalizing(fraction: number): void {
    this.eta.finalizing(this.now(), fraction);
    this.bump(TRANSCODE_END + (100 - TRANSCODE_END) * Math.min(1, fraction));
  }

  private bump(p: number): void {
    if (p <= this.pct) return;
    this.pct = p;
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.intervalMs);
  }

  /** Writes now if anything changed since the last write. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (!this.dirty) return this.writing;
    this.dirty = false;
    const eta = this.eta.estimate(this.now(), Math.max(0, this.totalFrames - this.framesDone));
    const snapshot: ProgressRecord = {
      progress: Math.round(this.pct * 100) / 100,
      segments: { ...this.segments },
      ...(eta ? { etaP50Sec: Math.round(eta[0] * 10) / 10, etaP90Sec: Math.round(eta[1] * 10) / 10 } : {}),
    };
    this.writing = this.writing.then(() => this.write(snapshot)).catch(() => undefined);
    return this.writing;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
