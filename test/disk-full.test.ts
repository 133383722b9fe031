import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeRecord } from '../common/records.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { checkArchive, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { logLines, scrapeCounter } from './faults-helpers.js';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
// The lab's small disk (LAB.md): one node agent's staging on a 200 MiB tmpfs.
const TMPFS_SIZE = '200m';

describe.skipIf(!isRoot)('a node agent whose staging disk is full (needs root for a tmpfs mount)', () => {
  let t: TestCluster | undefined;
  let mountDir: string | undefined;
  let mounted = false;
  let work: string;

  beforeAll(async () => {
    mountDir = await mkdtemp(join(tmpdir(), 'tessera-disks-tmpfs-'));
    await run('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE}`, 'tmpfs', mountDir]);
    mounted = true;
    work = await mkdtemp(join(tmpdir(), 'tessera-disks-work-'));
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, slots: 2 });
    // The third node keeps its staging on the tmpfs (its default reserve, 64 MiB, applies).
    await t.cluster.addNode({ id: 'node-full', env: { STAGING_DIR: mountDir } });
  });

  afterAll(async () => {
    try {
      await t?.close();
    } finally {
      if (mounted && mountDir) await run('umount', [mountDir]).catch(async () => run('umount', ['-l', mountDir!]));
      if (mountDir) await rm(mountDir, { recursive: true, force: true });
      if (work) await rm(work, { recursive: true, force: true });
    }
  });

  it('a source that does not fit there: the job succeeds on the other nodes and the full node shows not-ready', async () => {
    const tc = t!;
    // 20 s of noisy 360p at near-lossless quality: ~280 MB, so each of 3 segments (~90 MB, twice
    // that with its chunks) cannot fit in 200 MiB less the reserve.
    const input = join(tc.inputDir, 'noisy-20s.mp4');
    await run('ffmpeg', [
      '-hide_banner',
      '-nostdin',
      '-y',
      '-loglevel',
      'error',
      '-f',
      'lavfi',
      '-i',
      'testsrc2=size=640x360:rate=30:duration=20,noise=alls=60:allf=t',
      '-f',
      'lavfi',
      '-i',
      'sine=frequency=440:sample_rate=48000:duration=20',
      '-c:v',
      'libx264',
      '-preset',
      'ultrafast',
      '-qp',
      '2',
      '-pix_fmt',
      'yuv420p',
      '-g',
      '30',
      '-keyint_min',
      '30',
      '-sc_threshold',
      '0',
      '-bf',
      '0',
      '-c:a',
      'aac',
      '-b:a',
      '128k',
      '-shortest',
      '-movflags',
      '+faststart',
      input,
    ]);
    const bytes = (await stat(input)).size;
    expect(bytes).toBeGreaterThan(200 * 1024 ** 2);
    expect((await tc.client.listNodes()).map((n) => `${n.id}:${n.state}`).sort()).toEqual(['node-0:ready', 'node-1:ready', 'node-full:ready']);

    const started = Date.now();
    const { jobId } = await tc.client.submit({ inputUri: input, ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast' }] });
    const job = await tc.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const a = await checkArchive(tc.s3, job, work);
    for (const r of a.renditions) {
      expect(r.frames).toBe(600);
      expect(r.sha256).toBe(r.manifestSha256);
    }
    // Every segment was finished by a node with room; the full one was asked and said no.
    expect(job.segments.map((s) => s.nodeId)).not.toContain('node-full');
    const refusals = logLines(tc.dir, 'node-full').filter((l) => l.msg === 'staging is full: taking no new work');
    expect(refusals.length).toBe(1);
    // What an operator sees: `tessera nodes` says not-ready, and so does the node's metrics page.
    const nodes = await tc.client.listNodes();
    expect(nodes.find((n) => n.id === 'node-full')?.state).toBe('not-ready');
    expect(nodes.filter((n) => n.id !== 'node-full').every((n) => n.state === 'ready')).toBe(true);
    const rec = JSON.parse((await tc.cluster.client().get('/tessera/nodes/node-full').string())!) as NodeRecord;
    expect(await scrapeCounter(rec.metricsAddress, 'tessera_node_staging_full')).toBe(1);
    const ready = await fetch(`http://${rec.metricsAddress}/readyz`, { signal: AbortSignal.timeout(3_000) });
    expect(ready.status).toBe(503);
    const assigned = job.history.filter((h) => h.nodeId === 'node-full' && h.scope.startsWith('segment/')).length;
    process.stdout.write(
      `MEASURE disk full: ${(bytes / 1024 ** 2).toFixed(0)} MiB source, node-full staging ${TMPFS_SIZE} tmpfs; ${assigned} trail entries on node-full, ` +
        `refused with NO_SPACE and reassigned; SUCCEEDED in ${((Date.now() - started) / 1000).toFixed(1)} s, 600/600 frames; node-full not-ready\n`,
    );
  }, 400_000);
});
