import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobState, type Job, type JobSpec, type Rendition } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, startTestCluster, type ArchiveCheck, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { displayedSize, framePsnr, hasMasteringDisplay, idet, inspect, makeSource, RAMP_PERIOD, rampIndices, videoPts, type SourceKind } from './media-helpers.js';

// What a platform's own uploads look like after Tessera: each source class goes through a 3-node
// cluster whose agents have 2 worker slots (the production path: segments are cut again), and
// the renditions are checked as a viewer would see them.

const rung = (height: number, extra: Partial<Rendition> = {}): Rendition => ({ name: '', height, videoBitrateKbps: 600, codec: 'h264', preset: 'ultrafast', dynamicRange: '', ...extra });

interface Case {
  id: string;
  kind: SourceKind;
  file: string;
  spec?: Partial<JobSpec>;
  /** The job must fail with this code (honest refusal) instead of succeeding. */
  fails?: string;
}

const CASES: Case[] = [
  { id: 'portrait', kind: 'portrait', file: 'portrait.mp4', spec: { ladder: [rung(360, { videoBitrateKbps: 1200 }), rung(240)] } },
  { id: 'edit-list', kind: 'edit-list', file: 'edit-list.mp4', spec: { ladder: [rung(240)] } },
  { id: 'vfr', kind: 'vfr', file: 'vfr.mp4', spec: { ladder: [rung(240)] } },
  { id: 'vfr-30', kind: 'vfr-ramp', file: 'vfr-30.mp4', spec: { frameRate: '30', ladder: [rung(240)] } },
  { id: 'vfr-auto', kind: 'vfr-ramp', file: 'vfr-auto.mp4', spec: { frameRate: 'auto', ladder: [rung(240)] } },
  { id: 'edit-list-30', kind: 'edit-list', file: 'edit-list-30.mp4', spec: { frameRate: '30', ladder: [rung(240)] } },
  { id: 'fps60-to-30', kind: 'fps60-ramp', file: 'fps60-to-30.mp4', spec: { frameRate: '30', ladder: [rung(240)] } },
  { id: 'interlaced', kind: 'interlaced', file: 'interlaced.mp4', spec: { ladder: [rung(576, { videoBitrateKbps: 1500 }), rung(288)] } },
  { id: 'interlaced-field', kind: 'interlaced', file: 'interlaced-field.mp4', spec: { deinterlace: 'field', ladder: [rung(288)] } },
  { id: 'hdr10', kind: 'hdr10', file: 'hdr10.mp4', spec: { ladder: [rung(360), rung(360, { name: '360p-hdr', codec: 'hevc', dynamicRange: 'hdr' })] } },
  { id: 'hlg', kind: 'hlg', file: 'hlg.mp4', spec: { ladder: [rung(240), rung(240, { codec: 'hevc', dynamicRange: 'hdr' })] } },
  { id: 'two-audio', kind: 'two-audio', file: 'two-audio.mkv', spec: { ladder: [rung(240)] } },
  { id: 'two-audio-pick', kind: 'two-audio', file: 'two-audio-pick.mkv', spec: { audioTracks: [1], ladder: [rung(240)] } },
  { id: 'surround', kind: 'surround', file: 'surround.mp4', spec: { ladder: [rung(240)] } },
  { id: 'surround-downmix', kind: 'surround', file: 'surround-downmix.mp4', spec: { stereoDownmix: true, ladder: [rung(240)] } },
  { id: 'no-audio', kind: 'no-audio', file: 'no-audio.mp4', spec: { ladder: [rung(240)] } },
  { id: 'late-audio', kind: 'late-audio', file: 'late-audio.mp4', spec: { ladder: [rung(240)] } },
  { id: 'mpegts', kind: 'mpegts', file: 'clip.ts', spec: { ladder: [rung(240)] } },
  { id: 'prores-pcm', kind: 'prores-pcm', file: 'prores.mov', spec: { ladder: [rung(240)] } },
  { id: 'fps60', kind: 'fps60', file: 'fps60.mp4', spec: { ladder: [rung(240)] } },
  { id: 'half-second', kind: 'half-second', file: 'half.mp4', spec: { ladder: [rung(240)] } },
  { id: 'mirrored', kind: 'mirrored', file: 'mirrored.mp4', spec: { ladder: [rung(240)] }, fails: 'UNSUPPORTED_ROTATION' },
  { id: 'hdr-rung-on-sdr', kind: 'no-audio', file: 'sdr.mp4', spec: { ladder: [rung(240, { codec: 'hevc', dynamicRange: 'hdr' })] }, fails: 'UNSUPPORTED_DYNAMIC_RANGE' },
];

interface Outcome {
  source: string;
  job: Job;
  archive: ArchiveCheck;
  files: Map<string, string>;
}

describe('real uploads keep what the source shows', () => {
  let t: TestCluster;
  let work: string;
  const outcomes = new Map<string, Promise<Outcome>>();

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 3, slots: 2, env: { MIN_SEGMENT_SEC: '1', MIN_SUB_SEGMENT_SEC: '0.5' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-media-'));
    // Sources are made one after another (two cores), jobs run as they become ready.
    let chain: Promise<unknown> = Promise.resolve();
    // MEDIA_ONLY=id,id runs just those cases' jobs (for working on one source class; their tests only).
    const only = process.env.MEDIA_ONLY?.split(',');
    for (const c of only ? CASES.filter((x) => only.includes(x.id)) : CASES) {
      const made = chain.then(() => makeSource(c.kind, join(t.inputDir, c.file)));
      // One source that cannot be made fails its own case only.
      chain = made.catch(() => undefined);
      outcomes.set(
        c.id,
        made.then(async (source) => {
          const { jobId } = await t.client.submit({ inputUri: source, ...c.spec });
          const job = await t.client.wait(jobId);
          if (c.fails) return { source, job, archive: undefined as unknown as ArchiveCheck, files: new Map<string, string>() };
          if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`${c.id}: ${job.state} ${job.errorCode} ${job.errorMessage}`);
          const archive = await checkArchive(t.s3, job, work);
          const files = new Map(archive.manifest.renditions.map((r) => [r.name, join(work, `${job.id}-${r.file}`)]));
          return { source, job, archive, files };
        }),
      );
    }
    for (const p of outcomes.values()) p.catch(() => undefined);
  });
  afterAll(async () => {
    await t?.close();
    if (work && !process.env.KEEP_TEST_DIRS) await rm(work, { recursive: true, force: true });
  });

  const outcome = (id: string): Promise<Outcome> => outcomes.get(id)!;

  /** Frames, duration and A/V end alignment of every rendition against the source as a player shows it. */
  async function expectFaithful(o: Outcome, opts: { frameFactor?: number; audioFrom?: number[] } = {}): Promise<void> {
    const src = await inspect(o.source);
    const factor = opts.frameFactor ?? 1;
    // Which source track each output track comes from (default: each source track, in order).
    const audioFrom = opts.audioFrom ?? src.audio.map((_, i) => i);
    const frameSec = src.video.durationSec / Math.max(1, src.video.frames);
    for (const [name, file] of o.files) {
      const out = await inspect(file);
      expect(out.video.frames, `${name} frames`).toBe(src.video.frames * factor);
      expect(Math.abs(out.video.durationSec - src.video.durationSec), `${name} duration`).toBeLessThanOrEqual(frameSec + 0.002);
      expect(out.audio.length, `${name} audio tracks`).toBe(audioFrom.length);
      for (const [i, a] of out.audio.entries()) {
        const s = src.audio[audioFrom[i]!]!;
        // Where the audio ends relative to the picture is what the source has (AAC priming and
        // one video frame of tolerance).
        const drift = a.endSec - out.video.endSec - (s.endSec - src.video.endSec);
        expect(Math.abs(drift), `${name} audio ${i} end vs video end`).toBeLessThanOrEqual(frameSec + 0.03);
      }
      const m = o.archive.manifest.renditions.find((r) => r.name === name)!;
      expect(m.frames).toBe(out.video.frames);
    }
  }

  it('portrait phone video: renditions are upright portrait, heights name the short side', async () => {
    const o = await outcome('portrait');
    const src = await inspect(o.source);
    expect(displayedSize(src.video)).toEqual({ width: 360, height: 640 });
    const sizes = o.archive.manifest.renditions.map((r) => `${r.width}x${r.height}`).sort();
    expect(sizes).toEqual(['240x426', '360x640']);
    for (const [name, file] of o.files) {
      const out = await inspect(file);
      expect(out.video.rotation, name).toBe(0);
      const shown = displayedSize(out.video);
      expect(shown.height).toBeGreaterThan(shown.width);
      // The same picture the same way up as the source shows it: it matches the source far
      // better than the source turned upside down or mirrored does.
      const size = `${shown.width}x${shown.height}`;
      const upright = await framePsnr(o.source, file, 45, size);
      for (const turn of ['hflip,vflip', 'hflip', 'vflip']) expect(upright, `${name} vs ${turn}`).toBeGreaterThan((await framePsnr(o.source, file, 45, size, turn)) + 3);
    }
    await expectFaithful(o);
  });

  it('edit list: only the presented 318 of 360 stored frames, audio in sync', async () => {
    const o = await outcome('edit-list');
    const src = await inspect(o.source);
    expect(src.video.frames).toBe(318);
    expect(Math.abs(src.video.durationSec - 10.6)).toBeLessThan(0.05);
    await expectFaithful(o);
    expect(o.archive.manifest.source.frames).toBe(318);
  });

  it('variable frame rate: timestamps kept, no time dropped, audio in sync to the end', async () => {
    const o = await outcome('vfr');
    await expectFaithful(o);
    const manifest = o.archive.manifest as unknown as { source: { variableFrameRate: boolean; timestamps: string } };
    expect(manifest.source.variableFrameRate).toBe(true);
    expect(manifest.source.timestamps).toBe('source');
  });

  /** A constant-rate job: one frame per grid point over the source's duration, each the source frame shown then, audio in sync. */
  async function expectConstantRate(o: Outcome, rate: string, fps: number, numbered = true): Promise<void> {
    const src = await inspect(o.source);
    const want = Math.ceil((src.video.durationSec - 0.001) * fps);
    const srcPts = await videoPts(o.source);
    const manifest = o.archive.manifest as unknown as { source: { timestamps: string; outputFrameRate: string; outputFrames: number } };
    expect(manifest.source.timestamps).toBe('constant');
    expect(manifest.source.outputFrameRate).toBe(rate);
    expect(Number(manifest.source.outputFrames)).toBe(want);
    for (const [name, file] of o.files) {
      const out = await inspect(file);
      expect(out.video.frames, `${name} frames`).toBe(want);
      // Every frame step is one grid step (no join adds or loses time).
      const pts = await videoPts(file);
      const steps = pts.slice(1).map((p, i) => p - pts[i]!);
      expect(Math.max(...steps.map((s) => Math.abs(s - 1 / fps))), `${name} frame steps`).toBeLessThan(0.0006);
      // No time dropped: the source's duration, to one output frame.
      expect(Math.abs(out.video.durationSec - src.video.durationSec), `${name} duration`).toBeLessThanOrEqual(1 / fps + 0.002);
      const a = out.audio[0]!;
      const s = src.audio[0]!;
      expect(Math.abs(a.endSec - out.video.endSec - (s.endSec - src.video.endSec)), `${name} audio end vs video end`).toBeLessThanOrEqual(1 / fps + 0.03);
      // Each frame is the source frame shown at its grid time: the latest that starts no later.
      const shows = numbered ? await rampIndices(file) : [];
      const wrong = shows
        .map((got, k) => {
          let j = 0;
          while (j + 1 < srcPts.length && srcPts[j + 1]! <= k / fps + 0.001) j++;
          return got === j % RAMP_PERIOD ? -1 : k;
        })
        .filter((k) => k >= 0);
      expect(wrong, `${name} frames showing another source frame than at their grid time`).toEqual([]);
      expect(o.archive.manifest.renditions.find((r) => r.name === name)!.frames).toBe(want);
    }
  }

  it('variable frame rate with frame_rate 30: one frame per 1/30 s, each the frame shown then, no time dropped', async () => {
    await expectConstantRate(await outcome('vfr-30'), '30/1', 30);
  });

  it("variable frame rate with frame_rate auto: 30 fps chosen (the 24-then-30 clip's fastest part)", async () => {
    await expectConstantRate(await outcome('vfr-auto'), '30/1', 30);
  });

  it('edit list with frame_rate 30: only the presented part, on the grid, audio in sync', async () => {
    const o = await outcome('edit-list-30');
    await expectConstantRate(o, '30/1', 30, false);
    // 10.63 s presented (318 source frames, the first shown from 1.37 s): 319 grid points, not the 360 stored.
    expect(Number((o.archive.manifest.source as unknown as { outputFrames: number }).outputFrames)).toBe(319);
  });

  it('60 fps to frame_rate 30: every other frame, on the grid despite millisecond cut timestamps', async () => {
    await expectConstantRate(await outcome('fps60-to-30'), '30/1', 30);
  });

  it('interlaced 576i: deinterlaced with bwdif, no field structure left, frame rate kept', async () => {
    const o = await outcome('interlaced');
    const before = await idet(o.source);
    expect(before.tff).toBeGreaterThan(before.progressive);
    for (const [name, file] of o.files) {
      const out = await inspect(file);
      expect(out.video.fieldOrder, name).toBe('progressive');
      const d = await idet(file);
      // 5 % of idet's noise, plus one per chunk: a chunk's first frame has no previous field for
      // bwdif to use, and where the cluster's measured speeds put the chunk starts varies by run.
      const chunks = o.job.segments.reduce((a, sg) => a + Math.max(1, sg.subSegments), 0);
      expect(d.tff + d.bff, `${name} interlaced frames left (${chunks} chunks)`).toBeLessThanOrEqual(Math.ceil(0.05 * out.video.frames) + chunks);
    }
    await expectFaithful(o);
  });

  it('HDR10: SDR rungs tone-mapped and tagged BT.709 8-bit, an HDR rung stays PQ 10-bit with its metadata', async () => {
    const o = await outcome('hdr10');
    const sdr = await inspect(o.files.get('360p')!);
    expect(sdr.video.pixFmt).toBe('yuv420p');
    expect(sdr.video.transfer).toBe('bt709');
    expect(sdr.video.primaries).toBe('bt709');
    expect(sdr.video.matrix).toBe('bt709');
    const hdr = await inspect(o.files.get('360p-hdr')!);
    expect(hdr.video.codec).toBe('hevc');
    expect(hdr.video.pixFmt).toBe('yuv420p10le');
    expect(hdr.video.transfer).toBe('smpte2084');
    expect(hdr.video.primaries).toBe('bt2020');
    expect(await hasMasteringDisplay(o.files.get('360p-hdr')!)).toBe(true);
    await expectFaithful(o);
  });

  it('two audio tracks (Matroska with titles): both kept in the MP4s, with their languages and titles', async () => {
    const o = await outcome('two-audio');
    for (const file of o.files.values()) {
      const out = await inspect(file);
      expect(out.audio.map((a) => a.language)).toEqual(['eng', 'fra']);
      expect(out.audio.map((a) => a.title)).toEqual(['English', 'Français']);
    }
    await expectFaithful(o);
  });

  it('interlaced with deinterlace=field: one progressive frame per field (25i → 50p)', async () => {
    const o = await outcome('interlaced-field');
    const out = await inspect([...o.files.values()][0]!);
    expect(out.video.fieldOrder).toBe('progressive');
    await expectFaithful(o, { frameFactor: 2 });
  });

  it('HLG: the SDR rung is tone-mapped to BT.709, the HDR rung keeps HLG in 10 bits', async () => {
    const o = await outcome('hlg');
    const sdr = await inspect(o.files.get('240p')!);
    expect([sdr.video.pixFmt, sdr.video.transfer, sdr.video.primaries]).toEqual(['yuv420p', 'bt709', 'bt709']);
    const hdr = await inspect(o.files.get('240p-hdr')!);
    expect([hdr.video.codec, hdr.video.pixFmt, hdr.video.transfer, hdr.video.primaries]).toEqual(['hevc', 'yuv420p10le', 'arib-std-b67', 'bt2020']);
    await expectFaithful(o);
  });

  it('audio_tracks picks tracks: only the French one', async () => {
    const o = await outcome('two-audio-pick');
    const out = await inspect([...o.files.values()][0]!);
    expect(out.audio.map((a) => a.language)).toEqual(['fra']);
    await expectFaithful(o, { audioFrom: [1] });
  });

  it('stereo_downmix adds a stereo track beside the 5.1 one', async () => {
    const o = await outcome('surround-downmix');
    const out = await inspect([...o.files.values()][0]!);
    expect(out.audio.map((a) => a.channels)).toEqual([6, 2]);
    await expectFaithful(o, { audioFrom: [0, 0] });
  });

  it('refuses what it cannot keep faithfully, naming the property', async () => {
    for (const [id, code] of [
      ['mirrored', 'UNSUPPORTED_ROTATION'],
      ['hdr-rung-on-sdr', 'UNSUPPORTED_DYNAMIC_RANGE'],
    ] as const) {
      const { job } = await outcome(id);
      expect(job.state, id).toBe(JobState.JOB_STATE_FAILED);
      expect(job.errorCode, id).toBe(code);
      expect(job.errorMessage.length).toBeGreaterThan(10);
    }
    const src = (await outcome('no-audio')).source;
    for (const frameRate of ['fast', '0', '1000', '30/0', '24.5']) await expect(t.client.submit({ inputUri: src, frameRate }), frameRate).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(t.client.submit({ inputUri: src, deinterlace: 'yadif' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(t.client.submit({ inputUri: src, ladder: [rung(240, { dynamicRange: 'hdr' })] })).rejects.toMatchObject({ code: 'UNSUPPORTED_CODEC' });
  });

  it('5.1 audio keeps six channels; SDR output is tagged BT.709', async () => {
    const o = await outcome('surround');
    const out = await inspect([...o.files.values()][0]!);
    expect(out.audio[0]!.channels).toBe(6);
    expect(out.video.transfer).toBe('bt709');
    await expectFaithful(o);
  });

  for (const kind of ['no-audio', 'late-audio', 'mpegts', 'prores-pcm', 'fps60', 'half-second'] as const) {
    it(`${kind}: frame-exact, same duration, audio where the source has it`, async () => {
      await expectFaithful(await outcome(kind));
    });
  }
});
