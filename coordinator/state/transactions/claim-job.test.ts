import { beforeAll, describe, expect, it } from 'vitest';
import { becomeLeader, depose, queuedJob, randomKeys, useEtcd } from '../../../test/support/etcd-fixtures.js';
import type { LeaderFence } from '../../../common/etcd-tx/compare.js';
import { JobStore } from '../job-store.js';
import type { JobRecord } from '../job-model.js';
import { claimJob } from './claim-job.js';
import { createJob } from './create-job.js';

describe('claimJob (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();
  let fence: LeaderFence;

  beforeAll(async () => {
    fence = await becomeLeader(e.client, keys);
  });

  const submit = async (): Promise<JobRecord> => {
    const rec = queuedJob(keys);
    await createJob(e.client, keys, rec, undefined);
    return rec;
  };
  const read = async (id: string): Promise<JobRecord> => JSON.parse((await e.client.get(keys.job(id)).string())!) as JobRecord;

  it('moves QUEUED to PREPARING, drops the queue entry and moves the state index, in one transaction', async () => {
    const rec = await submit();
    const out = await claimJob(e.client, keys, rec.queueKey, rec.id, fence, 100);
    expect(out).toMatchObject({ ok: true, rec: { state: 'PREPARING', stage: 'probing and splitting the input' } });
    const kv = (await e.client.get(keys.job(rec.id)).exec()).kvs[0]!;
    expect(out.ok && out.revision).toBe(kv.mod_revision);
    expect(await e.client.get(rec.queueKey).exists()).toBe(false);
    expect(await e.client.get(keys.jobStateEntry('QUEUED', rec.id)).exists()).toBe(false);
    expect((await e.client.get(keys.jobStateEntry('PREPARING', rec.id)).exec()).kvs[0]?.mod_revision).toBe(kv.mod_revision);
    expect((await read(rec.id)).history.at(-1)).toMatchObject({ state: 'PREPARING', reason: 'picked up by the scheduler' });
  });

  it('answers not-queued for a job already claimed, cancelled or gone, and deletes the stale queue entry', async () => {
    const rec = await submit();
    await claimJob(e.client, keys, rec.queueKey, rec.id, fence, 100);
    await e.client.put(rec.queueKey).value(rec.id); // a stale entry
    expect(await claimJob(e.client, keys, rec.queueKey, rec.id, fence, 100)).toEqual({ ok: false, reason: 'not-queued' });
    expect(await e.client.get(rec.queueKey).exists()).toBe(false);
    expect((await read(rec.id)).history.filter((h) => h.state === 'PREPARING')).toHaveLength(1);

    const cancelled = await submit();
    await new JobStore(e.client, keys, 100).cancel(cancelled.id, 'user');
    await e.client.put(cancelled.queueKey).value(cancelled.id);
    expect(await claimJob(e.client, keys, cancelled.queueKey, cancelled.id, fence, 100)).toEqual({ ok: false, reason: 'not-queued' });
    expect((await read(cancelled.id)).state).toBe('CANCELLED');

    await e.client.put(`${keys.queue()}9/x-nobody`).value('nobody');
    expect(await claimJob(e.client, keys, `${keys.queue()}9/x-nobody`, 'nobody', fence, 100)).toEqual({ ok: false, reason: 'not-queued' });
    expect(await e.client.get(`${keys.queue()}9/x-nobody`).exists()).toBe(false);
  });

  it('is fenced for a deposed leader: the job stays QUEUED with its queue entry for the next leader', async () => {
    const rec = await submit();
    const old = fence;
    fence = await depose(e.client, keys);
    expect(await claimJob(e.client, keys, rec.queueKey, rec.id, old, 100)).toEqual({ ok: false, reason: 'fenced' });
    expect((await read(rec.id)).state).toBe('QUEUED');
    expect(await e.client.get(rec.queueKey).string()).toBe(rec.id);
    const store = new JobStore(e.client, keys, 100);
    expect(await store.claim(rec.queueKey, rec.id, old)).toBeUndefined();
    expect(store.fencingRejections).toBe(1);
    expect((await store.claim(rec.queueKey, rec.id, fence))?.state).toBe('PREPARING');
  });
});
