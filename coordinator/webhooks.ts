import { createHmac } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import type { Keys } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import { backoffDelay, sleep } from '../common/retry.js';
import type { JobRecord, JobStateName } from './job-model.js';

const NOTIFY: ReadonlySet<JobStateName> = new Set(['RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED']);
const ORDER: JobStateName[] = ['RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];

export interface WebhookSettings {
  secret: string;
  attempts: number;
  baseMs: number;
  maxMs: number;
  timeoutMs: number;
}

/** `X-Tessera-Signature` value for a body: `sha256=<hex HMAC-SHA256 of the raw body>`. */
export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/**
 * Job state notifications to each job's webhook URL, on the leader: RUNNING, SUCCEEDED, FAILED,
 * CANCELLED, each POSTed once and in order per job, retried with exponential backoff and jitter,
 * signed with HMAC-SHA256. Each event has a stable id (`<jobId>:<state>`) so receivers can
 * deduplicate; what was delivered is recorded in etcd so a new leader does not resend it.
 */
export class WebhookNotifier {
  private queues = new Map<string, Promise<void>>();
  private seen = new Map<string, Set<string>>();
  private closed = false;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: Keys,
    private readonly s: WebhookSettings,
    private readonly log: Logger,
    private readonly onRetry: () => void = () => undefined,
  ) {}

  private deliveredKey(jobId: string): string {
    return `${this.keys.job(jobId)}/webhooks`;
  }

  /** Called with every job record as written; enqueues what has not been delivered yet. */
  observe(rec: JobRecord): void {
    if (this.closed || !rec.spec.webhookUrl) return;
    const reached = ORDER.filter((s) => rec.history.some((h) => h.scope === 'job' && h.state === s));
    const seen = this.seen.get(rec.id) ?? new Set<string>();
    this.seen.set(rec.id, seen);
    for (const state of reached) {
      if (!NOTIFY.has(state) || seen.has(state)) continue;
      seen.add(state);
      const prev = this.queues.get(rec.id) ?? Promise.resolve();
      const next = prev.then(() => this.deliver(rec, state)).catch((err: unknown) => this.log.warn({ err, jobId: rec.id }, 'webhook delivery gave up'));
      this.queues.set(rec.id, next);
      if (state === 'SUCCEEDED' || state === 'FAILED' || state === 'CANCELLED') {
        // The job's last event: forget it once delivered (a later observe re-reads what etcd says
        // was delivered, so nothing is sent twice), or these maps grow with every job ever run.
        void next.finally(() => {
          if (this.queues.get(rec.id) !== next) return;
          this.queues.delete(rec.id);
          this.seen.delete(rec.id);
        });
      }
    }
  }

  private async deliver(rec: JobRecord, state: JobStateName): Promise<void> {
    const key = this.deliveredKey(rec.id);
    const done = JSON.parse((await this.etcd.get(key).string()) ?? '[]') as string[];
    if (done.includes(state)) return;
    const at = rec.history.find((h) => h.scope === 'job' && h.state === state)?.atMs ?? Date.now();
    const id = `${rec.id}:${state}`;
    const body = JSON.stringify({
      id,
      type: `job.${state.toLowerCase()}`,
      jobId: rec.id,
      state,
      at: new Date(at).toISOString(),
      ...(state === 'SUCCEEDED' && rec.result ? { result: { uri: rec.result.uri, sha256: rec.result.sha256, bytes: rec.result.bytes } } : {}),
      ...(rec.errorCode ? { error: { code: rec.errorCode, message: rec.errorMessage } } : {}),
    });
    for (let attempt = 0; attempt < this.s.attempts && !this.closed; attempt++) {
      try {
        const res = await fetch(rec.spec.webhookUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-tessera-event-id': id, 'x-tessera-signature': signBody(this.s.secret, body) },
          body,
          redirect: 'manual',
          signal: AbortSignal.timeout(this.s.timeoutMs),
        });
        await res.body?.cancel();
        if (res.ok) {
          // Only while the job's tree exists: once moved to history the mark would be orphaned.
          await this.etcd.if(this.keys.job(rec.id), 'Create', '>', 0).then(this.etcd.put(key).value(JSON.stringify([...done, state]))).commit();
          this.log.info({ jobId: rec.id, state, attempt }, 'webhook delivered');
          return;
        }
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          this.log.warn({ jobId: rec.id, state, status: res.status }, 'webhook refused permanently');
          return;
        }
      } catch (err) {
        this.log.debug({ err, jobId: rec.id, state }, 'webhook attempt failed');
      }
      this.onRetry();
      await sleep(backoffDelay(attempt, this.s.baseMs, this.s.maxMs) + this.s.baseMs);
    }
  }

  close(): void {
    this.closed = true;
  }
}
