import type { SegmentEvent } from '../proto/gen/tessera/v1/agent.js';
import type { ProgressRecord } from './job-model.js';

/** Share of the bar each phase covers: preparing 0–5 %, transcoding 5–90 %, finalizing 90–100 %. */
const PREPARE_END = 5;
const TRANSCODE_END = 90;

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

  constructor(
    private readonly write: (p: ProgressRecord) => Promise<void>,
    private readonly intervalMs: number,
    initial?: ProgressRecord,
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
    this.bump(PREPARE_END + (TRANSCODE_END - PREPARE_END) * Math.min(1, done / this.totalFrames));
  }

  finalizing(fraction: number): void {
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
    const snapshot: ProgressRecord = { progress: Math.round(this.pct * 100) / 100, segments: { ...this.segments } };
    this.writing = this.writing.then(() => this.write(snapshot)).catch(() => undefined);
    return this.writing;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
