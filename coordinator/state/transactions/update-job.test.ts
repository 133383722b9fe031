import { beforeAll, describe, expect, it } from 'vitest';
import { becomeLeader, depose, queuedJob, randomKeys, useEtcd } from '../../../test/support/etcd-fixtures.js';
import type { LeaderFence } from '../../../common/etcd-tx/compare.js';
import { JobStore } from '../job-store.js';
import type { JobRecord } from '../job-model.js';
import { createJob } from './create-job.js';
import { updateJob } from './update-job.js';

describe('updateJob (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  let fence: LeaderFence;

  beforeAll(async () => {
    fence = await becomeLeader(e.client, keys);
  });

  const submit = async (o: Parameters<typeof queuedJob>[1] = {}): Promise<JobRecord> => {
    const rec = queuedJob(keys, o);
    await createJob(e.client, keys, rec, undefined);
    return rec;
  };

  it('writes the record with updatedAtMs, extra puts and the state index in one transaction', async () => {
    const rec = await submit();
    const before = Date.now();
    const out = await updateJob(e.client, keys, rec.id, (r) => ({ ...r, state: 'PREPARING', updatedAtMs: 0 }), { fence, extraPuts: [[keys.jobPlan(rec.id), '{}']] });
    expect(out).toMatchObject({ ok: true, changed: true, rec: { state: 'PREPARING' }, previous: { state: 'QUEUED' } });
    expect(out.ok && out.rec.updatedAtMs).toBeGreaterThanOrEqual(before);
    const rev = out.ok ? out.revision : '';
    for (const k of [keys.job(rec.id), keys.jobPlan(rec.id), keys.jobStateEntry('PREPARING', rec.id)]) expect((await e.client.get(k).exec()).kvs[0]?.mod_revision).toBe(rev);
    expect(await e.client.get(keys.jobStateEntry('QUEUED', rec.id)).exists()).toBe(false);
  });

  it('answers no change with the record and its revision, and missing for an unknown job', async () => {
    const rec = await submit();
    const kv = (await e.client.get(keys.job(rec.id)).exec()).kvs[0]!;
    expect(await updateJob(e.client, keys, rec.id, () => undefined)).toMatchObject({ ok: true, changed: false, rec: { id: rec.id }, revision: kv.mod_revision });
    expect(await updateJob(e.client, keys, 'no-such-job', (r) => r)).toEqual({ ok: false, reason: 'missing' });
  });

  it('queues a finished job for archiving and writes the webhook event, with the state, atomically', async () => {
    const rec = await submit({ spec: { webhookUrl: 'https://hooks.example/x' } });
    const out = await updateJob(e.client, keys, rec.id, (r) => ({ ...r, state: 'FAILED', finishedAtMs: 1234, errorCode: 'TRANSCODE_FAILED' }), { fence });
    expect(out).toMatchObject({ ok: true, changed: true });
    expect(await e.client.get(keys.finishedEntry(1234, rec.id)).string()).toBe(rec.id);
    const events = await e.client.getAll().prefix(keys.outboxJob(rec.id)).keys();
    expect(events).toEqual([keys.outboxEntry(rec.id, 1, 'FAILED')]);
  });

  it('is fenced for a deposed leader (nothing written), and JobStore answers NOT_LEADER', async () => {
    const rec = await submit();
    const old = fence;
    fence = await depose(e.client, keys);
    expect(await updateJob(e.client, keys, rec.id, (r) => ({ ...r, state: 'PREPARING' }), { fence: old })).toEqual({ ok: false, reason: 'fenced' });
    expect((JSON.parse((await e.client.get(keys.job(rec.id)).string())!) as JobRecord).state).toBe('QUEUED');
    const store = new JobStore(e.client, keys, 100);
    await expect(store.transition(rec.id, 'PREPARING', 'x', {}, old)).rejects.toMatchObject({ code: 'NOT_LEADER', retryable: false });
    expect(store.fencingRejections).toBe(1);
    await expect(store.transition('no-such-job', 'PREPARING', 'x', {}, fence)).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' });
  });

  it('JobStore: onFinished fires once, when a transaction moves the job into a final state', async () => {
    const rec = await submit();
    const store = new JobStore(e.client, keys, 100);
    const finished: string[] = [];
    store.onFinished = (r) => finished.push(`${r.id}:${r.state}`);
    await store.transition(rec.id, 'PREPARING', 'claimed', {}, fence);
    expect(finished).toEqual([]);
    await store.cancel(rec.id, 'user');
    await store.cancel(rec.id, 'user again');
    await expect(store.transition(rec.id, 'RUNNING', 'late', {}, fence)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(finished).toEqual([`${rec.id}:CANCELLED`]);
  });

  it('concurrent updates all land (the compare-and-swap retries)', async () => {
    const rec = await submit();
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        updateJob(e.client, keys, rec.id, (r) => ({ ...r, history: [...r.history, { atMs: i, scope: 'test', state: 'x', nodeId: '', attempt: i, reason: `w${i}` }] })),
      ),
    );
    const final = JSON.parse((await e.client.get(keys.job(rec.id)).string())!) as JobRecord;
    expect(
      final.history
        .filter((h) => h.scope === 'test')
        .map((h) => h.attempt)
        .sort(),
    ).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });
});
