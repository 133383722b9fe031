import { frameCuts, shareBoundaries, snapToGrid } from '../../transcoder/frame-cuts.js';
import type { PacketSummary } from '../../transcoder/keyframes.js';
import { planCuts } from '../../transcoder/plan-cuts.js';
import type { PlannedCut } from '../state/job-model.js';

export interface PlanNode {
  id: string;
  slots: number;
  /** The node's load figures; `speedMps` is its measured encode speed per slot. */
  stats?: { speedMps?: number | undefined } | undefined;
}

/**
 * Measured speeds within this fraction of the median count as the median. Equal machines measure
 * a few per cent apart from run to run (a chunk that shared its core with the coordinator's audio
 * encode or a merge); shares that followed that noise made the job wait for whichever node was
 * given the larger part (the overhead benchmark's second rounds took ~1 s longer than its first).
 */
export const SPEED_NOISE = 0.15;

/**
 * Each node's capacity, the weight of its share: worker slots × measured speed per slot. A node
 * with no history yet counts at the median speed of those with one (its slots alone when none
 * has); a speed within SPEED_NOISE of the median counts as the median. Pure.
 */
export function capacityWeights(nodes: readonly PlanNode[]): number[] {
  const known = nodes
    .map((n) => n.stats?.speedMps)
    .filter((v): v is number => v !== undefined && Number.isFinite(v) && v > 0)
    .sort((a, b) => a - b);
  const median = known.length ? known[Math.floor(known.length / 2)]! : 1;
  return nodes.map((n) => {
    const v = n.stats?.speedMps;
    const speed = v !== undefined && Number.isFinite(v) && v > 0 ? v : median;
    return Math.max(1, n.slots) * (Math.abs(speed / median - 1) <= SPEED_NOISE ? median : speed);
  });
}

/**
 * Splits the input by node count: one segment per ready node, sized by the node's worker slots
 * (equal work per slot), cut on keyframes, never shorter than `minSegmentSec` — so a short input
 * gets fewer segments than there are nodes. Segment i goes to nodes[i] (nodes sorted by id).
 */
export function planSegments(args: { keyframes: number[]; durationSec: number; fps: number; nodes: PlanNode[]; minSegmentSec: number }): PlannedCut[] {
  const nodes = [...args.nodes].sort((a, b) => (a.id < b.id ? -1 : 1));
  const weights = capacityWeights(nodes);
  const cuts = planCuts({
    keyframes: args.keyframes,
    durationSec: args.durationSec,
    weights,
    minSegmentSec: args.minSegmentSec,
  });
  // When fewer segments than nodes fit, hand them to the nodes with the most capacity first.
  const w = new Map(nodes.map((n, i) => [n.id, weights[i]!]));
  const bySlots = cuts.length < nodes.length ? [...nodes].sort((a, b) => w.get(b.id)! - w.get(a.id)! || (a.id < b.id ? -1 : 1)) : nodes;
  return cuts.map((c, i) => ({
    index: c.index,
    startSec: c.startSec,
    endSec: c.endSec,
    frames: Math.round((c.endSec - c.startSec) * args.fps),
    nodeId: bySlots[i % bySlots.length]?.id ?? '',
  }));
}

/**
 * Splits the input by node count at exact frames: one segment per ready node (never shorter than
 * `minSegmentSec`), each node's share of the presented frames following its capacity (slots ×
 * measured speed, capacityWeights), wherever the source's keyframes are (transcoder/frame-cuts.ts). Segment i goes to
 * nodes[i] (sorted by id; the largest weights first when fewer segments fit). Undefined when the
 * stream's GOPs do not allow frame cuts (open GOPs): planSegments cuts on keyframes then.
 */
export function planFrameSegments(args: { packets: PacketSummary; fps: number; nodes: PlanNode[]; minSegmentSec: number; gridSec?: number | undefined }): PlannedCut[] | undefined {
  const total = args.packets.presentedSec.length;
  if (total === 0) return undefined;
  const byId = [...args.nodes].sort((a, b) => (a.id < b.id ? -1 : 1));
  const minFrames = Math.max(1, Math.ceil(args.minSegmentSec * (args.fps > 0 ? args.fps : 30)));
  const fits = Math.max(1, Math.min(byId.length, Math.floor(total / minFrames)));
  const weights = capacityWeights(byId);
  const weightOf = new Map(byId.map((n, i) => [n.id, weights[i]!]));
  const nodes = fits < byId.length ? [...byId].sort((a, b) => weightOf.get(b.id)! - weightOf.get(a.id)! || (a.id < b.id ? -1 : 1)).slice(0, fits) : byId;
  const shares = shareBoundaries(
    total,
    nodes.map((n) => weightOf.get(n.id)!),
    minFrames,
  );
  // Streaming output: every boundary on the keyframe grid (a cut elsewhere adds an IDR mid-segment).
  const bounds = args.gridSec ? snapToGrid(shares, args.packets.presentedSec, args.gridSec) : shares;
  const cuts = frameCuts(args.packets, bounds);
  if (!cuts) return undefined;
  return cuts.map((c, i) => ({
    index: c.index,
    startSec: c.startSec,
    endSec: c.endSec,
    frames: c.endFrame - c.startFrame,
    nodeId: nodes[i]?.id ?? '',
    fromPacket: c.fromPacket,
    toPacket: c.toPacket,
    leadIn: c.leadIn,
    leadOut: c.leadOut,
    originSec: c.originSec,
  }));
}
