import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { freePort } from '../deploy/ports.js';
import { nodeArgs } from '../common/node-entry.js';

/** Starts one real process (`<role>/main.ts`) with only `env` (plus PATH) and waits for it to exit. */
async function start(
  role: 'coordinator' | 'node-agent' | 'uploader',
  env: Record<string, string>,
  o: { killOnLog?: boolean } = {},
): Promise<{ code: number | null; stderr: string; stdout: string; ms: number }> {
  const t0 = Date.now();
  // Nothing listens on these: a process that got past its checks would hang on etcd, not exit 2.
  const etcd = `http://127.0.0.1:${await freePort()}`;
  const child = spawn(process.execPath, nodeArgs(`${role}/main.ts`), {
    cwd: REPO_ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      ETCD_ENDPOINTS: etcd,
      GRPC_PORT: String(await freePort()),
      STAGING_DIR: join(tmpdir(), 'secure-start-staging'),
      EXIT_WITH_PARENT_PID: String(process.pid),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  // A process past its checks logs (JSON on stdout); the check is what we test, so stop it there.
  child.stdout.on('data', (b: Buffer) => {
    stdout += b.toString();
    if (o.killOnLog) child.kill('SIGKILL');
  });
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, 30_000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return { code, stderr, stdout, ms: Date.now() - t0 };
}

describe('secure by default: processes refuse insecure settings at start', () => {
  afterAll(() => rm(join(tmpdir(), 'secure-start-staging'), { recursive: true, force: true }));

  it('a coordinator with a placeholder token refuses to start, naming the variable, not the value', async () => {
    const r = await start('coordinator', { API_TOKENS: 'REPLACE-ME-api-token', ADMIN_TOKENS: 'a-real-admin-token-0123456789' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('coordinator refuses to start');
    expect(r.stderr).toContain('API_TOKENS holds a placeholder value');
    expect(r.stderr).not.toContain('REPLACE-ME-api-token');
    expect(r.stderr).not.toContain('ADMIN_TOKENS');
  });

  it('a coordinator with the old default webhook secret refuses to start', async () => {
    const r = await start('coordinator', { API_TOKENS: 'a-real-api-token-0123456789', WEBHOOK_SECRET: 'tessera-dev-webhook-secret' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('WEBHOOK_SECRET is the old built-in default');
  });

  it('a coordinator with an open API refuses to start unless ALLOW_ANONYMOUS=true', async () => {
    const r = await start('coordinator', {});
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no API_TOKENS, READ_TOKENS or ADMIN_TOKENS are set.*ALLOW_ANONYMOUS=true/);
    // With it, the same process gets past its checks (and then waits for etcd: we stop it).
    const open = await start('coordinator', { ALLOW_ANONYMOUS: 'true', S3_ENDPOINT: 'http://127.0.0.1:9' }, { killOnLog: true });
    expect(open.stderr).not.toContain('refuses to start');
    expect(open.stdout).toContain('"service":"coordinator"');
  });

  it('the uploader refuses the local S3 credentials against a remote S3; a node agent a placeholder etcd password; every problem at once', async () => {
    const up = await start('uploader', { S3_ENDPOINT: 'https://s3.eu-west-1.amazonaws.com' });
    expect(up.code).toBe(2);
    expect(up.stderr).toContain('uploader refuses to start');
    expect(up.stderr).toContain('S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY are the local S3 server');
    const agent = await start('node-agent', { ETCD_PASSWORD: 'REPLACE-ME' });
    expect(agent.code).toBe(2);
    expect(agent.stderr).toContain('ETCD_PASSWORD holds a placeholder value');
    const all = await start('coordinator', { WEBHOOK_SECRET: 'short', S3_ACCESS_KEY_ID: 'CHANGE-ME' });
    expect(all.code).toBe(2);
    for (const s of ['S3_ACCESS_KEY_ID holds a placeholder', 'WEBHOOK_SECRET is shorter than 16', 'ALLOW_ANONYMOUS=true']) expect(all.stderr).toContain(s);
  });
});
