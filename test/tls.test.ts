import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { isAppError, type AppError } from '../common/errors.js';
import { callUnary } from '../common/grpc.js';
import { grpcHealth } from '../common/health-client.js';
import { channelCredentials, identityOptions, loadTls } from '../common/tls.js';
import { JobServiceClient, NodeAgentClient, UploaderClient } from '../common/bulk-codec.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { TesseraClient } from '../sdk/client.js';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { checkArchive, fixture, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { nodeArgs } from '../common/node-entry.js';

const LADDER = [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'ultrafast' }];

async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (err) {
    if (isAppError(err)) return err;
    throw err;
  }
  throw new Error('expected the call to fail');
}

describe('mutual TLS on every link (tessera up --tls)', () => {
  let t: TestCluster;
  let clip: string;
  let work: string;

  beforeAll(async () => {
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, tls: true });
    // An agent that registers as node-evil but holds the certificate issued to node-0.
    await t.cluster.addNode({ id: 'node-evil', certFor: 'node-0' });
    work = await mkdtemp(join(tmpdir(), 'tessera-tls-'));
    clip = await fixture(t.inputDir, 'clip-8s.mp4', { seconds: 8, width: 640, height: 360, fps: 30 });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('refuses a node agent whose certificate names another node id', async () => {
    let nodes = await t.client.listNodes();
    for (let i = 0; i < 50 && nodes.find((n) => n.id === 'node-evil')?.state !== 'refused'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      nodes = await t.client.listNodes();
    }
    const byId = new Map(nodes.map((n) => [n.id, n]));
    expect(byId.get('node-evil')?.state).toBe('refused');
    expect(byId.get('node-evil')?.stateReason).toMatch(/node-evil/);
    expect(byId.get('node-0')?.state).toBe('ready');
    expect(byId.get('node-1')?.state).toBe('ready');
  });

  it('runs a job end to end over TLS, frame-exact, with no segment on the refused node', async () => {
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: LADDER });
    const job = await t.client.wait(jobId);
    expect(job.errorMessage).toBe('');
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect(job.segments.length).toBeGreaterThanOrEqual(2);
    expect(job.segments.map((s) => s.nodeId)).not.toContain('node-evil');
    const a = await checkArchive(t.s3, job, work); // over https, trusting the cluster CA
    expect(a.zipSha256).toBe(job.result!.sha256);
    for (const r of a.renditions) {
      expect(r.frames).toBe(240);
      expect(r.sha256).toBe(r.manifestSha256);
    }
  });

  it('refuses plaintext clients and clients without a certificate', async () => {
    const address = t.cluster.coordinators[0]!;
    const plain = new TesseraClient({ addresses: [address], timeoutMs: 3_000, attempts: 1 });
    expect((await failure(plain.list())).code).toBe('UNAVAILABLE');
    plain.close();
    const tls = t.cluster.clientTls()!;
    // TLS, trusting the CA, but presenting no client certificate: the handshake is refused.
    const noCert = new JobServiceClient(address, credentials.createSsl(tls.ca));
    expect((await failure(callUnary(noCert, noCert.listJobs, { limit: 1, state: JobState.JOB_STATE_UNSPECIFIED, pageToken: '' }, 3_000))).code).toBe('UNAVAILABLE');
    noCert.close();
  });

  it('checks certificate roles: a node certificate may not drive jobs, a client may not call agents or the uploader', async () => {
    const dir = join(t.dir, 'tls');
    const nodeTls = loadTls({ caFile: join(dir, 'ca.crt'), certFile: join(dir, 'node-cert-node-1.crt'), keyFile: join(dir, 'node-cert-node-1.key') })!;
    const asNode = new JobServiceClient(t.cluster.coordinators[0]!, channelCredentials(nodeTls));
    expect((await failure(callUnary(asNode, asNode.listJobs, { limit: 1, state: JobState.JOB_STATE_UNSPECIFIED, pageToken: '' }, 5_000))).code).toBe('PERMISSION_DENIED');
    asNode.close();

    const clientTls = t.cluster.clientTls()!;
    const rec = JSON.parse((await t.cluster.client().get('/tessera/nodes/node-0').string())!) as { address: string };
    const agent = new NodeAgentClient(rec.address, channelCredentials(clientTls), identityOptions('node-0'));
    const err = await failure(callUnary(agent, agent.getTransfer, { jobId: 'j1', segment: 0, attempt: 1 }, 5_000, new Metadata()));
    expect(err.code).toBe('PERMISSION_DENIED');
    agent.close();

    const up = JSON.parse((await t.cluster.client().get('/tessera/uploaders/uploader-0').string())!) as { address: string };
    const uploader = new UploaderClient(up.address, channelCredentials(clientTls), identityOptions('uploader-0'));
    expect((await failure(callUnary(uploader, uploader.cleanup, { jobId: 'j1' }, 5_000))).code).toBe('PERMISSION_DENIED');
    uploader.close();

    // Health stays open to any certificate the CA signed (probes), and the agent is SERVING.
    expect((await grpcHealth(rec.address, { creds: channelCredentials(clientTls), identity: 'node-0' })).serving).toBe(true);
    // Dialled expecting another identity, the same agent fails the handshake.
    expect((await grpcHealth(rec.address, { creds: channelCredentials(clientTls), identity: 'node-1' })).serving).toBe(false);
  });

  it("a valid node certificate (and a plaintext client) cannot touch another node's work: PutPart, Finalize, Cleanup and DropSegment are refused, and the output is byte-identical to a clean run", async () => {
    // Both jobs pinned to one labelled node: one segment each, the same cut, the same encoder
    // settings, so a clean run's renditions are the reference, byte for byte.
    await t.cluster.addNode({ id: 'node-2', env: { NODE_LABELS: 'pool=one' } });
    const slow = [{ ...LADDER[0]!, preset: 'medium' }];
    const spec = { inputUri: clip, ladder: slow, placement: 'pool=one' };
    const clean = await t.client.wait((await t.client.submit(spec)).jobId);
    expect(clean.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    const reference = (await checkArchive(t.s3, clean, work)).renditions.map((r) => r.sha256);

    const { jobId } = await t.client.submit(spec);
    const etcd = t.cluster.client();
    // The segment is running on node-2 (its owner key holds the fencing revision).
    let owner: { revision: number; attempt: number } | undefined;
    await vi.waitFor(
      async () => {
        const kv = (await etcd.get(`/tessera/jobs/${jobId}/segments/0000/owner`).exec()).kvs[0];
        expect(kv).toBeDefined();
        owner = { revision: Number(kv!.mod_revision), attempt: (JSON.parse(kv!.value.toString()) as { attempt: number }).attempt };
      },
      { timeout: 60_000, interval: 20 },
    );
    const dir = join(t.dir, 'tls');
    const asNode1 = loadTls({ caFile: join(dir, 'ca.crt'), certFile: join(dir, 'node-cert-node-1.crt'), keyFile: join(dir, 'node-cert-node-1.key') })!;
    const up = JSON.parse((await etcd.get('/tessera/uploaders/uploader-0').string())!) as { address: string };
    const uploader = new UploaderClient(up.address, channelCredentials(asNode1), identityOptions('uploader-0'));
    const garbage = Buffer.alloc(2048, 9);
    const putGarbage = (ownerRevision?: number) =>
      new Promise<unknown>((resolve, reject) => {
        const call = uploader.putPart(new Metadata(), { deadline: Date.now() + 5_000 }, (err, ack) => (err ? reject(err) : resolve(ack)));
        call.write({
          ref: { jobId, rendition: '360p', segment: 0, subSegment: 0, attempt: owner!.attempt, ...(ownerRevision ? { ownerRevision } : {}) },
          offset: 0,
          data: garbage,
          totalSize: garbage.length,
          sha256: '',
          localPath: '',
          localIdentity: '',
        });
        call.end();
      });
    const code = async (p: Promise<unknown>): Promise<number | undefined> =>
      p.then(
        () => undefined,
        (e: { code?: number }) => e.code,
      );
    // Under the canonical name, with the real owner revision: node-1 is not the owner.
    expect(await code(putGarbage(owner!.revision))).toBe(7); // PERMISSION_DENIED
    expect(await code(putGarbage())).toBe(7);
    // Finalize to another bucket and Cleanup are for coordinators only.
    const fin = await new Promise<number | undefined>((resolve) => {
      const call = uploader.finalize(
        {
          jobId,
          parts: [],
          audio: undefined,
          renditions: [],
          container: 'mp4',
          bucket: 'elsewhere',
          key: 'stolen.zip',
          source: undefined,
          timingsJson: '',
          audioTracks: [],
          expectedFrames: 0,
          notes: [],
        },
        new Metadata(),
        { deadline: Date.now() + 5_000 },
      );
      call.on('data', () => undefined);
      call.on('error', (e: { code?: number }) => resolve(e.code));
      call.on('end', () => resolve(undefined));
    });
    expect(fin).toBe(7);
    expect((await failure(callUnary(uploader, uploader.cleanup, { jobId }, 5_000))).code).toBe('PERMISSION_DENIED');
    uploader.close();
    // A plaintext client reaches neither the uploader nor an agent (the handshake fails).
    const plainUp = new UploaderClient(up.address, credentials.createInsecure());
    expect((await failure(callUnary(plainUp, plainUp.cleanup, { jobId }, 3_000))).code).toBe('UNAVAILABLE');
    plainUp.close();
    // The agent running it takes calls from coordinators only.
    const rec = JSON.parse((await etcd.get('/tessera/nodes/node-2').string())!) as { address: string };
    const agent = new NodeAgentClient(rec.address, channelCredentials(asNode1), identityOptions('node-2'));
    expect((await failure(callUnary(agent, agent.dropSegment, { jobId, segment: 0, attempt: owner!.attempt }, 5_000, new Metadata()))).code).toBe('PERMISSION_DENIED');
    agent.close();
    const plainAgent = new NodeAgentClient(rec.address, credentials.createInsecure());
    expect((await failure(callUnary(plainAgent, plainAgent.dropSegment, { jobId, segment: 0, attempt: owner!.attempt }, 3_000, new Metadata()))).code).toBe('UNAVAILABLE');
    plainAgent.close();

    const job = await t.client.wait(jobId);
    expect(job.state).toBe(JobState.JOB_STATE_SUCCEEDED);
    expect((await checkArchive(t.s3, job, work)).renditions.map((r) => r.sha256)).toEqual(reference);
  });

  it('etcd takes only mutual-TLS clients, and no process logs key material', async () => {
    expect(t.cluster.etcdEndpoints[0]).toMatch(/^https:/);
    const plain = new Etcd3({ hosts: t.cluster.etcdEndpoints.map((e) => e.replace('https:', 'http:')), dialTimeout: 1_000 });
    await expect(
      plain
        .get('x')
        .options({ deadline: new Date(Date.now() + 2_000) })
        .string(),
    ).rejects.toThrow();
    plain.close();
    const logs = join(t.dir, 'logs');
    for (const f of await readdir(logs)) {
      const text = await readFile(join(logs, f), 'utf8');
      expect(text).not.toMatch(/PRIVATE KEY/);
    }
  });
});

describe('tessera up --tls, then the CLI uses the cluster certificate', () => {
  const run = promisify(execFile);
  let dir: string;
  const cli = async (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> => {
    try {
      const r = await run(process.execPath, [...nodeArgs('cli/cli.ts'), ...args, '--dir', dir], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024, timeout: 180_000 });
      return { stdout: r.stdout, stderr: r.stderr, code: 0 };
    } catch (err) {
      const e = err as { stdout: string; stderr: string; code: number };
      return { stdout: `${e.stdout}\n${e.stderr}`, stderr: e.stderr, code: e.code };
    }
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-up-tls-'));
  });
  afterAll(async () => {
    await cli('down');
    await rm(dir, { recursive: true, force: true });
  });

  it('starts a TLS cluster, transcodes, downloads over https and reports nodes', async () => {
    const up = await cli('up', '--tls', '--nodes', '1');
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/mutual TLS/);
    const file = JSON.parse(await readFile(join(dir, 'cluster.json'), 'utf8')) as { etcdEndpoints: string[]; s3Endpoint: string; tls: { ca: string } };
    expect(file.etcdEndpoints[0]).toMatch(/^https:/);
    expect(file.s3Endpoint).toMatch(/^https:/);
    const clip = await fixture(dir, 'clip-4s.mp4', { seconds: 4, width: 320, height: 240, fps: 30 });
    const out = join(dir, 'dl');
    const r = await cli('transcode', clip, '--ladder', '240:400::ultrafast', '--download', out);
    expect(r.code, r.stdout).toBe(0);
    // The certificate's name is checked, not the dialled IP: no "TLS ServerName is an IP" warning.
    expect(r.stderr).not.toContain('DEP0123');
    expect((await cli('nodes')).stderr).not.toContain('DEP0123');
    const id = /submitted job (j\w+)/.exec(r.stdout)![1]!;
    expect(existsSync(join(out, id, '240p.mp4'))).toBe(true);
    const nodes = JSON.parse((await cli('nodes', '--json')).stdout) as { id: string; state: string }[];
    expect(nodes.map((n) => [n.id, n.state])).toEqual([['node-0', 'ready']]);
  });
});
