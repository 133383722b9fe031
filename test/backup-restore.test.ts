import { execFile, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, waitFor } from '../deploy/local-cluster.js';
import { TesseraClient } from '../sdk/client.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import type { ReconcileReport } from '../ops/reconcile.js';
import { fixture, startTestCluster, type TestCluster } from './helpers.js';
import { nodeArgs } from '../common/node-entry.js';

const run = promisify(execFile);

/**
 * Disaster recovery end to end: in the middle of a batch of jobs, `tessera admin backup` takes
 * an etcd snapshot to S3; more jobs are accepted after it; then etcd is wiped (every process
 * killed, the data directory deleted), `tessera admin restore` rebuilds it from S3, `tessera
 * admin reconcile` compares it with the acceptance journal, and the cluster restarts.
 * Needs etcdctl (Debian's etcd-client, installed by .ci/run) for `snapshot restore`.
 */
const restoreTool = ['etcdutl', 'etcdctl'].find((c) => spawnSync(c, ['version'], { stdio: 'ignore' }).status === 0);
if (!restoreTool) process.stdout.write('test/backup-restore.test.ts skipped: neither etcdutl nor etcdctl (apt-get install etcd-client; .ci/run installs it)\n');

const LADDER = [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast' }];
const terminal = new Set([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED]);

describe.skipIf(!restoreTool)('backup and restore of etcd', () => {
  let t: TestCluster;

  beforeAll(async () => {
    t = await startTestCluster({ nodes: 2, coordinatorEnv: { MAX_CONCURRENT_JOBS: '2' } });
  });

  afterAll(async () => {
    await t?.close();
  });

  const admin = async (...args: string[]): Promise<string> => {
    const env = {
      ...process.env,
      ETCD_ENDPOINTS: t.cluster.etcdEndpoints.join(','),
      S3_ENDPOINT: t.cluster.s3Endpoint,
      S3_BUCKET: t.cluster.bucket,
      S3_ACCESS_KEY_ID: 'S3RVER',
      S3_SECRET_ACCESS_KEY: 'S3RVER',
      LOG_LEVEL: 'warn',
    };
    const { stdout } = await run(process.execPath, [...nodeArgs('cli/cli.ts'), 'admin', ...args], { cwd: REPO_ROOT, env, timeout: 60_000 });
    return stdout;
  };

  const succeededLogLines = (jobId: string): number => {
    let n = 0;
    const logs = join(t.dir, 'logs');
    for (const f of readdirSync(logs).filter((x) => x.startsWith('coordinator-'))) {
      for (const line of readFileSync(join(logs, f), 'utf8').split('\n')) if (line.includes(jobId) && line.includes('"job succeeded"')) n++;
    }
    return n;
  };

  it('every job accepted before the snapshot SUCCEEDS exactly once; later ones are reported lost', async () => {
    const clip = await fixture(t.inputDir, 'clip-6s-240p.mp4', { seconds: 6, width: 426, height: 240, fps: 25 });
    const submit = async (): Promise<string> => (await t.client.submit({ inputUri: clip, ladder: LADDER })).jobId;

    // A batch of 4; two run at a time. Snapshot once the first has made progress.
    const before = [await submit(), await submit(), await submit(), await submit()];
    await waitFor(async () => (await t.client.get(before[0]!)).progress > 0, 60_000, 'the batch to start');
    // Job states read just before and just after the snapshot: a job that finished in between may
    // be either finished or not in the snapshot (the report may count it either way).
    const atBefore = new Map<string, Job>();
    for (const id of before) atBefore.set(id, await t.client.get(id));
    const b0 = Date.now();
    const backupOut = await admin('backup', '--json');
    const backupMs = Date.now() - b0;
    const backup = JSON.parse(backupOut) as { info: { key: string; bytes: number; takenAtMs: number } };
    const atSnapshot = new Map<string, Job>();
    for (const id of before) atSnapshot.set(id, await t.client.get(id));
    const after = [await submit(), await submit()];

    // Work goes on after the snapshot: wait until a job the snapshot holds unfinished has succeeded.
    const unfinishedAtSnapshot = before.filter((id) => !terminal.has(atSnapshot.get(id)!.state));
    expect(unfinishedAtSnapshot.length).toBeGreaterThanOrEqual(2);
    await waitFor(async () => (await t.client.get(unfinishedAtSnapshot[0]!)).state === JobState.JOB_STATE_SUCCEEDED, 90_000, 'a job to finish after the snapshot');
    const beforeDisaster = new Map<string, Job>();
    for (const id of [...before, ...after]) beforeDisaster.set(id, await t.client.get(id));

    // Disaster: every process gone, etcd's data deleted.
    const member = t.cluster.etcdMember('etcd0');
    for (const p of [...t.cluster.procs.values()].map((x) => x.info).filter((i) => i.role !== 's3')) {
      await t.cluster.stopProcess(p.name, 'SIGKILL');
    }
    await rm(member.dataDir, { recursive: true, force: true });
    t.client.close();

    // Recovery: restore the data dir from S3, start etcd, reconcile, start the cluster.
    const r0 = Date.now();
    const restoreOut = await admin(
      'restore',
      '--from',
      'latest',
      '--data-dir',
      member.dataDir,
      '--name',
      'etcd0',
      '--initial-cluster',
      `etcd0=${member.peerUrl}`,
      '--initial-advertise-peer-urls',
      member.peerUrl,
    );
    expect(restoreOut).toContain(backup.info.key);
    await t.cluster.restartEtcd('etcd0');
    const report = JSON.parse(await admin('reconcile', '--requeue-lost', '--json')) as ReconcileReport;
    const reconciledMs = Date.now() - r0;
    await t.cluster.startUploader();
    const coordinator = await t.cluster.startCoordinator();
    await t.cluster.addNode();
    await t.cluster.addNode();
    const servingMs = Date.now() - r0;
    t.client = new TesseraClient({ addresses: [t.cluster.coordinators[t.cluster.coordinators.length - 1]!], timeoutMs: 20_000 });

    // The report: jobs accepted after the snapshot are lost (and queued again: --requeue-lost);
    // jobs finished after it are marked; the rest resume.
    expect(report.snapshotTakenAtMs).toBe(backup.info.takenAtMs);
    expect(report.lost.map((l) => l.id).sort()).toEqual([...after].sort());
    for (const l of report.lost) expect(l.requeued || l.finishedState === 'SUCCEEDED').toBe(true);
    const finishedAfter = before.filter((id) => !terminal.has(atSnapshot.get(id)!.state) && beforeDisaster.get(id)!.state === JobState.JOB_STATE_SUCCEEDED);
    // Ambiguous: terminal at the snapshot but not when read just before it; or FINALIZING when the
    // cluster went down (its archive may have reached S3 without SUCCEEDED being written: the
    // reconciler then finds it finished after the snapshot).
    const ambiguous = before.filter((id) => (terminal.has(atSnapshot.get(id)!.state) && !terminal.has(atBefore.get(id)!.state)) || beforeDisaster.get(id)!.state === JobState.JOB_STATE_FINALIZING);
    const reported = report.finishedAfterSnapshot.map((f) => f.id);
    for (const id of finishedAfter) expect(reported, `${id} finished after the snapshot`).toContain(id);
    for (const id of reported) expect([...finishedAfter, ...ambiguous], `${id} reported finished after the snapshot`).toContain(id);
    expect(finishedAfter.length).toBeGreaterThanOrEqual(1);
    // Unfinished when the cluster went down: resumed, except a FINALIZING job whose archive had
    // reached S3 (reported above as finished after the snapshot).
    expect(report.resumed.sort()).toEqual(before.filter((id) => !terminal.has(beforeDisaster.get(id)!.state) && !(ambiguous.includes(id) && reported.includes(id))).sort());

    // Every job ends SUCCEEDED, each run to success exactly once (one "job succeeded" in all
    // coordinator logs, before and after the disaster; one SUCCEEDED in its trail).
    const finals = new Map<string, Job>();
    for (const id of [...before, ...after.filter((id) => report.lost.find((l) => l.id === id)?.requeued)]) finals.set(id, await t.client.wait(id));
    const allDoneMs = Date.now() - r0;
    for (const [id, j] of finals) {
      expect(j.state, id).toBe(JobState.JOB_STATE_SUCCEEDED);
      expect(j.history.filter((h) => h.scope === 'job' && h.state === 'SUCCEEDED').length, id).toBe(1);
      expect(succeededLogLines(id), id).toBe(1);
      await t.s3.send(new HeadObjectCommand({ Bucket: j.result!.bucket, Key: j.result!.key }));
    }
    // A job that had finished before the disaster keeps the archive it made then.
    for (const id of finishedAfter) expect(finals.get(id)!.result!.sha256).toBe(beforeDisaster.get(id)!.result!.sha256);
    process.stdout.write(
      `backup: ${backup.info.bytes} bytes in ${backupMs} ms (CLI start included); restore + etcd start + reconcile ${reconciledMs} ms; cluster serving ${servingMs} ms after the restore began; every job SUCCEEDED ${allDoneMs} ms after it (coordinator ${coordinator}); lost ${report.lost.length}, finished after the snapshot ${report.finishedAfterSnapshot.length}, resumed ${report.resumed.length}\n`,
    );
  });
});
