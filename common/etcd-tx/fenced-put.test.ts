import { describe, expect, it } from 'vitest';
import { becomeLeader, depose, randomKeys, useEtcd } from '../../test/support/etcd-fixtures.js';
import { leaderFenceCompare, ownerFenceCompare } from './compare.js';
import { fencedPut, fencedWrite } from './fenced-put.js';

describe('fencedPut (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  it('writes under the current leader term and answers the revision it wrote at', async () => {
    const fence = await becomeLeader(e.client, keys);
    const out = await fencedPut(e.client, leaderFenceCompare(fence), keys.jobPlan('a'), '{"v":1}');
    expect(out.ok).toBe(true);
    const kv = (await e.client.get(keys.jobPlan('a')).exec()).kvs[0]!;
    expect(out.ok && out.revision).toBe(kv.mod_revision);
    expect(kv.value.toString()).toBe('{"v":1}');
  });

  it('refuses a deposed leader and leaves the key as it was', async () => {
    const fence = await becomeLeader(e.client, keys);
    await e.client.put(keys.jobPlan('b')).value('old');
    const next = await depose(e.client, keys);
    expect(Number(next.createRevision)).toBeGreaterThan(Number(fence.createRevision));
    expect(await fencedPut(e.client, leaderFenceCompare(fence), keys.jobPlan('b'), 'new')).toEqual({ ok: false, reason: 'fenced' });
    expect(await e.client.get(keys.jobPlan('b')).string()).toBe('old');
    expect(await fencedPut(e.client, leaderFenceCompare(next), keys.jobPlan('b'), 'new')).toMatchObject({ ok: true });
  });

  it('fences on a segment owner revision as well', async () => {
    const rev = Number((await e.client.put(keys.segmentOwner('c', 0)).value('{}').exec()).header.revision);
    expect(await fencedPut(e.client, ownerFenceCompare(keys.segmentOwner('c', 0), rev), `${keys.prefix}x`, '1')).toMatchObject({ ok: true });
    await e.client.put(keys.segmentOwner('c', 0)).value('{"again":true}');
    expect(await fencedPut(e.client, ownerFenceCompare(keys.segmentOwner('c', 0), rev), `${keys.prefix}x`, '2')).toEqual({ ok: false, reason: 'fenced' });
    expect(await e.client.get(`${keys.prefix}x`).string()).toBe('1');
  });

  it('fencedWrite tells a record that moved (read again) from a lost fence (stop)', async () => {
    const fence = await becomeLeader(e.client, keys);
    const key = keys.outboxEntry('j', 1, 'SUCCEEDED');
    const rev = (await e.client.put(key).value('v1').exec()).header.revision;
    const expectRev = [{ key, target: 'Mod' as const, op: '==' as const, value: rev }];
    await e.client.put(key).value('v2'); // moved meanwhile
    expect(await fencedWrite(e.client, leaderFenceCompare(fence), expectRev, [e.client.delete().key(key)])).toEqual({ ok: false, reason: 'moved' });
    expect(await e.client.get(key).string()).toBe('v2');
    const rev2 = (await e.client.get(key).exec()).kvs[0]!.mod_revision;
    const ok = await fencedWrite(e.client, leaderFenceCompare(fence), [{ key, target: 'Mod', op: '==', value: rev2 }], [e.client.put(key).value('v3')]);
    expect(ok).toMatchObject({ ok: true });
    expect((await e.client.get(key).exec()).kvs[0]!.mod_revision).toBe(ok.ok ? ok.revision : '');
    await depose(e.client, keys);
    const rev3 = (await e.client.get(key).exec()).kvs[0]!.mod_revision;
    expect(await fencedWrite(e.client, leaderFenceCompare(fence), [{ key, target: 'Mod', op: '==', value: rev3 }], [e.client.delete().key(key)])).toEqual({ ok: false, reason: 'fenced' });
    expect(await e.client.get(key).string()).toBe('v3');
  });
});
