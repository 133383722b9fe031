import { EventEmitter } from 'node:events';
import type { Etcd3, Lease } from 'etcd3';
import { AppError, errorMessage } from '../common/errors.js';
import { isTransientEtcdError } from '../common/etcd-retry.js';
import type { Keys } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import type { NodeRecord, NodeStats } from '../common/records.js';
import { backoffDelay, sleep } from '../common/retry.js';
import { nodeRecordSchema, parseRecord } from '../common/record-schemas.js';

export interface RegistrationOptions {
  /**
   * May this process take over a registration of its node id left by an earlier incarnation
   * (a crash, a container restart)? With TLS only when our certificate names the node id.
   */
  mayTakeOver: boolean;
  /**
   * Is the process registered at `record.address` alive? (A gRPC health check with a short
   * deadline; with TLS it must also prove the node id.) A live one keeps its registration.
   */
  isAlive: (record: NodeRecord) => Promise<boolean>;
}

/**
 * Joins the cluster: `nodes/<id>` under a lease that is kept alive while the process lives.
 *
 * - At boot, joining is retried with backoff while etcd is unreachable.
 * - A registration of our id left by a dead earlier incarnation (kill -9, container restart
 *   within the lease TTL) is taken over at once instead of waiting for its lease to expire: its
 *   segments were assigned to the old incarnation, whose owner revisions fence its writes, and the
 *   coordinator sees a new incarnation (address, start time) and reassigns them.
 * - When the lease is lost (etcd unreachable past the TTL, a pause, a partition) it emits 'lost'
 *   and joins again with a new lease, retrying until it succeeds. Work in flight is kept: every
 *   write it makes is fenced on the segment's owner revision, so only the coordinator decides.
 * - When another incarnation takes our id over, it emits 'replaced' and stops re-joining.
 */
export class Registration extends EventEmitter<{ lost: []; rejoined: []; replaced: [NodeRecord] }> {
  private lease: Lease | undefined;
  private closed = false;
  private rejoining = false;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly record: NodeRecord,
    private readonly ttlSec: number,
    private readonly log: Logger,
    private readonly opts: RegistrationOptions = { mayTakeOver: false, isAlive: async () => true },
  ) {
    super();
  }

  /** Joins, retrying transient trouble (etcd down, a live-looking predecessor) until it succeeds or `leave()` is called. */
  async join(): Promise<void> {
    for (let i = 0; ; i++) {
      if (this.closed) throw new AppError('CANCELLED', 'left the cluster before joining');
      try {
        await this.tryJoin();
        return;
      } catch (err) {
        if (!isTransientEtcdError(err) && !(err instanceof AppError && err.retryable)) throw err;
        this.log.warn({ err: errorMessage(err), attempt: i + 1 }, 'joining the cluster failed; retrying');
        await sleep(Math.max(100, backoffDelay(Math.min(i, 6), 250, 3_000)));
      }
    }
  }

  /** One attempt at joining (tests): rejects with FAILED_PRECONDITION when a live or foreign registration holds the id. */
  async tryJoin(): Promise<void> {
    const key = this.keys.node(this.record.id);
    const cur = (await this.etcd.get(key).exec()).kvs[0];
    let prior: NodeRecord | undefined;
    let takeover = false;
    if (cur) {
      try {
        prior = parseRecord(nodeRecordSchema, cur.value, cur.key.toString());
      } catch {
        prior = undefined;
      }
      const ours = prior !== undefined && prior.startedAtMs === this.record.startedAtMs && prior.address === this.record.address;
      if (!ours && prior && prior.startedAtMs > this.record.startedAtMs) {
        // A later incarnation holds our id: we are the stale one (never take it back).
        this.standDown(prior);
        throw new AppError('FENCED', `node id ${this.record.id} was taken over by a later incarnation at ${prior.address}`, { retryable: false });
      }
      if (!ours) {
        takeover = true;
        if (!this.opts.mayTakeOver)
          throw new AppError('FAILED_PRECONDITION', `node id ${this.record.id} is already registered by another process (no takeover: the TLS certificate does not name this node id)`, {
            retryable: true,
          });
        // The address we listen on is ours now, so a predecessor registered there cannot be alive.
        if (prior && prior.address !== this.record.address && (await this.opts.isAlive(prior))) {
          throw new AppError('FAILED_PRECONDITION', `node id ${this.record.id} is already registered by a live process at ${prior.address}`, { retryable: true });
        }
      }
    }
    const lease = this.etcd.lease(this.ttlSec, { autoKeepAlive: true });
    lease.on('lost', (err) => this.onLost(lease, err));
    const cmp = cur ? this.etcd.if(key, 'Mod', '==', cur.mod_revision) : this.etcd.if(key, 'Create', '==', 0);
    let res;
    try {
      res = await cmp.then(lease.put(key).value(JSON.stringify(this.record))).commit();
    } catch (err) {
      void lease.revoke().catch(() => undefined);
      throw err;
    }
    if (!res.succeeded) {
      await lease.revoke().catch(() => undefined);
      throw new AppError('UNAVAILABLE', `the registration of ${this.record.id} changed while joining`, { retryable: true });
    }
    this.lease = lease;
    if (cur && cur.lease !== '0' && cur.lease !== (await lease.grant())) {
      // The earlier lease still holds the load figures: revoke it now (best effort).
      await this.etcd.leaseClient.leaseRevoke({ ID: cur.lease }).catch(() => undefined);
    }
    if (takeover) {
      this.log.warn({ nodeId: this.record.id, previous: prior ? { address: prior.address, startedAtMs: prior.startedAtMs } : undefined }, 'took over the registration of an earlier incarnation');
    }
    this.log.info({ nodeId: this.record.id, ttlSec: this.ttlSec }, 'joined the cluster');
  }

  /** True while our record is the registered one (a heartbeat check: another incarnation may have taken over). */
  async stillOurs(): Promise<boolean> {
    const raw = await this.etcd.get(this.keys.node(this.record.id)).string();
    if (raw === null) return true; // gone (lease lapsed): the lost handler re-joins
    const r = parseRecord(nodeRecordSchema, raw, 'nodes/');
    if (r.startedAtMs === this.record.startedAtMs && r.address === this.record.address) return true;
    this.standDown(r);
    return false;
  }

  /** Another incarnation holds our id: stop re-joining, release our lease, tell the process. */
  private standDown(by: NodeRecord): void {
    if (this.closed) return;
    this.closed = true;
    const lease = this.lease;
    this.lease = undefined;
    void lease?.revoke().catch(() => undefined); // only our load figures are left under it
    this.log.error({ by: { address: by.address, startedAtMs: by.startedAtMs } }, 'another incarnation took over this node id: dropping work and leaving');
    this.emit('replaced', by);
  }

  private lastStats: { lease: Lease; figures: string; atMs: number } | undefined;

  /**
   * Publishes load figures next to the registration (same lease: they vanish with the node).
   * Unchanged figures are written again only every `unchangedRefreshMs` (a heartbeat for the
   * operator's "last seen"): at 100 nodes, rewriting the same numbers every 2 s was half of all
   * etcd writes. Liveness itself is the lease, not this key.
   */
  async publishStats(stats: NodeStats, unchangedRefreshMs = 0): Promise<boolean> {
    const lease = this.lease;
    if (!lease || this.closed) return false;
    const figures = JSON.stringify([stats.busySlots, stats.segmentsDone, stats.subSegmentsDone, stats.speedMps, stats.notReady]);
    const now = Date.now();
    const last = this.lastStats;
    if (last && last.lease === lease && last.figures === figures && now - last.atMs < unchangedRefreshMs) return false;
    await lease.put(this.keys.nodeStats(this.record.id)).value(JSON.stringify(stats));
    this.lastStats = { lease, figures, atMs: now };
    return true;
  }

  private onLost(lease: Lease, err: unknown): void {
    if (this.closed || lease !== this.lease || this.rejoining) return;
    this.lease = undefined;
    this.rejoining = true;
    this.log.warn({ err: errorMessage(err) }, 'lease lost: re-joining (work in flight continues, fenced)');
    this.emit('lost');
    void this.join()
      .then(() => this.emit('rejoined'))
      .catch((e: unknown) => this.log.error({ err: errorMessage(e) }, 're-join abandoned'))
      .finally(() => {
        this.rejoining = false;
      });
  }

  /** Leaves the cluster: revoking the lease deletes the node's keys at once. Idempotent. */
  async leave(): Promise<void> {
    this.closed = true;
    const lease = this.lease;
    this.lease = undefined;
    if (lease) await lease.revoke();
  }
}
