import { timingSafeEqual, createHash } from 'node:crypto';
import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  type Metadata,
  type ServerCredentials,
  type ServerInterceptor,
  type ServerInterceptingCallInterface,
  type ServiceError,
} from '@grpc/grpc-js';
import { AppError } from './errors.js';
import { toServiceError } from './grpc.js';
import { looksLikeJwt, type OidcVerifier } from './oidc.js';
import { callerOf, serverCredentials, type PeerRole, type TlsMaterial } from './tls.js';

export type Scope = 'submit' | 'read' | 'admin';

/** Token → scopes. Empty: bearer tokens are not required (the local default). */
export type TokenTable = ReadonlyMap<string, ReadonlySet<Scope>>;

/**
 * Builds the token table from config: API tokens may submit and read, READ tokens only read,
 * ADMIN tokens may use the Admin service (and read).
 */
export function tokenTable(api: readonly string[], read: readonly string[], admin: readonly string[]): TokenTable {
  const t = new Map<string, Set<Scope>>();
  const add = (tok: string, scopes: Scope[]): void => {
    const s = t.get(tok) ?? new Set<Scope>();
    for (const x of scopes) s.add(x);
    t.set(tok, s);
  };
  for (const tok of api) add(tok, ['submit', 'read']);
  for (const tok of read) add(tok, ['read']);
  for (const tok of admin) add(tok, ['admin', 'read']);
  return t;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The bearer of a call's `authorization: Bearer <token>` header; UNAUTHENTICATED without one. */
function bearerOf(md: Metadata): string {
  const raw = md.get('authorization')[0];
  const m = typeof raw === 'string' ? /^Bearer\s+(\S+)$/i.exec(raw) : null;
  if (!m) throw new AppError('UNAUTHENTICATED', 'a bearer token is required (authorization: Bearer <token>)');
  return m[1]!;
}

/** The scopes of a static token (undefined: not one of the table's). */
function staticScopes(token: string, tokens: TokenTable): ReadonlySet<Scope> | undefined {
  const given = digest(token);
  let scopes: ReadonlySet<Scope> | undefined;
  // Compare digests in constant time; never log or echo the token.
  for (const [tok, s] of tokens) if (timingSafeEqual(digest(tok), given)) scopes = s;
  return scopes;
}

function requireScope(scopes: ReadonlySet<Scope>, scope: Scope): void {
  if (!scopes.has(scope)) throw new AppError('PERMISSION_DENIED', `this token may not ${scope === 'admin' ? 'use the admin API' : scope}`);
}

/** Checks a call's bearer token for a scope: UNAUTHENTICATED without a valid token, PERMISSION_DENIED without the scope. */
export function authorize(md: Metadata, scope: Scope, tokens: TokenTable): void {
  const scopes = staticScopes(bearerOf(md), tokens);
  if (!scopes) throw new AppError('UNAUTHENTICATED', 'the bearer token is not valid');
  requireScope(scopes, scope);
}

/**
 * How bearer tokens are checked: the static token table, and OIDC access tokens (JWT) when an
 * issuer is configured. A token in the table is a static token; any other JWT-shaped token is
 * verified as an OIDC token. No table and no issuer: no bearer check (ALLOW_ANONYMOUS).
 */
export interface BearerAuth {
  tokens: TokenTable;
  oidc?: OidcVerifier | undefined;
  /** Static token → the tenant it belongs to (common/tenants.ts); absent: no tenant. */
  tenants?: ReadonlyMap<string, string> | undefined;
}

/**
 * The metadata key that carries the caller's tenant from the access interceptor to the handlers.
 * Whatever a client sends under it is removed first: only the interceptor sets it.
 */
export const TENANT_HEADER = 'x-tessera-tenant';

/** The tenant the access interceptor found for a call; undefined: no tenant (not scoped). */
export function callTenant(md: Metadata): string | undefined {
  const v = md.get(TENANT_HEADER)[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** True when calls must carry a bearer token. */
export function bearerRequired(b: BearerAuth): boolean {
  return b.tokens.size > 0 || b.oidc !== undefined;
}

/** `authorize` with OIDC: resolves when the call's token grants `scope`, rejects with UNAUTHENTICATED or PERMISSION_DENIED. */
export async function authorizeBearer(md: Metadata, scope: Scope, b: BearerAuth): Promise<{ tenant?: string }> {
  const token = bearerOf(md);
  const fixed = staticScopes(token, b.tokens);
  if (fixed) {
    requireScope(fixed, scope);
    const tenant = b.tenants?.get(token);
    return tenant ? { tenant } : {};
  }
  if (!b.oidc || !looksLikeJwt(token)) throw new AppError('UNAUTHENTICATED', 'the bearer token is not valid');
  const caller = await b.oidc.verify(token);
  requireScope(caller.scopes, scope);
  // An admin sees every tenant's jobs; anyone else with a tenant claim is scoped to it.
  return caller.tenant && !caller.scopes.has('admin') ? { tenant: caller.tenant } : {};
}

/** What a method requires of its caller; `undefined` for open methods (health, reflection). */
export interface MethodPolicy {
  /** Bearer-token scope (checked when there are static tokens or an OIDC issuer). */
  scope?: Scope;
  /** Certificate roles allowed to call (checked when the server runs mutual TLS). */
  roles?: readonly PeerRole[];
}

/**
 * The one server interceptor that guards every call before its handler runs: the caller's
 * certificate role (mutual TLS) and bearer token scope, as `policyOf(method path)` asks.
 * A refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and the stable error code.
 */
export function accessInterceptor(policyOf: (path: string) => MethodPolicy | undefined, tokens: TokenTable | BearerAuth, mutualTls: boolean): ServerInterceptor {
  const bearer: BearerAuth = tokens instanceof Map ? { tokens } : (tokens as BearerAuth);
  const check = bearerRequired(bearer);
  return (method, call: ServerInterceptingCallInterface) => {
    const policy = policyOf(method.path);
    const refuse = (err: unknown): void => call.sendStatus(toServiceError(err) as Required<Pick<ServiceError, 'code' | 'details' | 'metadata'>>);
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((md, next) => {
        md.remove(TENANT_HEADER); // only this interceptor says who the tenant is
        try {
          if (policy?.roles && mutualTls) checkRole(call, policy.roles);
        } catch (err) {
          refuse(err);
          return;
        }
        if (!policy?.scope || !check) {
          next(md);
          return;
        }
        // Verification may fetch the issuer's keys: grpc-js holds the call's messages until `next`.
        authorizeBearer(md, policy.scope, bearer).then((who) => {
          if (who.tenant) md.set(TENANT_HEADER, who.tenant);
          next(md);
        }, refuse);
      })
      .build();
    return new ServerInterceptingCall(call, new ResponderBuilder().withStart((next) => next(listener)).build());
  };
}

/**
 * A process's gRPC server security: TLS credentials (mutual unless `requireClientCert` is false)
 * and the access interceptor for its methods (static tokens, and OIDC tokens with `oidc`).
 * Plaintext and no checks without TLS material, tokens and issuer.
 */
export function serverSecurity(
  tls: TlsMaterial | undefined,
  policyOf: (path: string) => MethodPolicy | undefined,
  tokens: TokenTable = new Map(),
  requireClientCert = true,
  oidc?: OidcVerifier,
  tenants?: ReadonlyMap<string, string>,
): { credentials: ServerCredentials; interceptors: ServerInterceptor[] } {
  return {
    credentials: serverCredentials(tls, requireClientCert),
    interceptors: [accessInterceptor(policyOf, { tokens, oidc, tenants }, tls !== undefined && requireClientCert)],
  };
}

function checkRole(call: ServerInterceptingCallInterface, roles: readonly PeerRole[]): void {
  const caller = callerOf(call);
  if (!caller) throw new AppError('UNAUTHENTICATED', 'a client certificate is required');
  const role = caller.role;
  if (!role || !roles.includes(role)) throw new AppError('PERMISSION_DENIED', `a ${role ?? 'certificate without a role'} may not call this service`);
}
