import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { LocalCluster, type LocalClusterOptions } from '../deploy/local-cluster.js';
import { makeSample, type SampleOptions } from '../deploy/sample.js';
import { TesseraClient } from '../sdk/client.js';
import { createS3Client, s3Send } from '../common/s3-client.js';
import { readZipEntries } from '../uploader/zip.js';
import { probeMedia } from '../transcoder/probe.js';
import type { Job } from '../proto/gen/tessera/v1/types.js';
import { isAppError } from '../common/errors.js';

/** Short timers so fault tests run in seconds. */
export const FAST_ENV: Record<string, string> = {
  ETCD_CALL_TIMEOUT_MS: '3000',
  PROGRESS_INTERVAL_MS: '200',
  SEGMENT_NO_PROGRESS_MS: '15000',
  HEARTBEAT_MS: '500',
  SHUTDOWN_GRACE_MS: '10000',
  MIN_SEGMENT_SEC: '2',
  MIN_SUB_SEGMENT_SEC: '1',
  LOG_LEVEL: 'info',
};

export interface TestCluster {
  cluster: LocalCluster;
  client: TesseraClient;
  s3: S3Client;
  dir: string;
  inputDir: string;
  close(): Promise<void>;
}

/**
 * Worker slots per node agent in the integration clusters unless a test is about slots: two, so
 * every agent cuts its segment for a pool of workers, as production does (WORKER_SLOTS = cores).
 */
export const TEST_SLOTS = 2;

/**
 * The lease for clusters whose tests do not wait on a lease running out (no fault at all, graceful
 * stops, or faults far longer than the lease: etcd frozen for 30-60 s). The helper's default 2 s
 * finds a dead node quickly, but on a loaded 2-core machine a process or etcd that stalls for a
 * second and a half loses its lease, and the churn that follows (a new leader term, segments
 * reassigned and sent again) multiplies a job's time: beside the media tests, the idempotent-upload
 * case of etcd-outages saw 10 leader terms in 2 minutes and its jobs took 161-171 s instead of
 * 35-42 s. Production's default is 10 s.
 */
export const STEADY_LEASE_SEC = 6;

/** A real local cluster in a temp folder: etcd, s3rver, coordinator(s), node agents, uploader. */
export async function startTestCluster(o: Partial<LocalClusterOptions> & { nodes: number }): Promise<TestCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-test-'));
  const inputDir = join(dir, 'input');
  await mkdir(inputDir, { recursive: true });
  const cluster = await LocalCluster.start({
    dir,
    leaseTtlSec: 2,
    inputRoot: inputDir,
    slots: TEST_SLOTS,
    ...o,
    env: { ...FAST_ENV, ...(o.env ?? {}) },
  });
  const tls = cluster.clientTls();
  const client = new TesseraClient({ addresses: cluster.coordinators, timeoutMs: 20_000, ...(tls ? { tls } : {}) });
  const s3 = createS3Client({
    endpoint: cluster.s3Endpoint,
    ...(tls ? { ca: tls.ca } : {}),
    region: 'us-east-1',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
    requestTimeoutMs: 30_000,
    sdkAttempts: 3,
  });
  return {
    cluster,
    client,
    s3,
    dir,
    inputDir,
    async close() {
      client.close();
      s3.destroy();
      // A process that crashed on its own shows why, in the test run's output (its folder goes).
      const crashed = cluster.crashReport();
      if (crashed) process.stderr.write(`\n=== crashed processes of the test cluster in ${dir} ===\n${crashed}\n`);
      await cluster.stop();
      if (!process.env.KEEP_TEST_DIRS) await rm(dir, { recursive: true, force: true });
    },
  };
}

const fixtureCache = new Map<string, Promise<string>>();

/** A generated clip (cached per test process): testsrc2 motion + 440 Hz tone, 1 keyframe/s. */
export function fixture(dir: string, name: string, o: SampleOptions): Promise<string> {
  const path = join(dir, name);
  let p = fixtureCache.get(path);
  if (!p) {
    p = makeSample(path, o).then(() => path);
    fixtureCache.set(path, p);
  }
  return p;
}

export interface RenditionCheck {
  name: string;
  frames: number;
  videoSec: number;
  audioSec: number | undefined;
  sha256: string;
  manifestSha256: string;
  bytes: number;
}

export interface ArchiveCheck {
  entries: string[];
  manifest: {
    renditions: { name: string; file: string; frames: number; durationSec: number; sha256: string; bytes: number; width: number; height: number }[];
    source: { frames: number };
  };
  renditions: RenditionCheck[];
  zipSha256: string;
}

/** Downloads the job's zip from S3 and measures what a user would: frames, durations, checksums. */
export async function checkArchive(s3: S3Client, job: Job, workDir: string): Promise<ArchiveCheck> {
  if (!job.result) throw new Error(`job ${job.id} has no result (${job.state} ${job.errorCode} ${job.errorMessage})`);
  // Downloaded as Tessera's own S3 calls are: under the retry policy (a kept-alive socket the
  // server closes as the request goes out answers "socket hang up"; on a loaded machine the
  // request may also time out once).
  const { bucket, key } = job.result;
  const bytes = await s3Send(`GetObject ${key}`, async (options) => {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }), options);
    return Buffer.from(await res.Body!.transformToByteArray());
  });
  const zipPath = join(workDir, `${job.id}.zip`);
  await writeFile(zipPath, bytes);
  const entries = await readZipEntries(zipPath);
  const manifest = JSON.parse(entries.get('manifest.json')!.toString()) as ArchiveCheck['manifest'];
  const renditions: RenditionCheck[] = [];
  for (const r of manifest.renditions) {
    const data = entries.get(r.file);
    if (!data) throw new Error(`zip lacks ${r.file}`);
    const p = join(workDir, `${job.id}-${r.file}`);
    await writeFile(p, data);
    // One ffprobe for the frame count and both durations (each ffprobe start costs 0.2 s of CPU here).
    const m = await probeMedia(p);
    renditions.push({
      name: r.name,
      frames: m.video.frames,
      videoSec: m.durationSec,
      audioSec: m.audio?.durationSec,
      sha256: createHash('sha256').update(data).digest('hex'),
      manifestSha256: r.sha256,
      bytes: data.length,
    });
  }
  return { entries: [...entries.keys()].sort(), manifest, renditions, zipSha256: createHash('sha256').update(bytes).digest('hex') };
}

/** Incomplete multipart uploads left in a bucket (must be none after every test); a failed listing fails the test. */
export async function incompleteUploads(s3: S3Client, bucket: string): Promise<number> {
  const res = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  return res.Uploads?.length ?? 0;
}

/** PIDs of ffmpeg processes whose parent is `ppid` (read from /proc). */
export function ffmpegChildren(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const m = /^\d+ \((.*)\) (\S) (\d+)/.exec(stat);
      if (m && m[1] === 'ffmpeg' && Number(m[3]) === ppid) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * The first of `ids` (in order) whose node agent has an ffmpeg child at this moment, polled until
 * `timeoutMs`: a node busy *now* (job progress reaches a watcher up to a second late).
 */
export async function nodeRunningFfmpeg(cluster: TestCluster['cluster'], ids: readonly string[], timeoutMs: number): Promise<string> {
  for (const until = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 20))) {
    const hit = ids.find((id) => {
      const pid = cluster.pid(id);
      return pid !== undefined && ffmpegChildren(pid).length > 0;
    });
    if (hit) return hit;
    if (Date.now() > until) throw new Error(`none of ${ids.join(', ')} started ffmpeg within ${timeoutMs} ms`);
  }
}

/** Files left under a folder (staging must be empty after a job). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let ents;
    try {
      ents = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** How a call ended: 'OK', or its AppError code (anything else as text). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return isAppError(err) ? err.code : String(err);
  }
}
