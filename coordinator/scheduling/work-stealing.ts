import type { Etcd3 } from 'etcd3';
import { errorMessage } from '../../common/errors.js';
import { sleep } from '../../common/retry.js';
import { callUnary } from '../../common/grpc.js';
import type { ClientCache } from '../../common/grpc-clients.js';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import { fits, type Placement } from '../../common/placement.js';
import { checkpointComplete, HELPER_ATTEMPT_BASE, type CheckpointRecord } from '../../common/records.js';
import { SegmentFence } from '../../common/segment-fence.js';
import { traceMetadata } from '../../common/trace.js';
import { NodeAgentClient } from '../../common/bulk-codec.js';
import type { SegmentEvent } from '../../proto/gen/tessera/v1/agent.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { NodeRegistry, NodeView } from '../state/node-registry.js';

/** One run in flight on a node: a segment's owner run, or a helper run of some of its chunks. */
export interface WorkUnit {
  key: string;
  jobId: string;
  segment: number;
  nodeId: string;
  attempt: number;
  ownerRevision: number;
  leaderTerm: number;
  helper: boolean;
  placement: Placement | undefined;
  /** The latest event of this run (undefined until the node answered). */
  last: SegmentEvent | undefined;
}

/** What the steal planner sees: ready nodes and what each unit in flight reported (pure input). */
export interface StealView {
  nodes: { id: string; slots: number; node: NodeView }[];
  units: WorkUnit[];
  /** Owner runs that have a steal in progress (one at a time per segment). */
  busy: ReadonlySet<string>;
}

export interface StealPlan {
  victim: WorkUnit;
  thiefId: string;
  chunks: number[];
  /** Nothing of the run has started: the whole segment moves (a new attempt on the thief). */
  move: boolean;
}

/** True when a run waits for a slot with all it has left: nothing running, every remaining chunk queued. */
function waitingWhole(ev: SegmentEvent): boolean {
  return ev.queue !== undefined && ev.queue.running === 0 && ev.queue.queued.length === ev.subSegments - ev.subSegmentsDone;
}

/**
 * Chunk slots a node has spare: its slots less what its runs report running and queued. A run
 * that has not reported yet counts as filling the node (it is being transferred or planned).
 */
export function spareSlots(slots: number, units: readonly WorkUnit[]): number {
  let used = 0;
  for (const u of units) {
    if (!u.last?.queue) used += slots;
    else if (!u.last.done) used += u.last.queue.running + u.last.queue.queued.length;
  }
  return Math.max(0, slots - used);
}

/**
 * Who takes what: each node with spare slots takes, from the owner run with the longest queue on
 * another node (that its placement allows), half of that queue (at least one chunk) from the
 * tail — the chunks the owner would start last. Half, not one per spare slot: a much slower owner
 * then loses most of its queue at once, and two equal nodes end together. A run that has started
 * nothing (it waits behind other work for a slot) moves whole: no chunk plan is needed. Pure.
 */
export function planSteals(view: StealView): StealPlan[] {
  const plans: StealPlan[] = [];
  const taken = new Set<string>(view.busy);
  const byNode = new Map<string, WorkUnit[]>();
  for (const u of view.units) byNode.set(u.nodeId, [...(byNode.get(u.nodeId) ?? []), u]);
  const thieves = view.nodes
    .map((n) => ({ ...n, spare: spareSlots(n.slots, byNode.get(n.id) ?? []) }))
    .filter((n) => n.spare > 0)
    .sort((a, b) => b.spare - a.spare || (a.id < b.id ? -1 : 1));
  for (const thief of thieves) {
    const victims = view.units
      .filter((u) => !u.helper && u.nodeId !== thief.id && !taken.has(u.key) && !u.last?.done && (u.last?.queue?.queued.length ?? 0) > 0 && fits(thief.node, u.placement))
      .sort((a, b) => b.last!.queue!.queued.length - a.last!.queue!.queued.length || (a.key < b.key ? -1 : 1));
    const victim = victims[0];
    if (!victim) continue;
    const queued = victim.last!.queue!.queued;
    // A run waits whole only while its node's slots are taken by its other runs (not in the
    // moment between its first event and its pool starting it).
    const home = view.nodes.find((n) => n.id === victim.nodeId);
    const runningThere = (byNode.get(victim.nodeId) ?? []).filter((u) => u !== victim).reduce((a, u) => a + (u.last?.queue ? u.last.queue.running : (home?.slots ?? 1)), 0);
    if (waitingWhole(victim.last!) && (!home || runningThere >= home.slots)) {
      plans.push({ victim, thiefId: thief.id, chunks: [...queued], move: true });
    } else {
      const n = Math.max(1, Math.ceil(queued.length / 2));
      plans.push({ victim, thiefId: thief.id, chunks: queued.slice(-n), move: false });
    }
    taken.add(victim.key);
  }
  return plans;
}

/** Duplicates: only of a chunk with at least this much left, on a node at most this fraction of the idle one's speed. */
export const DUPLICATE_MIN_REMAINING_SEC = 3;
export const DUPLICATE_SPEED_RATIO = 0.5;

export interface DuplicatePlan {
  victim: WorkUnit;
  thiefId: string;
  chunk: number;
  remainingSec: number;
}

/**
 * When no queued chunk is left anywhere, a node with spare slots may run a copy of the slowest
 * running chunk of a straggler (a node whose measured speed is at most DUPLICATE_SPEED_RATIO of
 * its own); the first copy recorded done wins. The remaining time of a chunk is estimated from its
 * progress (before its first frame: at least what it has run; frames standing still: at least
 * how long they have). Pure.
 */
export function planDuplicates(view: StealView, duplicated: ReadonlySet<string>, stalledSec: (key: string, chunk: number) => number = () => 0): DuplicatePlan[] {
  if (view.units.some((u) => !u.helper && !u.last?.done && (u.last?.queue?.queued.length ?? 0) > 0)) return [];
  const byNode = new Map<string, WorkUnit[]>();
  for (const u of view.units) byNode.set(u.nodeId, [...(byNode.get(u.nodeId) ?? []), u]);
  const speedOf = (id: string): number | undefined => view.nodes.find((n) => n.id === id)?.node.stats?.speedMps;
  const plans: DuplicatePlan[] = [];
  const taken = new Set(duplicated);
  for (const thief of view.nodes) {
    if (spareSlots(thief.slots, byNode.get(thief.id) ?? []) <= 0) continue;
    const mine = speedOf(thief.id);
    if (mine === undefined) continue;
    let best: DuplicatePlan | undefined;
    for (const u of view.units) {
      if (u.helper || u.nodeId === thief.id || u.last?.done || !fits(thief.node, u.placement)) continue;
      const theirs = speedOf(u.nodeId);
      if (theirs === undefined || theirs > DUPLICATE_SPEED_RATIO * mine) continue;
      for (const r of u.last?.queue?.runningChunks ?? []) {
        if (taken.has(`${u.key}/${r.chunk}`)) continue;
        const elapsed = r.elapsedMs / 1000;
        // From its progress; a chunk whose frames stand still (an encoder's lookahead, a frozen
        // process) has at least as long left as it has stood still.
        const remainingSec = Math.max(r.framesDone > 0 ? (elapsed * (r.framesTotal - r.framesDone)) / r.framesDone : elapsed, stalledSec(u.key, r.chunk));
        if (remainingSec >= DUPLICATE_MIN_REMAINING_SEC && (!best || remainingSec > best.remainingSec)) best = { victim: u, thiefId: thief.id, chunk: r.chunk, remainingSec };
      }
    }
    if (best) {
      plans.push(best);
      taken.add(`${best.victim.key}/${best.chunk}`);
    }
  }
  return plans;
}

/** A helper run the stealer starts: the dispatch module streams the segment and runs the chunks. */
export type HelperRunner = (victim: WorkUnit, thief: NodeView, helperAttempt: number, chunks: number[], onEvent: (ev: SegmentEvent) => void, signal: AbortSignal) => Promise<void>;

interface OwnerState {
  unit: WorkUnit;
  /** Helper runs started for this owner run (they never reject). */
  helpers: Promise<void>[];
  /** Each helper's latest event, by helper attempt. */
  helperEvents: Map<number, SegmentEvent>;
  /** Helper runs (and copies) still running, by helper attempt: their node, chunks and run. */
  live: Map<number, { nodeId: string; chunks: number[]; run: Promise<void> }>;
  /** Relays the owner's and the helpers' progress as one segment event. */
  emit: (ev: SegmentEvent) => void;
  runHelper: HelperRunner;
  abort: AbortController;
  released: boolean;
  /** The whole segment was released to move to this node (a new attempt there). */
  movedTo: string | undefined;
}

/**
 * Work stealing on the leading coordinator. Every owner run registers here and reports its chunk
 * queue (SegmentEvent.queue); every `intervalMs` a node with spare slots takes queued chunks from
 * the longest queue on another node: the owner releases them (ReleaseChunks: only chunks not
 * started), the release is recorded in the segment's checkpoint (fenced on the owner revision:
 * the uploader then accepts the helper's parts), and a helper run on the idle node transcodes
 * them under its own attempt number. Each chunk is recorded done once (the first fenced
 * checkpoint write); the owner's dispatch waits for its helpers and reassigns the segment if a
 * released chunk was not done (the new attempt redoes only the missing chunks).
 */
export class WorkStealer {
  private readonly owners = new Map<string, OwnerState>();
  private readonly helpersInFlight = new Map<string, WorkUnit>();
  private readonly stealing = new Set<string>();
  /** Each running chunk's frames when they last moved (`<owner key>/<chunk>`). */
  private readonly lastMoved = new Map<string, { frames: number; atMs: number }>();
  /** Running chunks with a copy on another node (`<owner key>/<chunk>`). */
  private readonly duplicated = new Set<string>();
  duplicatedChunks = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  stolenChunks = 0;

  constructor(
    private readonly d: {
      etcd: Etcd3;
      keys: Keys;
      registry: NodeRegistry;
      clients: ClientCache;
      metrics: CoordinatorMetrics;
      log: Logger;
      rpcTimeoutMs: number;
      /** 0: work stealing off. */
      intervalMs: number;
    },
  ) {}

  get enabled(): boolean {
    return this.d.intervalMs > 0;
  }

  start(): void {
    if (!this.enabled || this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.d.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const o of this.owners.values()) o.abort.abort(new Error('stopped'));
  }

  /** Chunks waiting for a worker slot on the nodes (the autoscaler's backlog). */
  backlog(): number {
    let n = 0;
    for (const o of this.owners.values()) if (!o.unit.last?.done) n += o.unit.last?.queue?.queued.length ?? 0;
    return n;
  }

  /** An owner run started; `emit` gets its events combined with its helpers'. */
  registerOwner(
    unit: WorkUnit,
    emit: (ev: SegmentEvent) => void,
    runHelper: HelperRunner,
  ): {
    event: (ev: SegmentEvent) => void;
    settle: (waitMs: number) => Promise<boolean>;
    finishHelpers: (waitMs: number, signal: AbortSignal) => Promise<void>;
    movedTo: () => string | undefined;
    close: () => void;
  } {
    const state: OwnerState = { unit, helpers: [], helperEvents: new Map(), live: new Map(), emit, runHelper, abort: new AbortController(), released: false, movedTo: undefined };
    this.owners.set(unit.key, state);
    return {
      event: (ev) => {
        unit.last = ev;
        this.relay(state);
      },
      // Waits for the helper runs; false when a chunk released to one is not recorded done. The
      // owner's last event says whether any chunk was left to others (helpers this leader started,
      // or, after a change of leader, ones the previous leader started: waited for up to `waitMs`).
      settle: async (waitMs: number) => {
        await Promise.all(state.helpers);
        const own = unit.last;
        if (!state.released && !(own && own.subSegments > 0 && own.subSegmentsDone < own.subSegments)) return true;
        const fence = new SegmentFence(this.d.etcd, this.d.keys, unit.jobId, unit.segment, unit.ownerRevision);
        for (const until = Date.now() + (state.released ? 0 : waitMs); ; await new Promise((r) => setTimeout(r, 500))) {
          if (checkpointComplete((await fence.readCheckpoint())?.value)) return true;
          if (Date.now() >= until) return false;
        }
      },
      finishHelpers: (waitMs, signal) => this.finishHelpers(state, waitMs, signal),
      movedTo: () => state.movedTo,
      close: () => {
        state.abort.abort(new Error('owner run ended'));
        if (this.owners.get(unit.key) === state) this.owners.delete(unit.key);
      },
    };
  }

  private relay(o: OwnerState): void {
    const own = o.unit.last;
    if (!own) return;
    let frames = own.framesDone;
    let subs = own.subSegmentsDone;
    for (const h of o.helperEvents.values()) {
      frames += h.framesDone;
      subs += h.subSegmentsDone;
    }
    o.emit({ ...own, framesDone: Math.min(own.framesTotal || frames, frames), subSegmentsDone: Math.min(own.subSegments || subs, subs), done: false });
  }

  /** One round: plan steals from what the runs reported, and start them. */
  async tick(): Promise<void> {
    if (this.ticking || this.owners.size === 0) return;
    this.ticking = true;
    try {
      const units = [...[...this.owners.values()].map((o) => o.unit), ...this.helpersInFlight.values()];
      const nodes = this.d.registry.ready().map((n) => ({ id: n.id, slots: n.slots, node: n }));
      const plans = planSteals({ nodes, units, busy: this.stealing });
      const now = Date.now();
      const seen = new Set<string>();
      for (const u of units) {
        for (const r of u.last?.queue?.runningChunks ?? []) {
          const k = `${u.key}/${r.chunk}`;
          seen.add(k);
          const prev = this.lastMoved.get(k);
          if (!prev || prev.frames !== r.framesDone) this.lastMoved.set(k, { frames: r.framesDone, atMs: now });
        }
      }
      for (const k of [...this.lastMoved.keys()]) if (!seen.has(k)) this.lastMoved.delete(k);
      const stalledSec = (key: string, chunk: number): number => (now - (this.lastMoved.get(`${key}/${chunk}`)?.atMs ?? now)) / 1000;
      if (plans.length === 0) {
        for (const p of planDuplicates({ nodes, units, busy: this.stealing }, this.duplicated, stalledSec)) {
          const o = this.owners.get(p.victim.key);
          const thief = this.d.registry.get(p.thiefId);
          if (!o || !thief) continue;
          const mark = `${p.victim.key}/${p.chunk}`;
          this.duplicated.add(mark);
          const pending: WorkUnit = { ...p.victim, key: `${mark}/dup-${p.thiefId}`, nodeId: p.thiefId, helper: true, last: undefined };
          this.helpersInFlight.set(pending.key, pending);
          void this.duplicate(o, thief, p.chunk, p.remainingSec)
            .catch((err: unknown) => this.d.log.warn({ jobId: p.victim.jobId, segment: p.victim.segment, chunk: p.chunk, node: p.thiefId, err: errorMessage(err) }, 'duplicate run failed'))
            .finally(() => this.helpersInFlight.delete(pending.key));
        }
      }
      for (const p of plans) {
        const o = this.owners.get(p.victim.key);
        const thief = this.d.registry.get(p.thiefId);
        if (!o || !thief) continue;
        this.stealing.add(p.victim.key);
        // Counted as filling the thief until its helper run reports.
        const pending: WorkUnit = { ...p.victim, key: `${p.victim.key}/pending-${p.thiefId}`, nodeId: p.thiefId, helper: true, last: undefined };
        this.helpersInFlight.set(pending.key, pending);
        void (p.move ? this.move(o, thief, p.chunks) : this.steal(o, thief, p.chunks))
          .catch((err: unknown) => this.d.log.warn({ jobId: p.victim.jobId, segment: p.victim.segment, thief: p.thiefId, err: errorMessage(err) }, 'work steal failed'))
          .finally(() => {
            this.stealing.delete(p.victim.key);
            this.helpersInFlight.delete(pending.key);
          });
      }
    } finally {
      this.ticking = false;
    }
  }

  /** Asks the node of run `v` (an owner's, or a helper's) to give up (or, with `cancelRunning`, stop) chunks of it; answers those it did. */
  private async releaseOnOwner(v: WorkUnit, chunks: number[], how: { all?: boolean; cancelRunning?: boolean } = {}): Promise<number[]> {
    const owner = this.d.registry.get(v.nodeId);
    if (!owner) return [];
    const client = this.d.clients.get(NodeAgentClient, owner.address, owner.id);
    const ref = { jobId: v.jobId, segment: v.segment, attempt: v.attempt, ownerRevision: v.ownerRevision, leaderTerm: v.leaderTerm };
    const res = await callUnary(client, client.releaseChunks, { ref, chunks, ...how }, this.d.rpcTimeoutMs, traceMetadata(v.jobId));
    return res.released;
  }

  /** Names the helper attempt's node and chunks in the segment's checkpoint (fenced on the owner): the uploader accepts its parts then. */
  private recordHelper(fence: SegmentFence, helperAttempt: number, nodeId: string, chunks: number[]): Promise<CheckpointRecord> {
    return fence.updateCheckpoint((c) => (c ? { ...c, helpers: { ...c.helpers, [String(helperAttempt)]: { nodeId, chunks } } } : undefined));
  }

  /** Runs a helper attempt on `thief`, counted on that node while it runs, its progress added to the owner's. */
  private async runHelperUnit(o: OwnerState, thief: NodeView, helperAttempt: number, chunks: number[], tag: string): Promise<void> {
    const v = o.unit;
    const unit: WorkUnit = { ...v, key: `${v.key}/${tag}${helperAttempt}`, nodeId: thief.id, attempt: helperAttempt, helper: true, last: undefined };
    this.helpersInFlight.set(unit.key, unit);
    const onEvent = (ev: SegmentEvent): void => {
      unit.last = ev;
      o.helperEvents.set(helperAttempt, ev);
      this.relay(o);
    };
    const run = o.runHelper(v, thief, helperAttempt, chunks, onEvent, o.abort.signal);
    o.live.set(helperAttempt, { nodeId: thief.id, chunks, run: run.catch(() => undefined) });
    try {
      await run;
    } finally {
      o.live.delete(helperAttempt);
      this.helpersInFlight.delete(unit.key);
    }
  }

  /**
   * The owner's attempt failed (its node died, left, or stopped answering): the helpers and copies
   * still running chunks of its segment finish those before the segment is reassigned. Their
   * checkpoint writes are fenced on this attempt's owner revision, which holds until the new
   * attempt is written, so a chunk a live helper had under way is recorded once and not redone.
   * Each helper first gives back the chunks it has not started (ReleaseChunks on the helper's run),
   * which the new attempt takes with the dead owner's. Waits at most `waitMs`, or until `signal`.
   */
  private async finishHelpers(o: OwnerState, waitMs: number, signal: AbortSignal): Promise<void> {
    if (o.live.size === 0) return;
    const v = o.unit;
    const runs = [...o.live].map(([attempt, h]) => ({ attempt, ...h }));
    const given = await Promise.all(
      runs.map((h) =>
        this.releaseOnOwner({ ...v, nodeId: h.nodeId, attempt: h.attempt }, h.chunks).catch((err: unknown) => {
          this.d.log.warn({ jobId: v.jobId, segment: v.segment, node: h.nodeId, helperAttempt: h.attempt, err: errorMessage(err) }, 'could not take back the chunks a helper had not started');
          return [];
        }),
      ),
    );
    this.d.log.info(
      { jobId: v.jobId, segment: v.segment, owner: v.nodeId, helpers: runs.map((h, i) => ({ node: h.nodeId, helperAttempt: h.attempt, givenBack: given[i] })) },
      "the segment's owner failed: its helpers finish the chunks they are running before it is reassigned",
    );
    const waited = new AbortController(); // ends the bound's timer once the runs are done
    try {
      await Promise.race([Promise.all(runs.map((h) => h.run)), sleep(waitMs, AbortSignal.any([signal, waited.signal])).catch(() => undefined)]);
    } finally {
      waited.abort();
    }
  }

  /**
   * A run that waits for a slot with everything it has left moves whole: its owner releases every
   * chunk (all or nothing), its RunSegment ends, and the dispatch assigns the segment to the thief
   * as a new attempt (no failure counted; the checkpoint carries whatever was done before).
   */
  private async move(o: OwnerState, thief: NodeView, chunks: number[]): Promise<void> {
    const v = o.unit;
    if (!this.d.registry.get(v.nodeId)) return;
    o.movedTo = thief.id; // set first: the owner's run may end before the answer arrives
    const released = await this.releaseOnOwner(v, chunks, { all: true }).catch((err: unknown) => {
      o.movedTo = undefined;
      throw err;
    });
    if (released.length === 0) {
      o.movedTo = undefined; // a chunk started meanwhile: it stays
      return;
    }
    this.stolenChunks += released.length;
    this.d.metrics.chunksStolen.inc(released.length);
    this.d.log.info({ jobId: v.jobId, segment: v.segment, from: v.nodeId, to: thief.id, chunks: released }, 'queued segment moved to an idle node');
  }

  /**
   * Runs a copy of a straggler's running chunk on an idle node. The copy is recorded in the
   * checkpoint (its parts are then accepted from that node) but nothing is released: both run, the
   * first fenced checkpoint write wins, and the owner's copy is stopped when the idle node's won.
   * A copy that lost is dropped with the owner's run (its parts are never named in a checkpoint).
   */
  private async duplicate(o: OwnerState, thief: NodeView, chunk: number, remainingSec: number): Promise<void> {
    const v = o.unit;
    if (!this.d.registry.get(v.nodeId)) return;
    const fence = new SegmentFence(this.d.etcd, this.d.keys, v.jobId, v.segment, v.ownerRevision);
    const cur = await fence.readCheckpoint();
    if (!cur || cur.value.boundaries.length < 3 || cur.value.done.some((d) => d.sub === chunk)) return;
    const helperAttempt = nextHelperAttempt(cur.value);
    await this.recordHelper(fence, helperAttempt, thief.id, [chunk]);
    this.duplicatedChunks++;
    this.d.metrics.chunksDuplicated.inc();
    this.d.log.info(
      { jobId: v.jobId, segment: v.segment, chunk, slow: v.nodeId, copy: thief.id, remainingSec: Math.round(remainingSec * 10) / 10, helperAttempt },
      "running a copy of a straggler's chunk",
    );
    // The copy's run may end in an error because the straggler won (its segment finished and the
    // run was stopped): the checkpoint, not the run, says who finished the chunk.
    let runFailed: { err: unknown } | undefined;
    await this.runHelperUnit(o, thief, helperAttempt, [chunk], 'd').catch((err: unknown) => {
      runFailed = { err };
    });
    const done = (await fence.readCheckpoint())?.value.done.find((d) => d.sub === chunk);
    if (!done && runFailed) throw runFailed.err;
    const won = done?.attempt === helperAttempt;
    this.d.log.info({ jobId: v.jobId, segment: v.segment, chunk, copy: thief.id, won }, won ? "the copy finished first: stopping the straggler's" : 'the straggler finished first');
    if (won) await this.releaseOnOwner(v, [chunk], { cancelRunning: true });
  }

  private async steal(o: OwnerState, thief: NodeView, chunks: number[]): Promise<void> {
    const v = o.unit;
    if (!this.d.registry.get(v.nodeId)) return;
    const fence = new SegmentFence(this.d.etcd, this.d.keys, v.jobId, v.segment, v.ownerRevision);
    const cur = await fence.readCheckpoint();
    if (!cur || cur.value.boundaries.length < 3) return; // the owner has not recorded its chunks
    const helperAttempt = nextHelperAttempt(cur.value);
    const released = await this.releaseOnOwner(v, chunks);
    if (released.length === 0) return;
    o.released = true; // from here on, the owner's dispatch checks that every chunk got done
    // Recorded before the helper sends a part: the uploader accepts its parts from the node named.
    await this.recordHelper(fence, helperAttempt, thief.id, released);
    this.stolenChunks += released.length;
    this.d.metrics.chunksStolen.inc(released.length);
    this.d.log.info({ jobId: v.jobId, segment: v.segment, from: v.nodeId, to: thief.id, chunks: released, helperAttempt }, 'chunks moved to an idle node');
    const run = this.runHelperUnit(o, thief, helperAttempt, released, 'h').catch((err: unknown) => {
      this.d.log.warn({ jobId: v.jobId, segment: v.segment, node: thief.id, helperAttempt, err: errorMessage(err) }, 'helper run failed; its chunks are redone by the segment');
    });
    o.helpers.push(run);
  }
}

/** The next helper attempt number of a segment: above every one its checkpoint names. */
export function nextHelperAttempt(cp: CheckpointRecord): number {
  const used = Object.keys(cp.helpers ?? {})
    .map(Number)
    .filter(Number.isFinite);
  return Math.max(HELPER_ATTEMPT_BASE, ...used) + 1;
}
