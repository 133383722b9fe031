/** Shapes of the JSON values the processes share through etcd. */

/** `nodes/<id>`, attached to the node's lease. */
export interface NodeRecord {
  id: string;
  address: string;
  slots: number;
  encoders: string[];
  version: string;
  startedAtMs: number;
  metricsAddress: string;
  /** Capability families (h264, hevc-10bit, nvenc, ...; common/placement.ts); absent from agents before placement. */
  capabilities?: string[] | undefined;
  /** Cores the agent may use (CPU_CORES). */
  cores?: number | undefined;
  /** Placement labels (NODE_LABELS): zone, region, pool. */
  labels?: Record<string, string> | undefined;
}

/** `nodestats/<id>`, attached to the node's lease, refreshed every few seconds. */
export interface NodeStats {
  busySlots: number;
  segmentsDone: number;
  subSegmentsDone: number;
  heartbeatMs: number;
  /**
   * Measured encode speed per worker slot: megapixels of output written per second (all
   * renditions), averaged over recent chunks (EWMA). Absent until the node finished a chunk.
   */
  speedMps?: number | undefined;
  /** Set while the node takes no new work of its own accord (its staging is full), with why. */
  notReady?: string | undefined;
  /** What its staging disk can ever hold for work: its size less the reserve (bytes). */
  stagingBytes?: number | undefined;
}

/** `uploaders/<id>`, attached to the uploader's lease. */
export interface UploaderRecord {
  id: string;
  address: string;
  metricsAddress: string;
  startedAtMs: number;
}

/** `jobs/<id>/segments/<n>/owner`: who may write for this segment. Its mod revision is the fencing token. */
export interface SegmentOwner {
  nodeId: string;
  attempt: number;
  assignedAtMs: number;
}

/** One sub-segment whose renditions are safely with the uploader. */
export interface DoneSubSegment {
  sub: number;
  attempt: number;
  nodeId: string;
  frames: number;
  /** Each rendition part's SHA-256 (hex), as the uploader acknowledged it; finalize verifies the files against it. */
  sha256?: Record<string, string> | undefined;
}

/**
 * `jobs/<id>/segments/<n>/checkpoint`: the sub-segment boundaries (seconds from the segment start,
 * first 0, last the segment end) chosen by the first attempt and re-used by every later one, and
 * the sub-segments already done, each with the attempt whose part is canonical.
 */
export interface CheckpointRecord {
  boundaries: number[];
  done: DoneSubSegment[];
  /** Sub-segments transcoded per attempt (for the rework count). */
  transcodedByAttempt: Record<string, number>;
  /**
   * Work stealing: chunks the owner released to helper runs on other nodes, by the helper's
   * attempt number (≥ HELPER_ATTEMPT_BASE). A helper's parts are accepted from the node named here.
   */
  helpers?: Record<string, { nodeId: string; chunks: number[] }> | undefined;
}

/** Attempt numbers of helper runs start here: their parts never share a name with an owner's. */
export const HELPER_ATTEMPT_BASE = 10_000;

export function isHelperAttempt(attempt: number): boolean {
  return attempt >= HELPER_ATTEMPT_BASE;
}

/** True when every chunk the checkpoint plans is recorded done. */
export function checkpointComplete(cp: CheckpointRecord | undefined): boolean {
  return cp !== undefined && cp.boundaries.length >= 2 && new Set(cp.done.map((x) => x.sub)).size === cp.boundaries.length - 1;
}
