import { parseRecord } from '../../common/record-schemas.js';
import type { Etcd3 } from 'etcd3';
import { prefixEnd, rangePages } from '../../common/etcd.js';
import { leaderFenceCompare, type TxOp } from '../../common/etcd-tx/compare.js';
import { fencedWrite } from '../../common/etcd-tx/fenced-put.js';
import { errorMessage, isAppError } from '../../common/errors.js';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import { retryDelay, sleep } from '../../common/retry.js';
import { withEtcdRetry } from '../../common/etcd-retry.js';
import { ResilientWatch } from '../../common/watch.js';
import type { LeaderFence } from '../state/job-store.js';
import { signBody, type OutboxEntry } from './webhooks.js';
import { pinnedRequest, vetTarget, type OutboundPolicy } from '../input/safe-http.js';
import { outboxEntrySchema } from '../state/job-schemas.js';

export interface OutboxSettings {
  secret: string;
  /** First retry after about this long, ms; doubles per attempt. */
  baseMs: number;
  /** Retries at most this far apart, ms. */
  maxMs: number;
  /** An event not delivered this long after its state change is dropped (logged), ms. */
  retryForMs: number;
  /** Deadline of one POST, ms. */
  timeoutMs: number;
  /** The leader re-lists the whole outbox this often (a watch can lag), ms. */
  rescanMs: number;
  /** POSTs in flight at most. */
  concurrency: number;
  /** Where webhooks may go: the same address rules as http(s) inputs, checked at every attempt. */
  policy: OutboundPolicy;
}

export interface OutboxHooks {
  onRetry?: () => void;
  onDelivered?: (e: OutboxEntry) => void;
  onDropped?: (e: OutboxEntry, why: string) => void;
}

type Outcome = { kind: 'delivered'; status: number } | { kind: 'refused'; status: number; why?: string } | { kind: 'retry'; error: string };

/** Raised when a fenced outbox write finds another leader. */
class Deposed extends Error {}

/**
 * Delivers the webhook outbox on the leader. Every event was put under `outbox/<jobId>/` in the
 * same transaction as its state change, so none can be lost between a change and its delivery.
 * Per job the events go one at a time, in order (RUNNING before the final state); different jobs
 * go in parallel (at most `concurrency` POSTs at once). A failed attempt records its count and
 * the time of the next one in the entry (a fenced write), so a new leader continues the same
 * backoff; a 2xx deletes the entry, as does a permanent refusal (a 4xx other than 408/429) or
 * `retryForMs` without success. Delivery is at least once: a leader that dies between a 2xx and
 * the delete makes its successor send the event again, with the same id.
 */
export class WebhookOutbox {
  private fence: LeaderFence | undefined;
  private term = new AbortController();
  private readonly pumps = new Map<string, Promise<void>>();
  /** Jobs with an entry put while their pump was running (it reads again before it ends). */
  private readonly dirty = new Set<string>();
  private watch: ResilientWatch | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly s: OutboxSettings,
    private readonly log: Logger,
    private readonly hooks: OutboxHooks = {},
  ) {}

  /** Watches the outbox (any coordinator writes to it: a cancel, a submit). */
  async start(): Promise<void> {
    this.watch = await ResilientWatch.open(
      this.etcd,
      { prefix: this.keys.outbox() },
      {
        put: (kv) => this.poke(this.jobOf(kv.key.toString())),
        resync: () => this.rescanSoon(),
      },
      this.log,
    );
    this.rescanTimer = setInterval(() => this.rescanSoon(), this.s.rescanMs);
  }

  /** Leadership gained: deliver everything pending (from the recorded retry times). */
  elected(fence: LeaderFence): void {
    this.term.abort();
    this.term = new AbortController();
    this.fence = fence;
    this.rescanSoon();
  }

  /** Leadership lost: stop delivering (the next leader continues from etcd). */
  deposed(): void {
    this.fence = undefined;
    this.term.abort();
    for (const w of this.slotWaiters.splice(0)) w(); // they see the abort and end
  }

  /** Jobs with a delivery loop right now (tests, metrics). */
  get activeJobs(): number {
    return this.pumps.size;
  }

  private jobOf(key: string): string | undefined {
    const rest = key.slice(this.keys.outbox().length);
    const slash = rest.indexOf('/');
    return slash > 0 ? rest.slice(0, slash) : undefined;
  }

  private poke(jobId: string | undefined): void {
    if (!jobId || !this.fence || this.closed) return;
    if (this.pumps.has(jobId)) {
      this.dirty.add(jobId);
      return;
    }
    const fence = this.fence;
    const signal = this.term.signal;
    const p = this.pump(jobId, fence, signal)
      .catch((err: unknown) => {
        // Another coordinator leads (we have not been told yet): stop delivering under this term.
        if (err instanceof Deposed && this.fence === fence) this.deposed();
        else if (!signal.aborted) this.log.warn({ err: errorMessage(err), jobId }, 'webhook delivery loop failed; the rescan picks it up again');
      })
      .finally(() => {
        this.pumps.delete(jobId);
        if (this.dirty.delete(jobId)) this.poke(jobId);
      });
    this.pumps.set(jobId, p);
  }

  private rescanning = false;

  private rescanSoon(): void {
    if (!this.fence || this.rescanning || this.closed) return;
    this.rescanning = true;
    void this.rescan()
      .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'could not list the webhook outbox; trying again at the next rescan'))
      .finally(() => {
        this.rescanning = false;
      });
  }

  /** Every job with an entry gets a delivery loop (keys only, bounded pages). */
  private async rescan(): Promise<void> {
    const prefix = this.keys.outbox();
    for await (const page of rangePages(this.etcd, { start: prefix, end: prefixEnd(prefix) }, { keysOnly: true })) {
      if (!this.fence) return;
      for (const kv of page) {
        const jobId = this.jobOf(kv.key);
        if (jobId && !this.pumps.has(jobId)) this.poke(jobId);
      }
    }
  }

  /**
   * One job's events, oldest first, until none is left (or leadership ends). etcd trouble is
   * ridden out by withEtcdRetry (the one retry policy); past its budget the loop ends and the
   * next rescan starts it again.
   */
  private async pump(jobId: string, fence: LeaderFence, signal: AbortSignal): Promise<void> {
    const etcdRetry = { signal, log: this.log };
    while (!signal.aborted) {
      const res = await withEtcdRetry('read the webhook outbox', () => this.etcd.getAll().prefix(this.keys.outboxJob(jobId)).sort('Key', 'Ascend').limit(1).exec(), etcdRetry);
      const kv = res.kvs[0];
      if (!kv) return;
      const key = kv.key.toString();
      const rev = kv.mod_revision;
      let e: OutboxEntry;
      try {
        e = parseRecord(outboxEntrySchema, kv.value, key);
      } catch {
        await this.fencedDelete(key, rev, fence, signal);
        continue;
      }
      const wait = e.nextAtMs - Date.now();
      if (wait > 0) {
        await sleep(wait, signal);
        continue; // read again: another leader may have moved it meanwhile
      }
      if (Date.now() - e.createdAtMs > this.s.retryForMs) {
        if (await this.fencedDelete(key, rev, fence, signal)) this.dropped(e, `not delivered within ${this.s.retryForMs} ms`);
        continue;
      }
      const out = await this.attempt(e, signal);
      if (signal.aborted) return;
      if (out.kind === 'delivered') {
        await this.fencedDelete(key, rev, fence, signal);
        this.log.info({ jobId, state: e.state, eventId: e.id, attempts: e.attempts + 1, status: out.status }, 'webhook delivered');
        this.hooks.onDelivered?.(e);
      } else if (out.kind === 'refused') {
        if (await this.fencedDelete(key, rev, fence, signal)) this.dropped(e, out.why ?? `refused with HTTP ${out.status}`);
      } else {
        // The retry policy's delay, kept in the entry so that a new leader continues the backoff
        // (at least half the base: no hot loop when the jitter draws 0).
        const attempts = e.attempts + 1;
        const delay = retryDelay(attempts - 1, { baseMs: this.s.baseMs, maxMs: this.s.maxMs, minMs: this.s.baseMs / 2 });
        const next: OutboxEntry = { ...e, attempts, nextAtMs: Date.now() + delay, lastError: out.error.slice(0, 200) };
        await this.fencedPut(key, rev, next, fence, signal);
        this.hooks.onRetry?.();
        this.log.info({ jobId, state: e.state, eventId: e.id, attempts, retryInMs: delay, err: next.lastError }, 'webhook attempt failed; retrying');
      }
    }
  }

  private dropped(e: OutboxEntry, why: string): void {
    this.log.warn({ jobId: e.jobId, state: e.state, eventId: e.id, attempts: e.attempts, why, lastError: e.lastError }, 'webhook event dropped');
    this.hooks.onDropped?.(e, why);
  }

  private async attempt(e: OutboxEntry, signal: AbortSignal): Promise<Outcome> {
    await this.slot(signal);
    try {
      const url = new URL(e.url);
      let target;
      try {
        // Resolved and checked at every attempt (a name may point elsewhere by now); the POST
        // connects to the address that was checked.
        target = await vetTarget(url, this.s.policy, 'webhook');
      } catch (err) {
        if (isAppError(err, 'PERMISSION_DENIED') || isAppError(err, 'UNSUPPORTED_URI_SCHEME') || isAppError(err, 'INVALID_ARGUMENT')) return { kind: 'refused', status: 0, why: err.message };
        throw err;
      }
      const res = await pinnedRequest(url, target, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(e.body)),
          'x-tessera-event-id': e.id,
          'x-tessera-delivery-attempt': String(e.attempts + 1),
          'x-tessera-signature': signBody(this.s.secret, e.body),
        },
        body: e.body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.s.timeoutMs)]),
      });
      res.body.resume(); // drain and discard: redirects are not followed
      if (res.status >= 200 && res.status < 300) return { kind: 'delivered', status: res.status };
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) return { kind: 'refused', status: res.status };
      return { kind: 'retry', error: `HTTP ${res.status}` };
    } catch (err) {
      return { kind: 'retry', error: errorMessage((err as { cause?: unknown }).cause ?? err) };
    } finally {
      this.release();
    }
  }

  private async slot(signal: AbortSignal): Promise<void> {
    while (this.inFlight >= this.s.concurrency) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      if (signal.aborted) throw signal.reason;
    }
    this.inFlight++;
  }

  private release(): void {
    this.inFlight--;
    this.slotWaiters.shift()?.();
  }

  private async fencedDelete(key: string, rev: string, fence: LeaderFence, signal: AbortSignal): Promise<boolean> {
    return this.fenced(key, rev, fence, () => this.etcd.delete().key(key), signal);
  }

  private async fencedPut(key: string, rev: string, value: OutboxEntry, fence: LeaderFence, signal: AbortSignal): Promise<boolean> {
    return this.fenced(key, rev, fence, () => this.etcd.put(key).value(JSON.stringify(value)), signal);
  }

  /** One write, only while we lead and the entry is as read; false when it moved meanwhile. */
  private async fenced(key: string, rev: string, fence: LeaderFence, op: () => TxOp, signal: AbortSignal): Promise<boolean> {
    // Retried whole through an etcd outage: a write that landed before its answer was lost finds
    // the entry moved (false).
    const out = await withEtcdRetry('write the webhook outbox', () => fencedWrite(this.etcd, leaderFenceCompare(fence), [{ key, target: 'Mod', op: '==', value: rev }], [op()]), {
      signal,
      log: this.log,
    });
    if (!out.ok && out.reason === 'fenced') throw new Deposed('no longer the leader');
    return out.ok;
  }

  /** Stops delivering and watching; pending events stay in etcd for the next leader. Idempotent. */
  async stop(): Promise<void> {
    this.closed = true;
    this.deposed();
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    for (const w of this.slotWaiters.splice(0)) w();
    await Promise.allSettled([...this.pumps.values()]);
    await this.watch?.cancel();
  }
}
