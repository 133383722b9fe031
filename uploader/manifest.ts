import type { JobResult, RenditionResult, SourceInfo } from '../proto/gen/tessera/v1/types.js';

/** `manifest.json` inside every archive: what was made, from what, and how to verify it. */
export interface Manifest {
  tessera: { version: string; jobId: string; createdAt: string };
  source: SourceInfo | undefined;
  container: string;
  renditions: RenditionResult[];
  audio: { codec: string; durationSec: number } | null;
  timings: Record<string, number>;
}

export function buildManifest(m: Manifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}

export type { JobResult };
