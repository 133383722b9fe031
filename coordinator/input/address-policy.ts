import { isIP } from 'node:net';

/** One IPv4 block of the special-purpose registries (RFC 6890 and successors), with why it is refused. */
interface V4Block {
  base: number;
  bits: number;
  why: string;
}

const v4 = (cidr: string, why: string): V4Block => {
  const [addr, bits] = cidr.split('/') as [string, string];
  return { base: v4ToInt(addr)!, bits: Number(bits), why };
};

/**
 * IPv4 ranges a server-side request must never reach: everything in the IANA IPv4
 * Special-Purpose Address Registry, plus multicast and the reserved class E. Some of these
 * (AS112, AMT) are technically globally reachable; no video lives there, so refusing is free.
 */
const V4_SPECIAL: readonly V4Block[] = [
  v4('0.0.0.0/8', '"this network"'),
  v4('10.0.0.0/8', 'private'),
  v4('100.64.0.0/10', 'shared address space (CGNAT)'),
  v4('127.0.0.0/8', 'loopback'),
  v4('169.254.0.0/16', 'link-local'),
  v4('172.16.0.0/12', 'private'),
  v4('192.0.0.0/24', 'IETF protocol assignments'),
  v4('192.0.2.0/24', 'documentation (TEST-NET-1)'),
  v4('192.31.196.0/24', 'AS112'),
  v4('192.52.193.0/24', 'AMT'),
  v4('192.88.99.0/24', 'deprecated 6to4 relay anycast'),
  v4('192.168.0.0/16', 'private'),
  v4('192.175.48.0/24', 'AS112 direct delegation'),
  v4('198.18.0.0/15', 'benchmarking'),
  v4('198.51.100.0/24', 'documentation (TEST-NET-2)'),
  v4('203.0.113.0/24', 'documentation (TEST-NET-3)'),
  v4('224.0.0.0/4', 'multicast'),
  v4('240.0.0.0/4', 'reserved (and broadcast)'),
];

/** IPv6 blocks refused inside global unicast (2000::/3); everything outside 2000::/3 is refused anyway. */
const V6_SPECIAL: readonly { prefix: bigint; bits: number; why: string }[] = [
  // Teredo (2001::/32), benchmarking (2001:2::/48), ORCHID, AMT, AS112…: none is a web server's home.
  { prefix: v6Big('2001::'), bits: 23, why: 'IETF protocol assignments (Teredo, benchmarking, ORCHID)' },
  { prefix: v6Big('2001:db8::'), bits: 32, why: 'documentation' },
  // 6to4 embeds any IPv4 address, private ones included.
  { prefix: v6Big('2002::'), bits: 16, why: '6to4' },
  { prefix: v6Big('3fff::'), bits: 20, why: 'documentation' },
];

/** Why IPv6 space outside 2000::/3 is refused, for the message (most specific first). */
const V6_OUTSIDE: readonly { prefix: bigint; bits: number; why: string }[] = [
  { prefix: 0n, bits: 128, why: 'unspecified' },
  { prefix: 1n, bits: 128, why: 'loopback' },
  { prefix: v6Big('::ffff:0:0'), bits: 96, why: 'IPv4-mapped' },
  { prefix: 0n, bits: 96, why: 'IPv4-compatible' },
  { prefix: v6Big('64:ff9b::'), bits: 96, why: 'NAT64' },
  { prefix: v6Big('64:ff9b:1::'), bits: 48, why: 'local-use NAT64' },
  { prefix: v6Big('100::'), bits: 64, why: 'discard-only' },
  { prefix: v6Big('fc00::'), bits: 7, why: 'unique-local' },
  { prefix: v6Big('fe80::'), bits: 10, why: 'link-local' },
  { prefix: v6Big('fec0::'), bits: 10, why: 'site-local (deprecated)' },
  { prefix: v6Big('ff00::'), bits: 8, why: 'multicast' },
];

/**
 * Why `ip` must not be reached by a server-side request, or undefined for an ordinary public
 * (globally routable unicast) address. IPv4 is checked against the special-purpose registry;
 * IPv6 is allowed only inside global unicast (2000::/3) and outside its special blocks, so every
 * form that smuggles an IPv4 address (`::ffff:127.0.0.1`, `::127.0.0.1`, `64:ff9b::7f00:1`,
 * 6to4, Teredo) is refused whatever it embeds. Anything that is not an IP address is refused.
 */
export function specialAddress(ip: string): string | undefined {
  const bare = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  if (isIP(bare) === 4) {
    const n = v4ToInt(bare)!;
    return V4_SPECIAL.find((b) => inV4(n, b))?.why;
  }
  if (isIP(bare) !== 6) return 'not an IP address';
  const n = v6Big(bare);
  if (n >> 125n === 1n) return V6_SPECIAL.find((b) => inV6(n, b.prefix, b.bits))?.why;
  const why = V6_OUTSIDE.find((b) => inV6(n, b.prefix, b.bits))?.why ?? 'not global unicast';
  // Say what an embedded IPv4 address would have been: the message helps whoever debugs it.
  if ((why === 'IPv4-mapped' || why === 'IPv4-compatible' || why === 'NAT64') && n !== 0n && n !== 1n) {
    return `${why} (${intToV4(Number(n & 0xffffffffn))})`;
  }
  return why;
}

/** True for anything a server-side request must not reach (kept for callers of the old name). */
export function isPrivateAddress(ip: string): boolean {
  return specialAddress(ip) !== undefined;
}

function v4ToInt(a: string): number | undefined {
  const parts = a.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return undefined;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

function intToV4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function inV4(n: number, b: V4Block): boolean {
  const mask = b.bits === 0 ? 0 : (0xffffffff << (32 - b.bits)) >>> 0;
  return (n & mask) >>> 0 === (b.base & mask) >>> 0;
}

function inV6(n: bigint, prefix: bigint, bits: number): boolean {
  const shift = BigInt(128 - bits);
  return n >> shift === prefix >> shift;
}

/** An IPv6 address (already validated by isIP) as a 128-bit integer; a dotted IPv4 tail is allowed. */
function v6Big(a: string): bigint {
  let s = a.toLowerCase();
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const n = v4ToInt(dotted[1]!) ?? 0;
    s = `${s.slice(0, -dotted[1]!.length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head = '', tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) + BigInt(parseInt(g || '0', 16)), 0n);
}
