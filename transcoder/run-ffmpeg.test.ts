import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../common/errors.js';
import { ProgressParser, runFailureKind, runFfmpeg, summarizeStderr } from './run-ffmpeg.js';
import { makeTempDir, processExists } from './test-fixtures.js';

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
      onSpawn: (p) => { pid = p; },
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
      onSpawn: (p) => { pid = p; },
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
      onSpawn: (p) => { pid = p; },
      onProgress: () => ctl.abort(new Error('user cancelled')),
    });
    const err = await run.catch((e: unknown) => e);
    expect(isAppError(err, 'CANCELLED')).toBe(true);
    expect(processExists(pid)).toBe(false);
    expect(() => process.kill(-pid, 0)).toThrow(); // the whole group is gone
    const early = await runFfmpeg(endless, { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(isAppError(early, 'CANCELLED')).toBe(true);
  });

  it('runs ffprobe and returns its stdout', async () => {
    const { stdout } = await runFfmpeg(['-hide_banner', '-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=5:duration=1', '-show_entries', 'stream=width', '-of', 'csv=p=0'], { binary: 'ffprobe' });
    expect(stdout.trim()).toBe('64');
  });
});
