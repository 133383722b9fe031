import { AppError, isAppError } from './errors.js';

/**
 * The one retry policy of Tessera: exponential backoff with full jitter, bounded by a number of
 * attempts and/or a time budget; what is retried is decided by the error (AppError.retryable).
 */
export interface RetryOptions {
  /** Tries at most this many times (default: no limit; then `budgetMs` bounds the retries). */
  attempts?: number;
  /** Retries no more once this long has passed since the first try, ms (default: no limit). */
  budgetMs?: number;
  baseMs: number;
  maxMs: number;
  /** Never waits less than this between tries, ms (default 0). */
  minMs?: number;
  signal?: AbortSignal | undefined;
  /** Defaults to: AppError.retryable, or any non-AppError (infrastructure trouble). */
  isRetryable?: (err: unknown) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Full-jitter exponential backoff delay for attempt n (0-based), ms. */
export function backoffDelay(n: number, baseMs: number, maxMs: number, random = Math.random): number {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** n));
}

/** The policy's wait before retry n (0-based), ms: full jitter, at least `minMs`. */
export function retryDelay(n: number, o: Pick<RetryOptions, 'baseMs' | 'maxMs' | 'minMs'>, random = Math.random): number {
  return Math.max(o.minMs ?? 0, backoffDelay(n, o.baseMs, o.maxMs, random));
}

/** Retries transient failures with exponential backoff and jitter; never retries permanent errors. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  if (o.attempts === undefined && o.budgetMs === undefined) throw new AppError('INTERNAL', 'retry needs attempts or budgetMs');
  const retryable = o.isRetryable ?? ((err: unknown) => (isAppError(err) ? err.retryable : true));
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (o.signal?.aborted || attempt + 1 >= (o.attempts ?? Infinity) || Date.now() - started >= (o.budgetMs ?? Infinity) || !retryable(err)) throw err;
      const delay = retryDelay(attempt, o);
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
