import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Server, ServerCredentials, type ServerInterceptor, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { SERVER_OPTIONS } from './grpc.js';

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
  opts: { reflection?: string[]; credentials?: ServerCredentials; interceptors?: ServerInterceptor[] } = {},
): Promise<StartedServer> {
  const server = new Server({ ...SERVER_OPTIONS, ...(opts.interceptors ? { interceptors: opts.interceptors } : {}) });
  for (const s of services) server.addService(s.definition, s.implementation);
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(services.map((s) => [s.name, 'NOT_SERVING' as const])) });
  health.addToServer(server);
  if (opts.reflection) {
    const [{ ReflectionService }, protoLoader, { protoPath: healthProto }] = await Promise.all([import('@grpc/reflection'), import('@grpc/proto-loader'), import('grpc-health-check')]);
    const pkg = protoLoader.loadSync(
      [...opts.reflection.map((f) => join(PROTO_ROOT, 'tessera', 'v1', f)), healthProto],
      { includeDirs: [PROTO_ROOT, dirname(healthProto)], keepCase: false, longs: Number, enums: String, defaults: true },
    );
    new ReflectionService(pkg).addToServer(server);
  }
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, opts.credentials ?? ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
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
        const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, graceMs);
        server.tryShutdown(() => { clearTimeout(timer); resolve(); });
      });
      return closing;
    },
  };
}
