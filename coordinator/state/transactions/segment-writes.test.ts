import { beforeAll, describe, expect, it } from 'vitest';
import { becomeLeader, depose, queuedJob, randomKeys, plannedFields, useEtcd } from '../../../test/support/etcd-fixtures.js';
import type { LeaderFence } from '../../../common/etcd-tx/compare.js';
import type { JobRecord, SegmentRecord } from '../job-model.js';
import { createJob } from './create-job.js';
import { commitSegmentWrites } from './segment-writes.js';
import { updateJob } from './update-job.js';

describe('commitSegmentWrites / assign-owner (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  let fence: LeaderFence;

  beforeAll(async () => {
    fence = await becomeLeader(e.client, keys);
  });

  const running = async (): Promise<JobRecord> => {
    const rec = queuedJob(keys);
    await createJob(e.client, keys, rec, undefined);
    await updateJob(e.client, keys, rec.id, (r) => ({ ...r, ...plannedFields(), state: 'RUNNING' }));
    return rec;
  };
  const seg = (index: number, nodeId: string, attempt: number): SegmentRecord => ({ index, state: 'TRANSFERRING', nodeId, attempt, startSec: index * 4, endSec: index * 4 + 4, frames: 120 });

  it('assigns: segment record, owner key and trail entries in one transaction whose revision is the owner token', async () => {
    const rec = await running();
    const out = await commitSegmentWrites(
      e.client,
      keys,
      rec.id,
      [
        { seg: seg(0, 'a', 1), reason: 'assigned', ownerPut: { nodeId: 'a', attempt: 1, assignedAtMs: 1 } },
        { seg: seg(1, 'b', 1), reason: 'assigned', ownerPut: { nodeId: 'b', attempt: 1, assignedAtMs: 1 } },
      ],
      fence,
      100,
    );
    expect(out.ok).toBe(true);
    const rev = out.ok ? out.revision : '';
    for (const k of [keys.segment(rec.id, 0), keys.segmentOwner(rec.id, 0), keys.segmentOwner(rec.id, 1), keys.job(rec.id)]) expect((await e.client.get(k).exec()).kvs[0]?.mod_revision).toBe(rev);
    expect(JSON.parse((await e.client.get(keys.segmentOwner(rec.id, 1)).string())!)).toEqual({ nodeId: 'b', attempt: 1, assignedAtMs: 1 });
    const job = JSON.parse((await e.client.get(keys.job(rec.id)).string())!) as JobRecord;
    expect(job.history.slice(-2).map((h) => `${h.scope} ${h.state} ${h.nodeId} ${h.reason}`)).toEqual(['segment/0 TRANSFERRING a assigned', 'segment/1 TRANSFERRING b assigned']);
  });

  it('a state change without an owner put leaves the owner key (and its token) as it was', async () => {
    const rec = await running();
    const first = await commitSegmentWrites(e.client, keys, rec.id, [{ seg: seg(0, 'a', 1), reason: 'assigned', ownerPut: { nodeId: 'a', attempt: 1, assignedAtMs: 1 } }], fence, 100);
    const next = await commitSegmentWrites(e.client, keys, rec.id, [{ seg: { ...seg(0, 'a', 1), state: 'TRANSCODING' }, reason: 'transferred' }], fence, 100);
    expect(next.ok).toBe(true);
    expect((await e.client.get(keys.segmentOwner(rec.id, 0)).exec()).kvs[0]?.mod_revision).toBe(first.ok ? first.revision : 'x');
    expect(JSON.parse((await e.client.get(keys.segment(rec.id, 0)).string())!)).toMatchObject({ state: 'TRANSCODING' });
  });

  it('refuses a finished job (finished, with its state) and a deposed leader (fenced), writing nothing', async () => {
    const done = await running();
    await updateJob(e.client, keys, done.id, (r) => ({ ...r, state: 'CANCELLED', finishedAtMs: Date.now() }));
    expect(await commitSegmentWrites(e.client, keys, done.id, [{ seg: seg(0, 'a', 1), reason: 'assigned', ownerPut: { nodeId: 'a', attempt: 1, assignedAtMs: 1 } }], fence, 100)).toEqual({
      ok: false,
      reason: 'finished',
      state: 'CANCELLED',
    });
    expect(await e.client.get(keys.segmentOwner(done.id, 0)).exists()).toBe(false);

    const rec = await running();
    const old = fence;
    fence = await depose(e.client, keys);
    expect(await commitSegmentWrites(e.client, keys, rec.id, [{ seg: seg(0, 'a', 1), reason: 'assigned', ownerPut: { nodeId: 'a', attempt: 1, assignedAtMs: 1 } }], old, 100)).toEqual({
      ok: false,
      reason: 'fenced',
    });
    expect(await e.client.get(keys.segmentOwner(rec.id, 0)).exists()).toBe(false);
    expect(await e.client.get(keys.segment(rec.id, 0)).exists()).toBe(false);
  });

  it('keeps only the newest trail entries (historyLimit)', async () => {
    const rec = await running();
    await commitSegmentWrites(
      e.client,
      keys,
      rec.id,
      [0, 1, 2, 3, 4].map((i) => ({ seg: seg(i, 'a', 1), reason: `r${i}` })),
      fence,
      3,
    );
    const job = JSON.parse((await e.client.get(keys.job(rec.id)).string())!) as JobRecord;
    expect(job.history.map((h) => h.reason)).toEqual(['r2', 'r3', 'r4']);
  });
});
