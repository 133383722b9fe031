import { describe, expect, it } from 'vitest';
import { loadConfig } from '../coordinator/config.js';

describe('settings from the environment', () => {
  it('reads yes/no settings in their usual spellings', () => {
    expect(loadConfig({ KEEP_SUCCEEDED_UPLOADS: 'true', RANGED_INPUTS: 'no', HTTP_ALLOW_PRIVATE: 'ON', STASH_HTTP_INPUTS: '0' })).toMatchObject({
      KEEP_SUCCEEDED_UPLOADS: true,
      RANGED_INPUTS: false,
      HTTP_ALLOW_PRIVATE: true,
      STASH_HTTP_INPUTS: false,
    });
    expect(loadConfig({})).toMatchObject({ KEEP_SUCCEEDED_UPLOADS: false, RANGED_INPUTS: true });
  });

  it('refuses a yes/no setting it cannot read, naming it (a typo does not become false)', () => {
    expect(() => loadConfig({ RANGED_INPUTS: 'ture' })).toThrow(/RANGED_INPUTS/);
    expect(() => loadConfig({ TLS_REQUIRE_CLIENT_CERT: 'flase', HTTP_ALLOW_PRIVATE: 'maybe' })).toThrow(
      /TLS_REQUIRE_CLIENT_CERT[\s\S]*HTTP_ALLOW_PRIVATE|HTTP_ALLOW_PRIVATE[\s\S]*TLS_REQUIRE_CLIENT_CERT/,
    );
  });

  it('is frozen', () => {
    const c = loadConfig({});
    expect(Object.isFrozen(c)).toBe(true);
    expect(() => {
      (c as { RANGED_INPUTS: boolean }).RANGED_INPUTS = false;
    }).toThrow(TypeError);
  });
});
