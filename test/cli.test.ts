import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import type { NodeRecord } from '../common/records.js';
import { fixture, startTestCluster, type TestCluster } from './helpers.js';
import { makeSource } from './media-helpers.js';

const run = promisify(execFile);

describe('the tessera CLI against a real cluster', () => {
  let t: TestCluster;
  let clip: string;
  const cli = async (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> => {
    try {
      const r = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'sdk/cli.ts'), ...args, '--addr', t.cluster.coordinators.join(',')], {
        cwd: REPO_ROOT,
        env: { ...process.env, S3_ENDPOINT: t.cluster.s3Endpoint, TESSERA_STATE_DIR: join(t.dir, 'cli-state') },
        maxBuffer: 16 * 1024 * 1024,
      });
      return { ...r, code: 0 };
    } catch (err) {
      const e = err as { stdout: string; stderr: string; code: number };
      return { stdout: e.stdout, stderr: e.stderr, code: e.code };
    }
  };

  beforeAll(async () => {
    t = await startTestCluster({ nodes: 2, slots: 1, coordinatorEnv: { HTTP_ALLOW_PRIVATE: 'true' } });
    clip = await fixture(t.inputDir, 'clip-6s-360p.mp4', { seconds: 6, width: 640, height: 360, fps: 30 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('transcode uploads a local file, waits, downloads and unpacks the archive', async () => {
    const out = join(t.dir, 'dl');
    const r = await cli('transcode', clip, '--ladder', '240:400::ultrafast', '--download', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/submitted job (j\w+)/);
    expect(r.stdout).toContain('240p.mp4');
    expect(r.stdout).toMatch(/archive: s3:\/\/tessera-output\/jobs\/j\w+\.zip/);
    const id = /submitted job (j\w+)/.exec(r.stdout)![1]!;
    expect(existsSync(join(out, id, '240p.mp4'))).toBe(true);
    expect(existsSync(join(out, id, 'manifest.json'))).toBe(true);
  });

  it('a dry run says what the source shows and what Tessera does with it; timeline flags are checked', async () => {
    const portrait = await makeSource('portrait', join(t.inputDir, 'portrait.mp4'));
    const r = await cli('transcode', portrait, '--dry-run', '--ladder', '360,240', '--remote');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('timeline: shown 360x640 (turned 270° clockwise for display; renditions stored upright); SDR 8-bit; 1 audio track(s): und 1ch');
    expect(r.stdout).toMatch(/360p\s+360x640/);
    expect(r.stdout).toContain('transpose=cclock');
    const bad = await cli('transcode', portrait, '--deinterlace', 'yadif', '--remote');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('deinterlace "yadif" is not valid');
    const tracks = await cli('transcode', portrait, '--audio-tracks', 'first', '--remote');
    expect(tracks.code).not.toBe(0);
    expect(tracks.stderr).toContain('--audio-tracks takes 0-based track numbers');
  });

  it('says when a requested rung is dropped (never upscaled): in its output, the status trail and the manifest', async () => {
    const out = join(t.dir, 'dl-notes');
    const r = await cli('transcode', clip, '--ladder', '1080:5000,240:400::ultrafast', '--download', out);
    expect(r.code, r.stderr).toBe(0);
    const note = "rung 1080p dropped: taller than the source's 360-pixel short side (never upscaled)";
    expect(r.stdout).toContain(`note: ${note}`);
    const id = /submitted job (j\w+)/.exec(r.stdout)![1]!;
    const manifest = JSON.parse(readFileSync(join(out, id, 'manifest.json'), 'utf8')) as { notes: string[]; renditions: { name: string }[] };
    expect(manifest.notes).toEqual([note]);
    expect(manifest.renditions.map((x) => x.name)).toEqual(['240p']);
    expect((await cli('job', id)).stdout).toContain(note);
  });

  it('--json prints the final job record; --dry-run --json prints the plan', async () => {
    const r = await cli('transcode', clip, '--ladder', '240:400::ultrafast', '--json');
    expect(r.code).toBe(0);
    const job = JSON.parse(r.stdout) as { state: string; result: { renditions: { frames: number }[] } };
    expect(job.state).toBe('JOB_STATE_SUCCEEDED');
    expect(job.result.renditions[0]!.frames).toBe(180);
    const plan = JSON.parse((await cli('transcode', clip, '--dry-run', '--json')).stdout) as { segments: unknown[]; renditions: { height: number; preset: string; encoder: string }[]; ffmpegCommands: string[] };
    expect(plan.segments).toHaveLength(2);
    expect(plan.renditions.map((x) => x.height)).toEqual([360]);
    expect(plan.renditions[0]!.encoder).toBe('libx264');
    expect(plan.ffmpegCommands.length).toBe(2);
  });

  it('status --json, nodes --json and ListNodes agree with etcd', async () => {
    const fromEtcd = Object.values(await t.cluster.client().getAll().prefix('/tessera/nodes/').strings()).map((v) => (JSON.parse(v) as NodeRecord).id).sort();
    const status = JSON.parse((await cli('status', '--json')).stdout) as { nodes: { id: string }[]; jobs: unknown[]; leaderId: string };
    const nodes = JSON.parse((await cli('nodes', '--json')).stdout) as { id: string }[];
    expect(status.nodes.map((n) => n.id).sort()).toEqual(fromEtcd);
    expect(nodes.map((n) => n.id).sort()).toEqual(fromEtcd);
    expect((await t.client.listNodes()).map((n) => n.id).sort()).toEqual(fromEtcd);
    expect(status.leaderId).toBe('coordinator-0');
    const jobs = JSON.parse((await cli('jobs', '--json')).stdout) as { id: string }[];
    expect(jobs.length).toBeGreaterThanOrEqual(2);
  });

  it('fetches an http(s) input itself, and writes MKV with HEVC', async () => {
    const { createServer } = await import('node:http');
    const { createReadStream } = await import('node:fs');
    const server = createServer((req, res) => {
      if (req.url === '/redirect') {
        res.writeHead(302, { location: '/clip.mp4' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'video/mp4' });
      createReadStream(clip).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const { jobId } = await t.client.submit({
        inputUri: `http://127.0.0.1:${port}/redirect`,
        container: 'mkv',
        ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'hevc', preset: 'ultrafast' }],
      });
      const job = await t.client.wait(jobId);
      expect(job.errorMessage).toBe('');
      expect(job.result!.renditions[0]).toMatchObject({ file: '240p.mkv', codec: 'hevc', frames: 180 });
    } finally {
      server.close();
    }
  });

  it('reports bad input with its error code and a non-zero exit', async () => {
    const r = await cli('transcode', join(t.dir, 'nope.mp4'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('INPUT_NOT_FOUND');
    const bad = await cli('transcode', clip, '--ladder', '240:400:divx');
    expect(bad.stderr).toContain('UNSUPPORTED_CODEC');
  });
});
