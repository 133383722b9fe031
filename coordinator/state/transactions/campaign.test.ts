import { describe, expect, it } from 'vitest';
import { randomKeys, useEtcd } from '../../../test/support/etcd-fixtures.js';
import { leaderFenceCompare } from '../../../common/etcd-tx/compare.js';
import { fencedPut } from '../../../common/etcd-tx/fenced-put.js';
import { campaign } from './campaign.js';

describe('campaign (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  it('elects the first candidate (its fence is the key create revision), answers held to the next, and hands over when the lease goes', async () => {
    const la = e.client.lease(30, { autoKeepAlive: false });
    const lb = e.client.lease(30, { autoKeepAlive: false });
    await Promise.all([la.grant(), lb.grant()]);
    const a = await campaign(e.client, la, keys.election(), 'coord-a');
    expect(a.ok).toBe(true);
    const kv = (await e.client.get(keys.election()).exec()).kvs[0]!;
    expect(a.ok && a.fence).toEqual({ key: keys.election(), createRevision: kv.create_revision });
    expect(kv.lease).toBe(await la.grant());
    expect(await campaign(e.client, lb, keys.election(), 'coord-b')).toEqual({ ok: false, reason: 'held', holder: 'coord-a' });
    expect(await campaign(e.client, la, keys.election(), 'coord-a')).toEqual({ ok: false, reason: 'held', holder: 'coord-a' });

    await la.revoke();
    expect(await e.client.get(keys.election()).exists()).toBe(false);
    const b = await campaign(e.client, lb, keys.election(), 'coord-b');
    expect(b.ok).toBe(true);
    if (!a.ok || !b.ok) return;
    expect(BigInt(b.fence.createRevision)).toBeGreaterThan(BigInt(a.fence.createRevision));
    // The old leader's fence no longer holds; the new one's does.
    expect(await fencedPut(e.client, leaderFenceCompare(a.fence), `${keys.prefix}w`, 'a')).toEqual({ ok: false, reason: 'fenced' });
    expect(await fencedPut(e.client, leaderFenceCompare(b.fence), `${keys.prefix}w`, 'b')).toMatchObject({ ok: true });
    await lb.revoke();
  });
});
