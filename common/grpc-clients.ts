import { credentials as grpcCredentials, type ChannelCredentials, type Client, type ClientOptions } from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from './grpc.js';

type Ctor<C> = new (address: string, creds: ChannelCredentials, options?: Partial<ClientOptions>) => C;

/**
 * Caches one gRPC client per (service, address): channels are expensive and multiplex calls.
 * `closeAll()` is idempotent.
 */
export class ClientCache {
  private clients = new Map<string, Client>();

  constructor(private readonly creds: ChannelCredentials = grpcCredentials.createInsecure()) {}

  get<C extends Client>(ctor: Ctor<C>, address: string): C {
    const key = `${ctor.name}|${address}`;
    let c = this.clients.get(key) as C | undefined;
    if (!c) {
      c = new ctor(address, this.creds, { ...CHANNEL_OPTIONS });
      this.clients.set(key, c);
    }
    return c;
  }

  /** Drops a cached client (after its peer went away), closing the channel. */
  forget(address: string): void {
    for (const [key, c] of this.clients) {
      if (key.endsWith(`|${address}`)) {
        c.close();
        this.clients.delete(key);
      }
    }
  }

  closeAll(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
