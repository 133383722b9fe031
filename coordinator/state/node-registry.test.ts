import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { NodeRecord, NodeStats, UploaderRecord } from '../../common/records.js';
import { startEtcdServer, type EtcdServer } from '../../test/etcd-server.js';
import { randomKeys } from '../../test/support/etcd-fixtures.js';
import { incarnation, NodeRegistry } from './node-registry.js';
import { pickNode } from '../run/segment-dispatch.js';

/** The registry as the coordinator keeps it, fed by records the agents and uploaders write to etcd. */
describe('NodeRegistry and pickNode (real etcd)', () => {
  let e: EtcdServer;
  let registry: NodeRegistry;
  const keys = randomKeys();
  const events: string[] = [];

  beforeAll(async () => {
    e = await startEtcdServer();
    // A long re-list period: what is seen here comes from the watches.
    registry = new NodeRegistry(e.client, keys, createLogger('test', 'silent'), 60_000);
    registry.on('added', (n) => events.push(`added ${n.id}`));
    registry.on('removed', (id) => events.push(`removed ${id}`));
    await registry.start();
  });
  afterAll(async () => {
    await registry?.stop();
    await e?.stop();
  });

  const node = (id: string, slots: number, startedAtMs = 1): NodeRecord => ({ id, address: `127.0.0.1:${1000 + slots}`, slots, encoders: ['libx264'], version: 't', startedAtMs, metricsAddress: '' });
  const register = async (n: NodeRecord): Promise<void> => {
    await e.client.put(keys.node(n.id)).value(JSON.stringify(n));
  };
  const stats = async (id: string, s: Partial<NodeStats>): Promise<void> => {
    await e.client.put(keys.nodeStats(id)).value(JSON.stringify({ busySlots: 0, segmentsDone: 0, subSegmentsDone: 0, heartbeatMs: Date.now(), ...s } satisfies NodeStats));
  };
  const ready = (): string[] => registry.ready().map((n) => n.id);

  it('sees nodes join, drain, report not ready, restart and leave', async () => {
    await register(node('a', 2));
    await register(node('b', 4));
    await register(node('c', 1));
    await expect.poll(ready).toEqual(['a', 'b', 'c']);
    expect(events).toEqual(['added a', 'added b', 'added c']);
    expect(registry.get('b')).toMatchObject({ slots: 4, draining: false, admission: 'admitted' });

    await e.client.put(keys.nodeDrain('b')).value('');
    await expect.poll(ready).toEqual(['a', 'c']);
    expect(registry.get('b')?.draining).toBe(true);
    expect(registry.all().map((n) => n.id)).toEqual(['a', 'b', 'c']);

    // Load figures arrive by their own watch (nodestats/), not by a re-list.
    await stats('c', { busySlots: 1, notReady: 'staging full' });
    await expect.poll(ready).toEqual(['a']);
    expect(registry.get('c')?.stats).toMatchObject({ busySlots: 1, notReady: 'staging full' });
    await stats('c', { busySlots: 0 });
    await e.client.delete().key(keys.nodeDrain('b'));
    await expect.poll(ready).toEqual(['a', 'b', 'c']);

    events.length = 0;
    const restarted = node('a', 2, 2);
    await register(restarted);
    await expect.poll(() => registry.get('a') && incarnation(registry.get('a')!)).toBe(incarnation(restarted));
    expect(events).toEqual(['removed a', 'added a']);

    await e.client.delete().key(keys.node('c'));
    await expect.poll(() => registry.has('c')).toBe(false);
    expect(events).toContain('removed c');
    expect(ready()).toEqual(['a', 'b']);
  });

  it("drops a node's probe channel when the node leaves or comes back as another incarnation, and all of them when it stops", async () => {
    const pkeys = randomKeys();
    const checked = new Set<string>();
    const forgotten: string[] = [];
    let closed = 0;
    const probed = new NodeRegistry(e.client, pkeys, createLogger('test', 'silent'), 60_000, undefined, {
      intervalMs: 50,
      failures: 3,
      check: (n) => {
        checked.add(`${n.id}@${n.startedAtMs}`);
        return Promise.resolve(true);
      },
      forget: (address) => forgotten.push(address),
      close: () => closed++,
    });
    await probed.start();
    try {
      const put = async (n: NodeRecord): Promise<void> => {
        await e.client.put(pkeys.node(n.id)).value(JSON.stringify(n));
      };
      await put(node('p', 1));
      await put(node('q', 2));
      await expect.poll(() => [...checked].sort()).toEqual(['p@1', 'q@1']);
      expect(forgotten).toEqual([]);
      await put(node('p', 1, 2)); // restarted: another incarnation
      await expect.poll(() => checked.has('p@2')).toBe(true);
      expect(forgotten).toEqual(['127.0.0.1:1001']);
      await e.client.delete().key(pkeys.node('q'));
      await expect.poll(() => forgotten).toEqual(['127.0.0.1:1001', '127.0.0.1:1002']);
    } finally {
      await probed.stop();
    }
    expect(closed).toBe(1);
  });

  it('lists uploaders from etcd, sorted by id', async () => {
    const up = (id: string): UploaderRecord => ({ id, address: `127.0.0.1:${id.length}`, metricsAddress: '', startedAtMs: 1 });
    await e.client.put(keys.uploader('u2')).value(JSON.stringify(up('u2')));
    await e.client.put(keys.uploader('u1')).value(JSON.stringify(up('u1')));
    await expect.poll(() => registry.uploaderList().map((u) => u.id)).toEqual(['u1', 'u2']);
    await e.client.delete().key(keys.uploader('u2'));
    await expect.poll(() => registry.uploaderList().map((u) => u.id)).toEqual(['u1']);
    expect(registry.uploader('u1')?.address).toBe('127.0.0.1:2');
  });

  it('pickNode on the registry view: the planned node while it has a free slot, else the least loaded; never a draining node', async () => {
    await registry.refresh();
    const view = registry.ready();
    expect(pickNode(view, new Map(), 'b', new Set())?.id).toBe('b');
    // b is full (4 of 4): the least loaded per slot of the others.
    expect(
      pickNode(
        view,
        new Map([
          ['a', 1],
          ['b', 4],
        ]),
        'b',
        new Set(),
      )?.id,
    ).toBe('a');
    // The incarnation that failed is avoided; a drained node is not in the view at all.
    expect(pickNode(view, new Map(), 'a', new Set([incarnation(registry.get('a')!)]))?.id).toBe('b');
    await e.client.put(keys.nodeDrain('b')).value('');
    await expect.poll(ready).toEqual(['a']);
    expect(pickNode(registry.ready(), new Map([['a', 2]]), 'b', new Set())?.id).toBe('a');
    await e.client.delete().key(keys.node('a'));
    await expect.poll(ready).toEqual([]);
    expect(pickNode(registry.ready(), new Map(), undefined, new Set())).toBeUndefined();
  });
});
