import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../common/errors.js';
import { DEFAULT_NICE, defaultAddressSpaceMb, defaultCpuSec, prlimitPath } from './ffmpeg-limits.js';
import { ProgressParser, runFailureKind, runFfmpeg, summarizeStderr, type RunFailure } from './run-ffmpeg.js';
import { makeTempDir, processExists } from '../test/support/media-fixtures.js';

describe('ProgressParser', () => {
  it('emits one progress per block, across chunk boundaries', () => {
    const p = new ProgressParser();
    expect(p.push('frame=10\nfps=0.0\nout_time_us=333333\nprogress=cont')).toEqual([]);
    expect(p.push('inue\nframe=20\nout_time_ms=N/A\nprogress=end\n')).toEqual([
      { frame: 10, outTimeSec: 0.333333 },
      { frame: 20, outTimeSec: 0.333333 },
    ]);
  });
});

describe('summarizeStderr', () => {
  it('keeps the last meaningful lines, bounded', () => {
    expect(summarizeStderr('a\n\nError opening input\nfile:/x: No such file or directory\nConversion failed!\n')).toBe('a | Error opening input | file:/x: No such file or directory');
    expect(summarizeStderr('x'.repeat(5000)).length).toBeLessThanOrEqual(500);
    expect(summarizeStderr('')).toBe('no error output');
  });
});

describe('runFfmpeg (real ffmpeg)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
  });
  afterAll(async () => cleanup());

  // A live input that never ends on its own: -re paces it at real time.
  const endless = ['-hide_banner', '-nostdin', '-loglevel', 'error', '-nostats', '-progress', 'pipe:1', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-f', 'null', '-'];

  it('reports progress and resolves on success', async () => {
    const seen: { frame: number; outTimeSec: number }[] = [];
    let pid = 0;
    await runFfmpeg(['-hide_banner', '-nostdin', '-loglevel', 'error', '-nostats', '-progress', 'pipe:1', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=25:duration=1', '-f', 'null', '-'], {
      onProgress: (p) => seen.push(p),
      onSpawn: (p) => {
        pid = p;
      },
    });
    expect(pid).toBeGreaterThan(0);
    expect(processExists(pid)).toBe(false);
    expect(seen.at(-1)?.frame).toBe(25);
    expect(seen.at(-1)?.outTimeSec).toBeGreaterThan(0.9);
  });

  it('fails with a readable summary on a non-zero exit', async () => {
    const err = await runFfmpeg(['-hide_banner', '-nostdin', '-protocol_whitelist', 'file', '-i', `file:${join(dir, 'missing.mp4')}`, '-f', 'null', '-']).catch((e: unknown) => e);
    expect(isAppError(err, 'TRANSCODE_FAILED')).toBe(true);
    expect((err as AppError).retryable).toBe(false);
    expect((err as AppError).message).toMatch(/No such file/);
    expect((err as AppError).message.length).toBeLessThan(600);
  });

  it('kills a stalled ffmpeg with the no-progress watchdog (input FIFO nobody writes)', async () => {
    const fifo = join(dir, 'stalled.fifo');
    execFileSync('mkfifo', [fifo]);
    let pid = 0;
    const t0 = Date.now();
    const err = await runFfmpeg(['-hide_banner', '-nostdin', '-nostats', '-progress', 'pipe:1', '-protocol_whitelist', 'file', '-i', `file:${fifo}`, '-f', 'null', '-'], {
      noProgressMs: 300,
      onSpawn: (p) => {
        pid = p;
      },
    }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(isAppError(err, 'TRANSCODE_FAILED')).toBe(true);
    expect((err as AppError).retryable).toBe(true);
    expect((err as AppError).message).toMatch(/watchdog/);
    expect(runFailureKind(err)).toBe('watchdog');
    expect(processExists(pid)).toBe(false);
  });

  it('kills a run that exceeds the wall clock even while it makes progress', async () => {
    const err = await runFfmpeg(endless, { wallClockMs: 700, noProgressMs: 10_000 }).catch((e: unknown) => e);
    expect(isAppError(err, 'TRANSCODE_FAILED')).toBe(true);
    expect((err as AppError).retryable).toBe(true);
    expect((err as AppError).message).toMatch(/wall-clock watchdog/);
  });

  it('treats an external SIGKILL as a retryable failure and leaves no zombie', async () => {
    let pid = 0;
    const run = runFfmpeg(endless, {
      onSpawn: (p) => {
        pid = p;
        setTimeout(() => process.kill(p, 'SIGKILL'), 300);
      },
    });
    const err = await run.catch((e: unknown) => e);
    expect(isAppError(err, 'TRANSCODE_FAILED')).toBe(true);
    expect((err as AppError).retryable).toBe(true);
    expect((err as AppError).message).toMatch(/SIGKILL/);
    // kill(pid, 0) succeeds on a zombie too: ESRCH proves the child was reaped.
    expect(processExists(pid)).toBe(false);
  });

  it('abort kills the process group and rejects with CANCELLED', async () => {
    const ctl = new AbortController();
    let pid = 0;
    const run = runFfmpeg(endless, {
      signal: ctl.signal,
      onSpawn: (p) => {
        pid = p;
      },
      onProgress: () => ctl.abort(new Error('user cancelled')),
    });
    const err = await run.catch((e: unknown) => e);
    expect(isAppError(err, 'CANCELLED')).toBe(true);
    expect(processExists(pid)).toBe(false);
    expect(() => process.kill(-pid, 0)).toThrow(); // the whole group is gone
    const early = await runFfmpeg(endless, { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(isAppError(early, 'CANCELLED')).toBe(true);
  });

  // Kernel limits need util-linux prlimit (present on our images and CI).
  const withPrlimit = prlimitPath() ? it : it.skip;

  withPrlimit('runs every ffmpeg under the default address-space and CPU caps', async () => {
    let pid = 0;
    let limits = '';
    const ctl = new AbortController();
    await runFfmpeg(endless, {
      signal: ctl.signal,
      wallClockMs: 60_000,
      onSpawn: (p) => {
        pid = p;
      },
      onProgress: () => {
        if (!limits) limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
        ctl.abort();
      },
    }).catch(() => undefined);
    const row = (name: string): string[] =>
      limits
        .split('\n')
        .find((l) => l.startsWith(name))
        ?.trim()
        .split(/\s{2,}/) ?? [];
    expect(row('Max address space').slice(1, 3)).toEqual([String(defaultAddressSpaceMb() * 1024 * 1024), String(defaultAddressSpaceMb() * 1024 * 1024)]);
    const cpu = Number(row('Max cpu time')[1]);
    expect(Number(row('Max cpu time')[2])).toBe(cpu + 5);
    expect(cpu).toBe(defaultCpuSec(60_000));
  });

  withPrlimit('a tiny memory cap makes ffmpeg fail fast with a clear LIMIT_EXCEEDED', async () => {
    let pid = 0;
    const t0 = Date.now();
    const err = await runFfmpeg(
      ['-hide_banner', '-nostdin', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=1920x1080:rate=30:duration=5', '-c:v', 'libx264', '-preset', 'veryfast', '-f', 'null', '-'],
      {
        limits: { addressSpaceMb: 400 },
        onSpawn: (p) => {
          pid = p;
        },
      },
    ).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(isAppError(err, 'LIMIT_EXCEEDED')).toBe(true);
    expect((err as AppError).retryable).toBe(false);
    expect((err as AppError).message).toMatch(/^ffmpeg ran out of memory under its address-space limit of 400 MiB: \S/);
    expect(runFailureKind(err)).toBe('resource-limit');
    expect(((err as AppError).cause as RunFailure).limit).toBe('memory');
    expect(processExists(pid)).toBe(false);
  });

  withPrlimit('the CPU-time cap stops a run that burns CPU without end', async () => {
    const busy = [
      '-hide_banner',
      '-nostdin',
      '-loglevel',
      'error',
      '-nostats',
      '-progress',
      'pipe:1',
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=1280x720:rate=30',
      '-c:v',
      'libx264',
      '-preset',
      'medium',
      '-threads',
      '1',
      '-f',
      'null',
      '-',
    ];
    const err = await runFfmpeg(busy, { limits: { cpuSec: 1 }, wallClockMs: 30_000 }).catch((e: unknown) => e);
    expect(isAppError(err, 'LIMIT_EXCEEDED')).toBe(true);
    expect((err as AppError).message).toBe('ffmpeg used up its CPU-time limit of 1 s; stopped');
    expect(((err as AppError).cause as RunFailure).limit).toBe('cpu');
  });

  it("runs every ffmpeg at niceness 10 by default, and at the caller's with nice 0", async () => {
    const niceOf = async (limits?: { nice: number }): Promise<number> => {
      let nice = -1;
      const ctl = new AbortController();
      await runFfmpeg(endless, {
        signal: ctl.signal,
        ...(limits ? { limits } : {}),
        onProgress: () => undefined,
        onSpawn: (p) => {
          // /proc/<pid>/stat: field 19 is the niceness (the command name, field 2, is in parentheses).
          const poll = setInterval(() => {
            try {
              const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
              if (!stat.includes('(ffmpeg)')) return; // still nice or prlimit, about to exec
              nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
              clearInterval(poll);
              ctl.abort();
            } catch {
              clearInterval(poll);
            }
          }, 5);
        },
      }).catch(() => undefined);
      return nice;
    };
    const own = getPriority();
    expect(await niceOf()).toBe(Math.min(19, own + DEFAULT_NICE));
    expect(await niceOf({ nice: 0 })).toBe(own);
  });

  it('runs without prlimit when every limit is off', async () => {
    const { stdout } = await runFfmpeg(['-hide_banner', '-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=5:duration=1', '-show_entries', 'stream=height', '-of', 'csv=p=0'], {
      binary: 'ffprobe',
      limits: { addressSpaceMb: 0, cpuSec: 0 },
    });
    expect(stdout.trim()).toBe('48');
  });

  it('runs ffprobe and returns its stdout', async () => {
    const { stdout } = await runFfmpeg(['-hide_banner', '-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=5:duration=1', '-show_entries', 'stream=width', '-of', 'csv=p=0'], {
      binary: 'ffprobe',
    });
    expect(stdout.trim()).toBe('64');
  });
});
