import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientCache } from '../../common/grpc-clients.js';
import { createLogger } from '../../common/logger.js';
import { startEtcdServer, type EtcdServer } from '../../test/etcd-server.js';
import { queuedJob, randomKeys } from '../../test/support/etcd-fixtures.js';
import { loadConfig } from '../config.js';
import type { JobRecord, JobStateName } from '../state/job-model.js';
import type { RunnerDeps } from '../run/job-runner.js';
import { JobStore } from '../state/job-store.js';
import { LeaderElection } from '../state/leader.js';
import { coordinatorMetrics } from '../metrics.js';
import { NodeRegistry } from '../state/node-registry.js';
import { Scheduler } from './scheduler.js';

/**
 * The scheduler on a real etcd with a real election and store. No uploader is registered, so a
 * runner it launches waits in PREPARING (for an uploader) until it is stopped: what is observed
 * is what the scheduler claims, resumes and stops, not the transcoding.
 */
describe('Scheduler (real etcd)', () => {
  let e: EtcdServer;
  let dir: string;
  const keys = randomKeys();
  const log = createLogger('test', 'silent');
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    e = await startEtcdServer();
    dir = await mkdtemp(join(tmpdir(), 'sched-'));
  });
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop();
    await e?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const coordinator = async (id: string, maxJobs: number): Promise<{ store: JobStore; election: LeaderElection; scheduler: Scheduler }> => {
    const store = new JobStore(e.client, keys, 100);
    const registry = new NodeRegistry(e.client, keys, log, 60_000);
    await registry.start();
    const deps: RunnerDeps = {
      cfg: loadConfig({ MAX_CONCURRENT_JOBS: String(maxJobs) }),
      store,
      registry,
      clients: new ClientCache(),
      s3: {} as S3Client,
      log,
      metrics: coordinatorMetrics(new Registry()),
      encoders: new Set(),
      stagingDir: join(dir, id),
      load: new Map(),
      onFrames: () => undefined,
    };
    const election = new LeaderElection(e.client, keys.election(), id, 2, log);
    const scheduler = new Scheduler(e.client, keys, store, election, deps, log);
    await scheduler.start();
    election.start();
    stops.push(async () => {
      await scheduler.stop();
      await election.resign();
      await registry.stop();
    });
    return { store, election, scheduler };
  };
  const submit = async (store: JobStore, priority: number): Promise<JobRecord> => {
    const rec = queuedJob(keys, { spec: { priority } });
    await store.create(rec, undefined);
    return rec;
  };
  let leader: Awaited<ReturnType<typeof coordinator>> | undefined;
  const states = async (store: JobStore, ids: string[]): Promise<JobStateName[]> => Promise.all(ids.map(async (id) => (await store.get(id))!.state));

  it('claims queued jobs up to MAX_CONCURRENT_JOBS, higher priority first; a cancel frees a slot for the next', async () => {
    const pre = new JobStore(e.client, keys, 100);
    const low = await submit(pre, 0);
    const high = [await submit(pre, 5), await submit(pre, 9)];
    leader = await coordinator('c1', 2);
    const { store, scheduler, election } = leader;
    await expect.poll(() => election.isLeader).toBe(true);
    await expect
      .poll(() =>
        states(
          store,
          high.map((j) => j.id),
        ),
      )
      .toEqual(['PREPARING', 'PREPARING']);
    expect(scheduler.activeJobs).toBe(2);
    expect((await store.get(low.id))?.state).toBe('QUEUED');
    expect(await e.client.get(low.queueKey).exists()).toBe(true);

    await store.cancel(high[0]!.id, 'user');
    await expect.poll(() => store.get(low.id).then((r) => r?.state)).toBe('PREPARING');
    expect(await e.client.get(low.queueKey).exists()).toBe(false);
    await expect.poll(() => scheduler.activeJobs).toBe(2);
    expect(await store.queueDepth()).toBe(0);
  });

  it('stops every runner when deposed, and the next leader resumes the jobs left in flight', async () => {
    const standby = await coordinator('c2', 4);
    expect(standby.election.isLeader).toBe(false);
    // The leader steps down (its lease revoked): 'deposed' stops its runners, the standby is elected.
    const old = leader!;
    await old.election.resign();
    await expect.poll(() => old.scheduler.activeJobs).toBe(0);
    await expect.poll(() => standby.election.isLeader).toBe(true);
    const inFlight = (await Promise.all([...(await collect(standby.store.inFlightIds()))].map(async (id) => ({ id, rec: await standby.store.get(id) })))).filter((j) => j.rec?.state === 'PREPARING');
    expect(inFlight).toHaveLength(2);
    await expect.poll(() => standby.scheduler.activeJobs).toBe(2);
    // Still PREPARING: resumed, not claimed again (no second trail entry).
    for (const j of inFlight) expect((await standby.store.get(j.id))!.history.filter((h) => h.state === 'PREPARING')).toHaveLength(1);
  });
});

async function collect(pages: AsyncGenerator<string[]>): Promise<string[]> {
  const out: string[] = [];
  for await (const p of pages) out.push(...p);
  return out;
}
