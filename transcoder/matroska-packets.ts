import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { PacketRow } from './keyframes.js';

/**
 * The first video track's packets of a Matroska file, read from its block headers alone: what
 * `ffprobe -show_entries packet=pts_time,duration_time,flags` lists for it, without a process and
 * without reading the pictures. The node agents plan their chunks from this: an ffprobe scan of a
 * 30 s 1080p segment cost 0.2 s of CPU, and under the start's load 0.5 s before the first encode.
 *
 * It reads the Matroska that Tessera's own cuts write (ffmpeg's muxer: clusters of SimpleBlocks or
 * BlockGroups, known sizes, no lacing) and answers undefined for anything else — an unknown-size
 * element, laced or malformed blocks, a file that ends inside an element, no video track — so the
 * caller scans the file with ffprobe instead. Times follow ffmpeg's Matroska demuxer: a block's pts
 * is its cluster's timestamp plus its own, in TimestampScale units (none when that is negative);
 * a SimpleBlock is a keyframe by its flag, a BlockGroup when it references no other block; a
 * block without BlockDuration lasts the track's DefaultDuration (whole units, as ffmpeg divides it).
 *
 * The reads are small synchronous ones (a few µs each); between clusters the walk gives the event
 * loop its turn once it has held it for YIELD_MS. A 40-minute segment of 72 000 packets takes
 * 0.22–0.36 s here, which must not stall the agent's gRPC streams and lease keep-alives in one
 * piece; with the turns, the longest stall measured was 23 ms.
 */
export async function readMatroskaPackets(path: string): Promise<PacketRow[] | undefined> {
  const fd = openSync(path, 'r');
  try {
    return await walk(new Reader(fd, fstatSync(fd).size));
  } catch (err) {
    if (err instanceof Unsupported) return undefined;
    throw err;
  } finally {
    closeSync(fd);
  }
}

class Unsupported extends Error {}

/** The longest the walk holds the event loop between two turns of it (ms). */
const YIELD_MS = 10;

const ID = {
  EBML: 0x1a45dfa3,
  Segment: 0x18538067,
  Info: 0x1549a966,
  TimestampScale: 0x2ad7b1,
  Tracks: 0x1654ae6b,
  TrackEntry: 0xae,
  TrackNumber: 0xd7,
  TrackType: 0x83,
  DefaultDuration: 0x23e383,
  CodecDelay: 0x56aa,
  TrackTimestampScale: 0x23314f,
  TrackOffset: 0x537f,
  Cluster: 0x1f43b675,
  Timestamp: 0xe7,
  SimpleBlock: 0xa3,
  BlockGroup: 0xa0,
  Block: 0xa1,
  BlockDuration: 0x9b,
  ReferenceBlock: 0xfb,
} as const;

/** Positional reads through a small window (block headers are a few bytes between large skips). */
class Reader {
  private buf = Buffer.alloc(4096);
  private start = 0;
  private len = 0;
  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  byte(pos: number): number {
    if (pos < this.start || pos >= this.start + this.len) {
      if (pos >= this.size) throw new Unsupported('past the end of the file');
      this.start = pos;
      this.len = readSync(this.fd, this.buf, 0, this.buf.length, pos);
      if (this.len <= 0) throw new Unsupported('short read');
    }
    return this.buf[pos - this.start]!;
  }

  /** An EBML variable-length integer at `pos`: its value (marker kept for IDs) and length. */
  vint(pos: number, keepMarker: boolean): { value: number; length: number; unknown: boolean } {
    const first = this.byte(pos);
    let length = 1;
    while (length <= 8 && !(first & (0x80 >> (length - 1)))) length++;
    if (length > 8) throw new Unsupported('bad EBML length');
    let value = keepMarker ? first : first & (0xff >> length);
    let allOnes = value === 0xff >> length;
    for (let i = 1; i < length; i++) {
      const b = this.byte(pos + i);
      if (b !== 0xff) allOnes = false;
      value = value * 256 + b;
    }
    if (!Number.isSafeInteger(value)) throw new Unsupported('EBML value too large');
    return { value, length, unknown: !keepMarker && allOnes };
  }

  uint(pos: number, size: number): number {
    if (size > 8) throw new Unsupported('integer too long');
    let v = 0;
    for (let i = 0; i < size; i++) v = v * 256 + this.byte(pos + i);
    if (!Number.isSafeInteger(v)) throw new Unsupported('integer too large');
    return v;
  }
}

interface Element {
  id: number;
  /** Where its payload starts and ends. */
  data: number;
  end: number;
}

/** The element at `pos` inside a parent ending at `limit`. */
function element(r: Reader, pos: number, limit: number): Element {
  const id = r.vint(pos, true);
  const size = r.vint(pos + id.length, false);
  if (size.unknown) throw new Unsupported('unknown-size element');
  const data = pos + id.length + size.length;
  const end = data + size.value;
  if (end > limit) throw new Unsupported('element past its parent');
  return { id: id.value, data, end };
}

function* children(r: Reader, parent: { data: number; end: number }): Generator<Element> {
  for (let pos = parent.data; pos < parent.end;) {
    const e = element(r, pos, parent.end);
    yield e;
    pos = e.end;
  }
}

interface Track {
  number: number;
  type: number;
  defaultDurationNs: number;
}

async function walk(r: Reader): Promise<PacketRow[] | undefined> {
  let pos = 0;
  let segment: Element | undefined;
  while (pos < r.size && !segment) {
    const e = element(r, pos, r.size);
    if (e.id === ID.Segment) segment = e;
    else if (pos === 0 && e.id !== ID.EBML) throw new Unsupported('not EBML');
    pos = e.end;
  }
  if (!segment) return undefined;
  let scaleNs = 1_000_000;
  let video: Track | undefined;
  const rows: PacketRow[] = [];
  let heldSince = performance.now();
  for (const e of children(r, segment)) {
    if (e.id === ID.Info) {
      for (const c of children(r, e)) if (c.id === ID.TimestampScale) scaleNs = r.uint(c.data, c.end - c.data);
      if (!(scaleNs > 0)) throw new Unsupported('no timestamp scale');
    } else if (e.id === ID.Tracks) {
      for (const t of children(r, e)) {
        if (t.id !== ID.TrackEntry) continue;
        const track: Track = { number: 0, type: 0, defaultDurationNs: 0 };
        for (const c of children(r, t)) {
          if (c.id === ID.TrackNumber) track.number = r.uint(c.data, c.end - c.data);
          else if (c.id === ID.TrackType) track.type = r.uint(c.data, c.end - c.data);
          else if (c.id === ID.DefaultDuration) track.defaultDurationNs = r.uint(c.data, c.end - c.data);
          // Timestamps shifted or scaled per track: left to ffprobe.
          else if (c.id === ID.CodecDelay || c.id === ID.TrackTimestampScale || c.id === ID.TrackOffset) throw new Unsupported('per-track timestamp adjustment');
        }
        if (track.type === 1 && !video) video = track;
      }
    } else if (e.id === ID.Cluster) {
      if (!video) throw new Unsupported('a cluster before the tracks');
      clusterPackets(r, e, video, scaleNs, rows);
      if (performance.now() - heldSince > YIELD_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        heldSince = performance.now();
      }
    }
  }
  if (!video) return undefined;
  return rows;
}

function clusterPackets(r: Reader, cluster: Element, video: Track, scaleNs: number, rows: PacketRow[]): void {
  let clusterTime: number | undefined;
  const tick = scaleNs / 1e9;
  // ffmpeg: a block without its own duration lasts DefaultDuration / TimestampScale (integer division).
  const defaultTicks = Math.floor(video.defaultDurationNs / scaleNs);
  const add = (block: Element, key: boolean | undefined, durationTicks: number | undefined): void => {
    const track = r.vint(block.data, false);
    if (track.value !== video.number) return;
    if (clusterTime === undefined) throw new Unsupported('a block before its cluster timestamp');
    const at = block.data + track.length;
    if (at + 3 > block.end) throw new Unsupported('short block');
    const rel = (((r.byte(at) << 8) | r.byte(at + 1)) << 16) >> 16; // signed 16-bit
    const flags = r.byte(at + 2);
    if (flags & 0x06) throw new Unsupported('laced block');
    // ffmpeg: a block before the file's time zero (a leading picture's) has no timestamp.
    const pts = clusterTime + rel;
    const ticks = durationTicks ?? defaultTicks;
    rows.push({ pts: pts >= 0 ? micros(pts * tick) : undefined, duration: ticks > 0 ? micros(ticks * tick) : undefined, key: key ?? (flags & 0x80) !== 0 });
  };
  for (const c of children(r, cluster)) {
    if (c.id === ID.Timestamp) clusterTime = r.uint(c.data, c.end - c.data);
    else if (c.id === ID.SimpleBlock) add(c, undefined, undefined);
    else if (c.id === ID.BlockGroup) {
      let block: Element | undefined;
      let duration: number | undefined;
      let references = false;
      for (const g of children(r, c)) {
        if (g.id === ID.Block) block = g;
        else if (g.id === ID.BlockDuration) duration = r.uint(g.data, g.end - g.data);
        else if (g.id === ID.ReferenceBlock) references = true;
      }
      if (block) add(block, !references, duration);
    }
  }
}

/** Seconds as ffprobe prints them (six decimals). */
function micros(sec: number): number {
  return Number(sec.toFixed(6));
}
