import type { Logger } from './logger.js';

export type LifecycleState = 'starting' | 'running' | 'draining' | 'stopped';

/**
 * The single owner of shutdown in a process. Cleanup steps run in reverse order of
 * registration; every step runs even if an earlier one fails. `stop()` is idempotent.
 */
export class Lifecycle {
  private steps: { name: string; fn: () => Promise<void> | void }[] = [];
  private stopping: Promise<void> | undefined;
  state: LifecycleState = 'starting';

  constructor(private readonly log: Logger) {}

  /** Registers a cleanup step; runs before the ones registered earlier. */
  onStop(name: string, fn: () => Promise<void> | void): void {
    this.steps.push({ name, fn });
  }

  stop(reason = 'stop'): Promise<void> {
    this.stopping ??= this.runSteps(reason);
    return this.stopping;
  }

  private async runSteps(reason: string): Promise<void> {
    this.state = 'draining';
    this.log.info({ reason }, 'shutting down');
    for (const step of [...this.steps].reverse()) {
      try {
        await step.fn();
      } catch (err) {
        this.log.warn({ err, step: step.name }, 'shutdown step failed');
      }
    }
    this.state = 'stopped';
    this.log.info('stopped');
    this.log.flush();
  }

  /**
   * Only a process's main.ts calls this: the first SIGTERM/SIGINT stops gracefully within
   * `graceMs`, a second signal (or the grace period running out) exits at once.
   */
  handleSignals(graceMs: number, exit: (code: number) => void): void {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        this.log.warn({ sig }, 'second signal: exiting now');
        exit(1);
        return;
      }
      const timer = setTimeout(() => {
        this.log.warn({ graceMs }, 'grace period over: exiting');
        exit(1);
      }, graceMs);
      timer.unref();
      void this.stop(sig).then(() => exit(0));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
}
