import { Server, ServerCredentials, type ServerReadableStream, type sendUnaryData } from '@grpc/grpc-js';
import { SegmentChunk, type TransferStatus } from '../proto/gen/tessera/v1/agent.js';
import { RECEIVE_WINDOW } from '../common/grpc.js';
import { widenReceiveWindow } from '../common/grpc-server.js';
import { bulkDeserializer, bulkSerializer } from '../common/bulk-codec.js';

/**
 * The transfer benchmark's ceiling: a gRPC server in its own process (as a node agent is) that
 * decodes the same SegmentChunk messages, with the same codec and HTTP/2 receive window as our
 * servers, and only counts their bytes. Prints its port, exits when
 * stdin closes (the benchmark ends).
 */
export const bareDefinition = {
  put: {
    path: '/bench.Bare/Put',
    requestStream: true,
    responseStream: false,
    requestSerialize: bulkSerializer(SegmentChunk, 3),
    requestDeserialize: bulkDeserializer(SegmentChunk, 3),
    responseSerialize: (m: TransferStatus) => Buffer.from(JSON.stringify(m)),
    responseDeserialize: (b: Buffer) => JSON.parse(b.toString()) as TransferStatus,
  },
} as const;

if (process.argv[1]?.endsWith('bare-sink.ts')) {
  const server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(bareDefinition, {
    put: (call: ServerReadableStream<SegmentChunk, TransferStatus>, cb: sendUnaryData<TransferStatus>) => {
      let n = 0;
      call.on('data', (m: SegmentChunk) => { n += m.data.length; });
      call.on('end', () => cb(null, { receivedBytes: n, complete: true, sha256: '' }));
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
