/**
 * The etcd key schema, in one place. Every key lives under the configured prefix
 * (default `/tessera/`).
 */
export class Keys {
  constructor(readonly prefix: string = '/tessera/') {
    if (!prefix.endsWith('/')) this.prefix = `${prefix}/`;
  }

  nodes(): string {
    return `${this.prefix}nodes/`;
  }
  node(nodeId: string): string {
    return `${this.prefix}nodes/${nodeId}`;
  }
  nodeDrain(nodeId: string): string {
    return `${this.prefix}drain/${nodeId}`;
  }
  drains(): string {
    return `${this.prefix}drain/`;
  }
  /** Every node's load figures: `nodestats/`. */
  nodeStatsAll(): string {
    return `${this.prefix}nodestats/`;
  }
  nodeStats(nodeId: string): string {
    return `${this.prefix}nodestats/${nodeId}`;
  }
  uploaders(): string {
    return `${this.prefix}uploaders/`;
  }
  uploader(id: string): string {
    return `${this.prefix}uploaders/${id}`;
  }
  coordinator(id: string): string {
    return `${this.prefix}coordinators/${id}`;
  }

  jobs(): string {
    return `${this.prefix}jobs/`;
  }
  job(jobId: string): string {
    return `${this.prefix}jobs/${jobId}`;
  }
  /** Everything under a job's record (segments, owners, checkpoints, progress, plan): `jobs/<id>/`. */
  jobTree(jobId: string): string {
    return `${this.prefix}jobs/${jobId}/`;
  }
  jobProgress(jobId: string): string {
    return `${this.prefix}jobs/${jobId}/progress`;
  }
  jobPlan(jobId: string): string {
    return `${this.prefix}jobs/${jobId}/plan`;
  }
  segment(jobId: string, n: number): string {
    return `${this.prefix}jobs/${jobId}/segments/${pad(n)}`;
  }
  segmentOwner(jobId: string, n: number): string {
    return `${this.prefix}jobs/${jobId}/segments/${pad(n)}/owner`;
  }
  checkpoint(jobId: string, n: number): string {
    return `${this.prefix}jobs/${jobId}/segments/${pad(n)}/checkpoint`;
  }

  queue(): string {
    return `${this.prefix}queue/`;
  }
  /** Higher priority sorts first: the key holds 9 - priority. */
  queueEntry(priority: number, seq: string, jobId: string): string {
    return `${this.prefix}queue/${9 - priority}/${seq}-${jobId}`;
  }
  /** Index of every job by state (active, finished and archived): `jobstate/<STATE>/<jobId>`, empty value. */
  jobStates(): string {
    return `${this.prefix}jobstate/`;
  }
  jobState(state: string): string {
    return `${this.prefix}jobstate/${state}/`;
  }
  jobStateEntry(state: string, jobId: string): string {
    return `${this.prefix}jobstate/${state}/${jobId}`;
  }
  /** Finished jobs whose working tree is still under `jobs/`, in order of finishing: `finished/<ms>-<jobId>`. */
  finished(): string {
    return `${this.prefix}finished/`;
  }
  finishedEntry(finishedAtMs: number, jobId: string): string {
    return `${this.prefix}finished/${String(finishedAtMs).padStart(15, '0')}-${jobId}`;
  }
  /** The compact record of an archived job: `history/<jobId>`. */
  history(): string {
    return `${this.prefix}history/`;
  }
  historyEntry(jobId: string): string {
    return `${this.prefix}history/${jobId}`;
  }
  /** Set once every job record written before the state index existed has been indexed. */
  jobStateIndexed(): string {
    return `${this.prefix}meta/jobstate-indexed`;
  }
  idempotency(key: string): string {
    return `${this.prefix}idempotency/${key}`;
  }
  upload(jobId: string): string {
    return `${this.prefix}uploads/${jobId}`;
  }
  /** A resumable client upload (coordinator/api/upload-session.ts): `uploadsessions/<resumeId>`. */
  uploadSessions(): string {
    return `${this.prefix}uploadsessions/`;
  }
  uploadSession(resumeId: string): string {
    return `${this.prefix}uploadsessions/${resumeId}`;
  }
  election(): string {
    return `${this.prefix}election/coordinator`;
  }
  /**
   * Webhook events waiting for delivery: `outbox/<jobId>/<order>-<STATE>` (order 0 for RUNNING, 1
   * for the final state, so a job's events sort in the order they are sent). Outside the job's
   * tree on purpose: archiving a job to history does not drop an event still pending.
   */
  outbox(): string {
    return `${this.prefix}outbox/`;
  }
  outboxJob(jobId: string): string {
    return `${this.prefix}outbox/${jobId}/`;
  }
  outboxEntry(jobId: string, order: number, state: string): string {
    return `${this.prefix}outbox/${jobId}/${order}-${state}`;
  }
  cancel(jobId: string): string {
    return `${this.prefix}cancel/${jobId}`;
  }
  /** Written just before each etcd snapshot is taken, so a restored cluster knows when its snapshot is from. */
  backupMarker(): string {
    return `${this.prefix}ops/backup-marker`;
  }
  /** The last backup that reached S3 (written after the upload; the backup alert reads it). */
  lastBackup(): string {
    return `${this.prefix}ops/last-backup`;
  }
}

function pad(n: number): string {
  return String(n).padStart(4, '0');
}

/** Parses the job id out of a key under `jobs/`; undefined for nested keys. */
export function jobIdFromRecordKey(keys: Keys, key: string): string | undefined {
  const rest = key.slice(keys.jobs().length);
  return rest.length > 0 && !rest.includes('/') ? rest : undefined;
}
