import { describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { buildTranscodeArgs, ENCODER_TIME_BASE, formatCommand, gopFrames, outputCaps, svtMasterDisplay } from './ffmpeg-args.js';
import { PLAIN_TREATMENT, type PictureTreatment } from './treatment.js';
import { DEFAULT_MAX_PIXELS, DEFAULT_NICE, defaultAddressSpaceMb, defaultCpuSec, maxPixelsArg, prlimitArgs, resolveLimits } from './ffmpeg-limits.js';
import { demuxerArgs, demuxerFor, INPUT_DEMUXERS } from './ffprobe.js';
import { resolveLadder, type ResolvedRendition } from './ladder.js';

const ENC = new Set(['libx264', 'libx265', 'libsvtav1', 'libaom-av1']);
const ladder = resolveLadder([{ height: 720 }, { height: 480, codec: 'hevc' }, { height: 360, codec: 'av1' }], { width: 1920, height: 1080 }, ENC);
const outputs = ladder.map((r) => ({ path: `/stage/out/${r.name}-0001.mp4`, rendition: r }));

/** Values that follow each occurrence of `flag`. */
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe('buildTranscodeArgs', () => {
  const args = buildTranscodeArgs('/stage/seg/sub-0001.mkv', outputs, { fps: 30, container: 'mp4' });

  it('decodes once and splits into N scaled branches', () => {
    expect(valuesOf(args, '-i')).toEqual(['file:/stage/seg/sub-0001.mkv']);
    const graph = valuesOf(args, '-filter_complex');
    expect(graph).toHaveLength(1);
    expect(graph[0]).toContain('[0:V:0]split=3[s0][s1][s2]');
    expect(graph[0]).toContain('[s0]scale=1280:720');
    expect(graph[0]).toContain('[s1]scale=854:480');
    expect(graph[0]).toContain('[s2]scale=640:360');
  });

  it('writes one video-only output per rendition', () => {
    expect(valuesOf(args, '-map')).toEqual(['[v0]', '[v1]', '[v2]']);
    expect(args.filter((a) => a.startsWith('file:/stage/out/'))).toEqual(outputs.map((o) => `file:${o.path}`));
    expect(args.filter((a) => a === '-an')).toHaveLength(3);
    expect(valuesOf(args, '-c:v')).toEqual(['libx264', 'libx265', 'libsvtav1']);
    expect(valuesOf(args, '-f')).toEqual(['mp4', 'mp4', 'mp4']);
  });

  it('is frame-exact with a fixed GOP', () => {
    expect(valuesOf(args, '-fps_mode')).toEqual(['passthrough', 'passthrough', 'passthrough']);
    expect(valuesOf(args, '-g')).toEqual(['60', '60', '60']);
    expect(valuesOf(args, '-keyint_min')).toEqual(['60', '60', '60']);
    expect(valuesOf(args, '-sc_threshold')).toEqual(['0']);
    expect(valuesOf(args, '-x265-params')[0]).toContain('open-gop=0');
    expect(valuesOf(args, '-pix_fmt')).toEqual(['yuv420p', 'yuv420p', 'yuv420p']);
    expect(valuesOf(args, '-b:v')).toEqual(['2800k', '1400k', '800k']);
    expect(valuesOf(args, '-maxrate')).toContain('4200k');
    expect(args.join(' ')).not.toMatch(/-r |fps=|-vsync|-shortest/);
    expect(gopFrames(29.97)).toBe(60);
    expect(gopFrames(0.2)).toBe(1);
  });

  it('has the safety flags', () => {
    expect(args).toContain('-nostdin');
    expect(valuesOf(args, '-protocol_whitelist')).toEqual(['file']);
    expect(args).toContain('-y');
    expect(valuesOf(args, '-progress')).toEqual(['pipe:1']);
    expect(args).toContain('-nostats');
    // input options come before -i
    expect(args.indexOf('-protocol_whitelist')).toBeLessThan(args.indexOf('-i'));
  });

  it('contains no user string: only allow-listed values, numbers and our paths', () => {
    const allowed = new Set(['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium', 'slow', 'slower', 'veryslow', ...Array.from({ length: 14 }, (_, i) => String(i))]);
    for (const p of valuesOf(args, '-preset')) expect(allowed.has(p)).toBe(true);
    // No argument mentions the rendition names except inside our own output paths.
    for (const a of args) if (a.includes('720p')) expect(a.startsWith('file:/stage/out/')).toBe(true);
  });

  it('re-validates renditions (a tampered preset never reaches ffmpeg)', () => {
    const evil: ResolvedRendition = { ...ladder[0]!, preset: 'veryfast -i /etc/passwd' };
    let err: unknown;
    try {
      buildTranscodeArgs('/a/in.mkv', [{ path: '/a/out.mp4', rendition: evil }], { fps: 30, container: 'mp4' });
    } catch (e) {
      err = e;
    }
    expect(isAppError(err, 'INVALID_ARGUMENT')).toBe(true);
  });

  it('rejects relative or duplicate paths and bad numbers', () => {
    const r = ladder[0]!;
    const bad: (() => unknown)[] = [
      () => buildTranscodeArgs('in.mkv', [{ path: '/a/o.mp4', rendition: r }], { fps: 30, container: 'mp4' }),
      () => buildTranscodeArgs('/a/in.mkv', [{ path: 'o.mp4', rendition: r }], { fps: 30, container: 'mp4' }),
      () =>
        buildTranscodeArgs(
          '/a/in.mkv',
          [
            { path: '/a/o.mp4', rendition: r },
            { path: '/a/o.mp4', rendition: r },
          ],
          { fps: 30, container: 'mp4' },
        ),
      () => buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mp4', rendition: r }], { fps: 0, container: 'mp4' }),
      () => buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mp4', rendition: r }], { fps: 30, threads: 0, container: 'mp4' }),
      () => buildTranscodeArgs('/a/in.mkv', [], { fps: 30, container: 'mp4' }),
    ];
    for (const b of bad) expect(b).toThrow();
  });

  it('supports MKV parts and threads', () => {
    const a = buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mkv', rendition: ladder[1]! }], { fps: 25, threads: 2, container: 'mkv' });
    expect(valuesOf(a, '-f')).toEqual(['matroska']);
    expect(valuesOf(a, '-threads')).toEqual(['2']);
    expect(valuesOf(a, '-filter_complex_threads')).toEqual(['2']);
    const auto = buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mkv', rendition: ladder[1]! }], { fps: 25, container: 'mkv' });
    expect(auto).not.toContain('-filter_complex_threads');
    expect(valuesOf(a, '-x265-params')[0]).toContain('pools=2');
    expect(a).not.toContain('hvc1');
    expect(valuesOf(a, '-g')).toEqual(['50']);
  });
});

describe('hardened transcode arguments', () => {
  const hard = buildTranscodeArgs('/stage/seg/sub-0001.mkv', outputs, { fps: 30, container: 'mp4', inputFormat: 'matroska', maxPixels: 1920 * 1080, expectedDurationSec: 4 });
  const beforeInput = hard.slice(0, hard.indexOf('-i'));

  it('forces the demuxer, caps the decoder picture size and keeps stdin off, all before -i', () => {
    expect(valuesOf(beforeInput, '-f')).toEqual(['matroska']);
    expect(valuesOf(beforeInput, '-max_pixels')).toEqual(['2073600']);
    expect(valuesOf(beforeInput, '-protocol_whitelist')).toEqual(['file']);
    expect(valuesOf(beforeInput, '-format_whitelist')).toEqual([INPUT_DEMUXERS]);
    expect(beforeInput).toContain('-nostdin');
    // Without a known format ffmpeg may only guess within the whitelist; -max_pixels is always there.
    const plain = buildTranscodeArgs('/stage/seg/sub-0001.mkv', outputs, { fps: 30, container: 'mp4' });
    expect(valuesOf(plain.slice(0, plain.indexOf('-i')), '-f')).toEqual([]);
    expect(valuesOf(plain, '-max_pixels')).toEqual([String(DEFAULT_MAX_PIXELS)]);
    expect(valuesOf(plain, '-t')).toEqual([]);
  });

  it('caps every output in time and size, and strips metadata and chapters from each', () => {
    expect(valuesOf(hard, '-t')).toEqual(['6.000', '6.000', '6.000']);
    const sizes = valuesOf(hard, '-fs').map(Number);
    expect(sizes).toEqual(outputs.map((o) => outputCaps(o.rendition, 4).sizeBytes));
    // 720p at 2800 kbit/s: 8 MiB + 4 × 350 000 B/s × (6 + 2) s
    expect(sizes[0]).toBe(8 * 1024 * 1024 + 4 * 350_000 * 8);
    expect(valuesOf(hard, '-map_metadata')).toEqual(['-1', '-1', '-1']);
    expect(valuesOf(hard, '-map_chapters')).toEqual(['-1', '-1', '-1']);
    // Caps are output options: each sits between its -map and its file.
    const firstOut = hard.indexOf(`file:${outputs[0]!.path}`);
    expect(hard.indexOf('-t')).toBeGreaterThan(hard.indexOf('-map'));
    expect(hard.indexOf('-t')).toBeLessThan(firstOut);
    expect(outputCaps(ladder[0]!, 600).timeSec).toBe('660.000');
    expect(() => outputCaps(ladder[0]!, 0)).toThrow();
  });

  it('has only flags, numbers, allow-listed words, our own paths and our filter graph', () => {
    const words = new Set([
      'pipe:1',
      'file',
      INPUT_DEMUXERS,
      'matroska',
      'mp4',
      'libx264',
      'libx265',
      'libsvtav1',
      'yuv420p',
      'passthrough',
      'hvc1',
      'ultrafast',
      'superfast',
      'veryfast',
      'faster',
      'fast',
      'medium',
      'slow',
      'slower',
      'veryslow',
      'error',
      'bt709',
      'tv',
      ENCODER_TIME_BASE,
    ]);
    for (const a of hard) {
      const ok =
        /^-[a-z0-9_:-]+$/.test(a) || // a flag
        /^-?\d+(\.\d+)?k?$/.test(a) || // a number or bitrate
        words.has(a) ||
        /^\[v\d+\]$/.test(a) || // our graph's output labels
        /^file:\/stage\/(seg|out)\/[a-z0-9_-]+\.(mkv|mp4)$/.test(a) || // our paths
        /^(\[[a-z0-9:V]+\](split=\d+|scale=\d+:\d+:flags=bicubic(:[a-z_]+=[a-z0-9]+)*,format=yuv420p)(\[[a-z0-9]+\])+;?)+$/.test(a) || // our graph
        /^[a-z0-9-]+=[a-z0-9]+(:[a-z0-9-]+=[a-z0-9]+)*$/.test(a); // -x265-params from constants
      expect(ok, `unexpected argument ${JSON.stringify(a)}`).toBe(true);
    }
  });

  it('never takes a demuxer off the allow-list', () => {
    expect(demuxerFor('mov,mp4,m4a,3gp,3g2,mj2')).toBe('mov');
    expect(demuxerFor('matroska,webm')).toBe('matroska');
    for (const f of ['hls', 'concat', 'image2', 'toString', '__proto__', 'mov']) expect(() => demuxerFor(f)).toThrow();
    expect(demuxerArgs(undefined)).toEqual([]);
    expect(() => demuxerArgs('hls' as never)).toThrow();
    expect(() => buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mp4', rendition: ladder[0]! }], { fps: 30, container: 'mp4', inputFormat: 'concat' as never })).toThrow();
  });
});

describe('ffmpeg limits', () => {
  it('clamps -max_pixels to what ffmpeg accepts', () => {
    expect(maxPixelsArg(undefined)).toBe(String((7680 + 64) * (4320 + 64)));
    expect(maxPixelsArg(7680 * 4320 * 100)).toBe('2147483647');
    expect(maxPixelsArg(0)).toBe('1');
  });

  it('builds prlimit options; 0 switches a limit off', () => {
    expect(prlimitArgs({ addressSpaceMb: 1024, cpuSec: 60 })).toEqual(['--as=1073741824', '--cpu=60:65']);
    expect(prlimitArgs({ addressSpaceMb: 0, cpuSec: 0 })).toEqual([]);
    expect(resolveLimits({ addressSpaceMb: 0 }, 1000)).toEqual({ addressSpaceMb: 0, cpuSec: defaultCpuSec(1000), nice: 10 });
    expect(resolveLimits({ nice: 0 }, 1000).nice).toBe(0);
    expect(resolveLimits({ nice: 40 }, 1000).nice).toBe(19);
  });

  it('defaults: 16 GiB + 256 MiB per core of address space, the wall clock on every core of CPU, niceness 10', () => {
    expect(defaultAddressSpaceMb(2)).toBe(16_896);
    expect(defaultAddressSpaceMb(64)).toBe(32_768);
    expect(defaultCpuSec(3_600_000, 4)).toBe(14_400);
    expect(defaultCpuSec(Infinity, 4)).toBe(0);
    expect(resolveLimits(undefined, 10_000)).toEqual({ addressSpaceMb: defaultAddressSpaceMb(), cpuSec: defaultCpuSec(10_000), nice: DEFAULT_NICE });
  });
});

describe('formatCommand', () => {
  it('shell-quotes for display', () => {
    expect(formatCommand(['-i', 'file:/a b/c.mkv', '-filter_complex', '[0]split=2[a][b]', "it's"])).toBe(`ffmpeg -i 'file:/a b/c.mkv' -filter_complex '[0]split=2[a][b]' 'it'\\''s'`);
    expect(formatCommand(['-y'])).toBe('ffmpeg -y');
  });
});

describe('the source timeline in the transcode', () => {
  const hdr10: PictureTreatment = {
    ...PLAIN_TREATMENT,
    rotation: 90,
    deinterlace: 'field',
    fieldParity: 'tff',
    deinterlaceAll: true,
    dynamicRange: 'pq',
    colorMatrix: 'bt2020',
    masterDisplay: 'G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)',
    maxCll: 1000,
    maxFall: 400,
  };
  const [sdr, hdr] = resolveLadder([{ height: 360 }, { height: 360, codec: 'hevc', dynamicRange: 'hdr' }], { width: 720, height: 1280, dynamicRange: 'pq' }, ENC);

  it('drops the lead-in, deinterlaces, rotates once, then tone-maps SDR rungs and keeps HDR ones 10-bit', () => {
    expect(sdr!).toMatchObject({ width: 360, height: 640, dynamicRange: 'sdr' });
    expect(hdr!).toMatchObject({ name: '360p-hdr', width: 360, height: 640, dynamicRange: 'hdr', encoder: 'libx265' });
    const args = buildTranscodeArgs(
      '/stage/seg/a.mkv',
      [
        { path: '/stage/out/a.mp4', rendition: sdr! },
        { path: '/stage/out/b.mp4', rendition: hdr! },
      ],
      { fps: 50, container: 'mp4', treatment: hdr10, leadInFrames: 42 },
    );
    const graph = args[args.indexOf('-filter_complex') + 1]!;
    expect(graph.startsWith('[0:V:0]trim=start_frame=42,setpts=PTS-STARTPTS,bwdif=mode=send_field:parity=tff:deint=all,transpose=clock,split=2[s0][s1];')).toBe(true);
    expect(graph).toContain(
      '[s0]scale=360:640:flags=bicubic,zscale=tin=smpte2084:min=bt2020nc:pin=bt2020:rin=limited:t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=limited,format=yuv420p[v0]',
    );
    expect(graph).toContain('[s1]scale=360:640:flags=bicubic,format=yuv420p10le[v1]');
    const second = args.slice(args.indexOf('[v1]'));
    expect(second).toEqual(expect.arrayContaining(['yuv420p10le', 'smpte2084', 'bt2020', 'bt2020nc']));
    const x265 = second[second.indexOf('-x265-params') + 1]!;
    expect(x265).toContain('hdr10=1');
    expect(x265).toContain('master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)');
    expect(x265).toContain('max-cll=1000,400');
    const first = args.slice(args.indexOf('[v0]'), args.indexOf('[v1]'));
    expect(first).toEqual(expect.arrayContaining(['yuv420p', 'bt709']));
    expect(first).not.toContain('smpte2084');
    // The GOP follows the output rate (fields → 50 frames/s: 100 frames per 2 s).
    expect(first[first.indexOf('-g') + 1]).toBe('100');
  });

  it('tags SDR outputs BT.709, converting from the source matrix', () => {
    const args = buildTranscodeArgs('/stage/seg/a.mkv', [{ path: '/stage/out/a.mp4', rendition: sdr! }], {
      fps: 25,
      container: 'mp4',
      treatment: { ...PLAIN_TREATMENT, colorMatrix: 'bt601', colorRange: 'pc' },
    });
    expect(args[args.indexOf('-filter_complex') + 1]).toContain('in_color_matrix=bt601:out_color_matrix=bt709:in_range=pc:out_range=tv');
    expect(args).toEqual(expect.arrayContaining(['-color_primaries', 'bt709', '-color_trc', 'bt709', '-colorspace', 'bt709']));
  });

  it('refuses a treatment that does not come from our allow-lists', () => {
    const bad = [{ rotation: 45 }, { deinterlace: 'yadif' }, { fieldParity: 'x' }, { masterDisplay: 'G(1,2);drawtext' }, { maxCll: -1 }, { colorMatrix: 'bt709,eq' }];
    for (const b of bad) {
      expect(() => buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mp4', rendition: sdr! }], { fps: 30, container: 'mp4', treatment: { ...PLAIN_TREATMENT, ...b } as PictureTreatment })).toThrow(
        /treatment/,
      );
    }
    expect(() => buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mp4', rendition: sdr! }], { fps: 30, container: 'mp4', leadInFrames: -1 })).toThrow();
  });

  it('writes SVT-AV1 mastering display in its decimal syntax', () => {
    expect(svtMasterDisplay('G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)')).toBe('G(0.2650,0.6900)B(0.1500,0.0600)R(0.6800,0.3200)WP(0.3127,0.3290)L(1000.0000,0.0001)');
  });
});
