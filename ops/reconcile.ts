import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Etcd3 } from 'etcd3';
import { AppError } from '../common/errors.js';
import type { Keys } from '../common/keys.js';
import { s3Send } from '../common/s3-client.js';
import { readJsonObject, type AcceptedEntry, type FinishedEntry } from '../coordinator/state/journal.js';
import { specHash, TERMINAL, type JobRecord, type JobStateName } from '../coordinator/state/job-model.js';
import { stageName, type JobStore } from '../coordinator/state/job-store.js';
import { JOURNAL_MARGIN_MS, jobIdFloor } from './backup.js';

export interface LostJob {
  id: string;
  acceptedAtMs: number;
  inputUri: string;
  /** How it ended before the disaster, when the journal knows (its archive is in S3 if SUCCEEDED). */
  finishedState?: string | undefined;
  archive?: string | undefined;
  /** Put back in the queue under its own id (`--requeue-lost`). */
  requeued: boolean;
}

export interface ReconcileReport {
  /** When the restored snapshot was taken (its backup marker). */
  snapshotTakenAtMs: number;
  /** Acceptance entries from this time on were compared with etcd (the marker less a margin for clock skew). */
  checkedSinceMs: number;
  /** Journal entries in that window that the snapshot holds. */
  inSnapshot: number;
  /** Jobs the snapshot holds in flight that finished after it: marked with their final state, not run again. */
  finishedAfterSnapshot: { id: string; state: string }[];
  /** Jobs the snapshot holds in flight that had not finished: the coordinators resume them. */
  resumed: string[];
  /** Jobs accepted after the snapshot: the restored cluster does not know them. */
  lost: LostJob[];
}

export interface ReconcileOptions {
  etcd: Etcd3;
  keys: Keys;
  store: JobStore;
  s3: S3Client;
  bucket: string;
  journalPrefix: string;
  /** Put lost jobs that never finished back in the queue under their own ids. */
  requeueLost?: boolean;
  /** Snapshot time when the restored etcd holds no backup marker (a snapshot taken by other means). */
  sinceMs?: number | undefined;
}

const OPEN: readonly JobStateName[] = ['QUEUED', 'PREPARING', 'RUNNING', 'FINALIZING'];

/**
 * Compares a restored etcd with the acceptance journal, before any coordinator runs on it:
 * 1. every job the snapshot holds unfinished whose final state the journal knows is given that
 *    state (with its result): it finished after the snapshot and is not run again;
 * 2. every job accepted after the snapshot (in the journal, not in etcd) is reported as lost,
 *    with how it ended if it did; with `requeueLost` the unfinished ones are queued again under
 *    their own ids, so they run once.
 * Idempotent: running it again changes nothing.
 */
export async function reconcile(o: ReconcileOptions): Promise<ReconcileReport> {
  if (!o.journalPrefix) throw new AppError('FAILED_PRECONDITION', 'no journal prefix: the coordinators keep no acceptance journal (JOURNAL_PREFIX)');
  const marker = await o.etcd.get(o.keys.backupMarker()).string();
  const snapshotTakenAtMs = marker ? (JSON.parse(marker) as { takenAtMs: number }).takenAtMs : o.sinceMs;
  if (snapshotTakenAtMs === undefined)
    throw new AppError('FAILED_PRECONDITION', 'the restored etcd holds no backup marker (not a `tessera admin backup` snapshot): give --since <ISO time of the snapshot>');
  const report: ReconcileReport = { snapshotTakenAtMs, checkedSinceMs: snapshotTakenAtMs - JOURNAL_MARGIN_MS, inSnapshot: 0, finishedAfterSnapshot: [], resumed: [], lost: [] };
  const finishedKey = (id: string): string => `${o.journalPrefix}finished/${id}.json`;

  // 1. Unfinished jobs of the snapshot.
  for (let before: string | undefined; ;) {
    const page = await o.store.listPage(500, OPEN, before);
    for (const id of page.ids) {
      const fin = await readJsonObject<FinishedEntry>(o.s3, o.bucket, finishedKey(id));
      if (!fin || !TERMINAL.has(fin.state)) {
        report.resumed.push(id);
        continue;
      }
      try {
        // A job the snapshot caught QUEUED or PREPARING has no plan in its record: the journal's has it.
        await o.store.transition(id, fin.state, 'finished after the backup was taken (acceptance journal, at restore)', {
          ...(fin.result ? { result: fin.result } : {}),
          ...(fin.plan ? { plan: fin.plan } : {}),
          ...(fin.source ? { source: fin.source } : {}),
          ...(fin.errorCode ? { errorCode: fin.errorCode } : {}),
          ...(fin.errorMessage ? { errorMessage: fin.errorMessage } : {}),
        });
      } catch (err) {
        if (!(err instanceof AppError && err.code === 'FAILED_PRECONDITION')) throw err; // already final
      }
      report.finishedAfterSnapshot.push({ id, state: fin.state });
    }
    if (!page.next) break;
    before = page.next;
  }

  // 2. Accepted after the snapshot.
  const acceptedPrefix = `${o.journalPrefix}accepted/`;
  let token: string | undefined;
  do {
    const res = await s3Send('ListObjectsV2', () =>
      o.s3.send(
        new ListObjectsV2Command({
          Bucket: o.bucket,
          Prefix: acceptedPrefix,
          ...(token ? { ContinuationToken: token } : { StartAfter: `${acceptedPrefix}${jobIdFloor(report.checkedSinceMs)}` }),
        }),
      ),
    );
    for (const c of res.Contents ?? []) {
      const id = c.Key!.slice(acceptedPrefix.length).replace(/\.json$/, '');
      if ((await o.store.get(id)) ?? (await o.store.getHistory(id))) {
        report.inSnapshot++;
        continue;
      }
      const acc = await readJsonObject<AcceptedEntry>(o.s3, o.bucket, c.Key!);
      if (!acc) continue;
      const fin = await readJsonObject<FinishedEntry>(o.s3, o.bucket, finishedKey(id));
      const lost: LostJob = {
        id,
        acceptedAtMs: acc.acceptedAtMs,
        inputUri: acc.spec.inputUri,
        ...(fin ? { finishedState: fin.state } : {}),
        ...(fin?.result?.uri ? { archive: fin.result.uri } : {}),
        requeued: false,
      };
      if (!fin && o.requeueLost) lost.requeued = await requeue(o, acc);
      report.lost.push(lost);
    }
    token = res.IsTruncated ? res.NextContinuationToken : undefined;
  } while (token);
  return report;
}

/** Queues a lost job again under its own id and spec (the idempotency key with it). */
async function requeue(o: ReconcileOptions, acc: AcceptedEntry): Promise<boolean> {
  const now = Date.now();
  const rec: JobRecord = {
    id: acc.id,
    spec: acc.spec,
    specHash: specHash(acc.spec),
    state: 'QUEUED',
    stage: stageName('QUEUED'),
    createdAtMs: acc.acceptedAtMs,
    updatedAtMs: now,
    queueKey: o.keys.queueEntry(acc.spec.priority, now.toString(36).padStart(9, '0'), acc.id),
    history: [
      { atMs: acc.acceptedAtMs, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'accepted' },
      { atMs: now, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'queued again at restore: accepted after the backup was taken' },
    ],
    timings: {},
  };
  const { created } = await o.store.create(rec, acc.spec.idempotencyKey || undefined);
  return created;
}

/** The report as lines for a terminal. */
export function formatReport(r: ReconcileReport): string[] {
  const at = (ms: number): string => new Date(ms).toISOString();
  const lines = [
    `snapshot taken at ${at(r.snapshotTakenAtMs)}; journal compared from ${at(r.checkedSinceMs)}`,
    `jobs in flight in the snapshot, resumed by the coordinators: ${r.resumed.length}${r.resumed.length ? ` (${r.resumed.join(', ')})` : ''}`,
    `jobs in flight in the snapshot that finished after it (marked, not run again): ${r.finishedAfterSnapshot.length}${r.finishedAfterSnapshot.length ? ` (${r.finishedAfterSnapshot.map((f) => `${f.id} ${f.state}`).join(', ')})` : ''}`,
    `LOST: jobs accepted after the snapshot, unknown to the restored cluster: ${r.lost.length}`,
  ];
  for (const l of r.lost) {
    const fate = l.finishedState
      ? `finished ${l.finishedState} before the disaster${l.archive ? `, archive ${l.archive}` : ''}`
      : l.requeued
        ? 'never finished: queued again under its id'
        : 'never finished: resubmit it (or run again with --requeue-lost)';
    lines.push(`  lost ${l.id} accepted ${at(l.acceptedAtMs)} input ${l.inputUri}: ${fate}`);
  }
  return lines;
}
