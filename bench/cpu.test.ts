import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { coreSeconds } from './cpu.js';

/**
 * Burns 0.3 s of CPU, measured in CPU time (on a busy machine 300 ms of wall time may get far less
 * of a core). Self-contained: a child runs its source too.
 */
function burn(): number {
  const cpu = (): number => {
    const c = process.cpuUsage();
    return (c.user + c.system) / 1e6;
  };
  const start = cpu();
  let y = 0;
  while (cpu() - start < 0.3) y += Math.sqrt(y + 1);
  return y;
}

describe('coreSeconds', () => {
  it("counts a process's own CPU, and a child's once it has been reaped", async () => {
    const before = coreSeconds('self', { reaped: false });
    expect(burn()).toBeGreaterThan(0);
    // /proc counts in clock ticks (10 ms).
    expect(coreSeconds('self', { reaped: false }) - before).toBeGreaterThanOrEqual(0.28);

    const children = coreSeconds('self', { own: false });
    const child = spawn(process.execPath, ['-e', `(${burn.toString()})()`]);
    await new Promise((r) => child.once('exit', r));
    expect(coreSeconds('self', { own: false }) - children).toBeGreaterThanOrEqual(0.28);
  });
});
