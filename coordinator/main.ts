import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createEtcd } from '../common/etcd.js';
import { ClientCache } from '../common/grpc-clients.js';
import { startGrpcServer } from '../common/grpc-server.js';
import { Keys } from '../common/keys.js';
import { Lifecycle } from '../common/lifecycle.js';
import { createLogger } from '../common/logger.js';
import { createRegistry, startMetricsServer } from '../common/metrics-server.js';
import { AdminService } from '../proto/gen/tessera/v1/admin.js';
import { JobServiceService } from '../proto/gen/tessera/v1/jobs.js';
import { availableEncoders } from '../transcoder/encoders.js';
import { createS3Client, ensureBucket } from '../uploader/s3-client.js';
import { adminHandlers } from './admin-service.js';
import { loadConfig } from './config.js';
import { jobServiceHandlers } from './job-service.js';
import { JobStore } from './job-store.js';
import { LeaderElection } from './leader.js';
import { coordinatorMetrics } from './metrics.js';
import { NodeRegistry } from './node-registry.js';
import { Scheduler } from './scheduler.js';
import { Throughput } from './throughput.js';

let cfg: ReturnType<typeof loadConfig>;
try {
  cfg = loadConfig();
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}

const log = createLogger('coordinator', cfg.LOG_LEVEL, { coordinatorId: cfg.COORDINATOR_ID });
const life = new Lifecycle(log);
life.handleSignals(cfg.SHUTDOWN_GRACE_MS, (code) => process.exit(code));

async function main(): Promise<void> {
  const keys = new Keys(cfg.ETCD_PREFIX);
  const stagingDir = resolve(cfg.STAGING_DIR, 'coordinator', cfg.COORDINATOR_ID);
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

  const registry = createRegistry('coordinator');
  const metrics = coordinatorMetrics(registry);
  const clients = new ClientCache();
  life.onStop('grpc clients', () => clients.closeAll());
  const encoders = await availableEncoders();
  const store = new JobStore(etcd, keys, cfg.JOB_HISTORY_LIMIT);
  const nodes = new NodeRegistry(etcd, keys, log);
  await nodes.start();
  life.onStop('node registry', () => nodes.stop());
  const election = new LeaderElection(etcd, keys.election(), cfg.COORDINATOR_ID, cfg.LEASE_TTL_SEC, log);
  const throughput = new Throughput();
  const load = new Map<string, number>();
  const scheduler = new Scheduler(etcd, keys, store, election, {
    cfg,
    store,
    registry: nodes,
    clients,
    s3,
    log,
    metrics,
    encoders,
    stagingDir,
    load,
    onFrames: (n) => {
      throughput.add(n);
      metrics.framesDone.inc(n);
    },
  }, log);
  await scheduler.start();
  life.onStop('scheduler', () => scheduler.stop());
  election.on('elected', () => metrics.isLeader.set(1));
  election.on('deposed', () => metrics.isLeader.set(0));
  election.start();
  life.onStop('election', () => election.resign());

  const grpc = await startGrpcServer(
    cfg.BIND_HOST,
    cfg.GRPC_PORT,
    [
      {
        name: 'tessera.v1.JobService',
        definition: JobServiceService,
        implementation: jobServiceHandlers({ cfg, etcd, keys, store, registry: nodes, s3, encoders, stagingDir, metrics, log, onSubmitted: () => scheduler.kick() }),
      },
      {
        name: 'tessera.v1.Admin',
        definition: AdminService,
        implementation: adminHandlers({
          etcd,
          keys,
          store,
          registry: nodes,
          election,
          log,
          throughput: () => throughput.perSecond(),
          segmentsInFlight: () => [...load.values()].reduce((a, b) => a + b, 0),
          autoscalerDecisions: () => [],
        }),
      },
    ],
    { reflection: true },
  );
  life.onStop('grpc server', () => grpc.close(5_000));

  // Gauges that describe the cluster, refreshed on a timer (cheap: in-memory + one count).
  const gauges = setInterval(() => {
    const all = nodes.all();
    metrics.nodes.set({ state: 'ready' }, all.filter((n) => !n.draining).length);
    metrics.nodes.set({ state: 'draining' }, all.filter((n) => n.draining).length);
    store.queueDepth().then((n) => metrics.queueDepth.set(n), () => undefined);
    metrics.fencingRejections.inc(store.fencingRejections - fenceSeen);
    fenceSeen = store.fencingRejections;
  }, 2_000);
  let fenceSeen = 0;
  life.onStop('gauges', () => clearInterval(gauges));
  const http = await startMetricsServer(registry, cfg.METRICS_PORT, cfg.BIND_HOST, () => life.state === 'running');
  life.onStop('metrics server', () => http.close());
  life.state = 'running';
  log.info({ address: `${cfg.BIND_HOST}:${grpc.port}`, metricsPort: http.port }, 'coordinator ready');
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'coordinator failed to start');
  void life.stop('startup failure').then(() => process.exit(1));
});
