import { LocalHandoff } from '../common/local-handoff.js';
import { SpeedMeter } from './speed.js';
import { mkdir, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ClientCache } from '../common/grpc-clients.js';
import { startGrpcServer } from '../common/grpc-server.js';
import { Keys } from '../common/keys.js';
import { bootProcess, processEtcd, processTls, runMain } from '../common/process.js';
import { serverSecurity } from '../common/auth.js';
import { nodeAgentPolicy } from '../common/access-policy.js';
import { certNames, channelCredentials, checkOwnCertificate } from '../common/tls.js';
import { grpcHealth } from '../common/health-client.js';
import { createRegistry, startMetricsServer } from '../common/metrics-server.js';
import { VERSION } from '../common/version.js';
import { NodeAgentService, UploaderClient } from '../common/bulk-codec.js';
import { availableEncoders } from '../transcoder/encoders.js';
import { probeCapabilities } from '../transcoder/capabilities.js';
import { parseLabels, parseNeeds } from '../common/placement.js';
import { WorkerPool } from '../transcoder/worker-pool.js';
import { ffmpegThreads, loadConfig, startupRefusals } from './config.js';
import { paceFromConfig } from '../common/chunks.js';
import { agentMetrics } from './metrics.js';
import { Registration } from './registration.js';
import { AgentService } from './service.js';
import { watchDrain } from './drain.js';
import { ffmpegSegmentMedia } from './segment-media.js';
import { DiskSpace } from './disk-space.js';
import { stagingSpace } from '../common/staging-space.js';
import { LeaderTermGate } from './leader-term.js';
import { sweepSettings } from '../common/config-schema.js';
import { StagingSweeper } from '../common/staging-sweeper.js';

const { cfg, log, life } = bootProcess('node-agent', loadConfig, (c) => ({ nodeId: c.NODE_ID }), startupRefusals);

/** Publishes this node's load figures (set once registered; a no-op before). */
let publish: () => void = () => undefined;

async function main(): Promise<void> {
  const keys = new Keys(cfg.ETCD_PREFIX);
  const stagingDir = resolve(cfg.STAGING_DIR, 'node', cfg.NODE_ID);
  await rm(stagingDir, { recursive: true, force: true }); // what a previous life held was reassigned long ago
  await mkdir(stagingDir, { recursive: true });

  const etcd = processEtcd(cfg, life);
  const sweeper = new StagingSweeper({ ownDir: stagingDir, etcd, keys, settings: sweepSettings(cfg), log: log.child({ component: 'staging' }) });
  sweeper.start(); // finished jobs' folders (a missed DropSegment), stale .partial files, dead siblings' leftovers
  life.onStop('staging sweeper', () => sweeper.stop());
  const registry = createRegistry('node-agent');
  const metrics = agentMetrics(registry);
  const pool = new WorkerPool(cfg.WORKER_SLOTS);
  // Encode speed per slot, published with the load figures: the coordinator sizes shares by it.
  const speed = new SpeedMeter();
  const tls = processTls(cfg);
  checkOwnCertificate(tls, cfg.NODE_ID, log); // coordinators dial it expecting a certificate for NODE_ID
  const clients = new ClientCache(channelCredentials(tls));
  life.onStop('grpc clients', () => clients.closeAll());
  const encoders = await availableEncoders();
  // Capability families (hardware only when a probe encode succeeds), for placement.
  const capabilities = [...new Set([...(await probeCapabilities(encoders)), ...parseNeeds(cfg.TEST_EXTRA_CAPABILITIES)])].sort();

  // Free space is checked before a segment is accepted; a full disk takes the node out of service.
  const disk = new DiskSpace(stagingDir, cfg.STAGING_RESERVE_BYTES, log, () => publish());
  // Co-located with the coordinator and the uploader (one staging directory): files, not streams.
  const handoff = new LocalHandoff(cfg.LOCAL_HANDOFF ? resolve(cfg.STAGING_DIR) : undefined);
  const service = new AgentService(
    stagingDir,
    cfg.MAX_SEGMENT_BYTES,
    {
      etcd,
      keys,
      log,
      pool,
      nodeId: cfg.NODE_ID,
      slots: cfg.WORKER_SLOTS,
      minSubSegmentSec: cfg.MIN_SUB_SEGMENT_SEC,
      maxChunkSec: cfg.MAX_CHUNK_SEC,
      ffmpegThreads: ffmpegThreads(cfg) ?? 0,
      noProgressMs: cfg.FFMPEG_NO_PROGRESS_MS,
      wallClockMs: cfg.FFMPEG_WALL_CLOCK_MS,
      subSegmentAttempts: cfg.SUB_SEGMENT_ATTEMPTS,
      uploadTimeoutMs: cfg.UPLOAD_TIMEOUT_MS,
      uploaderFor: (address, id) => clients.get(UploaderClient, address, id),
      handoff,
      onHandoff: () => metrics.handoffs.inc({ kind: 'part' }),
      onFenced: () => metrics.fencingRejections.inc(),
      onSubSegmentDone: (frames, seconds, pixelsPerFrame) => {
        metrics.framesTotal.inc(frames);
        metrics.transcodeSeconds.observe(seconds);
        speed.observe(frames, seconds, pixelsPerFrame);
      },
      onRetry: (kind) => metrics.retries.inc({ kind }),
      media: ffmpegSegmentMedia({
        maxPixels: cfg.FFMPEG_MAX_PIXELS,
        limits: {
          ...(cfg.FFMPEG_AS_LIMIT_MB !== undefined ? { addressSpaceMb: cfg.FFMPEG_AS_LIMIT_MB } : {}),
          ...(cfg.FFMPEG_CPU_LIMIT_SEC !== undefined ? { cpuSec: cfg.FFMPEG_CPU_LIMIT_SEC } : {}),
          ...(cfg.FFMPEG_NICE !== undefined ? { nice: cfg.FFMPEG_NICE } : {}),
        },
      }),
    },
    metrics,
    log,
    paceFromConfig(cfg),
    disk,
    // Calls that change work carry the caller's leader term: a deposed or partitioned leader's are refused.
    new LeaderTermGate(etcd, keys.election(), log, 1_000, () => metrics.fencingRejections.inc()),
    cfg.OWNER_CHECK_MS,
    handoff,
  );

  const grpc = await startGrpcServer(
    cfg.BIND_HOST,
    cfg.GRPC_PORT,
    [{ name: 'tessera.v1.NodeAgent', definition: NodeAgentService, implementation: service.handlers() }],
    serverSecurity(tls, nodeAgentPolicy),
  );
  life.onStop('grpc server', () => grpc.close(5_000));
  const http = await startMetricsServer(registry, cfg.METRICS_PORT, cfg.BIND_HOST, () => life.state === 'running' && !service.draining && !disk.full);
  life.onStop('metrics server', () => http.close());

  const advertise = cfg.ADVERTISE_ADDRESS ?? `${cfg.BIND_HOST}:${grpc.port}`;
  const advertiseHost = advertise.slice(0, advertise.lastIndexOf(':'));
  const registration = new Registration(
    etcd,
    keys,
    {
      id: cfg.NODE_ID,
      address: advertise,
      slots: cfg.WORKER_SLOTS,
      encoders: [...encoders].sort(),
      version: VERSION,
      startedAtMs: Date.now(),
      metricsAddress: `${advertiseHost}:${http.port}`,
      capabilities,
      cores: cfg.CPU_CORES,
      labels: parseLabels(cfg.NODE_LABELS),
    },
    cfg.LEASE_TTL_SEC,
    log,
    {
      // A restart under the same NODE_ID takes over the dead predecessor's registration; with TLS
      // only when our certificate names that id (the coordinator admits it only then, too).
      mayTakeOver: !tls || certNames(tls.cert, cfg.NODE_ID),
      isAlive: async (prior) => (await grpcHealth(prior.address, { timeoutMs: 1_000, creds: channelCredentials(tls), identity: cfg.NODE_ID, serviceName: 'tessera.v1.NodeAgent' })).serving,
    },
  );
  // A lost lease (etcd unreachable past the TTL) re-joins; work in flight continues, fenced on
  // its owner revisions. Another incarnation taking our id over ends this one.
  registration.on('replaced', () => {
    service.dropAll('another incarnation took over this node id');
    void life.stop('replaced by another incarnation').then(() => process.exit(1));
  });
  await registration.join();
  life.onStop('leave cluster', () => registration.leave());

  // Not ready while staging is full: published with the load figures (the coordinator places no
  // segment here, `tessera nodes` shows not-ready) and in the metrics; rechecked every beat.
  // What staging can ever hold (its disk less the reserve): a segment larger than every node's is refused up front.
  const stagingBytes = Math.max(0, (await stagingSpace(stagingDir)).total - cfg.STAGING_RESERVE_BYTES);
  publish = (): void => {
    metrics.busySlots.set(pool.busy);
    metrics.stagingFull.set(disk.full ? 1 : 0);
    void disk.freeBytes().then(
      (b) => metrics.stagingFreeBytes.set(b),
      () => undefined,
    );
    void disk.recheck().catch(() => undefined);
    registration.stillOurs().catch((err: unknown) => log.debug({ err }, 'registration check failed'));
    registration
      .publishStats(
        {
          busySlots: pool.busy,
          segmentsDone: service.segmentsDone,
          subSegmentsDone: 0,
          heartbeatMs: Date.now(),
          ...(speed.value !== undefined ? { speedMps: speed.value } : {}),
          ...(disk.full ? { notReady: `staging full: ${disk.full.reason}` } : {}),
          stagingBytes,
        },
        cfg.STATS_REFRESH_MS,
      )
      .catch((err: unknown) => log.debug({ err }, 'stats publish failed'));
  };
  publish();
  const statsTimer = setInterval(publish, cfg.HEARTBEAT_MS);
  life.onStop('stats', () => clearInterval(statsTimer));

  // Draining (DrainNode, or SIGTERM): take no new segments, finish or hand back what we hold, leave.
  const drain = async (why: string): Promise<void> => {
    if (service.draining) return;
    service.draining = true;
    log.info({ why, held: service.held.size }, 'draining');
    const deadline = Date.now() + cfg.DRAIN_TIMEOUT_MS;
    while (service.held.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    if (service.held.size > 0) service.dropAll('drain timeout: handing segments back');
  };
  const stopDrainWatch = await watchDrain(
    etcd,
    keys,
    cfg.NODE_ID,
    () => {
      void drain('drain requested')
        .then(() => registration.leave())
        // The drain mark has done its job (the node is gone); a restarted agent with this id starts fresh.
        .then(() =>
          etcd
            .delete()
            .key(keys.nodeDrain(cfg.NODE_ID))
            .catch(() => undefined),
        )
        .then(() => life.stop('drained'))
        .then(() => process.exit(0));
    },
    log,
  );
  life.onStop('drain watch', stopDrainWatch);
  life.onStop('drain', () => drain('shutdown'));

  life.state = 'running';
  log.info(
    { address: `${cfg.BIND_HOST}:${grpc.port}`, metricsPort: http.port, slots: cfg.WORKER_SLOTS, encoders: [...encoders], capabilities, labels: cfg.NODE_LABELS, tls: tls !== undefined },
    'node agent ready',
  );
}

runMain(main, log, life);
