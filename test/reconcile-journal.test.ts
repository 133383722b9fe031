import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys } from '../common/keys.js';
import { readJsonObject, type FinishedEntry } from '../coordinator/state/journal.js';
import { specHash } from '../coordinator/state/job-model.js';
import { JobStore, stageName } from '../coordinator/state/job-store.js';
import { reconcile } from '../ops/reconcile.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { waitFor } from '../deploy/local-cluster.js';
import { fixture, startTestCluster, type TestCluster } from './helpers.js';

const LADDER = [{ name: '', height: 120, videoBitrateKbps: 150, codec: 'h264', preset: 'ultrafast' }];

/**
 * A restore whose snapshot caught a job QUEUED (no plan yet) that went on to SUCCEED before the
 * disaster: the reconciler marks it SUCCEEDED from the acceptance journal, which must give it
 * the plan a SUCCEEDED record carries. (Found by the backup-and-restore test when the timing put a
 * queued job there; this makes that case certain.)
 */
describe('reconcile after a restore', () => {
  let t: TestCluster;

  beforeAll(async () => {
    t = await startTestCluster({ nodes: 1 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('marks a job the snapshot held QUEUED, and that finished after it, SUCCEEDED with its plan and result from the journal', async () => {
    const clip = await fixture(t.inputDir, 'clip-2s-160p.mp4', { seconds: 2, width: 160, height: 120, fps: 10 });
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    // The coordinator journals the end as it happens (written in the background).
    const journalPrefix = 'journal/';
    let fin: FinishedEntry | undefined;
    await waitFor(async () => (fin = await readJsonObject<FinishedEntry>(t.s3, t.cluster.bucket, `${journalPrefix}finished/${jobId}.json`)) !== undefined, 15_000, 'the finished entry');
    expect(fin!.state).toBe('SUCCEEDED');
    expect(fin!.plan?.cuts.length).toBeGreaterThan(0);

    // The restored etcd (its own prefix here): the job as the snapshot had it, QUEUED, with the
    // snapshot's backup marker from before the job's end.
    const etcd = t.cluster.client();
    const keys = new Keys('/restored/');
    const store = new JobStore(etcd, keys, 500);
    const spec = { ...job.spec! };
    const now = Date.now();
    await store.create(
      {
        id: jobId,
        spec,
        specHash: specHash(spec),
        state: 'QUEUED',
        stage: stageName('QUEUED'),
        createdAtMs: now - 60_000,
        updatedAtMs: now - 60_000,
        queueKey: keys.queueEntry(spec.priority, (now - 60_000).toString(36).padStart(9, '0'), jobId),
        history: [{ atMs: now - 60_000, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'accepted' }],
        timings: {},
      },
      undefined,
    );
    await etcd.put(keys.backupMarker()).value(JSON.stringify({ takenAtMs: now - 30_000 }));

    const report = await reconcile({ etcd, keys, store, s3: t.s3, bucket: t.cluster.bucket, journalPrefix });
    expect(report.finishedAfterSnapshot).toEqual([{ id: jobId, state: 'SUCCEEDED' }]);
    expect(report.resumed).toEqual([]);
    const rec = await store.get(jobId);
    expect(rec?.state).toBe('SUCCEEDED');
    expect(rec?.plan).toEqual(fin!.plan);
    expect(rec?.result?.sha256).toBe(job.result!.sha256);
  });
});
