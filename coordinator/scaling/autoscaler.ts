import type { Etcd3 } from 'etcd3';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import { fits, type Placement } from '../../common/placement.js';
import { decide, type AutoscalePolicy, type ClusterSnapshot, type NodePool, type PolicyMemory } from './autoscaler-policy.js';
import type { JobStore } from '../state/job-store.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { NodeRegistry } from '../state/node-registry.js';

/** Where nodes come from: this machine's processes, or a Kubernetes Deployment. */
export interface ScaleProvider {
  readonly name: string;
  /** Starts `count` more node agents (of `pool`, when given: a pool with capabilities or labels of its own). */
  scaleUp(count: number, pool?: NodePool): Promise<void>;
  /** Called after the nodes were marked for draining; removes them once drained. */
  scaleDown(nodeIds: string[]): Promise<void>;
  /** Nodes requested but not registered yet. */
  pending(registered: ReadonlySet<string>): number;
  close(): Promise<void>;
}

/**
 * The autoscaler loop on the leading coordinator: every tick it takes a snapshot (queue depth,
 * nodes with busy slots and held segments), asks the pure policy, and acts. Scale-down always goes
 * through drain: the node stops taking segments, finishes or hands back what it holds, revokes its
 * lease and exits; only then does the provider remove it.
 */
export class Autoscaler {
  private memory: PolicyMemory = { lastUpAtMs: 0, lastDownAtMs: 0 };
  private idleSince = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  readonly decisions: string[] = [];

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly store: JobStore,
    private readonly registry: NodeRegistry,
    private readonly load: ReadonlyMap<string, number>,
    private readonly provider: ScaleProvider,
    private readonly policy: AutoscalePolicy,
    private readonly isLeader: () => boolean,
    private readonly metrics: CoordinatorMetrics,
    private readonly log: Logger,
    private readonly intervalMs = 2_000,
    /** Jobs waiting for a node their placement allows (the job runners fill it). */
    private readonly waiting: ReadonlyMap<string, Placement> = new Map(),
    /** Chunks waiting for a worker slot on the nodes (work stealing's view): the real backlog. */
    private readonly queuedChunks: () => number = () => 0,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
  }

  async tick(now = Date.now()): Promise<void> {
    if (this.ticking || !this.isLeader()) return;
    this.ticking = true;
    try {
      const nodes = this.registry.all();
      for (const n of nodes) {
        const busy = (n.stats?.busySlots ?? 0) > 0 || (this.load.get(n.id) ?? 0) > 0;
        if (busy) this.idleSince.delete(n.id);
        else if (!this.idleSince.has(n.id)) this.idleSince.set(n.id, now);
      }
      const snapshot: ClusterSnapshot = {
        nowMs: now,
        queueDepth: await this.store.queueDepth(),
        queuedChunks: this.queuedChunks(),
        runningJobs: 0,
        pendingNodes: this.provider.pending(new Set(nodes.map((n) => n.id))),
        unserved: [...this.waiting.values()].filter((p) => !nodes.some((n) => !n.draining && fits(n, p))),
        nodes: nodes.map((n) => ({
          id: n.id,
          slots: n.slots,
          busySlots: n.stats?.busySlots ?? 0,
          segments: this.load.get(n.id) ?? 0,
          draining: n.draining,
          idleSinceMs: this.idleSince.get(n.id),
        })),
      };
      const d = decide(snapshot, this.policy, this.memory);
      if (d.action === 'none') return;
      this.record(`${new Date(now).toISOString()} ${d.action} ${d.action === 'up' ? `${d.count}${d.pool ? ` (pool ${d.pool.name})` : ''}` : d.nodeIds.join(',')}: ${d.reason}`);
      this.metrics.autoscalerDecisions.inc({ action: d.action });
      this.log.info({ decision: d }, 'autoscaler decision');
      if (d.action === 'up') {
        this.memory.lastUpAtMs = now;
        await this.provider.scaleUp(d.count, d.pool);
      } else {
        this.memory.lastDownAtMs = now;
        for (const id of d.nodeIds) await this.etcd.put(this.keys.nodeDrain(id)).value(JSON.stringify({ atMs: now, by: 'autoscaler' }));
        await this.provider.scaleDown(d.nodeIds);
      }
    } catch (err) {
      this.log.warn({ err }, 'autoscaler tick failed');
    } finally {
      this.ticking = false;
    }
  }

  private record(line: string): void {
    this.decisions.push(line);
    if (this.decisions.length > 50) this.decisions.shift();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.provider.close();
  }
}
