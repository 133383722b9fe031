import { JobResult } from '../../../proto/gen/tessera/v1/types.js';
import { describe, expect, it } from 'vitest';
import { queuedJob, randomKeys, plannedFields, useEtcd } from '../../../test/support/etcd-fixtures.js';
import type { HistoryRecord, JobRecord } from '../job-model.js';
import { archiveJob } from './archive-job.js';
import { createJob } from './create-job.js';
import { updateJob } from './update-job.js';

describe('archiveJob (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  const job = async (state: JobRecord['state']): Promise<JobRecord> => {
    const rec = queuedJob(keys, { spec: { inputUri: 's3://in/secret.mp4?X-Amz-Signature=abc' } });
    await createJob(e.client, keys, rec, undefined);
    if (state !== 'QUEUED')
      await updateJob(e.client, keys, rec.id, (r) => ({ ...r, ...plannedFields(), state, finishedAtMs: 5000, ...(state === 'SUCCEEDED' ? { result: JobResult.fromPartial({ key: 'k' }) } : {}) }));
    await e.client.put(keys.segment(rec.id, 0)).value('{}');
    await e.client.put(keys.checkpoint(rec.id, 0)).value('{}');
    await e.client.put(keys.jobProgress(rec.id)).value('{}');
    await e.client.put(keys.upload(rec.id)).value('{}');
    return rec;
  };

  it('moves a finished job to history and deletes its tree, upload record and finished entry', async () => {
    const rec = await job('SUCCEEDED');
    const finishedKey = keys.finishedEntry(5000, rec.id);
    expect(await e.client.get(finishedKey).string()).toBe(rec.id);
    expect(await archiveJob(e.client, keys, finishedKey, rec.id, 9999)).toBe('archived');
    const h = JSON.parse((await e.client.get(keys.historyEntry(rec.id)).string())!) as HistoryRecord & { archivedAtMs: number };
    expect(h).toMatchObject({ id: rec.id, state: 'SUCCEEDED', finishedAtMs: 5000, archivedAtMs: 9999 });
    expect(h.spec.inputUri).not.toContain('Signature');
    expect(await e.client.getAll().prefix(keys.job(rec.id)).count()).toBe(0);
    expect(await e.client.get(keys.upload(rec.id)).exists()).toBe(false);
    expect(await e.client.get(finishedKey).exists()).toBe(false);
    // The state index entry stays (it now points at history).
    expect(await e.client.get(keys.jobStateEntry('SUCCEEDED', rec.id)).exists()).toBe(true);
  });

  it('leaves a job that is not final (busy), and drops the entry of a job that is gone', async () => {
    const rec = await job('RUNNING');
    expect(await archiveJob(e.client, keys, keys.finishedEntry(1, rec.id), rec.id, 1)).toBe('busy');
    expect(await e.client.get(keys.job(rec.id)).exists()).toBe(true);
    expect(await e.client.get(keys.historyEntry(rec.id)).exists()).toBe(false);

    await e.client.put(keys.finishedEntry(2, 'ghost')).value('ghost');
    expect(await archiveJob(e.client, keys, keys.finishedEntry(2, 'ghost'), 'ghost', 1)).toBe('gone');
    expect(await e.client.get(keys.finishedEntry(2, 'ghost')).exists()).toBe(false);
  });

  it('does not archive a record that changed between its read and its commit', async () => {
    const rec = await job('FAILED');
    const racing = new Proxy(e.client, {
      get(target, prop) {
        if (prop === 'if') {
          return (...args: Parameters<typeof target.if>) => {
            const b = target.if(...args);
            const commit = b.commit.bind(b);
            b.commit = async () => {
              await target.put(keys.job(rec.id)).value(JSON.stringify({ ...rec, state: 'FAILED', stage: 'touched' }));
              return commit();
            };
            return b;
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    expect(await archiveJob(racing, keys, keys.finishedEntry(5000, rec.id), rec.id, 1)).toBe('busy');
    expect(await e.client.get(keys.historyEntry(rec.id)).exists()).toBe(false);
    expect(await e.client.get(keys.segment(rec.id, 0)).exists()).toBe(true);
  });
});
