import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { AppError } from './errors.js';
import type { TlsMaterial } from './tls.js';

export interface EtcdSettings {
  endpoints: string[];
  /** Deadline of every unary etcd call, ms. Streams (watch, keepalive) have none. */
  callTimeoutMs: number;
  username?: string | undefined;
  password?: string | undefined;
  /** TLS to etcd: its CA, and our client certificate and key (mutual TLS). */
  tls?: TlsMaterial | undefined;
}

/** An etcd client whose every unary call carries a deadline. */
export function createEtcd(s: EtcdSettings): Etcd3 {
  const options: IOptions = {
    hosts: s.endpoints,
    dialTimeout: s.callTimeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + s.callTimeoutMs }),
    // Transient trouble (a member down, a leader election) is retried with exponential backoff
    // and jitter, across the other members; permanent errors are not retried.
    faultHandling: {
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 4, backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2_000 }) }),
    },
  };
  if (s.username !== undefined && s.password !== undefined) options.auth = { username: s.username, password: s.password };
  if (s.tls) options.credentials = { rootCertificate: s.tls.ca, certChain: s.tls.cert, privateKey: s.tls.key };
  return new Etcd3(options);
}

/** Reads a JSON value; undefined when the key is absent. */
export async function getJson<T>(etcd: Etcd3, key: string): Promise<T | undefined> {
  const raw = await etcd.get(key).string();
  return raw === null ? undefined : (JSON.parse(raw) as T);
}

/** Reads a JSON value with its mod revision (for compare-and-swap). */
export async function getJsonWithRevision<T>(etcd: Etcd3, key: string): Promise<{ value: T; modRevision: string } | undefined> {
  const res = await etcd.get(key).exec();
  const kv = res.kvs[0];
  if (!kv) return undefined;
  return { value: JSON.parse(kv.value.toString()) as T, modRevision: kv.mod_revision };
}

/** All JSON values under a prefix, keyed by full key. */
export async function listJson<T>(etcd: Etcd3, prefix: string): Promise<Map<string, T>> {
  const all = await etcd.getAll().prefix(prefix).strings();
  const out = new Map<string, T>();
  for (const [k, v] of Object.entries(all)) {
    try {
      out.set(k, JSON.parse(v) as T);
    } catch {
      // a foreign value under our prefix; skip it rather than fail the whole listing
    }
  }
  return out;
}

/**
 * Compare-and-swap loop on one JSON key: reads, applies `mutate`, writes only if nobody
 * wrote in between. `mutate` returning undefined means "no change".
 */
export async function updateJson<T>(
  etcd: Etcd3,
  key: string,
  mutate: (current: T) => T | undefined,
  attempts = 20,
): Promise<T> {
  for (let i = 0; i < attempts; i++) {
    const cur = await getJsonWithRevision<T>(etcd, key);
    if (!cur) throw new AppError('NOT_FOUND', `no record at ${key}`);
    const next = mutate(cur.value);
    if (next === undefined) return cur.value;
    const res = await etcd.if(key, 'Mod', '==', cur.modRevision).then(etcd.put(key).value(JSON.stringify(next))).commit();
    if (res.succeeded) return next;
  }
  throw new AppError('UNAVAILABLE', `too much contention updating ${key}`);
}
