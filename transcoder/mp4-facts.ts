import { open, type FileHandle } from 'node:fs/promises';

/**
 * What an MP4 we wrote ourselves (a merged rendition, the job's audio) says about its first video
 * or audio track, read from its boxes instead of by starting an ffprobe (0.12–0.2 s of wall and
 * about 0.2 s of CPU per start on a small VM; the uploader counted every rendition and measured
 * every audio track that way).
 *
 * `samples` is the track's sample count (stsz), `durationSec` its media duration (mdhd), which is
 * what ffprobe reports as the stream's packets and duration for such a file. Only the plain shape
 * our muxer writes is read: one track of the kind, at most one edit that plays the media at normal
 * rate to its end. Anything else (fragments, edits that cut or repeat samples, a second edit, a
 * box that does not add up) gives undefined, and the caller asks ffprobe.
 */
export interface Mp4TrackFacts {
  samples: number;
  durationSec: number;
}

export type Mp4TrackKind = 'video' | 'audio';

/** The first `kind` track's facts, or undefined when the file is not the plain shape above. */
export async function mp4TrackFacts(path: string, kind: Mp4TrackKind): Promise<Mp4TrackFacts | undefined> {
  const fh = await open(path, 'r');
  try {
    const moov = await readTopLevel(fh, 'moov');
    if (!moov) return undefined;
    const boxes = children(moov, 0, moov.length);
    // A fragmented file keeps its samples in moof boxes: not the shape we read.
    if (boxes.some((b) => b.type === 'mvex')) return undefined;
    const handler = kind === 'video' ? 'vide' : 'soun';
    const mvhd = boxes.find((b) => b.type === 'mvhd');
    if (!mvhd || mvhd.end - mvhd.start < 24) return undefined;
    const movieTimescale = moov.readUInt32BE(mvhd.start + (moov.readUInt8(mvhd.start) === 1 ? 20 : 12));
    if (!(movieTimescale > 0)) return undefined;
    for (const trak of boxes.filter((b) => b.type === 'trak')) {
      const facts = trakFacts(moov, trak, handler, movieTimescale);
      if (facts === null) continue; // another kind of track
      return facts;
    }
    return undefined;
  } finally {
    await fh.close();
  }
}

interface Box {
  type: string;
  /** Offset of the box's payload in the buffer, and its end. */
  start: number;
  end: number;
}

/** The payload of the first top-level box of `type` (moov is small: its samples live in mdat). */
async function readTopLevel(fh: FileHandle, type: string): Promise<Buffer | undefined> {
  const size = (await fh.stat()).size;
  const head = Buffer.alloc(16);
  let pos = 0;
  while (pos + 8 <= size) {
    const { bytesRead } = await fh.read(head, 0, 16, pos);
    if (bytesRead < 8) return undefined;
    let boxSize = head.readUInt32BE(0);
    const boxType = head.toString('latin1', 4, 8);
    let headerSize = 8;
    if (boxSize === 1) {
      if (bytesRead < 16) return undefined;
      boxSize = Number(head.readBigUInt64BE(8));
      headerSize = 16;
    } else if (boxSize === 0) {
      boxSize = size - pos;
    }
    if (boxSize < headerSize || pos + boxSize > size) return undefined;
    if (boxType === type) {
      // A moov of more than 64 MiB is not one of ours.
      if (boxSize - headerSize > 64 * 1024 * 1024) return undefined;
      const body = Buffer.alloc(boxSize - headerSize);
      const r = await fh.read(body, 0, body.length, pos + headerSize);
      return r.bytesRead === body.length ? body : undefined;
    }
    pos += boxSize;
  }
  return undefined;
}

/** The boxes between `start` and `end` of `buf`; stops at the first one that does not fit. */
function children(buf: Buffer, start: number, end: number): Box[] {
  const out: Box[] = [];
  let pos = start;
  while (pos + 8 <= end) {
    let size = buf.readUInt32BE(pos);
    const type = buf.toString('latin1', pos + 4, pos + 8);
    let header = 8;
    if (size === 1) {
      if (pos + 16 > end) break;
      size = Number(buf.readBigUInt64BE(pos + 8));
      header = 16;
    } else if (size === 0) {
      size = end - pos;
    }
    if (size < header || pos + size > end) break;
    out.push({ type, start: pos + header, end: pos + size });
    pos += size;
  }
  return out;
}

const child = (buf: Buffer, parent: Box, type: string): Box | undefined => children(buf, parent.start, parent.end).find((b) => b.type === type);

/** null: not a `handler` track; undefined: one, but not the plain shape. */
function trakFacts(buf: Buffer, trak: Box, handler: string, movieTimescale: number): Mp4TrackFacts | undefined | null {
  const mdia = child(buf, trak, 'mdia');
  if (!mdia) return undefined;
  const hdlr = child(buf, mdia, 'hdlr');
  // hdlr: version/flags (4), pre_defined (4), handler_type (4)
  if (!hdlr || hdlr.end - hdlr.start < 12) return undefined;
  if (buf.toString('latin1', hdlr.start + 8, hdlr.start + 12) !== handler) return null;
  const mdhd = child(buf, mdia, 'mdhd');
  if (!mdhd) return undefined;
  const version = buf.readUInt8(mdhd.start);
  let timescale: number;
  let duration: number;
  if (version === 1) {
    if (mdhd.end - mdhd.start < 32) return undefined;
    timescale = buf.readUInt32BE(mdhd.start + 20);
    duration = Number(buf.readBigUInt64BE(mdhd.start + 24));
  } else {
    if (mdhd.end - mdhd.start < 20) return undefined;
    timescale = buf.readUInt32BE(mdhd.start + 12);
    duration = buf.readUInt32BE(mdhd.start + 16);
  }
  if (!(timescale > 0) || !(duration > 0)) return undefined;
  const edit = plainEdit(buf, trak, timescale, movieTimescale, duration);
  if (edit === undefined) return undefined;
  // As ffmpeg's demuxer does: the stream lasts to the end of its edit when that comes first (an
  // AAC track's edit skips its priming samples and ends with the audio).
  if (edit !== null) duration = Math.min(duration, edit);
  const stbl = (() => {
    const minf = child(buf, mdia, 'minf');
    return minf ? child(buf, minf, 'stbl') : undefined;
  })();
  if (!stbl) return undefined;
  const stsz = child(buf, stbl, 'stsz') ?? child(buf, stbl, 'stz2');
  // stsz: version/flags (4), sample_size (4), sample_count (4); stz2 keeps the count at the same place.
  if (!stsz || stsz.end - stsz.start < 12) return undefined;
  const samples = buf.readUInt32BE(stsz.start + 8);
  // The timing table must describe the same samples (a file cut short would not).
  const stts = child(buf, stbl, 'stts');
  if (!stts || stts.end - stts.start < 8) return undefined;
  const entries = buf.readUInt32BE(stts.start + 4);
  if (stts.start + 8 + entries * 8 > stts.end) return undefined;
  let timed = 0;
  for (let i = 0; i < entries; i++) timed += buf.readUInt32BE(stts.start + 8 + i * 8);
  if (timed !== samples) return undefined;
  return { samples, durationSec: duration / timescale };
}

/**
 * No edit list (null), or one edit that plays the media from `media_time` at rate 1: what ffmpeg's
 * muxer writes for a start delay (B-frames, AAC priming); then where the edit ends, in the
 * track's time scale. Edits that skip, repeat or slow media change what a demuxer returns: those
 * files (undefined) are left to ffprobe.
 */
function plainEdit(buf: Buffer, trak: Box, timescale: number, movieTimescale: number, mediaDuration: number): number | null | undefined {
  const edts = child(buf, trak, 'edts');
  if (!edts) return null;
  const elst = child(buf, edts, 'elst');
  if (!elst) return null;
  if (elst.end - elst.start < 8) return undefined;
  const version = buf.readUInt8(elst.start);
  const count = buf.readUInt32BE(elst.start + 4);
  const size = version === 1 ? 20 : 12;
  if (elst.start + 8 + count * size > elst.end) return undefined;
  if (count === 0) return null;
  if (count !== 1) return undefined;
  const at = elst.start + 8;
  const segmentDuration = version === 1 ? Number(buf.readBigUInt64BE(at)) : buf.readUInt32BE(at);
  const mediaTime = version === 1 ? Number(buf.readBigInt64BE(at + 8)) : buf.readInt32BE(at + 4);
  const rateInt = buf.readInt16BE(at + (version === 1 ? 16 : 8));
  const rateFrac = buf.readInt16BE(at + (version === 1 ? 18 : 10));
  if (mediaTime < 0 || mediaTime >= mediaDuration || rateInt !== 1 || rateFrac !== 0) return undefined;
  // An edit of no length plays to the end of the media.
  if (segmentDuration === 0) return null;
  return Math.round((segmentDuration * timescale) / movieTimescale);
}
