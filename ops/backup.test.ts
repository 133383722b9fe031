import { describe, expect, it } from 'vitest';
import { newJobId } from '../coordinator/api/job-service.js';
import { certExpirySeconds, stagingFree } from '../common/process-gauges.js';
import { parseDuration } from './admin-cli.js';
import { backupName, jobIdFloor, jobIdTime, parseBackupTime } from './backup.js';

describe('backup naming and the journal window', () => {
  it('backup names sort by time and give their time back', () => {
    const a = backupName(Date.UTC(2026, 10, 29, 9, 5, 7, 42));
    const b = backupName(Date.UTC(2026, 10, 29, 10, 0, 0, 0));
    expect(a).toBe('etcd-20261129T090507042Z.db');
    expect([b, a].sort()).toEqual([a, b]);
    expect(parseBackupTime(`backups/${a}`)).toBe(Date.UTC(2026, 10, 29, 9, 5, 7, 42));
    expect(parseBackupTime('backups/other.db')).toBeNaN();
  });

  it('job ids carry their creation time; the floor of a time sorts before every later id', () => {
    const t0 = Date.now();
    const id = newJobId();
    expect(jobIdTime(id)).toBeGreaterThanOrEqual(t0);
    expect(jobIdTime(id)).toBeLessThanOrEqual(Date.now());
    expect(jobIdFloor(t0) <= id).toBe(true);
    expect(jobIdFloor(Date.now() + 1000) > id).toBe(true);
  });

  it('backup intervals', () => {
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('5000')).toBe(5_000);
    expect(() => parseDuration('soon')).toThrow(/not a duration/);
    expect(() => parseDuration('10ms')).toThrow(/at least 1 s/);
  });
});

describe('process gauges', () => {
  it('staging free space comes from the nearest existing folder; no TLS file, no expiry', () => {
    const d = stagingFree('/tmp/does-not-exist/yet/staging');
    expect(d!.ratio).toBeGreaterThan(0);
    expect(d!.ratio).toBeLessThanOrEqual(1);
    expect(d!.free).toBeGreaterThan(0);
    expect(certExpirySeconds(undefined)).toBeUndefined();
    expect(certExpirySeconds('/nonexistent.pem')).toBeUndefined();
  });
});
