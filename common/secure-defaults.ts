/**
 * Start-up refusals: settings that would run a process insecurely without anyone choosing to.
 * Pure; each role's config.ts lists its own, and bootProcess prints them and exits non-zero
 * before any port opens. Messages name the variable, never its value.
 */

/** Values shipped as placeholders in manifests and examples ("REPLACE-ME…", "CHANGE-ME…"). */
const PLACEHOLDER = /REPLACE[-_ ]?ME|CHANGE[-_ ]?ME/i;

/** The webhook secret older versions defaulted to: public, so it signs nothing. */
export const OLD_DEFAULT_WEBHOOK_SECRET = 'tessera-dev-webhook-secret';

/** The credentials of the local S3 server (s3rver), fine on this machine only. */
export const LOCAL_S3_CREDENTIAL = 'S3RVER';

/** Shortest webhook secret accepted (HMAC keys shorter than this are guessable). */
export const MIN_WEBHOOK_SECRET_LENGTH = 16;

/** A refusal for each named setting that holds a placeholder. */
export function placeholderRefusals(settings: Record<string, string | readonly string[] | undefined>): string[] {
  const out: string[] = [];
  for (const [name, v] of Object.entries(settings)) {
    const values = v === undefined ? [] : typeof v === 'string' ? [v] : v;
    if (values.some((x) => PLACEHOLDER.test(x))) out.push(`${name} holds a placeholder value ("REPLACE-ME…"): set a real secret (from your secret store, a Kubernetes Secret or an env file)`);
  }
  return out;
}

/** True when an endpoint URL points at this machine (loopback address or "localhost"). */
export function isLocalEndpoint(endpoint: string | undefined): boolean {
  if (!endpoint) return false; // unset: AWS S3
  let host: string;
  try {
    host = new URL(endpoint).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return false;
  }
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The local S3 server's credentials (S3RVER) are refused against any S3 that is not on this machine. */
export function s3Refusals(c: { S3_ENDPOINT?: string | undefined; S3_ACCESS_KEY_ID: string; S3_SECRET_ACCESS_KEY: string }): string[] {
  const out = placeholderRefusals({ S3_ACCESS_KEY_ID: c.S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY: c.S3_SECRET_ACCESS_KEY });
  const local = c.S3_ACCESS_KEY_ID === LOCAL_S3_CREDENTIAL || c.S3_SECRET_ACCESS_KEY === LOCAL_S3_CREDENTIAL;
  if (local && !isLocalEndpoint(c.S3_ENDPOINT)) {
    out.push(
      `S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY are the local S3 server's (${LOCAL_S3_CREDENTIAL}) but S3_ENDPOINT is ${c.S3_ENDPOINT ? 'not on this machine' : 'unset (AWS)'}: set the credentials of that S3`,
    );
  }
  return out;
}

/** Placeholders in the settings every process shares. */
export function baseRefusals(c: { ETCD_PASSWORD?: string | undefined }): string[] {
  return placeholderRefusals({ ETCD_PASSWORD: c.ETCD_PASSWORD });
}

/** The text bootProcess prints before exiting. */
export function refusalText(service: string, refusals: readonly string[]): string {
  return `${service} refuses to start (insecure configuration):\n${refusals.map((r) => `  - ${r}`).join('\n')}\n`;
}
