import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobSpec } from '../../proto/gen/tessera/v1/types.js';
import { availableEncoders } from '../../transcoder/encoders.js';
import { makeClip, makeTempDir } from '../../test/support/media-fixtures.js';
import { loadConfig } from '../config.js';
import { examineInput, planJob, type ExaminedInput } from './job-preparation.js';

// The preparation the real run and the dry run share, on real ffmpeg-made clips.
describe('job preparation', () => {
  const cfg = loadConfig({ MIN_SEGMENT_SEC: '0.5' });
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let encoders: ReadonlySet<string>;
  let sparse: ExaminedInput;
  const spec = JobSpec.fromPartial({ inputUri: '/in.mp4', ladder: [{ height: 240 }, { height: 1080 }] });
  const nodes = [
    { id: 'node-a', slots: 2 },
    { id: 'node-b', slots: 1 },
    { id: 'node-c', slots: 1 },
  ];
  const opts = (): Parameters<typeof planJob>[2] => ({ nodes, minSegmentSec: cfg.MIN_SEGMENT_SEC, encoders, output: { bucket: 'b', key: 'k.zip' } });

  beforeAll(async () => {
    tmp = await makeTempDir('tessera-prep-');
    encoders = await availableEncoders();
    // 6 s at 30 fps with one keyframe every 5 s: cuts must fall between keyframes.
    const path = await makeClip(tmp.dir, 'sparse', { seconds: 6, gop: 150 });
    sparse = await examineInput(path, spec, cfg);
  });
  afterAll(() => tmp.cleanup());

  it('examines the input once: its frames, demuxer and packets', () => {
    expect(sparse.media.video.frames).toBe(180);
    expect(sparse.packets.frames).toBe(180);
    expect(sparse.source.format).toBeTruthy();
    expect(sparse.packets.keys.map((k) => Math.round(k.timeSec * 30))).toEqual([0, 150]);
  });

  it('plans exact frame shares by capacity, wherever the keyframes are, and says what the ladder dropped', () => {
    const p = planJob(sparse, spec, opts());
    expect(p.plan.cuts.map((c) => c.nodeId)).toEqual(['node-a', 'node-b', 'node-c']);
    // Shares follow slots 2:1:1 of 180 frames (within one frame).
    const frames = p.plan.cuts.map((c) => c.frames);
    expect(frames.reduce((a, b) => a + b, 0)).toBe(180);
    expect(Math.abs(frames[0]! - 90)).toBeLessThanOrEqual(1);
    expect(Math.abs(frames[1]! - 45)).toBeLessThanOrEqual(1);
    // Frame cuts: each file holds its packet range, from the keyframe at or before its first frame.
    expect(p.plan.cuts.every((c) => c.fromPacket !== undefined && c.toPacket !== undefined)).toBe(true);
    expect(p.fileFrames).toEqual(p.plan.cuts.map((c) => c.toPacket! - c.fromPacket!));
    expect(p.totalFrames).toBe(p.fileFrames.reduce((a, b) => a + b, 0));
    expect(p.totalFrames).toBeGreaterThan(180); // the boundary GOPs go to both neighbours
    // The 1080 rung does not fit a 320x240 source: dropped, and said.
    expect(p.plan.renditions.map((r) => r.height)).toEqual([240]);
    expect(p.ladderNotes.join(' ')).toMatch(/1080/);
    expect(p.plan).toMatchObject({ container: 'mp4', bucket: 'b', key: 'k.zip' });
  });

  it('keeps a recorded plan as it was (a resumed job re-cuts identically)', () => {
    const first = planJob(sparse, spec, opts());
    const again = planJob(sparse, spec, { ...opts(), nodes: [{ id: 'other', slots: 8 }], output: { bucket: 'x', key: 'y' }, recorded: first.plan });
    expect(again.plan).toEqual(first.plan);
    expect(again.fileFrames).toEqual(first.fileFrames);
    expect(again.ladderNotes).toEqual([]); // said once, when the plan was made
  });

  it('estimates segments by time from the header when only the start of the input was read', () => {
    const p = planJob(sparse, spec, { ...opts(), estimateFromSec: 6 });
    expect(p.plan.cuts.map((c) => c.frames).reduce((a, b) => a + b, 0)).toBe(180);
    expect(p.plan.cuts.every((c) => c.fromPacket === undefined)).toBe(true);
  });

  it('plans a constant rate and a keyframe grid with the cuts when the spec asks', () => {
    const s = JobSpec.fromPartial({ inputUri: '/in.mp4', frameRate: '25', package: 'hls', keyframeIntervalSec: 2 });
    const p = planJob(sparse, s, opts());
    expect(p.plan.constantRate).toMatchObject({ num: 25, den: 1, frames: 150 });
    expect(p.plan.constantRate!.windows).toHaveLength(p.plan.cuts.length);
    expect(p.plan.keyframeGrid?.periodSec).toBe(2);
    expect(p.sourceInfo).toMatchObject({ timestamps: 'constant', outputFrames: 150 });
  });
});
