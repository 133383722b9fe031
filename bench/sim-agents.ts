import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createEtcd } from '../common/etcd.js';
import { ClientCache } from '../common/grpc-clients.js';
import { startGrpcServer } from '../common/grpc-server.js';
import { Keys } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import { VERSION } from '../common/version.js';
import { agentMetrics } from '../node-agent/metrics.js';
import { Registration } from '../node-agent/registration.js';
import type { SegmentMedia } from '../node-agent/segment-media.js';
import { AgentService } from '../node-agent/service.js';
import { NodeAgentService, UploaderClient } from '../common/bulk-codec.js';
import { WorkerPool } from '../transcoder/worker-pool.js';

export interface SimAgentsOptions {
  count: number;
  slots: number;
  etcdEndpoints: string[];
  etcdPrefix?: string;
  /** Staging root; each agent gets `<dir>/<nodeId>`. */
  dir: string;
  media: SegmentMedia;
  leaseTtlSec: number;
  /** How often each agent publishes its load figures (nodestats/<id>), ms. */
  heartbeatMs: number;
  log: Logger;
  /** Node ids are `<idPrefix><nnn>`. */
  idPrefix?: string;
  etcdCallTimeoutMs?: number;
  minSubSegmentSec?: number;
}

export interface SimAgents {
  ids: string[];
  /** Segments finished, over all agents. */
  segmentsDone(): number;
  /** Stats heartbeats written to etcd (nodestats/<id> puts), over all agents. */
  statsPublished(): number;
  /** Leaves the cluster and closes everything. Idempotent; every step runs even if one fails. */
  stop(): Promise<void>;
}

interface OneAgent {
  id: string;
  service: AgentService;
  published: { n: number };
  stop(): Promise<void>;
}

/**
 * Many node agents in one process, for the control-plane benchmark. Each is a real agent as far
 * as the cluster can tell: its own gRPC server on 127.0.0.1:0 (the real AgentService: segment
 * transfer with fsync and SHA-256 check, RunSegment with progress, fenced checkpoints, parts to
 * the real uploader), its own etcd connection, lease and registration, its own worker pool and
 * stats heartbeat. Only the media work is whatever `media` does (a simulation in the benchmark).
 * Not hosted here: the drain watch and the metrics HTTP server (one port per agent, unused).
 */
export async function startSimAgents(o: SimAgentsOptions): Promise<SimAgents> {
  const keys = new Keys(o.etcdPrefix ?? '/tessera/');
  const agents: OneAgent[] = [];
  const idPrefix = o.idPrefix ?? 'sim-';
  const width = String(Math.max(1, o.count - 1)).length;
  try {
    // Started a few at a time: 100 registrations at once would only measure the start-up burst.
    for (let i = 0; i < o.count; i += 10) {
      const batch = Array.from({ length: Math.min(10, o.count - i) }, (_, j) => `${idPrefix}${String(i + j).padStart(width, '0')}`);
      agents.push(...(await Promise.all(batch.map((id) => startOne(id, keys, o)))));
    }
  } catch (err) {
    await Promise.allSettled(agents.map((a) => a.stop()));
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    ids: agents.map((a) => a.id),
    segmentsDone: () => agents.reduce((n, a) => n + a.service.segmentsDone, 0),
    statsPublished: () => agents.reduce((n, a) => n + a.published.n, 0),
    stop: () => {
      stopping ??= Promise.allSettled(agents.map((a) => a.stop())).then(() => undefined);
      return stopping;
    },
  };
}

async function startOne(id: string, keys: Keys, o: SimAgentsOptions): Promise<OneAgent> {
  const log = o.log.child({ nodeId: id });
  const staging = join(o.dir, id);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  const etcd = createEtcd({ endpoints: o.etcdEndpoints, callTimeoutMs: o.etcdCallTimeoutMs ?? 5_000 });
  const clients = new ClientCache();
  const metrics = agentMetrics(new Registry());
  const pool = new WorkerPool(o.slots);
  const service = new AgentService(
    staging,
    8 * 1024 ** 3,
    {
      etcd,
      keys,
      log,
      pool,
      nodeId: id,
      slots: o.slots,
      minSubSegmentSec: o.minSubSegmentSec ?? 0.1,
      maxChunkSec: 3600,
      ffmpegThreads: 0,
      noProgressMs: 60_000,
      wallClockMs: 3_600_000,
      subSegmentAttempts: 3,
      uploadTimeoutMs: 60_000,
      uploaderFor: (address) => clients.get(UploaderClient, address),
      onFenced: () => metrics.fencingRejections.inc(),
      onSubSegmentDone: (frames, seconds) => {
        metrics.framesTotal.inc(frames);
        metrics.transcodeSeconds.observe(seconds);
      },
      onRetry: (kind) => metrics.retries.inc({ kind }),
      media: o.media,
    },
    metrics,
    log,
  );
  const steps: { name: string; fn: () => Promise<void> | void }[] = [];
  const published = { n: 0 };
  const stop = async (): Promise<void> => {
    for (const s of steps.splice(0).reverse()) {
      try {
        await s.fn();
      } catch (err) {
        log.warn({ err, step: s.name }, 'sim agent stop step failed');
      }
    }
  };
  steps.push({ name: 'etcd', fn: () => etcd.close() });
  steps.push({ name: 'staging', fn: () => rm(staging, { recursive: true, force: true }) });
  steps.push({ name: 'grpc clients', fn: () => clients.closeAll() });
  try {
    const grpc = await startGrpcServer('127.0.0.1', 0, [{ name: 'tessera.v1.NodeAgent', definition: NodeAgentService, implementation: service.handlers() }]);
    steps.push({ name: 'grpc server', fn: () => grpc.close(2_000) });
    const registration = new Registration(
      etcd,
      keys,
      { id, address: `127.0.0.1:${grpc.port}`, slots: o.slots, encoders: ['libx264'], version: VERSION, startedAtMs: Date.now(), metricsAddress: '' },
      o.leaseTtlSec,
      log,
    );
    registration.on('lost', () => service.dropAll('lease lost'));
    await registration.join();
    steps.push({ name: 'leave', fn: () => registration.leave() });
    const publish = (): void => {
      registration
        // The same rule as the real agent (node-agent/main.ts): unchanged figures every 10 heartbeats.
        .publishStats({ busySlots: pool.busy, segmentsDone: service.segmentsDone, subSegmentsDone: 0, heartbeatMs: Date.now() }, o.heartbeatMs * 10)
        .then((wrote) => {
          if (wrote) published.n++;
        })
        .catch((err: unknown) => log.debug({ err }, 'stats publish failed'));
    };
    publish();
    const timer = setInterval(publish, o.heartbeatMs);
    steps.push({ name: 'stats', fn: () => clearInterval(timer) });
    steps.push({ name: 'drop work', fn: () => service.dropAll('shutting down') });
  } catch (err) {
    await stop();
    throw err;
  }
  return { id, service, published, stop };
}
