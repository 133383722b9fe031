import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { expect, it } from 'vitest';
import { freePort } from './ports.js';

it('hands out bindable ports below the ephemeral range, never the same one twice', async () => {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  const ports = await Promise.all(Array.from({ length: 40 }, () => freePort()));
  expect(new Set(ports).size).toBe(ports.length);
  for (const p of ports) expect(p).toBeLessThan(low);
  // Each one can be bound now.
  for (const p of ports.slice(0, 5)) {
    await new Promise<void>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(p, '127.0.0.1', () => s.close(() => resolve()));
    });
  }
});
