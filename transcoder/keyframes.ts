import { AppError } from '../common/errors.js';
import { num, runFfprobe, type ProbeOptions } from './ffprobe.js';

/** One video packet as ffprobe lists it, in decode order. */
export interface PacketRow {
  /** Presentation time in seconds (container time, not yet relative to the stream start). */
  pts: number | undefined;
  /** Packet duration in seconds when the container knows it. */
  duration: number | undefined;
  key: boolean;
  /** The container hides this packet from presentation (an edit list's lead-in; ffprobe flag D). */
  discard?: boolean;
}

/** A keyframe: its presentation time relative to the stream start (s) and its decode-order packet index. */
export interface KeyframeAt {
  timeSec: number;
  index: number;
}

/** Summary of a video stream's packets. */
export interface PacketSummary {
  /** Keyframes sorted by time (relative to `startSec`). */
  keys: KeyframeAt[];
  /** Total video packets (= stored frames, an edit list's hidden lead-in included). */
  frames: number;
  /**
   * Packets an edit list hides before the first presented frame: they are decoded (the first
   * GOP needs them) and then dropped. All of them precede the second keyframe.
   */
  leadIn: number;
  /** Earliest presentation time of a presented frame in the container (s). */
  startSec: number;
  /** From the earliest presentation time to the end of the last frame (s). */
  durationSec: number;
  /** Typical frame duration (s), median of the known ones; 0 when unknown. */
  frameSec: number;
  /** Whether frame durations vary (more than 2 % between the shortest and longest). */
  variableFrameRate: boolean;
  /** Presentation times (s from the first presented frame) of every presented frame, ascending. */
  presentedSec: number[];
}

/** ffprobe arguments that list the first video stream's packets (no decoding). */
export const PACKET_LIST_ARGS: readonly string[] = ['-select_streams', 'V:0', '-show_entries', 'packet=pts_time,duration_time,flags', '-of', 'compact=p=0:nk=0'];

/** Parses `compact=p=0:nk=0` packet lines ("pts_time=1.0|duration_time=0.04|flags=K_"). Pure. */
export function parsePacketRows(stdout: string): PacketRow[] {
  const rows: PacketRow[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.includes('flags=')) continue;
    let pts: number | undefined;
    let duration: number | undefined;
    let key = false;
    let discard = false;
    for (const field of line.trim().split('|')) {
      const eq = field.indexOf('=');
      if (eq < 0) continue;
      const k = field.slice(0, eq);
      const v = field.slice(eq + 1);
      if (k === 'pts_time') pts = num(v);
      else if (k === 'duration_time') duration = num(v);
      else if (k === 'flags') {
        key = v.startsWith('K');
        if (v.includes('D')) discard = true;
      }
    }
    rows.push({ pts, duration, key, ...(discard ? { discard } : {}) });
  }
  return rows;
}

/** Rounds seconds to whole microseconds (ffprobe's precision), dropping float noise like 1.0000000000000002. */
function toMicros(sec: number): number {
  return Math.round(sec * 1e6) / 1e6;
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

/**
 * Keyframe times, frame counts and duration from packet rows. Pure; no timestamps →
 * UNSUPPORTED_FORMAT. Times are relative to the first *presented* frame: packets an edit list
 * hides (flag D) are the lead-in, counted in `leadIn`. Hidden packets anywhere but before the
 * first presented frame and the second keyframe → UNSUPPORTED_EDIT_LIST (an edit list that cuts
 * the middle out; we would show what the player hides).
 */
export function summarizePackets(rows: readonly PacketRow[]): PacketSummary {
  if (rows.length === 0) throw new AppError('INPUT_NOT_VIDEO', 'the input video stream has no frames');
  let start = Infinity;
  for (const r of rows) if (r.pts !== undefined && !r.discard && r.pts < start) start = r.pts;
  if (!Number.isFinite(start)) throw new AppError('UNSUPPORTED_FORMAT', 'the input video has no timestamps; it cannot be cut');
  let leadIn = 0;
  let secondKey = rows.length;
  let keysSeen = 0;
  rows.forEach((r, i) => {
    if (r.key && ++keysSeen === 2 && secondKey === rows.length) secondKey = i;
  });
  rows.forEach((r, i) => {
    if (!r.discard) return;
    if (i >= secondKey || r.pts === undefined || r.pts >= start) {
      throw new AppError('UNSUPPORTED_EDIT_LIST', "the source's edit list hides frames after its start (not only a trimmed lead-in); such edits are not supported");
    }
    leadIn++;
  });
  const durations = rows.map((r) => r.duration).filter((d): d is number => d !== undefined && d > 0);
  let frameSec = median(durations);
  const pts = rows
    .filter((r) => !r.discard)
    .map((r) => r.pts)
    .filter((p): p is number => p !== undefined)
    .sort((a, b) => a - b);
  const gaps: number[] = [];
  for (let i = 1; i < pts.length; i++) {
    const g = pts[i]! - pts[i - 1]!;
    if (g > 0) gaps.push(g);
  }
  if (frameSec <= 0) frameSec = median(gaps);
  let end = start;
  const keys: KeyframeAt[] = [];
  rows.forEach((r, index) => {
    if (r.pts === undefined) return;
    const e = r.pts + (r.duration !== undefined && r.duration > 0 ? r.duration : frameSec);
    if (e > end) end = e;
    if (r.key) keys.push({ timeSec: toMicros(r.pts - start), index });
  });
  keys.sort((a, b) => a.timeSec - b.timeSec || a.index - b.index);
  return { keys, frames: rows.length, leadIn, startSec: start, durationSec: toMicros(end - start), frameSec, variableFrameRate: isVariable(gaps), presentedSec: pts.map((p) => toMicros(p - start)) };
}

/** Frame gaps (s) that differ by more than 2 % between the 5th and 95th percentile: variable frame rate. */
function isVariable(gaps: readonly number[]): boolean {
  if (gaps.length < 4) return false;
  const s = [...gaps].sort((a, b) => a - b);
  const lo = s[Math.floor(s.length * 0.05)]!;
  const hi = s[Math.min(s.length - 1, Math.floor(s.length * 0.95))]!;
  // Millisecond timestamps (Matroska) jitter by 1 ms around 1001/30000: not variable.
  return hi - lo > Math.max(0.0015, 0.02 * lo);
}

/**
 * Lists a file's first video stream packets with ffprobe (demux only, no decode) and summarizes
 * them. Shared by readKeyframes and splitVideo, which must agree on what a keyframe time is.
 */
export async function readPacketSummary(path: string, opts?: ProbeOptions): Promise<PacketSummary> {
  const { stdout } = await runFfprobe(path, PACKET_LIST_ARGS, opts);
  return summarizePackets(parsePacketRows(stdout));
}

/**
 * Keyframe presentation times of the first video stream in seconds, sorted and relative to the
 * stream start; the list always begins with 0 (the start is always a valid cut point; frames
 * before a late first keyframe cannot be cut off anyway). `frames` = total video packets,
 * `durationSec` = from the first presented frame to the end of the last one.
 */
export async function readKeyframes(path: string, opts?: ProbeOptions): Promise<{ keyframes: number[]; frames: number; durationSec: number }> {
  return keyframeTimes(await readPacketSummary(path, opts));
}

/** readKeyframes' answer from a packet summary already read (one scan serves planning and cutting). Pure. */
export function keyframeTimes(s: PacketSummary): { keyframes: number[]; frames: number; durationSec: number } {
  const keyframes = [0];
  for (const k of s.keys) {
    const last = keyframes[keyframes.length - 1]!;
    if (k.timeSec > last) keyframes.push(k.timeSec);
  }
  return { keyframes, frames: s.frames, durationSec: s.durationSec };
}
