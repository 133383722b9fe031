import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRange } from '../coordinator/input/range-source.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { logLines } from './faults-helpers.js';
import { checkArchive, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';

/** An origin that serves one file, with Range (or ignoring it), and counts what it sent. */
async function origin(file: string, honourRange: boolean): Promise<{ url: string; ranges: string[]; bytesSent: () => number; close(): Promise<void> }> {
  const size = (await stat(file)).size;
  const ranges: string[] = [];
  let sent = 0;
  const server: Server = createServer((req, res) => {
    const r = honourRange ? parseRange(req.headers.range, size) : undefined;
    if (req.headers.range) ranges.push(req.headers.range);
    const [from, to] = r ?? [0, size - 1];
    res.writeHead(r ? 206 : 200, { 'content-length': String(to - from + 1), 'accept-ranges': honourRange ? 'bytes' : 'none', ...(r ? { 'content-range': `bytes ${from}-${to}/${size}` } : {}) });
    const body = createReadStream(file, { start: from, end: to });
    body.on('data', (c) => {
      sent += c.length;
    });
    body.pipe(res);
    res.on('close', () => body.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/mezzanine.mp4`,
    ranges,
    bytesSent: () => sent,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// Remote inputs are read in ranges (a loopback range server in the coordinator turns ffmpeg's
// seeks into ranged GETs): the coordinator never holds the whole input, only the segments.
describe('remote inputs read in ranges', () => {
  let t: TestCluster;
  let work: string;
  let source: string;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, slots: 2, coordinatorEnv: { HTTP_ALLOW_PRIVATE: 'true', STASH_HTTP_INPUTS: 'false' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-ranged-'));
    // The index (moov) at the end, as cameras and most encoders write it: reading it needs a seek.
    source = join(work, 'mezzanine.mp4');
    await runFfmpeg(
      [
        '-hide_banner',
        '-nostdin',
        '-y',
        '-loglevel',
        'error',
        '-f',
        'lavfi',
        '-i',
        'testsrc2=size=640x360:rate=25:duration=12',
        '-f',
        'lavfi',
        '-i',
        'sine=frequency=440:sample_rate=48000:duration=12',
        '-c:v',
        'libx264',
        '-preset',
        'ultrafast',
        '-g',
        '25',
        '-c:a',
        'aac',
        '-shortest',
        source,
      ],
      { noProgressMs: 60_000 },
    );
  });
  afterAll(async () => {
    await t?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('an http input with its index at the end: ranged reads, no staged copy, frame-exact output', async () => {
    const o = await origin(source, true);
    try {
      const { jobId } = await t.client.submit({ inputUri: o.url, ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast' }] });
      const job = await t.client.wait(jobId);
      expect(job.errorMessage).toBe('');
      expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
      const a = await checkArchive(t.s3, job, work);
      expect(a.renditions[0]!.frames).toBe(300);
      // Read in ranges, by seeks (the index at the end first): more than one range, and one that
      // starts past the middle of the file.
      const size = (await stat(source)).size;
      expect(o.ranges.length).toBeGreaterThanOrEqual(2);
      expect(o.ranges.some((r) => Number(/bytes=(\d+)-/.exec(r)?.[1] ?? 0) > size / 2)).toBe(true);
      const lines = logLines(t.dir, 'coordinator-0').filter((l) => l.jobId === jobId);
      expect(lines.some((l) => l.msg === 'reading the input in ranges (not staged)' && l.bytes === size)).toBe(true);
      console.log(
        `MEASURE ranged input: ${o.ranges.length} range requests, ${(o.bytesSent() / size).toFixed(2)}× the file's ${size} bytes fetched (probe, packet scan, cut and audio each read what they need)`,
      );
    } finally {
      await o.close();
    }
  });

  it('an origin that ignores Range is staged whole, and the job still succeeds', async () => {
    const o = await origin(source, false);
    try {
      const { jobId } = await t.client.submit({ inputUri: o.url, ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast' }] });
      const job = await t.client.wait(jobId);
      expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
      expect(job.result!.renditions[0]!.frames).toBe(300);
      const lines = logLines(t.dir, 'coordinator-0').filter((l) => l.jobId === jobId);
      expect(lines.some((l) => l.msg === 'reading the input in ranges (not staged)')).toBe(false);
    } finally {
      await o.close();
    }
  });

  it('parses the ranges ffmpeg sends', () => {
    expect(parseRange('bytes=0-', 100)).toEqual([0, 99]);
    expect(parseRange('bytes=10-19', 100)).toEqual([10, 19]);
    expect(parseRange('bytes=90-200', 100)).toEqual([90, 99]);
    expect(parseRange('bytes=-10', 100)).toEqual([90, 99]);
    expect(parseRange('bytes=100-', 100)).toBeUndefined();
    expect(parseRange('items=0-1', 100)).toBeUndefined();
  });
});
