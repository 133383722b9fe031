import { describe, expect, it } from 'vitest';
import { queuedJob, randomKeys, useEtcd } from '../../../test/support/etcd-fixtures.js';
import { JobStore } from '../job-store.js';
import { createJob } from './create-job.js';

describe('createJob (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  it('writes the record, its queue entry and its state entry in one transaction', async () => {
    const rec = queuedJob(keys);
    const out = await createJob(e.client, keys, rec, undefined);
    expect(out).toMatchObject({ ok: true, created: true, jobId: rec.id });
    const kv = (await e.client.get(keys.job(rec.id)).exec()).kvs[0]!;
    expect(out.ok && out.created && out.revision).toBe(kv.create_revision);
    expect(await e.client.get(rec.queueKey).string()).toBe(rec.id);
    expect((await e.client.get(keys.jobStateEntry('QUEUED', rec.id)).exec()).kvs[0]?.mod_revision).toBe(kv.create_revision);
  });

  it('refuses an id that exists (with or without an idempotency key) and leaves the record alone', async () => {
    const rec = queuedJob(keys);
    await createJob(e.client, keys, rec, undefined);
    const again = { ...rec, stage: 'changed' };
    expect(await createJob(e.client, keys, again, undefined)).toEqual({ ok: false, reason: 'exists', jobId: rec.id });
    expect(await createJob(e.client, keys, again, `fresh-${rec.id}`)).toEqual({ ok: false, reason: 'exists', jobId: rec.id });
    expect(JSON.parse((await e.client.get(keys.job(rec.id)).string())!)).toMatchObject({ stage: rec.stage });
    expect(await e.client.get(keys.idempotency(`fresh-${rec.id}`)).exists()).toBe(false);
  });

  it('answers a retried submit (same key, same spec) with the first job, and refuses another spec', async () => {
    const first = queuedJob(keys);
    expect(await createJob(e.client, keys, first, 'idem-1')).toMatchObject({ ok: true, created: true });
    const retry = queuedJob(keys);
    expect(await createJob(e.client, keys, retry, 'idem-1')).toEqual({ ok: true, created: false, jobId: first.id });
    expect(await e.client.get(keys.job(retry.id)).exists()).toBe(false);
    const other = queuedJob(keys, { spec: { inputUri: 's3://in/other.mp4' } });
    expect(await createJob(e.client, keys, other, 'idem-1')).toEqual({ ok: false, reason: 'conflict', jobId: first.id });
    expect(await e.client.get(keys.job(other.id)).exists()).toBe(false);
    // JobStore's answers for the same outcomes.
    const store = new JobStore(e.client, keys, 100);
    expect(await store.create(queuedJob(keys), 'idem-1')).toEqual({ job: { id: first.id }, created: false });
    await expect(store.create(queuedJob(keys, { spec: { inputUri: 's3://in/third.mp4' } }), 'idem-1')).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    expect(await store.create(first, undefined)).toEqual({ job: { id: first.id }, created: false });
  });

  it('frees a key whose job is gone from etcd (past retention) and creates the new job under it', async () => {
    const gone = queuedJob(keys);
    await e.client.put(keys.idempotency('idem-2')).value(JSON.stringify({ jobId: gone.id, specHash: gone.specHash }));
    const rec = queuedJob(keys);
    expect(await createJob(e.client, keys, rec, 'idem-2')).toMatchObject({ ok: true, created: true, jobId: rec.id });
    expect(JSON.parse((await e.client.get(keys.idempotency('idem-2')).string())!)).toEqual({ jobId: rec.id, specHash: rec.specHash });
  });

  it('still answers with a job that only history holds', async () => {
    const archived = queuedJob(keys);
    await e.client.put(keys.idempotency('idem-3')).value(JSON.stringify({ jobId: archived.id, specHash: archived.specHash }));
    await e.client.put(keys.historyEntry(archived.id)).value(JSON.stringify({ id: archived.id }));
    expect(await createJob(e.client, keys, queuedJob(keys), 'idem-3')).toEqual({ ok: true, created: false, jobId: archived.id });
  });
});
