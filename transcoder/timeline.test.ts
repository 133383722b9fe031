import { describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { audioStartOffset, type ProbeJson } from './ffprobe.js';
import { parsePacketRows, summarizePackets } from './keyframes.js';
import { rungSize, resolveLadder } from './ladder.js';
import { bitDepthOf, cleanTitle, hdrMetadataOf, idetVerdict, parseDisplayMatrix, parseIdet, timelineFromProbe } from './timeline.js';
import { decideTreatment, frameFactor } from './treatment.js';

const ENC = new Set(['libx264', 'libx265', 'libsvtav1']);
const code = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return isAppError(err) ? err.code : String(err);
  }
};

/** ffprobe's dump of a display matrix rotating 90° (as `-metadata:s:v rotate=90` writes it). */
const ROT90 = '\n00000000:            0      -65536           0\n00000001:        65536           0           0\n00000002:            0           0  1073741824\n';
const MIRROR = '\n00000000:       -65536           0           0\n00000001:            0       65536           0\n00000002:            0           0  1073741824\n';

function probe(video: Record<string, unknown>, audio: Record<string, unknown>[] = []): ProbeJson {
  return {
    streams: [
      { codec_type: 'video', codec_name: 'h264', width: 640, height: 360, pix_fmt: 'yuv420p', start_time: '0.000000', ...video },
      ...audio.map((a) => ({ codec_type: 'audio', codec_name: 'aac', channels: 2, ...a })),
    ],
    format: { duration: '10.0' },
  } as ProbeJson;
}

describe('source timeline', () => {
  it('reads rotation from the display matrix as the clockwise turn a player applies', () => {
    expect(parseDisplayMatrix(ROT90)).toEqual([0, -65536, 0, 65536, 0, 0, 0, 0, 1073741824]);
    const tl = timelineFromProbe(probe({ side_data_list: [{ side_data_type: 'Display Matrix', displaymatrix: ROT90, rotation: 90 }] }));
    expect(tl.rotation).toBe(270);
    expect(tl.display).toEqual({ width: 360, height: 640 });
    expect(timelineFromProbe(probe({ side_data_list: [{ side_data_type: 'Display Matrix', rotation: -90 }] })).rotation).toBe(90);
    expect(timelineFromProbe(probe({ side_data_list: [{ side_data_type: 'Display Matrix', rotation: 180 }] })).display).toEqual({ width: 640, height: 360 });
    expect(timelineFromProbe(probe({})).rotation).toBe(0);
  });

  it('refuses rotations it cannot show faithfully', () => {
    expect(code(() => timelineFromProbe(probe({ side_data_list: [{ side_data_type: 'Display Matrix', rotation: 45 }] })))).toBe('UNSUPPORTED_ROTATION');
    expect(code(() => timelineFromProbe(probe({ side_data_list: [{ side_data_type: 'Display Matrix', displaymatrix: MIRROR, rotation: 0 }] })))).toBe('UNSUPPORTED_ROTATION');
  });

  it('reads field order, colour, bit depth and every audio track', () => {
    const tl = timelineFromProbe(
      probe({ field_order: 'tt', color_transfer: 'smpte2084', color_primaries: 'bt2020', color_space: 'bt2020nc', color_range: 'tv', pix_fmt: 'yuv420p10le', start_time: '0.5' }, [
        { tags: { language: 'eng', title: 'Main\u0007' }, start_time: '0.5', duration: '9.5', channel_layout: '5.1', channels: 6 },
        { tags: { language: 'FRA' }, start_time: '1.0', duration: '9.0' },
        { tags: { language: 'english' } },
      ]),
    );
    expect(tl.fieldOrder).toBe('tff');
    expect(tl.dynamicRange).toBe('pq');
    expect(tl.bitDepth).toBe(10);
    expect(tl.color).toEqual({ primaries: 'bt2020', transfer: 'smpte2084', matrix: 'bt2020nc', range: 'tv' });
    expect(tl.audio.map((a) => [a.index, a.language, a.title, a.channels, a.offsetSec])).toEqual([
      [0, 'eng', 'Main', 6, 0],
      [1, 'fra', '', 2, 0.5],
      [2, '', '', 2, 0],
    ]);
    expect(timelineFromProbe(probe({ field_order: 'bt' })).fieldOrder).toBe('tff');
    expect(timelineFromProbe(probe({ field_order: 'tb' })).fieldOrder).toBe('bff');
    expect(timelineFromProbe(probe({ color_transfer: 'arib-std-b67' })).dynamicRange).toBe('hlg');
    expect(bitDepthOf('yuv422p12le')).toBe(12);
    expect(bitDepthOf('yuv420p')).toBe(8);
    expect(cleanTitle('x'.repeat(100))).toHaveLength(64);
  });

  it('turns HDR10 side data into x265 master-display numbers', () => {
    const md = hdrMetadataOf([
      {
        side_data_type: 'Mastering display metadata',
        red_x: '34000/50000',
        red_y: '16000/50000',
        green_x: '13250/50000',
        green_y: '34500/50000',
        blue_x: '7500/50000',
        blue_y: '3000/50000',
        white_point_x: '15635/50000',
        white_point_y: '16450/50000',
        min_luminance: '1/10000',
        max_luminance: '10000000/10000',
      },
      { side_data_type: 'Content light level metadata', max_content: 1000, max_average: 400 },
    ]);
    expect(md).toEqual({ masterDisplay: 'G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)', maxCll: 1000, maxFall: 400 });
    expect(hdrMetadataOf([])).toBeUndefined();
  });

  it('reads idet and decides deinterlacing from flags or from the sample', () => {
    const c = parseIdet('[Parsed_idet_0 @ 0x1] Multi frame detection: TFF:    55 BFF:     0 Progressive:     3 Undetermined:     2');
    expect(c).toEqual({ tff: 55, bff: 0, progressive: 3, undetermined: 2 });
    expect(idetVerdict(c)).toEqual({ interlaced: true, parity: 'tff' });
    expect(idetVerdict({ tff: 1, bff: 0, progressive: 58, undetermined: 1 }).interlaced).toBe(false);
    const flagged = decideTreatment(timelineFromProbe(probe({ field_order: 'bb' })), undefined);
    expect(flagged).toMatchObject({ deinterlace: 'frame', fieldParity: 'auto', deinterlaceAll: true });
    const found = decideTreatment(timelineFromProbe(probe({ field_order: 'progressive' })), { tff: 0, bff: 50, progressive: 5, undetermined: 5 }, { deinterlace: 'field' });
    expect(found).toMatchObject({ deinterlace: 'field', fieldParity: 'bff', deinterlaceAll: true });
    expect(frameFactor(found)).toBe(2);
    expect(decideTreatment(timelineFromProbe(probe({})), { tff: 0, bff: 0, progressive: 60, undetermined: 0 }).deinterlace).toBe('');
    // Untagged SD is BT.601, untagged HD BT.709 (what players assume).
    expect(decideTreatment(timelineFromProbe(probe({ width: 720, height: 576 })), undefined).colorMatrix).toBe('bt601');
    expect(decideTreatment(timelineFromProbe(probe({ width: 1920, height: 1080 })), undefined).colorMatrix).toBe('bt709');
  });
});

describe('edit lists and variable frame rate in the packet scan', () => {
  const rows = (lines: string[]): ReturnType<typeof parsePacketRows> => parsePacketRows(lines.join('\n'));

  it('counts the hidden lead-in and times keyframes from the first presented frame', () => {
    const s = summarizePackets(
      rows([
        'pts_time=-0.100000|duration_time=0.033333|flags=KD',
        'pts_time=-0.066667|duration_time=0.033333|flags=_D',
        'pts_time=-0.033333|duration_time=0.033333|flags=_D',
        'pts_time=0.000000|duration_time=0.033333|flags=__',
        'pts_time=0.033333|duration_time=0.033333|flags=__',
        'pts_time=0.066667|duration_time=0.033333|flags=K_',
        'pts_time=0.100000|duration_time=0.033333|flags=__',
      ]),
    );
    expect(s.leadIn).toBe(3);
    expect(s.frames).toBe(7);
    expect(s.startSec).toBe(0);
    expect(s.keys.map((k) => k.timeSec)).toEqual([-0.1, 0.066667]);
    expect(s.durationSec).toBeCloseTo(0.133333, 5);
    expect(s.variableFrameRate).toBe(false);
  });

  it('refuses an edit list that hides frames after the start', () => {
    const middle = rows([
      'pts_time=0|duration_time=0.04|flags=K_',
      'pts_time=0.04|duration_time=0.04|flags=__',
      'pts_time=0.08|duration_time=0.04|flags=K_',
      'pts_time=0.12|duration_time=0.04|flags=_D',
    ]);
    expect(code(() => summarizePackets(middle))).toBe('UNSUPPORTED_EDIT_LIST');
  });

  it('tells variable from constant frame rate (millisecond jitter is constant)', () => {
    const at = (times: number[]): string[] => times.map((t, i) => `pts_time=${t.toFixed(6)}|flags=${i === 0 ? 'K_' : '__'}`);
    const vfr = [...Array.from({ length: 24 }, (_, i) => i / 24), ...Array.from({ length: 30 }, (_, i) => 1 + i / 30)];
    expect(summarizePackets(rows(at(vfr))).variableFrameRate).toBe(true);
    const ms = Array.from({ length: 60 }, (_, i) => Math.round((i * 1001) / 30) / 1000);
    expect(summarizePackets(rows(at(ms))).variableFrameRate).toBe(false);
  });
});

describe('ladder heights name the short side', () => {
  it('makes portrait renditions of a portrait source, never upscaled', () => {
    expect(rungSize({ width: 1080, height: 1920 }, 720)).toEqual({ width: 720, height: 1280 });
    expect(rungSize({ width: 1920, height: 1080 }, 720)).toEqual({ width: 1280, height: 720 });
    const r = resolveLadder([{ height: 1080 }, { height: 720 }, { height: 480 }], { width: 720, height: 1280 }, ENC);
    expect(r.map((x) => `${x.name} ${x.width}x${x.height}`)).toEqual(['720p 720x1280', '480p 480x854']);
  });

  it('accepts HDR rungs only where they can be honest', () => {
    expect(code(() => resolveLadder([{ height: 360, codec: 'hevc', dynamicRange: 'hdr' }], { width: 640, height: 360, dynamicRange: 'sdr' }, ENC))).toBe('UNSUPPORTED_DYNAMIC_RANGE');
    expect(code(() => resolveLadder([{ height: 360, codec: 'h264', dynamicRange: 'hdr' }], { width: 640, height: 360, dynamicRange: 'pq' }, ENC))).toBe('UNSUPPORTED_CODEC');
    expect(code(() => resolveLadder([{ height: 360, dynamicRange: 'dolby' }], { width: 640, height: 360 }, ENC))).toBe('INVALID_ARGUMENT');
    const [av1] = resolveLadder([{ height: 360, codec: 'av1', dynamicRange: 'HDR' }], { width: 640, height: 360, dynamicRange: 'hlg' }, ENC);
    expect(av1).toMatchObject({ encoder: 'libsvtav1', dynamicRange: 'hdr', name: '360p-hdr' });
  });
});

describe('audioStartOffset', () => {
  const video = { codec_type: 'video', start_time: '0.040000' };
  it('is the audio start minus the first video start; a stream without a start starts with the video', () => {
    expect(audioStartOffset({ streams: [video, { codec_type: 'audio', start_time: '0.540000' }] }, { codec_type: 'audio', start_time: '0.540000' })).toBeCloseTo(0.5, 9);
    expect(audioStartOffset({ streams: [video] }, { codec_type: 'audio' })).toBe(0);
    expect(audioStartOffset({ streams: [{ codec_type: 'video' }], format: { start_time: '1.000000' } }, { codec_type: 'audio', start_time: '0.800000' })).toBeCloseTo(-0.2, 9);
  });
  it('is 0 without a video stream', () => {
    expect(audioStartOffset({ streams: [{ codec_type: 'audio', start_time: '2' }] }, { codec_type: 'audio', start_time: '2' })).toBe(0);
  });
});
