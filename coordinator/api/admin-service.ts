import { capabilitiesOf, formatLabels } from '../../common/placement.js';
import { capacityWeights } from '../scheduling/plan.js';
import type { Etcd3 } from 'etcd3';
import { AppError, isAppError } from '../../common/errors.js';
import { unary } from '../../common/grpc.js';
import type { Keys } from '../../common/keys.js';
import type { Logger } from '../../common/logger.js';
import type { AdminServer, NodeInfo } from '../../proto/gen/tessera/v1/admin.js';
import type { JobStore } from '../state/job-store.js';
import type { LeaderElection } from '../state/leader.js';
import type { NodeRegistry, NodeView } from '../state/node-registry.js';

export interface AdminDeps {
  etcd: Etcd3;
  keys: Keys;
  store: JobStore;
  registry: NodeRegistry;
  election: LeaderElection;
  log: Logger;
  /** Frames per second over the last minute, from node progress (leader only; 0 elsewhere). */
  throughput: () => number;
  segmentsInFlight: () => number;
  autoscalerDecisions: () => string[];
}

export function toNodeInfo(n: NodeView): NodeInfo {
  return {
    id: n.id,
    address: n.address,
    slots: n.slots,
    busySlots: n.stats?.busySlots ?? 0,
    encoders: n.encoders,
    version: n.version,
    state: n.admission !== 'admitted' ? n.admission : n.draining ? 'draining' : n.stats?.notReady || n.unreachableSinceMs !== undefined ? 'not-ready' : 'ready',
    stateReason: n.admissionReason ?? (n.unreachableSinceMs !== undefined ? `unreachable from the coordinator since ${new Date(n.unreachableSinceMs).toISOString()}` : (n.stats?.notReady ?? '')),
    lastHeartbeatMs: n.stats?.heartbeatMs ?? 0,
    segmentsDone: n.stats?.segmentsDone ?? 0,
    startedAtMs: n.startedAtMs,
    metricsAddress: n.metricsAddress,
    speedMps: n.stats?.speedMps ?? 0,
    capacity: 0,
    capabilities: capabilitiesOf(n),
    cores: n.cores ?? 0,
    labels: formatLabels(n.labels ?? {}),
  };
}

/** NodeInfo for every node; a ready node's capacity is its weight among the ready ones (the planner's), others 0. */
export function toNodeInfos(all: readonly NodeView[], ready: readonly NodeView[]): NodeInfo[] {
  const w = capacityWeights(ready);
  const byId = new Map(ready.map((n, i) => [n.id, Math.round(w[i]! * 1000) / 1000]));
  return all.map((n) => ({ ...toNodeInfo(n), capacity: byId.get(n.id) ?? 0 }));
}

/** The operator API: nodes, cluster status, drain, job detail. */
export function adminHandlers(d: AdminDeps): AdminServer {
  const { log } = d;
  const node = async (id: string): Promise<NodeView> => {
    await d.registry.refresh();
    const n = d.registry.get(id);
    if (!n) throw new AppError('NOT_FOUND', `no node with id ${id}`);
    return n;
  };
  return {
    listNodes: unary(log, async () => {
      await d.registry.refresh();
      return { nodes: toNodeInfos(d.registry.all(), d.registry.ready()) };
    }),
    getClusterStatus: unary(log, async () => {
      // In parallel; jobs are counted by etcd on the state index (count-only): no record is read.
      const [, byState, leaderId, queueDepth] = await Promise.all([d.registry.refresh(), d.store.countByState(), d.election.leaderId(), d.store.queueDepth()]);
      const counts = [...byState].filter(([, n]) => n > 0);
      return {
        leaderId,
        queueDepth,
        jobsByState: counts.map(([state, count]) => ({ state, count })),
        segmentsInFlight: d.segmentsInFlight(),
        framesPerSecond1m: d.throughput(),
        nodes: toNodeInfos(d.registry.all(), d.registry.ready()),
        autoscalerDecisions: d.autoscalerDecisions(),
      };
    }),
    drainNode: unary(log, async (req) => {
      const before = await node(req.nodeId);
      await d.etcd.put(d.keys.nodeDrain(req.nodeId)).value(JSON.stringify({ atMs: Date.now() }));
      log.info({ nodeId: req.nodeId }, 'node marked for draining');
      // An idle node drains and leaves at once: the drain succeeded even if it is gone by now.
      await d.registry.refresh();
      return toNodeInfo({ ...(d.registry.get(req.nodeId) ?? before), draining: true });
    }),
    undrainNode: unary(log, async (req) => {
      await node(req.nodeId).catch((err: unknown) => {
        // A drained node leaves once its work is done: nothing is left to undrain.
        throw isAppError(err, 'NOT_FOUND')
          ? new AppError(
              'NOT_FOUND',
              `node ${req.nodeId} is not registered: a drained node leaves the cluster once its work is done, so there is nothing to undrain; start a node agent again to bring the capacity back`,
            )
          : err;
      });
      await d.etcd.delete().key(d.keys.nodeDrain(req.nodeId));
      return toNodeInfo(await node(req.nodeId));
    }),
    getJobDetail: unary(log, async (req) => d.store.view(req.jobId)),
  };
}
