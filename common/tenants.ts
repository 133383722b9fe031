import { z } from 'zod';
import { AppError } from './errors.js';

/**
 * Tenants: each token (or OIDC tenant claim) belongs to one; a tenant's jobs, listings, watches
 * and cancels are its own; its `s3://` inputs and outputs must lie in the locations it is allowed;
 * its uploads go under `uploads/<tenant>/`; its quotas bound what it has in flight. A caller with
 * no tenant (the plain API_TOKENS, admin tokens, an open local cluster) is not scoped.
 */
export interface Tenant {
  name: string;
  /** Tokens that may submit and read as this tenant. */
  apiTokens: string[];
  /** Tokens that may only read as this tenant. */
  readTokens: string[];
  /** S3 locations its inputs and outputs may name: "bucket" or "bucket/prefix/". */
  s3: string[];
  /** Jobs not yet finished (queued or running) at once; further submissions get QUOTA_EXCEEDED. */
  maxActiveJobs: number;
  /** Bytes of uploads in flight at once (on each coordinator). */
  maxUploadBytes: number;
  /** Jobs running at once (the rest wait in the queue; other tenants' jobs go past them); unset: only the cluster's MAX_CONCURRENT_JOBS. */
  maxRunningJobs?: number | undefined;
}

const TENANT_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
const S3_LOCATION = /^[a-z0-9][a-z0-9.-]{1,62}(\/[^\s]*)?$/;

const tenantSchema = z.strictObject({
  apiTokens: z.array(z.string().min(1)).default([]),
  readTokens: z.array(z.string().min(1)).default([]),
  s3: z.array(z.string().regex(S3_LOCATION, 'an S3 location is "bucket" or "bucket/prefix/"')).default([]),
  maxActiveJobs: z.number().int().min(1).max(100_000).default(100),
  maxUploadBytes: z
    .number()
    .int()
    .min(1)
    .default(64 * 1024 ** 3),
  maxRunningJobs: z.number().int().min(1).max(100_000).optional(),
});

/** A tenant named by an OIDC claim but not configured: the defaults, and no S3 locations beyond its uploads. */
export function unconfiguredTenant(name: string): Tenant {
  return { name, ...tenantSchema.parse({}) };
}

/**
 * Parses the TENANTS setting: a JSON object of tenant name → settings, e.g.
 * `{"acme":{"apiTokens":["…"],"s3":["acme-media/in/"],"maxActiveJobs":20}}`. Throws with the reason.
 */
export function parseTenants(text: string): Tenant[] {
  if (!text.trim()) return [];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`TENANTS is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const parsed = z.record(z.string().regex(TENANT_NAME, 'tenant names are 1-32 characters of a-z, 0-9 and -'), tenantSchema).parse(raw);
  const tenants = Object.entries(parsed).map(([name, t]) => ({ name, ...t }));
  const seen = new Map<string, string>();
  for (const t of tenants) {
    for (const tok of [...t.apiTokens, ...t.readTokens]) {
      const other = seen.get(tok);
      if (other && other !== t.name) throw new Error(`TENANTS: one token belongs to both ${other} and ${t.name}`);
      seen.set(tok, t.name);
    }
  }
  return tenants;
}

/** Token → tenant name, for the access interceptor. */
export function tenantTokens(tenants: readonly Tenant[]): Map<string, string> {
  return new Map(tenants.flatMap((t) => [...t.apiTokens, ...t.readTokens].map((tok) => [tok, t.name] as [string, string])));
}

/** Where a tenant's uploads live in the cluster bucket. */
export function tenantUploadPrefix(tenant: string): string {
  return `uploads/${tenant}/`;
}

/**
 * Whether a tenant may read or write `s3://bucket/key`: one of its locations holds it, or it is one
 * of its own uploads in the cluster bucket. Pure.
 */
export function mayUseS3(t: Pick<Tenant, 'name' | 's3'>, bucket: string, key: string, clusterBucket: string): boolean {
  if (bucket === clusterBucket && key.startsWith(tenantUploadPrefix(t.name))) return true;
  return t.s3.some((loc) => {
    const slash = loc.indexOf('/');
    const b = slash < 0 ? loc : loc.slice(0, slash);
    const prefix = slash < 0 ? '' : loc.slice(slash + 1);
    return b === bucket && key.startsWith(prefix);
  });
}

/** PERMISSION_DENIED unless the tenant may use the location (the same words for "exists" and "does not"). */
export function checkS3(t: Pick<Tenant, 'name' | 's3'>, uri: string, what: 'input' | 'output', clusterBucket: string): void {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  if (!m) return;
  if (!mayUseS3(t, m[1]!, m[2]!, clusterBucket)) throw new AppError('PERMISSION_DENIED', `tenant ${t.name} may not use ${uri.slice(0, 200)} as ${what}: it is outside the S3 locations it is allowed`);
}
