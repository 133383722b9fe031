import { AppError } from '../common/errors.js';
import type { Rendition } from '../proto/gen/tessera/v1/types.js';

/**
 * Parses `--ladder` values: comma-separated rungs of `height[:kbps[:codec[:preset[:sdr|hdr[:needs]]]]]`,
 * e.g. `1080:5000,720:2800:h264,480:1400:hevc:fast,1080:8000:hevc::hdr`; `needs` are capabilities a node
 * must have for the rung, joined by `+` (`720:2800:h264:::gpu+zone-ssd`).
 */
export function parseLadderArg(arg: string): Rendition[] {
  return arg
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((rung) => {
      const [h = '', kbps = '', codec = '', preset = '', range = '', needs = ''] = rung.split(':');
      const height = Number(h.replace(/p$/i, ''));
      const videoBitrateKbps = kbps ? Number(kbps.replace(/k$/i, '')) : 0;
      if (!Number.isInteger(height) || height <= 0) throw new AppError('INVALID_ARGUMENT', `bad ladder rung "${rung}": height must be a whole number`);
      if (!Number.isInteger(videoBitrateKbps) || videoBitrateKbps < 0) throw new AppError('INVALID_ARGUMENT', `bad ladder rung "${rung}": bitrate must be a whole number of kbps`);
      return { name: '', height, videoBitrateKbps, codec, preset, ...(range ? { dynamicRange: range } : {}), ...(needs ? { needs: needs.split('+').join(',') } : {}) };
    });
}
