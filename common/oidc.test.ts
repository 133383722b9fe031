import { describe, expect, it } from 'vitest';
import { grantsOf, looksLikeJwt, scopesOf } from './oidc.js';
import { loadConfig, oidcSettings, startupRefusals } from '../coordinator/config.js';

const ROLES = { read: ['tessera:read'], write: ['tessera:write'], admin: ['tessera:admin', 'video-admins'] };

describe('OIDC claims and settings', () => {
  it('maps scope (string), scp (array) and group claims to read, write (submit + read) and admin (+ read)', () => {
    expect([...scopesOf(grantsOf({ scope: 'openid tessera:read' }, 'groups'), ROLES)]).toEqual(['read']);
    expect([...scopesOf(grantsOf({ scp: ['tessera:write'] }, 'groups'), ROLES)].sort()).toEqual(['read', 'submit']);
    expect([...scopesOf(grantsOf({ roles: ['video-admins'] }, 'roles'), ROLES)].sort()).toEqual(['admin', 'read']);
    // Another service's scopes, or the groups claim under a name not configured, grant nothing.
    expect(scopesOf(grantsOf({ scope: 'email profile', groups: ['video-admins'] }, 'roles'), ROLES).size).toBe(0);
  });

  it('tells JWT-shaped bearer values from static tokens', () => {
    expect(looksLikeJwt('eyJhbGciOiJub25lIn0.eyJhIjoxfQ.')).toBe(true);
    expect(looksLikeJwt('a.b.c')).toBe(true);
    expect(looksLikeJwt('static-api-token-0123456789')).toBe(false);
  });

  it('an issuer counts as authentication; it needs an audience and https (plain http only on this machine)', () => {
    const open = (env: Record<string, string>): string[] => startupRefusals(loadConfig({ S3_ENDPOINT: 'http://127.0.0.1:9', ...env }));
    expect(open({}).join()).toContain('ALLOW_ANONYMOUS=true');
    expect(open({ OIDC_ISSUER: 'https://login.example.com/realms/media', OIDC_AUDIENCE: 'tessera' })).toEqual([]);
    expect(open({ OIDC_ISSUER: 'http://127.0.0.1:8080', OIDC_AUDIENCE: 'tessera' })).toEqual([]);
    expect(open({ OIDC_ISSUER: 'https://login.example.com' }).join()).toContain('OIDC_ISSUER is set without OIDC_AUDIENCE');
    expect(open({ OIDC_ISSUER: 'http://login.example.com', OIDC_AUDIENCE: 'tessera' }).join()).toContain('OIDC_ISSUER must be an https:// URL');
    expect(open({ OIDC_ISSUER: 'https://login.example.com', OIDC_AUDIENCE: 'tessera', OIDC_JWKS_URI: 'http://keys.example.com/jwks' }).join()).toContain('OIDC_JWKS_URI must be an https:// URL');
    const s = oidcSettings(loadConfig({ OIDC_ISSUER: 'https://login.example.com', OIDC_AUDIENCE: 'tessera', OIDC_ADMIN_SCOPES: 'tessera:admin,video-admins', OIDC_CLOCK_SKEW_S: '10' }));
    expect(s).toMatchObject({
      issuer: 'https://login.example.com',
      audience: 'tessera',
      clockSkewSec: 10,
      roles: { read: ['tessera:read'], write: ['tessera:write'], admin: ['tessera:admin', 'video-admins'] },
      groupsClaim: 'groups',
    });
  });
});
