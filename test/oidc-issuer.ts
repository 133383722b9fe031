import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose';

/** A client of the test issuer: its id, secret and the scopes it may ask for. */
export interface IssuerClient {
  id: string;
  secret: string;
  scope: string;
}

export interface TestIssuer {
  /** http://127.0.0.1:<port> (the `iss` of its tokens). */
  issuer: string;
  /** The audience (resource indicator) its Tessera tokens carry unless another is asked for. */
  audience: string;
  /** Signs a token with the issuer's own key (kid included): for claims the provider would never issue (expired, wrong iss). */
  sign(payload: JWTPayload, o?: { foreignKey?: boolean }): Promise<string>;
  close(): Promise<void>;
}

export const TESSERA_SCOPES = 'tessera:read tessera:write tessera:admin';

/**
 * A real OIDC issuer (`oidc-provider`) on a loopback port: client-credentials grant with
 * resource indicators, so access tokens are JWTs (ES256) with the requested audience.
 * `accessTokenTtlSec` sets their lifetime.
 */
export async function startTestIssuer(clients: IssuerClient[], o: { audience?: string; accessTokenTtlSec?: number } = {}): Promise<TestIssuer> {
  const audience = o.audience ?? 'urn:tessera:api';
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid: 'test-key-1', alg: 'ES256', use: 'sig' };
  const foreign = (await generateKeyPair('ES256', { extractable: true })).privateKey;
  // oidc-provider warns on Node 20 (it targets 22) but works; the warning goes to stderr once.
  const { default: Provider } = await import('oidc-provider');
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({ client_id: c.id, client_secret: c.secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: c.scope, id_token_signed_response_alg: 'ES256' })),
    jwks: { keys: [jwk] },
    scopes: ['openid', ...TESSERA_SCOPES.split(' ')],
    ttl: { ClientCredentials: o.accessTokenTtlSec ?? 300 },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: TESSERA_SCOPES, accessTokenTTL: o.accessTokenTtlSec ?? 300, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
  });
  const callback = provider.callback();
  server.on('request', callback);
  const handle: TestIssuer = {
    issuer,
    audience,
    async sign(payload, so = {}) {
      return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'test-key-1', typ: 'at+jwt' }).sign((so.foreignKey ? foreign : privateKey) as CryptoKey);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return handle;
}
