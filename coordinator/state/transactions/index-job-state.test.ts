import { describe, expect, it } from 'vitest';
import { queuedJob, randomKeys, useEtcd } from '../../../test/support/etcd-fixtures.js';
import { JobStore } from '../job-store.js';
import { indexJobState } from './index-job-state.js';

describe('indexJobState (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  it('indexes a record written before the index, a finished one with its archive queue entry', async () => {
    const running = queuedJob(keys, { state: 'RUNNING' });
    const failed = queuedJob(keys, { state: 'FAILED', finishedAtMs: 4242 });
    for (const r of [running, failed]) await e.client.put(keys.job(r.id)).value(JSON.stringify(r));
    expect(await indexJobState(e.client, keys, running.id)).toBe('indexed');
    expect(await indexJobState(e.client, keys, failed.id)).toBe('indexed');
    expect(await e.client.get(keys.jobStateEntry('RUNNING', running.id)).exists()).toBe(true);
    expect(await e.client.get(keys.finishedEntry(4242, failed.id)).string()).toBe(failed.id);
    expect(await e.client.getAll().prefix(keys.finished()).count()).toBe(1);
    expect(await indexJobState(e.client, keys, running.id)).toBe('present');
    expect(await indexJobState(e.client, keys, 'none')).toBe('gone');
  });

  it('JobStore.ensureStateIndex indexes every record once per cluster', async () => {
    const fresh = randomKeys();
    for (let i = 0; i < 3; i++) {
      const r = queuedJob(fresh, { state: 'PREPARING' });
      await e.client.put(fresh.job(r.id)).value(JSON.stringify(r));
      await e.client.put(fresh.segment(r.id, 0)).value('{}'); // nested keys are not records
    }
    const store = new JobStore(e.client, fresh, 100);
    expect(await store.ensureStateIndex()).toBe(3);
    expect(await e.client.getAll().prefix(fresh.jobState('PREPARING')).count()).toBe(3);
    expect(await store.ensureStateIndex()).toBe(0);
  });
});
