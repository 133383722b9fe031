import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { issueFromArgs } from './certs-main.js';

const run = promisify(execFile);

describe('deploy/certs-main.ts (the Compose TLS init step)', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('issues a certificate with the role in its OU and the identity as DNS name, signed by the CA it creates', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-certs-'));
    dirs.push(dir);
    const cert = await issueFromArgs([dir, 'node-abc', 'node', 'abc123', '10.0.0.5']);
    const { stdout } = await run('openssl', ['x509', '-in', cert, '-noout', '-subject', '-ext', 'subjectAltName']);
    expect(stdout).toMatch(/OU\s*=\s*node/);
    expect(stdout).toMatch(/DNS:abc123/);
    expect(stdout).toMatch(/IP Address:10\.0\.0\.5/);
    await run('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), cert]);
    expect((await stat(join(dir, 'node-abc.key'))).mode & 0o077).toBe(0);
  });

  it('refuses an unknown role or missing names with a clear message', async () => {
    await expect(issueFromArgs(['/tmp/x', 'a', 'admin', 'a'])).rejects.toThrow(/role must be one of/);
    await expect(issueFromArgs(['/tmp/x', 'a', 'node'])).rejects.toThrow(/usage/);
  });
});
