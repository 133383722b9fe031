import { Etcd3, GRPCDeadlineExceededError, GRPCResourceExhastedError, GRPCUnavailableError, isRecoverableError, Range, type IOptions } from 'etcd3';
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, isBrokenCircuitError, noop, retry } from 'cockatiel';
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
    //
    // Not etcd3's default per-member circuit breaker: it opens after 3 consecutive "recoverable"
    // errors for 5 s, and counts a response over the 4 MiB message cap (RESOURCE_EXHAUSTED) as
    // one, so with one member a few oversized reads failed *every* call of the process with
    // BrokenCircuitError, over and over (issue 18). Here a member is skipped only when it looks
    // down (unreachable or timing out 3 times in a row), for 1 s, and only when there is another
    // member to ask; with a single member the retry's backoff is the only brake. The retry moves
    // to another member (the pool shuffles hosts across attempts); an oversized response is not
    // retried at all: it would fail the same way.
    faultHandling: {
      host: () => (s.endpoints.length > 1 ? circuitBreaker(handleWhen(isMemberDownError), { halfOpenAfter: 1_000, breaker: new ConsecutiveBreaker(3) }) : noop),
      global: retry(handleWhen(retriedInClient), { maxAttempts: 5, backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2_000 }) }),
    },
  };
  if (s.username !== undefined && s.password !== undefined) options.auth = { username: s.username, password: s.password };
  if (s.tls) options.credentials = { rootCertificate: s.tls.ca, certChain: s.tls.cert, privateKey: s.tls.key };
  return new Etcd3(options);
}

/**
 * What the client retries by itself, per call: trouble that may pass (a member down, an
 * election, a deadline), not an oversized response. (Callers that outlast longer outages use
 * withEtcdRetry in etcd-retry.ts.)
 */
function retriedInClient(err: Error): boolean {
  if (err instanceof GRPCResourceExhastedError) return false;
  return isRecoverableError(err) || isBrokenCircuitError(err);
}

/** The member did not answer (unreachable, or past the deadline): try another one for a while. */
function isMemberDownError(err: Error): boolean {
  return err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError;
}

/** Keys (and values) per etcd range response in a paged read: far below the 4 MiB message cap. */
export const PAGE_SIZE = 500;

/** The first key after every key that starts with `prefix` (etcd's prefix range end). */
export function prefixEnd(prefix: string): string {
  return Range.prefix(prefix).end.toString();
}

/**
 * Every key (and value, unless keysOnly) in [start, end), in key order, one bounded range
 * request per page: no response ever holds more than `pageSize` keys. Each page is read at the
 * latest revision (not one snapshot): callers re-list or compare revisions where that matters.
 */
export async function* rangePages(
  etcd: Etcd3,
  range: { start: string; end: string },
  o: { pageSize?: number; keysOnly?: boolean; descending?: boolean } = {},
): AsyncGenerator<{ key: string; value: string }[]> {
  const pageSize = o.pageSize ?? PAGE_SIZE;
  let { start, end } = range;
  for (;;) {
    const res = await etcd.kv.range({
      key: Buffer.from(start),
      range_end: Buffer.from(end),
      limit: pageSize,
      sort_target: 'Key',
      sort_order: o.descending ? 'Descend' : 'Ascend',
      keys_only: o.keysOnly === true,
    });
    const page = res.kvs.map((kv) => ({ key: kv.key.toString(), value: o.keysOnly ? '' : kv.value.toString() }));
    if (page.length > 0) yield page;
    if (!res.more || page.length === 0) return;
    const last = page[page.length - 1]!.key;
    if (o.descending) end = last;
    else start = `${last}\0`;
  }
}

/** Every value under a prefix, keyed by full key, read in bounded pages. */
export async function listStrings(etcd: Etcd3, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const page of rangePages(etcd, { start: prefix, end: prefixEnd(prefix) })) for (const { key, value } of page) out[key] = value;
  return out;
}

/** Every key under a prefix (keys only), read in bounded pages. */
export async function listKeys(etcd: Etcd3, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const page of rangePages(etcd, { start: prefix, end: prefixEnd(prefix) }, { keysOnly: true })) for (const { key } of page) out.push(key);
  return out;
}
