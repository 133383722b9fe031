import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ClientCache } from './grpc-clients.js';
import { grpcHealth, healthCheck, HealthCtor } from './health-client.js';
import { startGrpcServer } from './grpc-server.js';

/** A TCP forwarder in front of a gRPC server: counts the connections clients open, and can be re-pointed. */
async function countingProxy(target: { port: number }): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    connections++;
    const up = tcpConnect(target.port, '127.0.0.1');
    for (const s of [client, up]) {
      open.add(s);
      s.on('close', () => open.delete(s));
    }
    client.pipe(up).pipe(client);
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    up.on('close', () => client.destroy());
    client.on('close', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// The coordinator's probe channels: a bounded reconnect backoff (coordinator/main.ts).
const PROBE_OPTIONS = { 'grpc.initial_reconnect_backoff_ms': 1_000, 'grpc.max_reconnect_backoff_ms': 1_000 };

describe('health checks on a cached client (the node probes)', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('keeps one connection per target across checks (a fresh channel per check opens one each time)', async () => {
    const srv = await startGrpcServer('127.0.0.1', 0, []);
    cleanups.push(() => srv.close(1_000));
    const proxy = await countingProxy(srv);
    cleanups.push(() => proxy.close());
    const address = `127.0.0.1:${proxy.port}`;

    const cache = new ClientCache(undefined, PROBE_OPTIONS);
    cleanups.push(() => cache.closeAll());
    const check = (): ReturnType<typeof healthCheck> => healthCheck(cache.get(HealthCtor, address), '', 2_000);
    for (let i = 0; i < 5; i++) expect(await check()).toEqual({ serving: true });
    expect(proxy.connections()).toBe(1);

    // The one-off check, for contrast: a connection per call.
    for (let i = 0; i < 3; i++) expect((await grpcHealth(address, { timeoutMs: 2_000 })).serving).toBe(true);
    expect(proxy.connections()).toBe(4);

    // Forgotten (the node left or restarted): the next check dials again.
    cache.forget(address);
    expect(await check()).toEqual({ serving: true });
    expect(proxy.connections()).toBe(5);
  });

  it('fails while the target is gone and answers again within about a probe interval once it is back', async () => {
    const first = await startGrpcServer('127.0.0.1', 0, []);
    const target = { port: first.port };
    const proxy = await countingProxy(target);
    cleanups.push(() => proxy.close());
    const address = `127.0.0.1:${proxy.port}`;
    const cache = new ClientCache(undefined, PROBE_OPTIONS);
    cleanups.push(() => cache.closeAll());
    const check = (): ReturnType<typeof healthCheck> => healthCheck(cache.get(HealthCtor, address), '', 500);
    expect((await check()).serving).toBe(true);

    // The server goes away (its connections cut): checks fail as unreachable (no health status
    // answered), within their deadline; they do not hang.
    await first.close(100);
    const started = Date.now();
    const down = await check();
    expect(down.serving).toBe(false);
    expect(down.reason ?? '').not.toMatch(/^health status/);
    expect(Date.now() - started).toBeLessThan(2_000);

    // Back (a new process behind the same address): the kept channel reconnects.
    const second = await startGrpcServer('127.0.0.1', 0, []);
    cleanups.push(() => second.close(1_000));
    target.port = second.port;
    const deadline = Date.now() + 5_000;
    let back = await check();
    while (!back.serving && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      back = await check();
    }
    expect(back).toEqual({ serving: true });
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
