import { parseRecord } from '../../common/record-schemas.js';
import { setMaxListeners } from 'node:events';
import type { Etcd3 } from 'etcd3';
import { AppError, errorMessage } from '../../common/errors.js';
import type { Keys } from '../../common/keys.js';
import { backoffDelay, sleep } from '../../common/retry.js';
import { SerialRunner } from '../../common/serial-runner.js';
import { ResilientWatch } from '../../common/watch.js';
import type { Logger } from '../../common/logger.js';
import { TERMINAL, type JobRecord } from '../state/job-model.js';
import type { JobStore, LeaderFence } from '../state/job-store.js';
import { JobRunner, type RunnerDeps } from '../run/job-runner.js';
import type { LeaderElection } from '../state/leader.js';
import { jobRecordSchema } from '../state/job-schemas.js';

/**
 * Runs on the leader: takes jobs off the queue (priority, then age) up to MAX_CONCURRENT_JOBS,
 * resumes jobs a previous leader left in flight, and stops a runner when its job is cancelled.
 */
export class Scheduler {
  private running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private fence: LeaderFence | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly filler = new SerialRunner(
    () => this.fill(),
    (err) => this.log.warn({ err }, 'scheduling pass failed'),
  );

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly store: JobStore,
    private readonly election: LeaderElection,
    private readonly deps: RunnerDeps,
    private readonly log: Logger,
    /** Sees every job record the leader observes (webhooks). */
    private readonly onRecord: (rec: JobRecord) => void = () => undefined,
  ) {}

  get activeJobs(): number {
    return this.running.size;
  }

  async start(): Promise<void> {
    // Both re-watch after compaction; what the lost events would have said is re-read then.
    const jobsWatch = await ResilientWatch.open(
      this.etcd,
      { prefix: this.keys.jobs() },
      {
        put: (kv) => this.onJobPut(kv.key.toString(), kv.value.toString()),
        resync: () => void this.recheckRunning().catch((err: unknown) => this.log.warn({ err }, 'could not re-read running jobs')),
      },
      this.log,
    );
    const queueWatch = await ResilientWatch.open(this.etcd, { prefix: this.keys.queue() }, { put: () => this.kick(), resync: () => this.kick() }, this.log);
    this.stopWatches = async () => {
      await jobsWatch.cancel();
      await queueWatch.cancel();
    };
    this.election.on('elected', (fence) => {
      this.fence = fence;
      void this.resumeUntilDone(fence);
    });
    this.election.on('deposed', () => {
      this.fence = undefined;
      for (const r of this.running.values()) r.abort.abort(new AppError('NOT_LEADER', 'leadership lost'));
    });
    this.timer = setInterval(() => this.kick(), 1_000);
  }

  private stopWatches: () => Promise<void> = async () => undefined;
  private readonly closing = new AbortController();

  private onJobPut(key: string, value: string): void {
    const rest = key.slice(this.keys.jobs().length);
    if (rest.includes('/')) return;
    let rec: JobRecord;
    try {
      rec = parseRecord(jobRecordSchema, value, key);
    } catch {
      return; // not ours
    }
    if (this.fence) this.onRecord(rec);
    const r = this.running.get(rest);
    if (r && rec.state === 'CANCELLED') r.abort.abort(new AppError('CANCELLED', 'job cancelled'));
  }

  /** After a gap in the jobs watch: a job cancelled meanwhile stops now; webhooks see each record. */
  private async recheckRunning(): Promise<void> {
    for (const id of [...this.running.keys()]) {
      const rec = await this.store.get(id);
      if (rec) this.onJobPut(this.keys.job(id), JSON.stringify(rec));
    }
  }

  /** Fills free job slots from the queue (coalesced). */
  kick(): void {
    if (this.fence) this.filler.kick();
  }

  private async fill(): Promise<void> {
    const max = this.deps.cfg.MAX_CONCURRENT_JOBS;
    if (!this.fence || this.running.size >= max) return;
    const limited = this.deps.cfg.TENANTS.some((t) => t.maxRunningJobs !== undefined);
    // Look further down the queue when a tenant at its limit holds its head.
    const entries = await this.store.queued(max * (limited ? 8 : 2));
    for (const e of entries) {
      if (!this.fence || this.running.size >= max) return;
      const jobId = e.jobId;
      if (this.running.has(jobId)) continue;
      if (limited && !(await this.mayStart(jobId))) continue; // its tenant runs its quota: stays queued
      const rec = await this.store.claim(e.key, jobId, this.fence);
      if (rec) this.launch(jobId, this.fence);
    }
  }

  /** The tenant of each running job (read once per job). */
  private tenantOfJob = new Map<string, string>();

  private async tenantOf(jobId: string): Promise<string> {
    let t = this.tenantOfJob.get(jobId);
    if (t === undefined) {
      t = (await this.store.get(jobId))?.spec.tenant ?? '';
      this.tenantOfJob.set(jobId, t);
    }
    return t;
  }

  /** False while the job's tenant already runs as many jobs as its maxRunningJobs quota allows. */
  private async mayStart(jobId: string): Promise<boolean> {
    const tenant = await this.tenantOf(jobId);
    const limit = this.deps.cfg.TENANTS.find((t) => t.name === tenant)?.maxRunningJobs;
    if (!tenant || limit === undefined) return true;
    let running = 0;
    for (const id of this.running.keys()) if ((await this.tenantOf(id)) === tenant) running++;
    for (const id of [...this.tenantOfJob.keys()]) if (!this.running.has(id) && id !== jobId) this.tenantOfJob.delete(id);
    return running < limit;
  }

  /**
   * Resumes the jobs a previous leader left in flight, retrying with backoff for as long as this
   * term lasts: etcd trouble at the moment of election must neither leave them orphaned nor
   * surface as an unhandled rejection.
   */
  private async resumeUntilDone(fence: LeaderFence): Promise<void> {
    for (let attempt = 0; this.fence === fence && !this.closing.signal.aborted; attempt++) {
      try {
        await this.resumeInFlight(fence);
        break;
      } catch (err) {
        const delayMs = backoffDelay(attempt, 250, 10_000) + 250;
        this.log.warn({ err, attempt: attempt + 1, retryInMs: delayMs }, 'could not resume the jobs left in flight; retrying');
        await sleep(delayMs, this.closing.signal).catch(() => undefined);
      }
    }
    this.kick();
  }

  /** Launches a runner for every job in PREPARING, RUNNING or FINALIZING (the state index, paged; built first on an upgraded cluster). */
  private async resumeInFlight(fence: LeaderFence): Promise<void> {
    const indexed = await this.store.ensureStateIndex();
    if (indexed > 0) this.log.info({ indexed }, 'indexed job records written before the state index');
    for await (const ids of this.store.inFlightIds()) {
      for (const id of ids) {
        if (this.fence !== fence) return;
        if (this.running.has(id)) continue;
        this.log.info({ jobId: id }, 'resuming job left in flight');
        this.launch(id, fence);
      }
    }
  }

  private async resumeJob(jobId: string): Promise<void> {
    const fence = this.fence;
    if (!fence || this.running.has(jobId)) return;
    const rec = await this.store.get(jobId);
    if (!rec || TERMINAL.has(rec.state) || rec.state === 'QUEUED' || this.running.has(jobId) || this.fence !== fence) return;
    this.log.info({ jobId, state: rec.state }, 'resuming job whose runner outlived the previous term');
    this.launch(jobId, fence);
  }

  /** Pending re-runs of jobs whose runner ended without a final state. */
  private readonly relaunches = new Set<NodeJS.Timeout>();

  /**
   * A runner ended in this leader term. If its job is not terminal (etcd was unreachable when
   * the runner tried to record a state), run it again after a backoff (0 s, then 1, 2, 4 … 30 s)
   * so that no job is left in flight without a runner until the next change of leader.
   */
  private superviseEnded(jobId: string, fence: LeaderFence, restarts: number): void {
    const delay = restarts === 0 ? 0 : Math.min(30_000, 1_000 * 2 ** Math.min(restarts - 1, 5));
    const timer = setTimeout(() => {
      this.relaunches.delete(timer);
      if (this.fence !== fence || this.running.has(jobId)) return;
      this.store.get(jobId).then(
        (rec) => {
          if (!rec || TERMINAL.has(rec.state) || rec.state === 'QUEUED' || this.fence !== fence || this.running.has(jobId)) return;
          this.log.warn({ jobId, state: rec.state, restarts: restarts + 1 }, 'job runner ended without a final state; running it again');
          this.launch(jobId, fence, restarts + 1);
        },
        (err: unknown) => {
          this.log.warn({ jobId, err: errorMessage(err) }, 'could not read a job whose runner ended; trying again');
          this.superviseEnded(jobId, fence, restarts + 1);
        },
      );
    }, delay);
    this.relaunches.add(timer);
  }

  private launch(jobId: string, fence: LeaderFence, restarts = 0): void {
    const abort = new AbortController();
    setMaxListeners(0, abort.signal); // one listener per in-flight call of the job; no leak
    const runner = new JobRunner(this.deps, jobId, fence);
    const done = runner
      .run(abort.signal)
      .catch((err: unknown) => this.log.error({ err, jobId }, 'runner crashed'))
      .finally(() => {
        this.running.delete(jobId);
        // Deposed and elected again while this runner unwound: resumeInFlight skipped the job
        // (it was still running) and its queue entry is long gone, so pick it up here under the
        // new term — or nobody would until the next change of leader.
        if (this.fence && this.fence !== fence) void this.resumeJob(jobId).catch((err: unknown) => this.log.warn({ err, jobId }, 'could not resume job'));
        else if (this.fence === fence) this.superviseEnded(jobId, fence, restarts);
        this.kick();
      });
    this.running.set(jobId, { abort, done });
  }

  /** Stops scheduling and aborts runners (their jobs stay in etcd for the next leader). */
  async stop(): Promise<void> {
    this.closing.abort();
    if (this.timer) clearInterval(this.timer);
    for (const t of this.relaunches) clearTimeout(t);
    this.relaunches.clear();
    this.fence = undefined;
    for (const r of this.running.values()) r.abort.abort(new AppError('NOT_LEADER', 'coordinator shutting down'));
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
    await this.stopWatches();
  }
}
