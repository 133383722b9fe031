import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { grpcHealth, HealthChannels } from './health-client.js';
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

describe('HealthChannels', () => {
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

    const channels = new HealthChannels({ timeoutMs: 2_000, maxReconnectBackoffMs: 1_000 });
    cleanups.push(() => channels.close());
    for (let i = 0; i < 5; i++) expect(await channels.check('node-a', address)).toEqual({ serving: true });
    expect(proxy.connections()).toBe(1);
    expect(channels.size).toBe(1);

    // The one-off check, for contrast: a connection per call.
    for (let i = 0; i < 3; i++) expect((await grpcHealth(address, { timeoutMs: 2_000 })).serving).toBe(true);
    expect(proxy.connections()).toBe(4);

    channels.forget('node-a');
    expect(channels.size).toBe(0);
  });

  it('fails while the target is gone and answers again within about a probe interval once it is back', async () => {
    const first = await startGrpcServer('127.0.0.1', 0, []);
    const target = { port: first.port };
    const proxy = await countingProxy(target);
    cleanups.push(() => proxy.close());
    const address = `127.0.0.1:${proxy.port}`;
    const channels = new HealthChannels({ timeoutMs: 500, maxReconnectBackoffMs: 1_000 });
    cleanups.push(() => channels.close());
    expect((await channels.check('node-a', address)).serving).toBe(true);

    // The server goes away (its connections cut): checks fail as unreachable (no health status
    // answered), within their deadline; they do not hang.
    await first.close(100);
    const started = Date.now();
    const down = await channels.check('node-a', address);
    expect(down.serving).toBe(false);
    expect(down.reason ?? '').not.toMatch(/^health status/);
    expect(Date.now() - started).toBeLessThan(2_000);

    // Back (a new process behind the same address): the kept channel reconnects.
    const second = await startGrpcServer('127.0.0.1', 0, []);
    cleanups.push(() => second.close(1_000));
    target.port = second.port;
    const deadline = Date.now() + 5_000;
    let back = await channels.check('node-a', address);
    while (!back.serving && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      back = await channels.check('node-a', address);
    }
    expect(back).toEqual({ serving: true });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('opens a new channel when the target comes back under another address', async () => {
    const a = await startGrpcServer('127.0.0.1', 0, []);
    const b = await startGrpcServer('127.0.0.1', 0, []);
    cleanups.push(
      () => a.close(1_000),
      () => b.close(1_000),
    );
    const channels = new HealthChannels({ timeoutMs: 2_000, maxReconnectBackoffMs: 1_000 });
    cleanups.push(() => channels.close());
    expect((await channels.check('node-a', `127.0.0.1:${a.port}`)).serving).toBe(true);
    await a.close(1_000);
    expect((await channels.check('node-a', `127.0.0.1:${b.port}`)).serving).toBe(true);
    expect(channels.size).toBe(1);
  });
});
