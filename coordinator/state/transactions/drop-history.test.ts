import { describe, expect, it } from 'vitest';
import { queuedJob, randomKeys, useEtcd } from '../../../test/support/etcd-fixtures.js';
import { toHistoryRecord, type HistoryRecord } from '../job-model.js';
import { JobStore } from '../job-store.js';
import { dropHistoryRecord } from './drop-history.js';

describe('dropHistoryRecord (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  const archived = async (idem: string, finishedAtMs = 1000): Promise<HistoryRecord> => {
    const rec = queuedJob(keys, { state: 'SUCCEEDED', finishedAtMs, spec: { idempotencyKey: idem } });
    const h = toHistoryRecord(rec, finishedAtMs);
    await e.client.put(keys.historyEntry(rec.id)).value(JSON.stringify(h));
    await e.client.put(keys.jobStateEntry('SUCCEEDED', rec.id)).value('');
    if (idem) await e.client.put(keys.idempotency(idem)).value(JSON.stringify({ jobId: rec.id, specHash: rec.specHash }));
    return h;
  };

  it('drops the record, its state entry and its idempotency key; a second drop answers false', async () => {
    const h = await archived('k1');
    expect(await dropHistoryRecord(e.client, keys, h)).toBe(true);
    expect(await e.client.get(keys.historyEntry(h.id)).exists()).toBe(false);
    expect(await e.client.get(keys.jobStateEntry('SUCCEEDED', h.id)).exists()).toBe(false);
    expect(await e.client.get(keys.idempotency('k1')).exists()).toBe(false);
    expect(await dropHistoryRecord(e.client, keys, h)).toBe(false);
  });

  it('keeps an idempotency key that names another job by now', async () => {
    const h = await archived('k2');
    await e.client.put(keys.idempotency('k2')).value(JSON.stringify({ jobId: 'newer', specHash: 'x' }));
    expect(await dropHistoryRecord(e.client, keys, h)).toBe(true);
    expect(JSON.parse((await e.client.get(keys.idempotency('k2')).string())!)).toEqual({ jobId: 'newer', specHash: 'x' });
  });

  it('JobStore.dropExpiredHistory drops past the count limit, oldest first', async () => {
    const fresh = randomKeys();
    const store = new JobStore(e.client, fresh, 100);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const rec = queuedJob(fresh, { id: `j${i}`, state: 'SUCCEEDED', finishedAtMs: 1000 + i });
      await e.client.put(fresh.historyEntry(rec.id)).value(JSON.stringify(toHistoryRecord(rec, 1)));
      ids.push(rec.id);
    }
    expect(await store.dropExpiredHistory({ maxJobs: 1, maxAgeMs: 0, limit: 10 })).toBe(3);
    expect(await e.client.getAll().prefix(fresh.history()).keys()).toEqual([fresh.historyEntry('j3')]);
  });
});
