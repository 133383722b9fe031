import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { createLogger } from '../common/logger.js';
import { alive } from '../deploy/local-cluster.js';
import { ResilientWatch } from '../common/watch.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { startEtcdServer, type EtcdServer } from './etcd-server.js';
import { ffmpegChildren, fixture, nodeRunningFfmpeg, startTestCluster, type TestCluster } from './helpers.js';

/** Moves the revision on (other keys), then compacts everything up to the latest revision. */
async function compactToLatest(etcd: Etcd3, bumps = 20): Promise<number> {
  for (let i = 0; i < bumps; i++) await etcd.put(`/bump/${i}`).value(String(i));
  const rev = (await etcd.maintenance.status()).header.revision;
  await etcd.kv.compact({ revision: rev, physical: true });
  return Number(rev);
}

describe('watches past compaction (real etcd, restarted)', () => {
  let e: EtcdServer;
  beforeAll(async () => {
    e = await startEtcdServer();
  });
  afterAll(async () => {
    await e?.stop();
  });

  it('an etcd3 watch resuming past a compacted revision is cancelled; ResilientWatch watches again and asks for a re-list', async () => {
    // The raw library watch, as the coordinator used it: after the restart it is cancelled with
    // an error event (without a listener that event would crash the process).
    const raw = await e.client.watch().key('/w/raw').create();
    const rawError = new Promise<Error>((resolve) => raw.on('error', resolve));
    const seen: string[] = [];
    let resyncs = 0;
    const w = await ResilientWatch.open(e.client, { key: '/w/key' }, { put: (kv) => seen.push(kv.value.toString()), resync: () => resyncs++ }, createLogger('test', 'silent'));
    await e.client.put('/w/key').value('before');
    await expect.poll(() => seen).toEqual(['before']);

    await compactToLatest(e.client);
    await e.restart();
    expect((await rawError).message).toMatch(/Watcher canceled/);
    await expect.poll(() => w.rewatches, { timeout: 15_000 }).toBe(1);
    expect(resyncs).toBe(1);
    await e.client.put('/w/key').value('after');
    await expect.poll(() => seen, { timeout: 5_000 }).toEqual(['before', 'after']);
    await w.cancel();
  });
});

describe('a cluster whose etcd restarts after compacting to its latest revision', () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster({ nodes: 2, coordinators: 2 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('keeps every process alive and registered, and a later cancel still stops ffmpeg', async () => {
    const clip = await fixture(t.inputDir, 'clip-24s-360p.mp4', { seconds: 24, width: 640, height: 360, fps: 30 });
    // veryslow: the encode outlasts the compaction, the restart and the checks (a medium encode of
    // this clip takes about 4 s here).
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryslow' }] });
    for await (const j of t.client.watch(jobId)) if (j.state === JobState.JOB_STATE_RUNNING && j.segments.some((s) => s.framesDone > 0)) break;

    const etcd = t.cluster.client();
    const names = ['coordinator-0', 'coordinator-1', 'node-0', 'node-1', 'uploader-0'];
    const pids = names.map((n) => t.cluster.pid(n)!);
    // Every quiet watch (leader key, drain marks, the job's own key) now resumes from a
    // compacted revision.
    const compacted = await compactToLatest(etcd);
    await t.cluster.restartEtcd('etcd0');
    const revisionAfter = Number((await etcd.maintenance.status()).header.revision);
    expect(revisionAfter).toBeGreaterThanOrEqual(compacted);

    // The transcode goes on (or is resumed), then the user cancels: every ffmpeg stops.
    const busy = await nodeRunningFfmpeg(t.cluster, ['node-0', 'node-1'], 30_000);
    const cancelled = await t.client.cancel(jobId);
    expect(cancelled.state).toBe(JobState.JOB_STATE_CANCELLED);
    await expect.poll(() => ffmpegChildren(t.cluster.pid(busy)!).length, { timeout: 15_000, interval: 200 }).toBe(0);
    await expect.poll(() => ffmpegChildren(t.cluster.pid(busy === 'node-0' ? 'node-1' : 'node-0')!).length, { timeout: 15_000, interval: 200 }).toBe(0);

    // Nobody crashed: the same processes, all registered, one leader.
    expect(names.map((n) => t.cluster.pid(n))).toEqual(pids);
    for (const pid of pids) expect(alive(pid)).toBe(true);
    expect((await t.client.listNodes()).map((n) => n.id).sort()).toEqual(['node-0', 'node-1']);
    expect(['coordinator-0', 'coordinator-1']).toContain((await t.client.clusterStatus()).leaderId);
    // The watches logged that they ended and watched again (no silent death).
    expect((await t.client.get(jobId)).state).toBe(JobState.JOB_STATE_CANCELLED);
  });
});
