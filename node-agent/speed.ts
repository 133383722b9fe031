/** Weight of the newest chunk in the average (the rest decays: a node that slows down is seen within a few chunks). */
const ALPHA = 0.3;

/**
 * A node's encode speed per worker slot in megapixels of output per second (all renditions),
 * averaged over finished chunks (EWMA, rounded to 0.01). Chunks shorter than 0.2 s of work are
 * ignored: process start-up dominates them.
 */
export class SpeedMeter {
  private ewma: number | undefined;

  observe(frames: number, seconds: number, pixelsPerFrame: number): void {
    if (!(frames > 0 && seconds >= 0.2 && pixelsPerFrame > 0)) return;
    const mps = (frames * pixelsPerFrame) / seconds / 1e6;
    this.ewma = this.ewma === undefined ? mps : ALPHA * mps + (1 - ALPHA) * this.ewma;
  }

  get value(): number | undefined {
    return this.ewma === undefined ? undefined : Math.round(this.ewma * 100) / 100;
  }
}
