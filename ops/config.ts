import { z } from 'zod';
import { baseShape, int, parseEnv, s3Shape } from '../common/config-schema.js';

const shape = {
  ...baseShape,
  ...s3Shape,
  /** Where backups go in S3_BUCKET: `<prefix>etcd-<time>.db` and its `.json` description. */
  BACKUP_PREFIX: z
    .string()
    .regex(/^([A-Za-z0-9_.-]+\/)+$/)
    .default('backups/'),
  /** Backups kept (older ones are deleted after each new one, with the journal entries only they needed). */
  BACKUP_RETAIN: int(48, 1, 100_000),
  /** `tessera admin backup --every`: the interval when none is given, ms (1 h). */
  BACKUP_INTERVAL_MS: int(3_600_000, 1_000),
  /** The coordinators' acceptance journal (coordinator JOURNAL_PREFIX). */
  JOURNAL_PREFIX: z
    .string()
    .regex(/^([A-Za-z0-9_.-]+\/)*$/)
    .default('journal/'),
};

export type OpsConfig = ReturnType<typeof loadOpsConfig>;

/** Settings of `tessera admin backup|restore|reconcile`: etcd and S3 as the processes see them. */
export function loadOpsConfig(env: NodeJS.ProcessEnv = process.env) {
  return parseEnv(shape, env);
}
