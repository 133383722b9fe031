import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import { listKeys, listStrings } from '../../common/etcd.js';
import type { Keys } from '../../common/keys.js';
import { SerialRunner } from '../../common/serial-runner.js';
import { ResilientWatch } from '../../common/watch.js';
import type { Logger } from '../../common/logger.js';
import type { NodeRecord, NodeStats, UploaderRecord } from '../../common/records.js';
import { nodeRecordSchema, nodeStatsSchema, parseRecord, uploaderRecordSchema } from '../../common/record-schemas.js';

export interface NodeView extends NodeRecord {
  draining: boolean;
  stats: NodeStats | undefined;
  /** 'admitted' once the node proved its identity (always, without an admission check). */
  admission: 'pending' | 'admitted' | 'refused';
  /** Why the node is not admitted (TLS identity mismatch, unreachable). */
  admissionReason?: string;
  /** Since when (ms) this coordinator's health probes have not reached the node; absent while they do. */
  unreachableSinceMs?: number;
}

/**
 * Health probes of registered nodes from this coordinator. A node that is registered (its lease
 * alive: it reaches etcd) but does not answer `failures` probes in a row is unreachable from
 * here: it takes no new segments, and the segments it holds are moved ('unreachable' event).
 */
export interface NodeProbe {
  /** Resolves true when the node answered at all (any health status), false when it did not. */
  check: (node: NodeRecord) => Promise<boolean>;
  intervalMs: number;
  failures: number;
  /** A node left, or came back as another incarnation: what its probes kept open to `address` can go. */
  forget?: (address: string) => void;
  /** The registry stops. */
  close?: () => void;
}

/** One life of a node agent: a restart under the same id has another address or start time. */
export function incarnation(r: Pick<NodeRecord, 'address' | 'startedAtMs'>): string {
  return `${r.address}|${r.startedAtMs}`;
}

/**
 * Admission check of a newly registered node (with TLS: dial it and require its certificate to
 * name its node id). Resolves to undefined when admitted, or the reason for refusing it.
 */
export type AdmitNode = (node: NodeRecord) => Promise<string | undefined>;

interface Admission {
  /** Which registration this verdict is for (a restarted node is checked again). */
  key: string;
  state: NodeView['admission'];
  reason?: string;
  checking: boolean;
}

/**
 * The coordinator's view of the cluster: node agents (with drain marks and load) and uploaders,
 * kept current by etcd watches and re-listed periodically because a watch can lag or be compacted.
 */
export class NodeRegistry extends EventEmitter<{ added: [NodeView]; removed: [string]; unreachable: [string]; changed: [] }> {
  private nodes = new Map<string, NodeRecord>();
  private stats = new Map<string, NodeStats>();
  private drains = new Set<string>();
  private uploaders = new Map<string, UploaderRecord>();
  private watchers: ResilientWatch[] = [];
  private timer: NodeJS.Timeout | undefined;
  private admissions = new Map<string, Admission>();
  /** Probe state per node id: consecutive failures, and since when it is unreachable. */
  private probes = new Map<string, { key: string; address: string; failures: number; since?: number; checking: boolean }>();
  private probeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly log: Logger,
    private readonly relistMs = 5_000,
    /** Without one every registered node is admitted (plaintext clusters). */
    private readonly admit?: AdmitNode,
    /** Without one every registered node counts as reachable. */
    private readonly probe?: NodeProbe,
  ) {
    super();
    // Every segment in flight listens for its node's removal: hundreds at scale, and no leak.
    this.setMaxListeners(0);
  }

  async start(): Promise<void> {
    // Every watch re-watches after compaction and then re-lists (ResilientWatch).
    for (const prefix of [this.keys.nodes(), this.keys.drains(), this.keys.uploaders()]) {
      const relist = (): void => this.scheduleRelist();
      this.watchers.push(await ResilientWatch.open(this.etcd, { prefix }, { put: relist, delete: relist, resync: relist }, this.log));
    }
    // Load figures change all the time (every agent, every few seconds): each event updates its
    // node's entry instead of re-listing the whole registry (a re-list per heartbeat took a fifth
    // of the coordinator's CPU with 100 agents). The periodic re-list still reconciles.
    const statsPrefix = this.keys.nodeStatsAll();
    const ws = await ResilientWatch.open(
      this.etcd,
      { prefix: statsPrefix },
      {
        resync: () => this.scheduleRelist(),
        put: (kv) => {
          try {
            this.stats.set(kv.key.toString().slice(statsPrefix.length), parseRecord(nodeStatsSchema, kv.value, kv.key.toString()));
            this.views = undefined;
          } catch (err) {
            this.log.warn({ err, key: kv.key.toString() }, 'unreadable node stats');
          }
        },
        delete: (kv) => {
          this.stats.delete(kv.key.toString().slice(statsPrefix.length));
          this.views = undefined;
        },
      },
      this.log,
    );
    this.watchers.push(ws);
    await this.relist();
    this.timer = setInterval(() => this.scheduleRelist(), this.relistMs);
    if (this.probe) this.probeTimer = setInterval(() => this.probeAll(), this.probe.intervalMs);
  }

  /** One round of health probes (each node at most one in flight). */
  private probeAll(): void {
    const probe = this.probe;
    if (!probe) return;
    for (const [id, p] of this.probes) {
      if (this.nodes.has(id)) continue;
      this.probes.delete(id);
      probe.forget?.(p.address);
    }
    for (const [id, r] of this.nodes) {
      const key = incarnation(r);
      let p = this.probes.get(id);
      if (p?.key !== key) {
        if (p) probe.forget?.(p.address);
        p = { key, address: r.address, failures: 0, checking: false };
        this.probes.set(id, p);
      }
      if (p.checking) continue;
      const entry = p;
      entry.checking = true;
      probe
        .check(r)
        .catch(() => false)
        .then(
          (ok) => {
            entry.checking = false;
            if (this.probes.get(id) !== entry) return;
            if (ok) {
              entry.failures = 0;
              if (entry.since !== undefined) {
                this.log.info({ nodeId: id, unreachableMs: Date.now() - entry.since }, 'node reachable again');
                delete entry.since;
                this.views = undefined;
                this.emit('changed');
              }
              return;
            }
            entry.failures++;
            if (entry.failures >= probe.failures && entry.since === undefined) {
              entry.since = Date.now();
              this.log.warn({ nodeId: id, failures: entry.failures }, 'node unreachable from this coordinator: no segments go to it, and its segments move');
              this.views = undefined;
              this.emit('unreachable', id);
              this.emit('changed');
            }
          },
          () => undefined,
        );
    }
  }

  /** False while this coordinator's probes do not reach the node. */
  reachable(id: string): boolean {
    return this.probes.get(id)?.since === undefined;
  }

  /** Coalesces bursts of watch events into one re-list at a time. */
  private readonly relister = new SerialRunner(
    () => this.relist(),
    (err) => this.log.warn({ err }, 'registry re-list failed'),
  );

  private scheduleRelist(): void {
    this.relister.kick();
  }

  /** Waits for any in-flight re-list (tests, and callers that just changed a node). */
  async refresh(): Promise<void> {
    await this.relister.idle();
    await this.relist();
  }

  private async relist(): Promise<void> {
    const [nodes, drains, uploaders, stats] = await Promise.all([
      // Paged: no response grows with the fleet past etcd's message cap.
      listStrings(this.etcd, this.keys.nodes()),
      listKeys(this.etcd, this.keys.drains()),
      listStrings(this.etcd, this.keys.uploaders()),
      listStrings(this.etcd, this.keys.nodeStatsAll()),
    ]);
    const next = new Map<string, NodeRecord>();
    for (const v of Object.values(nodes)) {
      const r = parseRecord(nodeRecordSchema, v, 'nodes/');
      next.set(r.id, r);
    }
    const before = new Set(this.nodes.keys());
    for (const [id, old] of this.nodes) {
      const now = next.get(id);
      if (!now) {
        this.log.info({ nodeId: id }, 'node left');
        this.emit('removed', id);
      } else if (incarnation(now) !== incarnation(old)) {
        // Restarted under the same id and took its registration over: the old incarnation is
        // gone (its segments are reassigned, its writes fenced); the new one joins afresh.
        this.log.info({ nodeId: id, previous: incarnation(old), now: incarnation(now) }, 'node restarted under the same id');
        this.emit('removed', id);
        before.delete(id);
      }
    }
    this.nodes = next;
    this.drains = new Set(drains.map((k) => k.slice(this.keys.drains().length)));
    this.uploaders = new Map(
      Object.values(uploaders).map((v) => {
        const u = parseRecord(uploaderRecordSchema, v, 'uploaders/');
        return [u.id, u];
      }),
    );
    this.stats = new Map(Object.entries(stats).map(([k, v]) => [k.slice(this.keys.nodeStatsAll().length), parseRecord(nodeStatsSchema, v, k)]));
    for (const id of this.admissions.keys()) if (!next.has(id)) this.admissions.delete(id);
    this.views = undefined;
    for (const [id, r] of next) {
      if (!before.has(id)) {
        this.log.info({ nodeId: id }, 'node joined');
        this.emit('added', this.view(id)!);
      }
      this.checkAdmission(r);
    }
    this.views = undefined;
    this.emit('changed');
  }

  /**
   * Runs the admission check of a registration not yet admitted (again at every re-list while it
   * is refused: an unreachable node may come good; a wrong certificate stays refused).
   */
  private checkAdmission(r: NodeRecord): void {
    if (!this.admit) return;
    const key = incarnation(r);
    let a = this.admissions.get(r.id);
    if (a?.key !== key) {
      a = { key, state: 'pending', checking: false };
      this.admissions.set(r.id, a);
    }
    if (a.state === 'admitted' || a.checking) return;
    const entry = a;
    entry.checking = true;
    this.admit(r)
      .catch((err: unknown) => (err instanceof Error ? err.message : String(err)))
      .then(
        (reason) => {
          entry.checking = false;
          if (this.admissions.get(r.id) !== entry) return;
          const state = reason === undefined ? 'admitted' : 'refused';
          if (state !== entry.state || reason !== entry.reason) {
            if (state === 'admitted') this.log.info({ nodeId: r.id }, 'node admitted');
            else this.log.warn({ nodeId: r.id, reason }, 'node refused: it takes no segments');
          }
          entry.state = state;
          if (reason === undefined) delete entry.reason;
          else entry.reason = reason;
          this.views = undefined;
          this.emit('changed');
        },
        () => undefined,
      );
  }

  private view(id: string): NodeView | undefined {
    const r = this.nodes.get(id);
    if (!r) return undefined;
    const a = this.admit ? this.admissions.get(id) : undefined;
    return {
      ...r,
      draining: this.drains.has(id),
      stats: this.stats.get(id),
      admission: this.admit ? (a?.state ?? 'pending') : 'admitted',
      ...(a?.reason !== undefined ? { admissionReason: a.reason } : {}),
      ...(this.probes.get(id)?.since !== undefined ? { unreachableSinceMs: this.probes.get(id)!.since! } : {}),
    };
  }

  has(id: string): boolean {
    return this.nodes.has(id);
  }

  get(id: string): NodeView | undefined {
    return this.view(id);
  }

  /** Views of every node and of the ready ones, built once per change (every dispatch asks). */
  private views: { all: NodeView[]; ready: NodeView[] } | undefined;

  private currentViews(): { all: NodeView[]; ready: NodeView[] } {
    if (!this.views) {
      const all = [...this.nodes.keys()].sort().map((id) => this.view(id)!);
      // A node that says it is not ready (its staging is full) takes no new segments either.
      // Nor does one this coordinator cannot reach (it may still reach etcd: an asymmetric partition).
      this.views = { all, ready: all.filter((n) => !n.draining && n.admission === 'admitted' && !n.stats?.notReady && n.unreachableSinceMs === undefined) };
    }
    return this.views;
  }

  /** Every registered node, sorted by id. */
  all(): NodeView[] {
    return [...this.currentViews().all];
  }

  /** Nodes that may take new segments: registered, admitted and not draining. */
  ready(): NodeView[] {
    return [...this.currentViews().ready];
  }

  uploaderList(): UploaderRecord[] {
    return [...this.uploaders.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  uploader(id: string): UploaderRecord | undefined {
    return this.uploaders.get(id);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probe?.close?.();
    await Promise.all(this.watchers.map((w) => w.cancel()));
    this.watchers = [];
  }
}
