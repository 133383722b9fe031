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

/** grpc.health.v1 Check against `address`: SERVING, or why not (unreachable, TLS refused, not serving). */
export async function grpcHealth(address: string, o: HealthCheckOptions = {}): Promise<{ serving: boolean; reason?: string }> {
  const c = new HealthCtor(address, o.creds ?? credentials.createInsecure(), identityOptions(o.identity));
  try {
    return await new Promise((resolve) => {
      c.check({ service: o.serviceName ?? '' }, { deadline: new Date(Date.now() + (o.timeoutMs ?? 1_000)) }, (err, res) => {
        if (err) resolve({ serving: false, reason: err.details || err.message });
        else if (res?.status !== 'SERVING') resolve({ serving: false, reason: `health status ${res?.status ?? 'unknown'}` });
        else resolve({ serving: true });
      });
    });
  } finally {
    c.close();
  }
}

/** grpc.health.v1 Check against `address`; true when the server answers SERVING within `timeoutMs`. */
export async function grpcServing(address: string, timeoutMs = 1_000, serviceName = '', creds?: ChannelCredentials): Promise<boolean> {
  return (await grpcHealth(address, { timeoutMs, serviceName, ...(creds ? { creds } : {}) })).serving;
}
