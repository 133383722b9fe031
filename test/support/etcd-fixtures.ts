import { randomUUID } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll } from 'vitest';
import { startEtcdServer, type EtcdServer } from '../etcd-server.js';
import type { LeaderFence } from '../../common/etcd-tx/compare.js';
import { Keys } from '../../common/keys.js';
import { asJobRecord, specHash, type JobPlan, type JobRecord, type JobRecordDraft } from '../../coordinator/state/job-model.js';
import { stageName } from '../../coordinator/state/transactions/job-writes.js';
import { JobResult, JobSpec, PlannedRendition, SourceInfo } from '../../proto/gen/tessera/v1/types.js';

/**
 * One real etcd for the describe block that calls it (started before its tests, stopped after);
 * hooks the block registers later run after the start. Read `client` inside tests and hooks.
 */
export function useEtcd(): EtcdServer {
  let server: EtcdServer | undefined;
  beforeAll(async () => {
    server = await startEtcdServer();
  });
  afterAll(async () => {
    await server?.stop();
  });
  const started = (): EtcdServer => {
    if (!server) throw new Error('etcd is not started: useEtcd() serves the tests and hooks of its describe block');
    return server;
  };
  return {
    get endpoint() {
      return started().endpoint;
    },
    get client() {
      return started().client;
    },
    restart: () => started().restart(),
    stop: () => started().stop(),
  };
}

/** A key schema under a prefix of its own, so test files never see each other's keys. */
export function randomKeys(): Keys {
  return new Keys(`/unit-${randomUUID().slice(0, 8)}/`);
}

let seq = 0;

/** What a job past planning carries (plan, source, uploader): for records moved on to RUNNING and beyond. */
export function plannedFields(): { plan: JobPlan; source: SourceInfo; uploaderId: string } {
  return {
    plan: {
      cuts: [{ index: 0, startSec: 0, endSec: 4, frames: 120, nodeId: 'node-0' }],
      renditions: [PlannedRendition.fromPartial({ name: '360p', width: 640, height: 360, videoBitrateKbps: 800, codec: 'h264', encoder: 'libx264', preset: 'veryfast' })],
      container: 'mp4',
      bucket: 'tessera-output',
      key: 'jobs/test.zip',
    },
    source: SourceInfo.fromPartial({ width: 640, height: 360, fps: 30, frames: 120, durationSec: 4 }),
    uploaderId: 'uploader-0',
  };
}

/** A job record as the job service writes it (QUEUED unless `o.state` says; what a later state needs is filled in). */
export function queuedJob(keys: Keys, o: Partial<Omit<JobRecordDraft, 'spec'>> & { spec?: Partial<JobSpec> } = {}): JobRecord {
  const now = Date.now();
  const id = o.id ?? `job-${now.toString(36)}-${(seq++).toString(36)}`;
  const spec = JobSpec.fromPartial({ inputUri: 's3://in/clip.mp4', container: 'mp4', ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' }], ...o.spec });
  const { spec: _s, ...rest } = o;
  const state = o.state ?? 'QUEUED';
  return asJobRecord({
    id,
    spec,
    specHash: specHash(spec),
    state,
    stage: stageName(state),
    createdAtMs: now,
    updatedAtMs: now,
    queueKey: keys.queueEntry(spec.priority, `${now.toString(36)}-${seq}`, id),
    history: [{ atMs: now, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'accepted' }],
    timings: {},
    ...(state === 'QUEUED' || state === 'PREPARING' ? {} : plannedFields()),
    ...(state === 'SUCCEEDED' ? { result: JobResult.fromPartial({ bucket: 'tessera-output', key: 'jobs/test.zip' }) } : {}),
    ...(state === 'SUCCEEDED' || state === 'FAILED' || state === 'CANCELLED' ? { finishedAtMs: now } : {}),
    ...rest,
  });
}

/** Makes `id` the leader as LeaderElection would (a key without a lease here); returns its fence. */
export async function becomeLeader(etcd: Etcd3, keys: Keys, id = 'coordinator-test'): Promise<LeaderFence> {
  await etcd.put(keys.election()).value(id);
  const kv = (await etcd.get(keys.election()).exec()).kvs[0]!;
  return { key: keys.election(), createRevision: kv.create_revision };
}

/** Another coordinator takes over: the election key is created again, so `fence` no longer holds. */
export async function depose(etcd: Etcd3, keys: Keys): Promise<LeaderFence> {
  await etcd.delete().key(keys.election());
  return becomeLeader(etcd, keys, 'coordinator-next');
}
