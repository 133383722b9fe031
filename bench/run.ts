import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { credentials, Metadata } from '@grpc/grpc-js';
import { LocalCluster } from '../deploy/local-cluster.js';
import { startBareSink } from './bare-sink.js';
import { makeSample, sampleArgs } from '../deploy/sample.js';
import { TesseraClient } from '../sdk/client.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { NodeAgentClient } from '../common/bulk-codec.js';
import type { SegmentChunk, TransferStatus } from '../proto/gen/tessera/v1/agent.js';
import { buildTranscodeArgs, formatCommand } from '../transcoder/ffmpeg-args.js';
import { resolveLadder } from '../transcoder/ladder.js';
import { availableEncoders } from '../transcoder/encoders.js';
import { countFrames, probeMedia } from '../transcoder/probe.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { fileDigest, sendFileChunks } from '../common/chunks.js';
import { deadline, openClientStream } from '../common/grpc.js';
import { createS3Client } from '../common/s3-client.js';
import { readZipEntries } from '../uploader/zip.js';
import { markdownTable, median, parsePsnr } from './stats.js';
import { runControlPlane } from './control-plane.js';
import { etaReadings, watchEta } from './eta.js';
import { keyframesBench, labBench, longBench } from './lab.js';
import { Keys } from '../common/keys.js';
import { coreSeconds, coreSecondsOf } from './cpu.js';

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    only: { type: 'string' },
    out: { type: 'string' },
    rounds: { type: 'string' },
    agents: { type: 'string' },
    jobs: { type: 'string' },
    console: { type: 'string' },
    'chunk-sec': { type: 'string' },
    'lab-runs': { type: 'string' },
    seconds: { type: 'string' },
    'steal-ms': { type: 'string' },
    // `--handoff off`: the overhead cluster streams segments and parts through gRPC (for contrast;
    // `tessera up`, which the overhead comparison stands for, hands them over by path).
    handoff: { type: 'string' },
  },
});
const quick = flags.quick ?? false;
const only = new Set((flags.only ?? 'overhead,scaling,transfer,quality,recovery,packaging,eta,controlplane').split(','));
const ROUNDS = flags.rounds ? Number(flags.rounds) : quick ? 1 : 2;
// `--seconds N`: the shared source's length (the issue's 30 s 1080p overhead comparison: --seconds 30).
const SRC = { ...(quick ? { seconds: 20, width: 1280, height: 720, fps: 30 } : { seconds: 60, width: 1920, height: 1080, fps: 30 }), ...(flags.seconds ? { seconds: Number(flags.seconds) } : {}) };
const PRESET = quick ? 'ultrafast' : 'veryfast';
const LADDER = (quick ? [720, 480, 360, 240] : [1080, 720, 480, 360]).map((height) => ({ height, codec: 'h264', preset: PRESET }));

/** The control-plane input: 8 s, a keyframe every 0.5 s, so MIN_SEGMENT_SEC 0.5 gives up to 16 segments per job. */
const CONTROL_PLANE_SOURCE = { seconds: 8, width: 256, height: 144, fps: 10, gop: 5, audio: false };

const log = (s: string): void => {
  process.stdout.write(`${s}\n`);
};
const now = (): number => performance.now();

interface Result {
  name: string;
  rows: (string | number)[][];
  head: string[];
  notes: string[];
}
const results: Result[] = [];

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'tessera-bench-'));
  const ffmpegVersion = execFileSync('ffmpeg', ['-hide_banner', '-version']).toString().split('\n')[0]!;
  log(`# Tessera benchmarks (${quick ? 'quick' : 'full'}) — ${new Date().toISOString()}`);
  log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 1024 ** 3).toFixed(1)} GiB; ${ffmpegVersion}`);
  const source = join(work, 'source.mp4');
  // The source has real motion (testsrc2) and a tone; its exact command is part of the report.
  const srcArgs = sampleArgs(source, { ...SRC, preset: 'ultrafast' });
  // The control-plane scenario makes its own tiny input; the others share this source.
  const needSource = ['overhead', 'quality', 'scaling', 'recovery', 'packaging', 'eta'].some((s) => only.has(s));
  let renditions: ReturnType<typeof resolveLadder> = [];

  try {
    if (needSource) {
      log(`source: ${formatCommand(srcArgs)}`);
      await makeSample(source, { ...SRC, preset: 'ultrafast' });
      const media = await probeMedia(source);
      renditions = resolveLadder(LADDER, { width: media.video.width, height: media.video.height }, await availableEncoders());
      if (only.has('overhead') || only.has('quality')) await overheadAndQuality(work, source, renditions, media.video.frames);
      if (only.has('scaling')) await scaling(work, source);
    }
    if (only.has('transfer')) await transfer(work);
    if (needSource && only.has('recovery')) await recovery(work, source);
    if (needSource && only.has('packaging')) await packaging(work, source);
    if (needSource && only.has('eta')) await eta(work, source);
    if (only.has('controlplane')) await controlPlane(work);
    // Issue 15's scenarios; not in the default list: `lab` needs root (network namespaces, tc,
    // cgroup CPU quotas) and skips with the reason printed without it; `long` takes minutes.
    if (only.has('keyframes')) {
      log('\n## 10. uneven keyframes on 5 nodes');
      results.push(...(await keyframesBench(work, log)));
    }
    if (only.has('lab')) {
      log('\n## 9. lab: 3 simulated hosts, CPU quotas, 100 Mbit/s links');
      results.push(
        ...(await labBench(work, log, {
          ...(flags['chunk-sec'] ? { chunkSec: Number(flags['chunk-sec']) } : {}),
          ...(flags['lab-runs'] ? { runs: flags['lab-runs'].split(',') as ('steal' | 'nosteal')[] } : {}),
        })),
      );
    }
    if (only.has('long')) {
      log('\n## 11. long input on 2 agents');
      results.push(...(await longBench(work, log)));
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const report = [
    `# Benchmark results (${quick ? 'quick' : 'full'} run)`,
    '',
    `Date: ${new Date().toISOString()} · machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'} · ${ffmpegVersion}`,
    '',
    ...(needSource
      ? [
          `Source: ${SRC.seconds} s ${SRC.width}x${SRC.height} ${SRC.fps} fps, made with \`${formatCommand(srcArgs)}\``,
          `Ladder: ${renditions.map((r) => `${r.height}p ${r.videoBitrateKbps}k`).join(', ')} (${renditions[0]?.encoder} preset ${PRESET}); rounds per comparison: ${ROUNDS}, alternating sides.`,
          '',
        ]
      : []),
    ...results.flatMap((r) => [`## ${r.name}`, '', markdownTable(r.head, r.rows), '', ...r.notes.map((n) => `- ${n}`), '']),
  ].join('\n');
  log('');
  log(report);
  if (flags.out) await writeFile(flags.out, report);
}

/** One ffmpeg that decodes once and writes every rendition (plus the audio), like Tessera's workers. */
async function singleFfmpeg(dir: string, source: string, renditions: ReturnType<typeof resolveLadder>, fps: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const outputs = renditions.map((r) => ({ path: join(dir, `${r.name}.mp4`), rendition: r }));
  const args = buildTranscodeArgs(source, outputs, { fps, container: 'mp4' });
  await Promise.all([
    runFfmpeg(args, { noProgressMs: 300_000 }),
    runFfmpeg(['-hide_banner', '-nostdin', '-y', '-protocol_whitelist', 'file', '-i', `file:${source}`, '-vn', '-map', '0:a:0', '-c:a', 'aac', '-b:a', '128k', `file:${join(dir, 'audio.m4a')}`], {
      noProgressMs: 300_000,
    }),
  ]);
  return outputs.map((o) => o.path);
}

/**
 * A local cluster for one scenario. `shipped`: the settings a user gets (the overhead comparison);
 * otherwise a 3 s lease, 1 s heartbeats and 500 ms progress, for scenarios that time failure
 * detection or sample progress.
 */
async function startCluster(dir: string, nodes: number, slots: number, o: { nodeCpus?: string[]; controlCpus?: string; shipped?: boolean } = {}): Promise<LocalCluster> {
  const { nodeCpus, controlCpus, shipped = false } = o;
  return LocalCluster.start({
    dir,
    nodes,
    slots,
    ...(shipped ? { localHandoff: flags.handoff !== 'off' } : { leaseTtlSec: 3 }),
    inputRoot: '/',
    logLevel: 'warn',
    ...(nodeCpus ? { nodeCpus } : {}),
    ...(controlCpus ? { controlCpus } : {}),
    // `--steal-ms N`: the coordinators' STEAL_INTERVAL_MS (0: work stealing off, for contrast).
    env: {
      ...(shipped ? {} : { PROGRESS_INTERVAL_MS: '500', HEARTBEAT_MS: '1000' }),
      ...(flags['steal-ms'] !== undefined ? { STEAL_INTERVAL_MS: flags['steal-ms'] } : {}),
    },
  });
}

async function runJob(c: TesseraClient, source: string, ladder = LADDER, pkg = ''): Promise<{ ms: number; job: Job }> {
  const t0 = now();
  const { jobId } = await c.submit({
    inputUri: source,
    ladder: ladder.map((l) => ({ name: '', height: l.height, videoBitrateKbps: 0, codec: l.codec, preset: l.preset })),
    ...(pkg ? { package: pkg } : {}),
  });
  const job = await c.wait(jobId);
  if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`job ${jobId} ended ${job.state}: ${job.errorCode} ${job.errorMessage}`);
  return { ms: now() - t0, job };
}

/** Where a job's wall time went, from its status trail. */
function breakdown(job: Job): Record<string, number> {
  const at = (s: string): number => job.history.find((h) => h.scope === 'job' && h.state === s)?.atMs ?? Number.NaN;
  return {
    queue: at('PREPARING') - at('QUEUED'),
    probeSplitPlan: at('RUNNING') - at('PREPARING'),
    transferTranscode: at('FINALIZING') - at('RUNNING'),
    mergeZipUpload: at('SUCCEEDED') - at('FINALIZING'),
  };
}

async function overheadAndQuality(work: string, source: string, renditions: ReturnType<typeof resolveLadder>, frames: number): Promise<void> {
  log(
    `\n## 1. overhead vs one ffmpeg (and 5. quality parity); segments and parts ${flags.handoff === 'off' ? 'streamed through gRPC (--handoff off)' : 'handed over by path (LOCAL_HANDOFF, as tessera up runs)'}`,
  );
  const cluster = await startCluster(join(work, 'c-overhead'), 2, 1, { shipped: true });
  const c = new TesseraClient({ addresses: cluster.coordinators });
  const a: number[] = [];
  const b: number[] = [];
  // Core-seconds of each side: the single ffmpeg (this process's reaped children) and every process
  // of the cluster with the ffmpegs they reaped (background work during the job included).
  const cpuA: number[] = [];
  const cpuB: number[] = [];
  const clusterProcs = [...cluster.procs.values()].map((p) => ({ name: p.info.name, pid: p.info.pid }));
  const clusterPids = clusterProcs.map((p) => p.pid);
  // Per process of the last round: its own work and that of the children it reaped (ffmpeg, ffprobe).
  const perProc = (): Map<string, [number, number]> =>
    new Map(
      clusterProcs.map((p) => {
        try {
          return [p.name, [coreSeconds(p.pid, { reaped: false }), coreSeconds(p.pid, { own: false })]];
        } catch {
          return [p.name, [0, 0]];
        }
      }),
    );
  let lastPerProc = new Map<string, [number, number]>();
  let lastJob: Job | undefined;
  let singleOut: string[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const t0 = now();
      const c0 = coreSeconds('self', { own: false });
      singleOut = await singleFfmpeg(join(work, `single-${round}`), source, renditions, 30);
      a.push(now() - t0);
      cpuA.push(coreSeconds('self', { own: false }) - c0);
      const c1 = coreSecondsOf(clusterPids);
      const p1 = perProc();
      const r = await runJob(c, source);
      cpuB.push(coreSecondsOf(clusterPids) - c1);
      const p2 = perProc();
      lastPerProc = new Map([...p2].map(([k, [o, r]]) => [k, [o - (p1.get(k)?.[0] ?? 0), r - (p1.get(k)?.[1] ?? 0)]]));
      b.push(r.ms);
      lastJob = r.job;
      log(`round ${round + 1}: one ffmpeg ${(a.at(-1)! / 1000).toFixed(2)} s (${cpuA.at(-1)!.toFixed(1)} core-s) · tessera ${(b.at(-1)! / 1000).toFixed(2)} s (${cpuB.at(-1)!.toFixed(1)} core-s)`);
    }
    const ma = median(a);
    const mb = median(b);
    const bd = breakdown(lastJob!);
    results.push({
      name: '1. Overhead: Tessera (2 node agents, submit → zip in S3) vs one ffmpeg writing all renditions',
      head: ['side', 'median wall s', 'ratio b/a', 'target'],
      rows: [
        ['a: one ffmpeg', ma / 1000, 1, ''],
        // The issue's targets: ≤ 1.05 on the 60 s 1080p clip, ≤ 1.08 on a 30 s one (less work to hide the
        // fixed start and finalize behind).
        ['b: tessera', mb / 1000, mb / ma, SRC.seconds >= 60 ? '≤ 1.05' : '≤ 1.08'],
      ],
      notes: [
        `work, in core-seconds (user + system; the single ffmpeg and its audio encode, against every process of the cluster and the ffmpegs they ran): one ffmpeg ${median(cpuA).toFixed(1)}, tessera ${median(cpuB).toFixed(1)}, ratio ${(median(cpuB) / median(cpuA)).toFixed(3)} (per round: ${cpuA.map((x, i) => (cpuB[i]! / x).toFixed(3)).join(', ')})`,
        `segments and parts: ${flags.handoff === 'off' ? 'streamed through gRPC (--handoff off)' : 'handed over by path (LOCAL_HANDOFF, as `tessera up` runs)'}`,
        `work of the last Tessera run by process, own + children reaped (core-s): ${[...lastPerProc].map(([k, [o, r]]) => `${k} ${o.toFixed(2)} + ${r.toFixed(2)}`).join(', ')}`,
        `breakdown of the last Tessera run (s): ${Object.entries(bd)
          .map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`)
          .join(', ')}`,
      ],
    });

    if (only.has('quality')) {
      // 5. Quality parity: size and PSNR of each rendition, split-and-merge vs single ffmpeg.
      const s3 = createS3Client({ endpoint: cluster.s3Endpoint, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, requestTimeoutMs: 60_000 });
      const res = await s3.send(new GetObjectCommand({ Bucket: lastJob!.result!.bucket, Key: lastJob!.result!.key }));
      const zipPath = join(work, 'out.zip');
      await writeFile(zipPath, Buffer.from(await res.Body!.transformToByteArray()));
      s3.destroy();
      const entries = await readZipEntries(zipPath);
      const rows: (string | number)[][] = [];
      for (const [i, r] of renditions.entries()) {
        const mine = join(work, `tessera-${r.name}.mp4`);
        await writeFile(mine, entries.get(`${r.name}.mp4`)!);
        const single = singleOut[i]!;
        // Video bytes (sum of the video stream's packets): Tessera's renditions also carry the
        // job's AAC track, the single ffmpeg writes its audio to a separate file.
        const [a, b] = [await videoPackets(single), await videoPackets(mine)];
        const [psnrA, psnrB] = [await psnr(single, source, r.width, r.height), await psnr(mine, source, r.width, r.height)];
        const fB = (await countFrames(mine)).frames;
        rows.push([r.name, a.bytes, b.bytes, (b.bytes / a.bytes - 1) * 100, psnrA, psnrB, psnrB - psnrA, `${fB}/${frames}`, `${(b.maxGapSec * 1000).toFixed(1)} ms`, (await stat(mine)).size]);
      }
      results.push({
        name: '5. Quality parity: split-and-merge vs one ffmpeg, same settings',
        head: [
          'rendition',
          'video bytes one ffmpeg',
          'video bytes tessera',
          'size Δ %',
          'PSNR one ffmpeg dB',
          'PSNR tessera dB',
          'PSNR Δ dB',
          'frames',
          'largest pts step',
          'tessera file bytes (with audio)',
        ],
        rows,
        notes: [
          'targets: video size within ±3 %, PSNR within 0.2 dB, frame count equal to the source and presentation timestamps continuous (largest step between consecutive frames = one frame, no seam)',
          'until 2026-11-24 this table compared whole files: the Tessera renditions include the 128 kb/s AAC track, the single-ffmpeg ones do not — that, not chunking, was the reported +5…17 %',
        ],
      });
    }
  } finally {
    c.close();
    await cluster.stop();
  }
}

/** Sum of the first video stream's packet sizes, and the largest step between consecutive presentation times (s). */
async function videoPackets(file: string): Promise<{ bytes: number; maxGapSec: number }> {
  const out = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,size', '-of', 'csv=p=0', file], { maxBuffer: 256 * 1024 * 1024 }).toString();
  let bytes = 0;
  const pts: number[] = [];
  for (const line of out.split('\n')) {
    const [t, size] = line.split(',');
    if (size === undefined) continue;
    bytes += Number(size);
    if (t !== undefined && t !== 'N/A') pts.push(Number(t));
  }
  pts.sort((x, y) => x - y);
  let maxGapSec = 0;
  for (let i = 1; i < pts.length; i++) maxGapSec = Math.max(maxGapSec, pts[i]! - pts[i - 1]!);
  return { bytes, maxGapSec };
}

async function psnr(file: string, source: string, w: number, h: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn('ffmpeg', ['-hide_banner', '-nostdin', '-i', file, '-i', source, '-lavfi', `[1:v]scale=${w}:${h}:flags=bicubic[ref];[0:v][ref]psnr`, '-f', 'null', '-'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 1e6) err = err.slice(-1e5);
    });
    p.on('close', () => resolve(parsePsnr(err)));
    p.on('error', reject);
  });
}

async function scaling(work: string, source: string): Promise<void> {
  log('\n## 2. scaling: 1 node agent on one core vs 2 node agents on one core each');
  const t1: number[] = [];
  const t2: number[] = [];
  // The whole cluster gets one core, then two: the control processes (coordinator with its audio
  // encode and cuts, uploader with its merges, etcd, S3) are pinned with the agents, so the
  // 1-agent run cannot borrow the second core for them.
  const one = await startCluster(join(work, 'c-one'), 1, 1, { nodeCpus: ['0'], controlCpus: '0' });
  const two = await startCluster(join(work, 'c-two'), 2, 1, { nodeCpus: ['0', '1'], controlCpus: '0,1' });
  const c1 = new TesseraClient({ addresses: one.coordinators });
  const c2 = new TesseraClient({ addresses: two.coordinators });
  try {
    for (let round = 0; round < ROUNDS; round++) {
      t1.push((await runJob(c1, source)).ms);
      t2.push((await runJob(c2, source)).ms);
      log(`round ${round + 1}: 1 core ${(t1.at(-1)! / 1000).toFixed(2)} s · 2 cores ${(t2.at(-1)! / 1000).toFixed(2)} s`);
    }
  } finally {
    c1.close();
    c2.close();
    await one.stop();
    await two.stop();
  }
  results.push({
    name: '2. Scaling: node agents pinned with taskset',
    head: ['setup', 'median wall s', 'speedup', 'target'],
    rows: [
      ['1 agent, core 0', median(t1) / 1000, 1, ''],
      ['2 agents, cores 0 and 1', median(t2) / 1000, median(t1) / median(t2), '≥ 1.9×'],
    ],
    notes: ['coordinator, uploader, etcd and S3 are pinned too: to core 0 in the 1-agent run, to cores 0–1 in the 2-agent run (the whole cluster on one core vs two)'],
  });
}

/** 4. Segment streaming over gRPC into a real node agent vs a bare gRPC stream of the same bytes. */
async function transfer(work: string): Promise<void> {
  log('\n## 4. transfer throughput');
  const size = (quick ? 256 : 2048) * 1024 * 1024; // full: the issue's 2 GB input
  const file = join(work, 'blob.bin');
  await new Promise<void>((resolve, reject) => {
    const p = spawn('sh', ['-c', `head -c ${size} /dev/urandom > '${file}'`]);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error('dd failed'))));
  });
  const digest = await fileDigest(file, 'crc32'); // what the coordinator sends with a segment

  // Bare ceiling: a gRPC server in its own process, like the node agent, that only counts the
  // bytes of the same messages (an in-process sink shares the sender's event loop and skips the
  // cross-process hop the real path pays); the same server writing them to a file shows what
  // storing them costs.
  const bare = await startBareSink(work);

  const cluster = await startCluster(join(work, 'c-transfer'), 1, 1);
  const node = JSON.parse((await cluster.client().get(new Keys().node('node-0')).string())!) as { address: string };
  const agent = new NodeAgentClient(node.address, credentials.createInsecure(), { 'grpc.max_send_message_length': 4 * 1024 * 1024 });
  const viaBare = async (method: 'put' | 'putToDisk'): Promise<number> => {
    const t0 = now();
    await bare.send(method, file, size);
    return now() - t0;
  };
  const bareMs: number[] = [];
  const diskMs: number[] = [];
  const agentMs: number[] = [];
  let peakRss = 0;
  const rssTimer = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 50);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      bareMs.push(await viaBare('put'));
      diskMs.push(await viaBare('putToDisk'));

      const t0 = now();
      const ref = { jobId: `bench${round}${Date.now()}`, segment: 0, attempt: 1 };
      const s = openClientStream<SegmentChunk, TransferStatus>((cb) => agent.putSegment(new Metadata(), deadline(600_000), cb));
      await sendFileChunks(s.stream, file, 0, (offset, data) => ({ ref, offset, data, totalSize: size, sha256: '', crc32: digest.hex, localPath: '', localIdentity: '' }), { signal: s.signal });
      s.stream.end();
      const st = await s.result;
      if (!st.complete) throw new Error('agent did not complete the transfer');
      agentMs.push(now() - t0);
      await new Promise<void>((r) => agent.dropSegment(ref, () => r()));
      const rate = (ms: number[]): string => (size / 1024 ** 2 / (ms.at(-1)! / 1000)).toFixed(0);
      log(`round ${round + 1}: bare ${rate(bareMs)} MiB/s · bare to disk ${rate(diskMs)} MiB/s · agent ${rate(agentMs)} MiB/s`);
    }
  } finally {
    clearInterval(rssTimer);
    agent.close();
    bare.stop();
    await cluster.stop();
  }
  const mib = size / 1024 ** 2;
  const bareRate = mib / (median(bareMs) / 1000);
  const diskRate = mib / (median(diskMs) / 1000);
  const agentRate = mib / (median(agentMs) / 1000);
  results.push({
    name: `4. Transfer: ${mib} MiB segment over gRPC on loopback`,
    head: ['path', 'median MiB/s', 'share of ceiling', 'target'],
    rows: [
      ['bare gRPC stream (ceiling)', bareRate, 1, ''],
      ['the same bare stream written to a file (no checksum): what storing the bytes costs here', diskRate, diskRate / bareRate, ''],
      ['PutSegment into a node agent (file write + CRC-32 verify; no fsync, see BENCHMARKS.md)', agentRate, agentRate / bareRate, '≥ 0.80'],
    ],
    notes: [
      `the node agent reaches ${((agentRate / diskRate) * 100).toFixed(0)} % of the bare stream written to a file`,
      `peak RSS of the sending process while streaming: ${(peakRss / 1024 ** 2).toFixed(0)} MiB (target < 300 MB); memory stays at about one 1 MiB chunk because sends wait for 'drain'`,
    ],
  });
}

/** 6. The same job with one node agent killed at 50 %: time ratio to a clean run, sub-segments redone. */
async function recovery(work: string, source: string): Promise<void> {
  log('\n## 6. recovery cost');
  const cluster = await LocalCluster.start({
    dir: join(work, 'c-recovery'),
    nodes: 3,
    slots: 1,
    leaseTtlSec: 2,
    inputRoot: '/',
    logLevel: 'info',
    env: { PROGRESS_INTERVAL_MS: '300', HEARTBEAT_MS: '500' },
  });
  const c = new TesseraClient({ addresses: cluster.coordinators });
  try {
    const clean = await runJob(c, source);
    const t0 = now();
    const { jobId } = await c.submit({ inputUri: source, ladder: LADDER.map((l) => ({ name: '', height: l.height, videoBitrateKbps: 0, codec: l.codec, preset: l.preset })) });
    let killed = '';
    const job = await c.wait(jobId, (j) => {
      if (!killed && j.progress >= 50) {
        killed = j.segments.find((s) => s.state !== 'SEGMENT_STATE_DONE')?.nodeId ?? 'node-0';
        cluster.signal(killed, 'SIGKILL');
      }
    });
    const ms = now() - t0;
    if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`recovery job ended ${job.state}`);
    const { subSegmentsRedone } = await import('../test/faults-helpers.js');
    const redone = subSegmentsRedone(join(work, 'c-recovery'), cluster.nodeIds(), jobId);
    results.push({
      name: '6. Recovery: one of 3 node agents killed at 50 %',
      head: ['run', 'wall s', 'ratio', 'sub-segments redone'],
      rows: [
        ['clean', clean.ms / 1000, 1, 0],
        [`${killed} killed at 50 %`, ms / 1000, ms / clean.ms, redone],
      ],
      notes: ['lease TTL 2 s: the loss is noticed within the TTL, the segment is reassigned with its checkpoint'],
    });
  } finally {
    c.close();
    await cluster.stop();
  }
}

/** 7. HLS + DASH packaging: the same job with and without it, alternating; the added wall time. */
async function packaging(work: string, source: string): Promise<void> {
  log('\n## 7. packaging (HLS + DASH) against zip only');
  const cluster = await startCluster(join(work, 'c-packaging'), 2, 1);
  const c = new TesseraClient({ addresses: cluster.coordinators });
  try {
    const zipOnly: number[] = [];
    const packaged: number[] = [];
    const finalizeZip: number[] = [];
    const finalizePkg: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (const pkg of r % 2 === 0 ? ['', 'hls,dash'] : ['hls,dash', '']) {
        const { ms, job } = await runJob(c, source, LADDER, pkg);
        (pkg ? packaged : zipOnly).push(ms);
        const fin = breakdown(job).mergeZipUpload ?? Number.NaN;
        (pkg ? finalizePkg : finalizeZip).push(fin);
        const st = job.result?.streaming;
        log(
          `  ${pkg || 'zip'}: ${(ms / 1000).toFixed(2)} s (merge, package, zip, upload ${(fin / 1000).toFixed(2)} s)${st ? `, ${st.files} streaming files, segments ≤ ${st.targetDurationSec} s` : ''}`,
        );
      }
    }
    const a = median(zipOnly);
    const b = median(packaged);
    results.push({
      name: '7. Packaging: HLS + DASH (CMAF) beside the zip',
      head: ['output', 'median wall s', 'median finalize s', 'ratio to zip only', 'target'],
      rows: [
        ['zip only', a / 1000, median(finalizeZip) / 1000, 1, ''],
        ['zip + HLS + DASH', b / 1000, median(finalizePkg) / 1000, b / a, '≤ 1.05'],
      ],
      notes: ['2 node agents × 1 slot; the packaging is a stream copy of the merged renditions (ffmpeg DASH muxer) plus playlists, SHA-256s and the S3 puts'],
    });
  } finally {
    c.close();
    await cluster.stop();
  }
}

/** 8. ETA: the p50 the watch stream shows at 25, 50 and 75 % of a job, against what really remained. */
async function eta(work: string, source: string): Promise<void> {
  log('\n## 8. ETA error at 25 / 50 / 75 % of a job');
  const cluster = await startCluster(join(work, 'c-eta'), 2, 1);
  const c = new TesseraClient({ addresses: cluster.coordinators });
  try {
    const rows: (string | number)[][] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const { samples, endMs } = await watchEta(c, { inputUri: source, ladder: LADDER.map((l) => ({ name: '', height: l.height, videoBitrateKbps: 0, codec: l.codec, preset: l.preset })) });
      for (const x of etaReadings(samples, endMs)) {
        log(`  round ${r + 1} at ${x.at} %: ETA p50 ${x.predictedSec.toFixed(1)} s (p90 ${x.p90Sec.toFixed(1)} s), really ${x.actualSec.toFixed(1)} s: ${(x.error * 100).toFixed(0)} %`);
        rows.push([r + 1, `${x.at} % (${x.progress.toFixed(0)} %)`, x.predictedSec, x.p90Sec, x.actualSec, `${x.error >= 0 ? '+' : ''}${(x.error * 100).toFixed(0)} %`, x.withinP90 ? 'yes' : 'no']);
      }
    }
    results.push({
      name: '8. ETA error (p50 shown vs time that really remained)',
      head: ['round', 'at progress', 'ETA p50 s', 'ETA p90 s', 'really remained s', 'p50 error', 'within p90'],
      rows,
      notes: ['2 node agents × 1 slot; the ETA the WatchJob stream carried when the job first reached each point; "really remained" runs to SUCCEEDED (merge, zip and upload included)'],
    });
  } finally {
    c.close();
    await cluster.stop();
  }
}

/** 3. The control plane at scale: simulated agents (real protocol), real etcd, coordinator, uploader. */
async function controlPlane(work: string): Promise<void> {
  const agents = flags.agents ? Number(flags.agents) : quick ? 20 : 100;
  const jobs = flags.jobs ? Number(flags.jobs) : quick ? 20 : 200;
  log(`\n## 3. control plane: ${agents} simulated agents, ${jobs} jobs`);
  const r = await runControlPlane({
    dir: join(work, 'controlplane'),
    agents,
    slots: 2,
    jobs,
    source: CONTROL_PLANE_SOURCE,
    minSegmentSec: 0.5,
    minSubSegmentSec: 0.2,
    maxConcurrentJobs: 32,
    sleepFactor: 0.2,
    rungs: 2,
    progress: log,
    // --console N: N web consoles stay open through the run (job list + cluster streams each).
    consoleClients: flags.console ? Number(flags.console) : 0,
  });
  results.push({ name: `3. Control plane: ${agents} simulated node agents, ${jobs} jobs${flags.console ? `, ${flags.console} web console(s) open` : ''}`, head: r.head, rows: r.rows, notes: r.notes });
}

main().catch((err: unknown) => {
  process.stderr.write(`benchmark failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
