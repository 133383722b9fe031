import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../common/errors.js';
import { decoderPixelCap } from '../../transcoder/ffmpeg-limits.js';
import { probeMedia, type MediaInfo } from '../../transcoder/probe.js';
import { makeTempDir, writeForgedMatroska } from '../../test/support/media-fixtures.js';
import { gateInput, type GateLimits } from './input-gate.js';

const limits: GateLimits = { maxDurationSec: 3600, maxWidth: 7680, maxHeight: 4320, maxFps: 120, maxStreams: 16, maxAudioChannels: 8, maxWorkPixels: 6 * 3600 * 60 * 3840 * 2160 };
const ok: MediaInfo = {
  formatName: 'mov,mp4,m4a,3gp,3g2,mj2',
  durationSec: 10,
  bytes: 1000,
  streamCount: 2,
  video: { codec: 'h264', width: 1280, height: 720, fps: 30, frames: 300, pixFmt: 'yuv420p' },
  audio: { codec: 'aac', channels: 2, sampleRate: 48000, durationSec: 10 },
  streams: [
    { type: 'video', codec: 'h264', tag: 'avc1' },
    { type: 'audio', codec: 'aac', tag: 'mp4a' },
  ],
  timeline: {
    rotation: 0,
    coded: { width: 1280, height: 720 },
    display: { width: 1280, height: 720 },
    fieldOrder: 'progressive',
    color: { primaries: '', transfer: '', matrix: '', range: '' },
    dynamicRange: 'sdr',
    bitDepth: 8,
    videoStartSec: 0,
    audio: [{ index: 0, codec: 'aac', channels: 2, layout: 'stereo', language: '', title: '', offsetSec: 0, durationSec: 10 }],
  },
};
const code = (m: Partial<MediaInfo>): string => {
  try {
    gateInput({ ...ok, ...m }, limits);
    return 'OK';
  } catch (err) {
    return (err as { code: string }).code;
  }
};

describe('gateInput', () => {
  it('passes an ordinary MP4', () => expect(code({})).toBe('OK'));

  it('caps the work (frames x pixels) a job claims, whichever of packets and duration x fps is larger', () => {
    const big = { ...ok, durationSec: 3600, video: { ...ok.video, width: 7680, height: 4320, fps: 120 } };
    // 1 h of 8K at 120 fps: each limit holds (3600 s, 7680x4320, 120 fps), the product does not.
    expect(code({ ...big, video: { ...big.video, frames: 432_000 } })).toBe('LIMIT_EXCEEDED');
    // Few packets, but the header claims the hour: still refused (the claim is what nodes would be asked to make).
    let msg = '';
    try {
      gateInput({ ...big, video: { ...big.video, frames: 50_000 } }, { ...limits, maxDurationSec: 1e9 });
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/claims 432000 frames of 7680x4320 \(1\.43e\+13 pixels to transcode\); the work limit MAX_WORK_PIXELS is 1\.07e\+13/);
    // 1 h of 4K at 60 fps is well inside.
    expect(code({ durationSec: 3600, video: { ...ok.video, width: 3840, height: 2160, fps: 60, frames: 216_000 } })).toBe('OK');
  });
  it('refuses playlists and reference formats', () => {
    for (const f of ['hls', 'concat', 'image2', 'dash', 'sdp']) expect(code({ formatName: f })).toBe('UNSUPPORTED_FORMAT');
    expect(code({ formatName: 'gif' })).toBe('UNSUPPORTED_FORMAT');
  });
  it('refuses codecs off the allow-list, attachments and encrypted tracks', () => {
    expect(code({ video: { ...ok.video, codec: 'rawvideo' } })).toBe('UNSUPPORTED_CODEC');
    expect(code({ audio: { ...ok.audio!, codec: 'dts' } })).toBe('UNSUPPORTED_CODEC');
    expect(code({ streams: [...ok.streams, { type: 'attachment', codec: 'ttf', tag: '' }] })).toBe('UNSUPPORTED_FORMAT');
    expect(code({ streams: [{ type: 'video', codec: 'h264', tag: 'encv' }] })).toBe('UNSUPPORTED_FORMAT');
  });
  it('enforces limits', () => {
    expect(code({ streamCount: 50 })).toBe('LIMIT_EXCEEDED');
    expect(code({ video: { ...ok.video, width: 100000, height: 100000 } })).toBe('LIMIT_EXCEEDED');
    expect(code({ durationSec: 360000 })).toBe('LIMIT_EXCEEDED');
    expect(code({ video: { ...ok.video, fps: 1000 } })).toBe('LIMIT_EXCEEDED');
    expect(code({ audio: { ...ok.audio!, channels: 32 } })).toBe('LIMIT_EXCEEDED');
  });
  it('refuses a duration the frames cannot cover', () => {
    expect(code({ durationSec: 3000, video: { ...ok.video, frames: 1 } })).toBe('UNSUPPORTED_FORMAT');
  });
});

describe('gateInput on forged headers (real ffprobe)', () => {
  it('refuses a header claiming 100000x100000 as LIMIT_EXCEEDED with the claimed size', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const forged = await writeForgedMatroska(join(dir, 'forged.mkv'), { width: 100000, height: 100000 });
      const err = await probeMedia(forged, { maxPixels: decoderPixelCap(limits.maxWidth, limits.maxHeight) })
        .then((m) => gateInput(m, limits))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AppError);
      expect(err).toMatchObject({ code: 'LIMIT_EXCEEDED', message: 'the input is 100000x100000; the limit is 7680x4320', retryable: false });
    } finally {
      await cleanup();
    }
  });
});

describe('sniffReference', () => {
  it('spots playlists and reference lists by their first bytes', async () => {
    const { sniffReference } = await import('./input-gate.js');
    expect(sniffReference(Buffer.from('#EXTM3U\n#EXTINF:1,\n/etc/passwd\n'))).toContain('HLS');
    expect(sniffReference(Buffer.from('ffconcat version 1.0\nfile /etc/passwd\n'))).toContain('ffconcat');
    expect(sniffReference(Buffer.from('<?xml version="1.0"?><MPD>'))).toContain('DASH');
    expect(sniffReference(Buffer.from([0, 0, 0, 0x20, 0x66, 0x74, 0x79, 0x70]))).toBeUndefined();
  });
});
