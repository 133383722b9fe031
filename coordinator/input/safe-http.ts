import { lookup as systemLookup } from 'node:dns/promises';
import { Resolver } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { AppError } from '../../common/errors.js';
import { specialAddress } from './address-policy.js';

/** Who a server-side request (an http(s) input, a webhook) may reach. */
export interface OutboundPolicy {
  /** Reach loopback/private/special addresses too (HTTP_ALLOW_PRIVATE: tests, trusted networks). */
  allowPrivate: boolean;
  /** When non-empty, only these host names (or literal addresses) may be reached. */
  allowedHosts: readonly string[];
  /** Resolves a host name to its addresses; the only lookup a request makes. */
  resolve: (host: string) => Promise<string[]>;
}

/**
 * The resolver outbound requests use: the system's (`getaddrinfo`, /etc/hosts included), or —
 * with `servers` set (DNS_SERVERS) — those DNS servers only, queried directly for A and AAAA.
 */
export function hostResolver(servers: readonly string[]): (host: string) => Promise<string[]> {
  if (servers.length === 0) {
    return async (host) => (await systemLookup(host, { all: true, verbatim: true })).map((a) => a.address);
  }
  const r = new Resolver({ timeout: 2_000, tries: 2 });
  r.setServers([...servers]);
  return async (host) => {
    const [a, aaaa] = await Promise.allSettled([r.resolve4(host), r.resolve6(host)]);
    const out = [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
    if (out.length === 0) throw a.status === 'rejected' ? a.reason : new Error(`no address for ${host}`);
    return out;
  };
}

/** A host checked against the policy, and the one address every connection to it will use. */
export interface VettedTarget {
  host: string;
  address: string;
  family: 4 | 6;
}

/**
 * Checks a URL's host against the policy and resolves it exactly once. Every address the name
 * resolves to must be public (one bad answer refuses the lot: a resolver may rotate them), and
 * the request then connects to the first of those very addresses — no second lookup, so a
 * rebinding DNS server cannot swap in another answer between the check and the connection.
 * `what` names the request in messages ("input", "webhook").
 */
export async function vetTarget(url: URL, policy: OutboundPolicy, what: string): Promise<VettedTarget> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AppError('UNSUPPORTED_URI_SCHEME', `${what} URLs must be http(s)`);
  // WHATWG URL parsing already turned 0x7f.1, 2130706433 and friends into dotted quads.
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (policy.allowedHosts.length > 0 && !policy.allowedHosts.includes(host)) {
    throw new AppError('PERMISSION_DENIED', `${what} host ${host} is not in the allowed hosts list`);
  }
  let addrs: string[];
  if (isIP(host)) addrs = [host];
  else {
    addrs = await policy.resolve(host).catch(() => []);
    if (addrs.length === 0) throw new AppError('INPUT_NOT_FOUND', `cannot resolve ${what} host ${host}`);
  }
  if (!policy.allowPrivate) {
    for (const a of addrs) {
      const why = specialAddress(a);
      if (why) throw new AppError('PERMISSION_DENIED', `${what} host ${host} resolves to ${a}, a ${why} address; such addresses are refused`);
    }
  }
  const address = addrs[0]!;
  return { host, address, family: isIP(address) === 6 ? 6 : 4 };
}

/** A lookup that answers every query with the vetted address: the socket connects there, nowhere else. */
function pinnedLookup(t: VettedTarget): LookupFunction {
  return ((_host: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void) => {
    if (opts?.all) cb(null, [{ address: t.address, family: t.family }]);
    else cb(null, t.address, t.family);
  }) as unknown as LookupFunction;
}

export interface PinnedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
}

/**
 * One HTTP request to a vetted target, connecting to its vetted address (TLS still checks the
 * certificate against the host name, which is also the SNI). No pooling, no redirects followed:
 * callers check every redirect target with `vetTarget` again.
 */
export function pinnedRequest(url: URL, target: VettedTarget, o: { method?: string; headers?: Record<string, string>; body?: string; signal: AbortSignal }): Promise<PinnedResponse> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
      url,
      {
        method: o.method ?? 'GET',
        headers: o.headers,
        lookup: pinnedLookup(target),
        agent: false,
        signal: o.signal,
        ...(url.protocol === 'https:' && !isIP(target.host) ? { servername: target.host } : {}),
      },
      (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res }),
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

const policies = new WeakMap<object, OutboundPolicy>();

/** The coordinator's outbound policy from its settings (one resolver per config object). */
export function outboundPolicy(cfg: { HTTP_ALLOW_PRIVATE: boolean; HTTP_ALLOWED_HOSTS: readonly string[]; DNS_SERVERS: readonly string[] }, o: { hostList?: boolean } = {}): OutboundPolicy {
  let base = policies.get(cfg);
  if (!base) {
    base = { allowPrivate: cfg.HTTP_ALLOW_PRIVATE, allowedHosts: cfg.HTTP_ALLOWED_HOSTS, resolve: hostResolver(cfg.DNS_SERVERS) };
    policies.set(cfg, base);
  }
  // The host allow-list names where inputs come from; webhooks go to the submitter's own receivers.
  return o.hostList === false ? { ...base, allowedHosts: [] } : base;
}
