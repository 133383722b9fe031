import { planCuts } from '../transcoder/plan-cuts.js';
import type { PlannedCut } from './job-model.js';

export interface PlanNode {
  id: string;
  slots: number;
}

/**
 * Splits the input by node count: one segment per ready node, sized by the node's worker slots
 * (equal work per slot), cut on keyframes, never shorter than `minSegmentSec` — so a short input
 * gets fewer segments than there are nodes. Segment i goes to nodes[i] (nodes sorted by id).
 */
export function planSegments(args: {
  keyframes: number[];
  durationSec: number;
  fps: number;
  nodes: PlanNode[];
  minSegmentSec: number;
}): PlannedCut[] {
  const nodes = [...args.nodes].sort((a, b) => (a.id < b.id ? -1 : 1));
  const cuts = planCuts({
    keyframes: args.keyframes,
    durationSec: args.durationSec,
    weights: nodes.map((n) => Math.max(1, n.slots)),
    minSegmentSec: args.minSegmentSec,
  });
  // When fewer segments than nodes fit, hand them to the nodes with the most slots first.
  const bySlots = cuts.length < nodes.length ? [...nodes].sort((a, b) => b.slots - a.slots || (a.id < b.id ? -1 : 1)) : nodes;
  return cuts.map((c, i) => ({
    index: c.index,
    startSec: c.startSec,
    endSec: c.endSec,
    frames: Math.round((c.endSec - c.startSec) * args.fps),
    nodeId: bySlots[i % bySlots.length]?.id ?? '',
  }));
}
