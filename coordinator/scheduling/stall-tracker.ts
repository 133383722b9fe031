/**
 * How long each job in flight has gone without any sign of progress (pure logic, no I/O).
 * A job's "fingerprint" is whatever changes when it moves: its record's revision (state,
 * segments, trail), its progress record, its upload record. Each observation with a new
 * fingerprint restarts the job's clock; a job seen for the first time starts it then.
 */
export class StallTracker {
  private readonly seen = new Map<string, { fingerprint: string; sinceMs: number }>();

  /** Records one round of observations (every job in flight) and forgets jobs not in it. */
  observe(jobs: ReadonlyMap<string, string>, nowMs: number): void {
    for (const id of [...this.seen.keys()]) if (!jobs.has(id)) this.seen.delete(id);
    for (const [id, fingerprint] of jobs) {
      const prev = this.seen.get(id);
      if (!prev || prev.fingerprint !== fingerprint) this.seen.set(id, { fingerprint, sinceMs: nowMs });
    }
  }

  /** Seconds since the longest-unchanged job last changed; 0 with no job in flight. */
  maxStalledSeconds(nowMs: number): number {
    let max = 0;
    for (const s of this.seen.values()) max = Math.max(max, (nowMs - s.sinceMs) / 1000);
    return max;
  }
}
