import { Etcd3 } from 'etcd3';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, fixture, startTestCluster, type TestCluster } from './helpers.js';

describe('a 3-member etcd cluster', () => {
  let t: TestCluster;
  beforeAll(async () => {
    t = await startTestCluster({ nodes: 2, etcdMembers: 3 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('loses its leader mid-job and the job still succeeds', async () => {
    const clip = await fixture(t.inputDir, 'clip-10s-360p.mp4', { seconds: 10, width: 640, height: 360, fps: 30 });
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'medium' }] });
    for await (const j of t.client.watch(jobId)) if (j.segments.some((s) => s.framesDone > 0)) break;
    // Which member leads? Ask each one.
    let leaderName = '';
    for (const [i, ep] of t.cluster.etcdEndpoints.entries()) {
      const c = new Etcd3({ hosts: ep, dialTimeout: 2000 });
      try {
        const st = await c.maintenance.status();
        if (st.header.member_id === st.leader) leaderName = `etcd${i}`;
      } finally {
        c.close();
      }
    }
    expect(leaderName).toMatch(/^etcd\d$/);
    t.cluster.signal(leaderName, 'SIGKILL');
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const a = await checkArchive(t.s3, job, await mkdtemp(join(tmpdir(), 'etcd3-')));
    expect(a.renditions[0]!.frames).toBe(300);
    expect(a.renditions[0]!.sha256).toBe(a.renditions[0]!.manifestSha256);
  });
});
