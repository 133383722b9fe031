import type { Etcd3 } from 'etcd3';
import type { Compare, LeaderFence } from '../../../common/etcd-tx/compare.js';
import type { Keys } from '../../../common/keys.js';
import type { CheckpointRecord } from '../../../common/records.js';
import { checkpointSchema, parseRecord } from '../../../common/record-schemas.js';
import type { StatusChange } from '../../../proto/gen/tessera/v1/types.js';
import { TERMINAL, type JobRecordDraft, type JobStateName, type SegmentRecord } from '../job-model.js';
import { segmentRecordSchema } from '../job-schemas.js';
import { appendTrail } from './job-writes.js';
import { updateJob } from './update-job.js';

export type ReopenOutcome = { ok: true; invalidated: number; revision: string } | { ok: false; reason: 'finished'; state: JobStateName } | { ok: false; reason: 'missing' | 'fenced' | 'contention' };

/**
 * Parts the uploader lost: their sub-segments are no longer done. In one transaction, fenced on
 * the leader and compared on every checkpoint it rewrites: those sub-segments leave their
 * checkpoints, their segments go back to PENDING, and the job goes back to RUNNING with
 * `uploaderId` and a trail entry per segment. `invalidated` counts the sub-segments taken back.
 */
export async function reopenSubSegments(
  etcd: Etcd3,
  keys: Keys,
  jobId: string,
  lost: ReadonlyMap<number, readonly number[]>,
  uploaderId: string,
  reason: string,
  fence: LeaderFence,
  historyLimit: number,
): Promise<ReopenOutcome> {
  let invalidated = 0;
  let finished: JobStateName | undefined;
  const out = await updateJob(
    etcd,
    keys,
    jobId,
    {
      step: async (rec) => {
        if (TERMINAL.has(rec.state)) {
          finished = rec.state;
          return undefined;
        }
        invalidated = 0;
        const compares: Compare[] = [];
        const puts: [string, string][] = [];
        const trail: StatusChange[] = [];
        const now = Date.now();
        for (const [index, subs] of lost) {
          const [segKv, cpKv] = await Promise.all([etcd.get(keys.segment(jobId, index)).exec(), etcd.get(keys.checkpoint(jobId, index)).exec()]).then(([s, c]) => [s.kvs[0], c.kvs[0]]);
          if (!segKv || !cpKv) continue;
          const seg = parseRecord(segmentRecordSchema, segKv.value, keys.segment(jobId, index));
          const cp = parseRecord(checkpointSchema, cpKv.value, keys.checkpoint(jobId, index));
          const done = cp.done.filter((d) => !subs.includes(d.sub));
          invalidated += cp.done.length - done.length;
          compares.push({ key: keys.checkpoint(jobId, index), target: 'Mod', op: '==', value: cpKv.mod_revision });
          puts.push([keys.checkpoint(jobId, index), JSON.stringify({ ...cp, done } satisfies CheckpointRecord)]);
          puts.push([keys.segment(jobId, index), JSON.stringify({ ...seg, state: 'PENDING' } satisfies SegmentRecord)]);
          trail.push({ atMs: now, scope: `segment/${index}`, state: 'PENDING', nodeId: seg.nodeId, attempt: seg.attempt, reason: `${reason}: sub-segment(s) ${subs.join(', ')} to transcode again` });
        }
        const next: JobRecordDraft = {
          ...rec,
          state: 'RUNNING',
          stage: 'transcoding lost parts again',
          uploaderId,
          history: appendTrail(rec, [...trail, { atMs: now, scope: 'job', state: 'RUNNING', nodeId: '', attempt: 0, reason }], historyLimit),
        };
        return { next, compares, ops: puts.map(([k, v]) => etcd.put(k).value(v)) };
      },
    },
    { fence, maxAttempts: 20 },
  );
  if (!out.ok) return out;
  if (!out.changed) return { ok: false, reason: 'finished', state: finished ?? out.rec.state };
  return { ok: true, invalidated, revision: out.revision };
}
