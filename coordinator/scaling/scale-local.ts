import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../common/logger.js';
import type { ScaleProvider } from './autoscaler.js';
import type { NodePool } from './autoscaler-policy.js';
import { formatLabels } from '../../common/placement.js';
import { CHECKOUT_ROOT, nodeArgs } from '../../common/node-entry.js';

/**
 * The `local` provider: node agents as processes on this machine. Scale-up spawns them (they join
 * on boot); scale-down relies on the drain mark — the agent drains, leaves and exits by itself.
 */
export class LocalScaleProvider implements ScaleProvider {
  readonly name = 'local';
  private seq = 0;
  private children = new Map<string, ChildProcess>();
  private requested = new Set<string>();

  constructor(
    private readonly env: Record<string, string>,
    private readonly slots: number,
    private readonly logDir: string,
    private readonly idPrefix: string,
    private readonly log: Logger,
  ) {}

  /** A pool's nodes get its labels; capabilities are what this machine's probes find (none are granted). */
  async scaleUp(count: number, pool?: NodePool): Promise<void> {
    mkdirSync(this.logDir, { recursive: true });
    for (let i = 0; i < count; i++) {
      const id = `${this.idPrefix}${Date.now().toString(36)}-${this.seq++}`;
      const fd = openSync(join(this.logDir, `${id}.log`), 'a');
      const child = spawn(process.execPath, nodeArgs('node-agent/main.ts'), {
        cwd: CHECKOUT_ROOT,
        env: { ...this.env, NODE_ID: id, WORKER_SLOTS: String(this.slots), GRPC_PORT: '0', METRICS_PORT: '0', ...(pool ? { NODE_LABELS: formatLabels(pool.labels).join(',') } : {}) },
        stdio: ['ignore', fd, fd],
        detached: true,
      });
      closeSync(fd);
      child.unref();
      this.children.set(id, child);
      this.requested.add(id);
      child.once('exit', (code) => {
        this.children.delete(id);
        this.requested.delete(id);
        this.log.info({ nodeId: id, code }, 'autoscaled node agent exited');
      });
      this.log.info({ nodeId: id, pid: child.pid }, 'started a node agent');
    }
  }

  async scaleDown(nodeIds: string[]): Promise<void> {
    // Nothing to do: each drained agent exits on its own once it holds nothing.
    for (const id of nodeIds) this.requested.delete(id);
  }

  pending(registered: ReadonlySet<string>): number {
    for (const id of registered) this.requested.delete(id);
    return this.requested.size;
  }

  /** The node agents this provider started (their processes outlive the coordinator on purpose). */
  started(): string[] {
    return [...this.children.keys()];
  }

  async close(): Promise<void> {
    this.requested.clear();
  }
}
