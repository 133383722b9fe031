import type { Job } from '../proto/gen/tessera/v1/types.js';

/** "ETA 42s (p90 1m05s)" while the job record has an estimate, else ''. */
export function etaText(job: Pick<Job, 'etaP50Sec' | 'etaP90Sec'>): string {
  if (!(job.etaP50Sec > 0)) return '';
  const fmt = (sec: number): string => {
    const s = Math.max(1, Math.round(sec));
    return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
  };
  return `ETA ${fmt(job.etaP50Sec)} (p90 ${fmt(Math.max(job.etaP50Sec, job.etaP90Sec))})`;
}
