import { readdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { errorMessage } from './errors.js';
import { isFinished, readJobState } from './job-state.js';
import type { Keys } from './keys.js';
import type { Logger } from './logger.js';

/** Job folders are named by job id (`j` + base-36 time + random hex, see newJobId). */
const JOB_DIR = /^j[0-9a-z]{6,40}$/;

export interface StagingSweepSettings {
  /** How often to sweep, ms. */
  intervalMs: number;
  /** A finished job's folder goes once nothing in it changed for this long, ms. */
  graceMs: number;
  /** A `.partial` file, or a file outside job folders, goes once unchanged this long, ms. */
  staleMs: number;
}

export interface StagingSweeperOptions {
  /** This process's own staging folder, `<STAGING_DIR>/<role>/<id>`. Its siblings are swept too. */
  ownDir: string;
  etcd: Etcd3;
  keys: Keys;
  settings: StagingSweepSettings;
  log: Logger;
  /** Called for a finished job before its folder is removed (the uploader abandons its upload). */
  onFinished?: (jobId: string, state: string) => Promise<void>;
}

/** What one sweep removed. */
export interface SweepReport {
  jobDirs: number;
  staleFiles: number;
}

/**
 * Removes what no job needs from a role's staging, at start and then periodically: the folders
 * of jobs that are finished (SUCCEEDED, FAILED, CANCELLED, or gone from etcd) once unchanged for
 * `graceMs`, `.partial` files nobody wrote to for `staleMs` (a live transfer writes all the
 * time; a paced stream that stalls is ended long before), and other leftovers as old (uploads
 * and dry runs of a coordinator that died). It sweeps this process's folder and its siblings
 * under the same role folder: a process killed for good, or one whose id changes with every
 * start (the default coordinator id holds the pid), never comes back for its own. A job still in
 * flight keeps its folder, whoever it belongs to. A failed sweep is logged and tried again.
 */
export class StagingSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepReport> | undefined;

  constructor(private readonly o: StagingSweeperOptions) {}

  /** Sweeps once now (not awaited: etcd may still be out of reach) and then every interval. */
  start(): void {
    const tick = (): void => void this.sweep().catch((err: unknown) => this.o.log.warn({ err: errorMessage(err) }, 'staging sweep failed; trying again at the next tick'));
    tick();
    this.timer = setInterval(tick, this.o.settings.intervalMs);
    this.timer.unref();
  }

  /** One sweep (concurrent calls share the one in progress). */
  sweep(): Promise<SweepReport> {
    this.running ??= this.sweepOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async sweepOnce(): Promise<SweepReport> {
    const root = dirname(this.o.ownDir);
    const own = basename(this.o.ownDir);
    const siblings = (await readdir(root, { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory() && e.name !== own).map((e) => join(root, e.name));
    const report: SweepReport = { jobDirs: 0, staleFiles: 0 };
    const states = new Map<string, string>();
    for (const dir of [this.o.ownDir, ...siblings]) {
      for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const path = join(dir, e.name);
        if (e.isDirectory() && JOB_DIR.test(e.name)) {
          let state = states.get(e.name);
          if (state === undefined) {
            state = await readJobState(this.o.etcd, this.o.keys, e.name);
            states.set(e.name, state);
          }
          if (isFinished(state) && Date.now() - (await newestChange(path)) >= this.o.settings.graceMs) {
            await this.o.onFinished?.(e.name, state);
            await rm(path, { recursive: true, force: true });
            report.jobDirs++;
            this.o.log.info({ jobId: e.name, path, state }, 'staging of a finished job removed');
            continue;
          }
          report.staleFiles += await this.removeStale(path, (name) => name.endsWith('.partial'));
        } else {
          // Not a job's folder: an upload being received, a dry run, a stray file.
          report.staleFiles += await this.removeStale(path, () => true);
        }
      }
    }
    if (report.staleFiles > 0) this.o.log.info({ ...report }, 'stale staging files removed');
    return report;
  }

  /** Files under `path` (or `path` itself) matching `which` and unchanged for `staleMs`; returns how many went. */
  private async removeStale(path: string, which: (name: string) => boolean): Promise<number> {
    let removed = 0;
    const visit = async (p: string): Promise<void> => {
      const st = await stat(p).catch(() => undefined);
      if (!st) return;
      if (st.isDirectory()) {
        for (const name of await readdir(p).catch(() => [])) await visit(join(p, name));
        return;
      }
      if (which(basename(p)) && Date.now() - st.mtimeMs >= this.o.settings.staleMs) {
        await rm(p, { force: true });
        removed++;
      }
    };
    await visit(path);
    return removed;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }
}

/** The latest modification time of anything in a folder (the folder included), ms. */
async function newestChange(path: string): Promise<number> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return 0;
  let newest = st.mtimeMs;
  if (st.isDirectory()) {
    for (const name of await readdir(path).catch(() => [])) newest = Math.max(newest, await newestChange(join(path, name)));
  }
  return newest;
}
