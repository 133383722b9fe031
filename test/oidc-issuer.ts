import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose';

/** A client of the test issuer: its id, secret and the scopes it may ask for; a public one (no secret) uses the device flow. */
export interface IssuerClient {
  id: string;
  secret?: string;
  scope: string;
}

export interface TestIssuer {
  /** http://127.0.0.1:<port> (the `iss` of its tokens). */
  issuer: string;
  /** The audience (resource indicator) its Tessera tokens carry unless another is asked for. */
  audience: string;
  /** Approves a device login (as the person who opened the verification page would): `scope` granted to `accountId`. */
  approveDevice(userCode: string, accountId: string, scope: string): Promise<void>;
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
    clients: clients.map((c) => ({
      client_id: c.id,
      ...(c.secret
        ? { client_secret: c.secret, grant_types: ['client_credentials'] }
        : { token_endpoint_auth_method: 'none', grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'] }),
      redirect_uris: [],
      response_types: [],
      scope: c.scope,
      id_token_signed_response_alg: 'ES256',
    })),
    jwks: { keys: [jwk] },
    scopes: ['openid', 'offline_access', ...TESSERA_SCOPES.split(' ')],
    ttl: { ClientCredentials: o.accessTokenTtlSec ?? 300 },
    features: {
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
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
    async approveDevice(userCode, accountId, scope) {
      const code = await provider.DeviceCode.findByUserCode(userCode.toUpperCase().replace(/\W/g, ''));
      if (!code) throw new Error(`no device code ${userCode}`);
      const grant = new provider.Grant({ accountId, clientId: code.clientId });
      grant.addOIDCScope(
        scope
          .split(' ')
          .filter((x) => x === 'openid' || x === 'offline_access')
          .join(' '),
      );
      grant.addResourceScope(
        audience,
        scope
          .split(' ')
          .filter((x) => x.startsWith('tessera:'))
          .join(' '),
      );
      Object.assign(code, { accountId, authTime: Math.floor(Date.now() / 1000), grantId: await grant.save(), scope, resource: audience });
      await code.save();
    },
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
