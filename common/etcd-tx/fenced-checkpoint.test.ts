import { describe, expect, it } from 'vitest';
import { randomKeys, useEtcd } from '../../test/support/etcd-fixtures.js';
import type { CheckpointRecord } from '../records.js';
import { SegmentFence } from '../segment-fence.js';
import { ownerHolds, readCheckpoint, updateCheckpointFenced, type SegmentAttempt } from './fenced-checkpoint.js';

describe('fenced checkpoint (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  let n = 0;

  /** Assigns a fresh segment to `nodeId` as the coordinator does; its owner key's mod revision is the token. */
  const assign = async (jobId: string, segment: number, nodeId: string, attempt: number): Promise<SegmentAttempt> => {
    const res = await e.client
      .put(keys.segmentOwner(jobId, segment))
      .value(JSON.stringify({ nodeId, attempt, assignedAtMs: Date.now() }))
      .exec();
    return { jobId, segment, ownerRevision: Number(res.header.revision) };
  };
  const markDone =
    (sub: number, attempt: number) =>
    (cur: CheckpointRecord | undefined): CheckpointRecord => ({
      boundaries: cur?.boundaries ?? [0, 2, 4, 6],
      done: [...(cur?.done ?? []), { sub, attempt, nodeId: 'a', frames: 60 }],
      transcodedByAttempt: { ...cur?.transcodedByAttempt, [attempt]: (cur?.transcodedByAttempt[attempt] ?? 0) + 1 },
    });

  it('writes the first checkpoint and then updates it while the owner holds', async () => {
    const a = await assign(`j${n++}`, 0, 'a', 1);
    const first = await updateCheckpointFenced(e.client, keys, a, markDone(0, 1));
    expect(first).toMatchObject({ ok: true, changed: true, checkpoint: { done: [{ sub: 0 }] } });
    const second = await updateCheckpointFenced(e.client, keys, a, markDone(1, 1));
    expect(second).toMatchObject({ ok: true, changed: true });
    const read = await readCheckpoint(e.client, keys, a.jobId, 0);
    expect(read?.value.done.map((d) => d.sub)).toEqual([0, 1]);
    expect(read?.modRevision).toBe(second.ok ? second.revision : '');
  });

  it('merges sibling sub-segments written at the same time (each retried, none lost)', async () => {
    const a = await assign(`j${n++}`, 3, 'a', 1);
    const outs = await Promise.all([0, 1, 2, 3, 4, 5].map((sub) => updateCheckpointFenced(e.client, keys, a, markDone(sub, 1))));
    expect(outs.every((o) => o.ok)).toBe(true);
    const read = await readCheckpoint(e.client, keys, a.jobId, 3);
    expect(read?.value.done.map((d) => d.sub).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(read?.value.transcodedByAttempt).toEqual({ '1': 6 });
  });

  it('is fenced once the segment is reassigned: no write, and "no change" is fenced too', async () => {
    const a = await assign(`j${n++}`, 1, 'a', 1);
    await updateCheckpointFenced(e.client, keys, a, markDone(0, 1));
    const b = await assign(a.jobId, 1, 'b', 2);
    expect(await ownerHolds(e.client, keys, a)).toBe(false);
    expect(await ownerHolds(e.client, keys, b)).toBe(true);
    expect(await updateCheckpointFenced(e.client, keys, a, markDone(1, 1))).toEqual({ ok: false, reason: 'fenced' });
    expect(await updateCheckpointFenced(e.client, keys, a, () => undefined)).toEqual({ ok: false, reason: 'fenced' });
    expect((await readCheckpoint(e.client, keys, a.jobId, 1))?.value.done.map((d) => d.sub)).toEqual([0]);
    // The new owner writes on.
    expect(await updateCheckpointFenced(e.client, keys, b, markDone(1, 2))).toMatchObject({ ok: true, changed: true });
  });

  it('SegmentFence turns fenced into FENCED (not retryable), counts it and calls onRejected', async () => {
    const a = await assign(`j${n++}`, 2, 'a', 1);
    let rejected = 0;
    const f = new SegmentFence(e.client, keys, a.jobId, 2, a.ownerRevision, () => rejected++);
    expect((await f.updateCheckpoint(markDone(0, 1))).done).toHaveLength(1);
    await f.assertOwner();
    await assign(a.jobId, 2, 'b', 2);
    await expect(f.updateCheckpoint(markDone(1, 1))).rejects.toMatchObject({ code: 'FENCED', retryable: false });
    await expect(f.assertOwner()).rejects.toMatchObject({ code: 'FENCED' });
    expect(f.rejections).toBe(2);
    expect(rejected).toBe(2);
    await expect(new SegmentFence(e.client, keys, `j${n++}`, 0, 1).updateCheckpoint(() => undefined)).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});
