import { describe, expect, it } from 'vitest';
import { parseLadderArg } from './ladder-arg.js';

describe('parseLadderArg', () => {
  it('parses heights, bitrates, codecs and presets', () => {
    expect(parseLadderArg('1080:5000,720p:2800k:hevc,480::h264:fast')).toEqual([
      { name: '', height: 1080, videoBitrateKbps: 5000, codec: '', preset: '' },
      { name: '', height: 720, videoBitrateKbps: 2800, codec: 'hevc', preset: '' },
      { name: '', height: 480, videoBitrateKbps: 0, codec: 'h264', preset: 'fast' },
    ]);
  });
  it('takes a dynamic range as the fifth field', () => {
    expect(parseLadderArg('1080:8000:hevc::hdr')).toEqual([{ name: '', height: 1080, videoBitrateKbps: 8000, codec: 'hevc', preset: '', dynamicRange: 'hdr' }]);
  });
  it('rejects a height that is not a number', () => {
    expect(() => parseLadderArg('big')).toThrow(/height/);
  });
});
