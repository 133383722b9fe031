/**
 * Runs an async task one at a time: a `kick()` while it runs asks for exactly one more run after
 * it (bursts of triggers coalesce). Failures go to `onError`; the runner keeps working.
 */
export class SerialRunner {
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly task: () => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.task()
      .catch(this.onError)
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Resolves when the current run (if any) has finished. */
  async idle(): Promise<void> {
    await this.running;
  }
}
