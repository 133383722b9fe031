import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  Server,
  ServerCredentials,
  type ClientWritableStream,
  type ServerReadableStream,
  type ServiceError,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { SegmentChunk, type TransferStatus } from '../proto/gen/tessera/v1/agent.js';
import { sendFileChunks } from '../common/chunks.js';
import { deadline, openClientStream, RECEIVE_WINDOW } from '../common/grpc.js';
import { widenReceiveWindow } from '../common/grpc-server.js';
import { bulkDeserializer, bulkSerializer } from '../common/bulk-codec.js';

const method = (path: string) =>
  ({
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

type BareCall = (md: Metadata, o: object, cb: (e: ServiceError | null, r: TransferStatus) => void) => ClientWritableStream<SegmentChunk>;

export interface BareSink {
  /** Streams `file` (`bytes` long) to one of the references; resolves with the sink's answer. */
  send(method: keyof typeof bareDefinition, file: string, bytes: number): Promise<TransferStatus>;
  stop(): void;
}

/** Starts the sink in its own process (files of `putToDisk` go under `workDir`) and connects to it. */
export async function startBareSink(workDir: string): Promise<BareSink> {
  // This very file as a script (importing the cluster code for its REPO_ROOT would load that code
  // into the sink too, and a bare sink's heap should stay bare).
  const self = fileURLToPath(import.meta.url);
  const sink = spawn(process.execPath, ['--import', 'tsx', self, workDir], { cwd: join(dirname(self), '..'), stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((res, rej) => {
    sink.stdout.once('data', (d: Buffer) => res(Number(d.toString().trim())));
    sink.once('exit', (code) => rej(new Error(`bare sink exited with ${code}`)));
  });
  const Bare = makeGenericClientConstructor(bareDefinition, 'Bare');
  const client = new Bare(`127.0.0.1:${port}`, credentials.createInsecure(), { 'grpc.max_send_message_length': 4 * 1024 * 1024 }) as unknown as Record<keyof typeof bareDefinition, BareCall> & {
    close(): void;
  };
  return {
    async send(method, file, bytes) {
      const s = openClientStream<SegmentChunk, TransferStatus>((cb) => client[method](new Metadata(), deadline(600_000), cb));
      await sendFileChunks(s.stream, file, 0, (offset, data) => ({ ref: undefined, offset, data, totalSize: bytes, sha256: '', crc32: '', localPath: '', localIdentity: '' }), { signal: s.signal });
      s.stream.end();
      return s.result;
    },
    stop() {
      client.close();
      sink.stdin.end();
    },
  };
}

if (process.argv[1]?.endsWith('bare-sink.ts')) {
  const dir = process.argv[2] ?? '/tmp';
  const server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(bareDefinition, {
    put: (call: ServerReadableStream<SegmentChunk, TransferStatus>, cb: sendUnaryData<TransferStatus>) => {
      let n = 0;
      call.on('data', (m: SegmentChunk) => {
        n += m.data.length;
      });
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
      })().then(
        (n) => cb(null, { receivedBytes: n, complete: true, sha256: '', crc32: '' }),
        (err: Error) => cb(err),
      );
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
