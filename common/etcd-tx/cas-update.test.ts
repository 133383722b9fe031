import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { randomKeys, useEtcd } from '../../test/support/etcd-fixtures.js';
import { casUpdate } from './cas-update.js';
import { compareHolds, leaderFenceCompare, type LeaderFence } from './compare.js';

const counter = z.looseObject({ n: z.number().int(), by: z.array(z.string()) });
type Counter = z.infer<typeof counter>;

describe('casUpdate (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  const key = (name: string): string => `${keys.prefix}cas/${name}`;
  let fence: LeaderFence;

  beforeAll(async () => {
    await e.client.put(keys.election()).value('me');
    fence = { key: keys.election(), createRevision: (await e.client.get(keys.election()).exec()).kvs[0]!.create_revision };
  });

  const bump =
    (who: string) =>
    (cur: Counter | undefined): { next: Counter } => ({ next: { n: (cur?.n ?? 0) + 1, by: [...(cur?.by ?? []), who] } });

  it('creates a record only with allowCreate, and answers missing without it', async () => {
    expect(await casUpdate(e.client, key('absent'), counter, bump('a'))).toEqual({ ok: false, reason: 'missing' });
    expect(await e.client.get(key('absent')).exists()).toBe(false);
    const out = await casUpdate(e.client, key('absent'), counter, bump('a'), { allowCreate: true });
    expect(out).toMatchObject({ ok: true, changed: true, value: { n: 1 }, previous: undefined });
    const kv = (await e.client.get(key('absent')).exec()).kvs[0]!;
    expect(out.ok && out.revision).toBe(kv.mod_revision);
    expect(JSON.parse(kv.value.toString())).toEqual({ n: 1, by: ['a'] });
  });

  it('writes nothing for "no change" and answers the record and its mod revision', async () => {
    await e.client.put(key('same')).value(JSON.stringify({ n: 5, by: [] }));
    const before = (await e.client.get(key('same')).exec()).kvs[0]!;
    const out = await casUpdate(e.client, key('same'), counter, () => undefined);
    expect(out).toEqual({ ok: true, changed: false, value: { n: 5, by: [] }, revision: before.mod_revision });
    expect((await e.client.get(key('same')).exec()).kvs[0]!.mod_revision).toBe(before.mod_revision);
  });

  it('retries on a conflict: 12 concurrent increments all land, each exactly once', async () => {
    await e.client.put(key('race')).value(JSON.stringify({ n: 0, by: [] }));
    const who = Array.from({ length: 12 }, (_, i) => `w${i}`);
    const outs = await Promise.all(who.map((w) => casUpdate(e.client, key('race'), counter, bump(w))));
    expect(outs.every((o) => o.ok && o.changed)).toBe(true);
    const final = JSON.parse((await e.client.get(key('race')).string())!) as Counter;
    expect(final.n).toBe(12);
    expect([...final.by].sort()).toEqual([...who].sort());
    // Every winner committed at its own revision.
    expect(new Set(outs.map((o) => (o.ok ? o.revision : ''))).size).toBe(12);
  });

  it('reads again after a write between its read and its commit', async () => {
    await e.client.put(key('moved')).value(JSON.stringify({ n: 0, by: [] }));
    let calls = 0;
    const out = await casUpdate(e.client, key('moved'), counter, async (cur) => {
      calls++;
      if (calls === 1) await e.client.put(key('moved')).value(JSON.stringify({ n: 100, by: ['other'] }));
      return bump('me')(cur);
    });
    expect(calls).toBe(2);
    expect(out).toMatchObject({ ok: true, changed: true, value: { n: 101, by: ['other', 'me'] }, previous: { n: 100 } });
  });

  it('gives up with contention after maxAttempts rounds of conflicts', async () => {
    await e.client.put(key('busy')).value(JSON.stringify({ n: 0, by: [] }));
    let calls = 0;
    const out = await casUpdate(
      e.client,
      key('busy'),
      counter,
      async (cur) => {
        calls++;
        await e.client.put(key('busy')).value(JSON.stringify({ n: 1000 + calls, by: [] }));
        return bump('me')(cur);
      },
      { maxAttempts: 3 },
    );
    expect(out).toEqual({ ok: false, reason: 'contention' });
    expect(calls).toBe(3);
    expect(JSON.parse((await e.client.get(key('busy')).string())!)).toEqual({ n: 1003, by: [] });
  });

  it('commits the step ops with the record, and nothing once the fence is gone (fenced at once, no retries)', async () => {
    await e.client.put(key('fenced')).value(JSON.stringify({ n: 0, by: [] }));
    const ok = await casUpdate(e.client, key('fenced'), counter, (cur) => ({ ...bump('leader')(cur), ops: [e.client.put(key('side')).value('1')] }), { fence: leaderFenceCompare(fence) });
    expect(ok).toMatchObject({ ok: true, changed: true });
    expect(await e.client.get(key('side')).string()).toBe('1');

    // Another coordinator takes over: the election key is created again (a new create revision).
    await e.client.delete().key(keys.election());
    await e.client.put(keys.election()).value('other');
    let calls = 0;
    const out = await casUpdate(
      e.client,
      key('fenced'),
      counter,
      (cur) => {
        calls++;
        return { ...bump('deposed')(cur), ops: [e.client.put(key('side')).value('2')] };
      },
      { fence: leaderFenceCompare(fence) },
    );
    expect(out).toEqual({ ok: false, reason: 'fenced' });
    expect(calls).toBe(1);
    expect(JSON.parse((await e.client.get(key('fenced')).string())!)).toEqual({ n: 1, by: ['leader'] });
    expect(await e.client.get(key('side')).string()).toBe('1');
  });

  it('fails every round on an extra compare that does not hold (not a fence: not read again)', async () => {
    await e.client.put(key('extra')).value(JSON.stringify({ n: 0, by: [] }));
    const out = await casUpdate(e.client, key('extra'), counter, bump('x'), { extraCompares: [{ key: key('nothing-here'), target: 'Create', op: '>', value: 0 }], maxAttempts: 2 });
    expect(out).toEqual({ ok: false, reason: 'contention' });
    expect(JSON.parse((await e.client.get(key('extra')).string())!)).toEqual({ n: 0, by: [] });
  });

  it('refuses a malformed record with INTERNAL naming its key', async () => {
    await e.client.put(key('bad')).value('{"n":"seven"}');
    await expect(casUpdate(e.client, key('bad'), counter, bump('x'))).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining(key('bad')) as unknown });
    await e.client.put(key('bad')).value('not json');
    await expect(casUpdate(e.client, key('bad'), counter, bump('x'))).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('compareHolds reads revisions and values as a transaction compares them', async () => {
    await e.client.put(key('cmp')).value('v1');
    const kv = (await e.client.get(key('cmp')).exec()).kvs[0]!;
    expect(await compareHolds(e.client, { key: key('cmp'), target: 'Mod', op: '==', value: kv.mod_revision })).toBe(true);
    expect(await compareHolds(e.client, { key: key('cmp'), target: 'Create', op: '==', value: kv.create_revision })).toBe(true);
    expect(await compareHolds(e.client, { key: key('cmp'), target: 'Value', op: '==', value: 'v1' })).toBe(true);
    expect(await compareHolds(e.client, { key: key('cmp'), target: 'Version', op: '>', value: 0 })).toBe(true);
    await e.client.put(key('cmp')).value('v2');
    expect(await compareHolds(e.client, { key: key('cmp'), target: 'Mod', op: '==', value: kv.mod_revision })).toBe(false);
    expect(await compareHolds(e.client, { key: key('cmp'), target: 'Value', op: '!=', value: 'v1' })).toBe(true);
    expect(await compareHolds(e.client, { key: key('none'), target: 'Create', op: '==', value: 0 })).toBe(true);
  });

  it('a guarded write (no next value) commits its ops only while the record is as read, and leaves the record', async () => {
    await e.client.put(key('guard')).value(JSON.stringify({ n: 1, by: [] }));
    const rev = (await e.client.get(key('guard')).exec()).kvs[0]!.mod_revision;
    const out = await casUpdate(e.client, key('guard'), counter, () => ({ ops: [e.client.put(key('guarded')).value('yes')] }));
    expect(out).toMatchObject({ ok: true, changed: true, value: { n: 1 } });
    expect((await e.client.get(key('guard')).exec()).kvs[0]!.mod_revision).toBe(rev);
    expect(await e.client.get(key('guarded')).string()).toBe('yes');
    const moved = await casUpdate(
      e.client,
      key('guard'),
      counter,
      async () => {
        await e.client.put(key('guard')).value(JSON.stringify({ n: 2, by: [] }));
        return { ops: [e.client.put(key('guarded')).value('no')] };
      },
      { maxAttempts: 1 },
    );
    expect(moved).toEqual({ ok: false, reason: 'contention' });
    expect(await e.client.get(key('guarded')).string()).toBe('yes');
  });
});
