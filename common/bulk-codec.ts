import { makeGenericClientConstructor } from '@grpc/grpc-js';
import type { BinaryWriter } from '@bufbuild/protobuf/wire';
import * as agent from '../proto/gen/tessera/v1/agent.js';
import * as jobs from '../proto/gen/tessera/v1/jobs.js';
import * as uploader from '../proto/gen/tessera/v1/uploader.js';

/**
 * Codecs for the three messages that carry bulk bytes (segment, part and input upload chunks,
 * 1 MiB each), and the service definitions and clients that use them.
 *
 * The generated codec copies every chunk four times on the way out (into the writer, the writer's
 * final concat, `Buffer.from`, then grpc-js's framing) and once more on the way in
 * (`Buffer.from(reader.bytes())`); the copies and their garbage were a third of a transfer's CPU.
 * These produce the same wire bytes with one copy out and none in. Only the bulk field is
 * handled here; every other field goes through the generated code. Peers that use the generated
 * codec interoperate: the wire format is the same.
 */

interface Codec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: Uint8Array, length?: number): T;
}

const EMPTY = Buffer.alloc(0);
const WIRE_LEN = 2;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/** Reads a varint at `pos` (up to 2^53); returns its value and the next position. */
function readVarint(b: Buffer, pos: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= b.length) throw new Error('truncated message: varint runs past the end');
    const byte = b[pos++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 0x80;
  }
  throw new Error('malformed message: varint longer than 10 bytes');
}

/** Serializes `m` with its bulk field `data` (number `field`) appended last, copied once. */
export function bulkSerializer<T extends { data: Buffer }>(codec: Codec<T>, field: number): (m: T) => Buffer {
  return (m: T): Buffer => {
    const head = codec.encode({ ...m, data: EMPTY }).finish();
    const headBuf = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
    if (m.data.length === 0) return headBuf;
    const tag = Buffer.from([...varint((field << 3) | WIRE_LEN), ...varint(m.data.length)]);
    return Buffer.concat([headBuf, tag, m.data], headBuf.length + tag.length + m.data.length);
  };
}

/**
 * Deserializes a message whose bulk field (number `field`) becomes a view into the received
 * buffer (no copy); the remaining fields are decoded by the generated code. Fields may come in
 * any order; when the bulk field repeats, the last one wins, as protobuf requires.
 */
export function bulkDeserializer<T extends { data: Buffer }>(codec: Codec<T>, field: number): (b: Buffer) => T {
  return (b: Buffer): T => {
    let pos = 0;
    let span: { start: number; dataStart: number; end: number } | undefined;
    while (pos < b.length) {
      const start = pos;
      const [key, next] = readVarint(b, pos);
      pos = next;
      switch (key & 7) {
        case 0:
          pos = readVarint(b, pos)[1];
          break;
        case 1:
          pos += 8;
          break;
        case WIRE_LEN: {
          const [len, dataStart] = readVarint(b, pos);
          pos = dataStart + len;
          if (Math.floor(key / 8) === field && pos <= b.length) span = { start, dataStart, end: pos };
          break;
        }
        case 5:
          pos += 4;
          break;
        default:
          throw new Error(`malformed message: wire type ${key & 7}`);
      }
      if (pos > b.length) throw new Error('truncated message: a field runs past the end');
    }
    if (!span) return codec.decode(b);
    const rest = span.start === 0 && span.end === b.length ? EMPTY : Buffer.concat([b.subarray(0, span.start), b.subarray(span.end)]);
    const m = codec.decode(rest);
    m.data = b.subarray(span.dataStart, span.end);
    return m;
  };
}

function withBulk<S extends object, K extends keyof S, T extends { data: Buffer }>(service: S, method: K, codec: Codec<T>, field: number): S {
  return { ...service, [method]: { ...service[method], requestSerialize: bulkSerializer(codec, field), requestDeserialize: bulkDeserializer(codec, field) } };
}

export const NodeAgentService = withBulk(agent.NodeAgentService, 'putSegment', agent.SegmentChunk, 3);
export const UploaderService = withBulk(uploader.UploaderService, 'putPart', uploader.PartChunk, 3);
export const JobServiceService = withBulk(jobs.JobServiceService, 'uploadAndSubmit', jobs.UploadChunk, 4);

export const NodeAgentClient = makeGenericClientConstructor(NodeAgentService, 'tessera.v1.NodeAgent') as unknown as typeof agent.NodeAgentClient;
export type NodeAgentClient = agent.NodeAgentClient;
export const UploaderClient = makeGenericClientConstructor(UploaderService, 'tessera.v1.Uploader') as unknown as typeof uploader.UploaderClient;
export type UploaderClient = uploader.UploaderClient;
export const JobServiceClient = makeGenericClientConstructor(JobServiceService, 'tessera.v1.JobService') as unknown as typeof jobs.JobServiceClient;
export type JobServiceClient = jobs.JobServiceClient;
