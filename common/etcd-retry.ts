import {
  ClientClosedError,
  EtcdError,
  EtcdLeaseInvalidError,
  EtcdLockFailedError,
  EtcdPermissionDeniedError,
  GRPCGenericError,
  GRPCInvalidArgumentError,
  GRPCNotImplementedError,
  GRPCUnauthenticatedError,
  isRecoverableError,
} from 'etcd3';
import { isBrokenCircuitError, isTaskCancelledError } from 'cockatiel';
import { AppError, errorMessage, isAppError, type ErrorCode } from './errors.js';
import type { Logger } from './logger.js';
import { retry } from './retry.js';

/**
 * True for trouble that passes when etcd comes back: no quorum, a frozen or restarting member, a
 * call past its deadline, the client's open circuit breaker, a lease that lapsed meanwhile; and
 * our own retryable UNAVAILABLE / DEADLINE_EXCEEDED (compare-and-swap contention). A closed client (shutdown) and refused requests
 * (bad argument, bad credentials) are permanent.
 */
export function isTransientEtcdError(err: unknown): boolean {
  if (isAppError(err)) return err.retryable && (err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED');
  if (!(err instanceof Error)) return false;
  if (err instanceof ClientClosedError) return false;
  if (err instanceof GRPCInvalidArgumentError || err instanceof GRPCNotImplementedError || err instanceof GRPCUnauthenticatedError) return false;
  return err instanceof GRPCGenericError || err instanceof EtcdLeaseInvalidError || isRecoverableError(err) || isBrokenCircuitError(err) || isTaskCancelledError(err);
}

/**
 * True when `err` is etcd being unreachable (raw, or as the UNAVAILABLE `withEtcdRetry` gives up
 * with), not a failure of the work itself: callers keep the work in flight and try again later.
 */
export function isEtcdOutage(err: unknown): boolean {
  if (isAppError(err)) return err.code === 'UNAVAILABLE' && err.cause !== undefined && !isAppError(err.cause) && isTransientEtcdError(err.cause);
  return isTransientEtcdError(err);
}

/** An etcd failure as the AppError callers and clients see: UNAVAILABLE, retryable. */
export function etcdUnavailable(err: unknown, what: string): AppError {
  return new AppError('UNAVAILABLE', `${what}: etcd is unavailable (${errorMessage(err)})`, { cause: err, retryable: true });
}

/** True when `err` was raised by the etcd client library (or its fault-handling policies), not by our code. */
export function isEtcdLibraryError(err: unknown): boolean {
  return (
    err instanceof GRPCGenericError ||
    err instanceof EtcdError ||
    err instanceof ClientClosedError ||
    err instanceof EtcdLeaseInvalidError ||
    err instanceof EtcdLockFailedError ||
    err instanceof EtcdPermissionDeniedError ||
    isBrokenCircuitError(err) ||
    isTaskCancelledError(err)
  );
}

export interface AsAppErrorOptions {
  /** What was being done, for the message (default "etcd call"). */
  what?: string;
  /**
   * What an error of unknown kind (neither an AppError nor the etcd library's) becomes (default
   * INTERNAL, permanent). A caller whose unknown failures are infrastructure trouble (a node
   * attempt that broke) says so here.
   */
  unknown?: { code: ErrorCode; retryable: boolean };
}

/**
 * The one place thrown values become the AppError the rest of the code classifies: AppErrors pass
 * through; an etcd outage (isTransientEtcdError) becomes UNAVAILABLE, retryable (its cause kept, so
 * isEtcdOutage still knows it); a closed etcd client (shutdown) CANCELLED; any other etcd error (a
 * refused request) INTERNAL, permanent; anything else INTERNAL, retryable only if the caller says so.
 */
export function asAppError(err: unknown, o: AsAppErrorOptions = {}): AppError {
  if (isAppError(err)) return err;
  if (isEtcdLibraryError(err)) {
    const what = o.what ?? 'etcd call';
    if (isTransientEtcdError(err)) return etcdUnavailable(err, what);
    if (err instanceof ClientClosedError) return new AppError('CANCELLED', `${what}: the etcd client is closed (shutting down)`, { cause: err, retryable: false });
    return new AppError('INTERNAL', `${what}: etcd refused the request (${errorMessage(err)})`, { cause: err, retryable: false });
  }
  const unknown = o.unknown ?? { code: 'INTERNAL', retryable: false };
  return new AppError(unknown.code, o.what === undefined ? errorMessage(err) : `${o.what}: ${errorMessage(err)}`, { cause: err, retryable: unknown.retryable });
}

export interface EtcdRetryOptions {
  /** Stops retrying (and rejects with the signal's reason) when aborted. */
  signal?: AbortSignal | undefined;
  log?: Logger | undefined;
  /** Give up after this long, ms (default 10 minutes: an etcd outage of minutes must not fail work). */
  budgetMs?: number;
  /** Backoff bounds, ms (full jitter, doubling). */
  baseMs?: number;
  maxMs?: number;
  onRetry?: (err: unknown, attempt: number) => void;
}

/**
 * Runs an etcd operation until it succeeds, retrying transient failures with exponential
 * backoff for up to `budgetMs`. Permanent errors (FENCED, NOT_LEADER, a refused request) pass
 * through at once; an exhausted budget rejects with UNAVAILABLE (retryable), never INTERNAL.
 */
export async function withEtcdRetry<T>(what: string, fn: () => Promise<T>, o: EtcdRetryOptions = {}): Promise<T> {
  let lastLogAt = 0;
  const started = Date.now();
  try {
    return await retry(
      () => {
        if (o.signal?.aborted) throw o.signal.reason;
        return fn();
      },
      {
        budgetMs: o.budgetMs ?? 600_000,
        baseMs: o.baseMs ?? 200,
        maxMs: o.maxMs ?? 3_000,
        minMs: 50,
        signal: o.signal,
        isRetryable: isTransientEtcdError,
        onRetry: (err, attempt) => {
          o.onRetry?.(err, attempt);
          // One line when the trouble starts and one every 10 s while it lasts, not one per try.
          if (Date.now() - lastLogAt >= 10_000) {
            lastLogAt = Date.now();
            o.log?.warn({ what, attempt, elapsedMs: Date.now() - started, err: errorMessage(err) }, 'etcd call failed; retrying');
          }
        },
      },
    );
  } catch (err) {
    if (o.signal?.aborted) throw o.signal.reason;
    // A refused request or a closed client: no retry, and no raw etcd3 error past this point.
    if (!isTransientEtcdError(err)) throw isEtcdLibraryError(err) ? asAppError(err, { what }) : err;
    throw isAppError(err) ? err : etcdUnavailable(err, what); // the budget is spent
  }
}
