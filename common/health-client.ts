import { credentials, makeGenericClientConstructor, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { identityOptions } from './tls.js';

export interface HealthClient extends Client {
  check(req: { service: string }, options: { deadline: Date }, cb: (err: ServiceError | null, res: { status: string } | undefined) => void): void;
}

/** The grpc.health.v1 client (for a ClientCache: `cache.get(HealthCtor, address, identity)`). */
export const HealthCtor = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health') as unknown as new (
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

/**
 * One grpc.health.v1 Check on `c`: SERVING, or why not. A client kept in a ClientCache serves
 * repeated checks on one channel (the coordinator's node probes: a fresh channel per probe cost a
 * TCP connection, and with TLS a handshake, on both sides every 2 s per node).
 */
export function healthCheck(c: HealthClient, serviceName: string, timeoutMs: number): Promise<{ serving: boolean; reason?: string }> {
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
    return await healthCheck(c, o.serviceName ?? '', o.timeoutMs ?? 1_000);
  } finally {
    c.close();
  }
}

/** grpc.health.v1 Check against `address`; true when the server answers SERVING within `timeoutMs`. */
export async function grpcServing(address: string, timeoutMs = 1_000, serviceName = '', creds?: ChannelCredentials): Promise<boolean> {
  return (await grpcHealth(address, { timeoutMs, serviceName, ...(creds ? { creds } : {}) })).serving;
}
