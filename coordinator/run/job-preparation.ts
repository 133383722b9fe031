import { open } from 'node:fs/promises';
import type { JobSpec, PlannedRendition, SourceInfo } from '../../proto/gen/tessera/v1/types.js';
import { AppError } from '../../common/errors.js';
import { decoderPixelCap, FOREGROUND_NICE } from '../../transcoder/ffmpeg-limits.js';
import { demuxerFor, isRangedInput } from '../../transcoder/ffprobe.js';
import { keyframeTimes, readPacketSummary, type PacketSummary } from '../../transcoder/keyframes.js';
import { ladderNotes, resolveLadder } from '../../transcoder/ladder.js';
import { probeMedia, type MediaInfo } from '../../transcoder/probe.js';
import { segmentFrameCounts, type InputOptions } from '../../transcoder/split.js';
import type { CoordinatorConfig } from '../config.js';
import { gateInput, sniffReference } from '../input/input-gate.js';
import type { ConstantRatePlan, JobPlan, KeyframeGridPlan, PlannedCut } from '../state/job-model.js';
import { rateWindows } from './part-spans.js';
import { capacityWeights, planFrameSegments, planSegments, type PlanNode } from '../scheduling/plan.js';
import { shareBoundaries } from '../../transcoder/frame-cuts.js';
import { planConstantRate, planSource, startIdet, withConstantRate, type SourcePlan } from './source-plan.js';
import { keyframePeriod, toRungs } from '../api/spec.js';

/**
 * A job's preparation, shared by the real run (job-runner.ts) and the dry run (dry-run.ts), so
 * the plan a dry run shows is the plan that runs: probe → gate → one packet scan (with the idet
 * sample beside it) → the presentation timeline → the ladder → the cuts → their frame counts →
 * the constant-rate and keyframe grids. Staging the input and cutting the files are the callers'.
 */

/** Runs the input gate with the configured limits (a permanent, readable error). */
export function checkLimits(m: MediaInfo, cfg: CoordinatorConfig): void {
  gateInput(m, {
    maxDurationSec: cfg.MAX_DURATION_SEC,
    maxWidth: cfg.MAX_WIDTH,
    maxHeight: cfg.MAX_HEIGHT,
    maxFps: cfg.MAX_FPS,
    maxStreams: cfg.MAX_STREAMS,
    maxAudioChannels: cfg.MAX_AUDIO_CHANNELS,
    maxWorkPixels: cfg.MAX_WORK_PIXELS,
  });
}

/** The largest picture a decoder may allocate (`-max_pixels`): the gate's size limit. */
export function maxPixelsOf(cfg: CoordinatorConfig): number {
  return decoderPixelCap(cfg.MAX_WIDTH, cfg.MAX_HEIGHT);
}

/** Playlists and other reference formats are refused before ffprobe ever opens them. */
export async function refuseReferences(path: string): Promise<void> {
  if (isRangedInput(path)) {
    const res = await fetch(path, { headers: { range: 'bytes=0-511' }, signal: AbortSignal.timeout(30_000) });
    const what = sniffReference(Buffer.from(await res.arrayBuffer()).subarray(0, 512));
    if (what) throw new AppError('UNSUPPORTED_FORMAT', `the input is ${what}: playlists and files that point at other files are not accepted; send the media file itself`);
    return;
  }
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const what = sniffReference(head.subarray(0, bytesRead));
    if (what) throw new AppError('UNSUPPORTED_FORMAT', `the input is ${what}: playlists and files that point at other files are not accepted; send the media file itself`);
  } finally {
    await fh.close();
  }
}

/** What the probe and the packet scan tell: enough to place and cut the segments. */
export interface ScannedInput {
  media: MediaInfo;
  /** How the input is opened from here on: the demuxer that probed it, and the decoder's size cap. */
  source: InputOptions;
  /** The one packet scan (demux only): planning, cutting and the segments' frame counts. */
  packets: PacketSummary;
}

/** What reading the input tells: its streams, its packets and how it is presented. */
export interface ExaminedInput extends ScannedInput {
  /** Rotation, edit-list lead-in, fields, colour, audio tracks. */
  sourcePlan: SourcePlan;
}

/**
 * Probes and gates the input at `path` (a staged file or a ranged-read URL), scans its packets
 * and decides its presentation. `onProbed` is told once the probe and gate passed (progress);
 * `onScanned` once the packets are known, before the idet sample and the timeline are (the cut
 * needs only the packets: the runner starts it there). `probeFailed` may turn a probe error into
 * a better one (a dry run's partial read).
 *
 * The packet scan and the idet sample run beside the probe, under the probe's demuxer list (the
 * probe's verdict picks the same demuxer), and stop when the probe or the gate refuses the input:
 * each ffmpeg start costs ~0.2 s here, and in a row they held the first segment back. The scan only
 * demuxes, as the probe's packet count does; the idet sample decodes 60 frames under the same
 * `-max_pixels` cap as every decode (the probe decodes frames too, to read the stream parameters).
 */
export async function examineInput(
  path: string,
  spec: JobSpec,
  cfg: CoordinatorConfig,
  o: { signal?: AbortSignal | undefined; onProbed?: () => void; onScanned?: (s: ScannedInput) => void; probeFailed?: (err: unknown) => never } = {},
): Promise<ExaminedInput> {
  const maxPixels = maxPixelsOf(cfg);
  const signal = o.signal ? { signal: o.signal } : {};
  const besideProbe = new AbortController();
  const stopBeside = (): void => besideProbe.abort(o.signal?.reason);
  o.signal?.addEventListener('abort', stopBeside, { once: true });
  try {
    // Above the encodes already running (and the job's audio): the job's dispatch waits on these.
    const limits = { nice: FOREGROUND_NICE };
    const scanning = readPacketSummary(path, { signal: besideProbe.signal, maxPixels, limits });
    scanning.catch(() => undefined); // awaited once the probe passed; dropped with it otherwise
    const idet = startIdet(path, { signal: besideProbe.signal, maxPixels, limits });
    const media = await probeMedia(path, { timeoutMs: cfg.PROBE_TIMEOUT_MS, maxPixels, limits, ...signal }).catch((err: unknown) => (o.probeFailed ? o.probeFailed(err) : Promise.reject(err)));
    checkLimits(media, cfg);
    const source: InputOptions = { format: demuxerFor(media.formatName), maxPixels };
    o.onProbed?.();
    const packets = await scanning;
    o.onScanned?.({ media, source, packets });
    const sourcePlan = await planSource(path, media, packets, spec, { ...signal, ...source, limits, idet });
    return { media, source, packets, sourcePlan };
  } catch (err) {
    besideProbe.abort(err); // a refusal (or any failure) stops what still reads beside the probe
    throw err;
  } finally {
    o.signal?.removeEventListener('abort', stopBeside);
  }
}

/** The job's plan with what its cut needs: each segment file's frames and the frames to expect. */
export interface PlannedJob {
  plan: JobPlan;
  /** The source's facts with the constant rate (when there is one). */
  sourceInfo: SourceInfo;
  /** What resolving the ladder against the source changed (status trail, manifest). */
  ladderNotes: string[];
  /** Packets in each segment's file (what its node cuts and counts), in cut order. */
  fileFrames: number[];
  /** Every packet in the segment files (progress's total). */
  totalFrames: number;
  /** The source's keyframe times (s from the first presented frame): where parts join exactly. */
  keyTimes: number[];
}

/** Where the segments go: the cuts and the packets each segment file holds. */
export interface PlannedCuts {
  cuts: PlannedCut[];
  /** Packets in each segment's file (what its node cuts and counts), in cut order. */
  fileFrames: number[];
}

/** Options of the plan: the nodes it places on, and what a resumed job or a dry run brings. */
export interface PlanOptions {
  nodes: PlanNode[];
  minSegmentSec: number;
  recorded?: JobPlan | undefined;
  estimateFromSec?: number | undefined;
}

/**
 * The cuts alone: one segment per node by capacity share (exact frames wherever the keyframes
 * are; keyframe cuts only where the GOPs forbid it) and each segment file's frames. Needs only the
 * probe and the packets, so the cut can start before the rest of the plan is known. A recorded
 * plan keeps its cuts; `estimateFromSec` places them by time from the header (a partial read).
 */
export function planCuts(x: ScannedInput, spec: JobSpec, o: PlanOptions): PlannedCuts {
  const { media, packets } = x;
  let cuts: PlannedCut[];
  let fileFrames: number[];
  if (o.recorded) {
    cuts = o.recorded.cuts;
  } else if (o.estimateFromSec !== undefined) {
    cuts = estimateCuts(o.estimateFromSec, media.video.fps, o.nodes, o.minSegmentSec);
  } else {
    const kf = keyframeTimes(packets);
    cuts =
      planFrameSegments({ packets, fps: media.video.fps, nodes: o.nodes, minSegmentSec: o.minSegmentSec, gridSec: keyframePeriod(spec) }) ??
      planSegments({ keyframes: kf.keyframes, durationSec: kf.durationSec || media.durationSec, fps: media.video.fps, nodes: o.nodes, minSegmentSec: o.minSegmentSec });
  }
  if (o.estimateFromSec !== undefined) {
    fileFrames = cuts.map((c) => c.frames);
  } else if (cuts.every((c) => c.fromPacket !== undefined && c.toPacket !== undefined)) {
    // Frame cuts: each file holds its packet range (boundary GOPs go to both neighbours).
    fileFrames = cuts.map((c) => c.toPacket! - c.fromPacket!);
    const shown = cuts.reduce((a, c) => a + c.frames, 0);
    if (shown !== media.video.frames - packets.leadIn) throw new AppError('INTERNAL', `the plan shows ${shown} frames of ${media.video.frames - packets.leadIn}`);
  } else {
    // Keyframe cuts (open GOPs, or a plan made before frame cuts): each segment's frames follow
    // from the cut packets (no ffprobe per segment: at scale those dominated the coordinator's
    // CPU); the node agent counts what it cuts against this number, the uploader every rendition.
    const frames = segmentFrameCounts(
      packets,
      cuts.slice(1).map((c) => c.startSec),
    );
    const total = frames.reduce((a, b) => a + b, 0);
    if (total !== media.video.frames) {
      throw new AppError('UNSUPPORTED_FORMAT', `the input cannot be cut frame-exactly (${total} of ${media.video.frames} frames after the cut); it may use open GOPs or broken timestamps`);
    }
    cuts = cuts.map((c, i) => ({ ...c, frames: frames[i] ?? c.frames }));
    fileFrames = cuts.map((c) => c.frames);
  }
  return { cuts, fileFrames };
}

/**
 * The plan: the ladder against the source, the cuts (`planCuts`, or `cut` when the caller made
 * them already from the same scan and nodes), and the constant-rate and keyframe grids. A
 * recorded plan (`recorded`: a resumed job) is kept as it was; only its frame facts are derived
 * again. `estimateFromSec` (a dry run that read only the start of a remote input) places segments
 * by time from the header.
 */
export function planJob(
  x: ExaminedInput,
  spec: JobSpec,
  o: PlanOptions & {
    encoders: ReadonlySet<string>;
    output: { bucket: string; key: string };
    cut?: PlannedCuts | undefined;
  },
): PlannedJob {
  const { media, packets, sourcePlan } = x;
  const keyTimes = packets.keys.map((k) => k.timeSec);
  const renditions: PlannedRendition[] = o.recorded?.renditions ?? resolveLadder(toRungs(spec), sourcePlan.ladderSource, o.encoders).map((r) => ({ ...r }));
  const notes = o.recorded ? [] : ladderNotes(toRungs(spec), sourcePlan.ladderSource);
  const { cuts, fileFrames } = o.cut ?? planCuts(x, spec, o);
  // A constant frame rate (spec frame_rate): decided once with the plan, kept with it.
  const constantRate: ConstantRatePlan | undefined = o.recorded?.constantRate ?? planConstantRate(spec, packets, media.video.fps, cuts);
  // Streaming output (HLS/DASH): IDR frames on one time grid in every chunk of every rendition.
  const period = keyframePeriod(spec);
  const keyframeGrid: KeyframeGridPlan | undefined =
    o.recorded?.keyframeGrid ?? (period !== undefined ? { periodSec: period, windows: constantRate?.windows ?? rateWindows(cuts, keyTimes, packets.durationSec) } : undefined);
  const plan: JobPlan = {
    cuts,
    renditions,
    container: spec.container === 'mkv' ? 'mkv' : 'mp4',
    bucket: o.recorded?.bucket ?? o.output.bucket,
    key: o.recorded?.key ?? o.output.key,
    ...(constantRate ? { constantRate } : {}),
    ...(keyframeGrid ? { keyframeGrid } : {}),
  };
  return {
    plan,
    sourceInfo: withConstantRate(sourcePlan.info, constantRate),
    ladderNotes: notes,
    fileFrames,
    totalFrames: fileFrames.reduce((a, b) => a + b, 0),
    keyTimes,
  };
}

/** Segments by time for a source known only from its header: capacity shares of its estimated frames. */
function estimateCuts(durationSec: number, fps: number, nodes: PlanNode[], minSegmentSec: number): PlannedCut[] {
  const byId = [...nodes].sort((a, b) => (a.id < b.id ? -1 : 1));
  const rate = fps > 0 ? fps : 30;
  const total = Math.max(1, Math.round(durationSec * rate));
  const bounds = shareBoundaries(total, capacityWeights(byId), Math.max(1, Math.ceil(minSegmentSec * rate)));
  return bounds.slice(0, -1).map((b, i) => ({ index: i, startSec: b / rate, endSec: bounds[i + 1]! / rate, frames: bounds[i + 1]! - b, nodeId: byId[i]?.id ?? '' }));
}
