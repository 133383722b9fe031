import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ServerReadableStream } from '@grpc/grpc-js';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Etcd3 } from 'etcd3';
import { chunksOf, DEFAULT_STREAM_PACE, drainThenThrow, fileChunks, fileDigest, paced, receiveChunks, type StreamPace } from '../common/chunks.js';
import { LocalHandoff } from '../common/local-handoff.js';
import { AppError, isNoSpace } from '../common/errors.js';
import { isTransientEtcdError } from '../common/etcd-retry.js';
import { clientStream, serverStream, unary } from '../common/grpc.js';
import type { Keys } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import { VERSION } from '../common/version.js';
import { callerOf } from '../common/tls.js';
import { isHelperAttempt } from '../common/records.js';
import type { FinalizeEvent, FinalizeRequest, PartAck, PartChunk, PartRef, UploaderServer } from '../proto/gen/tessera/v1/uploader.js';
import type { JobResult, RenditionResult, StreamingResult } from '../proto/gen/tessera/v1/types.js';
import { packageStreams, putStreamFiles, streamingManifest, type StreamFormat, type StreamingFacts } from './streaming.js';
import { countFrames, streamDurations } from '../transcoder/probe.js';
import { mp4TrackFacts } from '../transcoder/mp4-facts.js';
import { buildManifest } from './manifest.js';
import { mergeRenditions } from './merge.js';
import { uploadFileMultipart, type MultipartStateStore } from './s3-multipart.js';
import { abandonUpload, uploadRecordSchema, type UploadRecord } from './upload-record.js';
import { readJobState } from '../common/job-state.js';
import { writeZip } from './zip.js';
import { neverFits, stagingSpace } from '../common/staging-space.js';
import type { UploaderMetrics } from './metrics.js';
import { checkpointSchema, parseRecord, segmentOwnerSchema } from '../common/record-schemas.js';

const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SAFE_NAME = /^[a-z0-9_-]{1,32}$/;

export interface UploaderDeps {
  etcd: Etcd3;
  keys: Keys;
  s3: S3Client;
  stagingDir: string;
  maxPartBytes: number;
  /** Bytes always left free in staging (default 0). */
  stagingReserveBytes?: number;
  /** Deadline and minimum rate of each incoming part stream. */
  pace?: StreamPace;
  partSizeBytes: number;
  /** Archives up to this size are sent with one PutObject (default 0: always multipart). */
  singlePutMaxBytes?: number;
  log: Logger;
  metrics: UploaderMetrics;
  /** Mutual TLS: callers are known by certificate, and a video part must come from its segment's owner. */
  mutualTls?: boolean;
  /** Parts named by a co-located node agent are read from its staging (LOCAL_HANDOFF; absent: off). */
  handoff?: LocalHandoff;
}

/** A full staging disk: retryable (space frees as archives are pushed), never INTERNAL. */
function noSpace(what: string, cause: unknown): AppError {
  return new AppError('NO_SPACE', `uploader staging is full (${what}); retry later`, { cause, retryable: true });
}

function partFileName(ref: PartRef): string {
  if (!SAFE_ID.test(ref.jobId) || !(ref.rendition === 'audio' || SAFE_NAME.test(ref.rendition)) || ref.segment < 0 || ref.subSegment < 0 || ref.attempt < 0) {
    throw new AppError('INVALID_ARGUMENT', 'invalid part reference');
  }
  const ext = ref.rendition === 'audio' ? 'm4a' : 'mp4';
  return join(ref.jobId, 'parts', ref.rendition, `${String(ref.segment).padStart(4, '0')}-${String(ref.subSegment).padStart(4, '0')}-a${ref.attempt}.${ext}`);
}

/**
 * Finalize named parts this uploader does not hold (a lost disk, a new uploader). Retrying the
 * same request cannot help: the coordinator must have them made again, so it gets the list.
 */
export class PartsMissingError extends AppError {
  constructor(readonly missing: PartRef[]) {
    super('FAILED_PRECONDITION', `${missing.length} part(s) are missing on this uploader (first: ${missing[0] ? partFileName(missing[0]) : '-'})`, { retryable: false });
  }
}

/** The uploader's gRPC service: durable part staging, merge + zip + S3 push on finalize. */
export class UploaderService {
  private finalizing = new Map<string, { run: Promise<JobResult>; abort: AbortController }>();
  /** Handoff off unless the process turned it on: a part named by path is then refused. */
  private readonly handoff: LocalHandoff;

  constructor(private readonly d: UploaderDeps) {
    this.handoff = d.handoff ?? new LocalHandoff(undefined);
  }

  private etcdStore(jobId: string): MultipartStateStore {
    const key = this.d.keys.upload(jobId);
    const read = async (): Promise<UploadRecord> => {
      const raw = await this.d.etcd.get(key).string();
      return raw ? parseRecord(uploadRecordSchema, raw, key) : {};
    };
    return {
      load: async () => (await read()).multipart,
      save: async (state) => {
        await this.d.etcd.put(key).value(JSON.stringify({ ...(await read()), multipart: state }));
      },
      clear: async () => {
        const rec = await read();
        delete rec.multipart;
        await this.d.etcd.put(key).value(JSON.stringify(rec));
      },
    };
  }

  handlers(): UploaderServer {
    const { log } = this.d;
    return {
      putPart: clientStream(log, async (call: ServerReadableStream<PartChunk, PartAck>, signal): Promise<PartAck> => {
        const it = call[Symbol.asyncIterator]() as AsyncIterator<PartChunk>;
        const first = await it.next();
        if (first.done || !first.value.ref) throw new AppError('INVALID_ARGUMENT', 'empty part stream');
        const head = first.value;
        // Fenced: a part sent under an owner revision the segment no longer has (the attempt was
        // reassigned while its node was paused or partitioned) is refused before and after its
        // bytes land, so nothing from a stale attempt is ever acknowledged.
        const caller = this.d.mutualTls ? callerOf(call) : undefined;
        await this.assertPartOwner(head.ref!, caller).catch((err: unknown) => drainThenThrow(it, err));
        const path = join(this.d.stagingDir, partFileName(head.ref!));
        // Local handoff: the agent's own file, read from disk (refused: it streams instead).
        const local = head.localPath ? await this.handoff.accept(head).catch((err: unknown) => drainThenThrow(it, err)) : undefined;
        // A retried send starts at 0 again: a fresh .partial each time keeps it simple and exact.
        await rm(`${path}.partial`, { force: true });
        const res = await receiveChunks(
          local
            ? fileChunks(local.path, 0)
            : paced(
                chunksOf(head, it, (n) => this.d.metrics.partBytes.inc(n)),
                this.d.pace ?? DEFAULT_STREAM_PACE,
              ),
          { path, maxBytes: this.d.maxPartBytes, totalSize: head.totalSize, sha256: head.sha256 || undefined, signal },
        ).catch(async (err: unknown) => {
          if (!isNoSpace(err)) throw err;
          await rm(`${path}.partial`, { force: true });
          throw noSpace('receiving a part', err);
        });
        if (!res.complete) throw new AppError('BAD_OFFSET', `part ended after ${res.bytes} of ${head.totalSize} bytes`, { retryable: true });
        await this.assertPartOwner(head.ref!, caller).catch(async (err: unknown) => {
          await rm(path, { force: true });
          throw err;
        });
        return { bytes: res.bytes, sha256: res.sha256 };
      }),

      finalize: serverStream(log, async (req: FinalizeRequest, send: (e: FinalizeEvent) => Promise<void>, _call, signal) => {
        if (!SAFE_ID.test(req.jobId)) throw new AppError('INVALID_ARGUMENT', 'invalid job id');
        // Idempotent: a second Finalize for the same job joins the first, or returns its result.
        let run = this.finalizing.get(req.jobId)?.run;
        if (!run) {
          // Its own abort as well as the caller's: Cleanup stops a finalize before it aborts the upload.
          const abort = new AbortController();
          run = this.finalize(
            req,
            (stage, progress) => {
              void send({ stage, progress, result: undefined, missing: [] }).catch(() => undefined);
            },
            AbortSignal.any([signal, abort.signal]),
          );
          const entry = { run, abort };
          this.finalizing.set(req.jobId, entry);
          run
            .finally(() => {
              if (this.finalizing.get(req.jobId) === entry) this.finalizing.delete(req.jobId);
            })
            .catch(() => undefined);
        }
        let result: JobResult;
        try {
          result = await run;
        } catch (err0) {
          const err = isNoSpace(err0) ? noSpace('building the archive', err0) : err0;
          // Every caller learns which parts to make again (the status carries no list).
          if (err instanceof PartsMissingError) await send({ stage: 'missing', progress: 0, result: undefined, missing: err.missing });
          throw err;
        }
        await send({ stage: 'done', progress: 1, result, missing: [] });
      }),

      cleanup: unary(log, async (req) => {
        if (!SAFE_ID.test(req.jobId)) throw new AppError('INVALID_ARGUMENT', 'invalid job id');
        await this.release(req.jobId);
        return {};
      }),
    };
  }

  /** The parts whose files' SHA-256 differs from the one they name (two hashed at a time). */
  private async partsNotMatching(parts: PartRef[]): Promise<PartRef[]> {
    const bad: PartRef[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < parts.length) {
        const p = parts[next++]!;
        const { hex } = await fileDigest(join(this.d.stagingDir, partFileName(p)));
        if (hex !== p.sha256) bad.push(p);
      }
    };
    await Promise.all([worker(), worker()]);
    return bad;
  }

  /**
   * Parts that name an owner revision are accepted only while the segment's owner key has it.
   * With mutual TLS the caller is known: the audio comes from a coordinator, and a video part must
   * name its owner revision and come from the node that owns the segment at that revision.
   */
  private async assertPartOwner(ref: PartRef, caller?: { role: string | undefined; names: string[] }): Promise<void> {
    if (caller) {
      if (ref.rendition === 'audio') {
        if (caller.role !== 'coordinator') throw new AppError('PERMISSION_DENIED', "only a coordinator may send a job's audio");
        return;
      }
      if (caller.role !== 'node') throw new AppError('PERMISSION_DENIED', 'only a node agent may send a rendition part');
      if (ref.ownerRevision === undefined || ref.ownerRevision <= 0) throw new AppError('PERMISSION_DENIED', 'a rendition part must name the owner revision of its segment');
    }
    if (ref.ownerRevision === undefined || ref.ownerRevision <= 0) return;
    let res;
    try {
      res = await this.d.etcd
        .get(this.d.keys.segmentOwner(ref.jobId, ref.segment))
        .options({ deadline: new Date(Date.now() + 2_000) })
        .exec();
    } catch (err) {
      // etcd unreachable: the part is kept (parts stay durable through an etcd outage); it can
      // only become canonical through a checkpoint write, and that write is fenced.
      if (isTransientEtcdError(err)) return;
      throw err;
    }
    const kv = res.kvs[0];
    if (kv?.mod_revision === String(ref.ownerRevision)) {
      if (!caller) return;
      const owner = parseRecord(segmentOwnerSchema, kv.value, kv.key.toString());
      if (caller.names.includes(owner.nodeId)) return;
      // A helper run (work stealing): the node the checkpoint names for this attempt's chunks.
      if (isHelperAttempt(ref.attempt)) {
        const cp = await this.d.etcd
          .get(this.d.keys.checkpoint(ref.jobId, ref.segment))
          .options({ deadline: new Date(Date.now() + 2_000) })
          .string();
        const h = cp ? parseRecord(checkpointSchema, cp, this.d.keys.checkpoint(ref.jobId, ref.segment)).helpers?.[String(ref.attempt)] : undefined;
        if (h && caller.names.includes(h.nodeId) && h.chunks.includes(ref.subSegment)) return;
      }
      this.d.metrics.fencedParts.inc();
      this.d.log.warn({ jobId: ref.jobId, segment: ref.segment, owner: owner.nodeId, caller: caller.names }, 'refused a part from a node that does not own its segment');
      throw new AppError('PERMISSION_DENIED', `segment ${ref.segment} of job ${ref.jobId} belongs to another node: part refused`);
    }
    this.d.metrics.fencedParts.inc();
    this.d.log.warn({ jobId: ref.jobId, segment: ref.segment, subSegment: ref.subSegment, attempt: ref.attempt, ownerRevision: ref.ownerRevision }, 'refused a part from a stale attempt');
    throw new AppError('FENCED', `segment ${ref.segment} of job ${ref.jobId} was reassigned: part refused`, { retryable: false });
  }

  private async finalize(req: FinalizeRequest, progress: (stage: string, p: number) => void, signal: AbortSignal): Promise<JobResult> {
    const { etcd, keys, log } = this.d;
    const done = await etcd.get(keys.upload(req.jobId)).string();
    const prior = done ? parseRecord(uploadRecordSchema, done, keys.upload(req.jobId)) : {};
    if (prior.result) return prior.result; // finalize is idempotent

    const zipPath = join(this.d.stagingDir, req.jobId, 'out', `${req.jobId}.zip`);
    const { zip, renditions, streaming, fresh } = await this.archive(req, zipPath, progress, signal);
    progress('upload', 0.7);
    const uploadStarted = Date.now();
    const noZip = streaming !== undefined && req.packaging?.noZip === true;
    const up = noZip
      ? { resumed: false, partsSent: 0 }
      : await uploadFileMultipart({
          client: this.d.s3,
          bucket: req.bucket,
          key: req.key,
          filePath: zipPath,
          fileSha256: zip.sha256,
          // Built by this call: its MD5 was hashed from the bytes as they were written (a kept
          // archive is read and checked against its sha256 first).
          ...(fresh && zip.md5Base64 ? { fileMd5Base64: zip.md5Base64 } : {}),
          partSize: this.d.partSizeBytes,
          singlePutMaxBytes: this.d.singlePutMaxBytes ?? 0,
          store: this.etcdStore(req.jobId),
          signal,
          onProgress: (sent, total) => {
            this.d.metrics.uploadBytes.set(sent);
            progress('upload', 0.7 + 0.3 * (total > 0 ? sent / total : 1));
          },
        });
    this.d.metrics.uploadedTotal.inc(zip.bytes);
    // The streaming files go under the archive's prefix (jobs/<id>/stream/), each with its type and
    // cache policy; re-sent whole after a restart (each PUT replaces the same key).
    let streamingResult: StreamingResult | undefined;
    if (streaming) {
      const prefix = `${req.key.replace(/\.zip$/, '')}/stream/`;
      await putStreamFiles(this.d.s3, req.bucket, prefix, streaming.files, signal);
      streamingResult = {
        prefixUri: `s3://${req.bucket}/${prefix}`,
        hlsUri: streaming.hls ? `s3://${req.bucket}/${prefix}${streaming.hls}` : '',
        dashUri: streaming.dash ? `s3://${req.bucket}/${prefix}${streaming.dash}` : '',
        files: streaming.files.length,
        bytes: streaming.files.reduce((a, f) => a + f.bytes, 0),
        targetDurationSec: streaming.targetDurationSec,
        posterUri: `s3://${req.bucket}/${prefix}${streaming.poster}`,
        thumbnailsUri: `s3://${req.bucket}/${prefix}${streaming.thumbnails}`,
      };
    }
    // Without a zip, the result names the manifest that lists every streaming file.
    const manifestFile = noZip ? streaming!.files.find((f) => f.name === 'manifest.json') : undefined;
    const resultKey = manifestFile ? `${req.key.replace(/\.zip$/, '')}/stream/manifest.json` : req.key;
    const result: JobResult = {
      uri: `s3://${req.bucket}/${resultKey}`,
      bucket: req.bucket,
      key: resultKey,
      bytes: manifestFile ? manifestFile.bytes : zip.bytes,
      sha256: manifestFile ? manifestFile.sha256 : zip.sha256,
      renditions,
      ...(streamingResult ? { streaming: streamingResult } : {}),
    };
    await etcd.put(keys.upload(req.jobId)).value(JSON.stringify({ result } satisfies UploadRecord));
    log.info({ jobId: req.jobId, key: req.key, bytes: zip.bytes, resumed: up.resumed, partsSent: up.partsSent, uploadMs: Date.now() - uploadStarted }, 'archive uploaded');
    // The archive is in S3: the merged files and parts are no longer needed here.
    await rm(dirname(zipPath), { recursive: true, force: true });
    return result;
  }

  /**
   * Merges every rendition and zips them with the manifest — or, after a restart, re-uses the
   * archive a previous run completed (its bytes and SHA-256 are what the recorded multipart upload
   * was made of, so the upload can resume instead of starting over).
   */
  private async archive(
    req: FinalizeRequest,
    zipPath: string,
    progress: (stage: string, p: number) => void,
    signal: AbortSignal,
  ): Promise<{ zip: { bytes: number; sha256: string; md5Base64?: string }; renditions: RenditionResult[]; streaming?: StreamingFacts | undefined; fresh: boolean }> {
    const facts = `${zipPath}.json`;
    try {
      const saved = JSON.parse(await readFile(facts, 'utf8')) as { zip: { bytes: number; sha256: string }; renditions: RenditionResult[]; streaming?: StreamingFacts };
      if ((await stat(zipPath)).size === saved.zip.bytes) return { zip: { bytes: saved.zip.bytes, sha256: saved.zip.sha256 }, renditions: saved.renditions, streaming: saved.streaming, fresh: false };
    } catch {
      // no complete archive yet: build it
    }
    const started = Date.now();
    const jobDir = join(this.d.stagingDir, req.jobId);
    const outDir = join(jobDir, 'out');
    await mkdir(outDir, { recursive: true });
    const container = req.container === 'mkv' ? 'mkv' : 'mp4';
    // Every audio track (older coordinators send the one track in `audio`).
    const tracks = req.audioTracks.length > 0 ? req.audioTracks : req.audio ? [{ part: req.audio, info: undefined }] : [];
    const audio = tracks.map((t) => {
      if (!t.part) throw new AppError('INVALID_ARGUMENT', 'an audio track has no part');
      return { path: join(this.d.stagingDir, partFileName(t.part)), language: t.info?.language ?? '', title: t.info?.title ?? '', channels: t.info?.channels ?? 0 };
    });
    // Every part named, audio included, before any merge: all that is missing in one answer.
    const named = [...tracks.map((t) => t.part!), ...req.parts];
    const sizes = await Promise.all(
      named.map((p) =>
        stat(join(this.d.stagingDir, partFileName(p))).then(
          (st) => st.size,
          () => undefined,
        ),
      ),
    );
    const missing = named.filter((_, i) => sizes[i] === undefined);
    // Each part as its fenced checkpoint recorded it: one replaced or damaged since it was
    // acknowledged (a stray PutPart under its name, a bad disk) is dropped and made again. Hashed
    // while the renditions merge (the merge's result is only used when every part matched).
    const verified = this.partsNotMatching(named.filter((p, i) => sizes[i] !== undefined && p.sha256));
    verified.catch(() => undefined);
    const refuseDamaged = async (): Promise<void> => {
      const damaged = await verified;
      if (damaged.length > 0) {
        this.d.log.warn({ jobId: req.jobId, parts: damaged.map(partFileName) }, 'parts differ from their checkpoint hash; they will be made again');
        await Promise.all(damaged.map((p) => rm(join(this.d.stagingDir, partFileName(p)), { force: true })));
        missing.push(...damaged);
      }
      if (missing.length > 0) {
        this.d.log.warn({ jobId: req.jobId, missing: missing.length, of: named.length }, 'parts missing at finalize');
        throw new PartsMissingError(missing);
      }
    };
    if (missing.length > 0) await refuseDamaged();
    // Room for what the merge writes before it starts: the merged renditions and the archive hold
    // the parts' bytes twice (three times with streaming segments). Never fits: STAGING_TOO_SMALL;
    // not now: NO_SPACE (retried with backoff while other archives are pushed and deleted).
    const partBytes = sizes.reduce((a: number, b) => a + (b ?? 0), 0);
    const need = partBytes * ((req.packaging?.formats.length ?? 0) > 0 ? 3 : 2);
    const space = await stagingSpace(this.d.stagingDir);
    const reserve = this.d.stagingReserveBytes ?? 0;
    const never = neverFits(need, space.total, reserve, `job ${req.jobId}'s merge and archive`, "the uploader's staging");
    if (never) throw never;
    if (space.free - need < reserve) throw noSpace(`the merge and archive of job ${req.jobId} need ${need} bytes, ${space.free} free`, undefined);
    const source = req.source;
    // Frames every rendition must have: the presented source frames (× 2 when fields became frames).
    const expectedFrames = req.expectedFrames > 0 ? req.expectedFrames : (source?.frames ?? 0);

    // Every rendition in one ffmpeg (merge.ts: stream copies; the process start is the cost).
    const files = req.renditions.map((r) => ({ name: `${r.name}.${container}`, path: join(outDir, `${r.name}.${container}`) }));
    const spanSec = source?.durationSec ?? 0;
    const merging = mergeRenditions({
      renditions: req.renditions.map((r, i) => {
        const refs = req.parts.filter((p) => p.rendition === r.name);
        return { parts: refs.map((p) => join(this.d.stagingDir, partFileName(p))), durations: refs.map((p) => p.durationSec), outPath: files[i]!.path };
      }),
      audio,
      container,
      listDir: join(jobDir, 'parts'),
      signal,
      ...(spanSec > 0 ? { onProgress: (sec: number) => progress('merge', Math.min(1, sec / spanSec) * 0.6) } : {}),
    }).then(() => progress('merge', 0.6));
    const [mergedOk] = await Promise.allSettled([merging]);
    // A damaged part outranks a merge failure (it is likely the cause): the parts are made again.
    await refuseDamaged();
    if (mergedOk.status === 'rejected') throw mergedOk.reason;
    // Every rendition is counted (it must have every source frame) and the audio measured while
    // the archive is written: the manifest, its last entry, waits for them.
    const counted = Promise.all(
      files.map(async (f, i) => {
        // Our own MP4: its boxes say what ffprobe would (ffprobe for anything else).
        const boxes = container === 'mp4' ? await mp4TrackFacts(f.path, 'video') : undefined;
        const c = boxes ? { frames: boxes.samples, durationSec: boxes.durationSec } : await countFrames(f.path, { format: container === 'mkv' ? 'matroska' : 'mov', signal });
        if (expectedFrames > 0 && c.frames !== expectedFrames) {
          throw new AppError('INTERNAL', `rendition ${req.renditions[i]!.name} has ${c.frames} frames but ${expectedFrames} were expected from the source`);
        }
        return c;
      }),
    );
    const audioMeasured = Promise.all(
      audio.map(async (a) => {
        const boxes = await mp4TrackFacts(a.path, 'audio');
        return { a, d: boxes ? { audioSec: boxes.durationSec } : await streamDurations(a.path, { format: 'mov', signal }) };
      }),
    );
    counted.catch(() => undefined);
    audioMeasured.catch(() => undefined);
    let renditions: RenditionResult[] = [];
    let streaming: StreamingFacts | undefined;
    const manifestOf = async (digests: readonly { bytes: number; sha256: string }[]): Promise<string> => {
      const [counts, audioFacts] = await Promise.all([counted, audioMeasured]);
      renditions = req.renditions.map((r, i) => ({
        name: r.name,
        file: files[i]!.name,
        width: r.width,
        height: r.height,
        codec: r.codec,
        videoBitrateKbps: r.videoBitrateKbps,
        durationSec: Math.round(counts[i]!.durationSec * 1000) / 1000,
        frames: counts[i]!.frames,
        bytes: digests[i]!.bytes,
        sha256: digests[i]!.sha256,
      }));
      const timings = { ...(req.timingsJson ? (JSON.parse(req.timingsJson) as Record<string, number>) : {}), mergeMs: Date.now() - started };
      return buildManifest({
        tessera: { version: VERSION, jobId: req.jobId, createdAt: new Date().toISOString() },
        source,
        container,
        renditions,
        audio: audioFacts.map(({ a, d }) => ({ codec: 'aac', language: a.language || 'und', title: a.title, channels: a.channels, durationSec: Math.round((d.audioSec ?? 0) * 1000) / 1000 })),
        timings,
        notes: [...req.notes],
        ...(streaming ? { streaming: streamingManifest(streaming) } : {}),
      });
    };
    // Adaptive streaming (HLS/DASH): CMAF segments cut from the merged renditions by stream copy.
    const formats = (req.packaging?.formats ?? []).filter((f): f is StreamFormat => f === 'hls' || f === 'dash');
    if (formats.length > 0) {
      const packStarted = Date.now();
      progress('package', 0.6);
      streaming = await packageStreams({
        renditions: files.map((f, i) => ({ name: req.renditions[i]!.name, path: f.path, width: req.renditions[i]!.width, height: req.renditions[i]!.height })),
        audio: audio.map((a) => ({ language: a.language, title: a.title, channels: a.channels })),
        formats,
        segmentSec: req.packaging?.segmentSec || 2,
        frameRate: source?.outputFrameRate || (source?.fps ? String(source.fps * (source.fieldRateFactor || 1)) : ''),
        outDir: join(jobDir, 'stream'),
        signal,
      });
      this.d.log.info({ jobId: req.jobId, formats, files: streaming.files.length, packageMs: Date.now() - packStarted }, 'streaming output packaged');
    }
    if (streaming && req.packaging?.noZip) {
      // Streaming output only: no zip; manifest.json goes beside the segments (and is the result).
      const digests = await Promise.all(files.map(async (f) => fileDigest(f.path).then((d) => ({ bytes: d.bytes, sha256: d.hex }))));
      const path = join(jobDir, 'stream', 'manifest.json');
      await writeFile(path, await manifestOf(digests));
      const d = await fileDigest(path);
      streaming.files.push({ name: 'manifest.json', path, bytes: d.bytes, sha256: d.hex, contentType: 'application/json', cacheControl: 'public, max-age=60' });
      const none = { bytes: 0, sha256: '' };
      await writeFile(`${facts}.tmp`, JSON.stringify({ zip: none, renditions, streaming }));
      await rename(`${facts}.tmp`, facts);
      return { zip: none, renditions, streaming, fresh: true };
    }
    progress('zip', 0.65);
    const zipStarted = Date.now();
    // Each rendition's SHA-256 is hashed as the zip copies it (one read of every byte).
    const zip = await writeZip(zipPath, [...files, { name: 'manifest.json', content: (written) => manifestOf(written) }], { signal, entryDigests: true });
    this.d.log.info({ jobId: req.jobId, mergeMs: zipStarted - started, zipMs: Date.now() - zipStarted, bytes: zip.bytes }, 'archive built');
    const archived = { zip: { bytes: zip.bytes, sha256: zip.sha256, md5Base64: zip.md5Base64 }, renditions, streaming };
    await writeFile(`${facts}.tmp`, JSON.stringify(archived));
    await rename(`${facts}.tmp`, facts);
    return { ...archived, fresh: true };
  }

  /**
   * A job is over: a finalize still running for it stops, its staging goes, and when it did not
   * succeed its incomplete multipart upload is aborted (and an archive that reached S3 anyway
   * deleted). Called by Cleanup and by the staging sweeper; idempotent.
   */
  async release(jobId: string, knownState?: string): Promise<void> {
    const running = this.finalizing.get(jobId);
    if (running) {
      running.abort.abort(new AppError('CANCELLED', 'the job is over'));
      await running.run.catch(() => undefined);
    }
    await rm(join(this.d.stagingDir, jobId), { recursive: true, force: true });
    const state = knownState ?? (await readJobState(this.d.etcd, this.d.keys, jobId));
    if (state === 'FAILED' || state === 'CANCELLED') {
      const r = await abandonUpload(this.d.etcd, this.d.keys, this.d.s3, jobId);
      if (r.aborted || r.deletedObject) this.d.log.info({ jobId, state, ...r }, 'upload of a job that did not succeed abandoned');
    }
  }

  /** Job folders present in staging (for tests and cleanup checks). */
  async stagedJobs(): Promise<string[]> {
    try {
      return await readdir(this.d.stagingDir);
    } catch {
      return [];
    }
  }
}
