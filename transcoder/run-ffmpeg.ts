import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { AppError } from '../common/errors.js';
import { looksOutOfMemory, nicePath, prlimitArgs, prlimitPath, resolveLimits, type FfmpegLimits } from './ffmpeg-limits.js';

/** Progress reported by ffmpeg's `-progress pipe:1` blocks. */
export interface FfmpegProgress {
  /** Frames written so far (of the first video output). */
  frame: number;
  /** Output position in seconds (largest timestamp muxed so far). */
  outTimeSec: number;
}

/** Options of one ffmpeg/ffprobe run. */
export interface RunOptions {
  /** Aborting kills the whole process group; the run rejects with AppError('CANCELLED'). */
  signal?: AbortSignal;
  /** Hard limit on the run's wall-clock time in ms (default 1 h). */
  wallClockMs?: number;
  /**
   * Kill the run when it shows no sign of life for this many ms (default 60 s). Signs of life: a
   * new progress block, any stderr output and, for ffprobe, any stdout output.
   */
  noProgressMs?: number;
  /** Called on every complete `-progress` block (ffmpeg only). */
  onProgress?: (p: FfmpegProgress) => void;
  /** Which tool to run (default 'ffmpeg'); resolved through PATH. */
  binary?: 'ffmpeg' | 'ffprobe';
  /** Called once with the child's pid (= its process group id) right after the spawn. */
  onSpawn?: (pid: number) => void;
  /**
   * ffprobe only: the most stdout bytes kept (default 128 MiB); beyond it the run is killed and
   * rejects with LIMIT_EXCEEDED. ffmpeg's stdout (progress blocks) is kept as a 1 MiB tail.
   */
  maxStdoutBytes?: number;
  /**
   * Kernel limits for the process (see FfmpegLimits), applied through prlimit when it is
   * installed (silently off when it is not). Default: FfmpegLimits' defaults; the CPU cap
   * follows `wallClockMs`.
   */
  limits?: FfmpegLimits;
}

/** Why a run failed; attached as `cause` of the AppError so callers can tell kinds apart. */
export interface RunFailure {
  kind: 'exit' | 'signal' | 'watchdog' | 'spawn' | 'cancelled' | 'stdout-limit' | 'resource-limit';
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Which kernel limit stopped it when kind is 'resource-limit'. */
  limit?: 'memory' | 'cpu';
  /** 'wall-clock' or 'no-progress' when kind is 'watchdog'. */
  watchdog?: 'wall-clock' | 'no-progress';
  /** Last (≤ 64 KiB) stderr output. */
  stderrTail: string;
  /** The abort reason when kind is 'cancelled'. */
  reason?: unknown;
}

/** True when `err` is an AppError from runFfmpeg whose cause says it failed in the given way. */
export function runFailureKind(err: unknown): RunFailure['kind'] | undefined {
  if (!(err instanceof AppError)) return undefined;
  const c = err.cause as Partial<RunFailure> | undefined;
  return c && typeof c === 'object' && typeof c.kind === 'string' ? c.kind : undefined;
}

const DEFAULT_WALL_CLOCK_MS = 60 * 60 * 1000;
const DEFAULT_NO_PROGRESS_MS = 60 * 1000;
/** stderr kept for error summaries: ffmpeg can log megabytes on a broken input. */
const STDERR_TAIL_BYTES = 64 * 1024;
const FFMPEG_STDOUT_TAIL_BYTES = 1024 * 1024;
const DEFAULT_FFPROBE_STDOUT_BYTES = 128 * 1024 * 1024;
const SUMMARY_MAX_CHARS = 500;

/** Keeps only the last `limit` bytes written to it (memory stays bounded whatever the child logs). */
class TailBuffer {
  private chunks: Buffer[] = [];
  private bytes = 0;
  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes > this.limit && this.chunks.length > 0) {
      const first = this.chunks[0]!;
      const excess = this.bytes - this.limit;
      if (first.length <= excess) {
        this.chunks.shift();
        this.bytes -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.bytes -= excess;
      }
    }
  }

  toString(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/**
 * Incremental parser of ffmpeg's `-progress` output: key=value lines, a block ends with
 * `progress=continue` or `progress=end`. Pure; fed with arbitrary chunk boundaries.
 */
export class ProgressParser {
  private partial = '';
  private frame = 0;
  private outTimeSec = 0;

  /** Feeds stdout text; returns the progress of every block completed by it. */
  push(text: string): FfmpegProgress[] {
    const done: FfmpegProgress[] = [];
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.trim();
      const eq = line.indexOf('=');
      if (eq <= 0) continue;
      const key = line.slice(0, eq);
      const value = line.slice(eq + 1);
      if (key === 'frame') {
        const n = Number(value);
        if (Number.isFinite(n) && n >= 0) this.frame = n;
      } else if (key === 'out_time_us' || key === 'out_time_ms') {
        // Both are microseconds (out_time_ms is misnamed in ffmpeg); "N/A" before the first packet.
        const us = Number(value);
        if (Number.isFinite(us) && us >= 0) this.outTimeSec = us / 1e6;
      } else if (key === 'progress') {
        done.push({ frame: this.frame, outTimeSec: this.outTimeSec });
      }
    }
    return done;
  }
}

/**
 * A short readable summary of a failed run's stderr: the last few meaningful lines joined with
 * " | ", at most 500 characters (the end is kept: ffmpeg prints the root cause last).
 */
export function summarizeStderr(stderr: string): string {
  const noise = /^(Conversion failed!|Exiting normally|frame=|size=|video:|\s*$)/;
  const lines = stderr
    .split(/\r?\n|\r/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !noise.test(l));
  const picked: string[] = [];
  for (let i = lines.length - 1; i >= 0 && picked.length < 4; i--) {
    const l = lines[i]!;
    if (picked[0] !== l) picked.unshift(l);
  }
  let s = picked.join(' | ');
  // eslint-disable-next-line no-control-regex
  s = s.replace(/[\u0000-\u001f\u007f]/g, ' ');
  if (s.length > SUMMARY_MAX_CHARS) s = `…${s.slice(s.length - SUMMARY_MAX_CHARS + 1)}`;
  return s || 'no error output';
}

/** SIGKILL to the whole process group (ffmpeg may have helper threads/children); ignores "already gone". */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already exited */
    }
  }
}

/**
 * Runs ffmpeg (or ffprobe) in its own process group with stdin ignored, parsing `-progress`
 * blocks from stdout. Watchdogs (wall clock, no progress) and aborts SIGKILL the whole group.
 * Always waits for the child's 'close' so no zombie or open pipe is left behind.
 *
 * Runs under the kernel limits of `opts.limits` (prlimit) when prlimit is installed, and at
 * niceness `opts.limits.nice` (default 10: the processes that own the encodes come first).
 *
 * Rejects with AppError: 'CANCELLED' on abort; 'LIMIT_EXCEEDED' when a kernel limit stopped it
 * (out of memory under the address-space cap, or the CPU-time cap; not retryable: the same input
 * needs the same again); 'TRANSCODE_FAILED' on a non-zero exit (message summarises stderr), on a
 * watchdog (retryable) or on a death by signal it did not send (retryable: someone killed it,
 * e.g. the OOM killer). `cause` is a {@link RunFailure}. Resolves with stdout and the stderr tail.
 */
export async function runFfmpeg(args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const binary = opts.binary ?? 'ffmpeg';
  // Belt and braces: ffmpeg must never read the terminal/stdin (it would eat input or hang).
  const finalArgs = binary === 'ffmpeg' && !args.includes('-nostdin') ? ['-nostdin', ...args] : [...args];
  const wallClockMs = opts.wallClockMs ?? DEFAULT_WALL_CLOCK_MS;
  const noProgressMs = opts.noProgressMs ?? DEFAULT_NO_PROGRESS_MS;
  const maxStdout = opts.maxStdoutBytes ?? DEFAULT_FFPROBE_STDOUT_BYTES;
  const limits = resolveLimits(opts.limits, wallClockMs);
  const prlimit = prlimitPath();
  const limitArgs = prlimit ? prlimitArgs(limits) : [];
  const applied = { addressSpaceMb: limitArgs.length > 0 ? limits.addressSpaceMb : 0, cpuSec: limitArgs.length > 0 ? limits.cpuSec : 0 };
  const startedAt = Date.now();

  if (opts.signal?.aborted) {
    throw new AppError('CANCELLED', `${binary} was cancelled before it started`, {
      cause: { kind: 'cancelled', exitCode: null, signal: null, stderrTail: '', reason: opts.signal.reason } satisfies RunFailure,
    });
  }

  return new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    const stderr = new TailBuffer(STDERR_TAIL_BYTES);
    const stdoutTail = new TailBuffer(FFMPEG_STDOUT_TAIL_BYTES);
    const stdoutAll: Buffer[] = [];
    let stdoutBytes = 0;
    const parser = new ProgressParser();
    let killedFor: { kind: RunFailure['kind']; watchdog?: 'wall-clock' | 'no-progress' } | undefined;
    let spawnError: Error | undefined;
    let settled = false;

    // nice and prlimit set the priority and the limits on themselves and exec the next: same pid,
    // same process group, and every thread ffmpeg starts inherits them.
    const limited = prlimit && limitArgs.length > 0 ? [prlimit, ...limitArgs, '--', binary, ...finalArgs] : [binary, ...finalArgs];
    const nice = nicePath();
    const [command, ...commandArgs] = nice && limits.nice > 0 ? [nice, '-n', String(limits.nice), ...limited] : limited;
    const child = spawn(command!, commandArgs, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      // SVT-AV1 logs its banner at info level straight to stderr; keep stderr for real errors.
      env: { ...process.env, SVT_LOG: process.env['SVT_LOG'] ?? '1', AV_LOG_FORCE_NOCOLOR: '1' },
    });
    const pid = child.pid;

    const kill = (why: { kind: RunFailure['kind']; watchdog?: 'wall-clock' | 'no-progress' }): void => {
      if (killedFor || pid === undefined) return;
      killedFor = why;
      killGroup(pid);
    };

    let stallTimer: NodeJS.Timeout | undefined;
    const armStall = (): void => {
      if (!Number.isFinite(noProgressMs) || noProgressMs <= 0) return;
      if (stallTimer) clearTimeout(stallTimer);
      stallTimer = setTimeout(() => kill({ kind: 'watchdog', watchdog: 'no-progress' }), noProgressMs);
    };
    const wallTimer = Number.isFinite(wallClockMs) && wallClockMs > 0 ? setTimeout(() => kill({ kind: 'watchdog', watchdog: 'wall-clock' }), wallClockMs) : undefined;
    armStall();

    const onAbort = (): void => kill({ kind: 'cancelled' });
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout.on('data', (chunk: Buffer) => {
      if (binary === 'ffprobe') {
        armStall();
        stdoutBytes += chunk.length;
        if (stdoutBytes > maxStdout) {
          kill({ kind: 'stdout-limit' });
          return;
        }
        stdoutAll.push(chunk);
        return;
      }
      stdoutTail.push(chunk);
      const blocks = parser.push(chunk.toString('utf8'));
      if (blocks.length > 0) armStall();
      for (const p of blocks) {
        try {
          opts.onProgress?.(p);
        } catch {
          /* a progress callback must not break the run */
        }
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      armStall();
      stderr.push(chunk);
    });
    child.on('error', (err) => {
      spawnError = err;
      // A failed spawn never emits 'close' on some Node versions; settle here in that case.
      if (pid === undefined) finish(null, null);
    });
    child.on('close', (code, sig) => finish(code, sig));

    if (pid !== undefined) {
      try {
        opts.onSpawn?.(pid);
      } catch {
        /* observer only */
      }
      // The signal may have fired between the check above and the listener registration.
      if (opts.signal?.aborted) onAbort();
    }

    function finish(code: number | null, sig: NodeJS.Signals | null): void {
      if (settled) return;
      settled = true;
      if (stallTimer) clearTimeout(stallTimer);
      if (wallTimer) clearTimeout(wallTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      const stderrTail = stderr.toString();
      const failure = (kind: RunFailure['kind'], extra: Partial<RunFailure> = {}): RunFailure => ({ kind, exitCode: code, signal: sig, stderrTail, ...extra });

      if (spawnError && pid === undefined) {
        reject(new AppError('TRANSCODE_FAILED', `could not start ${binary}: ${spawnError.message}`, { cause: failure('spawn'), retryable: false }));
        return;
      }
      if ((code === 126 || code === 127) && /^(prlimit: failed to execute|nice: )/m.test(stderrTail)) {
        reject(new AppError('TRANSCODE_FAILED', `could not start ${binary}: ${summarizeStderr(stderrTail)}`, { cause: failure('spawn'), retryable: false }));
        return;
      }
      if (killedFor?.kind === 'cancelled') {
        reject(new AppError('CANCELLED', `${binary} was cancelled`, { cause: failure('cancelled', { reason: opts.signal?.reason }) }));
        return;
      }
      if (killedFor?.kind === 'watchdog') {
        const what = killedFor.watchdog === 'wall-clock' ? `ran longer than ${wallClockMs} ms (wall-clock watchdog)` : `made no progress for ${noProgressMs} ms (no-progress watchdog)`;
        reject(new AppError('TRANSCODE_FAILED', `${binary} ${what}; killed`, { cause: failure('watchdog', { watchdog: killedFor.watchdog ?? 'no-progress' }), retryable: true }));
        return;
      }
      if (killedFor?.kind === 'stdout-limit') {
        reject(new AppError('LIMIT_EXCEEDED', `${binary} wrote more than ${maxStdout} bytes of output; killed`, { cause: failure('stdout-limit') }));
        return;
      }
      const limitHit = killedFor ? undefined : whichLimit(code, sig, stderrTail);
      if (limitHit === 'memory') {
        reject(
          new AppError('LIMIT_EXCEEDED', `${binary} ran out of memory under its address-space limit of ${applied.addressSpaceMb} MiB: ${summarizeStderr(stderrTail)}`, {
            cause: failure('resource-limit', { limit: 'memory' }),
            retryable: false,
          }),
        );
        return;
      }
      if (limitHit === 'cpu') {
        reject(new AppError('LIMIT_EXCEEDED', `${binary} used up its CPU-time limit of ${applied.cpuSec} s; stopped`, { cause: failure('resource-limit', { limit: 'cpu' }), retryable: false }));
        return;
      }
      if (sig !== null) {
        reject(new AppError('TRANSCODE_FAILED', `${binary} was killed by ${sig}: ${summarizeStderr(stderrTail)}`, { cause: failure('signal'), retryable: true }));
        return;
      }
      if (code !== 0) {
        reject(new AppError('TRANSCODE_FAILED', `${binary} exited with code ${String(code)}: ${summarizeStderr(stderrTail)}`, { cause: failure('exit'), retryable: false }));
        return;
      }
      resolve({ stdout: binary === 'ffprobe' ? Buffer.concat(stdoutAll).toString('utf8') : stdoutTail.toString(), stderr: stderrTail });
    }

    /** Which kernel limit (if any) explains a failure we did not cause. */
    function whichLimit(code: number | null, sig: NodeJS.Signals | null, stderrTail: string): 'memory' | 'cpu' | undefined {
      if (code === 0) return undefined;
      if (applied.cpuSec > 0) {
        if (sig === 'SIGXCPU') return 'cpu';
        // ffmpeg catches SIGXCPU and exits with 255 (123 after repeated signals); the hard limit
        // SIGKILLs. Each only counts when the run lasted long enough to spend its CPU allowance.
        const couldSpend = ((Date.now() - startedAt) / 1000) * availableParallelism() >= applied.cpuSec;
        if ((sig === 'SIGKILL' || code === 255 || code === 123) && couldSpend) return 'cpu';
      }
      if (applied.addressSpaceMb > 0 && looksOutOfMemory(stderrTail)) return 'memory';
      return undefined;
    }
  });
}
