import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { metric, procCpu, procStatusKiB } from './control-plane.js';

describe('control-plane benchmark readings', () => {
  it('sums a Prometheus counter with or without labels, and only that one', () => {
    const text = [
      '# HELP etcd_mvcc_put_total x',
      'etcd_mvcc_put_total 41',
      'etcd_mvcc_put_total_other 7',
      'etcd_server_proposals_committed_total{a="1"} 3',
      'etcd_server_proposals_committed_total{a="2"} 4',
    ].join('\n');
    expect(metric(text, 'etcd_mvcc_put_total')).toBe(41);
    expect(metric(text, 'etcd_server_proposals_committed_total')).toBe(7);
    expect(() => metric(text, 'etcd_mvcc_delete_total')).toThrow(/no etcd_mvcc_delete_total/);
  });

  it('reads CPU seconds and memory of a live process from /proc', () => {
    // A child that burns CPU and is reaped: its time shows under children.
    const before = procCpu(process.pid).children;
    execFileSync(process.execPath, ['-e', 'const end = Date.now() + 300; while (Date.now() < end) {}']);
    const cpu = procCpu(process.pid);
    expect(cpu.own).toBeGreaterThan(0);
    expect(cpu.children).toBeGreaterThan(before);
    expect(procStatusKiB(process.pid, 'VmRSS')).toBeGreaterThan(10_000);
    expect(procStatusKiB(process.pid, 'VmHWM')).toBeGreaterThan(10_000);
  });
});
