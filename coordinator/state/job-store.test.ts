import { beforeAll, describe, expect, it } from 'vitest';
import { becomeLeader, depose, queuedJob, randomKeys, plannedFields, useEtcd } from '../../test/support/etcd-fixtures.js';
import type { JobRecord, SegmentRecord } from './job-model.js';
import { JobStore, type LeaderFence } from './job-store.js';

/** JobStore.putSegment's group commit: writes for one job queue behind the one in flight and go together. */
describe('JobStore group commit (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  let store: JobStore;
  let fence: LeaderFence;

  beforeAll(async () => {
    store = new JobStore(e.client, keys, 1_000);
    fence = await becomeLeader(e.client, keys);
  });

  const running = async (): Promise<JobRecord> => {
    const rec = queuedJob(keys);
    await store.create(rec, undefined);
    await store.transition(rec.id, 'RUNNING', 'planned', plannedFields(), fence);
    return rec;
  };
  const seg = (index: number, state: SegmentRecord['state'] = 'TRANSFERRING'): SegmentRecord => ({ index, state, nodeId: `n${index}`, attempt: 1, startSec: index, endSec: index + 1, frames: 30 });
  const owner = (index: number) => ({ nodeId: `n${index}`, attempt: 1, assignedAtMs: 1 });

  it('batches concurrent writes into one transaction after the first; each resolves with its own durable revision', async () => {
    const rec = await running();
    const revs = await Promise.all(Array.from({ length: 20 }, (_, i) => store.putSegment(rec.id, seg(i), 'assigned', fence, owner(i))));
    // The first write goes alone; the 19 that queued behind it share one transaction.
    expect(new Set(revs).size).toBe(2);
    expect(revs.slice(1).every((r) => r === revs[1])).toBe(true);
    for (let i = 0; i < 20; i++) {
      // Each caller's revision is its owner key's mod revision: the attempt's fencing token.
      expect((await e.client.get(keys.segmentOwner(rec.id, i)).exec()).kvs[0]?.mod_revision).toBe(revs[i]);
    }
    const job = (await store.get(rec.id))!;
    expect(job.history.filter((h) => h.scope.startsWith('segment/')).map((h) => h.scope)).toEqual(Array.from({ length: 20 }, (_, i) => `segment/${i}`));
  });

  it('writes of the same segment go in order, in separate transactions (the last one wins)', async () => {
    const rec = await running();
    const states: SegmentRecord['state'][] = ['TRANSFERRING', 'TRANSCODING', 'DONE'];
    const revs = await Promise.all(states.map((st) => store.putSegment(rec.id, seg(0, st), st.toLowerCase(), fence)));
    expect(new Set(revs).size).toBe(3);
    expect(revs.map(Number)).toEqual([...revs.map(Number)].sort((a, b) => a - b));
    const t = (await store.tree(rec.id))!;
    expect(t.segments.map((s) => s.state)).toEqual(['DONE']);
    expect(t.rec.history.filter((h) => h.scope === 'segment/0').map((h) => h.state)).toEqual(states);
  });

  it('rejects every write of a batch with NOT_LEADER once deposed, and with CANCELLED once the job is over; nothing is written', async () => {
    const rec = await running();
    const cancelled = await running();
    await store.cancel(cancelled.id, 'user');
    await expect(store.putSegment(cancelled.id, seg(0), 'assigned', fence, owner(0))).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(await e.client.get(keys.segmentOwner(cancelled.id, 0)).exists()).toBe(false);

    const old = fence;
    fence = await depose(e.client, keys);
    const before = store.fencingRejections;
    const outs = await Promise.allSettled([0, 1, 2, 3].map((i) => store.putSegment(rec.id, seg(i), 'assigned', old, owner(i))));
    expect(outs.map((o) => (o.status === 'rejected' ? (o.reason as { code: string }).code : 'ok'))).toEqual(['NOT_LEADER', 'NOT_LEADER', 'NOT_LEADER', 'NOT_LEADER']);
    // The first write and the batch of the other three: two refused transactions.
    expect(store.fencingRejections - before).toBe(2);
    expect(await e.client.getAll().prefix(keys.jobTree(rec.id)).count()).toBe(0);
  });

  it('does not mix writes under different fences in one transaction', async () => {
    const rec = await running();
    const stale: LeaderFence = { key: keys.election(), createRevision: '1' };
    const outs = await Promise.allSettled([
      store.putSegment(rec.id, seg(0), 'a', fence, owner(0)),
      store.putSegment(rec.id, seg(1), 'b', fence, owner(1)),
      store.putSegment(rec.id, seg(2), 'c', stale, owner(2)),
      store.putSegment(rec.id, seg(3), 'd', fence, owner(3)),
    ]);
    expect(outs.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(await e.client.get(keys.segmentOwner(rec.id, 2)).exists()).toBe(false);
    expect(await e.client.get(keys.segmentOwner(rec.id, 3)).exists()).toBe(true);
  });
});
