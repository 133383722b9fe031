import { createHash, randomBytes } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';

/**
 * Trace context of a job. Every job has one W3C trace id, derived from its id (so every
 * coordinator, after any leader change, and every process agree without storing it). Calls
 * about a job carry it as a W3C `traceparent` in gRPC metadata (coordinator → node agent →
 * uploader), and every log line about a job carries `jobId` and `traceId`.
 */

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** The job's trace id: 32 hex digits. */
export function jobTraceId(jobId: string): string {
  return createHash('sha256').update(`tessera-job:${jobId}`).digest('hex').slice(0, 32);
}

/** Metadata for a call about `jobId`: `traceparent: 00-<trace id>-<new span id>-01` (added to `md` when given). */
export function traceMetadata(jobId: string, md: Metadata = new Metadata()): Metadata {
  md.set('traceparent', `00-${jobTraceId(jobId)}-${randomBytes(8).toString('hex')}-01`);
  return md;
}

/** The trace id a call carries (its `traceparent`), else the job's own. */
export function traceIdOf(md: Metadata | undefined, jobId: string): string {
  const raw = md?.get('traceparent')[0];
  const m = typeof raw === 'string' ? TRACEPARENT.exec(raw) : null;
  return m && !/^0+$/.test(m[1]!) ? m[1]! : jobTraceId(jobId);
}

/** The fields that tie a log line to a job: its id and trace id (child loggers bind them). */
export function jobLogFields(jobId: string, md?: Metadata): { jobId: string; traceId: string } {
  return { jobId, traceId: traceIdOf(md, jobId) };
}
