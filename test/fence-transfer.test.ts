import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendFileChunks } from '../common/chunks.js';
import { deadline, iterateStream, openClientStream } from '../common/grpc.js';
import { Keys } from '../common/keys.js';
import type { NodeRecord } from '../common/records.js';
import { SegmentFence } from '../common/segment-fence.js';
import { PLAIN_TREATMENT } from '../transcoder/treatment.js';
import { CHUNK_RETRY, runSegmentWork } from '../node-agent/segment-work.js';
import { ffmpegSegmentMedia, type SegmentMedia } from '../node-agent/segment-media.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';
import { countFrames } from '../transcoder/probe.js';
import { simulatedTranscoder } from './support/simulated-transcoder.js';
import { createLogger } from '../common/logger.js';
import { WorkerPool } from '../transcoder/worker-pool.js';
import { NodeAgentClient } from '../common/bulk-codec.js';
import type { SegmentChunk, SegmentEvent, SegmentRef, TransferStatus } from '../proto/gen/tessera/v1/agent.js';
import type { PartAck, PartChunk, UploaderClient } from '../proto/gen/tessera/v1/uploader.js';
import { makeSample } from '../deploy/sample.js';
import { AppError } from '../common/errors.js';
import { startTestCluster, type TestCluster } from './helpers.js';

/** Makes node 'x' the owner of segment 0 of `jobId`; answers the owner key's revision (the fencing token). */
async function ownSegment(etcd: ReturnType<TestCluster['cluster']['client']>, keys: Keys, jobId: string): Promise<number> {
  const res = await etcd
    .put(keys.segmentOwner(jobId, 0))
    .value(JSON.stringify({ nodeId: 'x', attempt: 1 }))
    .exec();
  return Number(res.header.revision);
}

/** What runSegmentWork needs around a test's media layer: 2 slots, no uploader (no part may be sent). */
function guardDeps(etcd: ReturnType<TestCluster['cluster']['client']>, keys: Keys, media: SegmentMedia): Parameters<typeof runSegmentWork>[1] {
  return {
    etcd,
    keys,
    log: createLogger('test', 'silent'),
    pool: new WorkerPool(2),
    nodeId: 'x',
    slots: 2,
    minSubSegmentSec: 0.5,
    maxChunkSec: 15,
    ffmpegThreads: 1,
    noProgressMs: 10_000,
    wallClockMs: 10_000,
    subSegmentAttempts: 3,
    uploadTimeoutMs: 1_000,
    uploaderFor: () => {
      throw new Error('no part may be uploaded');
    },
    onFenced: () => undefined,
    onSubSegmentDone: () => undefined,
    onRetry: () => undefined,
    media,
  };
}

/** A 40-frame, 10 fps segment of job `jobId` for runSegmentWork (its file is never read by the simulated media). */
function guardRequest(jobId: string, rev: number, dir: string): Parameters<typeof runSegmentWork>[0] {
  return {
    jobId,
    segment: 0,
    attempt: 1,
    ownerRevision: rev,
    renditions: [],
    fps: 10,
    frames: 40,
    treatment: { ...PLAIN_TREATMENT },
    leadInFrames: 0,
    leadOutFrames: 0,
    segmentPath: join(dir, 'seg.mkv'),
    workDir: join(dir, 'work'),
    uploaderAddress: '127.0.0.1:1',
    uploaderId: 'u',
  };
}

/** An uploader stand-in that acknowledges each part `ackMs` after its last byte (an fsync on a busy disk), with the bytes' SHA-256. */
function slowUploader(ackMs: number, onAck: (sub: string, bytes: number) => void = () => undefined): UploaderClient {
  return {
    putPart: (_md: unknown, _opts: unknown, cb: (err: Partial<ServiceError> | null, ack?: PartAck) => void) => {
      const hash = createHash('sha256');
      let sub = '';
      let bytes = 0;
      let settled = false;
      const settle = (err: Partial<ServiceError> | null, ack?: PartAck): void => {
        if (settled) return;
        settled = true;
        cb(err, ack);
      };
      const w = new Writable({
        objectMode: true,
        write(chunk: PartChunk, _enc, next) {
          sub = String(chunk.ref?.subSegment ?? '');
          if (chunk.data) {
            hash.update(chunk.data);
            bytes += chunk.data.length;
          }
          next();
        },
        final(done) {
          setTimeout(() => {
            if (settled) return;
            onAck(sub, bytes);
            settle(null, { bytes, sha256: hash.digest('hex') });
          }, ackMs);
          done();
        },
      });
      // As grpc-js does: a cancelled call ends with CANCELLED (a no-op cancel left a chunk that was
      // aborted while its parts were on their way waiting for an answer forever).
      return Object.assign(w, { cancel: () => settle({ code: status.CANCELLED, details: 'Cancelled on client', metadata: new Metadata() }) });
    },
  } as unknown as UploaderClient;
}

describe('fencing and transfer resume against real etcd and a real node agent', () => {
  let t: TestCluster;
  let agent: NodeAgentClient;
  beforeAll(async () => {
    t = await startTestCluster({ nodes: 1 });
    const rec = JSON.parse((await t.cluster.client().get('/tessera/nodes/node-0').string())!) as NodeRecord;
    agent = new NodeAgentClient(rec.address, credentials.createInsecure());
  });
  afterAll(async () => {
    agent?.close();
    await t?.close();
  });
  /** Segment 0 of `jobId`, owned by node 'x' (its owner revision), and a scratch folder. */
  const ownedSegment = async (jobId: string): Promise<{ etcd: ReturnType<TestCluster['cluster']['client']>; keys: Keys; rev: number; dir: string }> => {
    const etcd = t.cluster.client();
    const keys = new Keys('/tessera/');
    return { etcd, keys, rev: await ownSegment(etcd, keys, jobId), dir: await mkdtemp(join(tmpdir(), `${jobId}-`)) };
  };

  it('rejects every checkpoint write once the owner key moves on (and counts them)', async () => {
    const etcd = t.cluster.client();
    const keys = new Keys('/tessera/');
    const owner = keys.segmentOwner('jfence', 0);
    const rev1 = Number(
      (
        await etcd
          .put(owner)
          .value(JSON.stringify({ nodeId: 'a', attempt: 1 }))
          .exec()
      ).header.revision,
    );
    const old = new SegmentFence(etcd, keys, 'jfence', 0, rev1);
    await old.updateCheckpoint(() => ({ boundaries: [0, 1, 2], done: [], transcodedByAttempt: {} }));
    // The coordinator reassigns the segment: a new owner revision.
    const rev2 = Number(
      (
        await etcd
          .put(owner)
          .value(JSON.stringify({ nodeId: 'b', attempt: 2 }))
          .exec()
      ).header.revision,
    );
    const fresh = new SegmentFence(etcd, keys, 'jfence', 0, rev2);
    for (let i = 0; i < 3; i++) {
      await expect(old.updateCheckpoint((cp) => ({ ...cp!, done: [{ sub: i, attempt: 1, nodeId: 'a', frames: 1 }] }))).rejects.toMatchObject({ code: 'FENCED' });
    }
    await expect(old.assertOwner()).rejects.toMatchObject({ code: 'FENCED' });
    expect(old.rejections).toBe(4);
    const cp = await fresh.updateCheckpoint((c) => ({ ...c!, done: [{ sub: 0, attempt: 2, nodeId: 'b', frames: 1 }] }));
    expect(cp.done).toEqual([{ sub: 0, attempt: 2, nodeId: 'b', frames: 1 }]);
    expect(fresh.rejections).toBe(0);
  });

  it('refuses a segment whose cut does not add up to the planned frames: UNSUPPORTED_FORMAT, nothing transcoded or recorded', async () => {
    const { etcd, keys, rev, dir } = await ownedSegment('jguard');
    // The real agent protocol with a media layer whose cut loses a frame (as an open-GOP input
    // or broken timestamps would make ffmpeg's cut do).
    const sim = simulatedTranscoder({ secondsPerMediaSecond: 0, clipDir: dir });
    let transcodes = 0;
    const media: SegmentMedia = {
      ...sim,
      split: async (...args) => {
        const subs = await sim.split(...args);
        subs[0]!.frames -= 1;
        return subs;
      },
      transcode: async (...args) => {
        transcodes++;
        return sim.transcode(...args);
      },
    };
    const events: SegmentEvent[] = [];
    const run = runSegmentWork(guardRequest('jguard', rev, dir), guardDeps(etcd, keys, media), (ev) => events.push(ev), new AbortController().signal);
    await expect(run).rejects.toMatchObject({ code: 'UNSUPPORTED_FORMAT', retryable: false, message: expect.stringContaining('39 frames after cutting, 40 were planned') });
    expect(transcodes).toBe(0);
    // The chunk queue is announced while the cut runs (chunks start as their files come); nothing
    // is reported done.
    expect(events.every((e) => e.framesDone === 0 && e.subSegmentsDone === 0 && !e.done)).toBe(true);
    expect(await etcd.get(keys.checkpoint('jguard', 0)).string()).toBeNull();
  });

  it('starts a chunk as soon as its file is cut, while the rest of the segment is still being cut', async () => {
    const { etcd, keys, rev, dir } = await ownedSegment('jearly');
    const sim = simulatedTranscoder({ secondsPerMediaSecond: 0, clipDir: dir });
    let firstStarted!: () => void;
    const started = new Promise<void>((r) => (firstStarted = r));
    const order: string[] = [];
    const media: SegmentMedia = {
      ...sim,
      keyframes: () => Promise.resolve({ keyframes: [0, 1, 2, 3], durationSec: 4 }),
      // The first chunk's file is handed over, and the cut "runs on" until that chunk's ffmpeg has
      // started (or 5 s pass: then the chunk waited for the whole cut, as before).
      split: async (path, d, cuts, facts, signal, onFile) => {
        const subs = await sim.split(path, d, cuts, facts, signal);
        onFile?.(0, subs[0]!);
        await Promise.race([started, new Promise((r) => setTimeout(r, 5_000))]);
        order.push('cut finished');
        return subs;
      },
      transcode: (input) => {
        order.push(`chunk of ${input.frames} frames started`);
        firstStarted();
        return Promise.reject(new AppError('TRANSCODE_FAILED', 'stopped here by the test', { retryable: false }));
      },
    };
    const run = runSegmentWork(guardRequest('jearly', rev, dir), guardDeps(etcd, keys, media), () => undefined, new AbortController().signal);
    await expect(run).rejects.toMatchObject({ code: 'TRANSCODE_FAILED' });
    expect(order[0]).toBe('chunk of 20 frames started');
    expect(order).toContain('cut finished');
    expect(await etcd.get(keys.checkpoint('jearly', 0)).string()).toBeNull();
  });

  it("holds a chunk's worker slot until its parts are durable and recorded: a crash redoes at most one chunk per worker", async () => {
    const { etcd, keys, rev, dir } = await ownedSegment('jslot');
    const sim = simulatedTranscoder({ secondsPerMediaSecond: 0, clipDir: dir });
    const order: string[] = [];
    const media: SegmentMedia = {
      ...sim,
      keyframes: () => Promise.resolve({ keyframes: [0, 1, 2, 3], durationSec: 4 }),
      transcode: async (input, outputs, o) => {
        const chunk = outputs[0]!.path.slice(-8, -4);
        if (chunk !== '0000') {
          const cp = JSON.parse((await etcd.get(keys.checkpoint('jslot', 0)).string()) ?? '{"done":[]}') as { done: { sub: number }[] };
          order.push(`checkpoint holds ${cp.done.map((d) => d.sub).join(',')}`);
        }
        order.push(`encode ${chunk} started`);
        await sim.transcode(input, outputs, o);
      },
    };
    const uploader = slowUploader(400, (sub) => order.push(`parts of ${sub.padStart(4, '0')} acknowledged`));
    const deps = { ...guardDeps(etcd, keys, media), pool: new WorkerPool(1), slots: 1, maxChunkSec: 2, uploaderFor: () => uploader };
    const req = {
      ...guardRequest('jslot', rev, dir),
      renditions: [{ name: '180p', width: 320, height: 180, videoBitrateKbps: 300, codec: 'h264', encoder: 'libx264', preset: 'medium', dynamicRange: 'sdr' }],
    };
    await runSegmentWork(req, deps, () => undefined, new AbortController().signal);
    // One slot: the second chunk's ffmpeg waits for the first chunk's parts. Starting it while they
    // are on their way saved 0.2–0.6 s per chunk, but a crash then lost two chunks of that worker.
    expect(order.slice(0, 4)).toEqual(['encode 0000 started', 'parts of 0000 acknowledged', 'checkpoint holds 0', 'encode 0001 started']);
    // Each chunk is recorded only once its parts are durable, and both are.
    const cp = JSON.parse((await etcd.get(keys.checkpoint('jslot', 0)).string())!) as { done: { sub: number; frames: number }[] };
    expect(cp.done.map((d) => [d.sub, d.frames])).toEqual([
      [0, 20],
      [1, 20],
    ]);
  });

  it("waits the retry policy's backoff between a chunk's tries, then the chunk succeeds and is recorded once", async () => {
    const { etcd, keys, rev, dir } = await ownedSegment('jretry');
    const sim = simulatedTranscoder({ secondsPerMediaSecond: 0, clipDir: dir });
    const tries: number[] = [];
    const media: SegmentMedia = {
      ...sim,
      keyframes: () => Promise.resolve({ keyframes: [0, 1, 2, 3], durationSec: 4 }),
      // The first chunk's ffmpeg dies twice (a transient cause), then works.
      transcode: async (input, outputs, o) => {
        if (outputs[0]!.path.endsWith('-0000.mp4')) {
          tries.push(performance.now());
          if (tries.length < 3) throw new AppError('TRANSCODE_FAILED', `ffmpeg was killed (try ${tries.length})`, { retryable: true });
        }
        await sim.transcode(input, outputs, o);
      },
    };
    const retries: string[] = [];
    const deps = {
      ...guardDeps(etcd, keys, media),
      pool: new WorkerPool(1),
      slots: 1,
      maxChunkSec: 2,
      uploaderFor: () => slowUploader(0),
      onRetry: (kind: string) => retries.push(kind),
    };
    const req = {
      ...guardRequest('jretry', rev, dir),
      renditions: [{ name: '180p', width: 320, height: 180, videoBitrateKbps: 300, codec: 'h264', encoder: 'libx264', preset: 'medium', dynamicRange: 'sdr' }],
    };
    await runSegmentWork(req, deps, () => undefined, new AbortController().signal);
    expect(tries).toHaveLength(3);
    expect(retries).toEqual(['ffmpeg', 'ffmpeg']);
    // Never straight back: at least the policy's floor between tries (a timer may fire 1 ms early).
    for (let i = 1; i < tries.length; i++) expect(tries[i]! - tries[i - 1]!).toBeGreaterThanOrEqual(CHUNK_RETRY.minMs - 2);
    const cp = JSON.parse((await etcd.get(keys.checkpoint('jretry', 0)).string())!) as { done: { sub: number; frames: number }[] };
    expect(cp.done.map((d) => [d.sub, d.frames])).toEqual([
      [0, 20],
      [1, 20],
    ]);
  });

  /** A segment as the coordinator cuts them (Matroska, 4 s at 10 fps, a keyframe every second) and a one-slot agent that cuts it into 2 s chunks. */
  const firstChunkRun = async (jobId: string, media: (real: SegmentMedia) => SegmentMedia) => {
    const { etcd, keys, rev, dir } = await ownedSegment(jobId);
    const sample = join(dir, 'sample.mp4');
    await makeSample(sample, { seconds: 4, width: 320, height: 180, fps: 10, audio: false });
    const segment = join(dir, 'seg.mkv');
    await runFfmpeg(['-hide_banner', '-nostdin', '-y', '-i', sample, '-c', 'copy', '-f', 'matroska', segment], { noProgressMs: 30_000 });
    const req = {
      ...guardRequest(jobId, rev, dir),
      segmentPath: segment,
      renditions: [{ name: '90p', width: 160, height: 90, videoBitrateKbps: 100, codec: 'h264', encoder: 'libx264', preset: 'ultrafast', dynamicRange: 'sdr' }],
    };
    const deps = { ...guardDeps(etcd, keys, media(ffmpegSegmentMedia())), pool: new WorkerPool(1), slots: 1, maxChunkSec: 2, uploaderFor: () => slowUploader(0) };
    const checkpoint = async (): Promise<{ done: { sub: number; frames: number }[] } | undefined> => {
      const v = await etcd.get(keys.checkpoint(jobId, 0)).string();
      return v ? (JSON.parse(v) as { done: { sub: number; frames: number }[] }) : undefined;
    };
    return { segment, outDir: join(req.workDir, 'out'), checkpoint, run: () => runSegmentWork(req, deps, () => undefined, new AbortController().signal) };
  };

  it('transcodes the first chunk straight from the segment file while the cut runs, frame-exact (real ffmpeg)', async () => {
    const inputs: { path: string; frames: number; keepFrames?: number }[] = [];
    let cutDone = false;
    const t1 = await firstChunkRun('jfirst', (real) => ({
      ...real,
      // The cut "runs on" until the first chunk's ffmpeg has finished (5 s at most).
      split: async (...args) => {
        const files = await real.split(...args);
        for (let i = 0; i < 50 && inputs.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
        cutDone = true;
        return files;
      },
      transcode: async (input, outputs, o) => {
        inputs.push({ path: input.path, frames: input.frames, ...(o.keepFrames !== undefined ? { keepFrames: o.keepFrames } : {}), ...(cutDone ? {} : { beforeCut: true }) });
        await real.transcode(input, outputs, o);
      },
    }));
    await t1.run();
    // The first chunk read the segment itself, before its own file existed, and stopped at its 20 frames.
    expect(inputs[0]).toEqual({ path: t1.segment, frames: 20, keepFrames: 20, beforeCut: true });
    expect(inputs[1]!.path).not.toBe(t1.segment);
    expect((await t1.checkpoint())!.done.map((d) => [d.sub, d.frames])).toEqual([
      [0, 20],
      [1, 20],
    ]);
    // Each chunk's output holds exactly its frames.
    expect((await countFrames(join(t1.outDir, '90p-0000.mp4'))).frames).toBe(20);
    expect((await countFrames(join(t1.outDir, '90p-0001.mp4'))).frames).toBe(20);
  });

  it("refuses a segment whose first chunk's cut disagrees with the scan it was read by: UNSUPPORTED_FORMAT, no chunk recorded", async () => {
    const t1 = await firstChunkRun('jfirstbad', (real) => ({
      ...real,
      // The cut moves a frame from the first chunk to the second: the total still adds up.
      split: async (...args) => {
        const [a, b] = await real.split(...args);
        return [
          { ...a!, frames: a!.frames - 1 },
          { ...b!, frames: b!.frames + 1 },
        ];
      },
    }));
    await expect(t1.run()).rejects.toMatchObject({ code: 'UNSUPPORTED_FORMAT', message: "segment 0's first chunk holds 19 frames after cutting, its scan said 20" });
    // The chunk plan was recorded (more chunks than workers); no chunk is.
    expect((await t1.checkpoint())?.done).toEqual([]);
  });

  it('resumes a broken segment transfer from the acknowledged offset and verifies the bytes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'transfer-'));
    const file = join(dir, 'seg.bin');
    const bytes = randomBytes(5 * 1024 * 1024 + 123);
    await writeFile(file, bytes);
    // The coordinator sends the segment's CRC-32; the agent checks the resumed whole against it.
    const crc = crc32(bytes).toString(16).padStart(8, '0');
    const ref = { jobId: 'jtransfer', segment: 0, attempt: 1 };
    const msg = (offset: number, data: Buffer): SegmentChunk => ({ ref, offset, data, totalSize: bytes.length, sha256: '', crc32: crc, localPath: '', localIdentity: '' });

    const getTransfer = (): Promise<TransferStatus> => new Promise<TransferStatus>((res, rej) => agent.getTransfer(ref, (e, s) => (e ? rej(e) : res(s))));
    // First try: 2 MiB, then the stream breaks (cancelled by the sender) once the agent holds them.
    const first = openClientStream<SegmentChunk, TransferStatus>((cb) => agent.putSegment(new Metadata(), deadline(10_000), cb));
    first.stream.write(msg(0, bytes.subarray(0, 1024 * 1024)));
    first.stream.write(msg(1024 * 1024, bytes.subarray(1024 * 1024, 2 * 1024 * 1024)));
    await expect.poll(async () => (await getTransfer()).receivedBytes, { timeout: 5_000, interval: 20 }).toBe(2 * 1024 * 1024);
    first.stream.cancel();
    await expect(first.result).rejects.toMatchObject({ code: 'CANCELLED' }); // the sender broke it

    // The agent keeps the acknowledged 2 MiB after the break, and the transfer is not complete.
    const status = await getTransfer();
    expect(status.complete).toBe(false);
    expect(status.receivedBytes).toBe(2 * 1024 * 1024);

    // Resume from there; a gap is refused with the expected offset.
    const gap = openClientStream<SegmentChunk, TransferStatus>((cb) => agent.putSegment(new Metadata(), deadline(10_000), cb));
    gap.stream.write(msg(3 * 1024 * 1024, bytes.subarray(3 * 1024 * 1024, 4 * 1024 * 1024)));
    gap.stream.end();
    await expect(gap.result).rejects.toMatchObject({ code: 'BAD_OFFSET', message: expect.stringContaining(`expected offset ${2 * 1024 * 1024}`) });

    let sent = 0;
    const second = openClientStream<SegmentChunk, TransferStatus>((cb) => agent.putSegment(new Metadata(), deadline(10_000), cb));
    await sendFileChunks(
      second.stream,
      file,
      status.receivedBytes,
      (o, d) => {
        sent += d.length;
        return msg(o, d);
      },
      { signal: second.signal },
    );
    second.stream.end();
    const done = await second.result;
    expect(done).toMatchObject({ complete: true, receivedBytes: bytes.length, crc32: crc });
    expect(sent).toBe(bytes.length - 2 * 1024 * 1024);
    await new Promise<void>((r) => agent.dropSegment(ref, () => r()));
  });

  it('agent work outlives its stream: the same owner revision re-attaches, a lower one is refused, an older drop stops nothing', async () => {
    const etcd = t.cluster.client();
    const keys = new Keys('/tessera/');
    const jobId = 'jreattach';
    const dir = await mkdtemp(join(tmpdir(), 'reattach-'));
    const file = join(dir, 'seg.mkv');
    await makeSample(file, { seconds: 4, width: 320, height: 180, fps: 30, audio: false });
    const bytes = await readFile(file);
    const crc = crc32(bytes).toString(16).padStart(8, '0');
    // Attempt 1 was assigned, then attempt 2 (a later owner revision) took the segment over.
    const owner = keys.segmentOwner(jobId, 0);
    const rev1 = Number(
      (
        await etcd
          .put(owner)
          .value(JSON.stringify({ nodeId: 'node-0', attempt: 1 }))
          .exec()
      ).header.revision,
    );
    const rev2 = Number(
      (
        await etcd
          .put(owner)
          .value(JSON.stringify({ nodeId: 'node-0', attempt: 2 }))
          .exec()
      ).header.revision,
    );
    const ref2 = { jobId, segment: 0, attempt: 2, ownerRevision: rev2 };
    const put = openClientStream<SegmentChunk, TransferStatus>((cb) => agent.putSegment(new Metadata(), deadline(10_000), cb));
    await sendFileChunks(put.stream, file, 0, (o, d) => ({ ref: ref2, offset: o, data: d, totalSize: bytes.length, sha256: '', crc32: crc, localPath: '', localIdentity: '' }), { signal: put.signal });
    put.stream.end();
    expect(await put.result).toMatchObject({ complete: true });
    const up = JSON.parse((await etcd.get('/tessera/uploaders/uploader-0').string())!) as { address: string };
    const req = (ref: SegmentRef, ownerRevision: number) => ({
      ref,
      ownerRevision,
      uploaderAddress: up.address,
      uploaderId: 'uploader-0',
      frames: 120,
      fps: 30,
      treatment: undefined,
      leadInFrames: 0,
      leadOutFrames: 0,
      renditions: [{ name: '180p', width: 320, height: 180, videoBitrateKbps: 300, codec: 'h264', encoder: 'libx264', preset: 'medium', dynamicRange: 'sdr' }],
    });
    const follow = async (ref: SegmentRef, ownerRevision: number, cancelAfterFirst = false): Promise<SegmentEvent[]> => {
      const call = agent.runSegment(req(ref, ownerRevision), new Metadata());
      const out: SegmentEvent[] = [];
      for await (const ev of iterateStream<SegmentEvent>(call)) {
        out.push(ev);
        if (cancelAfterFirst) {
          call.cancel();
          break;
        }
      }
      return out;
    };
    // The first leader starts the work and dies (its stream is cancelled at once).
    const first = await follow(ref2, rev2, true);
    expect(first.length).toBe(1);
    // A stale call (the earlier owner revision) neither runs nor stops anything.
    await expect(follow({ jobId, segment: 0, attempt: 1, ownerRevision: rev1 }, rev1)).rejects.toMatchObject({ message: expect.stringContaining('later owner revision') });
    await new Promise<void>((r, j) => agent.dropSegment({ jobId, segment: 0, attempt: 1, ownerRevision: rev1 }, (e) => (e ? j(e) : r())));
    // The new leader re-attaches with the same ref and owner revision and sees the work to its end.
    const rest = await follow(ref2, rev2);
    expect(rest.every((e) => e.attached)).toBe(true);
    // Two worker slots: the segment is cut into (at least) two chunks, each run once, by this attempt.
    const chunks = rest.at(-1)!.subSegments;
    expect(chunks).toBeGreaterThanOrEqual(2);
    expect(rest.at(-1)).toMatchObject({ done: true, subSegmentsDone: chunks, subSegmentsTranscoded: chunks });
    // Finished: a late re-attach gets the last event at once; the work ran exactly once.
    const late = await follow(ref2, rev2);
    expect(late).toHaveLength(1);
    expect(late[0]).toMatchObject({ done: true, attached: true });
    const cp = JSON.parse((await etcd.get(keys.checkpoint(jobId, 0)).string())!) as { done: { attempt: number }[]; transcodedByAttempt: Record<string, number> };
    expect(cp.done.map((d) => d.attempt)).toEqual(Array<number>(chunks).fill(2));
    expect(cp.transcodedByAttempt).toEqual({ '2': chunks });
  }, 60_000);
});
