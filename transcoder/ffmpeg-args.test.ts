import { describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { buildTranscodeArgs, formatCommand, gopFrames } from './ffmpeg-args.js';
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
      () => buildTranscodeArgs('/a/in.mkv', [{ path: '/a/o.mp4', rendition: r }, { path: '/a/o.mp4', rendition: r }], { fps: 30, container: 'mp4' }),
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
    expect(valuesOf(a, '-x265-params')[0]).toContain('pools=2');
    expect(a).not.toContain('hvc1');
    expect(valuesOf(a, '-g')).toEqual(['50']);
  });
});

describe('formatCommand', () => {
  it('shell-quotes for display', () => {
    expect(formatCommand(['-i', 'file:/a b/c.mkv', '-filter_complex', "[0]split=2[a][b]", "it's"])).toBe(
      `ffmpeg -i 'file:/a b/c.mkv' -filter_complex '[0]split=2[a][b]' 'it'\\''s'`,
    );
    expect(formatCommand(['-y'])).toBe('ffmpeg -y');
  });
});
