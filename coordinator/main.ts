import { LocalHandoff } from '../common/local-handoff.js';
import type { Placement } from '../common/placement.js';
import { mkdir, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ClientCache } from '../common/grpc-clients.js';
import { startGrpcServer } from '../common/grpc-server.js';
import { Keys } from '../common/keys.js';
import { bootProcess, processEtcd, processTls, runMain } from '../common/process.js';
import { createRegistry, startMetricsServer } from '../common/metrics-server.js';
import { AdminService } from '../proto/gen/tessera/v1/admin.js';
import { JobServiceService } from '../common/bulk-codec.js';
import { availableEncoders } from '../transcoder/encoders.js';
import { createS3Client, ensureBucket, s3SettingsFromConfig } from '../common/s3-client.js';
import { adminHandlers } from './api/admin-service.js';
import { serverSecurity, tokenTable } from '../common/auth.js';
import { tenantTokens } from '../common/tenants.js';
import { coordinatorPolicy } from '../common/access-policy.js';
import { grpcHealth, healthCheck, HealthCtor } from '../common/health-client.js';
import { channelCredentials } from '../common/tls.js';
import { loadConfig, oidcSettings, startupRefusals } from './config.js';
import { OidcVerifier } from '../common/oidc.js';
import { sweepSettings } from '../common/config-schema.js';
import { StagingSweeper } from '../common/staging-sweeper.js';
import { jobServiceHandlers } from './api/job-service.js';
import { HistorySweeper } from './state/history-sweeper.js';
import { JobStore, type LeaderFence } from './state/job-store.js';
import { LeaderElection } from './state/leader.js';
import { coordinatorMetrics } from './metrics.js';
import { NodeRegistry } from './state/node-registry.js';
import { WorkStealer } from './scheduling/work-stealing.js';
import { RangeServer } from './input/range-source.js';
import { Scheduler } from './scheduling/scheduler.js';
import { Throughput } from './scheduling/throughput.js';
import { Autoscaler, type ScaleProvider } from './scaling/autoscaler.js';
import { LocalScaleProvider } from './scaling/scale-local.js';
import { KubernetesScaleProvider, inClusterSettings } from './scaling/scale-kubernetes.js';
import { WebhookOutbox } from './api/webhook-outbox.js';
import { outboundPolicy } from './input/safe-http.js';
import { releaseLeftovers } from './run/job-leftovers.js';
import { Journal } from './state/journal.js';
import { OpsProbe, opsMetrics } from './api/ops-probe.js';
import { startConsoleServer } from './console/server.js';

const { cfg, log, life } = bootProcess('coordinator', loadConfig, (c) => ({ coordinatorId: c.COORDINATOR_ID }), startupRefusals);

async function main(): Promise<void> {
  const keys = new Keys(cfg.ETCD_PREFIX);
  const stagingDir = resolve(cfg.STAGING_DIR, 'coordinator', cfg.COORDINATOR_ID);
  // What a previous life of this coordinator staged is re-staged by whichever leader resumes the job.
  await rm(stagingDir, { recursive: true, force: true });
  await mkdir(stagingDir, { recursive: true });
  const etcd = processEtcd(cfg, life);
  // Siblings too: a coordinator killed for good, or one whose id held its pid, never returns for its folder.
  const sweeper = new StagingSweeper({ ownDir: stagingDir, etcd, keys, settings: sweepSettings(cfg), log: log.child({ component: 'staging' }) });
  sweeper.start();
  life.onStop('staging sweeper', () => sweeper.stop());
  const s3 = createS3Client(s3SettingsFromConfig(cfg));
  life.onStop('s3', () => s3.destroy());
  await ensureBucket(s3, cfg.S3_BUCKET).catch((err: unknown) => log.warn({ err, bucket: cfg.S3_BUCKET }, 'could not ensure the default bucket'));

  const registry = createRegistry('coordinator');
  const metrics = coordinatorMetrics(registry);
  const tls = processTls(cfg);
  const peerCreds = channelCredentials(tls);
  const clients = new ClientCache(peerCreds);
  life.onStop('grpc clients', () => clients.closeAll());
  const encoders = await availableEncoders();
  const store = new JobStore(etcd, keys, cfg.JOB_HISTORY_LIMIT);
  // Operational gauges and the acceptance journal (alert rules; restores from a backup).
  const ops = opsMetrics(registry);
  const journal = cfg.JOURNAL_PREFIX ? new Journal(s3, cfg.S3_BUCKET, cfg.JOURNAL_PREFIX, log.child({ component: 'journal' }), () => ops.journalFailures.inc()) : undefined;
  store.onFinished = (rec) => {
    ops.finished.inc({ state: rec.state });
    void journal?.finished(rec);
  };
  const opsProbe = new OpsProbe(etcd, keys, store, metrics.jobs, ops, cfg.OPS_PROBE_INTERVAL_MS, log.child({ component: 'ops-probe' }));
  opsProbe.start();
  life.onStop('ops probe', () => opsProbe.stop());
  const leftovers = { etcd, keys, s3, bucket: cfg.S3_BUCKET, log, keepSucceededInput: cfg.KEEP_SUCCEEDED_UPLOADS };
  // With TLS a node is admitted only once its certificate proves the node id it registered.
  const admit = tls
    ? async (n: { id: string; address: string }): Promise<string | undefined> => {
        const h = await grpcHealth(n.address, { timeoutMs: cfg.RPC_TIMEOUT_MS, creds: peerCreds, identity: n.id, serviceName: 'tessera.v1.NodeAgent' });
        return h.serving ? undefined : `identity check of ${n.id} failed: ${h.reason ?? 'not serving'}`;
      }
    : undefined;
  // Health probes: a node registered in etcd but unreachable from here (an asymmetric partition)
  // takes no segments, and those it holds move. Any answer counts (a draining node says NOT_SERVING).
  // Each node's probes share one channel, kept between probes; its reconnects wait at most one
  // probe interval, so a healed or restarted node answers again at once.
  const probeBackoffMs = Math.max(cfg.NODE_PROBE_INTERVAL_MS, 1_000);
  const probeClients = new ClientCache(peerCreds, { 'grpc.initial_reconnect_backoff_ms': 1_000, 'grpc.max_reconnect_backoff_ms': probeBackoffMs });
  const probe = {
    intervalMs: cfg.NODE_PROBE_INTERVAL_MS,
    failures: cfg.NODE_PROBE_FAILURES,
    check: async (n: { id: string; address: string }): Promise<boolean> => {
      const h = await healthCheck(probeClients.get(HealthCtor, n.address, n.id), 'tessera.v1.NodeAgent', cfg.NODE_PROBE_TIMEOUT_MS);
      return h.serving || (h.reason ?? '').startsWith('health status');
    },
    forget: (address: string) => probeClients.forget(address),
    close: () => probeClients.closeAll(),
  };
  const nodes = new NodeRegistry(etcd, keys, log, 5_000, admit, cfg.NODE_PROBE_INTERVAL_MS > 0 ? probe : undefined);
  await nodes.start();
  life.onStop('node registry', () => nodes.stop());
  const election = new LeaderElection(etcd, keys.election(), cfg.COORDINATOR_ID, cfg.LEASE_TTL_SEC, log);
  const throughput = new Throughput();
  // Webhook events are written to the outbox with their state change (job-store); the leader delivers them.
  const webhooks = new WebhookOutbox(
    etcd,
    keys,
    {
      secret: cfg.WEBHOOK_SECRET ?? '',
      baseMs: cfg.WEBHOOK_BACKOFF_MS,
      maxMs: cfg.WEBHOOK_BACKOFF_MAX_MS,
      retryForMs: cfg.WEBHOOK_RETRY_FOR_MS,
      timeoutMs: cfg.WEBHOOK_TIMEOUT_MS,
      rescanMs: cfg.WEBHOOK_RESCAN_MS,
      concurrency: cfg.WEBHOOK_CONCURRENCY,
      policy: outboundPolicy(cfg, { hostList: false }),
    },
    log.child({ component: 'webhooks' }),
    { onRetry: () => metrics.retries.inc({ kind: 'webhook' }) },
  );
  await webhooks.start();
  life.onStop('webhooks', () => webhooks.stop());
  election.on('elected', (fence: LeaderFence) => webhooks.elected(fence));
  election.on('deposed', () => webhooks.deposed());
  const load = new Map<string, number>();
  const ranges = new RangeServer(log.child({ component: 'ranges' }));
  life.onStop('range server', () => ranges.close());
  const stealer = new WorkStealer({ etcd, keys, registry: nodes, clients, metrics, log: log.child({ component: 'stealing' }), rpcTimeoutMs: cfg.RPC_TIMEOUT_MS, intervalMs: cfg.STEAL_INTERVAL_MS });
  stealer.start();
  life.onStop('work stealing', () => stealer.stop());
  const waiting = new Map<string, Placement>(); // jobs waiting for a node their placement allows
  const scheduler = new Scheduler(
    etcd,
    keys,
    store,
    election,
    {
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
      stealer,
      // Co-located node agents (one staging directory) read segments from disk, not a stream.
      handoff: new LocalHandoff(cfg.LOCAL_HANDOFF ? resolve(cfg.STAGING_DIR) : undefined),
      ranges,
      waiting,
      onFrames: (n) => {
        throughput.add(n);
        metrics.framesDone.inc(n);
      },
      releaseLeftovers: (rec) => releaseLeftovers(leftovers, rec),
    },
    log,
  );
  await scheduler.start();
  life.onStop('scheduler', () => scheduler.stop());
  let autoscaler: Autoscaler | undefined;
  if (cfg.AUTOSCALER !== 'off') {
    const provider: ScaleProvider =
      cfg.AUTOSCALER === 'local'
        ? new LocalScaleProvider(inheritedNodeEnv(), cfg.AUTOSCALER_NODE_SLOTS, resolve(cfg.STAGING_DIR, '..', 'logs'), 'auto-', log)
        : new KubernetesScaleProvider(await inClusterSettings(cfg.K8S_NAMESPACE, cfg.K8S_NODE_DEPLOYMENT, cfg.KUBERNETES_SERVICE_HOST ?? 'kubernetes.default.svc', cfg.KUBERNETES_SERVICE_PORT), log);
    autoscaler = new Autoscaler(
      etcd,
      keys,
      store,
      nodes,
      load,
      provider,
      {
        minNodes: cfg.AUTOSCALER_MIN_NODES,
        maxNodes: cfg.AUTOSCALER_MAX_NODES,
        backlogPerSlot: cfg.AUTOSCALER_BACKLOG_PER_SLOT,
        scaleUpStep: cfg.AUTOSCALER_SCALE_UP_STEP,
        idleMs: cfg.AUTOSCALER_IDLE_MS,
        upCooldownMs: cfg.AUTOSCALER_UP_COOLDOWN_MS,
        downCooldownMs: cfg.AUTOSCALER_DOWN_COOLDOWN_MS,
        pools: cfg.AUTOSCALER_POOLS,
      },
      () => election.isLeader,
      metrics,
      log.child({ component: 'autoscaler' }),
      cfg.AUTOSCALER_INTERVAL_MS,
      waiting,
      () => stealer.backlog(),
    );
    autoscaler.start();
    const a = autoscaler;
    life.onStop('autoscaler', () => a.stop());
  }
  const history = new HistorySweeper(
    store,
    {
      archiveAfterMs: cfg.HISTORY_ARCHIVE_AFTER_MS,
      maxAgeMs: Math.round(cfg.HISTORY_RETENTION_DAYS * 86_400_000),
      maxJobs: cfg.HISTORY_MAX_JOBS,
      batch: cfg.HISTORY_SWEEP_BATCH,
      intervalMs: cfg.HISTORY_SWEEP_INTERVAL_MS,
    },
    () => election.isLeader,
    log.child({ component: 'history' }),
    async (jobId) => {
      const rec = await store.get(jobId);
      if (rec) await releaseLeftovers(leftovers, rec);
    },
  );
  history.start();
  life.onStop('history sweeper', () => history.stop());
  election.on('elected', () => metrics.isLeader.set(1));
  election.on('deposed', () => metrics.isLeader.set(0));
  election.start();
  life.onStop('election', () => election.resign());

  // Tenants' tokens join the table with their scopes; the interceptor tells handlers whose they are.
  const tokens = tokenTable([...cfg.API_TOKENS, ...cfg.TENANTS.flatMap((t) => t.apiTokens)], [...cfg.READ_TOKENS, ...cfg.TENANTS.flatMap((t) => t.readTokens)], cfg.ADMIN_TOKENS);
  const oidc = oidcSettings(cfg);
  if (oidc) log.info({ issuer: oidc.issuer, audience: oidc.audience }, 'OIDC access tokens accepted');
  if (tokens.size === 0 && !oidc) log.warn({ bindHost: cfg.BIND_HOST }, 'ALLOW_ANONYMOUS=true and no API tokens: the client and admin APIs are open to anyone who can reach them');
  const grpc = await startGrpcServer(
    cfg.BIND_HOST,
    cfg.GRPC_PORT,
    [
      {
        name: 'tessera.v1.JobService',
        definition: JobServiceService,
        implementation: jobServiceHandlers({ cfg, etcd, keys, store, registry: nodes, s3, encoders, stagingDir, metrics, log, onSubmitted: () => scheduler.kick(), journal }),
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
          autoscalerDecisions: () => autoscaler?.decisions ?? [],
        }),
      },
    ],
    {
      reflection: ['jobs.proto', 'admin.proto'],
      // One interceptor checks every call: certificate role (mutual TLS) and bearer-token scope.
      ...serverSecurity(tls, coordinatorPolicy, tokens, cfg.TLS_REQUIRE_CLIENT_CERT, oidc ? new OidcVerifier(oidc) : undefined, tenantTokens(cfg.TENANTS)),
      maxConcurrentStreams: cfg.GRPC_MAX_CONCURRENT_STREAMS,
    },
  );
  life.onStop('grpc server', () => grpc.close(5_000));

  // Gauges that describe the cluster, refreshed on a timer (cheap: in-memory + one count).
  const gauges = setInterval(() => {
    const all = nodes.all();
    metrics.nodes.set({ state: 'ready' }, all.filter((n) => !n.draining).length);
    metrics.nodes.set({ state: 'draining' }, all.filter((n) => n.draining).length);
    store.queueDepth().then(
      (n) => metrics.queueDepth.set(n),
      () => undefined,
    );
    metrics.fencingRejections.inc(store.fencingRejections - fenceSeen);
    fenceSeen = store.fencingRejections;
  }, 2_000);
  let fenceSeen = 0;
  life.onStop('gauges', () => clearInterval(gauges));
  const http = await startMetricsServer(registry, cfg.METRICS_PORT, cfg.BIND_HOST, () => life.state === 'running');
  life.onStop('metrics server', () => http.close());
  // The web console: its own port; it calls this coordinator's API over loopback with the
  // browser's bearer token (the same policy as every client), as a coordinator when TLS is on.
  let consoleUrl: string | undefined;
  if (cfg.CONSOLE_PORT > 0) {
    const loopback = cfg.BIND_HOST === '0.0.0.0' || cfg.BIND_HOST === '::' ? '127.0.0.1' : cfg.BIND_HOST;
    try {
      const web = await startConsoleServer({
        host: cfg.BIND_HOST,
        port: cfg.CONSOLE_PORT,
        grpcAddress: `${loopback.includes(':') ? `[${loopback}]` : loopback}:${grpc.port}`,
        creds: peerCreds,
        ...(tls ? { identity: cfg.COORDINATOR_ID, tls } : {}),
        s3,
        log: log.child({ component: 'console' }),
        timeoutMs: cfg.RPC_TIMEOUT_MS,
      });
      consoleUrl = web.url;
      life.onStop('console', () => web.close());
    } catch (err) {
      // The console is a view: a port in use must not keep the coordinator from its work.
      log.error({ err, port: cfg.CONSOLE_PORT }, 'the web console could not listen; running without it');
    }
  }
  life.state = 'running';
  log.info({ address: `${cfg.BIND_HOST}:${grpc.port}`, metricsPort: http.port, consoleUrl, tls: tls !== undefined }, 'coordinator ready');
}

/** The environment a locally started node agent inherits: cluster settings, not this process's identity. */
function inheritedNodeEnv(): Record<string, string> {
  const pass = [
    'PATH',
    'HOME',
    'ETCD_ENDPOINTS',
    'ETCD_PREFIX',
    'ETCD_USERNAME',
    'ETCD_PASSWORD',
    'ETCD_CALL_TIMEOUT_MS',
    'ETCD_TLS_CA_FILE',
    'ETCD_TLS_CERT_FILE',
    'ETCD_TLS_KEY_FILE',
    'LOG_LEVEL',
    'BIND_HOST',
    'STAGING_DIR',
    'LOCAL_HANDOFF',
    'LEASE_TTL_SEC',
    'HEARTBEAT_MS',
    'MIN_SUB_SEGMENT_SEC',
    'FFMPEG_THREADS',
    'DRAIN_TIMEOUT_MS',
    'SHUTDOWN_GRACE_MS',
  ];
  const out: Record<string, string> = {};
  for (const k of pass) {
    const v = process.env[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

runMain(main, log, life);
