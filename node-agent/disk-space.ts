import { statfs } from 'node:fs/promises';
import { AppError, isNoSpace } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/** Why a node is out of service for lack of disk, and what it needs back to return. */
export interface OutOfSpace {
  reason: string;
  /** Free bytes in staging at which the node takes work again. */
  needBytes: number;
}

/**
 * The staging disk of a node agent: free space is checked before work is accepted, and a full disk
 * (refused work, or ENOSPC from a write or from ffmpeg) takes the node out of service until its
 * staging has room again for what did not fit (plus the reserve) — or the process restarts.
 */
export class DiskSpace {
  full: OutOfSpace | undefined;

  constructor(
    private readonly dir: string,
    /** Bytes always left free in staging (sub-segments, outputs and logs need room too). */
    private readonly reserveBytes: number,
    private readonly log: Logger,
    private readonly onChange: () => void = () => undefined,
  ) {}

  async freeBytes(): Promise<number> {
    const s = await statfs(this.dir);
    return s.bavail * s.bsize;
  }

  /** NO_SPACE (the node goes out of service) unless `bytes` fit in staging above the reserve. */
  async admit(bytes: number, what: string): Promise<void> {
    if (this.full) throw this.error();
    const free = await this.freeBytes();
    if (free - bytes < this.reserveBytes) throw this.markFull(`${what} needs ${bytes} bytes; staging has ${free} free (reserve ${this.reserveBytes})`, bytes);
  }

  /**
   * Out of service, and the error to answer with (retryable: elsewhere). Back once staging has
   * room for `workBytes` (what did not fit) above the reserve.
   */
  markFull(reason: string, workBytes = this.reserveBytes): AppError {
    if (!this.full) {
      const needBytes = workBytes + this.reserveBytes;
      this.full = { reason, needBytes };
      this.log.warn({ reason, needBytes }, 'staging is full: taking no new work');
      this.onChange();
    }
    return this.error();
  }

  /** `err` as NO_SPACE when it is a full disk (taking the node out of service); else `err` itself. */
  classify(err: unknown, what: string, workBytes?: number): unknown {
    return isNoSpace(err) ? this.markFull(`${what}: no space left on device`, workBytes) : err;
  }

  /** Back in service once staging has the room the refused work needed. */
  async recheck(): Promise<void> {
    if (!this.full) return;
    const free = await this.freeBytes();
    if (free >= this.full.needBytes) {
      this.log.info({ free, needBytes: this.full.needBytes }, 'staging has room again: taking work');
      this.full = undefined;
      this.onChange();
    }
  }

  private error(): AppError {
    return new AppError('NO_SPACE', `node staging is full (${this.full?.reason ?? 'no space'}); retry on another node`, { retryable: true });
  }
}
