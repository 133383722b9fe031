import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobTraceId } from '../common/trace.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { fixture, startTestCluster, type TestCluster } from './helpers.js';

/** Every JSON line of every Tessera process's log (coordinator, node agents, uploader). */
async function tesseraLogLines(dir: string): Promise<{ file: string; line: Record<string, unknown>; raw: string }[]> {
  const out: { file: string; line: Record<string, unknown>; raw: string }[] = [];
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.log'))) {
    for (const raw of (await readFile(join(dir, file), 'utf8')).split('\n')) {
      if (!raw.startsWith('{')) continue;
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (['coordinator', 'node-agent', 'uploader'].includes(String(line.service))) out.push({ file, line, raw });
    }
  }
  return out;
}

describe('job logs', () => {
  let t: TestCluster;
  beforeAll(async () => {
    // Debug level: every line the processes write about the job is checked, not only info ones.
    // Short staging grace: the sweepers' lines about the finished job are written before we stop.
    t = await startTestCluster({ nodes: 2, env: { LOG_LEVEL: 'debug', STAGING_SWEEP_INTERVAL_MS: '300', STAGING_SWEEP_GRACE_MS: '200' } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('every log line about a job, in every process, carries its jobId and trace id', async () => {
    const clip = await fixture(t.inputDir, 'clip-4s.mp4', { seconds: 4, width: 320, height: 180, fps: 25 });
    const { jobId } = await t.client.upload(clip, { ladder: [{ name: '144p', height: 144, videoBitrateKbps: 200, codec: 'h264', preset: 'ultrafast' }] });
    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(job.segments.length).toBeGreaterThanOrEqual(2);
    // Let the sweepers and cleanups run, then stop every process so its log is complete.
    await new Promise((r) => setTimeout(r, 2_000));
    await t.cluster.stop();

    const lines = await tesseraLogLines(join(t.dir, 'logs'));
    // A line is about the job when the job id appears anywhere in it: a field, a key, a path, the message.
    const about = lines.filter((l) => l.raw.includes(jobId));
    const traceId = jobTraceId(jobId);
    const missing = about.filter((l) => l.line.jobId !== jobId || l.line.traceId !== traceId).map((l) => `${l.file}: ${l.raw}`);
    expect(missing, 'lines naming the job without its jobId/traceId').toEqual([]);
    // Not vacuous: the coordinator, both node agents (the job ran on both) and the uploader wrote about it.
    const services = new Set(about.map((l) => String(l.line.service)));
    expect([...services].sort()).toEqual(['coordinator', 'node-agent', 'uploader']);
    const nodes = new Set(about.filter((l) => l.line.service === 'node-agent').map((l) => l.file));
    expect(nodes.size).toBe(new Set(job.segments.map((s) => s.nodeId)).size);
    expect(about.length).toBeGreaterThan(10);
    // The messages a user looks for when following a job are there.
    const msgs = new Set(about.map((l) => String(l.line.msg)));
    for (const m of ['job accepted', 'job succeeded', 'segment done', 'archive uploaded']) expect(msgs, m).toContain(m);
  });
});
