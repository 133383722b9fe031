import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { Etcd3 } from 'etcd3';
import { releaseLeftovers } from '../coordinator/run/job-leftovers.js';
import type { JobRecord } from '../coordinator/state/job-model.js';
import { Keys } from '../common/keys.js';
import { createLogger } from '../common/logger.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { parseMpd } from '../uploader/streaming.js';
import { checkArchive, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';

// Streaming-ready output (HLS and DASH from the same CMAF segments), checked without a browser:
// on a 3-node cluster (2 worker slots each) from a source whose own keyframes are irregular.

interface Packet {
  pts: number;
  key: boolean;
  size: number;
}

async function packets(path: string): Promise<Packet[]> {
  const { stdout } = await runFfmpeg(['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,flags,size', '-of', 'csv=p=0', `file:${path}`], {
    binary: 'ffprobe',
    noProgressMs: 60_000,
  });
  return stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [pts, size, flags] = l.split(',');
      return { pts: Number(pts), size: Number(size), key: (flags ?? '').includes('K') };
    })
    .sort((a, b) => a.pts - b.pts);
}

describe('HLS and DASH from one split-and-merge', () => {
  let t: TestCluster;
  let work: string;
  let source: string;
  let job: Job;
  const files = new Map<string, Buffer>();

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 3, slots: 2, env: { MIN_SEGMENT_SEC: '1', MIN_SUB_SEGMENT_SEC: '0.5' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-stream-'));
    source = join(t.inputDir, 'irregular-keys.mp4');
    await runFfmpeg(
      [
        '-hide_banner',
        '-nostdin',
        '-y',
        '-loglevel',
        'error',
        '-f',
        'lavfi',
        '-i',
        'testsrc2=size=640x360:rate=30:duration=16',
        '-f',
        'lavfi',
        '-i',
        'sine=frequency=440:sample_rate=48000:duration=16',
        '-c:v',
        'libx264',
        '-preset',
        'ultrafast',
        '-bf',
        '2',
        '-g',
        '300',
        '-x264-params',
        'scenecut=0',
        '-force_key_frames',
        '0,3.1,4.7,11.3',
        '-c:a',
        'aac',
        '-shortest',
        source,
      ],
      { noProgressMs: 120_000 },
    );
    const ladder = [360, 240].map((height) => ({ name: '', height, videoBitrateKbps: height * 2, codec: 'h264', preset: 'ultrafast', dynamicRange: '' }));
    const { jobId } = await t.client.submit({ inputUri: source, ladder, package: 'zip,hls,dash' });
    job = await t.client.wait(jobId);
    if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`${job.state} ${job.errorCode} ${job.errorMessage}`);
    const st = job.result!.streaming!;
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(st.prefixUri)!;
    const list = await t.s3.send(new ListObjectsV2Command({ Bucket: m[1], Prefix: m[2] }));
    for (const o of list.Contents ?? []) {
      const got = await t.s3.send(new GetObjectCommand({ Bucket: m[1], Key: o.Key! }));
      const name = o.Key!.slice(m[2]!.length);
      files.set(name, Buffer.from(await got.Body!.transformToByteArray()));
      await writeFile(join(work, name), files.get(name)!);
    }
  }, 300_000);
  afterAll(async () => {
    await t?.close();
    if (work && !process.env.KEEP_TEST_DIRS) await rm(work, { recursive: true, force: true });
  });

  const text = (name: string): string => files.get(name)!.toString('utf8');
  /** A media playlist's init and segments, with their EXTINF durations. */
  const media = (name: string): { target: number; init: string; segs: { file: string; dur: number }[] } => {
    const lines = text(name).split('\n');
    const segs: { file: string; dur: number }[] = [];
    lines.forEach((l, i) => {
      if (l.startsWith('#EXTINF:')) segs.push({ dur: Number(l.slice(8).replace(/,.*$/, '')), file: lines[i + 1]! });
    });
    return { target: Number(/#EXT-X-TARGETDURATION:(\d+)/.exec(text(name))![1]), init: /#EXT-X-MAP:URI="([^"]+)"/.exec(text(name))![1]!, segs };
  };
  /** One rendition's CMAF stream (init + every segment) as a file ffprobe reads. */
  const joined = async (name: string): Promise<string> => {
    const p = media(name);
    const path = join(work, `joined-${name}.mp4`);
    await writeFile(path, Buffer.concat([files.get(p.init)!, ...p.segs.map((s) => files.get(s.file)!)]));
    return path;
  };

  it('the job record names the playlists; manifest.json lists every file with its SHA-256', async () => {
    const st = job.result!.streaming!;
    expect(st.hlsUri).toMatch(/\/stream\/master\.m3u8$/);
    expect(st.dashUri).toMatch(/\/stream\/manifest\.mpd$/);
    expect(st.files).toBe(files.size);
    const archive = await checkArchive(t.s3, job, work);
    const listed = (archive.manifest as unknown as { streaming: { files: { name: string; sha256: string; bytes: number }[] } }).streaming.files;
    expect(listed.map((f) => f.name).sort()).toEqual([...files.keys()].sort());
    for (const f of listed) expect(createHash('sha256').update(files.get(f.name)!).digest('hex'), f.name).toBe(f.sha256);
    // The zip still holds the progressive MP4s and the manifest, as without packaging.
    expect(archive.entries).toEqual(['240p.mp4', '360p.mp4', 'manifest.json']);
  });

  it('S3 serves each kind with its content type and cache policy', async () => {
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(job.result!.streaming!.prefixUri)!;
    const head = (name: string) => t.s3.send(new HeadObjectCommand({ Bucket: m[1], Key: `${m[2]}${name}` }));
    const seg = [...files.keys()].find((n) => n.startsWith('seg-'))!;
    const want: [string, string, RegExp][] = [
      ['master.m3u8', 'application/vnd.apple.mpegurl', /max-age=60/],
      ['manifest.mpd', 'application/dash+xml', /max-age=60/],
      ['init-0.m4s', 'video/mp4', /immutable/],
      [seg, 'video/iso.segment', /immutable/],
    ];
    for (const [name, type, cache] of want) {
      const h = await head(name);
      expect(h.ContentType, name).toBe(type);
      expect(h.CacheControl, name).toMatch(cache);
    }
    // The URL the CLI prints to play from (the S3 endpoint, path style) serves the playlist.
    const res = await fetch(`${t.cluster.s3Endpoint}/${m[1]}/${m[2]}master.m3u8`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(text('master.m3u8'));
  });

  it('the multivariant playlist declares what the segments really need', async () => {
    const master = text('master.m3u8');
    expect(master).toContain('#EXT-X-INDEPENDENT-SEGMENTS');
    expect(master).toMatch(/#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",.*URI="audio-0\.m3u8"/);
    const variants = [...master.matchAll(/#EXT-X-STREAM-INF:([^\n]+)\n([^\n]+)/g)].map((v) => ({ attrs: v[1]!, uri: v[2]! }));
    expect(variants.map((v) => v.uri)).toEqual(['video-360p.m3u8', 'video-240p.m3u8']);
    const audio = media('audio-0.m3u8');
    const peakOf = (p: ReturnType<typeof media>): number => Math.max(...p.segs.map((s) => (files.get(s.file)!.length * 8) / s.dur));
    const audioPeak = peakOf(audio);
    for (const v of variants) {
      expect(v.attrs).toMatch(/CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"/);
      expect(v.attrs).toMatch(/RESOLUTION=\d+x\d+/);
      expect(v.attrs).toContain('FRAME-RATE=30.000');
      const bandwidth = Number(/(?:^|,)BANDWIDTH=(\d+)/.exec(v.attrs)![1]);
      const average = Number(/AVERAGE-BANDWIDTH=(\d+)/.exec(v.attrs)![1]);
      const measured = peakOf(media(v.uri)) + audioPeak;
      expect(bandwidth, v.uri).toBeGreaterThanOrEqual(Math.floor(measured));
      expect(average).toBeLessThanOrEqual(bandwidth);
    }
  });

  it('every segment starts with an IDR frame, within the target duration, and the segments add up to every source frame', async () => {
    const srcFrames = (await packets(source)).length;
    for (const name of ['video-360p.m3u8', 'video-240p.m3u8']) {
      const p = media(name);
      expect(text(name)).toContain('#EXT-X-ENDLIST');
      for (const s of p.segs) {
        expect(Math.round(s.dur), `${name} ${s.file}`).toBeLessThanOrEqual(p.target);
        const one = join(work, `one-${s.file}.mp4`);
        await writeFile(one, Buffer.concat([files.get(p.init)!, files.get(s.file)!]));
        expect((await packets(one))[0]!.key, `${name} ${s.file} starts with a keyframe`).toBe(true);
      }
      // Honest: every EXTINF, rounded to the nearest second as HLS says, is within it.
      expect(p.target).toBe(Math.max(...p.segs.map((s) => Math.round(s.dur))));
      // IDR frames on the job's 2 s grid in every chunk: every segment but the last lasts 2 s,
      // whatever the source's own keyframes and the chunk boundaries were.
      expect(p.target, name).toBe(2);
      for (const s of p.segs.slice(0, -1)) expect(Math.abs(s.dur - 2), `${name} ${s.file} lasts ${s.dur}`).toBeLessThan(0.001);
      expect((await packets(await joined(name))).length, name).toBe(srcFrames);
    }
  });

  it('keyframes sit at the same times in every rendition, and the DASH MPD describes the same segments', async () => {
    const keys = await Promise.all(['video-360p.m3u8', 'video-240p.m3u8'].map(async (n) => (await packets(await joined(n))).filter((p) => p.key).map((p) => p.pts.toFixed(4))));
    expect(keys[0]!.length).toBeGreaterThan(3);
    expect(keys[1]).toEqual(keys[0]);
    // The keyframes are exactly the 2 s grid of the 16 s source (within a millisecond: the merged
    // parts' timestamps come from the cut files' milliseconds): no segment or chunk boundary adds
    // one off the grid, whatever the source's own keyframes (0, 3.1, 4.7, 11.3 s) were.
    expect(keys[0]!.map(Number).map((k) => Math.round(k * 1000) / 1000)).toEqual([0, 2, 4, 6, 8, 10, 12, 14]);
    // And there were boundaries to place: 3 segments, more than one chunk in each.
    expect(job.segments.length).toBe(3);
    for (const sg of job.segments) expect(sg.subSegments, `segment ${sg.index}`).toBeGreaterThan(1);
    const mpd = parseMpd(text('manifest.mpd'));
    expect(mpd.map((r) => r.id)).toEqual([0, 1, 2]);
    for (const [i, name] of ['video-360p.m3u8', 'video-240p.m3u8', 'audio-0.m3u8'].entries()) expect(mpd[i]!.timeline.length, name).toBe(media(name).segs.length);
    expect(text('manifest.mpd')).toContain('type="static"');
    const local = await readFile(join(work, 'manifest.mpd'), 'utf8');
    expect(local).toBe(text('manifest.mpd'));
  });

  it('a poster and seek previews: a JPEG frame, and a WebVTT track whose cues cover the video and point into the sprite sheets', async () => {
    const st = job.result!.streaming!;
    expect(st.posterUri).toMatch(/\/stream\/poster\.jpg$/);
    expect(st.thumbnailsUri).toMatch(/\/stream\/thumbs\.vtt$/);
    const probe = async (name: string): Promise<{ width: number; height: number; codec: string }> => {
      const { stdout } = await runFfmpeg(['-v', 'error', '-show_entries', 'stream=width,height,codec_name', '-of', 'json', `file:${join(work, name)}`], { binary: 'ffprobe', noProgressMs: 30_000 });
      const s0 = (JSON.parse(stdout) as { streams: { width: number; height: number; codec_name: string }[] }).streams[0]!;
      return { width: s0.width, height: s0.height, codec: s0.codec_name };
    };
    expect(await probe('poster.jpg')).toEqual({ width: 640, height: 360, codec: 'mjpeg' });
    // Not blank: the poster's brightness has a real spread.
    const { stdout } = await runFfmpeg(['-hide_banner', '-loglevel', 'error', '-i', `file:${join(work, 'poster.jpg')}`, '-vf', 'signalstats,metadata=print:file=-', '-f', 'null', '-'], {
      noProgressMs: 30_000,
    });
    expect(Number(/YMAX=([\d.]+)/.exec(stdout)![1]) - Number(/YMIN=([\d.]+)/.exec(stdout)![1])).toBeGreaterThan(100);
    const vtt = text('thumbs.vtt');
    expect(vtt.startsWith('WEBVTT')).toBe(true);
    const cues = [...vtt.matchAll(/(\d\d):(\d\d):(\d\d\.\d{3}) --> (\d\d):(\d\d):(\d\d\.\d{3})\n(thumbs-\d{3}\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)/g)];
    const sec = (h: string, m: string, s: string): number => Number(h) * 3600 + Number(m) * 60 + Number(s);
    expect(cues.length).toBe(4); // every 5 s of 16 s
    let at = 0;
    for (const c of cues) {
      expect(sec(c[1]!, c[2]!, c[3]!)).toBeCloseTo(at, 3);
      at = sec(c[4]!, c[5]!, c[6]!);
      const sheet = await probe(c[7]!);
      expect(Number(c[8]) + Number(c[10])).toBeLessThanOrEqual(sheet.width);
      expect(Number(c[9]) + Number(c[11])).toBeLessThanOrEqual(sheet.height);
    }
    expect(at).toBeCloseTo(16, 1);
  });

  it('streaming only (package "hls"): no zip; the result is the stream\'s manifest.json, which lists every file', async () => {
    const ladder = [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast', dynamicRange: '' }];
    // With a 4 s keyframe interval (the job setting): 4 s segments, keyframes every 4 s.
    const only = await t.client.wait((await t.client.submit({ inputUri: source, ladder, package: 'hls', keyframeIntervalSec: 4 })).jobId);
    expect(only.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const r = only.result!;
    expect(r.key).toBe(`jobs/${only.id}/stream/manifest.json`);
    expect(r.streaming!.hlsUri).toMatch(/master\.m3u8$/);
    expect(r.streaming!.dashUri).toBe('');
    await expect(t.s3.send(new HeadObjectCommand({ Bucket: r.bucket, Key: `jobs/${only.id}.zip` }))).rejects.toMatchObject({ name: 'NotFound' });
    const got = Buffer.from(await (await t.s3.send(new GetObjectCommand({ Bucket: r.bucket, Key: r.key }))).Body!.transformToByteArray());
    expect(createHash('sha256').update(got).digest('hex')).toBe(r.sha256);
    const manifest = JSON.parse(got.toString('utf8')) as { renditions: { frames: number }[]; streaming: { files: { name: string }[]; dash: string } };
    expect(manifest.renditions[0]!.frames).toBe((await packets(source)).length);
    expect(manifest.streaming.dash).toBe('');
    const listed = (await t.s3.send(new ListObjectsV2Command({ Bucket: r.bucket, Prefix: `jobs/${only.id}/stream/` }))).Contents!.map((o) => o.Key!.slice(`jobs/${only.id}/stream/`.length)).sort();
    expect([...manifest.streaming.files.map((f) => f.name), 'manifest.json'].sort()).toEqual(listed);
    expect(listed).not.toContain('manifest.mpd');
    const playlist = await t.s3.send(new GetObjectCommand({ Bucket: r.bucket, Key: `jobs/${only.id}/stream/video-240p.m3u8` })).then((o) => o.Body!.transformToString());
    expect(playlist).toContain('#EXT-X-TARGETDURATION:4');
    const durations = [...playlist.matchAll(/#EXTINF:([\d.]+)/g)].map((m) => Number(m[1]));
    expect(durations.length).toBe(4);
    for (const d of durations) expect(Math.abs(d - 4)).toBeLessThan(0.001);
  });

  it('refuses a keyframe interval out of range or without streaming output', async () => {
    await expect(t.client.submit({ inputUri: source, package: 'hls', keyframeIntervalSec: 0.2 })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringContaining('between 1 and 10'),
    });
    await expect(t.client.submit({ inputUri: source, keyframeIntervalSec: 4 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('hls and/or dash') });
  });

  it('a job that did not succeed leaves no streaming files behind', async () => {
    // The files go to S3 before the record says SUCCEEDED; a failure or cancel in that window
    // left them. The leftovers clean-up (run for every job that ends) removes the stream prefix.
    const bucket = job.result!.bucket;
    const key = 'jobs/jfailedstream.zip';
    for (const name of ['master.m3u8', 'seg-0-00001.m4s', 'init-0.m4s']) await t.s3.send(new PutObjectCommand({ Bucket: bucket, Key: `jobs/jfailedstream/stream/${name}`, Body: 'x' }));
    const etcd = new Etcd3({ hosts: t.cluster.etcdEndpoints });
    try {
      const rec = { id: 'jfailedstream', state: 'FAILED', spec: { inputUri: source, package: 'hls' }, plan: { bucket, key } } as unknown as JobRecord;
      await releaseLeftovers({ etcd, keys: new Keys('/tessera/'), s3: t.s3, bucket, log: createLogger('test', 'silent') }, rec);
    } finally {
      etcd.close();
    }
    const left = await t.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'jobs/jfailedstream/' }));
    expect(left.KeyCount ?? 0).toBe(0);
    // A succeeded job's stream stays.
    const kept = await t.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `jobs/${job.id}/stream/` }));
    expect(kept.KeyCount).toBe(files.size);
  });

  it('refuses an unknown package format', async () => {
    await expect(t.client.submit({ inputUri: source, package: 'hls,smooth' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('smooth') });
  });
});
