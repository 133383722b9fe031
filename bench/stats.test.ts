import { describe, expect, it } from 'vitest';
import { markdownTable, median, parsePsnr } from './stats.js';

// Smoke tests of the benchmark harness's pure parts, so it cannot rot (the benchmarks themselves
// are not part of `npm test`).
describe('bench harness', () => {
  it('takes medians', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(Number.isNaN(median([]))).toBe(true);
  });
  it('reads the psnr filter summary', () => {
    const stderr = '[Parsed_psnr_1 @ 0x1] PSNR y:40.1 u:45.2 v:45.3 average:41.234567 min:38.1 max:44.0\n';
    expect(parsePsnr(stderr)).toBeCloseTo(41.234567, 6);
    expect(parsePsnr('[Parsed_psnr_1 @ 0x1] PSNR y:inf average:inf min:inf')).toBe(Number.POSITIVE_INFINITY);
    expect(Number.isNaN(parsePsnr('nothing'))).toBe(true);
  });
  it('renders a markdown table', () => {
    expect(markdownTable(['a', 'b'], [[1, 0.5]])).toBe('| a | b |\n| --- | --- |\n| 1 | 0.500 |');
  });
});
