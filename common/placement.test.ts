import { describe, expect, it } from 'vitest';
import { codecFamilies, fits, jobPlacement, lacks, parseLabels, parseNeeds, whyNoNode } from './placement.js';
import { hasTenBit } from '../transcoder/capabilities.js';

describe('placement', () => {
  it('names codec families, not encoders', () => {
    expect(codecFamilies(['libx264', 'libx265', 'aac', 'h264_nvenc', 'libaom-av1'])).toEqual(['h264', 'hevc', 'av1']);
    expect(codecFamilies(['aac'])).toEqual([]);
  });

  it('a job needs its rungs’ codec families, 10-bit for HDR rungs, what rungs ask for, and its labels', () => {
    const p = jobPlacement({
      ladder: [
        { codec: '', needs: 'gpu-test' },
        { codec: 'hevc', dynamicRange: 'hdr' },
      ],
      placement: 'zone=eu-1a, region=eu',
    });
    expect(p).toEqual({ needs: ['gpu-test', 'h264', 'hevc', 'hevc-10bit'], labels: { zone: 'eu-1a', region: 'eu' } });
    expect(jobPlacement({ ladder: [] })).toEqual({ needs: ['h264'], labels: {} });
  });

  it('refuses malformed names and labels', () => {
    expect(() => parseNeeds('nvenc, Bad Name')).toThrow(/not a capability name/);
    expect(() => parseLabels('zone')).toThrow(/not key=value/);
    expect(() => parseLabels('zone=a,zone=b')).toThrow(/given twice/);
    expect(parseNeeds(' NVENC ,nvenc,')).toEqual(['nvenc']);
  });

  it('a node fits when it has every capability and label; old agents count their encoders’ families', () => {
    const p = { needs: ['h264', 'nvenc'], labels: { zone: 'b' } };
    const gpu = { id: 'g', encoders: [], capabilities: ['h264', 'nvenc'], labels: { zone: 'b' } };
    const old = { id: 'o', encoders: ['libx264'] };
    expect(fits(gpu, p)).toBe(true);
    expect(lacks(old, p)).toEqual(['nvenc', 'zone=b']);
    expect(fits(old, { needs: ['h264'], labels: {} })).toBe(true);
    expect(whyNoNode([old], p)).toBe('waiting for a node with h264, nvenc, zone=b (o lacks nvenc, zone=b)');
    expect(whyNoNode([], p)).toMatch(/none is ready/);
  });

  it('reads 10-bit support from the encoder help', () => {
    expect(hasTenBit('    Supported pixel formats: yuv420p yuv420p10le\n')).toBe(true);
    expect(hasTenBit('    Supported pixel formats: yuv420p nv12\n')).toBe(false);
  });
});
