import { LocalHandoff } from '../common/local-handoff.js';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { startGrpcServer } from '../common/grpc-server.js';
import { Keys } from '../common/keys.js';
import { LeasedKey } from '../common/leased-key.js';
import { bootProcess, processEtcd, processTls, runMain } from '../common/process.js';
import { serverSecurity } from '../common/auth.js';
import { uploaderPolicy } from '../common/access-policy.js';
import { checkOwnCertificate } from '../common/tls.js';
import { createRegistry, startMetricsServer } from '../common/metrics-server.js';
import type { UploaderRecord } from '../common/records.js';
import { UploaderService as UploaderDefinition } from '../common/bulk-codec.js';
import { loadConfig, startupRefusals } from './config.js';
import { sweepSettings } from '../common/config-schema.js';
import { StagingSweeper } from '../common/staging-sweeper.js';
import { paceFromConfig } from '../common/chunks.js';
import { uploaderMetrics } from './metrics.js';
import { createS3Client, ensureBucket, s3SettingsFromConfig } from '../common/s3-client.js';
import { UploaderService } from './service.js';

const { cfg, log, life } = bootProcess('uploader', loadConfig, (c) => ({ uploaderId: c.UPLOADER_ID }), startupRefusals);

async function main(): Promise<void> {
  const keys = new Keys(cfg.ETCD_PREFIX);
  // Staging survives restarts: parts acknowledged before a crash are still here afterwards.
  const stagingDir = resolve(cfg.STAGING_DIR, 'uploader', cfg.UPLOADER_ID);
  await mkdir(stagingDir, { recursive: true });
  const etcd = processEtcd(cfg, life);
  const s3 = createS3Client(s3SettingsFromConfig(cfg));
  life.onStop('s3', () => s3.destroy());
  await ensureBucket(s3, cfg.S3_BUCKET).catch((err: unknown) => log.warn({ err, bucket: cfg.S3_BUCKET }, 'could not ensure the default bucket'));

  const registry = createRegistry('uploader');
  const tls = processTls(cfg);
  checkOwnCertificate(tls, cfg.UPLOADER_ID, log);
  const service = new UploaderService({
    etcd,
    keys,
    s3,
    stagingDir,
    // Parts from co-located node agents (one staging directory) are read from disk, not a stream.
    handoff: new LocalHandoff(cfg.LOCAL_HANDOFF ? resolve(cfg.STAGING_DIR) : undefined),
    maxPartBytes: cfg.MAX_PART_BYTES,
    stagingReserveBytes: cfg.STAGING_RESERVE_BYTES,
    pace: paceFromConfig(cfg),
    partSizeBytes: cfg.S3_PART_SIZE_BYTES,
    singlePutMaxBytes: cfg.S3_SINGLE_PUT_MAX_BYTES,
    log,
    metrics: uploaderMetrics(registry),
    mutualTls: tls !== undefined,
  });
  // Parts of jobs in flight stay (a restart re-uses them); those of finished jobs go, now and periodically.
  const sweeper = new StagingSweeper({
    ownDir: stagingDir,
    etcd,
    keys,
    settings: sweepSettings(cfg),
    log: log.child({ component: 'staging' }),
    onFinished: (jobId, state) => service.release(jobId, state),
  });
  sweeper.start();
  life.onStop('staging sweeper', () => sweeper.stop());
  const grpc = await startGrpcServer(
    cfg.BIND_HOST,
    cfg.GRPC_PORT,
    [{ name: 'tessera.v1.Uploader', definition: UploaderDefinition, implementation: service.handlers() }],
    serverSecurity(tls, uploaderPolicy),
  );
  life.onStop('grpc server', () => grpc.close(10_000));
  const http = await startMetricsServer(registry, cfg.METRICS_PORT, cfg.BIND_HOST, () => life.state === 'running');
  life.onStop('metrics server', () => http.close());

  const address = cfg.ADVERTISE_ADDRESS ?? `${cfg.BIND_HOST}:${grpc.port}`;
  const record: UploaderRecord = {
    id: cfg.UPLOADER_ID,
    address,
    metricsAddress: `${address.slice(0, address.lastIndexOf(':'))}:${http.port}`,
    startedAtMs: Date.now(),
  };
  // Registered under a lease, and registered again whenever the lease is lost (an etcd outage).
  const registration = new LeasedKey(etcd, keys.uploader(cfg.UPLOADER_ID), JSON.stringify(record), cfg.LEASE_TTL_SEC, log);
  await registration.start();
  life.onStop('leave', () => registration.close());
  life.state = 'running';
  log.info({ address: record.address, metricsPort: http.port }, 'uploader ready');
}

runMain(main, log, life);
