import { traceMetadata } from '../common/trace.js';
import { fileDigest, sendFileChunks } from '../common/chunks.js';
import { deadline, openClientStream } from '../common/grpc.js';
import { retry } from '../common/retry.js';
import { PartChunk, type PartAck, type PartRef, type UploaderClient } from '../proto/gen/tessera/v1/uploader.js';

export interface SendPartOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  attempts?: number;
  onRetry?: (err: unknown) => void;
}

/**
 * Sends one rendition (or audio) part to the uploader and resolves once it is durable there.
 * A retried send starts again at offset 0; the uploader acknowledges identical bytes it holds.
 */
export async function sendPart(client: UploaderClient, ref: PartRef, filePath: string, o: SendPartOptions): Promise<PartAck> {
  const { hex: sha256, bytes } = await fileDigest(filePath);
  return retry(
    async () => {
      const { stream, result, signal } = openClientStream<PartChunk, PartAck>((cb) => client.putPart(traceMetadata(ref.jobId), deadline(o.timeoutMs), cb), o.signal);
      try {
        if (bytes === 0) stream.write(PartChunk.fromPartial({ ref, offset: 0, totalSize: 0, sha256 }));
        await sendFileChunks(stream, filePath, 0, (offset, data) => PartChunk.fromPartial({ ref, offset, data, totalSize: bytes, sha256 }), { signal });
        stream.end();
      } catch (err) {
        // the call's own error (from `result`) says more than the aborted write
        await result;
        throw err;
      }
      return await result;
    },
    { attempts: o.attempts ?? 4, baseMs: 200, maxMs: 5_000, signal: o.signal, ...(o.onRetry ? { onRetry: o.onRetry } : {}) },
  );
}
