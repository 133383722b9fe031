import { JobResult } from '../../../proto/gen/tessera/v1/types.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { becomeLeader, depose, queuedJob, randomKeys, plannedFields, useEtcd } from '../../../test/support/etcd-fixtures.js';
import type { LeaderFence } from '../../../common/etcd-tx/compare.js';
import type { CheckpointRecord } from '../../../common/records.js';
import { JobStore } from '../job-store.js';
import type { JobRecord, SegmentRecord } from '../job-model.js';
import { createJob } from './create-job.js';
import { reopenSubSegments } from './reopen-sub-segments.js';
import { updateJob } from './update-job.js';

describe('reopenSubSegments (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  let fence: LeaderFence;

  beforeAll(async () => {
    fence = await becomeLeader(e.client, keys);
  });

  /** A FINALIZING job whose segments 0 and 1 are DONE with sub-segments 0..2 each in their checkpoints. */
  const finalizing = async (): Promise<JobRecord> => {
    const rec = queuedJob(keys);
    await createJob(e.client, keys, rec, undefined);
    await updateJob(e.client, keys, rec.id, (r) => ({ ...r, ...plannedFields(), state: 'FINALIZING' }));
    for (const i of [0, 1]) {
      const seg: SegmentRecord = { index: i, state: 'DONE', nodeId: `n${i}`, attempt: 1, startSec: 0, endSec: 6, frames: 180 };
      const cp: CheckpointRecord = { boundaries: [0, 2, 4, 6], done: [0, 1, 2].map((sub) => ({ sub, attempt: 1, nodeId: `n${i}`, frames: 60 })), transcodedByAttempt: { '1': 3 } };
      await e.client.put(keys.segment(rec.id, i)).value(JSON.stringify(seg));
      await e.client.put(keys.checkpoint(rec.id, i)).value(JSON.stringify(cp));
    }
    return rec;
  };
  const read = async <T>(k: string): Promise<T> => JSON.parse((await e.client.get(k).string())!) as T;

  it('takes the lost sub-segments out of their checkpoints, reopens their segments and the job, in one transaction', async () => {
    const rec = await finalizing();
    const lost = new Map([
      [0, [1]],
      [1, [0, 2]],
      [7, [0]], // no such segment: skipped
    ]);
    const out = await reopenSubSegments(e.client, keys, rec.id, lost, 'up-2', 'uploader up-2 lost parts', fence, 100);
    expect(out).toMatchObject({ ok: true, invalidated: 3 });
    expect((await read<CheckpointRecord>(keys.checkpoint(rec.id, 0))).done.map((d) => d.sub)).toEqual([0, 2]);
    expect((await read<CheckpointRecord>(keys.checkpoint(rec.id, 1))).done.map((d) => d.sub)).toEqual([1]);
    expect((await read<SegmentRecord>(keys.segment(rec.id, 1))).state).toBe('PENDING');
    const job = await read<JobRecord>(keys.job(rec.id));
    expect(job).toMatchObject({ state: 'RUNNING', uploaderId: 'up-2', stage: 'transcoding lost parts again' });
    expect(job.history.slice(-3).map((h) => `${h.scope} ${h.state}`)).toEqual(['segment/0 PENDING', 'segment/1 PENDING', 'job RUNNING']);
    const rev = out.ok ? out.revision : '';
    for (const k of [keys.job(rec.id), keys.checkpoint(rec.id, 0), keys.segment(rec.id, 1), keys.jobStateEntry('RUNNING', rec.id)])
      expect((await e.client.get(k).exec()).kvs[0]?.mod_revision).toBe(rev);
  });

  it('reads again when a checkpoint moved meanwhile (compared on every checkpoint it rewrites)', async () => {
    const rec = await finalizing();
    const cpKey = keys.checkpoint(rec.id, 0);
    // A client that, right after reopen's first read of the checkpoint, lets a late agent write
    // add sub-segment 3 to it: the transaction must fail on that checkpoint's revision and read again.
    let reads = 0;
    const racing = new Proxy(e.client, {
      get(target, prop) {
        if (prop === 'get') {
          return (key: string) => {
            const b = target.get(key);
            if (key !== cpKey) return b;
            const exec = b.exec.bind(b);
            b.exec = async () => {
              const res = await exec();
              if (reads++ === 0) {
                const cp = JSON.parse(res.kvs[0]!.value.toString()) as CheckpointRecord;
                await target.put(cpKey).value(JSON.stringify({ ...cp, done: [...cp.done, { sub: 3, attempt: 1, nodeId: 'n0', frames: 60 }] }));
              }
              return res;
            };
            return b;
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const out = await reopenSubSegments(racing, keys, rec.id, new Map([[0, [0]]]), 'up', 'lost', fence, 100);
    expect(reads).toBe(2);
    expect(out).toMatchObject({ ok: true, invalidated: 1 });
    expect((await read<CheckpointRecord>(cpKey)).done.map((d) => d.sub)).toEqual([1, 2, 3]);
  });

  it('refuses a finished job and a deposed leader without writing; JobStore answers CANCELLED and NOT_LEADER', async () => {
    const done = await finalizing();
    await updateJob(e.client, keys, done.id, (r) => ({ ...r, state: 'SUCCEEDED', finishedAtMs: Date.now(), result: JobResult.fromPartial({ key: 'k' }) }));
    expect(await reopenSubSegments(e.client, keys, done.id, new Map([[0, [0]]]), 'up', 'lost', fence, 100)).toEqual({ ok: false, reason: 'finished', state: 'SUCCEEDED' });
    const store = new JobStore(e.client, keys, 100);
    await expect(store.reopenSubSegments(done.id, new Map([[0, [0]]]), 'up', 'lost', fence)).rejects.toMatchObject({ code: 'CANCELLED' });

    const rec = await finalizing();
    const old = fence;
    fence = await depose(e.client, keys);
    expect(await reopenSubSegments(e.client, keys, rec.id, new Map([[0, [0]]]), 'up', 'lost', old, 100)).toEqual({ ok: false, reason: 'fenced' });
    await expect(store.reopenSubSegments(rec.id, new Map([[0, [0]]]), 'up', 'lost', old)).rejects.toMatchObject({ code: 'NOT_LEADER' });
    expect(store.fencingRejections).toBe(1);
    expect((await read<CheckpointRecord>(keys.checkpoint(rec.id, 0))).done).toHaveLength(3);
    expect((await read<JobRecord>(keys.job(rec.id))).state).toBe('FINALIZING');
  });
});
