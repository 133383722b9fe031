import { describe, expect, it } from 'vitest';
import { AppError, isAppError } from '../common/errors.js';
import { DEFAULT_LADDER, assertRendition, resolveLadder, type RungRequest } from './ladder.js';

const ALL = new Set(['libx264', 'libx265', 'libsvtav1', 'libaom-av1', 'aac']);
const FHD = { width: 1920, height: 1080 };

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof AppError ? e.code : 'not-app-error';
  }
  return undefined;
}

describe('resolveLadder', () => {
  it('uses the default H.264 ladder when none is given', () => {
    const r = resolveLadder(undefined, FHD, ALL);
    expect(r.map((x) => [x.name, x.width, x.height, x.videoBitrateKbps, x.encoder, x.preset])).toEqual([
      ['1080p', 1920, 1080, 5000, 'libx264', 'veryfast'],
      ['720p', 1280, 720, 2800, 'libx264', 'veryfast'],
      ['480p', 854, 480, 1400, 'libx264', 'veryfast'],
      ['360p', 640, 360, 800, 'libx264', 'veryfast'],
    ]);
    expect(resolveLadder([], FHD, ALL)).toEqual(r);
    expect(DEFAULT_LADDER).toHaveLength(4);
  });

  it('never upscales: taller rungs are dropped', () => {
    const r = resolveLadder(undefined, { width: 1280, height: 720 }, ALL);
    expect(r.map((x) => x.height)).toEqual([720, 480, 360]);
  });

  it('falls back to one rung at the (even) source height when every rung is taller', () => {
    const r = resolveLadder(undefined, { width: 320, height: 241 }, ALL);
    expect(r).toHaveLength(1);
    expect(r[0]).toMatchObject({ height: 240, width: 318, name: '240p', codec: 'h264' });
    expect(r[0]!.videoBitrateKbps).toBeLessThanOrEqual(800);
  });

  it('keeps even dimensions and the aspect ratio', () => {
    const r = resolveLadder([{ height: 481 }, { height: 250 }], { width: 1001, height: 563 }, ALL);
    for (const x of r) {
      expect(x.width % 2).toBe(0);
      expect(x.height % 2).toBe(0);
      expect(Math.abs(x.width / x.height - 1001 / 563)).toBeLessThan(0.02);
    }
    expect(r.map((x) => x.height)).toEqual([480, 250]);
  });

  it('collapses duplicate heights and defaults bitrate from the nearest default rung', () => {
    const r = resolveLadder([{ height: 720 }, { height: 720, videoBitrateKbps: 999 }, { height: 400 }], FHD, ALL);
    expect(r.map((x) => [x.height, x.videoBitrateKbps])).toEqual([
      [720, 2800],
      [400, 800],
    ]);
  });

  it('maps codecs to encoders and presets', () => {
    const r = resolveLadder(
      [
        { height: 720, codec: 'hevc' },
        { height: 480, codec: 'AV1' },
        { height: 360, codec: 'av1', preset: '8', name: 'small' },
      ],
      FHD,
      ALL,
    );
    expect(r.map((x) => [x.codec, x.encoder, x.preset])).toEqual([
      ['hevc', 'libx265', 'veryfast'],
      ['av1', 'libsvtav1', '10'],
      ['av1', 'libsvtav1', '8'],
    ]);
    const aom = resolveLadder([{ height: 360, codec: 'av1' }], FHD, new Set(['libaom-av1']));
    expect(aom[0]).toMatchObject({ encoder: 'libaom-av1', preset: '8' });
  });

  it('rejects unknown codecs and codecs without an encoder here', () => {
    expect(code(() => resolveLadder([{ height: 720, codec: 'vp9' }], FHD, ALL))).toBe('UNSUPPORTED_CODEC');
    try {
      resolveLadder([{ height: 720, codec: 'vp9' }], FHD, ALL);
    } catch (e) {
      expect((e as Error).message).toMatch(/vp9.*h264, hevc, av1/);
    }
    expect(code(() => resolveLadder([{ height: 720, codec: 'hevc' }], FHD, new Set(['libx264'])))).toBe('UNSUPPORTED_CODEC');
    // validated even when the rung would be dropped for upscaling
    expect(code(() => resolveLadder([{ height: 2160, codec: 'mpeg2' }], FHD, ALL))).toBe('UNSUPPORTED_CODEC');
  });

  it('rejects presets outside the allow-list (presets are user input)', () => {
    for (const preset of ['placebo', 'fast;rm -rf /', '-preset', '99', 'veryfast ']) {
      expect(code(() => resolveLadder([{ height: 720, preset }], FHD, ALL))).toBe('INVALID_ARGUMENT');
    }
    expect(code(() => resolveLadder([{ height: 720, codec: 'av1', preset: 'veryfast' }], FHD, ALL))).toBe('INVALID_ARGUMENT');
    expect(code(() => resolveLadder([{ height: 720, preset: 'slow' }], FHD, ALL))).toBeUndefined();
  });

  it('validates heights, bitrates and names', () => {
    const bad: RungRequest[][] = [
      [{ height: 8 }],
      [{ height: 5000 }],
      [{ height: 720.5 }],
      [{ height: 720, videoBitrateKbps: 10 }],
      [{ height: 720, videoBitrateKbps: 200_000 }],
      [{ height: 720, name: 'Bad Name' }],
      [{ height: 720, name: '../x' }],
      [
        { height: 720, name: 'a' },
        { height: 480, name: 'a' },
      ],
      [{ height: 720, name: '480p' }, { height: 480 }],
    ];
    for (const b of bad) expect(code(() => resolveLadder(b, FHD, ALL))).toBe('INVALID_ARGUMENT');
  });

  it('assertRendition re-checks data that travelled through storage', () => {
    const [good] = resolveLadder([{ height: 360 }], FHD, ALL);
    expect(() => assertRendition(good!)).not.toThrow();
    expect(
      isAppError(
        catchErr(() => assertRendition({ ...good!, preset: 'x; rm' })),
        'INVALID_ARGUMENT',
      ),
    ).toBe(true);
    expect(
      isAppError(
        catchErr(() => assertRendition({ ...good!, encoder: 'libx265' })),
        'UNSUPPORTED_CODEC',
      ),
    ).toBe(true);
    expect(
      isAppError(
        catchErr(() => assertRendition({ ...good!, width: 641 })),
        'INVALID_ARGUMENT',
      ),
    ).toBe(true);
  });
});

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('ladderNotes', () => {
  it('names the rungs it dropped, or says it made one at the source size', async () => {
    const { ladderNotes } = await import('./ladder.js');
    expect(ladderNotes(undefined, { width: 1280, height: 720 })).toEqual([]);
    expect(ladderNotes([{ height: 720 }], { width: 1280, height: 720 })).toEqual([]);
    expect(ladderNotes([{ height: 1080 }, { height: 720 }], { width: 1280, height: 720 })).toEqual(["rung 1080p dropped: taller than the source's 720-pixel short side (never upscaled)"]);
    expect(ladderNotes([{ height: 1080, name: 'full' }], { width: 720, height: 1280 })[0]).toContain('every requested rung (full)');
  });
});
