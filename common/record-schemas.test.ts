import { describe, expect, it } from 'vitest';
import { isAppError } from './errors.js';
import { checkpointSchema, nodeRecordSchema, parseRecord, segmentOwnerSchema } from './record-schemas.js';

describe('etcd records are parsed against their schemas', () => {
  it("a well-formed record comes back as it was, a newer version's extra fields included", () => {
    const cp = {
      boundaries: [0, 1.5, 3],
      done: [{ sub: 0, attempt: 1, nodeId: 'node-0', frames: 45, sha256: { '720p': 'ab' } }],
      transcodedByAttempt: { '1': 1 },
      helpers: { '10001': { nodeId: 'node-1', chunks: [1] } },
      futureField: 7,
    };
    expect(parseRecord(checkpointSchema, JSON.stringify(cp), '/tessera/jobs/j/segments/0000/checkpoint')).toEqual(cp);
    const owner = parseRecord(segmentOwnerSchema, Buffer.from('{"nodeId":"node-0","attempt":2,"assignedAtMs":5}'), 'k');
    expect(owner.attempt).toBe(2);
  });

  it('a record that is not JSON, or lacks a field the code relies on, is one INTERNAL error naming its key', () => {
    const bad = (raw: string): unknown => {
      try {
        return parseRecord(nodeRecordSchema, raw, '/tessera/nodes/node-9');
      } catch (err) {
        return err;
      }
    };
    const notJson = bad('{"id":');
    expect(isAppError(notJson, 'INTERNAL') && notJson.message).toBe('the record at /tessera/nodes/node-9 is not JSON');
    const missing = bad(JSON.stringify({ id: 'node-9', address: '10.0.0.9:7500', slots: 2, version: '1', startedAtMs: 1, metricsAddress: '' }));
    expect(isAppError(missing, 'INTERNAL')).toBe(true);
    expect((missing as Error).message).toContain('/tessera/nodes/node-9 is malformed: encoders');
    const wrongType = bad(JSON.stringify({ id: 'node-9', address: 1, slots: 2, encoders: [], version: '1', startedAtMs: 1, metricsAddress: '' }));
    expect((wrongType as Error).message).toContain('address');
    expect(isAppError(wrongType) && wrongType.retryable).toBe(false);
  });

  it('a checkpoint with a negative or fractional chunk number is refused', () => {
    const cp = { boundaries: [0, 1], done: [{ sub: -1, attempt: 1, nodeId: 'a', frames: 3 }], transcodedByAttempt: {} };
    expect(() => parseRecord(checkpointSchema, JSON.stringify(cp), 'k')).toThrow(/malformed: done\.0\.sub/);
  });
});
