import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys } from '../common/keys.js';
import { createLogger } from '../common/logger.js';
import { StagingSweeper } from '../common/staging-sweeper.js';
import { specHash, type JobRecord } from '../coordinator/state/job-model.js';
import { newJobId } from '../coordinator/api/job-service.js';
import { JobStore, stageName } from '../coordinator/state/job-store.js';
import { JobSpec } from '../proto/gen/tessera/v1/types.js';
import { filesUnder } from './helpers.js';
import { startEtcdServer, type EtcdServer } from './etcd-server.js';

/**
 * The sweeper every role runs, against a real etcd and a real folder tree laid out as the
 * coordinators lay theirs out (`coordinator/<id>/<jobId>/…`, `uploads/`), including the folder
 * of a coordinator whose id held its pid (never started again under that id).
 */
describe('staging sweeper (real etcd, real files)', () => {
  let e: EtcdServer;
  let root: string;
  const keys = new Keys('/tessera/');

  beforeAll(async () => {
    e = await startEtcdServer();
    root = await mkdtemp(join(tmpdir(), 'tessera-sweep-'));
  });
  afterAll(async () => {
    await e?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const job = async (state: 'RUNNING' | 'SUCCEEDED' | 'CANCELLED'): Promise<string> => {
    const store = new JobStore(e.client, keys, 500);
    const now = Date.now();
    const spec = JobSpec.fromPartial({ inputUri: 's3://in/clip.mp4', ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' }], container: 'mp4' });
    const id = newJobId();
    const rec: JobRecord = {
      id,
      spec,
      specHash: specHash(spec),
      state: 'QUEUED',
      stage: stageName('QUEUED'),
      createdAtMs: now,
      updatedAtMs: now,
      queueKey: keys.queueEntry(0, now.toString(36), id),
      history: [],
      timings: {},
    };
    await store.create(rec, undefined);
    if (state === 'CANCELLED') await store.cancel(id, 'test');
    else await store.transition(id, state, 'test');
    return id;
  };
  const file = async (path: string, ageMs: number): Promise<void> => {
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, 'x');
    const t = (Date.now() - ageMs) / 1000;
    await utimes(path, t, t);
  };

  it('removes finished jobs’ folders (own and siblings’), stale .partial files and old leftovers; keeps jobs in flight and fresh files', async () => {
    const [running, done, cancelled] = [await job('RUNNING'), await job('SUCCEEDED'), await job('CANCELLED')];
    const gone = newJobId(); // archived and dropped by retention: neither jobs/ nor history/
    const own = join(root, 'coordinator', 'coordinator-a');
    const dead = join(root, 'coordinator', 'coordinator-host-12345'); // a pid-named id, never back
    const HOUR = 3_600_000;
    await file(join(own, running, 'input.src'), HOUR);
    await file(join(own, running, 'segments', 'seg-0.mkv.partial'), HOUR); // stale: nobody writes it
    await file(join(own, running, 'segments', 'seg-1.mkv.partial'), 0); // being written
    await file(join(own, done, 'input.src'), 10_000);
    await file(join(own, 'uploads', 'u1'), HOUR); // an upload a crash left behind
    await file(join(own, 'uploads', 'u2.partial'), 0); // an upload being received
    await file(join(dead, cancelled, 'input.src'), 10_000);
    await file(join(dead, gone, 'segments', 'seg-0.mkv'), 10_000);
    await file(join(dead, running, 'input.src'), 10_000); // in flight: kept, whoever staged it
    await file(join(own, cancelled, 'fresh'), 0); // finished, but changed within the grace period
    // Folders as old as their files (creating them just now made them look fresh).
    const age = async (path: string, ms: number): Promise<void> => {
      const t = (Date.now() - ms) / 1000;
      await utimes(path, t, t);
    };
    for (const d of [join(own, done), join(dead, cancelled), join(dead, gone, 'segments'), join(dead, gone), join(dead, running)]) await age(d, 10_000);

    const finished: string[] = [];
    const sweeper = new StagingSweeper({
      ownDir: own,
      etcd: e.client,
      keys,
      settings: { intervalMs: 60_000, graceMs: 5_000, staleMs: 60_000 },
      log: createLogger('test', 'warn'),
      onFinished: async (id, state) => {
        finished.push(`${id === done ? 'done' : id === cancelled ? 'cancelled' : id === gone ? 'gone' : id}:${state}`);
      },
    });
    const report = await sweeper.sweep();
    const left = filesUnder(root)
      .map((f) => f.slice(root.length + 1))
      .sort();
    expect(left).toEqual(
      [
        `coordinator/coordinator-a/${cancelled}/fresh`,
        `coordinator/coordinator-a/${running}/input.src`,
        `coordinator/coordinator-a/${running}/segments/seg-1.mkv.partial`,
        `coordinator/coordinator-a/uploads/u2.partial`,
        `coordinator/coordinator-host-12345/${running}/input.src`,
      ].sort(),
    );
    expect(report).toEqual({ jobDirs: 3, staleFiles: 2 });
    expect(finished.sort()).toEqual(['cancelled:CANCELLED', 'done:SUCCEEDED', 'gone:GONE']);
    await sweeper.stop();
  });
});
