import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { LocalCluster, waitFor } from '../deploy/local-cluster.js';
import { makeSample } from '../deploy/sample.js';
import { createLogger } from '../common/logger.js';
import { Keys } from '../common/keys.js';
import { simulatedTranscoder } from '../test/support/simulated-transcoder.js';
import { TesseraClient } from '../sdk/client.js';
import { JobState, type Job } from '../proto/gen/tessera/v1/types.js';
import { startSimAgents } from './sim-agents.js';

export interface ControlPlaneOptions {
  /** Work folder (etcd data, staging, logs, the input). */
  dir: string;
  agents: number;
  /** Worker slots per simulated agent (= sub-segments per segment). */
  slots: number;
  jobs: number;
  /** The input every job transcodes: generated once with ffmpeg. */
  source: { seconds: number; width: number; height: number; fps: number; gop: number; audio: boolean };
  /** MIN_SEGMENT_SEC of the coordinator: with the source's keyframes it sets segments per job. */
  minSegmentSec: number;
  /** MIN_SUB_SEGMENT_SEC of the agents. */
  minSubSegmentSec: number;
  maxConcurrentJobs: number;
  /** Simulated transcode time per second of media (0.1 = 10× faster than real time). */
  sleepFactor: number;
  /** Renditions per job (parts per sub-segment). */
  rungs: number;
  /** Fails the run after this long, ms. */
  timeoutMs?: number;
  progress?: (line: string) => void;
  /**
   * Web consoles kept open through the run (docs/console.md): each holds the two streams a
   * browser on the Jobs and Cluster pages holds (the job list and the cluster status, read over
   * fetch as server-sent events). 0 (default): the console listens, nobody is connected.
   */
  consoleClients?: number;
  /** With consoles: the idle spells (without, then with them) over which the coordinator's CPU is read, s (default 10). */
  consoleIdleSec?: number;
}

/** Counters read from etcd's own Prometheus endpoint (deltas over the measured run). */
export interface EtcdWrites {
  /** etcd_server_proposals_committed_total: write requests committed through raft (put, delete, txn — also a txn whose compare failed — lease grant and revoke). */
  proposals: number;
  /** etcd_mvcc_put_total: keys put (a txn with three puts counts three). */
  puts: number;
  /** etcd_mvcc_delete_total: delete operations. */
  deletes: number;
  /** etcd_mvcc_txn_total: transactions with more than one operation. */
  txns: number;
  /** Store revision delta: write requests that changed at least one key. */
  revisions: number;
}

export interface ControlPlaneResult {
  jobs: number;
  segments: number;
  subSegments: number;
  /** Segment assignments recorded (one per attempt; > segments when a segment was reassigned). */
  assignments: number;
  /** Assignments per second between the 10th and the 90th percentile of assignment times. */
  steadyPerSec: number;
  /** Assignments per second from the first to the last assignment. */
  assignPerSec: number;
  /** Segments per second from the first submit to the last job SUCCEEDED. */
  endToEndPerSec: number;
  wallSec: number;
  etcd: EtcdWrites;
  /** Stats heartbeat puts by the agents during the run (time-based, not per segment). */
  heartbeats: number;
  coordinator: {
    cpuSec: number;
    childCpuSec: number;
    peakRssMiB: number;
    rss: { atJobsDone: number; mib: number }[];
    eventLoopP99MedianMs: number;
    eventLoopP99P90Ms: number;
    eventLoopP99MaxMs: number;
  };
  /** What the open consoles received (0 without consoles). */
  console: { clients: number; events: number; bytes: number; errors: number; idleCpuMsPerSec: { none: number; open: number } };
  head: string[];
  rows: (string | number)[][];
  notes: string[];
}

const TARGET_RATE = 500;
const TARGET_WRITES = 5;

/**
 * Issue 5, item 3: the control plane at scale. Real etcd, a real coordinator process, the real
 * uploader and S3 server, and `agents` simulated node agents in this process (real protocol,
 * simulated media: test/support/simulated-transcoder.ts). Submits `jobs` jobs through the SDK and
 * measures how fast segments are scheduled, how many etcd writes each costs, and the
 * coordinator's CPU and memory. Throws unless every job reaches SUCCEEDED.
 */
export async function runControlPlane(o: ControlPlaneOptions): Promise<ControlPlaneResult> {
  const say = o.progress ?? (() => undefined);
  await mkdir(o.dir, { recursive: true });
  const input = join(o.dir, 'input', 'source.mp4');
  await makeSample(input, { ...o.source, preset: 'ultrafast' });
  const keys = new Keys('/tessera/');
  const log = createLogger('sim-agents', 'warn');
  const metricsPort = await freePort(); // the coordinator's /metrics: its heap figures
  const heapDir = join(o.dir, 'heap'); // the coordinator's heap snapshots (written, read, deleted)
  await mkdir(heapDir, { recursive: true });

  const cluster = await LocalCluster.start({
    dir: join(o.dir, 'cluster'),
    nodes: 0,
    slots: o.slots,
    leaseTtlSec: 10,
    inputRoot: join(o.dir, 'input'),
    logLevel: 'warn',
    env: { HEARTBEAT_MS: '2000' }, // progress every PROGRESS_INTERVAL_MS (default 1 s)
    coordinatorEnv: {
      MAX_CONCURRENT_JOBS: String(o.maxConcurrentJobs),
      MIN_SEGMENT_SEC: String(o.minSegmentSec),
      // The trail must hold every segment's entries: assignments are counted from it.
      JOB_HISTORY_LIMIT: '10000',
      METRICS_PORT: String(metricsPort),
      // SIGUSR2 writes a heap snapshot, which first collects fully: the heap in use right after
      // is what the coordinator retains.
      NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${heapDir}`,
    },
  });
  const client = new TesseraClient({ addresses: cluster.coordinators, timeoutMs: 30_000 });
  const agents = await startSimAgents({
    count: o.agents,
    slots: o.slots,
    etcdEndpoints: cluster.etcdEndpoints,
    dir: join(o.dir, 'agents'),
    media: simulatedTranscoder({ secondsPerMediaSecond: o.sleepFactor, clipDir: join(o.dir, 'clips') }),
    leaseTtlSec: 10,
    heartbeatMs: 2_000,
    minSubSegmentSec: o.minSubSegmentSec,
    log,
  }).catch(async (err: unknown) => {
    client.close();
    await cluster.stop();
    throw err;
  });
  const etcd = cluster.client();
  const coordinatorPid = cluster.pid('coordinator-0');
  let sampler: NodeJS.Timeout | undefined;
  try {
    if (coordinatorPid === undefined) throw new Error('no coordinator process');
    await waitFor(async () => (await client.listNodes()).length === o.agents, 30_000, `the coordinator to see ${o.agents} agents`);
    say(`${o.agents} simulated agents registered; submitting ${o.jobs} jobs`);

    // Rungs at and below the source height (the coordinator drops taller ones): 144, 128, 112, …
    const ladder = Array.from({ length: Math.max(1, o.rungs) }, (_, i) => o.source.height - 16 * i)
      .filter((h) => h >= 16)
      .map((height) => ({ name: '', height, videoBitrateKbps: 0, codec: 'h264', preset: 'ultrafast' }));
    const metricsUrl = `${cluster.etcdEndpoints[0]!}/metrics`;
    const before = await etcdCounters(metricsUrl, etcd);
    const heartbeats0 = agents.statsPublished();
    const cpu0 = procCpu(coordinatorPid);
    const rss: { atMs: number; doneJobs: number; bytes: number }[] = [];
    // The V8 heap in use, from the coordinator's /metrics (RSS also moves with GC timing and
    // allocator caches; the heap's low points show what is retained).
    const heap: { doneJobs: number; bytes: number }[] = [];
    // Event-loop delay of the coordinator (prom-client's monitorEventLoopDelay, reset at every
    // scrape): each 500 ms window's p99 (the heap snapshot at a quarter of the jobs pauses the
    // process for about a second: its window is the maximum, so medians and p90 are reported too).
    const lagP99: number[] = [];
    let doneJobs = 0;
    let ticks = 0;
    sampler = setInterval(() => {
      try {
        rss.push({ atMs: Date.now(), doneJobs, bytes: procStatusKiB(coordinatorPid, 'VmRSS') * 1024 });
      } catch {
        // the coordinator is gone; the run fails below
      }
      if (ticks++ % 2 === 0) {
        const at = doneJobs;
        void fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(2_000) })
          .then(async (r) => {
            const text = await r.text();
            heap.push({ doneJobs: at, bytes: metric(text, 'nodejs_heap_size_used_bytes') });
            lagP99.push(metric(text, 'nodejs_eventloop_lag_p99_seconds') * 1000);
          })
          .catch(() => undefined);
      }
    }, 250);

    const consoles = openConsoles(cluster.consoles[0]!, o.consoleClients ?? 0);
    if ((o.consoleClients ?? 0) > 0) {
      await waitFor(() => consoles.stats.events >= 2 * (o.consoleClients ?? 0), 30_000, 'the consoles to connect');
      say(`${o.consoleClients} console(s) connected (job list + cluster streams)`);
    }

    // Submit (a few at a time, as many clients would), then wait for every job to end.
    const t0 = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < o.jobs; i += 10) {
      const batch = await Promise.all(Array.from({ length: Math.min(10, o.jobs - i) }, () => client.submit({ inputUri: input, ladder })));
      ids.push(...batch.map((r) => r.jobId));
    }
    say(`submitted ${ids.length} jobs in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // Completion is read from the job records in etcd once a second (cheap reads), not with one
    // WatchJob stream per job: that would put 200 clients' read load on the coordinator we measure.
    const open = new Set(ids);
    let retainedAtQuarter: { jobs: number; mib: number } | undefined;
    const deadline = Date.now() + (o.timeoutMs ?? 20 * 60_000);
    let lastSay = 0;
    while (open.size > 0) {
      if (Date.now() > deadline) throw new Error(`timed out with ${open.size} of ${ids.length} jobs unfinished`);
      await new Promise((r) => setTimeout(r, 1_000));
      await Promise.all(
        [...open].map(async (id) => {
          const raw = await etcd
            .get(keys.job(id))
            .options({ deadline: new Date(Date.now() + 10_000) })
            .string();
          const state = raw ? (JSON.parse(raw) as { state: string }).state : 'MISSING';
          if (state === 'SUCCEEDED' || state === 'FAILED' || state === 'CANCELLED' || state === 'MISSING') open.delete(id);
        }),
      );
      doneJobs = ids.length - open.size;
      if (retainedAtQuarter === undefined && doneJobs >= Math.ceil(ids.length / 4)) {
        retainedAtQuarter = { jobs: doneJobs, mib: await retainedHeapMiB(coordinatorPid, heapDir, metricsPort) };
      }
      if (Date.now() - lastSay > 10_000) {
        lastSay = Date.now();
        say(`${doneJobs}/${ids.length} jobs finished after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      }
    }
    const wallMs = Date.now() - t0;
    consoles.close();
    const after = await etcdCounters(metricsUrl, etcd);
    const heartbeats = agents.statsPublished() - heartbeats0;
    const cpu1 = procCpu(coordinatorPid);
    clearInterval(sampler);
    sampler = undefined;
    const retainedAfter = await retainedHeapMiB(coordinatorPid, heapDir, metricsPort);
    // The console's own cost, apart from the run: the coordinator's CPU over an idle spell with no
    // console, then with the consoles open again (CPU time, not wall time: the machine's load
    // matters less). 200 finished jobs are in the list it reads.
    const idle = { none: 0, open: 0, seconds: o.consoleIdleSec ?? 10 };
    if ((o.consoleClients ?? 0) > 0) {
      const spell = async (): Promise<number> => {
        const a = procCpu(coordinatorPid).own;
        await new Promise((r) => setTimeout(r, idle.seconds * 1000));
        return ((procCpu(coordinatorPid).own - a) * 1000) / idle.seconds;
      };
      idle.none = await spell();
      const again = openConsoles(cluster.consoles[0]!, o.consoleClients ?? 0);
      await waitFor(() => again.stats.events >= 2 * (o.consoleClients ?? 0), 30_000, 'the consoles to reconnect');
      idle.open = await spell();
      again.close();
    }
    const peakRssMiB = procStatusKiB(coordinatorPid, 'VmHWM') / 1024;

    // Every job, read back through the SDK: all must have SUCCEEDED.
    const jobs: Job[] = [];
    for (const id of ids) jobs.push(await client.get(id));
    const bad = jobs.filter((j) => j.state !== JobState.JOB_STATE_SUCCEEDED);
    if (bad.length > 0) throw new Error(`${bad.length} of ${jobs.length} jobs did not succeed, e.g. ${bad[0]!.id}: ${bad[0]!.state} ${bad[0]!.errorCode} ${bad[0]!.errorMessage}`);
    const segments = jobs.reduce((n, j) => n + j.segments.length, 0);
    const subSegments = jobs.reduce((n, j) => n + j.segments.reduce((m, s) => m + s.subSegments, 0), 0);
    const assignedAt = jobs.flatMap((j) => j.history.filter((h) => h.scope.startsWith('segment/') && h.state === 'TRANSFERRING').map((h) => h.atMs)).sort((a, b) => a - b);
    if (segments === 0 || assignedAt.length < segments) throw new Error(`found ${assignedAt.length} assignments for ${segments} segments`);
    const lastDone = Math.max(...jobs.map((j) => j.history.find((h) => h.scope === 'job' && h.state === 'SUCCEEDED')?.atMs ?? 0));
    const q = (p: number): number => assignedAt[Math.min(assignedAt.length - 1, Math.floor(p * (assignedAt.length - 1)))]!;
    const steadyPerSec = (0.8 * assignedAt.length) / Math.max(0.001, (q(0.9) - q(0.1)) / 1000);
    const assignPerSec = assignedAt.length / Math.max(0.001, (assignedAt.at(-1)! - assignedAt[0]!) / 1000);
    const endToEndPerSec = segments / Math.max(0.001, (lastDone - t0) / 1000);

    const w: EtcdWrites = {
      proposals: after.proposals - before.proposals,
      puts: after.puts - before.puts,
      deletes: after.deletes - before.deletes,
      txns: after.txns - before.txns,
      revisions: after.revisions - before.revisions,
    };
    const cpuSec = cpu1.own - cpu0.own;
    const childCpuSec = cpu1.children - cpu0.children;
    const rssAt = [0.25, 0.5, 0.75, 1].map((f) => {
      const want = Math.ceil(f * ids.length);
      const s = rss.find((x) => x.doneJobs >= want) ?? rss.at(-1);
      return { atJobsDone: want, mib: (s?.bytes ?? 0) / 1024 ** 2 };
    });
    // Lowest heap in use within each quarter of the jobs (what survives the collections).
    const heapFloor = [0.25, 0.5, 0.75, 1].map((f) => {
      const lo = (f - 0.25) * ids.length;
      const inQuarter = heap.filter((h) => h.doneJobs >= lo && h.doneJobs <= f * ids.length).map((h) => h.bytes);
      return inQuarter.length > 0 ? Math.min(...inQuarter) / 1024 ** 2 : Number.NaN;
    });
    const quarter = retainedAtQuarter ?? { jobs: 0, mib: Number.NaN };
    const heapGrowth = retainedAfter - quarter.mib;
    const growth = rssAt.length === 4 ? rssAt[3]!.mib - rssAt[0]!.mib : Number.NaN;
    const flat = heapGrowth <= 0.15 * quarter.mib;
    const perSeg = (n: number): number => n / segments;
    const sortedLag = [...lagP99].sort((a, b) => a - b);
    const at = (p: number): number => sortedLag[Math.min(sortedLag.length - 1, Math.floor(p * (sortedLag.length - 1)))] ?? 0;
    const lag = { median: at(0.5), p90: at(0.9), max: sortedLag.at(-1) ?? 0 };
    const mb = (x: number): string => x.toFixed(0);
    const yes = (ok: boolean): string => (ok ? 'yes' : 'no');

    const head = ['measure', 'measured', 'target', 'met?'];
    const rows: (string | number)[][] = [
      ['segments scheduled per second (steady state: assignments between the 10th and 90th percentile)', steadyPerSec, `≥ ${TARGET_RATE}`, yes(steadyPerSec >= TARGET_RATE)],
      ['segments scheduled per second (first to last assignment)', assignPerSec, '', ''],
      ['segments per second end to end (first submit → last SUCCEEDED)', endToEndPerSec, '', ''],
      ['etcd write requests per segment (raft proposals committed)', perSeg(w.proposals), `≤ ${TARGET_WRITES}`, yes(perSeg(w.proposals) <= TARGET_WRITES)],
      ["etcd write requests per segment, without the agents' stats heartbeats", perSeg(w.proposals - heartbeats), `≤ ${TARGET_WRITES}`, yes(perSeg(w.proposals - heartbeats) <= TARGET_WRITES)],
      ['etcd keys written per segment (mvcc puts + deletes)', perSeg(w.puts + w.deletes), '', ''],
      ['etcd revisions per segment (write requests that changed a key)', perSeg(w.revisions), '', ''],
      ['coordinator CPU s: own (utime+stime)', cpuSec, '', ''],
      ['coordinator CPU s: its ffmpeg/ffprobe children (cutime+cstime)', childCpuSec, '', ''],
      ['coordinator CPU ms per segment (own)', (cpuSec * 1000) / segments, '', ''],
      ['coordinator peak RSS MiB (VmHWM)', peakRssMiB, '', ''],
      [`coordinator RSS MiB at ${rssAt.map((r) => r.atJobsDone).join(' / ')} jobs done`, rssAt.map((r) => mb(r.mib)).join(' / '), '', ''],
      ['coordinator V8 heap in use MiB, lowest in each quarter of the jobs', heapFloor.map((x) => (Number.isFinite(x) ? x.toFixed(0) : '?')).join(' / '), '', ''],
      [
        `coordinator heap retained MiB (in use after a full collection) at ${quarter.jobs} jobs done / after all ${ids.length}`,
        `${quarter.mib.toFixed(1)} / ${retainedAfter.toFixed(1)}`,
        'flat',
        yes(flat),
      ],
      ['coordinator event-loop delay ms, p99 of each 0.5 s window: median / 90th percentile / highest', `${lag.median.toFixed(1)} / ${lag.p90.toFixed(1)} / ${lag.max.toFixed(1)}`, '', ''],
      ['web consoles open (job list + cluster streams each) / events they received', `${o.consoleClients ?? 0} / ${consoles.stats.events}`, '', ''],
      ...((o.consoleClients ?? 0) > 0
        ? [
            [
              `coordinator CPU ms per second, idle after the run (${idle.seconds} s each): no console / ${o.consoleClients} console(s) open`,
              `${idle.none.toFixed(1)} / ${idle.open.toFixed(1)}`,
              '',
              '',
            ],
          ]
        : []),
    ];
    const notes = [
      `${o.agents} simulated node agents × ${o.slots} slots in one process, ${o.jobs} jobs of a ${o.source.seconds} s ${o.source.width}x${o.source.height} ${o.source.fps} fps clip (keyframe every ${o.source.gop} frames${o.source.audio ? ', with audio' : ', no audio'}), ${ladder.length} renditions, MIN_SEGMENT_SEC ${o.minSegmentSec}, MAX_CONCURRENT_JOBS ${o.maxConcurrentJobs}, simulated transcode ${o.sleepFactor} s per media second`,
      `${segments} segments, ${subSegments} sub-segments, ${assignedAt.length} assignments; all ${jobs.length} jobs SUCCEEDED in ${(wallMs / 1000).toFixed(1)} s`,
      `agents' stats heartbeats in that time: ${heartbeats} puts (${o.agents} agents, one every 2 s each: a cost per agent and second, not per segment)`,
      `etcd deltas over the run: ${w.proposals} proposals, ${w.puts} puts, ${w.deletes} deletes, ${w.txns} multi-op txns, ${w.revisions} revisions (includes job submission, progress, uploads/ state, agents' lease grants and stats heartbeats)`,
      `RSS sampled every 250 ms, the heap every 500 ms from the coordinator's /metrics; the retained heap is read right after a heap snapshot (SIGUSR2; the coordinator pauses for it), which collects fully first; flat = retained after the run within 15 % of retained at a quarter of the jobs (${heapGrowth >= 0 ? '+' : ''}${heapGrowth.toFixed(1)} MiB). RSS ${growth >= 0 ? '+' : ''}${growth.toFixed(0)} MiB from ${rssAt[0]!.atJobsDone} to ${rssAt[3]!.atJobsDone} jobs done, and the peak RSS, include what writing the first heap snapshot took from the allocator`,
    ];
    return {
      jobs: jobs.length,
      segments,
      subSegments,
      assignments: assignedAt.length,
      steadyPerSec,
      assignPerSec,
      endToEndPerSec,
      wallSec: wallMs / 1000,
      etcd: w,
      heartbeats,
      coordinator: { cpuSec, childCpuSec, peakRssMiB, rss: rssAt, eventLoopP99MedianMs: lag.median, eventLoopP99P90Ms: lag.p90, eventLoopP99MaxMs: lag.max },
      console: { clients: o.consoleClients ?? 0, ...consoles.stats, idleCpuMsPerSec: { none: idle.none, open: idle.open } },
      head,
      rows,
      notes,
    };
  } finally {
    if (sampler) clearInterval(sampler);
    client.close();
    await agents.stop();
    await cluster.stop();
  }
}

/**
 * `n` web consoles, each holding the streams a browser on the Jobs and Cluster pages holds (fetch,
 * `text/event-stream`), reconnecting if one drops; counts what they receive.
 */
function openConsoles(base: string, n: number): { stats: { events: number; bytes: number; errors: number }; close(): void } {
  const stats = { events: 0, bytes: 0, errors: 0 };
  const ac = new AbortController();
  const follow = async (topic: string): Promise<void> => {
    while (!ac.signal.aborted) {
      try {
        const r = await fetch(`${base}api/stream?topic=${topic}`, { signal: ac.signal });
        if (!r.ok || !r.body) throw new Error(`console stream answered ${r.status}`);
        const dec = new TextDecoder();
        let buf = '';
        for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
          stats.bytes += chunk.length;
          buf += dec.decode(chunk, { stream: true });
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            if (buf.startsWith('event: ')) stats.events++;
            buf = buf.slice(i + 2);
          }
        }
      } catch {
        if (ac.signal.aborted) return;
        stats.errors++;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  for (let i = 0; i < n; i++) for (const topic of ['jobs', 'cluster']) void follow(topic);
  return { stats, close: () => ac.abort() };
}

/**
 * The coordinator's heap in use right after a full collection: SIGUSR2 makes it write a heap
 * snapshot (--heapsnapshot-signal), which collects first; /metrics is read once the file is
 * written, and the file is deleted.
 */
async function retainedHeapMiB(pid: number, dir: string, metricsPort: number): Promise<number> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  let file: string | undefined;
  let lastSize = -1;
  for (;;) {
    if (Date.now() > deadline) throw new Error('the coordinator wrote no heap snapshot');
    await new Promise((r) => setTimeout(r, 250));
    file ??= readdirSync(dir).find((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
    if (!file) continue;
    const size = statSync(join(dir, file)).size;
    if (size > 0 && size === lastSize) break; // written
    lastSize = size;
  }
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const mib = metric(await res.text(), 'nodejs_heap_size_used_bytes') / 1024 ** 2;
  rmSync(join(dir, file), { force: true });
  return mib;
}

/** A TCP port free right now on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Reads etcd's write counters from its /metrics and its current revision. */
async function etcdCounters(url: string, etcd: ReturnType<LocalCluster['client']>): Promise<EtcdWrites> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`etcd /metrics answered ${res.status}`);
  const text = await res.text();
  const rev = await etcd
    .get('/tessera/bench-probe')
    .options({ deadline: new Date(Date.now() + 5_000) })
    .exec();
  return {
    proposals: metric(text, 'etcd_server_proposals_committed_total'),
    puts: metric(text, 'etcd_mvcc_put_total'),
    deletes: metric(text, 'etcd_mvcc_delete_total'),
    txns: metric(text, 'etcd_mvcc_txn_total'),
    revisions: Number(rev.header.revision),
  };
}

/** Sum of an unlabelled (or every labelled) sample of a Prometheus metric; throws when absent. */
export function metric(text: string, name: string): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const value = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) {
      sum += value;
      found = true;
    }
  }
  if (!found) throw new Error(`etcd /metrics has no ${name}`);
  return sum;
}

let clkTck: number | undefined;

/** CPU seconds of a process (own) and of its waited-for children, from /proc/<pid>/stat. */
export function procCpu(pid: number): { own: number; children: number } {
  clkTck ??= Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm) ": state is field 3, utime 14, stime 15, cutime 16, cstime 17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const n = (i: number): number => Number(f[i - 3]);
  return { own: (n(14) + n(15)) / clkTck, children: (n(16) + n(17)) / clkTck };
}

/** A kB figure from /proc/<pid>/status (VmRSS, VmHWM). */
export function procStatusKiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}
