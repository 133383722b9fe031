import { statfs } from 'node:fs/promises';
import { AppError } from './errors.js';

/** Free and total bytes of the filesystem holding `dir` (what an unprivileged writer may use). */
export async function stagingSpace(dir: string): Promise<{ free: number; total: number }> {
  const s = await statfs(dir);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
}

/** Why `bytes` can never fit in a staging area of `total` bytes less `reserve`, or undefined when they can. Pure. */
export function neverFits(bytes: number, total: number, reserve: number, what: string, where: string): AppError | undefined {
  if (bytes + reserve <= total) return undefined;
  return new AppError(
    'STAGING_TOO_SMALL',
    `${what} needs ${fmt(bytes)} of staging, but ${where} holds ${fmt(Math.max(0, total - reserve))} at most (${fmt(total)} less a reserve of ${fmt(reserve)}); give it a larger staging disk`,
    { retryable: false },
  );
}

function fmt(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(2)} GiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

/**
 * Waits until `bytes` fit in the staging at `dir` above `reserve`: STAGING_TOO_SMALL (permanent)
 * when they never can (larger than the whole disk less the reserve); otherwise it waits for other
 * jobs to free room (checking every `pollMs`, reporting through `onWait`), so a busy disk is
 * never filled and the process never evicted by it.
 */
export async function ensureRoom(dir: string, bytes: number, reserve: number, what: string, o: { signal?: AbortSignal; pollMs?: number; onWait?: (msg: string) => void } = {}): Promise<void> {
  for (let waited = false; ; waited = true) {
    const { free, total } = await stagingSpace(dir);
    const never = neverFits(bytes, total, reserve, what, "this coordinator's staging");
    if (never) throw never;
    if (free - bytes >= reserve) return;
    if (!waited) o.onWait?.(`waiting for staging space: ${what} needs ${fmt(bytes)}, ${fmt(Math.max(0, free - reserve))} free`);
    if (o.signal?.aborted) throw new AppError('CANCELLED', 'cancelled while waiting for staging space');
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, o.pollMs ?? 2_000);
      o.signal?.addEventListener(
        'abort',
        () => {
          clearTimeout(t);
          resolve();
        },
        { once: true },
      );
    });
  }
}
