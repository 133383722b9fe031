import { createReadStream } from 'node:fs';
import { readdir, readFile, rm, mkdir, stat, writeFile } from 'node:fs/promises';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { join } from 'node:path';
import { AppError } from '../common/errors.js';
import { fileDigest, readBufferFor } from '../common/chunks.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { s3Send } from '../common/s3-client.js';

/** A streaming format the uploader packages. */
export type StreamFormat = 'hls' | 'dash';

/** One file of the streaming output, as it goes to S3. */
export interface StreamFile {
  name: string;
  path: string;
  bytes: number;
  sha256: string;
  contentType: string;
  cacheControl: string;
}

/** One representation (a rendition, or an audio track) and its measured segments. */
export interface StreamRepresentation {
  id: number;
  kind: 'video' | 'audio';
  name: string;
  codecs: string;
  width: number;
  height: number;
  frameRate: string;
  init: string;
  segments: { file: string; startSec: number; durationSec: number; bytes: number }[];
  /** Bits per second: the highest over its segments, and over its whole length. */
  peakBps: number;
  averageBps: number;
}

export interface StreamingFacts {
  formats: StreamFormat[];
  /** Names (relative to the stream folder) of the HLS multivariant playlist and the DASH MPD; '' when not made. */
  hls: string;
  dash: string;
  /** The poster and the WebVTT thumbnail track (names in the stream folder). */
  poster: string;
  thumbnails: string;
  targetDurationSec: number;
  representations: StreamRepresentation[];
  files: StreamFile[];
}

export interface PackageInput {
  /** The merged renditions, video first in ladder order; every one carries the same audio tracks. */
  renditions: { name: string; path: string; width: number; height: number }[];
  audio: { language: string; title: string; channels: number }[];
  formats: StreamFormat[];
  /** Target segment length (s): segments are cut at the first shared keyframe at or after it. */
  segmentSec: number;
  /** The renditions' frame rate ("30/1", "29.97"), for FRAME-RATE when the MPD does not say. */
  frameRate?: string;
  /** Seconds between seek-preview thumbnails (default 5). */
  thumbnailSec?: number;
  outDir: string;
  signal?: AbortSignal;
}

const PLAYLIST_CACHE = 'public, max-age=60';
const SEGMENT_CACHE = 'public, max-age=31536000, immutable';

/** Content type and cache policy of a streaming file by its name. Pure. */
export function streamFileHeaders(name: string): { contentType: string; cacheControl: string } {
  if (name.endsWith('.m3u8')) return { contentType: 'application/vnd.apple.mpegurl', cacheControl: PLAYLIST_CACHE };
  if (name.endsWith('.mpd')) return { contentType: 'application/dash+xml', cacheControl: PLAYLIST_CACHE };
  if (name.startsWith('init-')) return { contentType: 'video/mp4', cacheControl: SEGMENT_CACHE };
  if (name.endsWith('.m4s')) return { contentType: 'video/iso.segment', cacheControl: SEGMENT_CACHE };
  if (name.endsWith('.jpg')) return { contentType: 'image/jpeg', cacheControl: SEGMENT_CACHE };
  if (name.endsWith('.vtt')) return { contentType: 'text/vtt', cacheControl: PLAYLIST_CACHE };
  return { contentType: 'application/octet-stream', cacheControl: PLAYLIST_CACHE };
}

interface MpdRepresentation {
  id: number;
  codecs: string;
  width: number;
  height: number;
  frameRate: string;
  timescale: number;
  timeline: { t: number; d: number }[];
}

/** The representations of an MPD that ffmpeg's dash muxer wrote (SegmentTemplate + SegmentTimeline). Pure. */
export function parseMpd(xml: string): MpdRepresentation[] {
  const out: MpdRepresentation[] = [];
  const attr = (tag: string, name: string): string | undefined => new RegExp(`\\b${name}="([^"]*)"`).exec(tag)?.[1];
  for (const m of xml.matchAll(/<Representation\b([^>]*)>([\s\S]*?)<\/Representation>/g)) {
    const head = m[1]!;
    const body = m[2]!;
    const tmpl = /<SegmentTemplate\b([^>]*)>/.exec(body)?.[1] ?? '';
    const timescale = Number(attr(tmpl, 'timescale') ?? 1);
    const timeline: { t: number; d: number }[] = [];
    let t = 0;
    for (const s of body.matchAll(/<S\b([^/]*)\/>/g)) {
      const st = attr(s[1]!, 't');
      if (st !== undefined) t = Number(st);
      const d = Number(attr(s[1]!, 'd'));
      const r = Number(attr(s[1]!, 'r') ?? 0);
      for (let i = 0; i <= r; i++) {
        timeline.push({ t, d });
        t += d;
      }
    }
    out.push({
      id: Number(attr(head, 'id')),
      codecs: attr(head, 'codecs') ?? '',
      width: Number(attr(head, 'width') ?? 0),
      height: Number(attr(head, 'height') ?? 0),
      frameRate: attr(head, 'frameRate') ?? '',
      timescale,
      timeline,
    });
  }
  return out;
}

function fmtRate(r: string): string {
  const [n, d] = r.split('/').map(Number);
  const v = d ? n! / d : Number(r);
  return Number.isFinite(v) && v > 0 ? v.toFixed(3) : '';
}

/** An HLS media playlist over one representation's CMAF segments. Pure. */
export function mediaPlaylist(rep: Pick<StreamRepresentation, 'init' | 'segments'>, targetDurationSec: number): string {
  const lines = ['#EXTM3U', '#EXT-X-VERSION:7', `#EXT-X-TARGETDURATION:${targetDurationSec}`, '#EXT-X-PLAYLIST-TYPE:VOD', '#EXT-X-INDEPENDENT-SEGMENTS', `#EXT-X-MAP:URI="${rep.init}"`];
  for (const s of rep.segments) lines.push(`#EXTINF:${s.durationSec.toFixed(6)},`, s.file);
  lines.push('#EXT-X-ENDLIST', '');
  return lines.join('\n');
}

const quoted = (s: string): string => s.replace(/["\n\r]/g, '');

/** The HLS multivariant playlist: one variant per rendition, the audio tracks as one group. Pure. */
export function multivariantPlaylist(
  video: StreamRepresentation[],
  audio: (StreamRepresentation & { language: string; title: string; channels: number })[],
  uri: (r: StreamRepresentation) => string,
): string {
  const lines = ['#EXTM3U', '#EXT-X-VERSION:7', '#EXT-X-INDEPENDENT-SEGMENTS'];
  audio.forEach((a, i) => {
    const lang = a.language && a.language !== 'und' ? `,LANGUAGE="${quoted(a.language)}"` : '';
    const name = quoted(a.title || a.language || `audio ${i + 1}`);
    lines.push(`#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="${name}"${lang},DEFAULT=${i === 0 ? 'YES' : 'NO'},AUTOSELECT=YES${a.channels ? `,CHANNELS="${a.channels}"` : ''},URI="${uri(a)}"`);
  });
  // A variant's bandwidth counts its video and the costliest audio track it may play with.
  const audioPeak = Math.max(0, ...audio.map((a) => a.peakBps));
  const audioAvg = Math.max(0, ...audio.map((a) => a.averageBps));
  const audioCodecs = [...new Set(audio.map((a) => a.codecs).filter(Boolean))];
  for (const v of video) {
    const codecs = [v.codecs, ...audioCodecs].filter(Boolean).join(',');
    const rate = fmtRate(v.frameRate);
    lines.push(
      `#EXT-X-STREAM-INF:BANDWIDTH=${Math.ceil(v.peakBps + audioPeak)},AVERAGE-BANDWIDTH=${Math.ceil(v.averageBps + audioAvg)},CODECS="${codecs}",RESOLUTION=${v.width}x${v.height}${rate ? `,FRAME-RATE=${rate}` : ''}${audio.length ? ',AUDIO="audio"' : ''}`,
      uri(v),
    );
  }
  lines.push('');
  return lines.join('\n');
}

/**
 * Packages the merged renditions for adaptive streaming, by stream copy: ffmpeg's DASH muxer cuts
 * every rendition and audio track into CMAF (fragmented MP4) segments at the renditions' shared
 * keyframes and writes the MPD; the HLS playlists are written over the same segments, with
 * `BANDWIDTH` (peak) and `AVERAGE-BANDWIDTH` measured from the segments' real sizes, and an
 * honest `#EXT-X-TARGETDURATION`. Every rendition has its IDR frames at the same times (the parts
 * were cut and encoded together), so their segments line up.
 */
export async function packageStreams(o: PackageInput): Promise<StreamingFacts> {
  if (o.formats.length === 0) throw new AppError('INTERNAL', 'no streaming format to package');
  if (!(o.segmentSec >= 1 && o.segmentSec <= 30)) throw new AppError('INVALID_ARGUMENT', `segment length ${o.segmentSec} s is not valid (1-30)`);
  await rm(o.outDir, { recursive: true, force: true });
  await mkdir(o.outDir, { recursive: true });
  const first = o.renditions[0];
  if (!first) throw new AppError('INTERNAL', 'no rendition to package');
  const args = ['-hide_banner', '-nostdin', '-y', '-loglevel', 'error'];
  for (const r of o.renditions) args.push('-i', `file:${r.path}`);
  o.renditions.forEach((_, i) => args.push('-map', `${i}:v:0`));
  o.audio.forEach((_, k) => args.push('-map', `0:a:${k}`));
  const nv = o.renditions.length;
  const sets = [`id=0,streams=${o.renditions.map((_, i) => i).join(',')}`, ...o.audio.map((_, k) => `id=${k + 1},streams=${nv + k}`)];
  args.push(
    '-c',
    'copy',
    '-map_metadata',
    '-1',
    // A segment ends at the first keyframe at least this long after it began: a hair under the
    // grid period, since the merged renditions' keyframes sit within a millisecond of the grid
    // points (their parts' timestamps are the cut files' milliseconds).
    '-f',
    'dash',
    '-seg_duration',
    (o.segmentSec - 0.005).toFixed(3),
    '-use_template',
    '1',
    '-use_timeline',
    '1',
    '-adaptation_sets',
    sets.join(' '),
    '-init_seg_name',
    'init-$RepresentationID$.m4s',
    '-media_seg_name',
    'seg-$RepresentationID$-$Number%05d$.m4s',
    `file:${join(o.outDir, 'manifest.mpd')}`,
  );
  await runFfmpeg(args, { noProgressMs: 120_000, ...(o.signal ? { signal: o.signal } : {}) });

  const mpd = parseMpd(await readFile(join(o.outDir, 'manifest.mpd'), 'utf8'));
  const names = await readdir(o.outDir);
  const reps: StreamRepresentation[] = [];
  for (const m of mpd) {
    const video = m.id < nv;
    const segFiles = names.filter((n) => n.startsWith(`seg-${m.id}-`) && n.endsWith('.m4s')).sort();
    if (segFiles.length !== m.timeline.length) throw new AppError('INTERNAL', `representation ${m.id}: ${segFiles.length} segment files, the MPD lists ${m.timeline.length}`);
    const segments = await Promise.all(
      segFiles.map(async (file, i) => ({
        file,
        startSec: m.timeline[i]!.t / m.timescale,
        durationSec: m.timeline[i]!.d / m.timescale,
        bytes: (await stat(join(o.outDir, file))).size,
      })),
    );
    const total = segments.reduce((a, s) => a + s.durationSec, 0);
    const bytes = segments.reduce((a, s) => a + s.bytes, 0);
    reps.push({
      id: m.id,
      kind: video ? 'video' : 'audio',
      name: video ? o.renditions[m.id]!.name : `audio-${m.id - nv}`,
      codecs: m.codecs,
      width: m.width,
      height: m.height,
      frameRate: m.frameRate || (video ? (o.frameRate ?? '') : ''),
      init: `init-${m.id}.m4s`,
      segments,
      peakBps: Math.max(0, ...segments.map((s) => (s.durationSec > 0 ? (s.bytes * 8) / s.durationSec : 0))),
      averageBps: total > 0 ? (bytes * 8) / total : 0,
    });
  }
  // HLS: the target duration is at least every segment's duration rounded to the nearest second.
  const targetDurationSec = Math.max(1, ...reps.flatMap((r) => r.segments.map((s) => Math.round(s.durationSec))));
  const made: string[] = [];
  let hls = '';
  if (o.formats.includes('hls')) {
    const playlistOf = (r: StreamRepresentation): string => (r.kind === 'video' ? `video-${r.name}.m3u8` : `${r.name}.m3u8`);
    for (const r of reps) {
      await writeFile(join(o.outDir, playlistOf(r)), mediaPlaylist(r, targetDurationSec));
      made.push(playlistOf(r));
    }
    const audio = reps.filter((r) => r.kind === 'audio').map((r) => ({ ...r, ...o.audio[r.id - nv]! }));
    await writeFile(
      join(o.outDir, 'master.m3u8'),
      multivariantPlaylist(
        reps.filter((r) => r.kind === 'video'),
        audio,
        playlistOf,
      ),
    );
    made.push('master.m3u8');
    hls = 'master.m3u8';
  }
  // A poster and seek previews, decoded from the renditions (small pictures: cheap next to an encode).
  const thumbs = await makeThumbnails(o.renditions, o.outDir, o.thumbnailSec ?? 5, o.signal);
  made.push(...thumbs.files);
  const dash = o.formats.includes('dash') ? 'manifest.mpd' : '';
  if (!dash) await rm(join(o.outDir, 'manifest.mpd'), { force: true });
  const keep = [...reps.flatMap((r) => [r.init, ...r.segments.map((s) => s.file)]), ...made, ...(dash ? [dash] : [])];
  const files = await Promise.all(
    keep.map(async (name) => {
      const path = join(o.outDir, name);
      const d = await fileDigest(path);
      return { name, path, bytes: d.bytes, sha256: d.hex, ...streamFileHeaders(name) };
    }),
  );
  return { formats: o.formats, hls, dash, poster: thumbs.poster, thumbnails: thumbs.vtt, targetDurationSec, representations: reps, files };
}

const THUMB_WIDTH = 160;
const SHEET_COLUMNS = 10;
const SHEET_ROWS = 10;

function vttTime(sec: number): string {
  const ms = Math.round(sec * 1000);
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  return `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${s.toFixed(3).padStart(6, '0')}`;
}

/** A WebVTT thumbnail track: cue k covers [k × every, next) and shows its tile of its sheet. Pure. */
export function thumbnailTrack(count: number, everySec: number, durationSec: number, tile: { w: number; h: number }, sheetName: (i: number) => string): string {
  const lines = ['WEBVTT', ''];
  const perSheet = SHEET_COLUMNS * SHEET_ROWS;
  for (let k = 0; k < count; k++) {
    const start = k * everySec;
    const end = k + 1 < count ? (k + 1) * everySec : Math.max(durationSec, start + 0.001);
    const inSheet = k % perSheet;
    const x = (inSheet % SHEET_COLUMNS) * tile.w;
    const y = Math.floor(inSheet / SHEET_COLUMNS) * tile.h;
    lines.push(`${vttTime(start)} --> ${vttTime(end)}`, `${sheetName(Math.floor(k / perSheet))}#xywh=${x},${y},${tile.w},${tile.h}`, '');
  }
  return lines.join('\n');
}

/**
 * The poster (the largest rendition's frame at 10 % of the duration) and seek previews: a
 * thumbnail of the smallest rendition every `everySec`, tiled 10 × 10 into JPEG sheets, with a
 * WebVTT track pointing into them.
 */
async function makeThumbnails(renditions: PackageInput['renditions'], outDir: string, everySec: number, signal?: AbortSignal): Promise<{ poster: string; vtt: string; files: string[] }> {
  const largest = [...renditions].sort((a, b) => b.width * b.height - a.width * a.height)[0]!;
  const smallest = [...renditions].sort((a, b) => a.width * a.height - b.width * b.height)[0]!;
  const run = (args: string[]): Promise<unknown> => runFfmpeg(['-hide_banner', '-nostdin', '-y', '-loglevel', 'error', ...args], { noProgressMs: 120_000, ...(signal ? { signal } : {}) });
  const { stdout } = await runFfmpeg(['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', `file:${smallest.path}`], {
    binary: 'ffprobe',
    noProgressMs: 60_000,
    ...(signal ? { signal } : {}),
  });
  const duration = Number(stdout.trim()) || 0;
  await run(['-ss', (duration * 0.1).toFixed(3), '-i', `file:${largest.path}`, '-map', '0:v:0', '-frames:v', '1', '-q:v', '3', `file:${join(outDir, 'poster.jpg')}`]);
  const h = Math.max(2, Math.round((THUMB_WIDTH * smallest.height) / smallest.width / 2) * 2);
  const tmp = join(outDir, 'thumbs.tmp');
  await mkdir(tmp, { recursive: true });
  // One thumbnail at the first frame at or after every k × everySec, then tiled into sheets.
  await run([
    '-i',
    `file:${smallest.path}`,
    '-map',
    '0:v:0',
    '-vf',
    `select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,${(everySec - 0.001).toFixed(3)})',scale=${THUMB_WIDTH}:${h}`,
    '-fps_mode',
    'passthrough',
    '-q:v',
    '5',
    `file:${join(tmp, 't-%05d.jpg')}`,
  ]);
  const count = (await readdir(tmp)).filter((n) => n.endsWith('.jpg')).length;
  await run(['-framerate', '1', '-i', `file:${join(tmp, 't-%05d.jpg')}`, '-vf', `tile=${SHEET_COLUMNS}x${SHEET_ROWS}`, '-q:v', '5', `file:${join(outDir, 'thumbs-%03d.jpg')}`]);
  await rm(tmp, { recursive: true, force: true });
  const sheetName = (i: number): string => `thumbs-${String(i + 1).padStart(3, '0')}.jpg`;
  await writeFile(join(outDir, 'thumbs.vtt'), thumbnailTrack(count, everySec, duration, { w: THUMB_WIDTH, h }, sheetName));
  const sheets = Math.ceil(count / (SHEET_COLUMNS * SHEET_ROWS));
  return { poster: 'poster.jpg', vtt: 'thumbs.vtt', files: ['poster.jpg', 'thumbs.vtt', ...Array.from({ length: sheets }, (_, i) => sheetName(i))] };
}

/** What manifest.json says of the streaming output: the manifests, the target duration, and every file with its SHA-256. Pure. */
export function streamingManifest(f: StreamingFacts): {
  hls: string;
  dash: string;
  poster: string;
  thumbnails: string;
  targetDurationSec: number;
  files: { name: string; bytes: number; sha256: string }[];
} {
  return {
    hls: f.hls,
    dash: f.dash,
    poster: f.poster,
    thumbnails: f.thumbnails,
    targetDurationSec: f.targetDurationSec,
    files: f.files.map((x) => ({ name: x.name, bytes: x.bytes, sha256: x.sha256 })),
  };
}

/** Puts every streaming file under `prefix`, four at a time, with its content type and cache policy. */
export async function putStreamFiles(s3: S3Client, bucket: string, prefix: string, files: readonly StreamFile[], signal?: AbortSignal): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const f = files[next++]!;
      // The file is opened again for every attempt.
      await s3Send(
        'PutObject',
        (opts) =>
          s3.send(
            new PutObjectCommand({
              Bucket: bucket,
              Key: `${prefix}${f.name}`,
              Body: createReadStream(f.path, { highWaterMark: readBufferFor(f.bytes) }),
              ContentLength: f.bytes,
              ContentType: f.contentType,
              CacheControl: f.cacheControl,
            }),
            opts,
          ),
        { signal },
      );
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}
