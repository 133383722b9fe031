import { credentials, makeGenericClientConstructor, type Client, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

interface HealthClient extends Client {
  check(
    req: { service: string },
    options: { deadline: Date },
    cb: (err: ServiceError | null, res: { status: string } | undefined) => void,
  ): void;
}

const HealthCtor = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health') as unknown as new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>,
) => HealthClient;

/** grpc.health.v1 Check against `address`; true when the server answers SERVING within `timeoutMs`. */
export async function grpcServing(address: string, timeoutMs = 1_000, serviceName = ''): Promise<boolean> {
  const c = new HealthCtor(address, credentials.createInsecure());
  try {
    return await new Promise<boolean>((resolve) => {
      c.check({ service: serviceName }, { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => resolve(!err && res?.status === 'SERVING'));
    });
  } finally {
    c.close();
  }
}
