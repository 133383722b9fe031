import { z } from 'zod';
import { hostname } from 'node:os';
import { DEFAULT_STREAM_PACE } from './chunks.js';

/** Comma-separated list → string[] (empty entries dropped). */
export const csv = z.string().transform((s) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0),
);

/** A yes/no setting: true/1/yes/on/y/enabled or false/0/no/off/n/disabled; anything else is refused (a typo must not become false). */
export const bool = z.stringbool();

export const int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max).default(def);

/** Settings every process shares: etcd, logging, host to bind. */
export const baseShape = {
  ETCD_ENDPOINTS: csv.default(['http://127.0.0.1:2379']),
  ETCD_PREFIX: z
    .string()
    .regex(/^\/[A-Za-z0-9_./-]*\/$/, 'must start and end with /')
    .default('/tessera/'),
  ETCD_USERNAME: z.string().optional(),
  ETCD_PASSWORD: z.string().optional(),
  ETCD_CALL_TIMEOUT_MS: int(5_000, 100),
  /** TLS to etcd (https:// endpoints): the CA that signed etcd's certificate, and our client certificate and key. */
  ETCD_TLS_CA_FILE: z.string().optional(),
  ETCD_TLS_CERT_FILE: z.string().optional(),
  ETCD_TLS_KEY_FILE: z.string().optional(),
  /**
   * Mutual TLS on every gRPC link: the cluster CA, this process's certificate (subject OU = its
   * role: coordinator, node, uploader; DNS name = its id) and key. None set: plaintext.
   */
  TLS_CA_FILE: z.string().optional(),
  TLS_CERT_FILE: z.string().optional(),
  TLS_KEY_FILE: z.string().optional(),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  BIND_HOST: z.string().default('127.0.0.1'),
  METRICS_PORT: int(0, 0, 65535),
  STAGING_DIR: z.string().default('.tessera/staging'),
  /**
   * Every process sweeps its role's staging (its own folder and its siblings') at start and this
   * often: a finished job's folder goes once unchanged for STAGING_SWEEP_GRACE_MS (1 min), a
   * `.partial` or other leftover once unchanged for STAGING_STALE_MS (1 h), ms.
   */
  STAGING_SWEEP_INTERVAL_MS: int(60_000, 100),
  STAGING_SWEEP_GRACE_MS: int(60_000, 0),
  STAGING_STALE_MS: int(3_600_000, 100),
  /**
   * Processes on one machine that share STAGING_DIR hand files over by path (segments to node
   * agents, parts to the uploader) instead of streaming them through gRPC; the receiver reads and
   * verifies the sender's very file. Off: everything streams. `tessera up` turns it on. A receiver
   * elsewhere refuses the path and the sender streams, so a mixed cluster still works.
   */
  LOCAL_HANDOFF: bool.default(false),
  SHUTDOWN_GRACE_MS: int(30_000, 0),
  HOSTNAME_FALLBACK: z.string().default(hostname()),
  /** Every incoming byte stream (upload, segment, part) must end within this many ms. */
  STREAM_DEADLINE_MS: int(DEFAULT_STREAM_PACE.deadlineMs, 1_000),
  /** ...and keep at least this average rate (bytes/s) once STREAM_GRACE_MS have passed (slow-loris guard). */
  STREAM_MIN_BYTES_PER_SEC: int(DEFAULT_STREAM_PACE.minBytesPerSec, 0),
  STREAM_GRACE_MS: int(DEFAULT_STREAM_PACE.graceMs, 0),
  /** When set (> 0), the process stops once that pid is gone: test clusters never outlive their runner. */
  EXIT_WITH_PARENT_PID: int(0, 0),
};

/** The staging sweeper's settings from a process's config. */
export function sweepSettings(c: { STAGING_SWEEP_INTERVAL_MS: number; STAGING_SWEEP_GRACE_MS: number; STAGING_STALE_MS: number }): { intervalMs: number; graceMs: number; staleMs: number } {
  return { intervalMs: c.STAGING_SWEEP_INTERVAL_MS, graceMs: c.STAGING_SWEEP_GRACE_MS, staleMs: c.STAGING_STALE_MS };
}

/** S3 settings shared by the coordinator (uploads, s3:// inputs) and the uploader. */
export const s3Shape = {
  S3_ENDPOINT: z.string().optional(),
  S3_REGION: z.string().default('us-east-1'),
  S3_ACCESS_KEY_ID: z.string().default('S3RVER'),
  S3_SECRET_ACCESS_KEY: z.string().default('S3RVER'),
  S3_FORCE_PATH_STYLE: bool.default(true),
  S3_BUCKET: z.string().default('tessera-output'),
  S3_REQUEST_TIMEOUT_MS: int(60_000, 100),
  /** Extra CA (PEM file) trusted for an https:// S3 endpoint with a private certificate. */
  S3_CA_FILE: z.string().optional(),
};

/**
 * Validates `env` against `shape`, reporting every bad variable at once, and freezes the result.
 * Throws an Error listing the problems (main.ts prints it and exits non-zero before opening a port).
 */
export function parseEnv<S extends z.ZodRawShape>(shape: S, env: NodeJS.ProcessEnv): Readonly<z.infer<z.ZodObject<S>>> {
  const res = z.object(shape).safeParse(env);
  if (!res.success) {
    const lines = res.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join('\n')}`);
  }
  return Object.freeze(res.data);
}
