import { createHmac } from 'node:crypto';
import type { Keys } from '../../common/keys.js';
import type { JobRecord, JobStateName } from '../state/job-model.js';

/** The job states a webhook is told about, with their order among one job's events. */
const NOTIFY: ReadonlyMap<JobStateName, number> = new Map([
  ['RUNNING', 0],
  ['SUCCEEDED', 1],
  ['FAILED', 1],
  ['CANCELLED', 1],
]);

/** What `outbox/<jobId>/<order>-<STATE>` holds: one event waiting for delivery, and its retry state. */
export interface OutboxEntry {
  /** Stable event id (`<jobId>:<STATE>`), also in the body and the `X-Tessera-Event-Id` header. */
  id: string;
  jobId: string;
  state: JobStateName;
  url: string;
  /** The exact body POSTed (signed as is), fixed when the state changed. */
  body: string;
  createdAtMs: number;
  /** Delivery attempts made so far (by any leader). */
  attempts: number;
  /** Not before this time (ms since the epoch): the backoff survives a change of leader. */
  nextAtMs: number;
  lastError?: string;
}

/** `X-Tessera-Signature` value for a body: `sha256=<hex HMAC-SHA256 of the raw body>`. */
export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** The stable id of a job's event for a state. */
export function eventId(jobId: string, state: JobStateName): string {
  return `${jobId}:${state}`;
}

/**
 * The outbox entry a state change owes the job's webhook, as a key and value to put in the same
 * transaction as the change; undefined when nothing is owed (no webhook URL, a state not
 * notified, or RUNNING again after lost parts were reopened: one RUNNING event per job).
 */
export function outboxPut(keys: Keys, prev: JobRecord, next: JobRecord, nowMs = Date.now()): [string, string] | undefined {
  if (!next.spec.webhookUrl || prev.state === next.state) return undefined;
  const order = NOTIFY.get(next.state);
  if (order === undefined) return undefined;
  const reachedBefore = (s: JobStateName): boolean => prev.history.some((h) => h.scope === 'job' && h.state === s);
  if (next.state === 'RUNNING' && reachedBefore('RUNNING')) return undefined;
  const at = [...next.history].reverse().find((h) => h.scope === 'job' && h.state === next.state)?.atMs ?? nowMs;
  const id = eventId(next.id, next.state);
  const body = JSON.stringify({
    id,
    type: `job.${next.state.toLowerCase()}`,
    jobId: next.id,
    state: next.state,
    at: new Date(at).toISOString(),
    ...(next.state === 'SUCCEEDED' && next.result ? { result: { uri: next.result.uri, sha256: next.result.sha256, bytes: next.result.bytes } } : {}),
    ...(next.errorCode ? { error: { code: next.errorCode, message: next.errorMessage } } : {}),
  });
  const entry: OutboxEntry = { id, jobId: next.id, state: next.state, url: next.spec.webhookUrl, body, createdAtMs: nowMs, attempts: 0, nextAtMs: 0 };
  return [keys.outboxEntry(next.id, order, next.state), JSON.stringify(entry)];
}
