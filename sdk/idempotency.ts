import { AdminDefinition } from '../proto/gen/tessera/v1/admin.js';
import { JobServiceDefinition } from '../proto/gen/tessera/v1/jobs.js';

/** A method's `idempotency_level` in the protos (absent: IDEMPOTENCY_UNKNOWN, never repeated). */
export type IdempotencyLevel = 'NO_SIDE_EFFECTS' | 'IDEMPOTENT';

/** A method as ts-proto's generic definitions describe it (generated from proto/tessera/v1). */
export interface MethodDescriptor {
  readonly name: string;
  readonly options: { readonly idempotencyLevel?: IdempotencyLevel };
}

/** The methods of the services the SDK calls, with their options as the protos set them. */
export const JOB_METHODS = JobServiceDefinition.methods;
export const ADMIN_METHODS = AdminDefinition.methods;

/**
 * Methods that are idempotent only when their request carries a key, which a proto option cannot
 * say: SubmitJob with `spec.idempotency_key`, UploadAndSubmit with its `resume_id` (the SDK always
 * sends one). The SDK repeats them only with the key.
 */
export const KEYED_METHODS: ReadonlySet<string> = new Set([JOB_METHODS.submitJob.name, JOB_METHODS.uploadAndSubmit.name]);

/** The level the protos give `method`, if any. */
export function idempotencyLevel(method: MethodDescriptor): IdempotencyLevel | undefined {
  return method.options.idempotencyLevel;
}

/**
 * Whether a call of `method` may be sent again after it may have reached the server: only when
 * the protos mark it NO_SIDE_EFFECTS or IDEMPOTENT, or it is a keyed method called with its key.
 */
export function mayRepeat(method: MethodDescriptor, keyed = false): boolean {
  return idempotencyLevel(method) !== undefined || (keyed && KEYED_METHODS.has(method.name));
}
