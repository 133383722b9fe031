import { timingSafeEqual, createHash } from 'node:crypto';
import type { ServiceDefinition, UntypedServiceImplementation, ServerUnaryCall, ServerWritableStream, Metadata } from '@grpc/grpc-js';
import { AppError } from './errors.js';
import { toServiceError } from './grpc.js';

export type Scope = 'submit' | 'read' | 'admin';

/** Token → scopes. Empty: authentication is off (the local default). */
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

/** Checks a call's bearer token for a scope: UNAUTHENTICATED without a valid token, PERMISSION_DENIED without the scope. */
export function authorize(md: Metadata, scope: Scope, tokens: TokenTable): void {
  const raw = md.get('authorization')[0];
  const m = typeof raw === 'string' ? /^Bearer\s+(\S+)$/i.exec(raw) : null;
  if (!m) throw new AppError('UNAUTHENTICATED', 'a bearer token is required (authorization: Bearer <token>)');
  const given = digest(m[1]!);
  let scopes: ReadonlySet<Scope> | undefined;
  // Compare digests in constant time; never log or echo the token.
  for (const [tok, s] of tokens) if (timingSafeEqual(digest(tok), given)) scopes = s;
  if (!scopes) throw new AppError('UNAUTHENTICATED', 'the bearer token is not valid');
  if (!scopes.has(scope)) throw new AppError('PERMISSION_DENIED', `this token may not ${scope === 'admin' ? 'use the admin API' : scope}`);
}

/**
 * Wraps every handler of a service with the token check for its scope (one place for all of
 * them). With an empty table the implementation is returned unchanged.
 */
export function withAuth(
  definition: ServiceDefinition,
  impl: UntypedServiceImplementation,
  scopeOf: (method: string) => Scope,
  tokens: TokenTable,
): UntypedServiceImplementation {
  if (tokens.size === 0) return impl;
  const out: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(impl)) {
    const def = definition[name];
    const scope = scopeOf(name);
    const h = handler as (...args: unknown[]) => void;
    if (def?.responseStream && !def.requestStream) {
      out[name] = ((call: ServerWritableStream<unknown, unknown>) => {
        try {
          authorize(call.metadata, scope, tokens);
        } catch (err) {
          call.emit('error', toServiceError(err));
          return;
        }
        h(call);
      }) as never;
    } else {
      out[name] = ((call: ServerUnaryCall<unknown, unknown>, cb: (e: unknown) => void) => {
        try {
          authorize(call.metadata, scope, tokens);
        } catch (err) {
          cb(toServiceError(err));
          return;
        }
        h(call, cb);
      }) as never;
    }
  }
  return out;
}
