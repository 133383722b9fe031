import { AppError } from './errors.js';

/**
 * Capabilities and placement. A node advertises capability families (what it can encode, not
 * ffmpeg's encoder names), its cores and labels (zone, region, pool). A job needs the families of
 * its rungs' codecs, whatever its rungs ask for besides (a hardware encoder, 10-bit), and the labels
 * it is pinned to; its segments go only to nodes that have all of them.
 */

/** Software encoders by the family they serve. */
const SOFTWARE: Record<string, string[]> = { h264: ['libx264'], hevc: ['libx265'], av1: ['libsvtav1', 'libaom-av1'] };

/** Hardware encoder families: advertised only when a probe encode on the device succeeds. */
export const HARDWARE: Record<string, string[]> = {
  nvenc: ['h264_nvenc', 'hevc_nvenc', 'av1_nvenc'],
  qsv: ['h264_qsv', 'hevc_qsv', 'av1_qsv'],
  vaapi: ['h264_vaapi', 'hevc_vaapi', 'av1_vaapi'],
};

const NAME = /^[a-z0-9][a-z0-9._-]{0,39}$/;
const LABEL_KEY = /^[a-z0-9][a-z0-9._/-]{0,62}$/;
const LABEL_VALUE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** The codec families a set of encoders serves (software only: hardware needs a probe). Pure. */
export function codecFamilies(encoders: Iterable<string>): string[] {
  const have = new Set(encoders);
  return Object.entries(SOFTWARE)
    .filter(([, names]) => names.some((n) => have.has(n)))
    .map(([family]) => family);
}

/**
 * Parses a comma list of capability names ("nvenc, hevc-10bit"): lower-case names of letters,
 * digits, '.', '_' and '-'. Throws INVALID_ARGUMENT naming the bad one. Pure.
 */
export function parseNeeds(text: string | undefined, what = 'needs'): string[] {
  const out = new Set<string>();
  for (const raw of (text ?? '').split(',')) {
    const n = raw.trim().toLowerCase();
    if (!n) continue;
    if (!NAME.test(n)) throw new AppError('INVALID_ARGUMENT', `${what}: "${raw.trim()}" is not a capability name (letters, digits, '.', '_', '-'; e.g. nvenc, hevc-10bit)`);
    out.add(n);
  }
  return [...out].sort();
}

/** Parses "key=value,key=value" labels (zone=eu-west-1a,region=eu-west-1). Throws INVALID_ARGUMENT. Pure. */
export function parseLabels(text: string | undefined, what = 'labels'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of (text ?? '').split(',')) {
    const pair = raw.trim();
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = eq > 0 ? pair.slice(0, eq).trim().toLowerCase() : '';
    const value = eq > 0 ? pair.slice(eq + 1).trim() : '';
    if (!LABEL_KEY.test(key) || !LABEL_VALUE.test(value)) throw new AppError('INVALID_ARGUMENT', `${what}: "${pair}" is not key=value (e.g. zone=eu-west-1a)`);
    if (out[key] !== undefined && out[key] !== value) throw new AppError('INVALID_ARGUMENT', `${what}: "${key}" is given twice`);
    out[key] = value;
  }
  return out;
}

export function formatLabels(labels: Record<string, string>): string[] {
  return Object.entries(labels)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`);
}

/** What a job's work needs from a node. */
export interface Placement {
  needs: string[];
  labels: Record<string, string>;
}

/** The rung fields placement reads. */
export interface PlacementRung {
  codec: string;
  dynamicRange?: string | undefined;
  needs?: string | undefined;
}

/**
 * A job's placement: each rung's codec family (h264 when unset), `<family>-10bit` for an HDR rung,
 * what the rungs ask for besides, and the labels the job is pinned to. Throws INVALID_ARGUMENT on a
 * malformed name or label. Pure.
 */
export function jobPlacement(spec: { ladder: readonly PlacementRung[]; placement?: string | undefined }): Placement {
  const needs = new Set<string>();
  for (const r of spec.ladder) {
    const family = (r.codec || 'h264').toLowerCase();
    needs.add(family);
    if (r.dynamicRange === 'hdr') needs.add(`${family}-10bit`);
    for (const n of parseNeeds(r.needs, `rung ${r.codec || 'h264'} needs`)) needs.add(n);
  }
  if (spec.ladder.length === 0) needs.add('h264');
  return { needs: [...needs].sort(), labels: parseLabels(spec.placement, 'placement') };
}

/** The capability and label facts placement reads from a node record. */
export interface PlacementNode {
  id: string;
  encoders: readonly string[];
  capabilities?: readonly string[] | undefined;
  labels?: Readonly<Record<string, string>> | undefined;
}

/** A node's capabilities: what it advertised, or (an agent from before capabilities) its encoders' families. */
export function capabilitiesOf(n: PlacementNode): string[] {
  return n.capabilities ? [...n.capabilities] : codecFamilies(n.encoders);
}

/** What a node lacks for a placement: missing capabilities and labels (empty: it fits). Pure. */
export function lacks(n: PlacementNode, p: Placement | undefined): string[] {
  if (!p) return [];
  const caps = new Set(capabilitiesOf(n));
  const missing = p.needs.filter((c) => !caps.has(c));
  for (const [k, v] of Object.entries(p.labels)) if (n.labels?.[k] !== v) missing.push(`${k}=${v}`);
  return missing;
}

export function fits(n: PlacementNode, p: Placement | undefined): boolean {
  return lacks(n, p).length === 0;
}

export function describePlacement(p: Placement): string {
  const parts = [...p.needs, ...formatLabels(p.labels)];
  return parts.join(', ');
}

/**
 * Why no ready node can take a job's work: what is asked for and what each ready node lacks
 * ("no ready node has nvenc, zone=eu-1 (n1 lacks nvenc; n2 lacks nvenc, zone=eu-1)"). Pure.
 */
export function whyNoNode(ready: readonly PlacementNode[], p: Placement): string {
  if (ready.length === 0) return `waiting for a ready node (none is ready; this job needs ${describePlacement(p)})`;
  const shown = ready.slice(0, 4).map((n) => `${n.id} lacks ${lacks(n, p).join(', ')}`);
  const more = ready.length > 4 ? `; ${ready.length - 4} more` : '';
  return `waiting for a node with ${describePlacement(p)} (${shown.join('; ')}${more})`;
}
