import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * A TCP port free right now on 127.0.0.1, for processes that cannot bind port 0 and report it
 * (etcd, the S3 server, a coordinator whose address clients are given before it starts).
 *
 * The port is picked at random *below* the kernel's ephemeral range. A port the OS hands out for
 * a bind to port 0 comes from that range, and it is free again the moment the probe closes it: a
 * node agent of another test cluster binding port 0 took such a coordinator port in CI (the
 * coordinator died with EADDRINUSE, and the health check then reached the agent). Below the
 * range, only another caller of this function can pick the same port, and a process-wide set
 * keeps this one from handing a port out twice.
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralRange();
  const floor = 10_000;
  if (low - floor >= 1_000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = floor + Math.floor(Math.random() * (low - floor));
      if (handedOut.has(port)) continue;
      if (await bindable(port)) {
        handedOut.add(port);
        return port;
      }
    }
  }
  return osPort();
}

const handedOut = new Set<number>();

/** The kernel's ephemeral port range (Linux), or the IANA one elsewhere. */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo && hi) return [lo, hi];
  } catch {
    // not Linux
  }
  return [49_152, 65_535];
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function osPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}
