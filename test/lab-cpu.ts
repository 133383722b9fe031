import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CPU_ROOT = '/sys/fs/cgroup/cpu';
const ACCT_ROOT = '/sys/fs/cgroup/cpuacct';
const PERIOD_US = 100_000;

/**
 * Slower machines for the lab (/work/shared/LAB.md): one cgroup v1 CPU group per simulated host,
 * `<prefix>K` under the cpu hierarchy with a CFS quota (cores × 100 ms per 100 ms period), and a
 * group of the same name under cpuacct, which counts the CPU time the host really used. A pid
 * added goes into both; its children (ffmpeg) inherit them. Every group has the run prefix; a
 * sweep at open removes a failed run's leftovers, `close()` removes what this run made.
 */
export class LabCpu {
  private readonly made: string[] = [];

  private constructor(readonly prefix: string) {}

  /** Why CPU quotas cannot be set here (not root, no cgroup v1 cpu/cpuacct hierarchy), or undefined. */
  static unavailable(): string | undefined {
    if (process.getuid?.() !== 0) return 'needs root (cgroup v1 CPU quotas)';
    if (!existsSync(join(CPU_ROOT, 'cpu.cfs_quota_us'))) return `needs the cgroup v1 cpu hierarchy (${CPU_ROOT}/cpu.cfs_quota_us)`;
    if (!existsSync(join(ACCT_ROOT, 'cpuacct.usage'))) return `needs the cgroup v1 cpuacct hierarchy (${ACCT_ROOT}/cpuacct.usage)`;
    return undefined;
  }

  static open(prefix: string): LabCpu {
    const lab = new LabCpu(prefix);
    lab.sweep();
    return lab;
  }

  /**
   * Makes group `name` (prefixed) with a quota of `cores` (e.g. 0.5 = 50 ms per 100 ms period).
   * `shares` (cpu.shares, default 1024): its weight against other work on the machine.
   */
  group(name: string, cores: number, shares = 1024): string {
    const full = `${this.prefix}${name}`;
    for (const root of [CPU_ROOT, ACCT_ROOT]) {
      mkdirSync(join(root, full));
      this.made.push(join(root, full));
    }
    writeFileSync(join(CPU_ROOT, full, 'cpu.cfs_period_us'), String(PERIOD_US));
    writeFileSync(join(CPU_ROOT, full, 'cpu.cfs_quota_us'), String(Math.round(cores * PERIOD_US)));
    writeFileSync(join(CPU_ROOT, full, 'cpu.shares'), String(shares));
    return full;
  }

  /** Moves process `pid` (all its threads) into group `name`; children it starts later inherit it. */
  add(name: string, pid: number): void {
    const full = `${this.prefix}${name}`;
    for (const root of [CPU_ROOT, ACCT_ROOT]) writeFileSync(join(root, full, 'cgroup.procs'), String(pid));
  }

  /** CPU seconds used by the group's processes so far (cpuacct.usage). */
  usageSec(name: string): number {
    return Number(readFileSync(join(ACCT_ROOT, `${this.prefix}${name}`, 'cpuacct.usage'), 'utf8').trim()) / 1e9;
  }

  /** cpu.stat of the group: periods, periods throttled, time throttled (s). */
  throttling(name: string): { periods: number; throttled: number; throttledSec: number } {
    const stat = new Map(
      readFileSync(join(CPU_ROOT, `${this.prefix}${name}`, 'cpu.stat'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
    return { periods: Number(stat.get('nr_periods') ?? 0), throttled: Number(stat.get('nr_throttled') ?? 0), throttledSec: Number(stat.get('throttled_time') ?? 0) / 1e9 };
  }

  /** Removes the groups this run made (their processes must have exited; idempotent). */
  close(): void {
    for (const dir of this.made.reverse()) removeGroup(dir);
    this.made.length = 0;
    this.sweep();
  }

  /** Removes groups of this prefix (a failed run's leftovers): any process still in one goes back to the root group first. */
  sweep(): void {
    for (const root of [CPU_ROOT, ACCT_ROOT]) {
      if (!existsSync(root)) continue;
      for (const d of readdirSync(root, { withFileTypes: true })) {
        if (d.isDirectory() && d.name.startsWith(this.prefix)) removeGroup(join(root, d.name));
      }
    }
  }
}

function removeGroup(dir: string): void {
  if (!existsSync(dir)) return;
  try {
    const root = join(dir, '..');
    for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        writeFileSync(join(root, 'cgroup.procs'), pid);
      } catch {
        // exited meanwhile
      }
    }
    rmdirSync(dir);
  } catch {
    // busy or gone: the next sweep tries again
  }
}
