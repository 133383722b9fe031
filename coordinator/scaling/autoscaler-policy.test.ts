import { describe, expect, it } from 'vitest';
import { decide, type AutoscalePolicy, type ClusterSnapshot, type NodeSnapshot } from './autoscaler-policy.js';

const policy: AutoscalePolicy = { minNodes: 1, maxNodes: 5, backlogPerSlot: 1, scaleUpStep: 2, idleMs: 30_000, upCooldownMs: 10_000, downCooldownMs: 60_000 };
const node = (id: string, o: Partial<NodeSnapshot> = {}): NodeSnapshot => ({ id, slots: 2, busySlots: 0, segments: 0, draining: false, idleSinceMs: 0, ...o });
const snap = (o: Partial<ClusterSnapshot>): ClusterSnapshot => ({ nowMs: 1_000_000, queueDepth: 0, runningJobs: 0, nodes: [], pendingNodes: 0, ...o });
const fresh = { lastUpAtMs: 0, lastDownAtMs: 0 };

describe('autoscaler policy', () => {
  it('scales up by the step under a backlog when every slot is busy', () => {
    const d = decide(snap({ queueDepth: 4, nodes: [node('a', { busySlots: 2, idleSinceMs: undefined })] }), policy, fresh);
    expect(d).toMatchObject({ action: 'up', count: 2 });
  });
  it('does not scale up while free slots can absorb the backlog', () => {
    expect(decide(snap({ queueDepth: 1, nodes: [node('a'), node('b')] }), policy, fresh).action).toBe('none');
  });
  it('respects the maximum, pending joins and the cooldown', () => {
    const busy = (id: string) => node(id, { busySlots: 2, idleSinceMs: undefined });
    expect(decide(snap({ queueDepth: 9, nodes: ['a', 'b', 'c', 'd'].map(busy) }), policy, fresh)).toMatchObject({ action: 'up', count: 1 });
    expect(decide(snap({ queueDepth: 9, nodes: ['a', 'b', 'c', 'd', 'e'].map(busy) }), policy, fresh).action).toBe('none');
    expect(decide(snap({ queueDepth: 9, nodes: [busy('a')], pendingNodes: 2 }), policy, fresh).action).toBe('none');
    expect(decide(snap({ queueDepth: 9, nodes: [busy('a')] }), policy, { lastUpAtMs: 995_000, lastDownAtMs: 0 }).action).toBe('none');
  });
  it('grows for chunks of running jobs that wait for a slot (no job queued), and drains only once they are gone', () => {
    // every job already runs (MAX_CONCURRENT_JOBS): the job queue is empty while 6 chunks wait
    const holding = node('a', { busySlots: 2, segments: 4, idleSinceMs: undefined });
    const up = decide(snap({ queueDepth: 0, queuedChunks: 6, nodes: [holding] }), policy, fresh);
    expect(up).toMatchObject({ action: 'up', count: 2 });
    expect((up as { reason: string }).reason).toContain('6 queued chunk(s)');
    // a queued chunk keeps an idle node from being drained
    const idle = [holding, node('b', { idleSinceMs: 1 })];
    expect(decide(snap({ queuedChunks: 1, nodes: idle }), policy, fresh).action).toBe('none');
    expect(decide(snap({ queuedChunks: 0, nodes: idle }), policy, fresh)).toMatchObject({ action: 'down', nodeIds: ['b'] });
  });
  it('brings the pool up to the minimum', () => {
    expect(decide(snap({ nodes: [] }), { ...policy, minNodes: 2 }, fresh)).toMatchObject({ action: 'up', count: 2 });
  });
  it('drains only nodes idle for the idle period, never below the minimum', () => {
    const nodes = [
      node('busy', { busySlots: 1, idleSinceMs: undefined }),
      node('holding', { segments: 1, idleSinceMs: undefined }),
      node('recent', { idleSinceMs: 990_000 }),
      node('idle1', { idleSinceMs: 100_000 }),
      node('idle2', { idleSinceMs: 200_000 }),
    ];
    const d = decide(snap({ nodes }), policy, fresh);
    expect(d).toMatchObject({ action: 'down', nodeIds: ['idle1', 'idle2'] });
    const two = decide(snap({ nodes: [node('idle1', { idleSinceMs: 1 }), node('idle2', { idleSinceMs: 1 })] }), { ...policy, minNodes: 2 }, fresh);
    expect(two.action).toBe('none');
  });
  it('does not flap under steady load', () => {
    // Steady: every slot busy, nothing queued → no change, tick after tick.
    const nodes = [node('a', { busySlots: 2, idleSinceMs: undefined }), node('b', { busySlots: 2, idleSinceMs: undefined })];
    for (let t = 0; t < 20; t++) expect(decide(snap({ nowMs: 1_000_000 + t * 5_000, nodes }), policy, fresh).action).toBe('none');
    // Just after a scale-up the idle newcomers are not drained (down cooldown counts from the last scale-up).
    const after = decide(snap({ nodes: [node('a', { idleSinceMs: 0 }), node('b', { idleSinceMs: 0 })] }), policy, { lastUpAtMs: 990_000, lastDownAtMs: 0 });
    expect(after.action).toBe('none');
  });
  it('ignores draining nodes when counting capacity', () => {
    const d = decide(snap({ queueDepth: 1, nodes: [node('a', { draining: true }), node('b', { busySlots: 2, idleSinceMs: undefined })] }), policy, fresh);
    expect(d.action).toBe('up');
  });

  it('grows the pool that has what waiting jobs need, and says when no pool has it', () => {
    const pools = [
      { name: 'gpu', deployment: 'tessera-node-gpu', capabilities: ['h264', 'nvenc'], labels: { pool: 'gpu' } },
      { name: 'eu', capabilities: ['h264'], labels: { region: 'eu' } },
    ];
    const idle = [node('a', { idleSinceMs: undefined })];
    const up = decide(snap({ nodes: idle, unserved: [{ needs: ['h264', 'nvenc'], labels: {} }] }), { ...policy, pools }, fresh);
    expect(up).toMatchObject({ action: 'up', count: 1, pool: { name: 'gpu' } });
    expect(up.reason).toMatch(/wait for h264, nvenc.*growing pool gpu/);
    expect(decide(snap({ nodes: idle, unserved: [{ needs: ['h264'], labels: { region: 'eu' } }] }), { ...policy, pools }, fresh)).toMatchObject({ action: 'up', pool: { name: 'eu' } });
    const none = decide(snap({ nodes: idle, unserved: [{ needs: ['qsv'], labels: {} }] }), { ...policy, pools }, fresh);
    expect(none.action).toBe('none');
    expect(none.reason).toMatch(/wait for qsv and no pool has it/);
    // Limits hold for pools too.
    expect(decide(snap({ nodes: idle, pendingNodes: 1, unserved: [{ needs: ['nvenc'], labels: {} }] }), { ...policy, pools }, fresh).action).toBe('none');
    expect(decide(snap({ nodes: idle, unserved: [{ needs: ['nvenc'], labels: {} }] }), { ...policy, pools, maxNodes: 1 }, fresh).action).toBe('none');
  });
});
