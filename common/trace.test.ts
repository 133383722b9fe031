import { Metadata } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';
import { jobLogFields, jobTraceId, traceIdOf, traceMetadata } from './trace.js';

describe('job trace context', () => {
  it('one W3C trace id per job, carried as traceparent (a new span per call), read back on the other side', () => {
    const id = jobTraceId('j0abc');
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(jobTraceId('j0abc')).toBe(id);
    expect(jobTraceId('j0abd')).not.toBe(id);
    const a = traceMetadata('j0abc').get('traceparent')[0] as string;
    const b = traceMetadata('j0abc').get('traceparent')[0] as string;
    expect(a).toMatch(new RegExp(`^00-${id}-[0-9a-f]{16}-01$`));
    expect(a).not.toBe(b);
    // A caller's traceparent wins (a trace started elsewhere); a malformed or all-zero one does not.
    const md = new Metadata();
    md.set('traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
    expect(jobLogFields('j0abc', md)).toEqual({ jobId: 'j0abc', traceId: '4bf92f3577b34da6a3ce929d0e0e4736' });
    md.set('traceparent', '00-00000000000000000000000000000000-00f067aa0ba902b7-01');
    expect(traceIdOf(md, 'j0abc')).toBe(id);
    expect(traceIdOf(undefined, 'j0abc')).toBe(id);
  });

  it('a log line naming a job gets its trace id; a child logger that bound one keeps it (once)', () => {
    const lines: string[] = [];
    const log = createLogger(
      't',
      'info',
      {},
      {
        write: (s: string) => {
          lines.push(s);
        },
      },
    );
    log.info({ jobId: 'j0abc' }, 'direct');
    log.child(jobLogFields('j0abc')).info({ jobId: 'j0abc' }, 'child');
    log.info('no job');
    const [direct, child, none] = lines;
    expect(JSON.parse(direct!).traceId).toBe(jobTraceId('j0abc'));
    expect(child!.match(/"traceId"/g)).toHaveLength(1);
    expect(JSON.parse(child!).traceId).toBe(jobTraceId('j0abc'));
    expect(JSON.parse(none!).traceId).toBeUndefined();
  });
});
