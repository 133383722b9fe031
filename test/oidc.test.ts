import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { TesseraClient } from '../sdk/client.js';
import { clientCredentialsLogin, type StoredToken } from '../sdk/oidc-login.js';
import { codeOf, fixture, startTestCluster, type TestCluster } from './helpers.js';
import { startTestIssuer, type TestIssuer } from './oidc-issuer.js';
import { nodeArgs } from '../common/node-entry.js';

const run = promisify(execFile);

const CLIENTS = [
  { id: 'reader', secret: 'reader-secret-0123456789', scope: 'tessera:read' },
  { id: 'writer', secret: 'writer-secret-0123456789', scope: 'tessera:read tessera:write' },
  { id: 'operator', secret: 'operator-secret-0123456789', scope: 'tessera:admin' },
  { id: 'stranger', secret: 'stranger-secret-0123456789', scope: 'openid' },
  // A public client (no secret): people log in with it by the device flow.
  { id: 'tessera-cli', scope: 'openid offline_access tessera:read tessera:write' },
];

describe('OIDC access tokens against a real coordinator', () => {
  let issuer: TestIssuer;
  let t: TestCluster;
  let clip: string;
  const now = (): number => Math.floor(Date.now() / 1000);

  beforeAll(async () => {
    issuer = await startTestIssuer(CLIENTS);
    t = await startTestCluster({
      nodes: 0,
      coordinatorEnv: { OIDC_ISSUER: issuer.issuer, OIDC_AUDIENCE: issuer.audience, OIDC_CLOCK_SKEW_S: '5', API_TOKENS: 'static-api-token-0123456789' },
    });
    clip = await fixture(t.inputDir, 'clip-2s.mp4', { seconds: 2, width: 320, height: 180, fps: 25 });
  });
  afterAll(async () => {
    await t?.close();
    await issuer?.close();
  });

  /** A client of the coordinator with a token the issuer gave `clientId` (for `audience`, default Tessera's). */
  const as = async (clientId: string, audience = issuer.audience): Promise<TesseraClient> => {
    const c = CLIENTS.find((x) => x.id === clientId)!;
    const tok = await clientCredentialsLogin({ issuer: issuer.issuer, clientId, clientSecret: c.secret ?? '', audience, scope: c.scope });
    return new TesseraClient({ addresses: t.cluster.coordinators, attempts: 1, token: tok.accessToken });
  };
  const cli = async (args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> => {
    try {
      const r = await run(process.execPath, [...nodeArgs('cli/cli.ts'), ...args], {
        cwd: REPO_ROOT,
        env: { ...process.env, TESSERA_TOKEN: '', TESSERA_ADDR: t.cluster.coordinators.join(','), TESSERA_STATE_DIR: join(t.dir, 'cli-state'), ...env },
        timeout: 60_000,
      });
      return { ...r, code: 0 };
    } catch (err) {
      const e = err as { stdout: string; stderr: string; code: number };
      return { stdout: e.stdout, stderr: e.stderr, code: e.code };
    }
  };
  const withToken = (token: string): TesseraClient => new TesseraClient({ addresses: t.cluster.coordinators, attempts: 1, token });

  it('read, write and admin scopes map to what a token may do; static tokens still work', async () => {
    const [reader, writer, operator, stranger] = (await Promise.all(['reader', 'writer', 'operator', 'stranger'].map((id) => as(id)))) as [TesseraClient, TesseraClient, TesseraClient, TesseraClient];
    const fixed = withToken('static-api-token-0123456789');
    try {
      // read: lists and gets, no submit, no admin.
      expect(await codeOf(reader.list())).toBe('OK');
      expect(await codeOf(reader.submit({ inputUri: join(t.inputDir, 'missing.mp4') }))).toBe('PERMISSION_DENIED');
      expect(await codeOf(reader.listNodes())).toBe('PERMISSION_DENIED');
      // write: submits (past the check: the input is missing), uploads (client streaming) and cancels.
      expect(await codeOf(writer.submit({ inputUri: join(t.inputDir, 'missing.mp4') }))).toBe('INPUT_NOT_FOUND');
      const up = await writer.upload(clip, { ladder: [{ name: '144p', height: 144, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast' }] });
      expect(up.jobId).toMatch(/^j/);
      expect((await reader.get(up.jobId)).id).toBe(up.jobId);
      expect(await codeOf(reader.cancel(up.jobId))).toBe('PERMISSION_DENIED');
      expect(await codeOf(writer.cancel(up.jobId))).toBe('OK');
      expect(await codeOf(writer.listNodes())).toBe('PERMISSION_DENIED');
      // admin: the Admin service (and reads), not submits.
      expect(await codeOf(operator.listNodes())).toBe('OK');
      expect(await codeOf(operator.clusterStatus())).toBe('OK');
      expect(await codeOf(operator.list())).toBe('OK');
      expect(await codeOf(operator.submit({ inputUri: join(t.inputDir, 'missing.mp4') }))).toBe('PERMISSION_DENIED');
      // A valid token without any Tessera scope is known but may do nothing.
      expect(await codeOf(stranger.list())).toBe('PERMISSION_DENIED');
      // Static tokens remain an option next to OIDC.
      expect(await codeOf(fixed.submit({ inputUri: join(t.inputDir, 'missing.mp4') }))).toBe('INPUT_NOT_FOUND');
    } finally {
      for (const c of [reader, writer, operator, stranger, fixed]) c.close();
    }
  });

  it('refuses expired, wrong-audience, wrong-issuer, foreign-key and unsigned tokens with UNAUTHENTICATED', async () => {
    const good = { iss: issuer.issuer, aud: issuer.audience, sub: 'mallory', scope: 'tessera:read tessera:write tessera:admin' };
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const cases: Record<string, string> = {
      // Signed by the issuer's own key, so only the claim check can refuse it.
      'signed by the issuer (control)': await issuer.sign({ ...good, exp: now() + 60 }),
      expired: await issuer.sign({ ...good, exp: now() - 60 }),
      'expired within the allowed skew (control)': await issuer.sign({ ...good, exp: now() - 1 }),
      'not yet valid': await issuer.sign({ ...good, nbf: now() + 120, exp: now() + 600 }),
      'wrong issuer': await issuer.sign({ ...good, iss: 'https://issuer.example.com', exp: now() + 60 }),
      'wrong audience (signed)': await issuer.sign({ ...good, aud: 'urn:another:api', exp: now() + 60 }),
      'no expiry': await issuer.sign(good),
      'foreign key, same kid': await issuer.sign({ ...good, exp: now() + 60 }, { foreignKey: true }),
      'unsigned (alg none)': `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...good, exp: now() + 60 })}.`,
      'HMAC with the public key id': `${b64({ alg: 'HS256', kid: 'test-key-1' })}.${b64({ ...good, exp: now() + 60 })}.c2lnbmF0dXJl`,
      garbage: 'not-a-token',
    };
    const results: Record<string, string> = {};
    for (const [name, token] of Object.entries(cases)) {
      const c = withToken(token);
      try {
        results[name] = await codeOf(c.listNodes());
      } finally {
        c.close();
      }
    }
    // A real token the issuer made for another audience (resource indicator).
    const other = await as('operator', 'urn:another:api');
    try {
      results['wrong audience (issued)'] = await codeOf(other.listNodes());
    } finally {
      other.close();
    }
    expect(results).toEqual({
      'signed by the issuer (control)': 'OK',
      expired: 'UNAUTHENTICATED',
      'expired within the allowed skew (control)': 'OK',
      'not yet valid': 'UNAUTHENTICATED',
      'wrong issuer': 'UNAUTHENTICATED',
      'wrong audience (signed)': 'UNAUTHENTICATED',
      'no expiry': 'UNAUTHENTICATED',
      'foreign key, same kid': 'UNAUTHENTICATED',
      'unsigned (alg none)': 'UNAUTHENTICATED',
      'HMAC with the public key id': 'UNAUTHENTICATED',
      garbage: 'UNAUTHENTICATED',
      'wrong audience (issued)': 'UNAUTHENTICATED',
    });
    // No token reaches the coordinator's log.
    const log = await readFile(join(t.dir, 'logs', 'coordinator-0.log'), 'utf8');
    for (const token of Object.values(cases)) expect(log).not.toContain(token);
  });

  it('tessera login (client credentials) stores a 0600 token that later commands use, renewed once expired', async () => {
    const stateDir = join(t.dir, 'cli-state');
    // Without a token the coordinator refuses the CLI.
    const refused = await cli(['jobs']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('error UNAUTHENTICATED');

    const writer = CLIENTS[1]!;
    const login = await cli(['login', '--issuer', issuer.issuer, '--client-id', writer.id, '--client-secret', writer.secret!, '--audience', issuer.audience, '--scope', writer.scope]);
    expect(login.stderr).not.toContain('error');
    expect(login.code).toBe(0);
    expect(login.stdout).toContain(`logged in to ${issuer.issuer} as writer`);
    const file = join(stateDir, 'oidc-token.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(file, 'utf8')) as StoredToken;
    expect(stored.expiresAtMs).toBeGreaterThan(Date.now());

    const jobs = await cli(['jobs']);
    expect(jobs.stderr).toBe('');
    expect(jobs.code).toBe(0);
    expect(jobs.stdout).toMatch(/^job\s+state/m);

    // Expired (the issuer's own signature, past its expiry): the next command gets a new one first.
    const expired = await issuer.sign({ iss: issuer.issuer, aud: issuer.audience, scope: 'tessera:read', exp: now() - 120 });
    await writeFile(file, JSON.stringify({ ...stored, accessToken: expired, expiresAtMs: Date.now() - 120_000 }), { mode: 0o600 });
    const after = await cli(['jobs']);
    expect(after.stderr).toBe('');
    expect(after.code).toBe(0);
    const renewed = JSON.parse(await readFile(file, 'utf8')) as StoredToken;
    expect(renewed.accessToken).not.toBe(expired);
    expect(renewed.accessToken).not.toBe(stored.accessToken);
    expect(renewed.expiresAtMs).toBeGreaterThan(Date.now());
    expect((await stat(file)).mode & 0o777).toBe(0o600);

    // Env settings instead of a login: the operator's credentials open the Admin service.
    const operator = CLIENTS[2]!;
    const envLogin = await cli(['status', '--once'], {
      TESSERA_STATE_DIR: join(t.dir, 'cli-state-env'),
      TESSERA_OIDC_ISSUER: issuer.issuer,
      TESSERA_OIDC_CLIENT_ID: operator.id,
      TESSERA_OIDC_CLIENT_SECRET: operator.secret!,
      TESSERA_OIDC_AUDIENCE: issuer.audience,
      TESSERA_OIDC_SCOPE: operator.scope,
    });
    expect(envLogin.stderr).toBe('');
    expect(envLogin.code).toBe(0);
    expect(envLogin.stdout).toMatch(/^leader /m);

    const logout = await cli(['logout']);
    expect(logout.stdout).toContain('token removed');
    expect(existsSync(file)).toBe(false);
  });

  it('tessera login --device: a person approves the shown code; the refresh token renews the login', async () => {
    const stateDir = join(t.dir, 'cli-state-device');
    const file = join(stateDir, 'oidc-token.json');
    const scope = 'openid offline_access tessera:read tessera:write';
    const child = spawn(process.execPath, [...nodeArgs('cli/cli.ts'), 'login', '--device', '--issuer', issuer.issuer, '--client-id', 'tessera-cli', '--audience', issuer.audience, '--scope', scope], {
      cwd: REPO_ROOT,
      env: { ...process.env, TESSERA_TOKEN: '', TESSERA_STATE_DIR: stateDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    const code = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    try {
      // The CLI shows where to go and the code; the person approves it there.
      const userCode = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', (b: Buffer) => {
          stderr += b.toString();
          const m = /open (\S+) and check the code ([A-Z0-9-]+)/.exec(stderr);
          if (m) {
            expect(m[1]).toContain(`${issuer.issuer}/device`);
            resolve(m[2]!);
          }
        });
        void code.then(() => reject(new Error(`login exited before showing a code: ${stderr}`)));
      });
      await issuer.approveDevice(userCode, 'alice', scope);
      expect(await code).toBe(0);
    } finally {
      clearTimeout(timer);
    }
    expect(stdout).toContain('logged in to');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(file, 'utf8')) as StoredToken;
    expect(stored.refreshToken).toBeTruthy();
    expect(stored.clientSecret).toBeUndefined();

    // Expired: the next command renews it with the refresh token (no person needed), then succeeds.
    await writeFile(file, JSON.stringify({ ...stored, expiresAtMs: Date.now() - 1_000 }), { mode: 0o600 });
    const jobs = await cli(['jobs'], { TESSERA_STATE_DIR: stateDir });
    expect(jobs.stderr).toBe('');
    expect(jobs.code).toBe(0);
    const renewed = JSON.parse(await readFile(file, 'utf8')) as StoredToken;
    expect(renewed.accessToken).not.toBe(stored.accessToken);
    expect(renewed.refreshToken).toBeTruthy();
    expect(renewed.expiresAtMs).toBeGreaterThan(Date.now());
    // The renewed token is alice's, with the scopes she approved: it may read, not administer.
    const c = withToken(renewed.accessToken);
    try {
      expect(await codeOf(c.list())).toBe('OK');
      expect(await codeOf(c.listNodes())).toBe('PERMISSION_DENIED');
    } finally {
      c.close();
    }
  });
});
