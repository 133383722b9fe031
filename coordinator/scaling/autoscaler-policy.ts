import { describePlacement, fits, type Placement } from '../../common/placement.js';

/** Settings of the autoscaler policy (all durations in ms). */
export interface AutoscalePolicy {
  minNodes: number;
  maxNodes: number;
  /** Queued jobs per free slot we tolerate before growing (1 = grow as soon as every slot is busy and a job waits). */
  backlogPerSlot: number;
  /** Nodes added per scale-up decision. */
  scaleUpStep: number;
  /** A node must be idle this long before it is drained. */
  idleMs: number;
  upCooldownMs: number;
  downCooldownMs: number;
  /** Node pools the autoscaler may grow for jobs that need what the default nodes lack (AUTOSCALER_POOLS). */
  pools?: NodePool[];
}

/** A pool of nodes with capabilities or labels of their own (a GPU pool, a region's pool). */
export interface NodePool {
  name: string;
  /** The Kubernetes Deployment of the pool's node agents (kubernetes provider). */
  deployment?: string | undefined;
  /** What its nodes advertise: capability families and labels. */
  capabilities: string[];
  labels: Record<string, string>;
}

export interface NodeSnapshot {
  id: string;
  slots: number;
  busySlots: number;
  /** Segments the coordinator has in flight on this node. */
  segments: number;
  draining: boolean;
  /** Since when the node has had no work (undefined: busy now). */
  idleSinceMs: number | undefined;
}

export interface ClusterSnapshot {
  nowMs: number;
  queueDepth: number;
  /**
   * Chunks waiting for a worker slot on the nodes, of jobs already running (all of them start at
   * once under MAX_CONCURRENT_JOBS, so the job queue alone is empty while work waits).
   */
  queuedChunks?: number;
  runningJobs: number;
  nodes: NodeSnapshot[];
  /** Nodes asked for but not registered yet. */
  pendingNodes: number;
  /** What jobs wait for that no active node has (capabilities, labels): grows a matching pool. */
  unserved?: Placement[];
}

export interface PolicyMemory {
  lastUpAtMs: number;
  lastDownAtMs: number;
}

export type Decision = { action: 'up'; count: number; reason: string; pool?: NodePool } | { action: 'down'; nodeIds: string[]; reason: string } | { action: 'none'; reason: string };

/**
 * The autoscaler's decision for one tick — pure, so it can be tested without processes.
 * Grows by `scaleUpStep` while jobs wait and no slot is free; drains nodes that have been idle
 * for `idleMs` once nothing waits; respects min/max and cooldowns so steady load never flaps.
 * Scale-down only names idle nodes: a busy node is never chosen.
 */
export function decide(s: ClusterSnapshot, p: AutoscalePolicy, m: PolicyMemory): Decision {
  const active = s.nodes.filter((n) => !n.draining);
  const count = active.length + s.pendingNodes;
  if (count < p.minNodes) {
    return { action: 'up', count: p.minNodes - count, reason: `below the minimum of ${p.minNodes} node(s)` };
  }
  // Jobs that wait for a capability or label no active node has: grow the pool that has it.
  let unservedNote = '';
  for (const want of s.unserved ?? []) {
    const pool = p.pools?.find((pl) => fits({ id: pl.name, encoders: [], capabilities: pl.capabilities, labels: pl.labels }, want));
    if (!pool) {
      unservedNote = `; job(s) wait for ${describePlacement(want)} and no pool has it (AUTOSCALER_POOLS)`;
      continue;
    }
    if (count >= p.maxNodes) return { action: 'none', reason: `job(s) wait for ${describePlacement(want)} (pool ${pool.name}) but already at the maximum of ${p.maxNodes} node(s)` };
    if (s.pendingNodes > 0) return { action: 'none', reason: `waiting for ${s.pendingNodes} node(s) to join` };
    if (s.nowMs - m.lastUpAtMs < p.upCooldownMs) return { action: 'none', reason: 'scale-up cooldown' };
    return { action: 'up', count: 1, pool, reason: `job(s) wait for ${describePlacement(want)}, which no active node has: growing pool ${pool.name}` };
  }
  const slots = active.reduce((a, n) => a + n.slots, 0);
  const busy = active.reduce((a, n) => a + Math.min(n.slots, Math.max(n.busySlots, n.segments > 0 ? n.slots : 0)), 0);
  const free = Math.max(0, slots - busy);
  // The backlog: queued jobs and the chunks of running jobs that wait for a slot. A free slot
  // takes a queued chunk by itself (work stealing), so only chunks beyond the free slots count.
  const chunks = s.queuedChunks ?? 0;
  const backlog = s.queueDepth + chunks;
  const what = [s.queueDepth > 0 ? `${s.queueDepth} job(s)` : '', chunks > 0 ? `${chunks} queued chunk(s)` : ''].filter(Boolean).join(' and ');
  if (backlog > 0 && backlog > free * p.backlogPerSlot) {
    if (count >= p.maxNodes) return { action: 'none', reason: `backlog of ${what} but already at the maximum of ${p.maxNodes} node(s)` };
    if (s.pendingNodes > 0) return { action: 'none', reason: `waiting for ${s.pendingNodes} node(s) to join` };
    if (s.nowMs - m.lastUpAtMs < p.upCooldownMs) return { action: 'none', reason: 'scale-up cooldown' };
    const add = Math.min(p.scaleUpStep, p.maxNodes - count);
    return { action: 'up', count: add, reason: `backlog of ${what} with ${free} free slot(s) of ${slots}` };
  }
  if (backlog === 0 && count > p.minNodes) {
    if (s.nowMs - m.lastDownAtMs < p.downCooldownMs || s.nowMs - m.lastUpAtMs < p.downCooldownMs) return { action: 'none', reason: 'scale-down cooldown' };
    const idle = active
      .filter((n) => n.busySlots === 0 && n.segments === 0 && n.idleSinceMs !== undefined && s.nowMs - n.idleSinceMs >= p.idleMs)
      .sort((a, b) => a.slots - b.slots || (a.idleSinceMs ?? 0) - (b.idleSinceMs ?? 0) || (a.id < b.id ? -1 : 1));
    const removable = Math.min(idle.length, count - p.minNodes);
    if (removable > 0) {
      const ids = idle.slice(0, removable).map((n) => n.id);
      return { action: 'down', nodeIds: ids, reason: `${ids.length} node(s) idle for at least ${Math.round(p.idleMs / 1000)} s with an empty queue` };
    }
  }
  return { action: 'none', reason: `steady${unservedNote}` };
}
