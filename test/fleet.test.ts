import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { credentials, loadPackageDefinition, type Client, type ClientDuplexStream } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeRecord } from '../common/records.js';
import { Keys } from '../common/keys.js';
import { checkpointSchema, parseRecord } from '../common/record-schemas.js';
import { signBody } from '../coordinator/api/webhooks.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { fixture, nodeRunningFfmpeg, startTestCluster, type TestCluster } from './helpers.js';
import { logLines, scrapeCounter, subSegmentsRedone } from './faults-helpers.js';

const LADDER = [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'medium' }];
const SECRET = 'test-webhook-secret';

describe('running it as a fleet', () => {
  let t: TestCluster;
  let clip: string;

  beforeAll(async () => {
    t = await startTestCluster({
      nodes: 1,
      // One slot per node: the backlog the autoscaler reads is chunks waiting for a slot.
      slots: 1,
      coordinatorEnv: {
        AUTOSCALER: 'local',
        AUTOSCALER_MIN_NODES: '1',
        AUTOSCALER_MAX_NODES: '3',
        AUTOSCALER_SCALE_UP_STEP: '1',
        AUTOSCALER_IDLE_MS: '3000',
        AUTOSCALER_UP_COOLDOWN_MS: '1500',
        AUTOSCALER_DOWN_COOLDOWN_MS: '3000',
        AUTOSCALER_INTERVAL_MS: '500',
        AUTOSCALER_NODE_SLOTS: '1',
        // MAX_CONCURRENT_JOBS at its default (4): every job runs at once, so the job queue stays
        // empty and the backlog is the chunks waiting for the one slot.
      },
    });
    clip = await fixture(t.inputDir, 'clip-8s-360p.mp4', { seconds: 8, width: 640, height: 360, fps: 30 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('grows the node pool for chunks waiting in running jobs; new nodes take work from them; idle nodes drain', async () => {
    const ids = await Promise.all([1, 2, 3, 4].map(async () => (await t.client.submit({ inputUri: clip, ladder: LADDER })).jobId));
    let peak = 1;
    const watch = (async () => {
      for (;;) {
        const n = (await t.client.listNodes()).length;
        peak = Math.max(peak, n);
        const jobs = await Promise.all(ids.map((id) => t.client.get(id)));
        if (jobs.every((j) => j.state === JobState.JOB_STATE_SUCCEEDED || j.state === JobState.JOB_STATE_FAILED)) return jobs;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const jobs = await watch;
    for (const j of jobs) {
      expect(j.state).toBe(JobState.JOB_STATE_SUCCEEDED);
      expect(j.result!.renditions[0]!.frames).toBe(240);
    }
    expect(peak).toBeGreaterThan(1);
    // Queue empty: idle nodes are drained, their processes leave, down to the minimum.
    const deadline = Date.now() + 60_000;
    while ((await t.client.listNodes()).length > 1) {
      if (Date.now() > deadline) throw new Error('idle nodes were not drained');
      await new Promise((r) => setTimeout(r, 250));
    }
    const status = await t.client.clusterStatus();
    expect(status.autoscalerDecisions.some((d) => d.includes(' up ') && d.includes('queued chunk(s)'))).toBe(true);
    // A node the autoscaler started took work from a job that was already running (work stealing).
    const moved = logLines(t.dir, 'coordinator-0').filter(
      (l) => (l.msg === 'queued segment moved to an idle node' || l.msg === 'chunks moved to an idle node') && ids.includes(String(l.jobId)) && String(l.to).startsWith('auto-'),
    );
    expect(moved.length).toBeGreaterThanOrEqual(1);
    // Recorded in etcd: a whole segment on an autoscaled node, or chunks its checkpoint gives one.
    const etcd = t.cluster.client();
    const keys = new Keys('/tessera/');
    const helpedBy: string[] = [];
    for (const j of jobs) {
      for (const sg of j.segments) {
        if (sg.nodeId.startsWith('auto-')) helpedBy.push(sg.nodeId);
        const cp = await etcd.get(keys.checkpoint(j.id, sg.index)).string();
        if (cp) helpedBy.push(...Object.values(parseRecord(checkpointSchema, cp, 'checkpoint').helpers ?? {}).map((h) => h.nodeId));
      }
    }
    expect(helpedBy.some((n) => n.startsWith('auto-'))).toBe(true);
    expect(status.autoscalerDecisions.some((d) => d.includes(' down '))).toBe(true);
    // No segment was transcoded twice because of a drain.
    for (const j of jobs) expect(subSegmentsRedone(t.dir, readdirLogs(t.dir), j.id)).toBe(0);
  });
});

describe('operating the fleet', () => {
  let t: TestCluster;
  let clip: string;

  beforeAll(async () => {
    t = await startTestCluster({ nodes: 1, coordinatorEnv: { HTTP_ALLOW_PRIVATE: 'true', WEBHOOK_SECRET: SECRET, WEBHOOK_BACKOFF_MS: '100' } });
    clip = await fixture(t.inputDir, 'clip-8s-360p.mp4', { seconds: 8, width: 640, height: 360, fps: 30 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('DrainNode on a busy node: the job succeeds, no new segments go there, its lease is gone', async () => {
    await t.cluster.addNode({ id: 'drain-me' });
    await t.cluster.addNode({ id: 'keep-me' });
    // A longer clip: the drained node's transcode lasts seconds, so the drain lands while it runs.
    const long = await fixture(t.inputDir, 'clip-24s-360p.mp4', { seconds: 24, width: 640, height: 360, fps: 30 });
    const { jobId } = await t.client.submit({ inputUri: long, ladder: LADDER });
    // Busy: its ffmpeg is running at this moment (progress reaches a watcher up to a second late).
    await nodeRunningFfmpeg(t.cluster, ['drain-me'], 60_000);
    const drainedAt = Date.now();
    const info = await t.client.drain('drain-me');
    expect(info.state).toBe('draining');
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    // It finished the segment it held when the drain landed (a drain lets in-flight work end).
    expect(job.history.filter((h) => h.scope.startsWith('segment/') && h.nodeId === 'drain-me' && h.atMs > drainedAt && h.state === 'DONE')).toHaveLength(1);
    expect(job.history.filter((h) => h.scope.startsWith('segment/') && h.nodeId === 'drain-me' && h.atMs > drainedAt && h.state === 'TRANSFERRING')).toEqual([]);
    const deadline = Date.now() + 20_000;
    while ((await t.cluster.client().get('/tessera/nodes/drain-me').string()) !== null) {
      if (Date.now() > deadline) throw new Error('drained node kept its lease');
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(subSegmentsRedone(t.dir, readdirLogs(t.dir), jobId)).toBe(0);
  });

  it('status and ListNodes agree with etcd; /metrics counters move; reflection lists the services', async () => {
    const fromEtcd = Object.values(await t.cluster.client().getAll().prefix('/tessera/nodes/').strings())
      .map((v) => (JSON.parse(v) as NodeRecord).id)
      .sort();
    const listed = (await t.client.listNodes()).map((n) => n.id).sort();
    const status = await t.client.clusterStatus();
    expect(listed).toEqual(fromEtcd);
    expect(status.nodes.map((n) => n.id).sort()).toEqual(fromEtcd);
    expect(status.leaderId).toBe('coordinator-0');

    const node = JSON.parse((await t.cluster.client().get(`/tessera/nodes/${fromEtcd[0]}`).string())!) as NodeRecord;
    const before = await scrapeCounter(node.metricsAddress, 'tessera_transcode_frames_total');
    const job = await t.client.wait((await t.client.submit({ inputUri: clip, ladder: LADDER })).jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const nodes = await Promise.all(fromEtcd.map(async (id) => JSON.parse((await t.cluster.client().get(`/tessera/nodes/${id}`).string()) ?? 'null') as NodeRecord | null));
    let after = 0;
    for (const n of nodes) if (n) after += await scrapeCounter(n.metricsAddress, 'tessera_transcode_frames_total');
    expect(after).toBeGreaterThan(before);

    const services = await reflectServices(t.cluster.coordinators[0]!);
    expect(services).toEqual(expect.arrayContaining(['tessera.v1.JobService', 'tessera.v1.Admin', 'grpc.health.v1.Health']));
  });

  it('delivers each webhook state once, in order, signed, even after two failed deliveries', async () => {
    const got: { id: string; state: string; valid: boolean }[] = [];
    let calls = 0;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        calls++;
        if (calls <= 2) {
          res.writeHead(503);
          res.end();
          return;
        }
        const ev = JSON.parse(body) as { id: string; state: string };
        const valid = req.headers['x-tessera-signature'] === signBody(SECRET, body);
        if (!got.some((g) => g.id === ev.id)) got.push({ id: ev.id, state: ev.state, valid });
        else got.push({ id: `${ev.id}#dup`, state: ev.state, valid });
        res.writeHead(204);
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const job = await t.client.wait((await t.client.submit({ inputUri: clip, ladder: LADDER, webhookUrl: url })).jobId);
      expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
      const deadline = Date.now() + 20_000;
      while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      await new Promise((r) => setTimeout(r, 1_000)); // room for a duplicate to show up
      expect(got.map((g) => g.state)).toEqual(['RUNNING', 'SUCCEEDED']);
      expect(got.every((g) => g.valid)).toBe(true);
      expect(got.map((g) => g.id)).toEqual([`${job.id}:RUNNING`, `${job.id}:SUCCEEDED`]);
    } finally {
      server.close();
    }
  });
});

function readdirLogs(dir: string): string[] {
  // every node agent that ever ran in this cluster, autoscaled ones included
  const { readdirSync } = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
  return readdirSync(join(dir, 'logs'))
    .filter((f) => f.startsWith('node-') || f.startsWith('auto-') || f.startsWith('drain-') || f.startsWith('keep-'))
    .map((f) => f.replace(/\.log$/, ''));
}

/** Lists services through gRPC server reflection (what grpcurl does). */
async function reflectServices(address: string): Promise<string[]> {
  const require = createRequire(import.meta.url);
  const protoDir = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
  const def = loadSync(join(protoDir, 'grpc/reflection/v1alpha/reflection.proto'), { includeDirs: [protoDir], keepCase: true });
  const pkg = loadPackageDefinition(def) as unknown as {
    grpc: {
      reflection: {
        v1alpha: {
          ServerReflection: new (
            a: string,
            c: ReturnType<typeof credentials.createInsecure>,
          ) => Client & { ServerReflectionInfo(): ClientDuplexStream<unknown, { list_services_response?: { service: { name: string }[] } }> };
        };
      };
    };
  };
  const client = new pkg.grpc.reflection.v1alpha.ServerReflection(address, credentials.createInsecure());
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.ServerReflectionInfo();
      call.on('data', (res) => {
        resolve((res.list_services_response?.service ?? []).map((svc: { name: string }) => svc.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
  } finally {
    client.close();
  }
}
