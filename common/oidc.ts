import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { AppError } from './errors.js';
import type { Scope } from './auth.js';

/**
 * OIDC access tokens (JWT) from one issuer. The signature is checked against the issuer's JWKS
 * (from OIDC_JWKS_URI, else discovered at `<issuer>/.well-known/openid-configuration`), then
 * the issuer, the audience, the expiry and not-before (with the allowed clock skew). Unsigned
 * (`alg: none`) and HMAC tokens are refused: only the asymmetric algorithms below verify.
 */
export interface OidcSettings {
  issuer: string;
  audience: string;
  /** The JWKS URL; unset: the discovery document's `jwks_uri`. */
  jwksUri?: string | undefined;
  clockSkewSec: number;
  /** Scope values or group names that grant each role (a token may carry several). */
  roles: { read: readonly string[]; write: readonly string[]; admin: readonly string[] };
  /** The claim holding the caller's groups (matched like scopes), e.g. `groups`. */
  groupsClaim: string;
  /**
   * The claim naming the caller's tenant. Tessera has no tenants yet: when set, the value is
   * read and returned with the caller (logged with refusals), for the tenant checks to come.
   */
  tenantClaim?: string | undefined;
  /** Deadline of the discovery and JWKS fetches, ms. */
  fetchTimeoutMs: number;
}

/** Signature algorithms accepted (asymmetric only: never `none`, never a shared-secret HMAC). */
export const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/** Who a verified token names, and what it may do. */
export interface OidcCaller {
  subject: string;
  scopes: ReadonlySet<Scope>;
  tenant?: string;
}

/** True when a bearer value has the shape of a JWS (three base64url parts): OIDC tokens are, static tokens need not be. */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
}

/** The scope values and group names a token carries (`scope` string, `scp` array or string, and the groups claim). */
export function grantsOf(payload: JWTPayload, groupsClaim: string): Set<string> {
  const out = new Set<string>();
  const add = (v: unknown): void => {
    if (typeof v === 'string')
      for (const s of v.split(' ')) {
        if (s) out.add(s);
      }
    else if (Array.isArray(v))
      for (const s of v) {
        if (typeof s === 'string' && s) out.add(s);
      }
  };
  add(payload.scope);
  add(payload.scp);
  add(payload[groupsClaim]);
  return out;
}

/** Tessera's scopes from a token's grants: read → read; write → submit and read; admin → admin and read (as static tokens). */
export function scopesOf(grants: ReadonlySet<string>, roles: OidcSettings['roles']): Set<Scope> {
  const has = (names: readonly string[]): boolean => names.some((n) => grants.has(n));
  const s = new Set<Scope>();
  if (has(roles.read)) s.add('read');
  if (has(roles.write)) {
    s.add('submit');
    s.add('read');
  }
  if (has(roles.admin)) {
    s.add('admin');
    s.add('read');
  }
  return s;
}

export class OidcVerifier {
  private jwks: Promise<JWTVerifyGetKey> | undefined;

  constructor(readonly s: OidcSettings) {}

  /** The key set: the configured URL, else the discovery document's (fetched once; a failure is retried at the next call). */
  private keySet(): Promise<JWTVerifyGetKey> {
    this.jwks ??= (async () => {
      const uri = this.s.jwksUri ?? (await this.discover());
      return createRemoteJWKSet(new URL(uri), { timeoutDuration: this.s.fetchTimeoutMs, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
    })();
    this.jwks.catch(() => {
      this.jwks = undefined;
    });
    return this.jwks;
  }

  private async discover(): Promise<string> {
    const doc = await fetchDiscovery(this.s.issuer, this.s.fetchTimeoutMs);
    if (typeof doc.jwks_uri !== 'string') throw new AppError('UNAVAILABLE', 'the OIDC discovery document names no jwks_uri');
    return doc.jwks_uri;
  }

  /**
   * Verifies a bearer token: UNAUTHENTICATED when it is not a valid token of this issuer for
   * this audience (the reason names the check, never the token), UNAVAILABLE when the
   * issuer's keys cannot be fetched.
   */
  async verify(token: string): Promise<OidcCaller> {
    let jwks: JWTVerifyGetKey;
    try {
      jwks = await this.keySet();
    } catch (err) {
      throw new AppError('UNAVAILABLE', `cannot fetch the OIDC issuer's keys: ${(err as Error).message}`);
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: this.s.issuer,
        audience: this.s.audience,
        algorithms: OIDC_ALGORITHMS,
        clockTolerance: this.s.clockSkewSec,
        requiredClaims: ['exp', 'iss', 'aud'],
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWKSTimeout || (err instanceof Error && /fetch failed|ECONNREFUSED/i.test(err.message))) {
        throw new AppError('UNAVAILABLE', `cannot fetch the OIDC issuer's keys: ${err.message}`);
      }
      throw new AppError('UNAUTHENTICATED', `the bearer token is not valid: ${reasonOf(err)}`);
    }
    const scopes = scopesOf(grantsOf(payload, this.s.groupsClaim), this.s.roles);
    const tenant = this.s.tenantClaim ? payload[this.s.tenantClaim] : undefined;
    return { subject: String(payload.sub ?? ''), scopes, ...(typeof tenant === 'string' ? { tenant } : {}) };
  }
}

/** Why jose refused a token, in words that carry no part of it. */
function reasonOf(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim} check failed (${err.reason})`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'signature algorithm not allowed';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'signature verification failed';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'signed by a key the issuer does not publish';
  if (err instanceof joseErrors.JOSEError) return err.code;
  return 'malformed';
}

/** The issuer's discovery document (`/.well-known/openid-configuration`), checked to name the same issuer. */
export async function fetchDiscovery(issuer: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  } catch (err) {
    throw new AppError('UNAVAILABLE', `OIDC discovery at ${url} failed: ${(err as Error).message}`);
  }
  if (!res.ok) throw new AppError('UNAVAILABLE', `OIDC discovery at ${url} answered HTTP ${res.status}`);
  const doc = (await res.json()) as Record<string, unknown>;
  if (doc.issuer !== issuer) throw new AppError('UNAVAILABLE', `OIDC discovery at ${url} names another issuer (${String(doc.issuer)})`);
  return doc;
}
