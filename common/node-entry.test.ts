import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { buildRoot, CHECKOUT_ROOT, nodeArgs } from './node-entry.js';

const run = promisify(execFile);

describe('the JavaScript build that local processes run from', () => {
  it('maps an entry to its transpiled file, and that file runs with the checkout beside it', async () => {
    const args = nodeArgs('cli/cli.ts');
    expect(args).toHaveLength(1);
    const root = buildRoot()!;
    expect(args[0]).toBe(join(root, 'cli/cli.js'));
    expect(existsSync(args[0]!)).toBe(true);
    // Not TypeScript: assets are the checkout's own files, and the build knows its checkout.
    expect(readFileSync(join(root, 'proto/tessera/v1/jobs.proto'), 'utf8')).toBe(readFileSync(join(CHECKOUT_ROOT, 'proto/tessera/v1/jobs.proto'), 'utf8'));
    expect(JSON.parse(readFileSync(join(root, '.tessera-build.json'), 'utf8'))).toMatchObject({ checkout: CHECKOUT_ROOT });
    // The same sources give the same build (no second build per process).
    expect(nodeArgs('coordinator/main.ts')[0]).toBe(join(root, 'coordinator/main.js'));

    // The CLI's help, and a coordinator refusing a bad setting before any port opens (exit 2):
    // both load their whole import graph from the build, with node_modules found from there.
    const help = await run(process.execPath, [...args, 'help'], { cwd: CHECKOUT_ROOT, timeout: 30_000 });
    expect(help.stdout).toContain('tessera');
    const bad = await run(process.execPath, nodeArgs('coordinator/main.ts'), {
      cwd: dirname(root),
      timeout: 30_000,
      env: { PATH: process.env.PATH ?? '', GRPC_PORT: 'not-a-port' },
    }).catch((err: { code?: number; stderr?: string }) => err);
    expect((bad as { code?: number }).code).toBe(2);
    expect((bad as { stderr?: string }).stderr).toContain('GRPC_PORT');
  });

  it('runs through tsx when asked to (TESSERA_NO_BUILD=1 in the environment of a fresh process)', async () => {
    const probe = "import('./common/node-entry.ts').then((m) => console.log(JSON.stringify(m.nodeArgs('coordinator/main.ts'))))";
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], {
      cwd: CHECKOUT_ROOT,
      timeout: 30_000,
      env: { PATH: process.env.PATH ?? '', TESSERA_NO_BUILD: '1' },
    });
    expect(JSON.parse(stdout)).toEqual(['--import', 'tsx', join(CHECKOUT_ROOT, 'coordinator/main.ts')]);
  });
});
