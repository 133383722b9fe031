import { describe, expect, it } from 'vitest';
import { specialAddress } from './address-policy.js';

describe('specialAddress', () => {
  it('refuses every IPv4 special-purpose, multicast and reserved range', () => {
    const refused: [string, RegExp][] = [
      ['0.0.0.0', /this network/],
      ['0.1.2.3', /this network/],
      ['10.1.2.3', /private/],
      ['100.64.0.1', /CGNAT/],
      ['100.127.255.254', /CGNAT/],
      ['127.0.0.1', /loopback/],
      ['127.255.255.254', /loopback/],
      ['169.254.169.254', /link-local/],
      ['172.16.0.1', /private/],
      ['172.31.255.255', /private/],
      ['192.0.0.8', /IETF/],
      ['192.0.2.1', /documentation/],
      ['192.88.99.1', /6to4/],
      ['192.168.1.1', /private/],
      ['198.18.0.1', /benchmarking/],
      ['198.19.255.255', /benchmarking/],
      ['198.51.100.7', /documentation/],
      ['203.0.113.9', /documentation/],
      ['224.0.0.1', /multicast/],
      ['239.255.255.250', /multicast/],
      ['240.0.0.1', /reserved/],
      ['255.255.255.255', /reserved/],
    ];
    for (const [ip, why] of refused) expect(specialAddress(ip), ip).toMatch(why);
  });

  it('refuses IPv6 outside global unicast, and every form that embeds IPv4', () => {
    const refused: [string, RegExp][] = [
      ['::', /unspecified/],
      ['::1', /loopback/],
      ['[::1]', /loopback/],
      ['::ffff:127.0.0.1', /IPv4-mapped \(127\.0\.0\.1\)/],
      ['::ffff:7f00:1', /IPv4-mapped \(127\.0\.0\.1\)/],
      ['::ffff:8.8.8.8', /IPv4-mapped/],
      ['::127.0.0.1', /IPv4-compatible \(127\.0\.0\.1\)/],
      ['::7f00:1', /IPv4-compatible/],
      ['64:ff9b::127.0.0.1', /NAT64 \(127\.0\.0\.1\)/],
      ['64:ff9b::808:808', /NAT64/],
      ['64:ff9b:1::a00:1', /local-use NAT64/],
      ['100::1', /discard/],
      ['fc00::1', /unique-local/],
      ['fd12:3456::1', /unique-local/],
      ['fe80::1', /link-local/],
      ['fe80::1%eth0', /link-local/],
      ['fec0::1', /site-local/],
      ['ff02::1', /multicast/],
      ['ff0e::1', /multicast/],
      ['2001::1', /Teredo/],
      ['2001:2::1', /benchmarking/],
      ['2001:db8::1', /documentation/],
      ['2002:7f00:1::1', /6to4/],
      ['3fff::1', /documentation/],
      ['4000::1', /not global unicast/],
      ['localhost', /not an IP/],
    ];
    for (const [ip, why] of refused) expect(specialAddress(ip), ip).toMatch(why);
  });

  it('lets ordinary public unicast addresses through', () => {
    for (const ip of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '198.20.0.1', '223.255.255.255', '11.201.77.2', '2001:4860:4860::8888', '2606:4700::1111', '2a00:1450:4001::1']) {
      expect(specialAddress(ip), ip).toBeUndefined();
    }
  });
});
