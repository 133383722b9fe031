import { parseRecord } from '../../common/record-schemas.js';
import type { Etcd3 } from 'etcd3';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import type { JobStore } from '../state/job-store.js';
import { StallTracker } from '../scheduling/stall-tracker.js';
import { jobRecordSchema } from '../state/job-schemas.js';
import { z } from 'zod';

/** `ops/lastbackup`: when the last etcd backup was taken. */
const lastBackupSchema = z.looseObject({ atMs: z.number() });

const IN_FLIGHT = ['PREPARING', 'RUNNING', 'FINALIZING'] as const;
/** Jobs in flight looked at per probe, at most (MAX_CONCURRENT_JOBS is far below). */
const MAX_WATCHED = 200;

/** The coordinator's operational metrics: the signals of the alert rules in deploy/prometheus. */
export function opsMetrics(registry: Registry) {
  return {
    etcdUp: new Gauge({ name: 'tessera_etcd_up', help: '1 when the last etcd probe of this coordinator answered within its deadline, else 0', registers: [registry] }),
    stalledSeconds: new Gauge({
      name: 'tessera_job_stalled_seconds',
      help: 'Seconds since the longest-unchanged job in flight (PREPARING, RUNNING, FINALIZING) last showed progress',
      registers: [registry],
    }),
    oldestInState: new Gauge({
      name: 'tessera_job_oldest_in_state_seconds',
      help: 'Age of the oldest job in each in-flight state, since it entered that state, s',
      labelNames: ['state'],
      registers: [registry],
    }),
    lastBackup: new Gauge({ name: 'tessera_backup_last_success_timestamp_seconds', help: 'When the last etcd backup reached S3, Unix seconds (0: never)', registers: [registry] }),
    finished: new Counter({ name: 'tessera_jobs_finished_total', help: 'Jobs this coordinator moved to a final state, by state', labelNames: ['state'], registers: [registry] }),
    journalFailures: new Counter({ name: 'tessera_journal_write_failures_total', help: 'Acceptance-journal writes to S3 that failed for good', registers: [registry] }),
  };
}

export type OpsMetrics = ReturnType<typeof opsMetrics>;

/**
 * Probes etcd on a timer and sets the operational gauges: job counts by state (`tessera_jobs`,
 * count-only ranges), etcd reachability, stalled jobs, the oldest job per in-flight state and
 * the last backup. Every coordinator probes (reads only); the rules aggregate with max().
 */
export class OpsProbe {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly stalls = new StallTracker();

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly store: JobStore,
    private readonly jobsGauge: Gauge<'state'>,
    private readonly m: OpsMetrics,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.m.etcdUp.set(1);
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
    void this.tick();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One probe; an etcd that does not answer within the interval (at least 5 s) counts as down. */
  async tick(): Promise<void> {
    if (this.running) {
      this.m.etcdUp.set(0); // the previous probe is still waiting for etcd
      return;
    }
    this.running = true;
    const deadline = Math.max(5_000, this.intervalMs);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), deadline);
    });
    const work = this.probe();
    try {
      const r = await Promise.race([work, late]);
      this.m.etcdUp.set(r === 'late' ? 0 : 1);
      if (r === 'late') await work.catch(() => undefined);
    } catch (err) {
      this.m.etcdUp.set(0);
      this.log.debug({ err }, 'ops probe failed');
    } finally {
      clearTimeout(timer);
      this.running = false;
    }
  }

  private async probe(): Promise<void> {
    const byState = await this.store.countByState();
    for (const [state, n] of byState) this.jobsGauge.set({ state }, n);
    const last = await this.etcd.get(this.keys.lastBackup()).string();
    this.m.lastBackup.set(last ? Math.floor(parseRecord(lastBackupSchema, last, this.keys.lastBackup()).atMs / 1000) : 0);
    const page = await this.store.listPage(MAX_WATCHED, [...IN_FLIGHT]);
    const now = Date.now();
    const prints = new Map<string, string>();
    const oldest = new Map<string, number>(IN_FLIGHT.map((s) => [s, 0]));
    for (let i = 0; i < page.ids.length; i += 40) {
      const ids = page.ids.slice(i, i + 40);
      const res = await this.etcd.kv.txn({
        compare: [],
        success: ids.flatMap((id) => [this.keys.job(id), this.keys.jobProgress(id), this.keys.upload(id)].map((k) => ({ request_range: { key: Buffer.from(k) } }))),
      });
      ids.forEach((id, j) => {
        const kv = (n: number) => res.responses[j * 3 + n]?.response_range.kvs[0];
        const rec = kv(0);
        if (!rec) return;
        prints.set(id, [rec.mod_revision, kv(1)?.mod_revision ?? '-', kv(2)?.mod_revision ?? '-'].join('/'));
        const r = parseRecord(jobRecordSchema, rec.value, rec.key.toString());
        const entered = [...r.history].reverse().find((h) => h.scope === 'job' && h.state === r.state)?.atMs ?? r.updatedAtMs;
        oldest.set(r.state, Math.max(oldest.get(r.state) ?? 0, (now - entered) / 1000));
      });
    }
    this.stalls.observe(prints, now);
    this.m.stalledSeconds.set(this.stalls.maxStalledSeconds(now));
    for (const [state, s] of oldest) this.m.oldestInState.set({ state }, s);
  }
}
