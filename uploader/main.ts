import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createEtcd } from '../common/etcd.js';
import { startGrpcServer } from '../common/grpc-server.js';
import { Keys } from '../common/keys.js';
import { Lifecycle } from '../common/lifecycle.js';
import { createLogger } from '../common/logger.js';
import { createRegistry, startMetricsServer } from '../common/metrics-server.js';
import type { UploaderRecord } from '../common/records.js';
import { UploaderService as UploaderDefinition } from '../proto/gen/tessera/v1/uploader.js';
import { loadConfig } from './config.js';
import { uploaderMetrics } from './metrics.js';
import { createS3Client, ensureBucket } from './s3-client.js';
import { UploaderService } from './service.js';

let cfg: ReturnType<typeof loadConfig>;
try {
  cfg = loadConfig();
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}

const log = createLogger('uploader', cfg.LOG_LEVEL, { uploaderId: cfg.UPLOADER_ID });
const life = new Lifecycle(log);
life.handleSignals(cfg.SHUTDOWN_GRACE_MS, (code) => process.exit(code));

async function main(): Promise<void> {
  const keys = new Keys(cfg.ETCD_PREFIX);
  // Staging survives restarts: parts acknowledged before a crash are still here afterwards.
  const stagingDir = resolve(cfg.STAGING_DIR, 'uploader', cfg.UPLOADER_ID);
  await mkdir(stagingDir, { recursive: true });
  const etcd = createEtcd({ endpoints: cfg.ETCD_ENDPOINTS, callTimeoutMs: cfg.ETCD_CALL_TIMEOUT_MS, username: cfg.ETCD_USERNAME, password: cfg.ETCD_PASSWORD });
  life.onStop('etcd', () => etcd.close());
  const s3 = createS3Client({
    ...(cfg.S3_ENDPOINT ? { endpoint: cfg.S3_ENDPOINT } : {}),
    region: cfg.S3_REGION,
    accessKeyId: cfg.S3_ACCESS_KEY_ID,
    secretAccessKey: cfg.S3_SECRET_ACCESS_KEY,
    forcePathStyle: cfg.S3_FORCE_PATH_STYLE,
    requestTimeoutMs: cfg.S3_REQUEST_TIMEOUT_MS,
  });
  life.onStop('s3', () => s3.destroy());
  await ensureBucket(s3, cfg.S3_BUCKET).catch((err: unknown) => log.warn({ err, bucket: cfg.S3_BUCKET }, 'could not ensure the default bucket'));

  const registry = createRegistry('uploader');
  const service = new UploaderService({
    etcd,
    keys,
    s3,
    stagingDir,
    maxPartBytes: cfg.MAX_PART_BYTES,
    partSizeBytes: cfg.S3_PART_SIZE_BYTES,
    log,
    metrics: uploaderMetrics(registry),
  });
  const grpc = await startGrpcServer(cfg.BIND_HOST, cfg.GRPC_PORT, [
    { name: 'tessera.v1.Uploader', definition: UploaderDefinition, implementation: service.handlers() },
  ]);
  life.onStop('grpc server', () => grpc.close(10_000));
  const http = await startMetricsServer(registry, cfg.METRICS_PORT, cfg.BIND_HOST, () => life.state === 'running');
  life.onStop('metrics server', () => http.close());

  const lease = etcd.lease(cfg.LEASE_TTL_SEC, { autoKeepAlive: true });
  const address = cfg.ADVERTISE_ADDRESS ?? `${cfg.BIND_HOST}:${grpc.port}`;
  const record: UploaderRecord = {
    id: cfg.UPLOADER_ID,
    address,
    metricsAddress: `${address.slice(0, address.lastIndexOf(':'))}:${http.port}`,
    startedAtMs: Date.now(),
  };
  const register = async (): Promise<void> => { await lease.put(keys.uploader(cfg.UPLOADER_ID)).value(JSON.stringify(record)); };
  await register();
  lease.on('lost', () => {
    log.warn('lease lost; re-registering');
    void (async () => {
      const again = etcd.lease(cfg.LEASE_TTL_SEC, { autoKeepAlive: true });
      await again.put(keys.uploader(cfg.UPLOADER_ID)).value(JSON.stringify(record));
    })().catch((err: unknown) => log.error({ err }, 're-register failed'));
  });
  life.onStop('leave', () => lease.revoke());
  life.state = 'running';
  log.info({ address: record.address, metricsPort: http.port }, 'uploader ready');
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'uploader failed to start');
  void life.stop('startup failure').then(() => process.exit(1));
});
