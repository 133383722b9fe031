/** Frames per second over a sliding window (default one minute), from reported frame counts. */
export class Throughput {
  private samples: { atMs: number; frames: number }[] = [];

  constructor(private readonly windowMs = 60_000) {}

  add(frames: number, now = Date.now()): void {
    this.samples.push({ atMs: now, frames });
    this.trim(now);
  }

  perSecond(now = Date.now()): number {
    this.trim(now);
    const total = this.samples.reduce((a, s) => a + s.frames, 0);
    return Math.round((total / (this.windowMs / 1000)) * 100) / 100;
  }

  private trim(now: number): void {
    while (this.samples.length > 0 && this.samples[0]!.atMs < now - this.windowMs) this.samples.shift();
  }
}
