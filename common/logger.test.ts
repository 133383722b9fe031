import { describe, expect, it } from 'vitest';
import { createLogger, safeField } from './logger.js';

function capture(): { lines: string[]; stream: { write(s: string): void } } {
  const lines: string[] = [];
  return {
    lines,
    stream: {
      write: (s: string) => {
        lines.push(s);
      },
    },
  };
}

describe('logger', () => {
  it('redacts secrets by key name, at the top level and one level down', () => {
    const c = capture();
    const log = createLogger('t', 'info', {}, c.stream);
    log.info({ token: 'tok-123', cfg: { S3_SECRET_ACCESS_KEY: 'sk-456', password: 'pw-789' }, tls: { key: '-----BEGIN PRIVATE KEY-----' }, authorization: 'Bearer abc' }, 'hello');
    const line = c.lines.join('');
    for (const secret of ['tok-123', 'sk-456', 'pw-789', 'PRIVATE KEY', 'Bearer abc']) expect(line).not.toContain(secret);
    expect(line).toContain('[redacted]');
    expect(JSON.parse(line).msg).toBe('hello');
  });

  it('escapes control characters of user fields so they cannot forge log lines', () => {
    expect(safeField('a\nb\u001b[31m')).toBe('a\\u000ab\\u001b[31m');
  });
});
