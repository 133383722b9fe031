import type { TesseraClient } from '../sdk/client.js';
import { JobState, type Job, type JobSpec } from '../proto/gen/tessera/v1/types.js';

/** One watch event as the benchmark keeps it: when (ms), progress (%), the ETA (s) then. */
export interface EtaSample {
  atMs: number;
  progress: number;
  p50: number;
  p90: number;
}

/** The ETA at a point of the job against the time that really remained. */
export interface EtaReading {
  at: number;
  /** Progress (%) of the first event at or past `at` that carried an ETA. */
  progress: number;
  predictedSec: number;
  p90Sec: number;
  actualSec: number;
  /** (predicted − actual) / actual. */
  error: number;
  withinP90: boolean;
}

/**
 * How good the ETA was at each progress point (25, 50, 75 %): the p50 the watch stream showed
 * when the job first reached the point, against the time that really remained until SUCCEEDED.
 * Pure; `endMs` is when the job ended.
 */
export function etaReadings(samples: readonly EtaSample[], endMs: number, points = [25, 50, 75]): EtaReading[] {
  const out: EtaReading[] = [];
  for (const at of points) {
    const s = samples.find((x) => x.progress >= at && x.p50 > 0);
    if (!s) continue;
    const actualSec = (endMs - s.atMs) / 1000;
    out.push({ at, progress: s.progress, predictedSec: s.p50, p90Sec: s.p90, actualSec, error: actualSec > 0 ? (s.p50 - actualSec) / actualSec : Number.NaN, withinP90: actualSec <= s.p90 });
  }
  return out;
}

/** Runs one job to the end, keeping every watch event's progress and ETA. */
export async function watchEta(c: TesseraClient, spec: Partial<JobSpec> & { inputUri: string }): Promise<{ samples: EtaSample[]; endMs: number; job: Job }> {
  const { jobId } = await c.submit(spec);
  const samples: EtaSample[] = [];
  const job = await c.wait(jobId, (j) => samples.push({ atMs: performance.now(), progress: j.progress, p50: j.etaP50Sec, p90: j.etaP90Sec }));
  const endMs = performance.now();
  if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`job ${jobId} ended ${job.state}: ${job.errorCode} ${job.errorMessage}`);
  return { samples, endMs, job };
}
