import type { JobResult, RenditionResult, SourceInfo } from '../proto/gen/tessera/v1/types.js';

/** `manifest.json` inside every archive: what was made, from what, and how to verify it. */
export interface Manifest {
  tessera: { version: string; jobId: string; createdAt: string };
  source: SourceInfo | undefined;
  container: string;
  renditions: RenditionResult[];
  /** Every audio track, in the order the renditions carry them ([] for a silent source). */
  audio: { codec: string; language: string; title: string; channels: number; durationSec: number }[];
  timings: Record<string, number>;
  /** What the job changed in its request, e.g. ladder rungs dropped (never upscaled). */
  notes: string[];
  /** HLS/DASH output (when asked for): its manifests and every file under the stream prefix, with SHA-256. */
  streaming?: { hls: string; dash: string; poster: string; thumbnails: string; targetDurationSec: number; files: { name: string; bytes: number; sha256: string }[] };
}

export function buildManifest(m: Manifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}

export type { JobResult };
