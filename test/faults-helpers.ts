import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import type { CheckpointRecord } from '../common/records.js';

/** Parsed pino lines of one process's log in a test cluster. */
export function logLines(dir: string, name: string): Record<string, unknown>[] {
  const f = join(dir, 'logs', `${name}.log`);
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

/**
 * Sub-segments transcoded more than once for a job, from the node agents' "sub-segment started"
 * log lines: a (segment, sub) started under two or more attempts counts once.
 */
export function subSegmentsRedone(dir: string, nodeNames: string[], jobId: string): number {
  // A node whose log is missing could hide a redone sub-segment: that is no measurement, not 0.
  const missing = nodeNames.filter((n) => !existsSync(join(dir, 'logs', `${n}.log`)));
  if (missing.length > 0) throw new Error(`no log file for ${missing.join(', ')} under ${join(dir, 'logs')}: cannot count redone sub-segments`);
  const attempts = new Map<string, Set<number>>();
  for (const n of nodeNames) {
    for (const l of logLines(dir, n)) {
      if (l.msg !== 'sub-segment started' || l.jobId !== jobId) continue;
      const key = `${String(l.segment)}/${String(l.sub)}`;
      const set = attempts.get(key) ?? new Set<number>();
      set.add(Number(l.attempt));
      attempts.set(key, set);
    }
  }
  // No sub-segment of the job in any log: the logs are missing or unread, and 0 would be a lie.
  if (attempts.size === 0) throw new Error(`no "sub-segment started" line for job ${jobId} in the logs of ${nodeNames.join(', ')}: cannot count redone sub-segments`);
  return [...attempts.values()].filter((s) => s.size > 1).length;
}

/** Every checkpoint of a job, by segment index. */
export async function checkpoints(etcd: Etcd3, jobId: string): Promise<Map<number, CheckpointRecord>> {
  const all = await etcd.getAll().prefix(`/tessera/jobs/${jobId}/segments/`).strings();
  const out = new Map<number, CheckpointRecord>();
  for (const [k, v] of Object.entries(all)) {
    const m = /\/segments\/(\d+)\/checkpoint$/.exec(k);
    if (m) out.set(Number(m[1]), JSON.parse(v) as CheckpointRecord);
  }
  return out;
}

/**
 * Reads one counter's value (summed over its labels) from a Prometheus text page. A page that
 * cannot be read, or that does not declare the metric, throws: that is no measurement, not 0.
 */
export async function scrapeCounter(metricsAddress: string, name: string): Promise<number> {
  const res = await fetch(`http://${metricsAddress}/metrics`, { signal: AbortSignal.timeout(3_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET http://${metricsAddress}/metrics answered ${res.status}: cannot read ${name}`);
  if (!text.split('\n').some((l) => l.startsWith(`# TYPE ${name} `))) throw new Error(`http://${metricsAddress}/metrics does not declare ${name}`);
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}
