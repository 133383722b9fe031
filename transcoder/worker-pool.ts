import { AppError } from '../common/errors.js';

interface Waiting {
  start: () => void;
}

/**
 * Bounded-concurrency FIFO runner: at most `size` tasks run at once (one per encoder slot), the
 * rest wait in arrival order. A task whose signal aborts while it waits is rejected with
 * CANCELLED without ever running; a running task sees the abort through the signal it is given.
 */
export class WorkerPool {
  private readonly limit: number;
  private running = 0;
  private readonly queue: Waiting[] = [];

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new AppError('INVALID_ARGUMENT', `worker pool size must be a positive integer, got ${String(size)}`);
    this.limit = size;
  }

  /** Tasks running now. */
  get busy(): number {
    return this.running;
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.queue.length;
  }

  /** Slots (the most tasks that run at once). */
  get size(): number {
    return this.limit;
  }

  /**
   * Runs `task` when a slot is free. The task's signal aborts when `signal` does. Resolves or
   * rejects with the task's outcome; CANCELLED if `signal` aborts before the task starts.
   */
  run<T>(task: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    return new Promise<T>((resolve, reject) => {
      const execute = (): void => {
        this.running++;
        const ctl = new AbortController();
        const forward = (): void => ctl.abort(signal?.reason);
        signal?.addEventListener('abort', forward, { once: true });
        if (signal?.aborted) forward();
        Promise.resolve()
          .then(() => task(ctl.signal))
          .then(resolve, reject)
          .finally(() => {
            signal?.removeEventListener('abort', forward);
            this.running--;
            this.next();
          });
      };
      if (this.running < this.limit && this.queue.length === 0) {
        execute();
        return;
      }
      const entry: Waiting = {
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          execute();
        },
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(cancelled(signal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
    });
  }

  private next(): void {
    while (this.running < this.limit) {
      const w = this.queue.shift();
      if (!w) return;
      w.start();
    }
  }
}

function cancelled(signal: AbortSignal | undefined): AppError {
  return new AppError('CANCELLED', 'the task was cancelled before it started', { cause: signal?.reason });
}
