import { pino, type DestinationStream, type Logger } from 'pino';
import { jobTraceId } from './trace.js';

/** Field names whose values never reach a log line (at the top level and one level down). */
const SECRET_KEYS = [
  'token',
  'authorization',
  'secretAccessKey',
  'password',
  'privateKey',
  'key',
  'S3_SECRET_ACCESS_KEY',
  'ETCD_PASSWORD',
  'API_TOKENS',
  'READ_TOKENS',
  'ADMIN_TOKENS',
  'WEBHOOK_SECRET',
];

export type { Logger } from 'pino';

/**
 * JSON logger with the `service` field set. Secrets are redacted by key name; user-supplied
 * strings must go through `safeField` so control characters cannot forge log lines.
 */
export function createLogger(service: string, level = 'info', extra: Record<string, unknown> = {}, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service, pid: process.pid, ...extra },
    redact: { paths: SECRET_KEYS.flatMap((k) => [k, `*.${k}`]), censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // A line naming a job (`jobId`) carries its trace id too, also when its logger did not bind one.
    mixin: (obj: object, _level: number, logger: Logger) => {
      const o = obj as { jobId?: unknown; traceId?: unknown };
      if (typeof o.jobId !== 'string' || !o.jobId || o.traceId !== undefined || 'traceId' in logger.bindings()) return {};
      return { traceId: jobTraceId(o.jobId) };
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/** Escapes control characters in a user-provided value before it is logged. */
export function safeField(value: string, max = 512): string {
  // eslint-disable-next-line no-control-regex
  const escaped = value.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > max ? `${escaped.slice(0, max)}…` : escaped;
}
