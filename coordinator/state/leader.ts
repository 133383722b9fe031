import { EventEmitter } from 'node:events';
import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from '../../common/logger.js';
import { backoffDelay } from '../../common/retry.js';
import { ResilientWatch } from '../../common/watch.js';
import type { LeaderFence } from './job-store.js';
import { campaign } from './transactions/campaign.js';

/**
 * Leader election through one etcd key held under this coordinator's lease. The winner's fencing
 * token is the key's create revision. Standbys watch the key and campaign when it goes away
 * (the leader stopped or its lease expired), so takeover takes at most one lease TTL.
 */
export class LeaderElection extends EventEmitter<{ elected: [LeaderFence]; deposed: [] }> {
  private lease: Lease | undefined;
  private fence: LeaderFence | undefined;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly key: string,
    private readonly id: string,
    private readonly ttlSec: number,
    private readonly log: Logger,
  ) {
    super();
  }

  get isLeader(): boolean {
    return this.fence !== undefined;
  }

  get token(): LeaderFence | undefined {
    return this.fence;
  }

  async leaderId(): Promise<string> {
    return (await this.etcd.get(this.key).string()) ?? '';
  }

  /** Runs the campaign loop in the background. */
  start(): void {
    void this.loop().catch((err: unknown) => this.log.error({ err }, 'leader election loop failed'));
  }

  private async loop(): Promise<void> {
    // The leader key going away wakes the campaign at once; a watch that ended (compaction)
    // is created again, and the timer below campaigns anyway every third of a TTL.
    let watcher: ResilientWatch | undefined;
    for (let attempt = 0; !watcher && !this.closed; attempt++) {
      try {
        watcher = await ResilientWatch.open(this.etcd, { key: this.key }, { delete: () => this.wake?.(), resync: () => this.wake?.() }, this.log);
      } catch (err) {
        this.log.warn({ err }, 'could not watch the leader key; retrying');
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, 250, 5_000) + 250));
      }
    }
    while (!this.closed) {
      try {
        if (!this.fence) await this.campaignOnce();
      } catch (err) {
        this.log.warn({ err }, 'campaign failed');
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, Math.max(500, (this.ttlSec * 1000) / 3));
      });
    }
    await watcher?.cancel();
  }

  private async campaignOnce(): Promise<void> {
    if (!this.lease) {
      const lease = this.etcd.lease(this.ttlSec, { autoKeepAlive: true });
      lease.on('lost', () => this.onLost(lease));
      await lease.grant();
      this.lease = lease;
    }
    const out = await campaign(this.etcd, this.lease, this.key, this.id);
    if (!out.ok || this.closed) return; // resigned meanwhile: revoking the lease deleted the key
    this.fence = out.fence;
    this.log.info({ coordinatorId: this.id, revision: out.fence.createRevision }, 'elected leader');
    this.emit('elected', this.fence);
  }

  private onLost(lease: Lease): void {
    if (lease !== this.lease) return;
    this.lease = undefined;
    if (this.fence) {
      this.fence = undefined;
      this.log.warn('lost leadership (lease lost)');
      this.emit('deposed');
    }
    this.wake?.();
  }

  /** Steps down (revoking the lease lets a standby take over at once). Idempotent. */
  async resign(): Promise<void> {
    this.closed = true;
    const lease = this.lease;
    this.lease = undefined;
    const wasLeader = this.fence !== undefined;
    this.fence = undefined;
    if (wasLeader) this.emit('deposed');
    this.wake?.();
    if (lease) await lease.revoke().catch(() => undefined);
  }
}
