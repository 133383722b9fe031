import { hostname } from 'node:os';
import { z } from 'zod';
import { baseShape, int, parseEnv, s3Shape } from '../common/config-schema.js';
import { baseRefusals, s3Refusals } from '../common/secure-defaults.js';

const shape = {
  ...baseShape,
  ...s3Shape,
  UPLOADER_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,63}$/)
    .default(`uploader-${hostname()}`),
  GRPC_PORT: int(0, 0, 65535),
  ADVERTISE_ADDRESS: z.string().optional(),
  LEASE_TTL_SEC: int(10, 1, 3600),
  MAX_PART_BYTES: int(4 * 1024 ** 3, 1),
  /** Bytes always left free in staging: a finalize whose merge and archive cannot fit answers NO_SPACE (or STAGING_TOO_SMALL when they never can). */
  STAGING_RESERVE_BYTES: int(64 * 1024 ** 2, 0),
  S3_PART_SIZE_BYTES: int(8 * 1024 * 1024, 5 * 1024 * 1024),
  /** Archives up to this size go to S3 as one PutObject, larger ones as a resumable multipart upload (0: always multipart). */
  S3_SINGLE_PUT_MAX_BYTES: int(100 * 1024 * 1024, 0),
  FINALIZE_TIMEOUT_MS: int(3_600_000, 1000),
};

export type UploaderConfig = ReturnType<typeof loadConfig>;

/** The uploader's settings, from the environment (the only reader of process.env). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env) {
  return parseEnv(shape, env);
}

/** Why this configuration must not start (empty: it may). */
export function startupRefusals(c: UploaderConfig): string[] {
  return [...baseRefusals(c), ...s3Refusals(c)];
}
