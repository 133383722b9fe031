import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { fixture, startTestCluster, type TestCluster } from './helpers.js';

// Capabilities and placement (issue 17 item 5): a node advertises what it can encode and its
// labels; a rung that needs a capability, or a job pinned to a label, runs only where it fits; with
// no such node the job waits and says why. `TEST_EXTRA_CAPABILITIES` is the test-only setting that
// adds a capability this machine cannot have (no GPU here).
describe('capabilities and placement', () => {
  let t: TestCluster;
  let clip: string;

  beforeAll(async () => {
    t = await startTestCluster({ nodes: 0 });
    await Promise.all([
      t.cluster.addNode({ id: 'plain', env: { NODE_LABELS: 'zone=a' } }),
      t.cluster.addNode({ id: 'gpu', env: { NODE_LABELS: 'zone=b,pool=gpu', TEST_EXTRA_CAPABILITIES: 'gpu-test' } }),
    ]);
    clip = await fixture(t.inputDir, 'place.mp4', { seconds: 6, width: 320, height: 180, fps: 25 });
    // Both agents registered and ready.
    await vi.waitFor(
      async () => {
        expect((await t.client.listNodes()).filter((n) => n.state === 'ready')).toHaveLength(2);
      },
      { timeout: 20_000, interval: 100 },
    );
  });
  afterAll(async () => {
    await t?.close();
  });

  const rung = (needs?: string) => ({ name: '', height: 144, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast', ...(needs ? { needs } : {}) });
  const nodesOf = (job: Job) => [...new Set(job.segments.map((s) => s.nodeId))].sort();

  it('nodes advertise capability families, cores and labels', async () => {
    const nodes = new Map((await t.client.listNodes()).map((n) => [n.id, n]));
    const plain = nodes.get('plain')!;
    const gpu = nodes.get('gpu')!;
    expect(plain.capabilities).toContain('h264');
    expect(plain.capabilities).not.toContain('gpu-test');
    expect(gpu.capabilities).toEqual(expect.arrayContaining(['h264', 'gpu-test']));
    // Families, not ffmpeg's encoder names; hardware only after a successful probe (none here).
    expect(gpu.capabilities.some((c) => c.startsWith('lib') || c === 'nvenc')).toBe(false);
    expect(plain.cores).toBeGreaterThan(0);
    expect(plain.labels).toEqual(['zone=a']);
    expect(gpu.labels).toEqual(['pool=gpu', 'zone=b']);
  });

  it('a rung that needs a capability runs only on the node that has it; a pinned job only in its zone', async () => {
    const [a, b] = await Promise.all([
      t.client.submit({ inputUri: clip, ladder: [rung('gpu-test'), { ...rung(), height: 120 }] }),
      t.client.submit({ inputUri: clip, ladder: [rung()], placement: 'zone=a' }),
    ]);
    const [ja, jb] = await Promise.all([t.client.wait(a.jobId), t.client.wait(b.jobId)]);
    // Alone on an idle cluster, unconstrained work still spreads over both (one segment per node).
    const jf = await t.client.wait((await t.client.submit({ inputUri: clip, ladder: [rung()] })).jobId);
    for (const j of [ja, jb, jf]) expect(j.errorMessage).toBe('');
    expect([ja.state, jb.state, jf.state]).toEqual([JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_SUCCEEDED]);
    expect(nodesOf(ja)).toEqual(['gpu']);
    expect(nodesOf(jb)).toEqual(['plain']);
    expect(nodesOf(jf)).toEqual(['gpu', 'plain']);
  });

  it('malformed needs and labels are refused with INVALID_ARGUMENT', async () => {
    await expect(t.client.submit({ inputUri: clip, ladder: [rung('Bad Name!')] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('not a capability name') });
    await expect(t.client.submit({ inputUri: clip, ladder: [rung()], placement: 'zone' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('not key=value') });
  });

  it('with the only capable node drained the job waits and says why, then runs when it is back', async () => {
    await t.client.drain('gpu');
    // A drain ends with the agent leaving; hold it by undraining only after the job has waited.
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: [rung('gpu-test')] });
    const waiting = await vi.waitFor(
      async () => {
        const j = await t.client.get(jobId);
        expect(j.stage).toMatch(/waiting for a node with .*gpu-test/);
        return j;
      },
      { timeout: 30_000, interval: 100 },
    );
    expect(waiting.stage).toMatch(/plain lacks gpu-test/);
    expect(waiting.state).not.toBe(JobState.JOB_STATE_SUCCEEDED);
    // The drained agent left; a new capable node joins and the job runs there.
    await t.cluster.addNode({ id: 'gpu2', env: { TEST_EXTRA_CAPABILITIES: 'gpu-test' } });
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(nodesOf(job)).toEqual(['gpu2']);
  });
});
