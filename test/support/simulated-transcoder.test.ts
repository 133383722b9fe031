import { describe, expect, it } from 'vitest';
import { simulatedTranscoder } from './simulated-transcoder.js';

describe('simulatedTranscoder (no ffmpeg needed for these parts)', () => {
  const media = simulatedTranscoder({ secondsPerMediaSecond: 0.1, clipDir: '/nonexistent' });
  const signal = new AbortController().signal;

  it('offers every frame as a keyframe and the segment length from its facts', async () => {
    const kf = await media.keyframes('/x', { frames: 5, fps: 10 }, signal);
    expect(kf.keyframes).toEqual([0, 0.1, 0.2, 0.3, 0.4]);
    expect(kf.durationSec).toBe(0.5);
  });

  it('splits into sub-segments whose frame counts add up to the segment', async () => {
    const subs = await media.split('/x', '/d', [0.2, 0.5], { frames: 8, fps: 10 }, signal);
    expect(subs.map((s) => s.frames)).toEqual([2, 3, 3]);
  });

  it('refuses a segment without frame facts', async () => {
    await expect(media.keyframes('/x', { frames: 0, fps: 10 }, signal)).rejects.toThrow(/frames and fps/);
  });
});
