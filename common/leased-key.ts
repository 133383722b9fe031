import type { Etcd3, Lease } from 'etcd3';
import { errorMessage } from './errors.js';
import { isTransientEtcdError } from './etcd-retry.js';
import type { Logger } from './logger.js';
import { backoffDelay, sleep } from './retry.js';

/**
 * One key kept registered under a lease (`uploaders/<id>`): put at start, and whenever the lease
 * is lost (etcd unreachable past the TTL, a long pause) put again under a new lease, retrying
 * with backoff until it lands or `close()` is called. The value is plain-put: a restart under the
 * same id simply replaces its predecessor's record.
 */
export class LeasedKey {
  private lease: Lease | undefined;
  private closed = false;
  private registering: Promise<void> | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly key: string,
    private readonly value: string,
    private readonly ttlSec: number,
    private readonly log: Logger,
  ) {}

  /** Registers (retrying while etcd is unreachable); resolves once the key is written. */
  start(): Promise<void> {
    this.registering ??= this.register().finally(() => {
      this.registering = undefined;
    });
    return this.registering;
  }

  private async register(): Promise<void> {
    for (let i = 0; !this.closed; i++) {
      const lease = this.etcd.lease(this.ttlSec, { autoKeepAlive: true });
      lease.on('lost', (err) => this.onLost(lease, err));
      try {
        await lease.put(this.key).value(this.value);
        this.lease = lease;
        if (i > 0) this.log.info({ etcdKey: this.key, attempts: i + 1 }, 'registered again');
        return;
      } catch (err) {
        void lease.revoke().catch(() => undefined);
        if (!isTransientEtcdError(err)) throw err;
        if (i === 0) this.log.warn({ etcdKey: this.key, err: errorMessage(err) }, 'registration failed; retrying');
        await sleep(Math.max(100, backoffDelay(Math.min(i, 6), 250, 3_000)));
      }
    }
  }

  private onLost(lease: Lease, err: unknown): void {
    if (this.closed || lease !== this.lease) return;
    this.lease = undefined;
    this.log.warn({ etcdKey: this.key, err: errorMessage(err) }, 'lease lost: registering again');
    this.start().catch((e: unknown) => this.log.error({ etcdKey: this.key, err: errorMessage(e) }, 're-registration abandoned'));
  }

  /** Deletes the key (revokes the lease) and stops re-registering. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const lease = this.lease;
    this.lease = undefined;
    if (lease) await lease.revoke();
  }
}
