import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * JSON logger with the `service` field set. Secrets are redacted by key name; user-supplied
 * strings must go through `safeField` so control characters cannot forge log lines.
 */
export function createLogger(service: string, level = 'info', extra: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service, pid: process.pid, ...extra },
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'secretAccessKey', '*.secretAccessKey'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** Escapes control characters in a user-provided value before it is logged. */
export function safeField(value: string, max = 512): string {
  // eslint-disable-next-line no-control-regex
  const escaped = value.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > max ? `${escaped.slice(0, max)}…` : escaped;
}
