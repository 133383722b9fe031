import { randomUUID } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Server, ServerCredentials, type ServerReadableStream, type sendUnaryData } from '@grpc/grpc-js';
import { SegmentChunk, type TransferStatus } from '../proto/gen/tessera/v1/agent.js';
import { RECEIVE_WINDOW } from '../common/grpc.js';
import { widenReceiveWindow } from '../common/grpc-server.js';
import { bulkDeserializer, bulkSerializer } from '../common/bulk-codec.js';

const method = (path: string) => ({
  path,
  requestStream: true,
  responseStream: false,
  requestSerialize: bulkSerializer(SegmentChunk, 3),
  requestDeserialize: bulkDeserializer(SegmentChunk, 3),
  responseSerialize: (m: TransferStatus) => Buffer.from(JSON.stringify(m)),
  responseDeserialize: (b: Buffer) => JSON.parse(b.toString()) as TransferStatus,
}) as const;

/**
 * The transfer benchmark's references: a gRPC server in its own process (as a node agent is) that
 * decodes the same SegmentChunk messages, with the same codec and HTTP/2 receive window as our
 * servers. `put` only counts the bytes (the ceiling); `putToDisk` also writes them to a file, in
 * order, one write in flight while the next chunk arrives (as the agent does), without a checksum:
 * what storing the bytes costs on this machine. Prints its port, exits when stdin closes.
 */
export const bareDefinition = { put: method('/bench.Bare/Put'), putToDisk: method('/bench.Bare/PutToDisk') } as const;

if (process.argv[1]?.endsWith('bare-sink.ts')) {
  const dir = process.argv[2] ?? '/tmp';
  const server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(bareDefinition, {
    put: (call: ServerReadableStream<SegmentChunk, TransferStatus>, cb: sendUnaryData<TransferStatus>) => {
      let n = 0;
      call.on('data', (m: SegmentChunk) => { n += m.data.length; });
      call.on('end', () => cb(null, { receivedBytes: n, complete: true, sha256: '', crc32: '' }));
    },
    putToDisk: (call: ServerReadableStream<SegmentChunk, TransferStatus>, cb: sendUnaryData<TransferStatus>) => {
      void (async () => {
        const path = join(dir, `bare-${randomUUID()}.bin`);
        const fh = await open(path, 'w');
        let n = 0;
        let writing: Promise<unknown> | undefined;
        try {
          for await (const m of call as AsyncIterable<SegmentChunk>) {
            await writing;
            writing = fh.write(m.data, 0, m.data.length, n);
            n += m.data.length;
          }
          await writing;
        } finally {
          await fh.close();
          await unlink(path);
        }
        return n;
      })().then((n) => cb(null, { receivedBytes: n, complete: true, sha256: '', crc32: '' }), (err: Error) => cb(err));
    },
  });
  server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    widenReceiveWindow(server, RECEIVE_WINDOW);
    process.stdout.write(`${port}\n`);
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
