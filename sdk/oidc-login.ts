import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { AppError } from '../common/errors.js';
import { fetchDiscovery } from '../common/oidc.js';
import { sleep } from '../common/retry.js';

/**
 * How the CLI (or an SDK user) gets OIDC access tokens: the client-credentials grant of one
 * client (with its secret), or the device flow (a person approves; public clients need no secret).
 */
export interface OidcClientSettings {
  issuer: string;
  clientId: string;
  clientSecret?: string | undefined;
  /** The audience (resource indicator, RFC 8707) the coordinators expect: sent as `resource` and `audience`. */
  audience?: string | undefined;
  /** Scopes asked for (space-separated), e.g. "tessera:read tessera:write". Unset: the client's default. */
  scope?: string | undefined;
  /** Deadline of each call to the issuer, ms (default 10 s). */
  timeoutMs?: number | undefined;
}

/** What `tessera login` keeps (mode 0600): the token, and what it takes to get the next one. */
export interface StoredToken extends OidcClientSettings {
  tokenEndpoint: string;
  accessToken: string;
  expiresAtMs: number;
  refreshToken?: string | undefined;
}

/** The CLI's token file: $TESSERA_STATE_DIR/oidc-token.json, else $XDG_STATE_HOME/tessera/oidc-token.json (~/.local/state). */
export function tokenFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TESSERA_STATE_DIR) return join(resolve(env.TESSERA_STATE_DIR), 'oidc-token.json');
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'tessera', 'oidc-token.json');
}

/** POSTs a form to one of the issuer's endpoints as the client (HTTP Basic with a secret, else `client_id` in the form). */
async function postForm(s: OidcClientSettings, endpoint: string, params: Record<string, string>): Promise<{ status: number; json: Record<string, unknown> }> {
  const body = new URLSearchParams(params);
  if (s.scope) body.set('scope', s.scope);
  if (s.audience) {
    body.set('resource', s.audience);
    body.set('audience', s.audience);
  }
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (s.clientSecret) headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(s.clientId)}:${encodeURIComponent(s.clientSecret)}`).toString('base64')}`;
  else body.set('client_id', s.clientId);
  let res: Response;
  try {
    res = await fetch(endpoint, { method: 'POST', headers, body, signal: AbortSignal.timeout(s.timeoutMs ?? 10_000) });
  } catch (err) {
    throw new AppError('UNAVAILABLE', `the OIDC endpoint ${endpoint} did not answer: ${(err as Error).message}`);
  }
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
}

function refusal(status: number, json: Record<string, unknown>, what: string): AppError {
  const why = typeof json.error === 'string' ? `${json.error}${typeof json.error_description === 'string' ? `: ${json.error_description}` : ''}` : `HTTP ${status}`;
  return new AppError(status >= 500 ? 'UNAVAILABLE' : 'UNAUTHENTICATED', `the OIDC issuer refused the ${what} (${why})`);
}

/** Asks the issuer's token endpoint for an access token (client credentials, device code or refresh token). */
async function tokenRequest(s: OidcClientSettings, endpoint: string, grant: Record<string, string>): Promise<{ accessToken: string; expiresAtMs: number; refreshToken?: string }> {
  const { status, json } = await postForm(s, endpoint, grant);
  if (status !== 200 || typeof json.access_token !== 'string') throw Object.assign(refusal(status, json, 'token request'), { oauthError: json.error });
  const expiresIn = typeof json.expires_in === 'number' ? json.expires_in : expOf(json.access_token);
  return {
    accessToken: json.access_token,
    expiresAtMs: Date.now() + Math.max(0, expiresIn) * 1000,
    ...(typeof json.refresh_token === 'string' ? { refreshToken: json.refresh_token } : {}),
  };
}

/** Seconds until a JWT's `exp` (300 when it carries none or is not a JWT). */
function expOf(token: string): number {
  try {
    const exp = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp - Date.now() / 1000 : 300;
  } catch {
    return 300;
  }
}

/** A new token by the client-credentials grant (the token endpoint from the issuer's discovery document). */
export async function clientCredentialsLogin(s: OidcClientSettings): Promise<StoredToken> {
  if (!s.clientSecret) throw new AppError('INVALID_ARGUMENT', 'the client-credentials grant needs the client secret');
  const doc = await fetchDiscovery(s.issuer, s.timeoutMs ?? 10_000);
  if (typeof doc.token_endpoint !== 'string') throw new AppError('UNAVAILABLE', 'the OIDC discovery document names no token_endpoint');
  const t = await tokenRequest(s, doc.token_endpoint, { grant_type: 'client_credentials' });
  return { ...s, tokenEndpoint: doc.token_endpoint, ...t };
}

/** What the person approving a device login must do: open the URL, check (or type) the code. */
export interface DevicePrompt {
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string | undefined;
  expiresInSec: number;
}

/**
 * A new token by the OAuth device flow (RFC 8628): asks for a user code, shows it through
 * `prompt`, then polls the token endpoint at the interval the issuer asks (slower on
 * `slow_down`) until the person approves, refuses, or the code expires. Ask for the
 * `offline_access` scope to get a refresh token (renewals then need nobody).
 */
export async function deviceLogin(s: OidcClientSettings, prompt: (p: DevicePrompt) => void, signal?: AbortSignal): Promise<StoredToken> {
  const doc = await fetchDiscovery(s.issuer, s.timeoutMs ?? 10_000);
  if (typeof doc.token_endpoint !== 'string' || typeof doc.device_authorization_endpoint !== 'string')
    throw new AppError('FAILED_PRECONDITION', 'the OIDC issuer offers no device flow (no device_authorization_endpoint)');
  const { status, json } = await postForm(s, doc.device_authorization_endpoint, {});
  if (status !== 200 || typeof json.device_code !== 'string' || typeof json.user_code !== 'string' || typeof json.verification_uri !== 'string') throw refusal(status, json, 'device authorization');
  const expiresInSec = typeof json.expires_in === 'number' ? json.expires_in : 600;
  prompt({
    userCode: json.user_code,
    verificationUri: json.verification_uri,
    verificationUriComplete: typeof json.verification_uri_complete === 'string' ? json.verification_uri_complete : undefined,
    expiresInSec,
  });
  let intervalMs = (typeof json.interval === 'number' ? json.interval : 5) * 1000;
  const until = Date.now() + expiresInSec * 1000;
  for (;;) {
    await sleep(intervalMs, signal);
    if (Date.now() > until) throw new AppError('DEADLINE_EXCEEDED', 'the device code expired before the login was approved');
    try {
      const t = await tokenRequest(s, doc.token_endpoint, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: json.device_code });
      return { ...s, tokenEndpoint: doc.token_endpoint, ...t };
    } catch (err) {
      const code = (err as { oauthError?: unknown }).oauthError;
      if (code === 'authorization_pending') continue;
      if (code === 'slow_down') {
        intervalMs += 5_000;
        continue;
      }
      throw err;
    }
  }
}

/**
 * The next token for a stored one: by its refresh token when it has one (a new refresh token
 * replaces it when the issuer rotates them), else client credentials again (a device login
 * without a usable refresh token must log in again).
 */
export async function renewToken(t: StoredToken): Promise<StoredToken> {
  if (t.refreshToken) {
    try {
      return { ...t, ...(await tokenRequest(t, t.tokenEndpoint, { grant_type: 'refresh_token', refresh_token: t.refreshToken })) };
    } catch (err) {
      // expired or revoked: fall back to the client's credentials, if it has any
      if (!t.clientSecret) throw new AppError('UNAUTHENTICATED', `the stored OIDC token expired and could not be refreshed (${(err as Error).message}): run "tessera login --device" again`);
    }
  }
  if (!t.clientSecret) throw new AppError('UNAUTHENTICATED', 'the stored OIDC token expired: run "tessera login" again');
  return { ...t, ...(await tokenRequest(t, t.tokenEndpoint, { grant_type: 'client_credentials' })) };
}

/** Writes the token file atomically, readable by its owner only (0600, in a 0700 folder). */
export async function saveToken(t: StoredToken, file = tokenFile()): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(t), { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

/** The stored token, or undefined when there is none. */
export async function loadToken(file = tokenFile()): Promise<StoredToken | undefined> {
  try {
    const t = JSON.parse(await readFile(file, 'utf8')) as StoredToken;
    return typeof t.accessToken === 'string' && typeof t.tokenEndpoint === 'string' ? t : undefined;
  } catch {
    return undefined;
  }
}

export async function removeToken(file = tokenFile()): Promise<boolean> {
  const had = (await loadToken(file)) !== undefined;
  await rm(file, { force: true });
  return had;
}

/**
 * A token provider for TesseraClient: the stored (or given) token while it has more than
 * `marginMs` left, else a renewed one (saved back to the file when it came from one).
 * `settings` alone (no file): a token is obtained on first use and kept in memory.
 */
export function oidcTokenSource(o: { file?: string; settings?: OidcClientSettings; marginMs?: number }): () => Promise<string> {
  let current: StoredToken | undefined;
  let pending: Promise<StoredToken> | undefined;
  const margin = o.marginMs ?? 30_000;
  return async () => {
    if (!current && o.file) current = await loadToken(o.file);
    if (current && current.expiresAtMs - margin > Date.now()) return current.accessToken;
    pending ??= (async () => {
      const next = current ? await renewToken(current) : o.settings ? await clientCredentialsLogin(o.settings) : undefined;
      if (!next) throw new AppError('UNAUTHENTICATED', 'no OIDC token: run "tessera login"');
      if (o.file) await saveToken(next, o.file);
      current = next;
      return next;
    })().finally(() => {
      pending = undefined;
    });
    return (await pending).accessToken;
  };
}
