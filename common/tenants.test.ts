import { describe, expect, it } from 'vitest';
import { checkS3, mayUseS3, parseTenants, tenantTokens } from './tenants.js';

describe('tenants', () => {
  it('parses TENANTS with defaults, and refuses bad names and a token shared by two tenants', () => {
    const ts = parseTenants('{"acme":{"apiTokens":["a"],"s3":["acme-media/in/"]},"globex":{"readTokens":["g"],"maxActiveJobs":3}}');
    expect(ts.map((t) => [t.name, t.maxActiveJobs])).toEqual([
      ['acme', 100],
      ['globex', 3],
    ]);
    expect(tenantTokens(ts)).toEqual(
      new Map([
        ['a', 'acme'],
        ['g', 'globex'],
      ]),
    );
    expect(parseTenants('')).toEqual([]);
    expect(() => parseTenants('{"Acme!":{}}')).toThrow(/tenant names/);
    expect(() => parseTenants('{"a":{"apiTokens":["x"]},"b":{"readTokens":["x"]}}')).toThrow(/both a and b/);
    expect(() => parseTenants('{"a":{"bucketz":[]}}')).toThrow();
    expect(() => parseTenants('not json')).toThrow(/not JSON/);
  });

  it('a tenant may use its locations and its own uploads, nothing else', () => {
    const t = { name: 'acme', s3: ['acme-media/in/', 'shared'] };
    expect(mayUseS3(t, 'acme-media', 'in/a.mp4', 'tessera-output')).toBe(true);
    expect(mayUseS3(t, 'acme-media', 'out/a.mp4', 'tessera-output')).toBe(false);
    expect(mayUseS3(t, 'shared', 'anything', 'tessera-output')).toBe(true);
    expect(mayUseS3(t, 'tessera-output', 'uploads/acme/r1', 'tessera-output')).toBe(true);
    expect(mayUseS3(t, 'tessera-output', 'uploads/globex/r1', 'tessera-output')).toBe(false);
    expect(mayUseS3(t, 'tessera-output', 'uploads/acmex/r1', 'tessera-output')).toBe(false);
    expect(() => checkS3(t, 's3://globex-media/x.mp4', 'input', 'tessera-output')).toThrow(/may not use/);
  });
});
