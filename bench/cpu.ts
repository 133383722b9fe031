import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's CPU times. */
const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * Core-seconds (user + system) a process has used, its own and, with `reaped`, those of the
 * children it has waited for (Linux /proc/<pid>/stat: utime, stime, cutime, cstime). A node agent
 * reaps its ffmpegs, so its count includes every encode that has ended. Wall time on a shared
 * virtual machine moves with the host; core-seconds say how much work a job was.
 */
export function coreSeconds(pid: number | 'self', o: { own?: boolean; reaped?: boolean } = {}): number {
  const { own = true, reaped = true } = o;
  const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime field 14.
  const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  const ticks = (own ? Number(f[11]) + Number(f[12]) : 0) + (reaped ? Number(f[13]) + Number(f[14]) : 0);
  return ticks / CLK_TCK;
}

/** Core-seconds of a set of processes (gone ones count as 0: read them before they exit). */
export function coreSecondsOf(pids: readonly number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      sum += coreSeconds(pid);
    } catch {
      /* exited */
    }
  }
  return sum;
}
