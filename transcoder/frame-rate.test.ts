import { describe, expect, it } from 'vitest';
import { chooseSourceRate, chunkGrids, chunkStarts, constantRateFilters, constantRateFrames, firstGridPoint, parseFrameRate, slotAt } from './frame-rate.js';

describe('frame_rate setting', () => {
  it('parses source, auto, integers, fractions and NTSC decimals', () => {
    expect(parseFrameRate('')).toEqual({ kind: 'source' });
    expect(parseFrameRate('source')).toEqual({ kind: 'source' });
    expect(parseFrameRate('auto')).toEqual({ kind: 'auto' });
    expect(parseFrameRate('25')).toEqual({ kind: 'rate', rate: { num: 25, den: 1 } });
    expect(parseFrameRate('60000/2002')).toEqual({ kind: 'rate', rate: { num: 30000, den: 1001 } });
    expect(parseFrameRate('29.97')).toEqual({ kind: 'rate', rate: { num: 30000, den: 1001 } });
    expect(parseFrameRate('23.976')).toEqual({ kind: 'rate', rate: { num: 24000, den: 1001 } });
  });

  it('refuses anything else with INVALID_ARGUMENT naming what is allowed', () => {
    for (const bad of ['fast', '0', '241', '30/0', '24.5', '-30', '1/2', '30 fps', '9'.repeat(40)]) {
      expect(() => parseFrameRate(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/source.*auto/) }));
    }
  });

  it('auto picks the fastest sustained rate, snapped to a standard one', () => {
    const times = (parts: [number, number][]): number[] => {
      const out: number[] = [];
      let t = 0;
      for (const [fps, n] of parts)
        for (let i = 0; i < n; i++) {
          out.push(Math.round(t * 1000) / 1000);
          t += 1 / fps;
        }
      return out;
    };
    expect(
      chooseSourceRate(
        times([
          [24, 120],
          [30, 150],
        ]),
        27,
      ),
    ).toEqual({ num: 30, den: 1 });
    expect(chooseSourceRate(times([[30000 / 1001, 300]]), 29.97)).toEqual({ num: 30000, den: 1001 });
    expect(chooseSourceRate(times([[25, 100]]), 25)).toEqual({ num: 25, den: 1 });
    expect(chooseSourceRate(times([[37, 100]]), 37)).toEqual({ num: 37, den: 1 });
    expect(chooseSourceRate([0], 0)).toEqual({ num: 30, den: 1 });
  });
});

describe('the constant-rate grid', () => {
  const r30 = { num: 30, den: 1 };

  it('a source frame exactly on a grid point is shown there, even with millisecond rounding', () => {
    expect(slotAt(2, r30)).toBe(60);
    expect(slotAt(2.0005, r30)).toBe(60);
    expect(slotAt(1.9995, r30)).toBe(60);
    expect(slotAt(0.067, r30)).toBe(2); // 2/30 rounded up to the millisecond
    expect(constantRateFrames(10, r30)).toBe(300);
    expect(constantRateFrames(9.968333, r30)).toBe(300);
    expect(constantRateFrames(10.08, r30)).toBe(303);
  });

  it('chunks of consecutive segments share every grid point exactly once', () => {
    // Three segments of a 10.08 s source, cut into chunks at Matroska-millisecond boundaries.
    const windows = [
      { originSec: -0.2, startSec: 0, endSec: 3.417 },
      { originSec: 3.3, startSec: 3.417, endSec: 6.9 },
      { originSec: 6.9, startSec: 6.9, endSec: 10.08 },
    ];
    const bounds = [
      [0, 1.1, 2.333, 3.617],
      [0, 0.9, 3.6],
      [0, 1.5, 2.0, 3.18],
    ];
    let next = 0;
    let total = 0;
    windows.forEach((w, s) => {
      for (const g of chunkGrids(r30, w, bounds[s]!)) {
        expect(g.firstSlot).toBe(next);
        expect(g.shiftSec).toBeLessThanOrEqual(0);
        expect(g.shiftSec).toBeGreaterThan(-1 / 30 - 0.001);
        next += g.frames;
        total += g.frames;
      }
    });
    expect(total).toBe(constantRateFrames(10.08, r30));
  });

  it('builds the filters from numbers only, and refuses empty or odd shares', () => {
    expect(constantRateFilters({ num: 30000, den: 1001 }, { frames: 42, shiftSec: -0.0123456 })).toEqual([
      'setpts=PTS-STARTPTS-0.012346/TB',
      'tpad=stop_mode=clone:stop_duration=1.000',
      'fps=fps=30000/1001:round=up',
      'trim=end_frame=42',
    ]);
    expect(() => constantRateFilters(r30, { frames: 0, shiftSec: 0 })).toThrow();
    expect(() => constantRateFilters(r30, { frames: 10, shiftSec: 0.5 })).toThrow();
    expect(() => constantRateFilters({ num: 1000, den: 1 }, { frames: 10, shiftSec: 0 })).toThrow();
  });
});

describe('the streaming keyframe grid', () => {
  it("finds each chunk's first grid point in its own time", () => {
    expect(firstGridPoint(0, 2)).toBe(0);
    expect(firstGridPoint(4.7, 2)).toBeCloseTo(1.3, 9);
    expect(firstGridPoint(6, 2)).toBe(0);
    expect(firstGridPoint(5.9995, 2)).toBeCloseTo(0.0005, 9); // a millisecond-rounded start just before a grid point
    const starts = chunkStarts({ originSec: 4.7, startSec: 5.3333 }, [0, 1.5, 3.2]);
    [5.3333, 6.2, 7.9].forEach((want, i) => expect(starts[i]).toBeCloseTo(want, 9));
  });
});
