import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mergeRenditions } from '../uploader/merge.js';
import { mp4TrackFacts } from './mp4-facts.js';
import { countFrames, streamDurations } from './probe.js';
import { makeClip, makeTempDir } from '../test/support/media-fixtures.js';

const run = promisify(execFile);
const ffmpeg = (args: string[]): Promise<unknown> => run('ffmpeg', ['-hide_banner', '-nostdin', '-loglevel', 'error', '-y', ...args]);

// The uploader reads a merged rendition's frames and length, and an audio track's length, from
// the MP4's boxes instead of starting an ffprobe each: the boxes must say exactly what ffprobe
// says, and a file of any other shape must be left to ffprobe.
describe('MP4 track facts from the boxes (checked against ffprobe)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let merged: string;
  let audio: string;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    // Three B-frame parts merged by the uploader's own merge, with an AAC track (priming edit).
    const parts = await Promise.all([0, 1, 2].map((i) => makeClip(dir, `part${i}`, { seconds: 2, gop: 30, bframes: 2, rate: '30' })));
    const src = await makeClip(dir, 'av', { seconds: 6, audio: true });
    audio = join(dir, 'audio-0.m4a');
    await ffmpeg(['-i', src, '-map', '0:a:0', '-vn', '-af', 'asetpts=PTS-STARTPTS', '-c:a', 'aac', '-b:a', '128k', '-f', 'mp4', audio]);
    merged = join(dir, 'merged.mp4');
    await mergeRenditions({ renditions: [{ parts, durations: [2, 2, 2], outPath: merged }], audio: [{ path: audio, language: 'eng', title: '' }], container: 'mp4', listDir: dir });
  }, 120_000);
  afterAll(async () => cleanup());

  it('a merged rendition: the same frames and duration as ffprobe counts', async () => {
    const facts = await mp4TrackFacts(merged, 'video');
    const probed = await countFrames(merged, { format: 'mov' });
    expect(facts).toBeDefined();
    expect(facts!.samples).toBe(180);
    expect(facts!.samples).toBe(probed.frames);
    expect(facts!.durationSec).toBeCloseTo(probed.durationSec, 9);
  });

  it("an AAC track: the length ffprobe gives (its edit skips the encoder's priming)", async () => {
    for (const file of [audio, merged]) {
      const facts = await mp4TrackFacts(file, 'audio');
      const probed = await streamDurations(file, { format: 'mov' });
      expect(facts, file).toBeDefined();
      expect(facts!.durationSec).toBeCloseTo(probed.audioSec!, 9);
      expect(facts!.durationSec).toBeLessThan(6.05);
    }
  });

  it('an edit that starts mid-GOP (a stream copy from 0.5 s): still what ffprobe says', async () => {
    const cut = join(dir, 'cut.mp4');
    await ffmpeg(['-ss', '0.5', '-i', join(dir, 'av.mp4'), '-c', 'copy', cut]);
    const facts = await mp4TrackFacts(cut, 'video');
    const probed = await countFrames(cut, { format: 'mov' });
    expect(facts).toBeDefined();
    expect(facts!.samples).toBe(probed.frames);
    expect(facts!.durationSec).toBeCloseTo(probed.durationSec, 9);
    expect(facts!.durationSec).toBeLessThan(5.6);
  });

  it('leaves other shapes to ffprobe: fragmented MP4, Matroska, no such track, not media', async () => {
    const frag = join(dir, 'frag.mp4');
    await ffmpeg(['-i', join(dir, 'part0.mp4'), '-c', 'copy', '-movflags', 'frag_keyframe+empty_moov', frag]);
    expect(await mp4TrackFacts(frag, 'video')).toBeUndefined();
    const mkv = await makeClip(dir, 'clip', { seconds: 1, ext: 'mkv' });
    expect(await mp4TrackFacts(mkv, 'video')).toBeUndefined();
    expect(await mp4TrackFacts(join(dir, 'part0.mp4'), 'audio')).toBeUndefined();
    const junk = join(dir, 'junk.mp4');
    await writeFile(junk, Buffer.from('\x00\x00\x00\x08moov\xff\xff\xff\xffmoovtrak'));
    expect(await mp4TrackFacts(junk, 'video')).toBeUndefined();
  });
});
