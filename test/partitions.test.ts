import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeAgentClient } from '../common/bulk-codec.js';
import { iterateStream } from '../common/grpc.js';
import { TesseraClient } from '../sdk/client.js';
import type { SegmentEvent } from '../proto/gen/tessera/v1/agent.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, fixture, nodeRunningFfmpeg, startTestCluster, TEST_SLOTS, type TestCluster } from './helpers.js';
import { checkpoints, logLines, subSegmentsRedone } from './faults-helpers.js';
import { LabNet } from './lab-net.js';

// Issue 18 item 5: partitions, not kills. Each node agent runs in its own network namespace,
// joined to the host by two veth links (LAB.md; test/lab-net.ts); one coordinator runs in a
// namespace of its own with direct links to the nodes. Links are downed and healed with `ip link`.
// Real etcd, ffmpeg, gRPC, S3 server. Lease TTL 2 s; health probes every 1 s (1 s deadline,
// 3 misses); running work checks its owner key every 1 s. 3 agents × 1 slot, no bandwidth or
// CPU limits (plain veth, full cores).

const LADDER = [
  { name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' },
  { name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'veryfast' },
];
const PREFIX = 'tlp-';
const TTL_SEC = 2;
const AGENT_PORT = 7600;
const why = LabNet.unavailable();
if (why) process.stdout.write(`SKIP partitions.test.ts: ${why}\n`);

async function expectCorrect(t: TestCluster, job: Job, frames: number): Promise<void> {
  expect(job.errorMessage).toBe('');
  expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
  const a = await checkArchive(t.s3, job, await mkdtemp(join(tmpdir(), 'tessera-part-')));
  for (const r of a.renditions) {
    expect(r.frames).toBe(frames);
    expect(r.sha256).toBe(r.manifestSha256);
    expect(Math.abs((r.audioSec ?? 0) - r.videoSec)).toBeLessThanOrEqual(0.05);
  }
  const cps = await checkpoints(t.cluster.client(), job.id);
  for (const cp of cps.values()) expect(cp.done.map((d) => d.sub)).toEqual([...Array(cp.boundaries.length - 1).keys()]);
}

/** Done entries of a job's checkpoints, as `segment/sub/attempt/node`. */
async function doneEntries(t: TestCluster, jobId: string): Promise<Set<string>> {
  const cps = await checkpoints(t.cluster.client(), jobId);
  return new Set([...cps].flatMap(([seg, cp]) => cp.done.map((d) => `${seg}/${d.sub}/${d.attempt}/${d.nodeId}`)));
}

async function untilTranscoding(t: TestCluster, client: TesseraClient, jobId: string): Promise<string> {
  for await (const j of client.watch(jobId)) {
    if (j.segments.length > 0 && j.segments.every((s) => s.nodeId) && j.segments.some((s) => s.framesDone > 0)) break;
    if (j.state !== JobState.JOB_STATE_QUEUED && j.state !== JobState.JOB_STATE_PREPARING && j.state !== JobState.JOB_STATE_RUNNING) throw new Error(`job ended early: ${j.state}`);
  }
  return nodeRunningFfmpeg(t.cluster, t.cluster.nodeIds(), 20_000);
}

async function leader(t: TestCluster): Promise<string> {
  return (await t.cluster.client().get('/tessera/election/coordinator').string()) ?? '';
}

describe.skipIf(why)('partitions: network namespaces and veth links', () => {
  let lab: LabNet;
  let t: TestCluster;
  let client: TesseraClient;
  let clip: string;
  const nodeAddr = new Map<string, string>();

  beforeAll(async () => {
    lab = LabNet.open(PREFIX);
    try {
      const nss = [1, 2, 3].map((k) => ({ k, ...lab.addNode(k) }));
      lab.addCoordinator([1, 2, 3]);
      t = await startTestCluster({
        nodes: 0,
        coordinators: 1,
        leaseTtlSec: TTL_SEC,
        serviceHost: LabNet.SERVICE_HOST,
        env: { SEGMENT_NO_PROGRESS_MS: '15000', OWNER_CHECK_MS: '1000', NODE_PROBE_INTERVAL_MS: '1000', NODE_PROBE_TIMEOUT_MS: '1000', NODE_PROBE_FAILURES: '3' },
      });
      for (const n of nss) {
        const id = `node-${n.k}`;
        await t.cluster.addNode({ id, netns: n.netns, env: { BIND_HOST: '0.0.0.0', GRPC_PORT: String(AGENT_PORT), ADVERTISE_ADDRESS: `${n.address}:${AGENT_PORT}`, CPU_CORES: '1' } });
        nodeAddr.set(id, `${n.address}:${AGENT_PORT}`);
      }
      client = new TesseraClient({ addresses: t.cluster.coordinators, timeoutMs: 20_000 });
      clip = await fixture(t.inputDir, 'clip-24s-360p.mp4', { seconds: 24, width: 640, height: 360, fps: 30 });
    } catch (err) {
      await t?.close();
      lab.close();
      throw err;
    }
  }, 180_000);

  afterAll(async () => {
    try {
      client?.close();
      await t?.close();
    } finally {
      lab?.close();
    }
  });

  it('symmetric partition of an agent for 3× the lease TTL: the job succeeds, only its chunk in flight is redone, nothing from the stale side is accepted', async () => {
    const { jobId } = await client.submit({ inputUri: clip, ladder: LADDER });
    const victim = await untilTranscoding(t, client, jobId);
    const k = Number(victim.slice('node-'.length));
    const before = await doneEntries(t, jobId);
    const cutAt = Date.now();
    lab.node(k, 'both', false);
    try {
      await new Promise((r) => setTimeout(r, 3 * TTL_SEC * 1000));
    } finally {
      lab.node(k, 'both', true);
    }
    const healedAt = Date.now();
    const job = await client.wait(jobId);
    await expectCorrect(t, job, 720);
    const moved = job.history.filter((h) => h.reason.startsWith('reassigned') && h.atMs >= cutAt);
    expect(moved.length).toBeGreaterThanOrEqual(1);
    // No assignment went to the cut-off node while it was cut off.
    expect(job.history.filter((h) => h.scope.startsWith('segment/') && h.nodeId === victim && h.atMs >= cutAt && h.atMs < healedAt && h.state === 'TRANSFERRING')).toEqual([]);
    const redone = subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId);
    expect(redone).toBeLessThanOrEqual(TEST_SLOTS); // at most the chunks in flight on its slots
    // Nothing the cut-off node did after the cut was recorded as done.
    const after = await doneEntries(t, jobId);
    for (const d of after) if (d.endsWith(`/${victim}`)) expect(before.has(d)).toBe(true);
    // It re-joined after the heal, and dropped its stale work (owner key moved, or a write/part refused).
    await expect.poll(async () => (await client.listNodes()).some((n) => n.id === victim && n.state === 'ready'), { timeout: 30_000, interval: 200 }).toBe(true);
    const refusedParts = logLines(t.dir, 'uploader-0').filter((l) => l.msg === 'refused a part from a stale attempt' && l.jobId === jobId).length;
    const dropped = logLines(t.dir, victim).filter((l) => l.msg === 'segment ended without finishing' && l.jobId === jobId).length;
    process.stdout.write(
      `MEASURE symmetric partition of ${victim} for ${3 * TTL_SEC} s: segment moved ${moved[0]!.atMs - cutAt} ms after the cut; sub-segments redone ${redone}; stale work dropped ${dropped}, stale parts refused ${refusedParts}; job ${job.finishedAtMs - job.createdAtMs} ms\n`,
    );
  }, 240_000);

  it('asymmetric partition: the agent reaches etcd, the coordinator cannot reach it; it goes not-ready and gets no assignment', async () => {
    const { jobId } = await client.submit({ inputUri: clip, ladder: LADDER });
    const victim = await untilTranscoding(t, client, jobId);
    const k = Number(victim.slice('node-'.length));
    const before = await doneEntries(t, jobId);
    const cutAt = Date.now();
    lab.node(k, 'b', false);
    let detectMs = -1;
    try {
      await expect.poll(async () => (await client.listNodes()).find((n) => n.id === victim)?.state, { timeout: 30_000, interval: 100 }).toBe('not-ready');
      detectMs = Date.now() - cutAt;
      // Still registered: its lease is alive (it reaches etcd).
      expect(await t.cluster.client().get(`/tessera/nodes/${victim}`).string()).not.toBeNull();
      const job = await client.wait(jobId);
      await expectCorrect(t, job, 720);
      const redone = subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId);
      expect(redone).toBeLessThanOrEqual(TEST_SLOTS);
      // A chunk it finished and checkpointed before the move is its own (its owner revision was
      // current); after the move its writes and parts are fenced. Reported, not asserted.
      const lateDone = [...(await doneEntries(t, jobId))].filter((d) => d.endsWith(`/${victim}`) && !before.has(d)).length;
      const moved = job.history.filter((h) => h.reason.startsWith('reassigned') && h.atMs >= cutAt);
      // A second job while it is still unreachable: planned for the 2 reachable nodes, nothing on it.
      const { jobId: second } = await client.submit({ inputUri: clip, ladder: [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast' }] });
      const job2 = await client.wait(second);
      await expectCorrect(t, job2, 720);
      expect(job2.segments.every((s) => s.nodeId !== victim)).toBe(true);
      expect(job2.history.filter((h) => h.nodeId === victim)).toEqual([]);
      expect(job2.segments.length).toBe(2);
      const refusedParts = logLines(t.dir, 'uploader-0').filter((l) => l.msg === 'refused a part from a stale attempt' && l.jobId === jobId).length;
      process.stdout.write(
        `MEASURE asymmetric partition of ${victim}: not-ready ${detectMs} ms after the cut; segment moved ${moved[0] ? moved[0].atMs - cutAt : -1} ms after; sub-segments redone ${redone}; its chunks checkpointed after the cut ${lateDone}; stale parts refused ${refusedParts}; second job on ${job2.segments.length} nodes, none on ${victim}\n`,
      );
    } finally {
      lab.node(k, 'b', true);
    }
    await expect.poll(async () => (await client.listNodes()).find((n) => n.id === victim)?.state, { timeout: 30_000, interval: 200 }).toBe('ready');
  }, 240_000);

  it("partitioned leader that still reaches the agents: the new leader re-attaches, the stale leader's calls are refused, the job succeeds", async () => {
    // The leader runs in the coordinator namespace: start it, then hand it the leadership.
    const nsName = await t.cluster.startCoordinator({ netns: `${PREFIX}c0`, host: '10.201.100.2' });
    await t.cluster.stopProcess('coordinator-0', 'SIGTERM'); // resigns: the namespace coordinator takes over
    await expect.poll(() => leader(t), { timeout: 20_000, interval: 100 }).toBe(nsName);
    await t.cluster.startCoordinator(); // a standby on the host
    client.close();
    client = new TesseraClient({ addresses: t.cluster.coordinators.slice(1), timeoutMs: 20_000 });
    const staleTerm = Number((await t.cluster.client().get('/tessera/election/coordinator').exec()).kvs[0]!.create_revision);

    const { jobId } = await client.submit({ inputUri: clip, ladder: LADDER });
    const busy = await untilTranscoding(t, client, jobId);
    // The audio is at the uploader (else the new leader would make it again from the input).
    await expect
      .poll(async () => (JSON.parse((await t.cluster.client().get(`/tessera/jobs/${jobId}/plan`).string()) ?? '{}') as { audioSentTo?: string }).audioSentTo !== undefined, {
        timeout: 30_000,
        interval: 100,
      })
      .toBe(true);
    const cutAt = Date.now();
    lab.coordinator(false);
    try {
      await expect
        .poll(
          async () => {
            const l = await leader(t);
            return l !== '' && l !== nsName;
          },
          { timeout: 30_000, interval: 100 },
        )
        .toBe(true);
      const electedMs = Date.now() - cutAt;
      // What the stale leader would send: replace or drop the running work. Both refused.
      const owner = await t.cluster.client().get(`/tessera/jobs/${jobId}/segments/0000/owner`).exec();
      const seg0 = JSON.parse(owner.kvs[0]!.value.toString()) as { nodeId: string; attempt: number };
      const agent = new NodeAgentClient(nodeAddr.get(seg0.nodeId)!, credentials.createInsecure());
      try {
        const ref = { jobId, segment: 0, attempt: seg0.attempt + 1, ownerRevision: Number(owner.kvs[0]!.mod_revision) + 1, leaderTerm: staleTerm };
        const drop = new Promise((res, rej) => agent.dropSegment(ref, (e, r) => (e ? rej(e) : res(r))));
        await expect(drop).rejects.toMatchObject({ message: expect.stringContaining('stale') });
        const run = agent.runSegment(
          {
            ref,
            renditions: [],
            ownerRevision: ref.ownerRevision,
            uploaderAddress: '',
            uploaderId: '',
            frames: 0,
            fps: 30,
            treatment: undefined,
            leadInFrames: 0,
            leadOutFrames: 0,
            leaderTerm: staleTerm,
          },
          new Metadata(),
        );
        await expect(
          (async () => {
            for await (const _ of iterateStream<SegmentEvent>(run)) {
              /* none */
            }
          })(),
        ).rejects.toMatchObject({ message: expect.stringContaining('stale') });
      } finally {
        agent.close();
      }
      const job = await client.wait(jobId);
      await expectCorrect(t, job, 720);
      const redone = subSegmentsRedone(t.dir, t.cluster.nodeIds(), jobId);
      expect(redone).toBe(0);
      expect(job.history.filter((h) => h.reason.startsWith('reassigned') && h.atMs >= cutAt)).toEqual([]);
      const refused = t.cluster
        .nodeIds()
        .flatMap((n) => logLines(t.dir, n))
        .filter((l) => l.msg === 'refused a call from a stale leader').length;
      expect(refused).toBeGreaterThanOrEqual(2);
      const reattached = job.history.filter((h) => h.reason.startsWith('re-attached') && h.atMs >= cutAt);
      expect(logLines(t.dir, await leader(t)).some((l) => l.jobId === jobId && l.msg === 'resuming past splitting without the input')).toBe(true);
      process.stdout.write(
        `MEASURE partitioned leader (busy ${busy}): new leader ${electedMs} ms after the cut, first re-attach ${reattached[0] ? reattached[0].atMs - cutAt : -1} ms; sub-segments redone ${redone}; stale-leader calls refused by agents ${refused}; job ${job.finishedAtMs - job.createdAtMs} ms\n`,
      );
    } finally {
      lab.coordinator(true);
    }
  }, 240_000);
});
