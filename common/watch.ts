import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import type { Logger } from './logger.js';
import { backoffDelay } from './retry.js';

export interface WatchHandlers {
  put?: (kv: IKeyValue) => void;
  delete?: (kv: IKeyValue) => void;
  /** The stream to etcd broke (events may arrive late; etcd3 resumes it from the last revision). */
  disconnected?: () => void;
  /**
   * The watch was re-created from the current revision: events in between are lost (etcd
   * compacted the revision the watch had to resume from, or cancelled it). Re-list now.
   */
  resync: () => void;
}

/**
 * An etcd watch that never dies silently and never crashes the process. etcd3 resumes a watch
 * after a broken stream from the last revision it saw; if etcd compacted that revision away
 * meanwhile, etcd cancels the watch and etcd3 emits `error` on it: without a listener that
 * throws (the process crashes), with one the watch is simply gone (cancellations, drains and
 * leader changes are then never seen). Here an ended watch is logged, created again from the
 * current revision after a short backoff, and `resync` tells the owner to re-list.
 */
export class ResilientWatch {
  private watcher: Watcher | undefined;
  private closed = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly etcd: Etcd3,
    private readonly target: { key: string } | { prefix: string },
    private readonly h: WatchHandlers,
    private readonly log: Logger,
  ) {}

  /** Resolves once the watch is established (watch first, then read: nothing slips between). */
  static async open(etcd: Etcd3, target: { key: string } | { prefix: string }, h: WatchHandlers, log: Logger): Promise<ResilientWatch> {
    const w = new ResilientWatch(etcd, target, h, log);
    await w.create();
    return w;
  }

  /** Times the watch was re-created after it ended (for tests and metrics). */
  rewatches = 0;

  private async create(): Promise<void> {
    const b = 'key' in this.target ? this.etcd.watch().key(this.target.key) : this.etcd.watch().prefix(this.target.prefix);
    const w = await b.create();
    if (this.closed) {
      await w.cancel().catch(() => undefined);
      return;
    }
    if (this.h.put) w.on('put', this.h.put);
    if (this.h.delete) w.on('delete', this.h.delete);
    if (this.h.disconnected) w.on('disconnected', this.h.disconnected);
    w.on('error', (err: Error) => this.ended(w, err));
    this.watcher = w;
  }

  private ended(w: Watcher, err: Error): void {
    if (w !== this.watcher || this.closed) return;
    this.watcher = undefined;
    // Not w.cancel(): etcd3 already dropped the watcher, and a cancel request for its id would
    // come back as a response for a watcher it does not know, which etcd3 throws on (a crash).
    const delayMs = backoffDelay(this.failures++, 100, 5_000) + 100;
    this.log.warn({ err: err.message, ...this.target, retryInMs: delayMs }, 'etcd watch ended (compacted or cancelled); watching again from the current revision');
    this.schedule(delayMs);
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed) return;
      this.create().then(
        () => {
          if (this.closed) return;
          this.failures = 0;
          this.rewatches++;
          this.h.resync();
        },
        (err: unknown) => {
          const next = backoffDelay(this.failures++, 100, 5_000) + 100;
          this.log.warn({ err, ...this.target, retryInMs: next }, 'could not watch again; retrying');
          this.schedule(next);
        },
      );
    }, delayMs);
  }

  /** Stops watching. Idempotent. */
  async cancel(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const w = this.watcher;
    this.watcher = undefined;
    await w?.cancel().catch(() => undefined);
  }
}
