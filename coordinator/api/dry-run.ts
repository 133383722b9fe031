import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { AppError } from '../../common/errors.js';
import { fits, jobPlacement } from '../../common/placement.js';
import type { JobSpec, Plan } from '../../proto/gen/tessera/v1/types.js';
import { buildTranscodeArgs, formatCommand } from '../../transcoder/ffmpeg-args.js';
import { chunkGrids } from '../../transcoder/frame-rate.js';
import { SEGMENT_DEMUXER } from '../../transcoder/split.js';
import { resolvedFromPlan } from '../../transcoder/ladder.js';
import { toPictureTreatment } from '../../transcoder/treatment.js';
import type { CoordinatorConfig } from '../config.js';
import { stageInput } from '../input/input.js';
import { examineInput, maxPixelsOf, planJob, refuseReferences } from '../run/job-preparation.js';
import type { NodeRegistry } from '../state/node-registry.js';
import { outboundPolicy } from '../input/safe-http.js';
import type { InputRef } from './spec.js';

export interface DryRunDeps {
  cfg: CoordinatorConfig;
  s3: S3Client;
  registry: NodeRegistry;
  encoders: ReadonlySet<string>;
  stagingDir: string;
}

/**
 * Plans a job without running it: segments, nodes, renditions and the ffmpeg commands. The same
 * preparation and planner as the real run (job-preparation.ts), on the nodes ready now, so the
 * plan shown is the plan that runs; only a remote input is read in part (its first
 * DRY_RUN_MAX_BYTES), and then its segments are estimated by time from the header.
 */
export async function dryRun(d: DryRunDeps, spec: JobSpec, resolved: InputRef): Promise<Plan> {
  const dir = await mkdtemp(join(d.stagingDir, 'dryrun-'));
  try {
    const path = join(dir, 'input.src');
    const remote = resolved.kind !== 'local';
    const staged = await stageInput(resolved, path, {
      maxBytes: d.cfg.MAX_INPUT_BYTES,
      timeoutMs: d.cfg.HTTP_INPUT_TIMEOUT_MS,
      s3: d.s3,
      policy: outboundPolicy(d.cfg),
      ...(remote ? { prefixBytes: d.cfg.DRY_RUN_MAX_BYTES } : {}),
    });
    await refuseReferences(path);
    const examined = await examineInput(path, spec, d.cfg, {
      probeFailed: (err) => {
        if (!staged.partial) throw err;
        throw new AppError(
          'UNSUPPORTED_FORMAT',
          `a dry run reads only the first ${mib(d.cfg.DRY_RUN_MAX_BYTES)} of a remote input, and this one's header is not in them (an MP4 whose index is at the end: remux it with -movflags +faststart, or submit it for real)`,
          { retryable: false },
        );
      },
    });
    const nodes = d.registry.ready().filter((n) => fits(n, jobPlacement(spec)));
    const planned = planJob(examined, spec, {
      nodes: nodes.length ? nodes : [{ id: '(no ready node)', slots: 1 }],
      minSegmentSec: d.cfg.MIN_SEGMENT_SEC,
      encoders: d.encoders,
      output: { bucket: '', key: '' },
      estimateFromSec: staged.partial ? examined.media.durationSec : undefined,
    });
    const { plan } = planned;
    const slotsOf = new Map(nodes.map((n) => [n.id, n.slots]));
    const cr = plan.constantRate;
    const commands = plan.cuts.map((c, i) => {
      // A constant rate: the grid share shown is the whole segment's (each chunk gets its own).
      const w = cr?.windows[i];
      const grid = cr && w ? chunkGrids(cr, w, [0, w.endSec - w.originSec])[0] : undefined;
      const leadIn = c.leadIn ?? (c.index === 0 ? examined.sourcePlan.leadIn : 0);
      return (
        `# segment ${c.index} on ${c.nodeId}, cut into ${slotsOf.get(c.nodeId) ?? 1} sub-segment(s); per sub-segment${grid ? ` (its own share of the ${cr!.num}/${cr!.den} fps grid)` : ''}:\n` +
        formatCommand(
          buildTranscodeArgs(
            `/staging/seg-${c.index}/sub-NNNN.mkv`,
            plan.renditions.map((r) => ({ path: `/staging/out/${r.name}-NNNN.mp4`, rendition: resolvedFromPlan(r) })),
            {
              fps: cr ? cr.num / cr.den : examined.media.video.fps,
              container: 'mp4',
              inputFormat: SEGMENT_DEMUXER,
              maxPixels: maxPixelsOf(d.cfg),
              treatment: toPictureTreatment(examined.sourcePlan.info.treatment),
              ...(leadIn > 0 ? { leadInFrames: leadIn } : {}),
              ...(cr && grid && grid.frames > 0 ? { constantRate: { rate: cr, grid } } : {}),
            },
          ),
        )
      );
    });
    return {
      source: planned.sourceInfo,
      segments: plan.cuts.map((c) => ({ index: c.index, startSec: c.startSec, endSec: c.endSec, frames: c.frames, nodeId: c.nodeId, subSegments: slotsOf.get(c.nodeId) ?? 1 })),
      renditions: plan.renditions.map((r) => ({ ...r })),
      ffmpegCommands: commands,
      container: plan.container,
      ...(staged.partial
        ? {
            note: `planned from the first ${mib(d.cfg.DRY_RUN_MAX_BYTES)} of ${staged.totalBytes !== undefined ? mib(staged.totalBytes) : 'an input of unknown size'} (a ranged read): segments are estimated by time from the header; the real run cuts exact frames`,
          }
        : {}),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(bytes < 10 * 1024 ** 2 ? 1 : 0)} MiB`;
}
