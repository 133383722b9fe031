import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import type { NodeRecord } from '../common/records.js';
import { fixture, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { makeSource } from './media-helpers.js';
import { nodeArgs } from '../common/node-entry.js';

const run = promisify(execFile);

describe('the tessera CLI against a real cluster', () => {
  let t: TestCluster;
  let clip: string;
  const cli = async (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> => {
    try {
      const r = await run(process.execPath, [...nodeArgs('cli/cli.ts'), ...args, '--addr', t.cluster.coordinators.join(',')], {
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
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, coordinatorEnv: { HTTP_ALLOW_PRIVATE: 'true' } });
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
    // The list names the uploaded file, not its upload key.
    const jobs = await cli('jobs');
    expect(jobs.stdout).toMatch(new RegExp(`${id}\\s+SUCCEEDED.*clip-6s-360p\\.mp4`));
    // The finished job's uploaded input is gone: runs do not pile copies up under uploads/.
    await vi.waitFor(
      async () => {
        const left = await t.s3.send(new ListObjectsV2Command({ Bucket: t.cluster.bucket, Prefix: 'uploads/' }));
        expect(left.KeyCount ?? 0).toBe(0);
      },
      { timeout: 15_000, interval: 200 },
    );
  });

  it("the README's SDK example runs as written, importing the SDK by its package name", async () => {
    const r = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'examples/transcode.ts'), clip], {
      cwd: REPO_ROOT,
      env: { ...process.env, TESSERA_ADDR: t.cluster.coordinators.join(',') },
    });
    expect(r.stdout).toMatch(/^job j\w+ submitted$/m);
    expect(r.stdout).toMatch(/^JOB_STATE_SUCCEEDED 100%$/m);
    expect(r.stdout).toMatch(/^archive: s3:\/\/tessera-output\/jobs\/j\w+\.zip$/m);
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    expect(readme).toContain('examples/transcode.ts');
    expect(readme).toContain("from '@tessera-cluster/tessera'");
  });

  it("npx --no tessera runs this clone's CLI (and would never install a package of that name)", async () => {
    const r = await run('npx', ['--no', 'tessera', 'help'], { cwd: REPO_ROOT });
    expect(r.stdout).toContain('tessera transcode <file');
    // From the JavaScript build by default, through tsx when asked: the same CLI, the same exit codes.
    const viaTsx = await run('npx', ['--no', 'tessera', 'help'], { cwd: REPO_ROOT, env: { ...process.env, TESSERA_NO_BUILD: '1' } });
    expect(viaTsx.stdout).toBe(r.stdout);
    const typo = await run('npx', ['--no', 'tessera', 'transcod'], { cwd: REPO_ROOT }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('unknown command "transcod"');
  });

  it('mistakes get one line naming them, with a suggestion; --help exits 0', async () => {
    const typo = await cli('transcode', clip, '--ladr', '720');
    expect(typo.code).toBe(2);
    expect(typo.stderr.trim()).toBe('error INVALID_ARGUMENT: unknown option --ladr; did you mean --ladder? (tessera --help lists the options)');
    const cmd = await cli('transcod', clip);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr.trim()).toBe('error INVALID_ARGUMENT: unknown command "transcod"; did you mean "transcode"? (tessera --help lists the commands)');
    const misplaced = await cli('jobs', '--ladder', '720');
    expect(misplaced.code).toBe(2);
    expect(misplaced.stderr).toContain('option --ladder does not apply to "tessera jobs"');
    for (const help of [['--help'], ['help'], ['transcode', '-h']]) {
      const h = await cli(...help);
      expect(h.code, help.join(' ')).toBe(0);
      expect(h.stdout).toContain('tessera transcode <file');
    }
    for (const r of [typo, cmd, misplaced]) expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('an unreachable coordinator is said plainly', async () => {
    const r = await run(process.execPath, [...nodeArgs('cli/cli.ts'), 'nodes', '--addr', '127.0.0.1:1'], { cwd: REPO_ROOT }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('error UNAVAILABLE: cannot connect: connect ECONNREFUSED 127.0.0.1:1');
  });

  it('cancel: segments show CANCELLED afterwards, and a second cancel says the job had finished', async () => {
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryslow', dynamicRange: '' }] });
    await vi.waitFor(
      async () => {
        const j = await t.client.get(jobId);
        if (!j.segments.some((x) => x.framesDone > 0)) throw new Error('not transcoding yet');
      },
      { timeout: 30_000, interval: 100 },
    );
    const c1 = await cli('cancel', jobId);
    expect(c1.code).toBe(0);
    expect(c1.stdout.trim()).toBe(`job ${jobId}: CANCELLED`);
    const shown = await cli('job', jobId);
    const rows = shown.stdout.split('\n').filter((l) => /^\d+\s+node-/.test(l));
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) expect(row).toMatch(/^\d+\s+node-\S+\s+\d+\s+(CANCELLED|DONE)\s/);
    const c2 = await cli('cancel', jobId);
    expect(c2.code).toBe(0);
    expect(c2.stdout.trim()).toBe(`job ${jobId} had already finished: CANCELLED; nothing to cancel`);
  });

  it('drain: the node finishes, leaves, and undrain then says why it cannot', async () => {
    const id = await t.cluster.addNode({ id: 'node-drain-test' });
    const d = await cli('drain', id);
    expect(d.code, d.stderr).toBe(0);
    await vi.waitFor(
      async () => {
        if ((await t.client.listNodes()).some((n) => n.id === id)) throw new Error('still registered');
      },
      { timeout: 20_000, interval: 200 },
    );
    const u = await cli('undrain', id);
    expect(u.code).toBe(1);
    expect(u.stderr).toContain(`node ${id} is not registered: a drained node leaves the cluster once its work is done`);
    expect((await cli('--help')).stdout).toContain('it finishes what it holds, then leaves');
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
    const plan = JSON.parse((await cli('transcode', clip, '--dry-run', '--json')).stdout) as {
      segments: unknown[];
      renditions: { height: number; preset: string; encoder: string }[];
      ffmpegCommands: string[];
    };
    expect(plan.segments).toHaveLength(2);
    expect(plan.renditions.map((x) => x.height)).toEqual([360]);
    expect(plan.renditions[0]!.encoder).toBe('libx264');
    expect(plan.ffmpegCommands.length).toBe(2);
  });

  it('status --json, nodes --json and ListNodes agree with etcd', async () => {
    const fromEtcd = Object.values(await t.cluster.client().getAll().prefix('/tessera/nodes/').strings())
      .map((v) => (JSON.parse(v) as NodeRecord).id)
      .sort();
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
