import { credentials as grpcCredentials, type ChannelCredentials, type Client, type ClientOptions } from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from './grpc.js';
import { identityOptions } from './tls.js';

type Ctor<C> = new (address: string, creds: ChannelCredentials, options?: Partial<ClientOptions>) => C;

/**
 * Caches one gRPC client per (service, address, identity): channels are expensive and multiplex
 * calls. With TLS, `identity` is the name the peer's certificate must carry (a node id, an
 * uploader id) whatever address it is dialled at. `closeAll()` is idempotent.
 */
export class ClientCache {
  // Keyed by constructor identity: every generated client class has the same `name`.
  private clients = new Map<unknown, Map<string, { address: string; client: Client }>>();

  constructor(
    private readonly creds: ChannelCredentials = grpcCredentials.createInsecure(),
    /** Channel options beside the shared ones (a probe's bounded reconnect backoff). */
    private readonly options: Partial<ClientOptions> = {},
  ) {}

  get<C extends Client>(ctor: Ctor<C>, address: string, identity?: string): C {
    let byAddress = this.clients.get(ctor);
    if (!byAddress) {
      byAddress = new Map();
      this.clients.set(ctor, byAddress);
    }
    const key = identity === undefined ? address : `${address}#${identity}`;
    let c = byAddress.get(key)?.client as C | undefined;
    if (!c) {
      c = new ctor(address, this.creds, { ...CHANNEL_OPTIONS, ...this.options, ...identityOptions(identity) });
      byAddress.set(key, { address, client: c });
    }
    return c;
  }

  /** Drops the cached clients of an address (after its peer went away), closing the channels. */
  forget(address: string): void {
    for (const byAddress of this.clients.values()) {
      for (const [key, entry] of byAddress) {
        if (entry.address !== address) continue;
        entry.client.close();
        byAddress.delete(key);
      }
    }
  }

  closeAll(): void {
    for (const byAddress of this.clients.values()) for (const e of byAddress.values()) e.client.close();
    this.clients.clear();
  }
}
