import { AppError } from '../../common/errors.js';
import { chooseSourceRate, constantRateFrames, formatRate, parseFrameRate } from '../../transcoder/frame-rate.js';
import type { ConstantRatePlan } from '../state/job-model.js';
import { rateWindows, type SpanCut } from './part-spans.js';
import type { AudioTrackInfo, JobSpec, SourceInfo, VideoTreatment } from '../../proto/gen/tessera/v1/types.js';
import type { PacketSummary } from '../../transcoder/keyframes.js';
import type { LadderSource } from '../../transcoder/ladder.js';
import type { MediaInfo } from '../../transcoder/probe.js';
import type { InputOptions } from '../../transcoder/split.js';
import { firstFrameSideData, hdrMetadataOf, idetVerdict, sampleIdet, type IdetCounts, type SourceTimeline } from '../../transcoder/timeline.js';
import { decideTreatment, frameFactor, type PictureTreatment } from '../../transcoder/treatment.js';

/**
 * What the job makes of its source's timeline, decided once on the coordinator: how the pictures
 * are treated on every node, which frames are presented, which audio tracks every rendition
 * carries, and the facts the API and the manifest report (docs/media.md).
 */
export interface SourcePlan {
  info: SourceInfo;
  treatment: PictureTreatment;
  /** Decoded frames the first segment drops (an edit list's hidden lead-in). */
  leadIn: number;
  /** Frames a player shows of the source. */
  presentedFrames: number;
  /** Frames every rendition must have. */
  outputFrames: number;
  audioTracks: AudioTrackInfo[];
  /** What the ladder is resolved against: the displayed size and the dynamic range. */
  ladderSource: LadderSource;
}

/**
 * Which audio tracks the renditions carry, in order: the spec's selection (or every track), each
 * surround track followed by a stereo downmix when asked. A selected track the source lacks →
 * INVALID_ARGUMENT. Pure.
 */
export function selectAudioTracks(tl: SourceTimeline, spec: Pick<JobSpec, 'audioTracks' | 'stereoDownmix'>): AudioTrackInfo[] {
  const wanted = spec.audioTracks.length > 0 ? spec.audioTracks : tl.audio.map((a) => a.index);
  const out: AudioTrackInfo[] = [];
  for (const i of wanted) {
    const a = tl.audio[i];
    if (!a) throw new AppError('INVALID_ARGUMENT', `audio track ${i} was selected, but the source has ${tl.audio.length} audio track(s) (numbered from 0)`);
    const base: AudioTrackInfo = {
      index: a.index,
      codec: a.codec,
      channels: a.channels,
      layout: a.layout,
      language: a.language,
      title: a.title,
      offsetSec: a.offsetSec,
      durationSec: a.durationSec,
      downmix: false,
    };
    out.push(base);
    if (spec.stereoDownmix && a.channels > 2) {
      out.push({ ...base, channels: 2, layout: 'stereo', title: [a.title || a.language.toUpperCase(), 'Stereo'].filter(Boolean).join(' ').slice(0, 64), downmix: true });
    }
  }
  return out;
}

/** The source facts the API and the manifest report. Pure. */
export function sourceInfoOf(m: MediaInfo, p: { treatment: PictureTreatment; leadIn: number; variableFrameRate: boolean; interlaced: boolean; audioTracks: AudioTrackInfo[] }): SourceInfo {
  const tl = m.timeline;
  return {
    format: m.formatName,
    videoCodec: m.video.codec,
    width: m.video.width,
    height: m.video.height,
    fps: m.video.fps,
    durationSec: m.durationSec,
    frames: m.video.frames - p.leadIn,
    hasAudio: p.audioTracks.length > 0,
    audioCodec: m.audio?.codec ?? '',
    bytes: m.bytes,
    rotation: tl.rotation,
    displayWidth: tl.display.width,
    displayHeight: tl.display.height,
    fieldOrder: tl.fieldOrder,
    interlaced: p.interlaced,
    colorPrimaries: tl.color.primaries,
    colorTransfer: tl.color.transfer,
    colorMatrix: tl.color.matrix,
    colorRange: tl.color.range,
    dynamicRange: tl.dynamicRange,
    bitDepth: tl.bitDepth,
    storedFrames: m.video.frames,
    leadInFrames: p.leadIn,
    variableFrameRate: p.variableFrameRate,
    timestamps: 'source',
    audioTracks: p.audioTracks,
    treatment: toVideoTreatment(p.treatment),
    fieldRateFactor: frameFactor(p.treatment),
  };
}

/**
 * The job's constant-rate conversion (spec `frame_rate`), or undefined when the source's
 * timestamps are kept: the rate ("auto": chosen from the source's frame times), the frames every
 * rendition has, and each segment's window on the presented timeline. Pure.
 */
export function planConstantRate(
  spec: Pick<JobSpec, 'frameRate'>,
  packets: Pick<PacketSummary, 'presentedSec' | 'durationSec' | 'keys'>,
  fps: number,
  cuts: readonly SpanCut[],
): ConstantRatePlan | undefined {
  const setting = parseFrameRate(spec.frameRate ?? '');
  if (setting.kind === 'source') return undefined;
  const rate = setting.kind === 'auto' ? chooseSourceRate(packets.presentedSec, fps) : setting.rate;
  return {
    ...rate,
    frames: constantRateFrames(packets.durationSec, rate),
    windows: rateWindows(
      cuts,
      packets.keys.map((k) => k.timeSec),
      packets.durationSec,
    ),
  };
}

/** The source facts with what the renditions' timestamps became. Pure. */
export function withConstantRate(info: SourceInfo, cr: ConstantRatePlan | undefined): SourceInfo {
  return cr ? { ...info, timestamps: 'constant', outputFrameRate: formatRate(cr), outputFrames: cr.frames } : info;
}

/** The treatment as it travels (proto). */
export function toVideoTreatment(t: PictureTreatment): VideoTreatment {
  return { ...t };
}

/** Starts the idet sample early (it decodes, the packet scan only demuxes: they overlap well). */
export function startIdet(path: string, o: InputOptions & { signal?: AbortSignal }): Promise<IdetCounts | undefined> {
  const p = sampleIdet(path, o).catch((): IdetCounts | undefined => undefined);
  return p;
}

/**
 * Reads what the probe could not (an idet sample; HDR10 metadata that lives only in the first
 * frame's SEI) and decides the job's source plan. `packets` is the one packet scan of the input.
 */
export async function planSource(
  path: string,
  media: MediaInfo,
  packets: PacketSummary,
  spec: JobSpec,
  o: InputOptions & { signal?: AbortSignal; timeoutMs?: number; idet?: Promise<IdetCounts | undefined> },
): Promise<SourcePlan> {
  let tl = media.timeline;
  const probeOpts = {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.format ? { format: o.format } : {}),
    ...(o.maxPixels !== undefined ? { maxPixels: o.maxPixels } : {}),
    ...(o.limits ? { limits: o.limits } : {}),
  };
  const [idet, side] = await Promise.all([
    (o.idet ?? sampleIdet(path, o)).catch((): IdetCounts | undefined => undefined),
    tl.dynamicRange === 'pq' && !tl.hdr?.masterDisplay ? firstFrameSideData(path, probeOpts) : Promise.resolve(undefined),
  ]);
  if (side) {
    const hdr = hdrMetadataOf(side);
    if (hdr) tl = { ...tl, hdr };
  }
  const deinterlace = spec.deinterlace === 'field' ? 'field' : 'frame';
  const treatment = decideTreatment(tl, idet, { deinterlace });
  const audioTracks = selectAudioTracks(tl, spec);
  const leadIn = packets.leadIn;
  const presentedFrames = media.video.frames - leadIn;
  const interlaced = treatment.deinterlace !== '' || idetVerdict(idet).interlaced;
  const info = sourceInfoOf({ ...media, timeline: tl }, { treatment, leadIn, variableFrameRate: packets.variableFrameRate, interlaced, audioTracks });
  return {
    info,
    treatment,
    leadIn,
    presentedFrames,
    outputFrames: presentedFrames * frameFactor(treatment),
    audioTracks,
    ladderSource: { width: tl.display.width, height: tl.display.height, dynamicRange: tl.dynamicRange },
  };
}
