import { randomBytes } from 'node:crypto';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { describe, expect, it } from 'vitest';
import { SegmentChunk } from '../proto/gen/tessera/v1/agent.js';
import { UploadChunk } from '../proto/gen/tessera/v1/jobs.js';
import { PartChunk } from '../proto/gen/tessera/v1/uploader.js';
import { bulkDeserializer, bulkSerializer, JobServiceService, NodeAgentService, UploaderService } from './bulk-codec.js';

const toSeg = bulkSerializer(SegmentChunk, 3);
const fromSeg = bulkDeserializer(SegmentChunk, 3);
const generated = (m: SegmentChunk): Buffer => Buffer.from(SegmentChunk.encode(m).finish());

describe('bulk codec', () => {
  const chunk: SegmentChunk = {
    ref: { jobId: 'job-1', segment: 7, attempt: 2 },
    offset: 3 * 1024 * 1024,
    data: randomBytes(64 * 1024 + 17),
    totalSize: 5e9,
    sha256: 'ab'.repeat(32),
    crc32: '0badcafe',
    localPath: '',
    localIdentity: '',
  };

  it('writes bytes the generated decoder reads back unchanged', () => {
    expect(SegmentChunk.decode(toSeg(chunk))).toEqual(chunk);
    const empty = { ...chunk, data: Buffer.alloc(0) };
    expect(toSeg(empty).equals(generated(empty))).toBe(true);
  });

  it('reads what the generated encoder writes, the data as a view without a copy', () => {
    const wire = generated(chunk);
    const m = fromSeg(wire);
    expect(m).toEqual(chunk);
    expect(m.data.buffer).toBe(wire.buffer); // a view into the received message
    expect(fromSeg(toSeg(chunk))).toEqual(chunk);
  });

  it('takes fields in any order and the last of a repeated bytes field', () => {
    const w = new BinaryWriter();
    w.uint32(42).string('ff'.repeat(32)); // sha256 first
    w.uint32(26).bytes(Buffer.from('first'));
    w.uint32(16).int64(99); // offset
    w.uint32(26).bytes(Buffer.from('second'));
    w.uint32(10).fork().uint32(10).string('j').join(); // ref
    const m = fromSeg(Buffer.from(w.finish()));
    expect(m.data.toString()).toBe('second');
    expect(m.offset).toBe(99);
    expect(m.ref?.jobId).toBe('j');
    expect(m.sha256).toBe('ff'.repeat(32));
  });

  it('rejects truncated and malformed messages', () => {
    const wire = toSeg(chunk);
    expect(() => fromSeg(wire.subarray(0, wire.length - 1))).toThrow(/truncated/);
    expect(() => fromSeg(Buffer.from([0x1f]))).toThrow(/wire type/);
    expect(() => fromSeg(Buffer.from([0x80, 0x80]))).toThrow(/truncated/);
  });

  it('is what the three bulk methods use; part and upload chunks round-trip', () => {
    expect(NodeAgentService.putSegment.requestDeserialize(NodeAgentService.putSegment.requestSerialize(chunk))).toEqual(chunk);
    const part = PartChunk.fromPartial({ ref: { jobId: 'j', rendition: '720p', segment: 1, subSegment: 2, attempt: 1 }, offset: 10, data: randomBytes(4096) });
    const p = UploaderService.putPart.requestSerialize(part);
    expect(PartChunk.decode(p)).toEqual(part);
    expect(UploaderService.putPart.requestDeserialize(p)).toEqual(part);
    const up = UploadChunk.fromPartial({ fileName: 'a.mp4', offset: 0, data: randomBytes(100), spec: { inputUri: 'x' } });
    const u = JobServiceService.uploadAndSubmit.requestSerialize(up);
    expect(UploadChunk.decode(u)).toEqual(up);
    expect(JobServiceService.uploadAndSubmit.requestDeserialize(u)).toEqual(up);
  });
});
