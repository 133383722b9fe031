import { accessSync, constants as fsConstants } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * Kernel-enforced limits for one ffmpeg/ffprobe process, applied with util-linux `prlimit`
 * (setrlimit, then exec: same pid, same process group). They hold even when the Node process
 * that owns the watchdogs dies, so an orphaned ffmpeg cannot run or grow forever.
 * `0` switches a limit off; `undefined` means the default.
 */
export interface FfmpegLimits {
  /** RLIMIT_AS in MiB (virtual address space, counts thread stacks and malloc arenas). */
  addressSpaceMb?: number;
  /** RLIMIT_CPU in seconds of CPU time (all threads); SIGXCPU at the limit, SIGKILL 5 s later. */
  cpuSec?: number;
  /**
   * Scheduling niceness (0–19) the process starts with (`nice -n`, then exec: same pid); 0 runs
   * it at the caller's priority. See {@link DEFAULT_NICE}.
   */
  nice?: number;
}

/**
 * Default niceness of every ffmpeg/ffprobe: 10. An encode wants every core for as long as it
 * runs; the process that owns it (its gRPC server, its etcd lease keep-alives, the coordinator's
 * streams) needs a few milliseconds now and then, and a lease that misses its keep-alive because
 * the encoders hold the cores takes the node out of the cluster. Niceness only weighs runnable
 * threads against each other: with nothing else to run, a niced encode still gets every core, so
 * it costs an encode nothing. (Measured on 2 cores with two 720p x264 encodes holding them: a
 * node agent's restart took 6.8 s to register again at niceness 0 beside them; see BENCHMARKS.md.)
 */
export const DEFAULT_NICE = 10;

/**
 * Niceness of work that no one waits for yet, beside work that someone does (a job's audio
 * encode, needed only at its finalize, runs while the start's cut, scans and first encodes hold
 * the cores): weighted about a third of a DEFAULT_NICE process, it takes the cores they leave.
 */
export const BACKGROUND_NICE = 15;

/**
 * Niceness of the short work a job's start waits on before any encode can begin (the
 * coordinator's probe, packet scan, idet sample and cut): above the encodes of jobs already
 * running, so a new job does not queue its first seconds behind them.
 */
export const FOREGROUND_NICE = 5;

/**
 * The `-max_pixels` for a width × height limit. Decoders check their coded, aligned picture
 * (1080p H.264 is coded as 1088 rows; widths are padded to the SIMD stride, up to 64), so one
 * 64-pixel block of slack each way keeps a source right at the limit decodable.
 */
export function decoderPixelCap(maxWidth: number, maxHeight: number): number {
  return (maxWidth + 64) * (maxHeight + 64);
}

/**
 * Default `-max_pixels`: for the coordinator's default size limit, 7680 × 4320. A stream that
 * claims, or switches mid-way to, a larger picture fails to decode instead of allocating gigabytes.
 */
export const DEFAULT_MAX_PIXELS = decoderPixelCap(7680, 4320);
/** ffmpeg's AVOption range for max_pixels is 0..INT_MAX. */
const INT_MAX = 2_147_483_647;

/**
 * Default address-space cap in MiB: 16 GiB + 256 MiB per core. Measured (ffmpeg 5.1, 2 cores):
 * the virtual size is dominated by thread stacks (8 MiB each) and malloc arenas, so it grows with
 * threads, not with the picture alone — 1080p 4-rung x264 ladder 1.3 GiB (auto threads), 3.7 GiB
 * (-threads 16), 5.5 GiB (-threads 32); 1080p x265 2-rung 2.4 GiB (pools=16); 2160p SVT-AV1
 * 5.8 GiB (263 threads); 4320p SVT-AV1 13.0 GiB (297 threads); 4320p x265 2-rung 5.1 GiB.
 * The per-core part follows the encoders' thread pools on bigger machines.
 */
export function defaultAddressSpaceMb(cores = availableParallelism()): number {
  return 16_384 + 256 * Math.max(1, cores);
}

/**
 * Default CPU-time cap in s: what the wall-clock watchdog allows on every core
 * (⌈wall clock s⌉ × cores); 0 (off) without a finite wall clock.
 */
export function defaultCpuSec(wallClockMs: number, cores = availableParallelism()): number {
  if (!Number.isFinite(wallClockMs) || wallClockMs <= 0) return 0;
  return Math.ceil(wallClockMs / 1000) * Math.max(1, cores);
}

/** Clamps a pixel count to what `-max_pixels` accepts (1..INT_MAX); undefined → the default. */
export function maxPixelsArg(maxPixels: number | undefined): string {
  const n = maxPixels === undefined || !Number.isFinite(maxPixels) ? DEFAULT_MAX_PIXELS : Math.floor(maxPixels);
  return String(Math.min(INT_MAX, Math.max(1, n)));
}

/** The limits a run gets: explicit values win, missing ones take the defaults. Pure. */
export function resolveLimits(l: FfmpegLimits | undefined, wallClockMs: number): { addressSpaceMb: number; cpuSec: number; nice: number } {
  const pick = (v: number | undefined, def: number): number => (v === undefined || !Number.isFinite(v) ? def : Math.max(0, Math.floor(v)));
  return { addressSpaceMb: pick(l?.addressSpaceMb, defaultAddressSpaceMb()), cpuSec: pick(l?.cpuSec, defaultCpuSec(wallClockMs)), nice: Math.min(19, pick(l?.nice, DEFAULT_NICE)) };
}

/**
 * `prlimit` options for the limits (empty when all are off). Pure. The CPU soft limit sends
 * SIGXCPU; the hard limit, 5 s later, SIGKILL (ffmpeg catches SIGXCPU to finish its output).
 */
export function prlimitArgs(l: { addressSpaceMb: number; cpuSec: number }): string[] {
  const out: string[] = [];
  if (l.addressSpaceMb > 0) out.push(`--as=${l.addressSpaceMb * 1024 * 1024}`);
  if (l.cpuSec > 0) out.push(`--cpu=${l.cpuSec}:${l.cpuSec + 5}`);
  return out;
}

/** The first executable of `paths`, or null. */
function firstExecutable(paths: string[]): string | null {
  return (
    paths.find((p) => {
      try {
        accessSync(p, fsConstants.X_OK);
        return true;
      } catch {
        return false;
      }
    }) ?? null
  );
}

// Looked up at fixed places, not on PATH: a writable PATH entry must not pick a wrapper.
let prlimitCache: string | null | undefined;
let niceCache: string | null | undefined;

/** Absolute path of util-linux `prlimit` (looked up once), or undefined when it is missing. */
export function prlimitPath(): string | undefined {
  prlimitCache ??= firstExecutable(['/usr/bin/prlimit', '/bin/prlimit', '/usr/local/bin/prlimit']);
  return prlimitCache ?? undefined;
}

/** Absolute path of coreutils `nice` (looked up once), or undefined when it is missing. */
export function nicePath(): string | undefined {
  niceCache ??= firstExecutable(['/usr/bin/nice', '/bin/nice']);
  return niceCache ?? undefined;
}

/** stderr lines ffmpeg, its libraries or the loader print when an allocation fails. */
const OUT_OF_MEMORY = /Cannot allocate memory|malloc of size \d+ failed|failed to map segment|Resource temporarily unavailable|std::bad_alloc|out of memory|Error allocating|memory allocation failed/i;

/** True when a failed run's stderr says an allocation (memory, thread, mapping) failed. Pure. */
export function looksOutOfMemory(stderr: string): boolean {
  return OUT_OF_MEMORY.test(stderr);
}
