import { realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { parseFrameRate } from '../../transcoder/frame-rate.js';
import { jobPlacement } from '../../common/placement.js';
import { AppError } from '../../common/errors.js';
import type { JobSpec } from '../../proto/gen/tessera/v1/types.js';
import { resolveLadder } from '../../transcoder/ladder.js';
import { GOP_SECONDS } from '../../transcoder/ffmpeg-args.js';

export type InputRef = { kind: 'local'; path: string; bytes: number } | { kind: 's3'; bucket: string; key: string } | { kind: 'http'; url: string };

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Classifies an input URI; anything but a plain path, file://, s3:// or http(s):// is refused. */
export function classifyInput(uri: string): InputRef {
  const u = uri.trim();
  if (u.length === 0) throw new AppError('INVALID_ARGUMENT', 'input_uri is required');
  if (u.length > 4096 || u.includes('\0')) throw new AppError('INVALID_ARGUMENT', 'input_uri is too long or has a NUL byte');
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(u)?.[1]?.toLowerCase();
  if (scheme === undefined) return { kind: 'local', path: u, bytes: 0 };
  if (scheme === 'file') {
    if (!u.startsWith('file://')) throw new AppError('INVALID_ARGUMENT', 'file URIs must look like file:///absolute/path');
    return { kind: 'local', path: decodeURIComponent(new URL(u).pathname), bytes: 0 };
  }
  if (scheme === 's3') {
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(u);
    if (!m || !BUCKET.test(m[1]!)) throw new AppError('INVALID_ARGUMENT', `not a valid s3 URI: expected s3://bucket/key`);
    return { kind: 's3', bucket: m[1]!, key: m[2]! };
  }
  if (scheme === 'http' || scheme === 'https') {
    try {
      return { kind: 'http', url: new URL(u).toString() };
    } catch {
      throw new AppError('INVALID_ARGUMENT', 'not a valid http(s) URL');
    }
  }
  throw new AppError('UNSUPPORTED_URI_SCHEME', `input scheme "${scheme}:" is not supported; use a path inside the input root, s3://bucket/key or http(s)://`);
}

/**
 * Resolves a local input inside one of the input roots (symlinks followed), checking it is a
 * non-empty file. No root (the default): local paths are refused outright. Whether a path
 * outside the roots exists is never revealed: such a path — lexically outside, or reached
 * through a symlink, whether or not its target exists — always gets the same INPUT_OUTSIDE_ROOT,
 * decided before anything about the target itself is looked at.
 */
export async function resolveLocalInput(path: string, inputRoots: readonly string[], maxBytes: number): Promise<InputRef & { kind: 'local' }> {
  if (inputRoots.length === 0) {
    throw new AppError('INPUT_OUTSIDE_ROOT', 'this cluster takes no local paths (INPUT_ROOT is not set): upload the file, or use s3:// or http(s)://');
  }
  const outside = new AppError('INPUT_OUTSIDE_ROOT', 'the input path is outside the input root');
  const roots: string[] = [];
  for (const r of inputRoots) roots.push(await realpath(resolve(r)).catch(() => resolve(r)));
  const inside = (p: string): boolean => roots.some((root) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep));
  const candidate = isAbsolute(path) ? resolve(path) : resolve(roots[0]!, path);
  if (!inside(candidate)) throw outside;
  let real: string;
  try {
    real = await realpath(candidate);
  } catch {
    // Not there (or not readable). Where would it have been? The deepest ancestor that exists
    // decides: a symlink inside the root that leads outside is "outside", target or not.
    if (!inside(await realAncestor(candidate))) throw outside;
    throw new AppError('INPUT_NOT_FOUND', `input file not found: ${path}`);
  }
  if (!inside(real)) throw outside;
  const st = await stat(real);
  if (!st.isFile()) throw new AppError('INPUT_NOT_FOUND', `input is not a regular file: ${path}`);
  if (st.size === 0) throw new AppError('INPUT_EMPTY', 'the input file is empty (0 bytes)');
  if (st.size > maxBytes) throw new AppError('LIMIT_EXCEEDED', `the input is ${st.size} bytes; the limit is ${maxBytes}`);
  return { kind: 'local', path: real, bytes: st.size };
}

/** The real path of the deepest ancestor of `p` that resolves (symlinks followed). */
async function realAncestor(p: string): Promise<string> {
  for (let dir = dirname(p); ; dir = dirname(dir)) {
    try {
      return await realpath(dir);
    } catch {
      if (dir === dirname(dir)) return dir;
    }
  }
}

export interface OutputTarget {
  bucket: string;
  prefix: string;
}

/** Parses the output URI (s3://bucket[/prefix]); empty means the cluster default. */
export function parseOutput(uri: string, defaultBucket: string, defaultPrefix: string): OutputTarget {
  if (!uri) return { bucket: defaultBucket, prefix: defaultPrefix };
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri.trim());
  if (!m || !BUCKET.test(m[1]!)) throw new AppError('INVALID_ARGUMENT', 'output_uri must look like s3://bucket/prefix');
  const prefix = m[2]!.replace(/\/+$/, '');
  if (!/^[A-Za-z0-9_./-]*$/.test(prefix) || prefix.split('/').some((p) => p === '..' || p === '.')) {
    throw new AppError('INVALID_ARGUMENT', 'output prefix may contain only letters, digits and _ . - /');
  }
  return { bucket: m[1]!, prefix };
}

export function outputKey(t: OutputTarget, jobId: string): string {
  return t.prefix ? `${t.prefix}/${jobId}.zip` : `${jobId}.zip`;
}

/**
 * Checks everything about a spec that does not need the input's bytes: URI scheme, ladder
 * (codecs, presets, bitrates, names), container, output, priority. Returns the spec with
 * defaults filled in.
 */
export function validateSpec(spec: JobSpec | undefined, encoders: ReadonlySet<string>, defaults: { bucket: string; prefix: string }): { spec: JobSpec; input: InputRef; output: OutputTarget } {
  if (!spec) throw new AppError('INVALID_ARGUMENT', 'spec is required');
  const input = classifyInput(spec.inputUri);
  const container = spec.container || 'mp4';
  if (container !== 'mp4' && container !== 'mkv') throw new AppError('UNSUPPORTED_CONTAINER', `container "${container}" is not supported; use mp4 or mkv`);
  if (spec.priority < 0 || spec.priority > 9) throw new AppError('INVALID_ARGUMENT', 'priority must be between 0 and 9');
  if (spec.audioBitrateKbps !== 0 && (spec.audioBitrateKbps < 32 || spec.audioBitrateKbps > 512)) {
    throw new AppError('INVALID_ARGUMENT', 'audio_bitrate_kbps must be between 32 and 512');
  }
  if (spec.idempotencyKey && !/^[A-Za-z0-9_.:-]{1,161}$/.test(spec.idempotencyKey)) {
    // 128 + a tenant's "<name>:" prefix
    throw new AppError('INVALID_ARGUMENT', 'idempotency_key may contain only letters, digits and _ . : - (max 128)');
  }
  if (spec.webhookUrl) {
    try {
      const u = new URL(spec.webhookUrl);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      throw new AppError('INVALID_ARGUMENT', 'webhook_url must be an http(s) URL');
    }
  }
  checkTimelineSettings(spec);
  const pkg = parsePackage(spec.package ?? '');
  const kfi = spec.keyframeIntervalSec ?? 0;
  if (kfi !== 0) {
    if (!(Number.isFinite(kfi) && kfi >= 1 && kfi <= 10)) throw new AppError('INVALID_ARGUMENT', 'keyframe_interval_sec must be between 1 and 10 seconds');
    if (pkg.streaming.length === 0) throw new AppError('INVALID_ARGUMENT', 'keyframe_interval_sec applies to streaming output: ask for package hls and/or dash');
  }
  const placement = jobPlacement(spec); // needs and labels well-formed (INVALID_ARGUMENT)
  if (placement.needs.length > 16 || Object.keys(placement.labels).length > 8) throw new AppError('INVALID_ARGUMENT', 'a job may need at most 16 capabilities and be pinned to at most 8 labels');
  // Validate the ladder against the largest source we accept (HDR, so HDR rungs pass until the
  // real source is known); the real source trims it later.
  resolveLadder(toRungs(spec), { width: 7680, height: 4320, dynamicRange: 'pq' }, encoders);
  const output = parseOutput(spec.outputUri, defaults.bucket, defaults.prefix);
  return { spec: { ...spec, container, audioBitrateKbps: spec.audioBitrateKbps || 128, ...(spec.inputName !== undefined ? { inputName: displayName(spec.inputName) } : {}) }, input, output };
}

/** An uploaded file's name as listings show it: its last path part, printable, at most 200 characters. */
export function displayName(fileName: string): string {
  const base = fileName.split(/[\\/]/).pop() ?? '';
  // eslint-disable-next-line no-control-regex -- control characters are what it removes
  return base.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, '').slice(0, 200);
}

/** Parses the outputs a job asked for ("zip" default, "hls,dash", "zip,hls"); anything else → INVALID_ARGUMENT. Pure. */
export function parsePackage(text: string): { zip: boolean; streaming: ('hls' | 'dash')[] } {
  const parts = text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const streaming: ('hls' | 'dash')[] = [];
  let zip = false;
  for (const p of parts) {
    if (p === 'zip') {
      zip = true;
      continue;
    }
    if (p !== 'hls' && p !== 'dash') throw new AppError('INVALID_ARGUMENT', `package "${p.slice(0, 16)}" is not known: use zip, hls and/or dash (e.g. "hls,dash")`);
    if (!streaming.includes(p)) streaming.push(p);
  }
  // Nothing but streaming asked for: no zip. Nothing at all: the zip (the default).
  return { zip: zip || streaming.length === 0, streaming };
}

/** The keyframe grid of a job's streaming output (s): its setting, else GOP_SECONDS; undefined without HLS/DASH. */
export function keyframePeriod(spec: Pick<JobSpec, 'package' | 'keyframeIntervalSec'>): number | undefined {
  if (parsePackage(spec.package ?? '').streaming.length === 0) return undefined;
  return spec.keyframeIntervalSec || GOP_SECONDS;
}

/** Most audio tracks a job may select (each is encoded once and muxed into every rendition). */
export const MAX_AUDIO_TRACKS = 16;

/** Checks the spec's timeline settings: frame_rate, deinterlace, audio_tracks. INVALID_ARGUMENT with what is allowed. */
export function checkTimelineSettings(spec: JobSpec): void {
  parseFrameRate(spec.frameRate ?? '');
  const di = spec.deinterlace ?? '';
  if (di !== '' && di !== 'frame' && di !== 'field')
    throw new AppError('INVALID_ARGUMENT', `deinterlace "${di.slice(0, 32)}" is not valid; use frame (keep the frame rate) or field (one frame per field)`);
  const tracks = spec.audioTracks ?? [];
  if (tracks.length > MAX_AUDIO_TRACKS) throw new AppError('INVALID_ARGUMENT', `at most ${MAX_AUDIO_TRACKS} audio tracks may be selected`);
  const seen = new Set<number>();
  for (const t of tracks) {
    if (!Number.isInteger(t) || t < 0 || t >= 64) throw new AppError('INVALID_ARGUMENT', `audio track ${String(t)} is not valid (0-based index among the source's audio tracks)`);
    if (seen.has(t)) throw new AppError('INVALID_ARGUMENT', `audio track ${t} is selected twice`);
    seen.add(t);
  }
}

/** The spec's ladder as the transcoder's rung requests (unset fields left out). */
export function toRungs(spec: JobSpec): { name?: string; height: number; videoBitrateKbps?: number; codec?: string; preset?: string; dynamicRange?: string }[] | undefined {
  if (spec.ladder.length === 0) return undefined;
  return spec.ladder.map((r) => ({
    height: r.height,
    ...(r.name ? { name: r.name } : {}),
    ...(r.videoBitrateKbps ? { videoBitrateKbps: r.videoBitrateKbps } : {}),
    ...(r.codec ? { codec: r.codec } : {}),
    ...(r.preset ? { preset: r.preset } : {}),
    ...(r.dynamicRange ? { dynamicRange: r.dynamicRange } : {}),
  }));
}
