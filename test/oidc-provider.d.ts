// The small part of oidc-provider (no bundled types) the test issuer uses.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';
  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    on(event: string, listener: (...args: unknown[]) => void): this;
    DeviceCode: { findByUserCode(userCode: string): Promise<(Record<string, unknown> & { clientId: string; save(): Promise<string> }) | undefined> };
    Grant: new (o: { accountId: string; clientId: string }) => { addOIDCScope(scope: string): void; addResourceScope(resource: string, scope: string): void; save(): Promise<string> };
  }
}
