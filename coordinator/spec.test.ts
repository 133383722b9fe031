import { mkdtemp, mkdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../common/errors.js';
import { JobSpec } from '../proto/gen/tessera/v1/types.js';
import { classifyInput, outputKey, parseOutput, resolveLocalInput, validateSpec } from './spec.js';
import { isPrivateAddress } from './address-policy.js';

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
    expect((await resolveLocalInput('sub/a.mp4', root, 100)).bytes).toBe(1);
    expect(await acode(resolveLocalInput(join(root, 'sub', '..', '..', 'etc', 'passwd'), root, 100))).toBe('INPUT_OUTSIDE_ROOT');
    expect(await acode(resolveLocalInput(join(root, 'escape.mp4'), root, 100))).toBe('INPUT_OUTSIDE_ROOT');
    expect(await acode(resolveLocalInput(join(root, 'nope.mp4'), root, 100))).toBe('INPUT_NOT_FOUND');
    expect(await acode(resolveLocalInput(join(root, 'empty.mp4'), root, 100))).toBe('INPUT_EMPTY');
    expect(await acode(resolveLocalInput(join(root, 'sub'), root, 100))).toBe('INPUT_NOT_FOUND');
    expect(await acode(resolveLocalInput(join(root, 'sub', 'a.mp4'), root, 0))).toBe('LIMIT_EXCEEDED');
    // The filesystem root as input root accepts any absolute path.
    expect((await resolveLocalInput(join(root, 'sub', 'a.mp4'), '/', 100)).bytes).toBe(1);
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
