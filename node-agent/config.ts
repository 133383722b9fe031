import { availableParallelism, hostname } from 'node:os';
import { z } from 'zod';
import { baseShape, int, parseEnv } from '../common/config-schema.js';
import { parseLabels, parseNeeds } from '../common/placement.js';
import { baseRefusals } from '../common/secure-defaults.js';
import { DEFAULT_MAX_PIXELS } from '../transcoder/ffmpeg-limits.js';

const shape = {
  ...baseShape,
  NODE_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,63}$/, 'letters, digits, _ . - (max 63)')
    .default(hostname()),
  GRPC_PORT: int(0, 0, 65535),
  /** host:port other processes dial; defaults to BIND_HOST and the bound port. */
  ADVERTISE_ADDRESS: z.string().optional(),
  /** Cores this agent may use (default: the cores its CPU affinity allows; set it when several agents share a machine or a container has a CPU limit). */
  CPU_CORES: int(Math.max(1, availableParallelism()), 1, 1024),
  /** ffmpeg workers (sub-segments transcoded at a time); default CPU_CORES. */
  WORKER_SLOTS: z.coerce.number().int().min(1).max(256).optional(),
  /** Threads per encoder (0 = CPU_CORES / WORKER_SLOTS when that is less than the machine has, else ffmpeg decides). */
  FFMPEG_THREADS: int(0, 0, 64),
  LEASE_TTL_SEC: int(10, 1, 3600),
  MIN_SUB_SEGMENT_SEC: z.coerce.number().min(0.1).default(1),
  /**
   * Longest chunk of a segment (s): a longer segment is cut into more chunks than workers, queued
   * longest-first, so a crash redoes at most one chunk per worker and per-chunk limits hold
   * whatever the source's length (av1an uses 10 s).
   */
  MAX_CHUNK_SEC: z.coerce.number().min(0.1).max(3600).default(15),
  MAX_SEGMENT_BYTES: int(8 * 1024 ** 3, 1),
  /** Bytes always kept free in staging: a segment is refused (NO_SPACE, the node goes not-ready) unless twice its size fits above this. */
  STAGING_RESERVE_BYTES: int(64 * 1024 ** 2, 0),
  FFMPEG_NO_PROGRESS_MS: int(60_000, 100),
  FFMPEG_WALL_CLOCK_MS: int(3_600_000, 1000),
  /** Kernel caps per ffmpeg (prlimit): address space in MiB and CPU seconds; unset = the defaults of transcoder/ffmpeg-limits.ts, 0 = off. */
  FFMPEG_AS_LIMIT_MB: z.coerce.number().int().min(0).optional(),
  FFMPEG_CPU_LIMIT_SEC: z.coerce.number().int().min(0).optional(),
  /** Niceness of every ffmpeg/ffprobe (0 = the agent's own priority); unset = 10, so the agent's gRPC and lease keep-alives come before the encodes. */
  FFMPEG_NICE: z.coerce.number().int().min(0).max(19).optional(),
  /** `-max_pixels` for the decoders (default: 7680x4320 plus the decoders' padding). */
  FFMPEG_MAX_PIXELS: int(DEFAULT_MAX_PIXELS, 1, 2_147_483_647),
  /** Attempts per sub-segment on this node before the segment fails (a crash or hang retries). */
  SUB_SEGMENT_ATTEMPTS: int(3, 1, 10),
  UPLOAD_TIMEOUT_MS: int(600_000, 1000),
  /** How long a draining node waits for held segments before handing them back, ms. */
  DRAIN_TIMEOUT_MS: int(600_000, 0),
  HEARTBEAT_MS: int(2_000, 100),
  /** How often a running segment checks that its owner key is unchanged (ms; 0 = never): work reassigned while this node was cut off stops within this. */
  OWNER_CHECK_MS: int(5_000, 0),
  /** Load figures go to etcd every HEARTBEAT_MS when they changed, and at least every STATS_REFRESH_MS when not. */
  STATS_REFRESH_MS: int(20_000, 0),
  /** Placement labels of this node, "key=value,..." (zone=eu-west-1a,region=eu-west-1,pool=gpu): jobs pinned to a label run only on nodes that carry it. */
  NODE_LABELS: z
    .string()
    .default('')
    .refine((v) => {
      try {
        parseLabels(v, 'NODE_LABELS');
        return true;
      } catch {
        return false;
      }
    }, 'key=value pairs separated by commas (zone=eu-west-1a)'),
  /**
   * TEST ONLY: capability names added to what the probes found ("gpu-test"), so placement can be
   * tested on machines without the hardware. Never set it in production: a rung that needs a
   * capability would run on a node that cannot serve it.
   */
  TEST_EXTRA_CAPABILITIES: z
    .string()
    .default('')
    .refine((v) => {
      try {
        parseNeeds(v, 'TEST_EXTRA_CAPABILITIES');
        return true;
      } catch {
        return false;
      }
    }, 'capability names separated by commas'),
};

export type AgentConfig = ReturnType<typeof loadConfig>;

/** The node agent's settings, from the environment (the only reader of process.env). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env) {
  const c = parseEnv(shape, env);
  return { ...c, WORKER_SLOTS: c.WORKER_SLOTS ?? c.CPU_CORES };
}

/**
 * Threads for each encoder of one worker: FFMPEG_THREADS when set; else the worker's share of
 * CPU_CORES when that is less than the machine has (ffmpeg would size its threads to every core
 * and the workers would oversubscribe them: two 1-core agents' ffmpegs ran 5 % slower with the
 * default threads than with one each); else undefined, and ffmpeg decides.
 */
export function ffmpegThreads(c: { CPU_CORES: number; WORKER_SLOTS: number; FFMPEG_THREADS: number }, machineCores = availableParallelism()): number | undefined {
  if (c.FFMPEG_THREADS > 0) return c.FFMPEG_THREADS;
  const share = c.CPU_CORES / c.WORKER_SLOTS;
  return share < machineCores ? Math.max(1, Math.floor(share)) : undefined;
}

/** Why this configuration must not start (empty: it may). */
export function startupRefusals(c: AgentConfig): string[] {
  return baseRefusals(c);
}
