import { describe, expect, it } from 'vitest';
import { isLocalEndpoint, placeholderRefusals, s3Refusals } from './secure-defaults.js';
import { loadConfig, startupRefusals } from '../coordinator/config.js';

describe('start-up refusals', () => {
  it('finds placeholders in single values and lists, by name only', () => {
    const r = placeholderRefusals({ A: 'REPLACE-ME-token', B: ['good-one', 'change_me'], C: 'fine', D: undefined });
    expect(r).toHaveLength(2);
    expect(r[0]).toMatch(/^A holds a placeholder/);
    expect(r[1]).toMatch(/^B holds a placeholder/);
    expect(r.join()).not.toContain('REPLACE-ME-token');
  });

  it('knows which S3 endpoints are on this machine', () => {
    for (const e of ['http://127.0.0.1:9000', 'https://localhost:4569', 'http://[::1]:9000', 'http://127.1.2.3']) expect(isLocalEndpoint(e), e).toBe(true);
    for (const e of [undefined, 'https://s3.amazonaws.com', 'http://minio:9000', 'http://10.0.0.5:9000', 'http://localhost.evil.com', 'not a url']) expect(isLocalEndpoint(e), String(e)).toBe(false);
    expect(s3Refusals({ S3_ENDPOINT: 'http://127.0.0.1:9', S3_ACCESS_KEY_ID: 'S3RVER', S3_SECRET_ACCESS_KEY: 'S3RVER' })).toEqual([]);
    expect(s3Refusals({ S3_ACCESS_KEY_ID: 'S3RVER', S3_SECRET_ACCESS_KEY: 'S3RVER' })[0]).toContain('unset (AWS)');
    expect(s3Refusals({ S3_ENDPOINT: 'http://minio:9000', S3_ACCESS_KEY_ID: 'S3RVER', S3_SECRET_ACCESS_KEY: 'x' })[0]).toContain('not on this machine');
  });

  it('the coordinator: tokens or ALLOW_ANONYMOUS, a real webhook secret or none', () => {
    const local = { S3_ENDPOINT: 'http://127.0.0.1:9' };
    expect(startupRefusals(loadConfig({ ...local, ALLOW_ANONYMOUS: 'true' }))).toEqual([]);
    expect(startupRefusals(loadConfig({ ...local, READ_TOKENS: 'a-read-token-0123456789' }))).toEqual([]);
    expect(startupRefusals(loadConfig({ ...local })).join()).toContain('ALLOW_ANONYMOUS=true');
    expect(startupRefusals(loadConfig({ ...local, ALLOW_ANONYMOUS: 'true', WEBHOOK_SECRET: '' }))).toEqual([]);
    expect(startupRefusals(loadConfig({ ...local, ALLOW_ANONYMOUS: 'true', WEBHOOK_SECRET: 'tessera-dev-webhook-secret' })).join()).toContain('old built-in default');
    expect(startupRefusals(loadConfig({ ...local, ALLOW_ANONYMOUS: 'true', WEBHOOK_SECRET: 'fifteen-chars!!' })).join()).toContain('shorter than 16');
  });
});
