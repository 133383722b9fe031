import { status as GrpcStatus } from '@grpc/grpc-js';

/**
 * Stable error codes. Each maps to exactly one gRPC status (GRPC_STATUS_BY_CODE);
 * clients switch on the code, never on message text.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INPUT_NOT_FOUND'
  | 'INPUT_OUTSIDE_ROOT'
  | 'INPUT_EMPTY'
  | 'INPUT_NOT_VIDEO'
  | 'UNSUPPORTED_URI_SCHEME'
  | 'UNSUPPORTED_CODEC'
  | 'UNSUPPORTED_CONTAINER'
  | 'UNSUPPORTED_FORMAT'
  | 'UNSUPPORTED_ROTATION'
  | 'UNSUPPORTED_EDIT_LIST'
  | 'UNSUPPORTED_DYNAMIC_RANGE'
  | 'LIMIT_EXCEEDED'
  | 'QUOTA_EXCEEDED'
  | 'NO_SPACE'
  | 'STAGING_TOO_SMALL'
  | 'BAD_OFFSET'
  | 'CHECKSUM_MISMATCH'
  | 'JOB_NOT_FOUND'
  | 'NOT_FOUND'
  | 'IDEMPOTENCY_CONFLICT'
  | 'FAILED_PRECONDITION'
  | 'FENCED'
  | 'NOT_LEADER'
  | 'NO_NODES'
  | 'TRANSCODE_FAILED'
  | 'CANCELLED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'INTERNAL';

export const GRPC_STATUS_BY_CODE: Readonly<Record<ErrorCode, GrpcStatus>> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  INPUT_NOT_FOUND: GrpcStatus.INVALID_ARGUMENT,
  INPUT_OUTSIDE_ROOT: GrpcStatus.PERMISSION_DENIED,
  INPUT_EMPTY: GrpcStatus.INVALID_ARGUMENT,
  INPUT_NOT_VIDEO: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_URI_SCHEME: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_CODEC: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_CONTAINER: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_FORMAT: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_ROTATION: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_EDIT_LIST: GrpcStatus.INVALID_ARGUMENT,
  UNSUPPORTED_DYNAMIC_RANGE: GrpcStatus.INVALID_ARGUMENT,
  LIMIT_EXCEEDED: GrpcStatus.RESOURCE_EXHAUSTED,
  /** A tenant's quota or a cluster-wide limit on work in flight: try again once some of it ends. */
  QUOTA_EXCEEDED: GrpcStatus.RESOURCE_EXHAUSTED,
  NO_SPACE: GrpcStatus.RESOURCE_EXHAUSTED,
  STAGING_TOO_SMALL: GrpcStatus.FAILED_PRECONDITION,
  BAD_OFFSET: GrpcStatus.OUT_OF_RANGE,
  CHECKSUM_MISMATCH: GrpcStatus.DATA_LOSS,
  JOB_NOT_FOUND: GrpcStatus.NOT_FOUND,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  IDEMPOTENCY_CONFLICT: GrpcStatus.ALREADY_EXISTS,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  FENCED: GrpcStatus.ABORTED,
  NOT_LEADER: GrpcStatus.UNAVAILABLE,
  NO_NODES: GrpcStatus.UNAVAILABLE,
  TRANSCODE_FAILED: GrpcStatus.INTERNAL,
  CANCELLED: GrpcStatus.CANCELLED,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  INTERNAL: GrpcStatus.INTERNAL,
};

const DEFAULT_RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'UNAVAILABLE',
  'DEADLINE_EXCEEDED',
  'NO_NODES',
  // A full disk is the machine's trouble, not the job's: retry elsewhere.
  'NO_SPACE',
]);

export interface AppErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

/** The one error type of Tessera: a stable code, a user-readable message, a retryable marker. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.retryable = options.retryable ?? DEFAULT_RETRYABLE.has(code);
  }

  get grpcStatus(): GrpcStatus {
    return GRPC_STATUS_BY_CODE[this.code];
  }
}

export function isAppError(err: unknown, code?: ErrorCode): err is AppError {
  return err instanceof AppError && (code === undefined || err.code === code);
}

/**
 * True when `err` (or its cause chain) is this machine's disk being full: ENOSPC/EDQUOT from
 * Node's fs, or ffmpeg reporting "No space left on device" (it exits non-zero; its stderr summary
 * carries the reason). A NO_SPACE answer from another process is not (that disk is not ours).
 */
export function isNoSpace(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') return true;
    if (e instanceof Error && /No space left on device|Disk quota exceeded/i.test(e.message)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** Short human summary of any thrown value (for logs and status trails). */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
