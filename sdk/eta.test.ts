import { describe, expect, it } from 'vitest';
import { etaText } from './eta.js';

describe('etaText', () => {
  it('prints p50 and p90 in seconds, minutes or hours, and nothing while unknown', () => {
    expect(etaText({ etaP50Sec: 0, etaP90Sec: 0 })).toBe('');
    expect(etaText({ etaP50Sec: 42.4, etaP90Sec: 65 })).toBe('ETA 42s (p90 1m05s)');
    expect(etaText({ etaP50Sec: 7300, etaP90Sec: 100 })).toBe('ETA 2h01m (p90 2h01m)');
  });
});
