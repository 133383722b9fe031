import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, makeGenericClientConstructor, Metadata, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { sendFileChunks } from '../common/chunks.js';
import { deadline, openClientStream } from '../common/grpc.js';
import type { SegmentChunk, TransferStatus } from '../proto/gen/tessera/v1/agent.js';
import { bareDefinition } from './bare-sink.js';

type BareCall = (md: Metadata, o: object, cb: (e: ServiceError | null, r: TransferStatus) => void) => ClientWritableStream<SegmentChunk>;

// The transfer benchmark's two references, in their own process as the benchmark starts them.
describe('bare sink (transfer benchmark references)', () => {
  it('counts a stream, and writes one to a file it deletes afterwards', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bare-sink-'));
    const file = join(dir, 'blob.bin');
    const size = 3 * 1024 * 1024 + 5;
    await writeFile(file, randomBytes(size));
    const work = join(dir, 'work');
    await mkdir(work);
    const sink = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench/bare-sink.ts'), work], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((res, rej) => {
        sink.stdout.once('data', (d: Buffer) => res(Number(d.toString().trim())));
        sink.once('exit', (code) => rej(new Error(`bare sink exited with ${code}`)));
      });
      const Bare = makeGenericClientConstructor(bareDefinition, 'Bare');
      const client = new Bare(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as { put: BareCall; putToDisk: BareCall; close(): void };
      const send = async (call: BareCall): Promise<TransferStatus> => {
        const s = openClientStream<SegmentChunk, TransferStatus>((cb) => call(new Metadata(), deadline(30_000), cb));
        await sendFileChunks(s.stream, file, 0, (offset, data) => ({ ref: undefined, offset, data, totalSize: size, sha256: '', crc32: '' }), { signal: s.signal });
        s.stream.end();
        return s.result;
      };
      expect(await send(client.put.bind(client))).toMatchObject({ receivedBytes: size, complete: true });
      expect(await send(client.putToDisk.bind(client))).toMatchObject({ receivedBytes: size, complete: true });
      expect(await readdir(work)).toEqual([]);
      client.close();
    } finally {
      sink.stdin.end();
      sink.kill();
    }
  });
});
