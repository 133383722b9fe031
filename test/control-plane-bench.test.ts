import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runControlPlane } from '../bench/control-plane.js';
import { markdownTable } from '../bench/stats.js';

// The control-plane benchmark harness at tiny scale, so it cannot rot: the benchmark itself
// (100 agents, 200 jobs) is `npm run bench -- --only controlplane`, not part of `npm test`.
describe('control-plane benchmark harness (smoke)', () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs 3 jobs on 3 simulated agents through the real cluster, with a web console open, and measures them', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-cp-smoke-'));
    const r = await runControlPlane({
      dir,
      agents: 3,
      slots: 2,
      jobs: 3,
      source: { seconds: 3, width: 128, height: 72, fps: 10, gop: 5, audio: false },
      minSegmentSec: 0.5,
      minSubSegmentSec: 0.2,
      maxConcurrentJobs: 4,
      sleepFactor: 0.1,
      rungs: 2,
      timeoutMs: 90_000,
      consoleClients: 1,
      consoleIdleSec: 2,
    });
    // runControlPlane throws unless every job SUCCEEDED; check what it counted.
    expect(r.jobs).toBe(3);
    expect(r.segments).toBeGreaterThanOrEqual(3);
    expect(r.subSegments).toBeGreaterThanOrEqual(r.segments);
    expect(r.assignments).toBeGreaterThanOrEqual(r.segments);
    expect(r.steadyPerSec).toBeGreaterThan(0);
    const perSegment = r.etcd.proposals / r.segments;
    expect(Number.isFinite(perSegment)).toBe(true);
    expect(perSegment).toBeGreaterThan(0);
    expect(r.etcd.puts).toBeGreaterThan(0);
    expect(r.coordinator.cpuSec).toBeGreaterThan(0);
    expect(r.coordinator.peakRssMiB).toBeGreaterThan(10);
    // One web console stayed connected through the run (--console 1): both its streams delivered.
    expect(r.console.clients).toBe(1);
    expect(r.console.events).toBeGreaterThanOrEqual(2);
    expect(r.console.errors).toBe(0);
    expect(r.console.idleCpuMsPerSec.open).toBeGreaterThan(0);
    expect(r.coordinator.eventLoopP99MaxMs).toBeGreaterThan(0);
    expect(r.coordinator.eventLoopP99MedianMs).toBeLessThanOrEqual(r.coordinator.eventLoopP99MaxMs);
    const table = markdownTable(r.head, r.rows);
    expect(table).toContain('segments scheduled per second');
    expect(table).toContain('etcd write requests per segment');
    expect(table.split('\n')).toHaveLength(r.rows.length + 2);
  });
});
