import { credentials, makeGenericClientConstructor, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { identityOptions } from './tls.js';

interface HealthClient extends Client {
  check(req: { service: string }, options: { deadline: Date }, cb: (err: ServiceError | null, res: { status: string } | undefined) => void): void;
}

const HealthCtor = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health') as unknown as new (
  address: string,
  creds: ChannelCredentials,
  options?: Record<string, string | number>,
) => HealthClient;

export interface HealthCheckOptions {
  timeoutMs?: number;
  serviceName?: string;
  /** Channel credentials (TLS); plaintext by default. */
  creds?: ChannelCredentials;
  /** With TLS: the name the server's certificate must carry (a node id). */
  identity?: string;
}

/** One Check on a client: SERVING, or why not. */
function checkOn(c: HealthClient, serviceName: string, timeoutMs: number): Promise<{ serving: boolean; reason?: string }> {
  return new Promise((resolve) => {
    c.check({ service: serviceName }, { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => {
      if (err) resolve({ serving: false, reason: err.details || err.message });
      else if (res?.status !== 'SERVING') resolve({ serving: false, reason: `health status ${res?.status ?? 'unknown'}` });
      else resolve({ serving: true });
    });
  });
}

/** grpc.health.v1 Check against `address` on a channel of its own: SERVING, or why not (unreachable, TLS refused, not serving). */
export async function grpcHealth(address: string, o: HealthCheckOptions = {}): Promise<{ serving: boolean; reason?: string }> {
  const c = new HealthCtor(address, o.creds ?? credentials.createInsecure(), identityOptions(o.identity));
  try {
    return await checkOn(c, o.serviceName ?? '', o.timeoutMs ?? 1_000);
  } finally {
    c.close();
  }
}

/**
 * Repeated health checks of many targets, each on a channel kept open between checks (a node
 * probe every 2 s on a fresh channel cost a TCP connection, and with TLS a handshake, on both
 * sides each time: with 100 nodes, 50 a second). A check is still bounded by its deadline, so a
 * partition shows as failed checks; a reconnect waits at most `maxReconnectBackoffMs`, so a healed
 * or restarted target answers again within one probe interval or so. `forget` drops a target's
 * channel (the target left, or came back under another address); `close` drops them all.
 */
export class HealthChannels {
  private readonly channels = new Map<string, { address: string; client: HealthClient }>();

  constructor(private readonly o: { creds?: ChannelCredentials; serviceName?: string; timeoutMs: number; maxReconnectBackoffMs: number }) {}

  /** Checks target `key` at `address` (with TLS, `identity` is the name its certificate must carry). */
  check(key: string, address: string, identity?: string): Promise<{ serving: boolean; reason?: string }> {
    let ch = this.channels.get(key);
    if (ch && ch.address !== address) {
      this.forget(key);
      ch = undefined;
    }
    if (!ch) {
      const backoff = Math.max(100, this.o.maxReconnectBackoffMs);
      const client = new HealthCtor(address, this.o.creds ?? credentials.createInsecure(), {
        ...identityOptions(identity),
        'grpc.initial_reconnect_backoff_ms': Math.min(1_000, backoff),
        'grpc.max_reconnect_backoff_ms': backoff,
      });
      ch = { address, client };
      this.channels.set(key, ch);
    }
    return checkOn(ch.client, this.o.serviceName ?? '', this.o.timeoutMs);
  }

  forget(key: string): void {
    this.channels.get(key)?.client.close();
    this.channels.delete(key);
  }

  close(): void {
    for (const key of [...this.channels.keys()]) this.forget(key);
  }

  /** Targets with a channel open (tests). */
  get size(): number {
    return this.channels.size;
  }
}

/** grpc.health.v1 Check against `address`; true when the server answers SERVING within `timeoutMs`. */
export async function grpcServing(address: string, timeoutMs = 1_000, serviceName = '', creds?: ChannelCredentials): Promise<boolean> {
  return (await grpcHealth(address, { timeoutMs, serviceName, ...(creds ? { creds } : {}) })).serving;
}
