import type { Logger } from '../../common/logger.js';
import type { JobStore } from './job-store.js';

export interface HistorySettings {
  /** A finished job keeps its working tree this long before it moves to history, ms. */
  archiveAfterMs: number;
  /** History dropped once its job finished longer ago than this, ms (0: no age limit). */
  maxAgeMs: number;
  /** History records kept at most (0: no count limit). */
  maxJobs: number;
  /** Jobs archived, and records dropped, per sweep at most. */
  batch: number;
  intervalMs: number;
}

/** What one sweep did. */
export interface SweepResult {
  archived: number;
  dropped: number;
}

/** Parallel transactions per sweep: enough to archive a thousand jobs in seconds, and no more (the API shares etcd). */
const CONCURRENCY = 4;

/**
 * On the leader, every few seconds: moves finished jobs past `archiveAfterMs` to history (their
 * working tree deleted, one transaction each) and drops history past retention, each bounded
 * per sweep. etcd's key count and size then follow the jobs in flight and the retention, not
 * the number of jobs ever run. A failed sweep is logged and tried again at the next tick.
 */
export class HistorySweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepResult> | undefined;

  constructor(
    private readonly store: JobStore,
    private readonly s: HistorySettings,
    private readonly isLeader: () => boolean,
    private readonly log: Logger,
    /**
     * Runs before a job is archived (its `uploads/<id>` record goes with the tree): the leftovers
     * its runner could not remove (a leader killed after a cancel). A job whose hook fails stays
     * in the tree until a later sweep.
     */
    private readonly beforeArchive: (jobId: string) => Promise<void> = async () => undefined,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.isLeader()) void this.sweep().catch((err: unknown) => this.log.warn({ err }, 'history sweep failed; retrying at the next tick'));
    }, this.s.intervalMs);
  }

  /** One sweep (concurrent calls share the one in progress). */
  sweep(nowMs = Date.now()): Promise<SweepResult> {
    this.running ??= this.sweepOnce(nowMs).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async sweepOnce(nowMs: number): Promise<SweepResult> {
    const due = await this.store.finishedDue(nowMs - this.s.archiveAfterMs, this.s.batch);
    let archived = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < due.length && this.isLeader()) {
        const d = due[next++]!;
        try {
          await this.beforeArchive(d.jobId);
        } catch (err) {
          this.log.warn({ err, jobId: d.jobId }, 'could not remove the leftovers of a finished job; archiving it at a later sweep');
          continue;
        }
        if ((await this.store.archive(d.key, d.jobId, nowMs)) === 'archived') archived++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, due.length) }, worker));
    const dropped = this.isLeader() ? await this.store.dropExpiredHistory({ maxJobs: this.s.maxJobs, maxAgeMs: this.s.maxAgeMs, limit: this.s.batch, nowMs }) : 0;
    if (archived > 0 || dropped > 0) this.log.info({ archived, dropped }, 'history sweep');
    return { archived, dropped };
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }
}
