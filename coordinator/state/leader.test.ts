import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { startEtcdServer, type EtcdServer } from '../../test/etcd-server.js';
import { randomKeys } from '../../test/support/etcd-fixtures.js';
import { JobStore, type LeaderFence } from './job-store.js';
import { LeaderElection } from './leader.js';

describe('LeaderElection (real etcd)', () => {
  let e: EtcdServer;
  const keys = randomKeys();
  const log = createLogger('test', 'silent');
  const elections: LeaderElection[] = [];

  beforeAll(async () => {
    e = await startEtcdServer();
  });
  afterAll(async () => {
    for (const el of elections) await el.resign();
    await e?.stop();
  });

  const candidate = (id: string): { el: LeaderElection; events: string[]; fences: LeaderFence[] } => {
    const el = new LeaderElection(e.client, keys.election(), id, 2, log);
    const events: string[] = [];
    const fences: LeaderFence[] = [];
    el.on('elected', (f) => {
      events.push('elected');
      fences.push(f);
    });
    el.on('deposed', () => events.push('deposed'));
    elections.push(el);
    el.start();
    return { el, events, fences };
  };

  it('elects one of two candidates; on resign the other takes over with a newer fence, and the old one is refused', async () => {
    const a = candidate('coord-a');
    await expect.poll(() => a.el.isLeader).toBe(true);
    const b = candidate('coord-b');
    expect(await a.el.leaderId()).toBe('coord-a');
    expect(await b.el.leaderId()).toBe('coord-a');
    const kv = (await e.client.get(keys.election()).exec()).kvs[0]!;
    expect(a.el.token).toEqual({ key: keys.election(), createRevision: kv.create_revision });
    expect(a.fences).toEqual([a.el.token]);
    expect(b.el.isLeader).toBe(false);

    const oldFence = a.el.token!;
    await a.el.resign();
    expect(a.events).toEqual(['elected', 'deposed']);
    expect(a.el.isLeader).toBe(false);
    // The standby watches the key: its deletion (the lease revoked) wakes its campaign.
    await expect.poll(() => b.el.isLeader).toBe(true);
    expect(await b.el.leaderId()).toBe('coord-b');
    expect(BigInt(b.el.token!.createRevision)).toBeGreaterThan(BigInt(oldFence.createRevision));

    const store = new JobStore(e.client, keys, 100);
    const facts = { keyTimes: [0], fileFrames: [1], leadIn: 0, totalFrames: 1 };
    await expect(store.putResumeFacts('j', facts, oldFence)).rejects.toMatchObject({ code: 'NOT_LEADER' });
    expect(store.fencingRejections).toBe(1);
    await store.putResumeFacts('j', facts, b.el.token!);
    expect(await store.getResumeFacts('j')).toEqual(facts);
    await a.el.resign(); // idempotent
    expect(a.events).toEqual(['elected', 'deposed']);
  });

  it('is deposed when its lease is lost (revoked behind its back) and a standby takes over', async () => {
    await Promise.all(elections.map((el) => el.resign()));
    await expect.poll(() => e.client.get(keys.election()).exists()).toBe(false);
    const c = candidate('coord-c');
    await expect.poll(() => c.el.isLeader).toBe(true);
    const d = candidate('coord-d');
    const lease = (await e.client.get(keys.election()).exec()).kvs[0]!.lease;
    await e.client.leaseClient.leaseRevoke({ ID: lease });
    await expect.poll(() => c.events, { timeout: 10_000 }).toContain('deposed');
    expect(c.el.isLeader).toBe(false);
    await expect.poll(() => c.el.isLeader || d.el.isLeader, { timeout: 10_000 }).toBe(true);
    expect(await c.el.leaderId()).toBe(c.el.isLeader ? 'coord-c' : 'coord-d');
  });
});
