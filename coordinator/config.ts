import { parseTenants } from '../common/tenants.js';
import { hostname } from 'node:os';
import { z } from 'zod';
import type { OidcSettings } from '../common/oidc.js';
import { baseShape, bool, csv, int, parseEnv, s3Shape } from '../common/config-schema.js';
import { isLocalEndpoint, MIN_WEBHOOK_SECRET_LENGTH, OLD_DEFAULT_WEBHOOK_SECRET, baseRefusals, placeholderRefusals, s3Refusals } from '../common/secure-defaults.js';

/** An optional setting that manifests may pass empty ("" = unset). */
const unsetIfEmpty = <T extends z.ZodType>(t: T) => z.preprocess((v) => (v === '' ? undefined : v), t.optional());

const poolsSchema = z.array(
  z.object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/),
    deployment: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,252}$/)
      .optional(),
    capabilities: z.array(z.string().regex(/^[a-z0-9][a-z0-9._-]{0,39}$/)).default([]),
    labels: z.record(z.string(), z.string()).default({}),
  }),
);

const shape = {
  ...baseShape,
  ...s3Shape,
  COORDINATOR_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,63}$/)
    .default(`coordinator-${hostname()}-${process.pid}`),
  GRPC_PORT: int(7400, 0, 65535),
  /**
   * The web console's HTTP port (HTTPS with the gRPC server certificate under TLS), on BIND_HOST;
   * 0 = no console. It calls this coordinator's API with the browser's token (docs/console.md).
   */
  CONSOLE_PORT: int(7480, 0, 65535),
  /**
   * Directories (comma-separated) local-path inputs must resolve inside (symlinks followed).
   * Unset (the default): local paths are refused; inputs come by upload, s3:// or http(s)://.
   * Local clusters set it to the directories their user names (`tessera up --input-root`).
   */
  INPUT_ROOT: csv.default([]),
  /** Prefix of output keys when a job gives no output URI: s3://$S3_BUCKET/$OUTPUT_PREFIX/<jobId>.zip */
  OUTPUT_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_./-]*$/)
    .default('jobs'),
  LEASE_TTL_SEC: int(10, 1, 3600),
  MAX_CONCURRENT_JOBS: int(4, 1, 1000),
  MIN_SEGMENT_SEC: z.coerce.number().min(0.1).default(2),
  /** Segment transfers and RunSegment streams with no event for this long are abandoned and reassigned, ms. */
  SEGMENT_NO_PROGRESS_MS: int(60_000, 500),
  SEGMENT_TRANSFER_TIMEOUT_MS: int(600_000, 1000),
  SEGMENT_RUN_TIMEOUT_MS: int(6 * 3_600_000, 1000),
  /** Attempts per segment (reassignments after node loss or retryable failures) before the job fails. */
  SEGMENT_ATTEMPTS: int(6, 1, 100),
  /** Work stealing: how often an idle node may take queued chunks from a busy one, ms (0: off). */
  STEAL_INTERVAL_MS: int(1_000, 0),
  /** How long a job waits for an uploader (its own, after a restart or an etcd outage) to register before it fails, ms. */
  UPLOADER_WAIT_MS: int(600_000, 100),
  /** A running job's progress is written to etcd (for every coordinator's watchers) at most this often, ms. */
  PROGRESS_INTERVAL_MS: int(1_000, 50),
  RPC_TIMEOUT_MS: int(10_000, 100),
  /** Health probes of registered nodes (ms between rounds; 0 = off), each with this deadline; after this many misses in a row a node is unreachable. */
  NODE_PROBE_INTERVAL_MS: int(2_000, 0),
  NODE_PROBE_TIMEOUT_MS: int(2_000, 100),
  NODE_PROBE_FAILURES: int(3, 1, 100),
  FINALIZE_TIMEOUT_MS: int(3_600_000, 1000),
  MAX_INPUT_BYTES: int(50 * 1024 ** 3, 1),
  /** A dry run of an s3:// or http(s):// input reads at most this many bytes of it (a ranged read); a longer input is planned by time from its header. */
  DRY_RUN_MAX_BYTES: int(64 * 1024 ** 2, 1024 * 1024),
  /** Largest client upload (S3's object limit, 5 TiB, is the ceiling: uploads are multipart). */
  MAX_UPLOAD_BYTES: int(10 * 1024 ** 3, 1, 5 * 1024 ** 4),
  /** S3 part size of resumable uploads (≥ 5 MiB, S3's minimum; grown so that 10,000 parts hold the file). */
  UPLOAD_PART_BYTES: int(16 * 1024 ** 2, 5 * 1024 ** 2, 5 * 1024 ** 3),
  /** A resumable upload not finished within this long is dropped (its parts deleted from S3), ms. */
  UPLOAD_SESSION_MAX_AGE_MS: int(24 * 3_600_000, 60_000),
  MAX_DURATION_SEC: int(6 * 3600, 1),
  MAX_WIDTH: int(7680, 16),
  MAX_HEIGHT: int(4320, 16),
  MAX_FPS: int(240, 1),
  MAX_STREAMS: int(16, 1),
  MAX_AUDIO_CHANNELS: int(8, 1),
  /**
   * Work cap per job: frames × width × height, frames being the larger of the packets counted
   * and duration × fps claimed. Default 6 h of 3840x2160 at 60 fps = 1.07e13 pixels (about
   * 1.3 M frames of 4K, 5.2 M of 1080p); refused before any node works (LIMIT_EXCEEDED).
   */
  MAX_WORK_PIXELS: int(6 * 3600 * 60 * 3840 * 2160, 1),
  PROBE_TIMEOUT_MS: int(30_000, 100),
  HTTP_INPUT_TIMEOUT_MS: int(600_000, 100),
  /** Hosts http(s) inputs may come from (empty: any public host). */
  HTTP_ALLOWED_HOSTS: csv.default([]),
  /** Allow http(s) inputs from loopback/private/link-local addresses (off: SSRF protection). */
  HTTP_ALLOW_PRIVATE: bool.default(false),
  /** Bytes always left free in this coordinator's staging; a job whose input (twice: it and its segments) cannot fit fails with STAGING_TOO_SMALL. */
  STAGING_RESERVE_BYTES: int(64 * 1024 ** 2, 0),
  /** Keep the input an upload stored (`uploads/…`) after its job succeeded (default: deleted with the job's leftovers). */
  KEEP_SUCCEEDED_UPLOADS: bool.default(false),
  /**
   * DNS servers (ip or ip:port, comma-separated) that resolve http(s) input and webhook hosts
   * instead of the system resolver. Meant for tests (a rebinding DNS server in a lab namespace)
   * and for operators who want outbound names resolved by one known server.
   */
  DNS_SERVERS: csv.default([]),
  /**
   * Keep a copy of each http(s) input in S3 (s3://$S3_BUCKET/staging/<jobId>/input, deleted when
   * the job ends) while the job runs: a new leader that must cut a segment again reads the copy,
   * never the input's URL (a pre-signed URL may have expired by then).
   */
  STASH_HTTP_INPUTS: bool.default(true),
  /** Read s3:// and http(s):// inputs in ranges through a loopback range server instead of staging them whole (an origin that ignores Range is staged). */
  RANGED_INPUTS: bool.default(true),
  JOB_HISTORY_LIMIT: int(500, 10),
  /**
   * Finished jobs (SUCCEEDED, FAILED, CANCELLED) keep their whole tree in etcd (segments,
   * checkpoints, full trail) this long, then move to a compact history record, ms.
   */
  HISTORY_ARCHIVE_AFTER_MS: int(600_000, 0),
  /** History older than this (by finish time) is dropped, days (fractions allowed; 0: no age limit). Archives stay in S3. */
  HISTORY_RETENTION_DAYS: z.coerce.number().min(0).default(30),
  /** At most this many jobs are kept in history, oldest dropped first (0: no count limit). */
  HISTORY_MAX_JOBS: int(10_000, 0),
  /** How often the leader archives finished jobs and applies retention, ms. */
  HISTORY_SWEEP_INTERVAL_MS: int(5_000, 50),
  /** Jobs archived, and history records dropped, per sweep at most (bounds each tick's etcd work). */
  HISTORY_SWEEP_BATCH: int(500, 1, 100_000),
  /**
   * Tenants, as JSON: {"acme":{"apiTokens":["…"],"readTokens":[],"s3":["acme-media/in/"],"maxActiveJobs":20,"maxUploadBytes":…}}.
   * A tenant's tokens see and cancel only its jobs; its s3:// inputs and outputs must lie in its
   * locations (or its own uploads); its uploads go under uploads/<tenant>/ (common/tenants.ts).
   */
  TENANTS: z
    .string()
    .default('')
    .transform((v, ctx) => {
      try {
        return parseTenants(v);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: e instanceof Error ? e.message.slice(0, 300) : String(e) });
        return z.NEVER;
      }
    }),
  /** Uploads in flight at once on this coordinator (UploadAndSubmit); more get QUOTA_EXCEEDED. */
  MAX_CONCURRENT_UPLOADS: int(16, 1, 10_000),
  /** WatchJob streams open at once on this coordinator (each holds two etcd watches); more get QUOTA_EXCEEDED. */
  MAX_OPEN_WATCHES: int(1_000, 1, 1_000_000),
  /** HTTP/2 streams one client connection may have open at once (grpc.max_concurrent_streams). */
  GRPC_MAX_CONCURRENT_STREAMS: int(256, 1, 100_000),
  /** Bearer tokens (comma-separated). None set: no authentication, which needs ALLOW_ANONYMOUS=true. */
  API_TOKENS: csv.default([]),
  READ_TOKENS: csv.default([]),
  ADMIN_TOKENS: csv.default([]),
  /**
   * OIDC access tokens (JWT) from this issuer are accepted besides the static tokens: the
   * signature is checked against the issuer's JWKS (OIDC_JWKS_URI, else the one its discovery
   * document names), then issuer, audience (OIDC_AUDIENCE, required), expiry and not-before
   * with OIDC_CLOCK_SKEW_S seconds of skew. https:// only, except on this machine.
   */
  OIDC_ISSUER: unsetIfEmpty(z.string().url()),
  OIDC_AUDIENCE: unsetIfEmpty(z.string()),
  OIDC_JWKS_URI: unsetIfEmpty(z.string().url()),
  OIDC_CLOCK_SKEW_S: int(30, 0, 600),
  /** Scope values or group names (comma-separated) that grant read, write (submit, upload, cancel; and read) and admin (and read). */
  OIDC_READ_SCOPES: csv.default(['tessera:read']),
  OIDC_WRITE_SCOPES: csv.default(['tessera:write']),
  OIDC_ADMIN_SCOPES: csv.default(['tessera:admin']),
  /** The claim holding the caller's groups, matched against the lists above like scopes. */
  OIDC_GROUPS_CLAIM: z.string().default('groups'),
  /** The claim naming the caller's tenant (read for the tenants to come; Tessera has none yet). */
  OIDC_TENANT_CLAIM: unsetIfEmpty(z.string()),
  /** Deadline of the discovery and JWKS fetches, ms. */
  OIDC_FETCH_TIMEOUT_MS: int(5_000, 100),
  /**
   * With no token set the client and admin APIs are open to anyone who reaches the port: the
   * coordinator refuses to start that way unless this is true (local clusters on loopback set it).
   */
  ALLOW_ANONYMOUS: bool.default(false),
  /** With TLS_* set: callers must present a certificate the cluster CA signed (mutual TLS). */
  TLS_REQUIRE_CLIENT_CERT: bool.default(true),
  /**
   * Secret for the HMAC-SHA256 signature of webhook bodies (X-Tessera-Signature), at least 16
   * characters. Unset: no webhooks (a job naming a webhook URL is refused). There is no default:
   * a secret everyone knows signs nothing (the old default is refused at start).
   */
  WEBHOOK_SECRET: z.string().optional(),
  /**
   * Webhook events wait in an etcd outbox until delivered. The first retry comes after about
   * WEBHOOK_BACKOFF_MS, each later one twice as late, at most WEBHOOK_BACKOFF_MAX_MS apart
   * (10 min), for WEBHOOK_RETRY_FOR_MS (24 h) after the state change; then the event is dropped
   * (logged). The schedule is recorded in the entry, so a new leader continues it, ms.
   */
  WEBHOOK_BACKOFF_MS: int(500, 1),
  WEBHOOK_BACKOFF_MAX_MS: int(600_000, 1),
  WEBHOOK_RETRY_FOR_MS: int(86_400_000, 1_000),
  /** Deadline of one webhook POST, ms. */
  WEBHOOK_TIMEOUT_MS: int(10_000, 100),
  /** The leader re-lists the outbox this often besides watching it, ms. */
  WEBHOOK_RESCAN_MS: int(30_000, 100),
  /** Webhook POSTs in flight at most. */
  WEBHOOK_CONCURRENCY: int(16, 1, 1000),
  /**
   * The acceptance journal (coordinator/state/journal.ts, docs/disaster-recovery.md): one small object
   * per accepted and per finished job under this prefix of S3_BUCKET. Empty: no journal (a
   * restore from a backup then cannot report the jobs accepted after its snapshot).
   */
  JOURNAL_PREFIX: z
    .string()
    .regex(/^([A-Za-z0-9_.-]+\/)*$/)
    .default('journal/'),
  /** How often the coordinator probes etcd for its operational gauges (alert rules), ms. */
  OPS_PROBE_INTERVAL_MS: int(15_000, 100),
  AUTOSCALER: z.enum(['off', 'local', 'kubernetes']).default('off'),
  AUTOSCALER_MIN_NODES: int(1, 0),
  AUTOSCALER_MAX_NODES: int(8, 1),
  AUTOSCALER_SCALE_UP_STEP: int(1, 1),
  AUTOSCALER_BACKLOG_PER_SLOT: z.coerce.number().min(0).default(1),
  AUTOSCALER_IDLE_MS: int(60_000, 0),
  AUTOSCALER_UP_COOLDOWN_MS: int(15_000, 0),
  AUTOSCALER_DOWN_COOLDOWN_MS: int(60_000, 0),
  AUTOSCALER_INTERVAL_MS: int(2_000, 100),
  /**
   * Node pools the autoscaler may grow for jobs that need a capability or label the default nodes
   * lack, as JSON: [{"name":"gpu","deployment":"tessera-node-gpu","capabilities":["h264","nvenc"],"labels":{"pool":"gpu"}}].
   * Kubernetes scales the pool's Deployment; the local provider starts nodes with its labels.
   */
  AUTOSCALER_POOLS: z
    .string()
    .default('[]')
    .transform((v, ctx) => {
      try {
        return poolsSchema.parse(JSON.parse(v));
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: `AUTOSCALER_POOLS must be a JSON list of {name, deployment?, capabilities, labels}: ${e instanceof Error ? e.message.slice(0, 200) : String(e)}` });
        return z.NEVER;
      }
    }),
  /** Worker slots of node agents the local provider starts. */
  AUTOSCALER_NODE_SLOTS: int(1, 1),
  K8S_NAMESPACE: z.string().default('tessera'),
  K8S_NODE_DEPLOYMENT: z.string().default('tessera-node-agent'),
  KUBERNETES_SERVICE_HOST: z.string().optional(),
  KUBERNETES_SERVICE_PORT: z.string().default('443'),
};

export type CoordinatorConfig = ReturnType<typeof loadConfig>;

/** The coordinator's settings, from the environment (the only reader of process.env). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env) {
  return parseEnv(shape, env);
}

/** Why this configuration must not start (empty: it may). */
export function startupRefusals(c: CoordinatorConfig): string[] {
  const out = [...baseRefusals(c), ...s3Refusals(c), ...placeholderRefusals({ API_TOKENS: c.API_TOKENS, READ_TOKENS: c.READ_TOKENS, ADMIN_TOKENS: c.ADMIN_TOKENS, WEBHOOK_SECRET: c.WEBHOOK_SECRET })];
  if (c.WEBHOOK_SECRET === OLD_DEFAULT_WEBHOOK_SECRET)
    out.push('WEBHOOK_SECRET is the old built-in default, which anyone can read in the source: set your own (openssl rand -hex 32), or unset it to send no webhooks');
  else if (c.WEBHOOK_SECRET && c.WEBHOOK_SECRET.length < MIN_WEBHOOK_SECRET_LENGTH) out.push(`WEBHOOK_SECRET is shorter than ${MIN_WEBHOOK_SECRET_LENGTH} characters`);
  out.push(...placeholderRefusals(Object.fromEntries(c.TENANTS.map((t) => [`TENANTS.${t.name}`, [...t.apiTokens, ...t.readTokens]]))));
  if (c.API_TOKENS.length + c.READ_TOKENS.length + c.ADMIN_TOKENS.length + c.TENANTS.length === 0 && !c.OIDC_ISSUER && !c.ALLOW_ANONYMOUS) {
    out.push(
      'no API_TOKENS, READ_TOKENS or ADMIN_TOKENS are set and no OIDC_ISSUER, so the client and admin APIs would be open to anyone: set tokens or an OIDC issuer, or ALLOW_ANONYMOUS=true to run open on purpose',
    );
  }
  if (c.OIDC_ISSUER) {
    if (!c.OIDC_AUDIENCE) out.push("OIDC_ISSUER is set without OIDC_AUDIENCE: tokens the issuer made for any other service would be accepted; set the audience (resource) Tessera's tokens carry");
    for (const [name, url] of [
      ['OIDC_ISSUER', c.OIDC_ISSUER],
      ['OIDC_JWKS_URI', c.OIDC_JWKS_URI],
    ] as const) {
      if (url && !url.startsWith('https://') && !isLocalEndpoint(url)) out.push(`${name} must be an https:// URL (plain http only on this machine): keys fetched in the clear could be forged`);
    }
  }
  return out;
}

/** The OIDC verifier's settings, when an issuer is configured. */
export function oidcSettings(c: CoordinatorConfig): OidcSettings | undefined {
  if (!c.OIDC_ISSUER || !c.OIDC_AUDIENCE) return undefined;
  return {
    issuer: c.OIDC_ISSUER,
    audience: c.OIDC_AUDIENCE,
    jwksUri: c.OIDC_JWKS_URI,
    clockSkewSec: c.OIDC_CLOCK_SKEW_S,
    roles: { read: c.OIDC_READ_SCOPES, write: c.OIDC_WRITE_SCOPES, admin: c.OIDC_ADMIN_SCOPES },
    groupsClaim: c.OIDC_GROUPS_CLAIM,
    tenantClaim: c.OIDC_TENANT_CLAIM,
    fetchTimeoutMs: c.OIDC_FETCH_TIMEOUT_MS,
  };
}
