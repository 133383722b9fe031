import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from './helpers.js';

describe('node auto-join', () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster({ nodes: 1 });
  });
  afterAll(async () => {
    await t?.close();
  });

  const ids = async (): Promise<string[]> => (await t.client.listNodes()).map((n) => n.id).sort();
  const until = async (cond: () => Promise<boolean>, ms: number): Promise<number> => {
    const start = Date.now();
    while (!(await cond())) {
      if (Date.now() - start > ms) throw new Error(`condition not met within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return Date.now() - start;
  };

  it('registers a node started after the coordinator within 2 s, with its facts', async () => {
    const started = Date.now();
    const id = await t.cluster.addNode({ slots: 3 });
    await until(async () => (await ids()).includes(id), 2_000);
    expect(Date.now() - started).toBeLessThan(15_000); // process start included
    const n = (await t.client.listNodes()).find((x) => x.id === id)!;
    expect(n.slots).toBe(3);
    expect(n.state).toBe('ready');
    expect(n.encoders).toContain('libx264');
    expect(n.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(n.address).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('removes a stopped node at once and a killed node within its lease TTL', async () => {
    const a = await t.cluster.addNode();
    const b = await t.cluster.addNode();
    await t.cluster.stopProcess(a);
    await until(async () => !(await ids()).includes(a), 1_000);
    t.cluster.signal(b, 'SIGKILL');
    const gone = await until(async () => !(await ids()).includes(b), 5_000);
    expect(gone).toBeLessThanOrEqual(2_000 + 1_500); // TTL 2 s, plus etcd's expiry tick
  });
});
