import { spawnSync } from 'node:child_process';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { LocalCluster } from '../deploy/local-cluster.js';
import { TesseraClient } from '../sdk/client.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { formatCommand } from '../transcoder/ffmpeg-args.js';
import { readPacketSummary } from '../transcoder/keyframes.js';
import { capacityWeights, planFrameSegments, type PlanNode } from '../coordinator/scheduling/plan.js';
import { checkpoints, subSegmentsRedone } from '../test/faults-helpers.js';
import { LabNet } from '../test/lab-net.js';
import { LabCpu } from '../test/lab-cpu.js';

/**
 * The issue-15 benchmarks: the lab run (simulated hosts with CPU quotas and 100 Mbit/s links,
 * with and without work stealing), the planner on a real-world keyframe pattern, and a long input
 * with bounded chunks (chunk count, etcd writes per chunk, redo after a kill -9).
 */

export interface BenchResult {
  name: string;
  head: string[];
  rows: (string | number)[][];
  notes: string[];
}
type Log = (s: string) => void;

const now = (): number => performance.now();
const sec = (ms: number): string => (ms / 1000).toFixed(1);

function at(job: Job, state: string): number {
  return job.history.find((h) => h.scope === 'job' && h.state === state)?.atMs ?? Number.NaN;
}

/** The serial parts of a job from its status trail (ms): queue + probe/split/plan, and merge/zip/upload. */
export function serialParts(job: Job): { prepareMs: number; finalizeMs: number } {
  return { prepareMs: at(job, 'RUNNING') - at(job, 'QUEUED'), finalizeMs: at(job, 'SUCCEEDED') - at(job, 'FINALIZING') };
}

async function makeClip(path: string, args: string[]): Promise<string> {
  const full = ['-hide_banner', '-nostdin', '-y', '-loglevel', 'error', ...args, `file:${path}`];
  await runFfmpeg(full, { noProgressMs: 300_000 });
  return formatCommand(full);
}

// ---------------------------------------------------------------------------------------------
// 9. Lab: 3 simulated hosts, CPU quotas 0.5 / 0.5 / 0.125 cores, 100 Mbit/s links.

const LAB_PREFIX = 'tlb-';
const LAB_QUOTAS = [0.5, 0.5, 0.125];
const LAB_RATE_MBIT = 100;
const LAB_SHARES = 8192;
const LAB_AGENT_PORT = 7650;
const LAB_LADDER = [
  { name: '', height: 540, videoBitrateKbps: 1500, codec: 'h264', preset: 'medium' },
  { name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'medium' },
];

interface LabRun {
  steal: boolean;
  wallMs: number;
  job: Job;
  workSec: number[];
  throttled: { periods: number; throttled: number }[];
  chunksBy: Map<string, number>;
  stolen: number;
  load: number;
  idleSec: number[];
  starvedSec: number[];
}

/** Samples the CPU use of lab groups every second (see labOnce). */
function cpuSampler(groups: string[], cpu: LabCpu): { recent(n: number): number[]; stop(): void; idle: number[]; starved: number[] } {
  const quotas = groups.map((_, i) => LAB_QUOTAS[i]!);
  const idle = groups.map(() => 0);
  const starved = groups.map(() => 0);
  const history: number[][] = [];
  let last = groups.map((g) => cpu.usageSec(g));
  let lastAt = now();
  const timer = setInterval(() => {
    const cur = groups.map((g) => cpu.usageSec(g));
    const dt = (now() - lastAt) / 1000;
    const rates = cur.map((c, i) => (c - last[i]!) / dt);
    rates.forEach((r, i) => {
      if (r < 0.1 * quotas[i]!) idle[i]! += 1;
      else if (r < 0.85 * quotas[i]!) starved[i]! += 1;
    });
    history.push(rates);
    last = cur;
    lastAt = now();
  }, 1000);
  return {
    recent: (n) =>
      groups.map((_, i) => {
        const h = history.slice(-n);
        return h.length ? h.reduce((a, r) => a + r[i]!, 0) / h.length : 0;
      }),
    stop: () => clearInterval(timer),
    idle,
    starved,
  };
}

/** Why the lab cannot run here, or undefined. */
export function labUnavailable(): string | undefined {
  return LabNet.tcUnavailable() ?? LabCpu.unavailable();
}

/**
 * `runs`: which of the two runs (stealing on, off) to make; `chunkSec`: the agents' MAX_CHUNK_SEC
 * (unset: their default, 15 s).
 */
export async function labBench(work: string, log: Log, o: { seconds?: number; chunkSec?: number; runs?: ('steal' | 'nosteal')[] } = {}): Promise<BenchResult[]> {
  const why = labUnavailable();
  if (why) {
    log(`SKIP lab: ${why}`);
    return [];
  }
  const seconds = o.seconds ?? 150;
  const source = join(work, 'lab-source.mp4');
  const cmd = await makeClip(source, [
    '-f',
    'lavfi',
    '-i',
    `testsrc2=size=960x540:rate=30:duration=${seconds}`,
    '-f',
    'lavfi',
    '-i',
    `sine=frequency=440:sample_rate=48000:duration=${seconds}`,
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-pix_fmt',
    'yuv420p',
    '-g',
    '30',
    '-keyint_min',
    '30',
    '-sc_threshold',
    '0',
    '-c:a',
    'aac',
    '-b:a',
    '128k',
    '-shortest',
    '-movflags',
    '+faststart',
  ]);
  log(`lab source: ${cmd}`);
  const runs: LabRun[] = [];
  // Stealing on, then off (STEAL_INTERVAL_MS=0); each on a fresh lab and cluster, so both start
  // with no measured speeds (shares from core counts alone: equal).
  for (const r of o.runs ?? ['steal', 'nosteal']) runs.push(await labOnce(join(work, `lab-${r}`), source, r === 'steal', log, o.chunkSec));
  const capacity = LAB_QUOTAS.reduce((a, b) => a + b, 0);
  const rows = runs.map((r) => {
    const { prepareMs, finalizeMs } = serialParts(r.job);
    const workSec = r.workSec.reduce((a, b) => a + b, 0);
    const idealSec = workSec / capacity + (prepareMs + finalizeMs) / 1000;
    return [
      r.steal ? 'stealing on (default, STEAL_INTERVAL_MS 1000)' : 'stealing off (STEAL_INTERVAL_MS 0)',
      r.wallMs / 1000,
      workSec,
      (prepareMs + finalizeMs) / 1000,
      idealSec,
      r.wallMs / 1000 / idealSec,
      r.workSec.map((w, i) => `${w.toFixed(1)} (${((w / LAB_QUOTAS[i]! / (r.wallMs / 1000)) * 100).toFixed(0)} %)`).join(' / '),
      r.idleSec.join(' / '),
      r.starvedSec.join(' / '),
      [...r.chunksBy.entries()]
        .sort()
        .map(([n, c]) => `${n}: ${c}`)
        .join(', '),
      r.stolen,
      r.steal ? '≤ 1.15' : '',
    ];
  });
  const [on, off] = runs;
  return [
    {
      name: `9. Lab: 3 simulated hosts (network namespaces), CPU quotas ${LAB_QUOTAS.join(' / ')} cores, ${LAB_RATE_MBIT} Mbit/s links, MAX_CHUNK_SEC ${o.chunkSec ?? '15 (default)'}`,
      head: [
        'run',
        'wall s (submit → SUCCEEDED)',
        'encode work CPU-s (Σ hosts)',
        'serial s (queue+prepare, finalize)',
        'ideal s',
        'wall / ideal',
        'CPU-s per host n1 / n2 / n3 (of quota × wall)',
        'idle s n1 / n2 / n3',
        'starved s n1 / n2 / n3',
        'chunks done per node',
        'chunks stolen',
        'target',
      ],
      rows,
      notes: [
        `source: ${seconds} s 960x540 30 fps H.264 (testsrc2 + tone, a keyframe every 1 s), made with \`${cmd}\`; ladder 540p 1500k + 360p 800k, x264 preset medium; 1 worker slot per node (CPU_CORES 1: a fresh node's share comes from its core count, so all three start with a third)`,
        `hosts: 3 node agents, each in its own network namespace (\`${LAB_PREFIX}n1…3\`) with one veth link to the host shaped on both ends by \`tc qdisc add dev <veth> root tbf rate ${LAB_RATE_MBIT}mbit burst 256kb latency 50ms\`, and its own cgroup v1 CPU group (cfs_period_us 100000, cfs_quota_us ${LAB_QUOTAS.map((q) => q * 100_000).join(' / ')}: ${LAB_QUOTAS.join(' / ')} cores; the third host has a quarter of the others' CPU). etcd, S3 server, coordinator and uploader run on the host, unlimited, listening on ${LabNet.SERVICE_HOST}`,
        `encode work = CPU seconds the three host groups used during the job (cgroup cpuacct.usage: ffmpeg plus the agent's own work); capacity = Σ quotas = ${capacity} cores; ideal = work ÷ capacity + the serial part (QUEUED → RUNNING and FINALIZING → SUCCEEDED from the job's history)`,
        'idle s: seconds (1 s samples of cpuacct.usage) in which a host used under 10 % of its quota, i.e. had nothing to run; starved s: seconds it used 10–85 % of its quota, i.e. had work but the shared machine gave it less than its quota',
        `each host group has cpu.shares ${LAB_SHARES} (8× a plain process) so that other work on this shared machine does not take the quota away from it; the quota still caps it`,
        `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, shared with other test runs (1-min load average at the end of each run: ${runs.map((r) => r.load.toFixed(1)).join(' / ')}); periods throttled per host: ${runs.map((r) => r.throttled.map((t) => `${t.throttled}/${t.periods}`).join(', ')).join(' | ')}`,
        on && off ? `stealing saves ${sec(off.wallMs - on.wallMs)} s (${((1 - on.wallMs / off.wallMs) * 100).toFixed(0)} %) on this job` : '',
      ].filter(Boolean),
    },
  ];
}

async function labOnce(dir: string, source: string, steal: boolean, log: Log, chunkSec?: number): Promise<LabRun> {
  log(`\n### lab run, stealing ${steal ? 'on' : 'off'}${chunkSec ? `, MAX_CHUNK_SEC ${chunkSec}` : ''}`);
  const net = LabNet.open(LAB_PREFIX);
  let cpu: LabCpu | undefined;
  let cluster: LocalCluster | undefined;
  let client: TesseraClient | undefined;
  try {
    cpu = LabCpu.open(LAB_PREFIX);
    const hosts = LAB_QUOTAS.map((q, i) => {
      const k = i + 1;
      // cpu.shares 8192 (8× a plain process): on this shared machine the quota is what the
      // host gets, not less; the quota still caps it.
      cpu!.group(`n${k}`, q, LAB_SHARES);
      return { k, ...net.addHost(k, { rateMbit: LAB_RATE_MBIT }) };
    });
    cluster = await LocalCluster.start({
      dir,
      nodes: 0,
      slots: 1,
      leaseTtlSec: 3,
      inputRoot: '/',
      logLevel: 'info',
      serviceHost: LabNet.SERVICE_HOST,
      env: { PROGRESS_INTERVAL_MS: '500', HEARTBEAT_MS: '1000', SEGMENT_NO_PROGRESS_MS: '120000' },
      coordinatorEnv: { STEAL_INTERVAL_MS: steal ? '1000' : '0' },
      ...(chunkSec ? { nodeEnv: { MAX_CHUNK_SEC: String(chunkSec) } } : {}),
    });
    for (const h of hosts) {
      const id = `node-${h.k}`;
      await cluster.addNode({ id, netns: h.netns, env: { BIND_HOST: '0.0.0.0', GRPC_PORT: String(LAB_AGENT_PORT), ADVERTISE_ADDRESS: `${h.address}:${LAB_AGENT_PORT}`, CPU_CORES: '1' } });
      const pid = cluster.pid(id);
      if (pid === undefined) throw new Error(`${id} has no process`);
      cpu.add(`n${h.k}`, pid);
    }
    client = new TesseraClient({ addresses: cluster.coordinators, timeoutMs: 30_000 });
    const before = hosts.map((h) => cpu!.usageSec(`n${h.k}`));
    // Each host's CPU use, sampled every second: a second under 10 % of its quota counts as idle
    // (no work), one under 85 % as starved (work, but the machine did not give it its quota).
    const sampler = cpuSampler(
      hosts.map((h) => `n${h.k}`),
      cpu,
    );
    const t0 = now();
    const { jobId } = await client.submit({ inputUri: source, ladder: LAB_LADDER });
    let lastLog = 0;
    let job: Job;
    try {
      job = await client.wait(jobId, (j) => {
        if (now() - lastLog > 10_000) {
          lastLog = now();
          log(
            `  ${sec(now() - t0)} s: ${j.progress.toFixed(0)} %, ${j.segments.map((s) => `${s.nodeId} ${s.framesDone}/${s.frames}`).join(', ')}; cores used in the last 10 s ${sampler
              .recent(10)
              .map((c) => c.toFixed(2))
              .join(' / ')}`,
          );
        }
      });
    } finally {
      sampler.stop();
    }
    const wallMs = now() - t0;
    const idleSec = sampler.idle;
    const starvedSec = sampler.starved;
    if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`lab job ended ${job.state}: ${job.errorCode} ${job.errorMessage}`);
    const workSec = hosts.map((h, i) => cpu!.usageSec(`n${h.k}`) - before[i]!);
    const throttled = hosts.map((h) => cpu!.throttling(`n${h.k}`));
    const cps = await checkpoints(cluster.client(), jobId);
    const chunksBy = new Map<string, number>();
    let stolen = 0;
    for (const cp of cps.values()) {
      for (const d of cp.done) chunksBy.set(d.nodeId, (chunksBy.get(d.nodeId) ?? 0) + 1);
      for (const h of Object.values(cp.helpers ?? {})) stolen += h.chunks.length;
    }
    const { prepareMs, finalizeMs } = serialParts(job);
    log(
      `  wall ${sec(wallMs)} s; CPU-s per host ${workSec.map((w) => w.toFixed(1)).join(' / ')}; serial ${sec(prepareMs + finalizeMs)} s; segments ${job.segments.map((s) => `${s.nodeId} ${s.frames}`).join(', ')}; chunks ${[...chunksBy].map(([n, c]) => `${n} ${c}`).join(', ')}; stolen ${stolen}`,
    );
    log(`  idle s per host ${idleSec.join(' / ')}; starved s per host ${starvedSec.join(' / ')}`);
    if (process.env.BENCH_KEEP_LOGS) await cp(join(dir, 'logs'), join(process.env.BENCH_KEEP_LOGS, `lab-${steal ? 'steal' : 'nosteal'}-${Date.now()}`), { recursive: true });
    return { steal, wallMs, job, workSec, throttled, chunksBy, stolen, load: loadavg()[0]!, idleSec, starvedSec };
  } finally {
    client?.close();
    try {
      await cluster?.stop();
    } finally {
      cpu?.close();
      net.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 10. Uneven keyframes: the planner on a real-world keyframe pattern, 5 nodes.

/** User + system CPU seconds of one ffmpeg run (GNU time). */
function cpuSecondsOf(args: string[]): number {
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', 'ffmpeg', '-hide_banner', '-nostdin', '-loglevel', 'error', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ffmpeg ${args.join(' ')} failed: ${r.stderr}`);
  const [u, sys] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
  return u! + sys!;
}

const KEYFRAMES_SEC = [0, 10.4, 11.9, 15.75, 23.0, 32.0, 42.4, 47.7, 56.1];

export async function keyframesBench(work: string, log: Log): Promise<BenchResult[]> {
  const source = join(work, 'keyframes-60s.mp4');
  const cmd = await makeClip(source, [
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=640x360:rate=25:duration=60',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-pix_fmt',
    'yuv420p',
    '-g',
    '300',
    '-keyint_min',
    '300',
    '-sc_threshold',
    '0',
    '-force_key_frames',
    KEYFRAMES_SEC.join(','),
    '-movflags',
    '+faststart',
  ]);
  log(`keyframes source: ${cmd}`);
  // The same packet scan and planner as the coordinator's real run and dry run (job-service.ts).
  const packets = await readPacketSummary(source);
  const keyframes = packets.keys.map((k) => k.timeSec);
  log(`  keyframes found at ${keyframes.map((k) => k.toFixed(2)).join(', ')} s; ${packets.presentedSec.length} frames`);
  // A lead-in frame is decoded and dropped, an output frame decoded and encoded: their costs,
  // measured on this clip with one thread (CPU seconds), weigh the lead-in in a segment's work.
  const decodeSec = cpuSecondsOf(['-threads', '1', '-i', source, '-f', 'null', '-']);
  const encodeSec = cpuSecondsOf(['-threads', '1', '-i', source, '-c:v', 'libx264', '-preset', 'medium', '-threads', '1', '-f', 'null', '-']);
  const leadInWeight = decodeSec / encodeSec;
  log(`  decode ${decodeSec.toFixed(2)} CPU-s, decode + encode (x264 medium, 360p) ${encodeSec.toFixed(2)} CPU-s: a lead-in frame weighs ${leadInWeight.toFixed(3)} of an output frame`);
  const cases: { label: string; nodes: PlanNode[] }[] = [
    { label: '5 fresh nodes, 1 slot each (equal capacity)', nodes: [1, 2, 3, 4, 5].map((k) => ({ id: `node-${k}`, slots: 1 })) },
    { label: '5 nodes, measured speeds 4 / 4 / 2 / 2 / 1 (per slot)', nodes: [4, 4, 2, 2, 1].map((v, i) => ({ id: `node-${i + 1}`, slots: 1, stats: { speedMps: v } })) },
  ];
  const results: BenchResult[] = [];
  for (const c of cases) {
    const cuts = planFrameSegments({ packets, fps: 25, nodes: c.nodes, minSegmentSec: 2 });
    if (!cuts) throw new Error('planFrameSegments refused the keyframe clip (open GOPs?)');
    const weights = capacityWeights(c.nodes);
    const wOf = new Map(c.nodes.map((n, i) => [n.id, weights[i]!]));
    const totalW = weights.reduce((a, b) => a + b, 0);
    const total = cuts.reduce((a, x) => a + x.frames, 0);
    let worst = 0;
    let worstLead = 0;
    let largest = { work: 0, ratio: 0, index: -1 };
    const rows = cuts.map((x) => {
      const share = (total * wOf.get(x.nodeId)!) / totalW;
      worst = Math.max(worst, x.frames / share);
      const work = x.frames + (x.leadIn ?? 0) * leadInWeight;
      worstLead = Math.max(worstLead, work / share);
      if (work > largest.work) largest = { work, ratio: work / share, index: x.index };
      return [x.index, x.nodeId, `${x.startSec.toFixed(2)}–${x.endSec.toFixed(2)}`, x.frames, share.toFixed(1), x.frames / share, x.leadIn ?? 0, work.toFixed(1), work / share];
    });
    log(
      `  ${c.label}: largest segment (${largest.index}) work/share ${largest.ratio.toFixed(4)}; worst frames/share ${worst.toFixed(4)}; work (lead-in decode included) / share ${worstLead.toFixed(4)}`,
    );
    results.push({
      name: `10. Uneven keyframes (0, 10.4, 11.9, 15.75, 23.0, 32.0, 42.4, 47.7, 56.1 s), ${c.label}`,
      head: ['segment', 'node', 'seconds', 'frames (encoded)', 'capacity share (frames)', 'frames / share', 'lead-in frames (decoded, dropped)', 'work (output-frame units)', 'work / share'],
      rows,
      notes: [
        `the largest segment (${largest.index}, ${largest.work.toFixed(1)} output-frame units): work / share ${largest.ratio.toFixed(4)} (target ≤ 1.05); worst of all segments: ${worstLead.toFixed(4)} with the lead-in decode counted, ${worst.toFixed(4)} in encoded frames alone`,
        `work = encoded frames + lead-in frames × ${leadInWeight.toFixed(3)}: the CPU time of decoding this clip (${decodeSec.toFixed(2)} s, one thread) over that of decoding and encoding it (${encodeSec.toFixed(2)} s, x264 medium at 360p, one thread); a larger ladder makes the lead-in weigh less`,
        `source: 60 s 640x360 25 fps (at 25 fps the longest gap, 10.4 s, is 260 frames: -g 300 adds no keyframe of its own), ${total} frames, made with \`${cmd}\`; planned by coordinator/scheduling/plan.ts planFrameSegments on the packet scan the coordinator makes (readPacketSummary), minSegmentSec 2`,
      ],
    });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// 11. Long input: 60 min at 160x120 on 2 agents.

export async function longBench(work: string, log: Log, o: { minutes?: number } = {}): Promise<BenchResult[]> {
  const minutes = o.minutes ?? 60;
  const seconds = minutes * 60;
  const source = join(work, `long-${minutes}min.mp4`);
  const t = now();
  const cmd = await makeClip(source, [
    '-f',
    'lavfi',
    '-i',
    `testsrc2=size=160x120:rate=25:duration=${seconds}`,
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-pix_fmt',
    'yuv420p',
    '-g',
    '25',
    '-keyint_min',
    '25',
    '-sc_threshold',
    '0',
    '-movflags',
    '+faststart',
  ]);
  log(`long source (${sec(now() - t)} s to make): ${cmd}`);
  const ladder = [{ name: '', height: 120, videoBitrateKbps: 150, codec: 'h264', preset: 'ultrafast' }];
  const dir = join(work, 'c-long');
  const cluster = await LocalCluster.start({ dir, nodes: 2, slots: 1, leaseTtlSec: 3, inputRoot: '/', logLevel: 'info', env: { PROGRESS_INTERVAL_MS: '500', HEARTBEAT_MS: '1000' } });
  const client = new TesseraClient({ addresses: cluster.coordinators, timeoutMs: 30_000 });
  const metrics = `${cluster.etcdEndpoints[0]!.replace(/^https?:\/\/[^:]+/, 'http://127.0.0.1')}/metrics`;
  const proposals = async (): Promise<number> => {
    const text = await (await fetch(metrics, { signal: AbortSignal.timeout(5_000) })).text();
    const line = text.split('\n').find((l) => l.startsWith('etcd_server_proposals_committed_total '));
    if (!line) throw new Error('etcd_server_proposals_committed_total not in etcd /metrics');
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  try {
    // Background writes of an idle cluster (agents' stats, leases, leader key), per second.
    const idle0 = await proposals();
    const it0 = now();
    await new Promise((r) => setTimeout(r, 15_000));
    const idlePerSec = ((await proposals()) - idle0) / ((now() - it0) / 1000);

    // Clean run: chunks and etcd writes per chunk.
    const p0 = await proposals();
    let t0 = now();
    const { jobId } = await client.submit({ inputUri: source, ladder });
    let lastLog = 0;
    const progressLog = (j: Job): void => {
      if (now() - lastLog > 15_000) {
        lastLog = now();
        log(`  ${sec(now() - t0)} s: ${j.progress.toFixed(0)} %`);
      }
    };
    const job = await client.wait(jobId, progressLog);
    const cleanMs = now() - t0;
    const writes = (await proposals()) - p0;
    if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`long job ended ${job.state}: ${job.errorCode} ${job.errorMessage}`);
    const cps = await checkpoints(cluster.client(), jobId);
    const chunks = [...cps.values()].reduce((a, cp) => a + cp.boundaries.length - 1, 0);
    const background = idlePerSec * (cleanMs / 1000);
    log(`  clean: ${sec(cleanMs)} s, ${job.segments.length} segments, ${chunks} chunks, ${writes} etcd proposals (${(writes / chunks).toFixed(2)} per chunk; idle cluster ${idlePerSec.toFixed(2)}/s)`);

    // The same job with one agent killed (SIGKILL) at ~50 %.
    const t1 = now();
    t0 = t1;
    const { jobId: killedJob } = await client.submit({ inputUri: source, ladder });
    let victim = '';
    let killedAt = 0;
    lastLog = 0;
    const job2 = await client.wait(killedJob, (j) => {
      progressLog(j);
      if (!victim && j.progress >= 50) {
        victim = j.segments.find((s) => s.state !== 'SEGMENT_STATE_DONE')?.nodeId || cluster.nodeIds()[0]!;
        killedAt = j.progress;
        cluster.signal(victim, 'SIGKILL');
        log(`  killed ${victim} (kill -9) at ${j.progress.toFixed(0)} %`);
      }
    });
    const killMs = now() - t1;
    if (job2.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`long job with a kill ended ${job2.state}: ${job2.errorCode} ${job2.errorMessage}`);
    const cps2 = await checkpoints(cluster.client(), killedJob);
    const chunks2 = [...cps2.values()].reduce((a, cp) => a + cp.boundaries.length - 1, 0);
    const redone = subSegmentsRedone(dir, cluster.nodeIds(), killedJob);
    const redoneByCheckpoint = [...cps2.values()].reduce((a, cp) => a + Math.max(0, Object.values(cp.transcodedByAttempt).reduce((x, y) => x + y, 0) - (cp.boundaries.length - 1)), 0);
    log(`  with kill: ${sec(killMs)} s, ${chunks2} chunks, redone ${redone} (log lines), ${redoneByCheckpoint} (checkpoints' transcodedByAttempt)`);
    return [
      {
        name: `11. Long input: ${minutes} min 160x120 25 fps on 2 node agents (1 slot each), MAX_CHUNK_SEC 15 (default)`,
        head: ['run', 'wall s', 'segments', 'chunks', 'etcd proposals committed', 'per chunk', 'per chunk, idle background subtracted', 'chunks redone'],
        rows: [
          ['clean', cleanMs / 1000, job.segments.length, chunks, writes, writes / chunks, (writes - background) / chunks, 0],
          [`${victim} killed -9 at ${killedAt.toFixed(0)} %`, killMs / 1000, job2.segments.length, chunks2, '', '', '', `${redone} (checkpoints: ${redoneByCheckpoint})`],
        ],
        notes: [
          `source: ${minutes} min 160x120 25 fps, no audio, made with \`${cmd}\`; ladder 120p 150k ultrafast`,
          `etcd writes: etcd_server_proposals_committed_total from etcd's /metrics before submit and after SUCCEEDED (every put, txn, delete and lease grant/revoke is one raft proposal); the idle cluster commits ${idlePerSec.toFixed(2)} proposals/s (agents' stats, leases), measured for 15 s before the job`,
          'chunks redone: (segment, chunk) pairs started under two or more attempts in the agents\' "sub-segment started" log lines (test/faults-helpers.ts subSegmentsRedone); the checkpoint count is transcodes recorded per attempt minus chunks. Lease TTL 3 s.',
        ],
      },
    ];
  } finally {
    client.close();
    await cluster.stop();
  }
}
