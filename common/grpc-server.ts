import type { Http2SecureServer, Http2Server, ServerHttp2Session } from 'node:http2';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Server, ServerCredentials, type ServerInterceptor, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { RECEIVE_WINDOW, SERVER_OPTIONS } from './grpc.js';

const PROTO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', 'proto');

export interface ServiceBinding {
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface StartedServer {
  server: Server;
  port: number;
  health: HealthImplementation;
  /** Graceful close: stops accepting, waits up to `graceMs` for calls, then forces. Idempotent. */
  close(graceMs: number): Promise<void>;
}

/**
 * Starts a gRPC server on host:port (0 = the OS picks) with the given services, gRPC health
 * checking (grpc.health.v1) and, optionally, server reflection for grpcurl.
 */
export async function startGrpcServer(
  host: string,
  port: number,
  services: ServiceBinding[],
  /** reflection: the .proto files (under proto/tessera/v1) whose services this server exposes. */
  opts: { reflection?: string[]; credentials?: ServerCredentials; interceptors?: ServerInterceptor[]; maxConcurrentStreams?: number } = {},
): Promise<StartedServer> {
  const server = new Server({
    ...SERVER_OPTIONS,
    ...(opts.maxConcurrentStreams ? { 'grpc.max_concurrent_streams': opts.maxConcurrentStreams } : {}),
    ...(opts.interceptors ? { interceptors: opts.interceptors } : {}),
  });
  for (const s of services) server.addService(s.definition, s.implementation);
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(services.map((s) => [s.name, 'NOT_SERVING' as const])) });
  health.addToServer(server);
  if (opts.reflection) {
    const [{ ReflectionService }, protoLoader, { protoPath: healthProto }] = await Promise.all([import('@grpc/reflection'), import('@grpc/proto-loader'), import('grpc-health-check')]);
    const pkg = protoLoader.loadSync([...opts.reflection.map((f) => join(PROTO_ROOT, 'tessera', 'v1', f)), healthProto], {
      includeDirs: [PROTO_ROOT, dirname(healthProto)],
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
    });
    new ReflectionService(pkg).addToServer(server);
  }
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, opts.credentials ?? ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  widenReceiveWindow(server, RECEIVE_WINDOW);
  for (const s of services) health.setStatus(s.name, 'SERVING');
  health.setStatus('', 'SERVING');
  let closing: Promise<void> | undefined;
  return {
    server,
    port: bound,
    health,
    close(graceMs: number) {
      closing ??= new Promise<void>((resolve) => {
        for (const s of services) health.setStatus(s.name, 'NOT_SERVING');
        health.setStatus('', 'NOT_SERVING');
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      return closing;
    },
  };
}

/**
 * A grpc-js server keeps Node's 64 KiB HTTP/2 receive window (it has no option for it; grpc-node
 * PR #3058 adds one), so an incoming stream waits a round trip for a WINDOW_UPDATE after every
 * 64 KiB: segment, part and upload streams ran at a fraction of loopback speed, and slower still
 * when the receiver was busy hashing. This raises the per-stream window (SETTINGS of new
 * sessions) and each session's connection window. It reaches into grpc-js's listening servers
 * (a private field); returns false, changing nothing, if that field is not there.
 */
export function widenReceiveWindow(server: Server, w: { stream: number; connection: number }): boolean {
  const listening = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(listening instanceof Map)) return false;
  for (const h of listening.keys() as Iterable<Http2Server | Http2SecureServer>) {
    h.updateSettings({ initialWindowSize: w.stream });
    h.on('session', (session: ServerHttp2Session) => {
      try {
        session.setLocalWindowSize(w.connection);
      } catch {
        // a session that is already closing
      }
    });
  }
  return true;
}
