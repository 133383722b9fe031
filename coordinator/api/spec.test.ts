import { mkdtemp, mkdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../common/errors.js';
import { JobSpec } from '../../proto/gen/tessera/v1/types.js';
import { classifyInput, outputKey, parseOutput, resolveLocalInput, validateSpec } from './spec.js';
import { isPrivateAddress } from '../input/address-policy.js';

const encoders = new Set(['libx264', 'libx265', 'libsvtav1']);
const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'OK';
  } catch (err) {
    return err instanceof AppError ? err.code : String(err);
  }
};
const acode = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof AppError ? err.code : String(err);
  }
};

describe('classifyInput', () => {
  it('accepts paths, file://, s3:// and http(s)://', () => {
    expect(classifyInput('/data/a.mp4')).toEqual({ kind: 'local', path: '/data/a.mp4', bytes: 0 });
    expect(classifyInput('file:///data/a%20b.mp4')).toEqual({ kind: 'local', path: '/data/a b.mp4', bytes: 0 });
    expect(classifyInput('s3://my-bucket/in/a.mp4')).toEqual({ kind: 's3', bucket: 'my-bucket', key: 'in/a.mp4' });
    expect(classifyInput('https://example.com/a.mp4')).toEqual({ kind: 'http', url: 'https://example.com/a.mp4' });
    expect(classifyInput('-rf.mp4')).toEqual({ kind: 'local', path: '-rf.mp4', bytes: 0 });
  });
  it('refuses other schemes, including ffmpeg protocols', () => {
    for (const u of ['ftp://x/a.mp4', 'concat:/etc/passwd|a.mp4', 'data:video/mp4;base64,AAAA', 'rtmp://x/live', 'subfile:,start,0,end,0,:/etc/passwd']) {
      expect(code(() => classifyInput(u))).toBe('UNSUPPORTED_URI_SCHEME');
    }
    expect(code(() => classifyInput(''))).toBe('INVALID_ARGUMENT');
    expect(code(() => classifyInput('s3://Bad_Bucket/x'))).toBe('INVALID_ARGUMENT');
  });
});

describe('resolveLocalInput', () => {
  it('keeps inputs inside the root, following symlinks', async () => {
    const root = await mkdtemp(join(tmpdir(), 'root-'));
    await mkdir(join(root, 'sub'));
    await writeFile(join(root, 'sub', 'a.mp4'), 'x');
    await writeFile(join(root, 'empty.mp4'), '');
    await symlink('/etc/hostname', join(root, 'escape.mp4'));
    expect((await resolveLocalInput('sub/a.mp4', [root], 100)).bytes).toBe(1);
    expect(await acode(resolveLocalInput(join(root, 'sub', '..', '..', 'etc', 'passwd'), [root], 100))).toBe('INPUT_OUTSIDE_ROOT');
    expect(await acode(resolveLocalInput(join(root, 'escape.mp4'), [root], 100))).toBe('INPUT_OUTSIDE_ROOT');
    expect(await acode(resolveLocalInput(join(root, 'nope.mp4'), [root], 100))).toBe('INPUT_NOT_FOUND');
    expect(await acode(resolveLocalInput(join(root, 'empty.mp4'), [root], 100))).toBe('INPUT_EMPTY');
    expect(await acode(resolveLocalInput(join(root, 'sub'), [root], 100))).toBe('INPUT_NOT_FOUND');
    expect(await acode(resolveLocalInput(join(root, 'sub', 'a.mp4'), [root], 0))).toBe('LIMIT_EXCEEDED');
    // The filesystem root as input root accepts any absolute path.
    expect((await resolveLocalInput(join(root, 'sub', 'a.mp4'), ['/'], 100)).bytes).toBe(1);
  });

  it('refuses every local path without a root, and never reveals whether a path outside the root exists', async () => {
    const root = await mkdtemp(join(tmpdir(), 'root-'));
    const other = await mkdtemp(join(tmpdir(), 'other-'));
    await writeFile(join(root, 'a.mp4'), 'x');
    await writeFile(join(other, 'secret.mp4'), 'x');
    await writeFile(join(other, 'empty.mp4'), '');
    await symlink(other, join(root, 'link'));
    // No INPUT_ROOT (the production default): nothing local, the file's existence irrelevant.
    for (const p of [join(root, 'a.mp4'), 'a.mp4', join(root, 'missing.mp4')]) {
      const err = await resolveLocalInput(p, [], 100).then(
        () => new AppError('INTERNAL', 'accepted'),
        (e: unknown) => e as AppError,
      );
      expect(err.code, p).toBe('INPUT_OUTSIDE_ROOT');
      expect(err.message).toContain('INPUT_ROOT is not set');
    }
    // Outside the root, existing or not, file or directory, empty or not, directly or through a
    // symlink inside the root: one answer, one message.
    const outside = [
      join(other, 'secret.mp4'),
      join(other, 'missing.mp4'),
      join(other, 'empty.mp4'),
      other,
      join(other, 'no', 'such', 'dir', 'x.mp4'),
      join(root, 'link', 'secret.mp4'),
      join(root, 'link', 'missing.mp4'),
      join(root, 'link', 'no', 'such', 'x.mp4'),
      '../' + join('..', other, 'secret.mp4'),
      '/etc/passwd',
      '/etc/no-such-file',
      '/root/.ssh/id_ed25519',
    ];
    const answers = new Set<string>();
    for (const p of outside) {
      const err = await resolveLocalInput(p, [root], 100).then(
        () => new AppError('INTERNAL', 'accepted'),
        (e: unknown) => e as AppError,
      );
      answers.add(`${err.code}: ${err.message}`);
    }
    expect([...answers]).toEqual(['INPUT_OUTSIDE_ROOT: the input path is outside the input root']);
    // Several roots: inside any of them is fine.
    expect((await resolveLocalInput(join(other, 'secret.mp4'), [root, other], 100)).bytes).toBe(1);
    expect(await acode(resolveLocalInput(join(root, 'missing.mp4'), [root, other], 100))).toBe('INPUT_NOT_FOUND');
  });
});

describe('validateSpec', () => {
  const defaults = { bucket: 'tessera-output', prefix: 'jobs' };
  it('fills defaults', () => {
    const { spec, output } = validateSpec(JobSpec.fromPartial({ inputUri: '/a.mp4' }), encoders, defaults);
    expect(spec.container).toBe('mp4');
    expect(spec.audioBitrateKbps).toBe(128);
    expect(output).toEqual(defaults);
  });
  it('rejects bad ladders, containers, priorities and outputs with stable codes', () => {
    const v = (p: Partial<JobSpec>): string => code(() => validateSpec(JobSpec.fromPartial({ inputUri: '/a.mp4', ...p }), encoders, defaults));
    expect(v({ ladder: [{ name: '', height: 360, videoBitrateKbps: 0, codec: 'divx', preset: '' }] })).toBe('UNSUPPORTED_CODEC');
    expect(v({ container: 'avi' })).toBe('UNSUPPORTED_CONTAINER');
    expect(v({ priority: 12 })).toBe('INVALID_ARGUMENT');
    expect(v({ outputUri: 'http://x/y' })).toBe('INVALID_ARGUMENT');
    expect(v({ outputUri: 's3://bucket/../x' })).toBe('INVALID_ARGUMENT');
    expect(v({ idempotencyKey: 'has space' })).toBe('INVALID_ARGUMENT');
    expect(v({ webhookUrl: 'file:///etc/passwd' })).toBe('INVALID_ARGUMENT');
    expect(v({ ladder: [{ name: '', height: 360, videoBitrateKbps: 0, codec: 'h264', preset: '-vf' }] })).toBe('INVALID_ARGUMENT');
  });
  it('builds output keys under the prefix', () => {
    expect(outputKey(parseOutput('s3://out/videos/', 'd', 'jobs'), 'j1')).toBe('videos/j1.zip');
    expect(outputKey(parseOutput('s3://out', 'd', 'jobs'), 'j1')).toBe('j1.zip');
    expect(outputKey(parseOutput('', 'd', 'jobs'), 'j1')).toBe('jobs/j1.zip');
  });
});

describe('isPrivateAddress', () => {
  it('knows loopback, private, link-local and unique-local ranges', () => {
    for (const ip of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '0.0.0.0', '100.64.0.1', '::1', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1']) {
      expect(isPrivateAddress(ip)).toBe(true);
    }
    for (const ip of ['8.8.8.8', '172.32.0.1', '2001:4860:4860::8888']) expect(isPrivateAddress(ip)).toBe(false);
  });
});
