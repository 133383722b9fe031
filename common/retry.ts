import { AppError, isAppError } from './errors.js';

export interface RetryOptions {
  attempts: number;
  baseMs: number;
  maxMs: number;
  signal?: AbortSignal | undefined;
  /** Defaults to: AppError.retryable, or any non-AppError (infrastructure trouble). */
  isRetryable?: (err: unknown) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Full-jitter exponential backoff delay for attempt n (0-based), ms. */
export function backoffDelay(n: number, baseMs: number, maxMs: number, random = Math.random): number {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** n));
}

/** Retries transient failures with exponential backoff and jitter; never retries permanent errors. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  const retryable = o.isRetryable ?? ((err: unknown) => (isAppError(err) ? err.retryable : true));
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (o.signal?.aborted || attempt + 1 >= o.attempts || !retryable(err)) throw err;
      const delay = backoffDelay(attempt, o.baseMs, o.maxMs);
      o.onRetry?.(err, attempt + 1, delay);
      await sleep(delay, o.signal);
    }
  }
}

/** setTimeout as a promise that rejects when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new AppError('CANCELLED', 'aborted'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal?.reason ?? new AppError('CANCELLED', 'aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
