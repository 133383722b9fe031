import { connect } from 'node:http2';
import { describe, expect, it } from 'vitest';
import { RECEIVE_WINDOW } from './grpc.js';
import { startGrpcServer } from './grpc-server.js';

describe('startGrpcServer', () => {
  it("advertises our HTTP/2 receive window, not Node's 64 KiB default (a round trip per 64 KiB of every incoming stream)", async () => {
    const srv = await startGrpcServer('127.0.0.1', 0, []);
    const session = connect(`http://127.0.0.1:${srv.port}`);
    try {
      const settings = await new Promise<{ initialWindowSize?: number }>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      // What the server really advertised, not the constant: ours, and larger than Node's default.
      expect(settings.initialWindowSize).toBe(RECEIVE_WINDOW.stream);
      expect(settings.initialWindowSize).toBeGreaterThan(65_535);
    } finally {
      session.close();
      await srv.close(1_000);
    }
  });

  it('advertises the stream limit it is given (GRPC_MAX_CONCURRENT_STREAMS): one client connection cannot open more', async () => {
    const srv = await startGrpcServer('127.0.0.1', 0, [], { maxConcurrentStreams: 7 });
    const session = connect(`http://127.0.0.1:${srv.port}`);
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxConcurrentStreams).toBe(7);
    } finally {
      session.close();
      await srv.close(1_000);
    }
  });
});
