import { credentials as grpcCredentials, type ChannelCredentials, type Client, type ClientOptions } from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from './grpc.js';

type Ctor<C> = new (address: string, creds: ChannelCredentials, options?: Partial<ClientOptions>) => C;

/**
 * Caches one gRPC client per (service, address): channels are expensive and multiplex calls.
 * `closeAll()` is idempotent.
 */
export class ClientCache {
  // Keyed by constructor identity: every generated client class has the same `name`.
  private clients = new Map<unknown, Map<string, Client>>();

  constructor(private readonly creds: ChannelCredentials = grpcCredentials.createInsecure()) {}

  get<C extends Client>(ctor: Ctor<C>, address: string): C {
    let byAddress = this.clients.get(ctor);
    if (!byAddress) {
      byAddress = new Map();
      this.clients.set(ctor, byAddress);
    }
    let c = byAddress.get(address) as C | undefined;
    if (!c) {
      c = new ctor(address, this.creds, { ...CHANNEL_OPTIONS });
      byAddress.set(address, c);
    }
    return c;
  }

  /** Drops the cached clients of an address (after its peer went away), closing the channels. */
  forget(address: string): void {
    for (const byAddress of this.clients.values()) {
      byAddress.get(address)?.close();
      byAddress.delete(address);
    }
  }

  closeAll(): void {
    for (const byAddress of this.clients.values()) for (const c of byAddress.values()) c.close();
    this.clients.clear();
  }
}
