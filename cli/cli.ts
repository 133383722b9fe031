import { codecFamilies } from '../common/placement.js';
import { mkdir, stat } from 'node:fs/promises';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { loadTls, type TlsMaterial } from '../common/tls.js';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { uploadResumeId } from './upload-state.js';
import { clientCredentialsLogin, deviceLogin, oidcTokenSource, removeToken, saveToken, tokenFile } from '../sdk/oidc-login.js';
import cliProgress from 'cli-progress';
import { AppError, isAppError } from '../common/errors.js';
import { LocalCluster, readClusterFile, stopClusterFile, alive } from '../deploy/local-cluster.js';
import { makeSample } from '../deploy/sample.js';
import { createS3Client, s3Send } from '../common/s3-client.js';
import { extractZip } from '../uploader/zip.js';
import { JobSpec, JobState, type Job, type SegmentState, type SourceInfo } from '../proto/gen/tessera/v1/types.js';
import { TesseraClient, isTerminal } from '../sdk/client.js';
import { loadCliConfig } from '../sdk/config.js';
import { parseLadderArg } from '../sdk/ladder-arg.js';
import { etaText } from '../sdk/eta.js';
import { runAdmin } from '../ops/admin-cli.js';

const USAGE = `tessera — distributed split-and-merge video transcoding

  tessera up [--nodes 2] [--slots N] [--dir .tessera]   start a local cluster (etcd, S3, coordinator, nodes, uploader)
             [--tls]                                     mutual TLS on every gRPC link, etcd and S3 (a local CA is generated)
             [--input-root DIR[,DIR]]                    directories the coordinator may read local paths from (default none: files are uploaded)
             [--autoscale --min-nodes 1 --max-nodes 4]  let the coordinator grow and drain node agents
  tessera down [--dir .tessera]                          stop it
  tessera transcode <file|s3://…|http(s)://…> [--ladder 720:2800,480:1400:hevc] [--container mp4|mkv]
                    [--out s3://bucket/prefix] [--download DIR] [--dry-run] [--json] [--priority 0-9]
                    [--idempotency-key K] [--remote]   (--remote: the path is on the coordinator, inside its input root)
                    [--deinterlace frame|field] [--audio-tracks 0,2] [--stereo-downmix]
                    [--frame-rate source|auto|25|30000/1001]   (default source: timestamps kept; else constant)
                    [--package zip|hls|dash|zip,hls,dash]   outputs: the zip (default), HLS and/or DASH (CMAF segments)
                    [--keyframe-interval 2]   HLS/DASH: IDR frames and streaming segments every N s (1-10)
                    [--placement zone=eu-west-1a[,region=…]]   run only on nodes with these labels (NODE_LABELS)
                    rungs: height[:kbps[:codec[:preset[:sdr|hdr[:need+need]]]]]; heights name the short side
                    (portrait 720 = 720x1280); needs: capabilities a node must have for the rung (tessera nodes)
  tessera jobs [--limit 50] [--page-token T] [--json]   list jobs, newest first (finished ones from history)
  tessera job <id> [--json]                one job with its segments and status trail
  tessera cancel <id>                      cancel a job
  tessera nodes [--json]                   node agents
  tessera drain <node>                     stop giving a node new segments; it finishes what it holds, then leaves
                                           the cluster (its agent exits)
  tessera undrain <node>                   cancel a drain that has not finished yet
  tessera status [--json] [--once]         live cluster view (Ctrl-C to quit)
  tessera console [--dir .tessera]         the web console's URL (opened with xdg-open when there is one)
  tessera demo                             up, transcode a generated 30 s 1080p sample, show the result, down
  tessera admin backup|backups|restore|reconcile   etcd backups to S3 and disaster recovery (tessera admin --help)
  tessera login --issuer URL --client-id ID --client-secret S [--audience A] [--scope "tessera:read tessera:write"]
                                           get an OIDC access token (client credentials; or $TESSERA_OIDC_ISSUER,
                                           _CLIENT_ID, _CLIENT_SECRET, _AUDIENCE, _SCOPE), kept (0600) in the state dir
                                           and renewed before a call when it expires
  tessera login --device --issuer URL --client-id ID [--audience A] [--scope "… offline_access"]
                                           the same as a person: approve the shown code in a browser (device flow)
  tessera logout                           forget the stored token

  Coordinator address: --addr host:port[,host:port], else $TESSERA_ADDR, else the local cluster's.
  TLS: --tls-ca/--tls-cert/--tls-key (or $TESSERA_TLS_CA/_CERT/_KEY), else the local cluster's client certificate;
       $TESSERA_TLS_SERVER_NAME: the name the coordinators' certificates carry (when dialling an IP).
  Token: $TESSERA_TOKEN (a static token), else the one "tessera login" stored.`;

/** The CLI's settings from the environment: read when a command runs, never at import. */
let cliConfig: ReturnType<typeof loadCliConfig> | undefined;
const env = (): ReturnType<typeof loadCliConfig> => (cliConfig ??= loadCliConfig());

/** Every option, with its type (parseArgs). */
const OPTIONS = {
  nodes: { type: 'string' },
  slots: { type: 'string' },
  dir: { type: 'string' },
  addr: { type: 'string' },
  ladder: { type: 'string' },
  container: { type: 'string' },
  out: { type: 'string' },
  download: { type: 'string' },
  'dry-run': { type: 'boolean' },
  json: { type: 'boolean' },
  priority: { type: 'string' },
  'idempotency-key': { type: 'string' },
  deinterlace: { type: 'string' },
  'audio-tracks': { type: 'string' },
  'stereo-downmix': { type: 'boolean' },
  'frame-rate': { type: 'string' },
  package: { type: 'string' },
  placement: { type: 'string' },
  'keyframe-interval': { type: 'string' },
  remote: { type: 'boolean' },
  limit: { type: 'string' },
  'page-token': { type: 'string' },
  once: { type: 'boolean' },
  autoscale: { type: 'boolean' },
  'min-nodes': { type: 'string' },
  'max-nodes': { type: 'string' },
  tls: { type: 'boolean' },
  'input-root': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  issuer: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  audience: { type: 'string' },
  device: { type: 'boolean' },
  scope: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;
type OptionName = keyof typeof OPTIONS;

/** Options every command that talks to a cluster takes. */
const CONNECT: OptionName[] = ['addr', 'dir', 'tls-ca', 'tls-cert', 'tls-key', 'json', 'help'];

/** The commands and the options each takes: anything else is refused, naming it. */
const COMMANDS: Record<string, readonly OptionName[]> = {
  up: ['nodes', 'slots', 'dir', 'tls', 'input-root', 'autoscale', 'min-nodes', 'max-nodes', 'help'],
  down: ['dir', 'help'],
  demo: ['dir', 'help'],
  transcode: [
    ...CONNECT,
    'ladder',
    'container',
    'out',
    'download',
    'dry-run',
    'priority',
    'idempotency-key',
    'deinterlace',
    'audio-tracks',
    'stereo-downmix',
    'frame-rate',
    'package',
    'keyframe-interval',
    'placement',
    'remote',
  ],
  jobs: [...CONNECT, 'limit', 'page-token'],
  job: CONNECT,
  cancel: CONNECT,
  nodes: CONNECT,
  drain: CONNECT,
  undrain: CONNECT,
  status: [...CONNECT, 'once'],
  console: ['dir', 'help'],
  help: ['help'],
  login: ['issuer', 'client-id', 'client-secret', 'audience', 'scope', 'device', 'json', 'help'],
  logout: ['help'],
  admin: ['help'], // handled by ops/admin-cli.ts, which parses its own flags
};

/** Edit distance (for "did you mean"). */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  }
  return d[a.length]![b.length]!;
}

/** The closest of `names` to `word`, when it is close enough to be a typo. */
export function suggest(word: string, names: readonly string[]): string | undefined {
  const prefix = (n: string): number => {
    let i = 0;
    while (i < n.length && i < word.length && n[i] === word[i]) i++;
    return i;
  };
  let best: string | undefined;
  let bestD = Infinity;
  for (const n of names) {
    const dd = n.startsWith(word) && word.length >= 3 ? 0.5 : distance(word, n);
    if (dd < bestD || (dd === bestD && best !== undefined && prefix(n) > prefix(best))) {
      best = n;
      bestD = dd;
    }
  }
  return best !== undefined && bestD <= (word.length >= 4 ? 2 : 1) ? best : undefined;
}

/** The command line parsed against the command table; a mistake → INVALID_ARGUMENT naming it (and a likely fix). */
export function parseCommandLine(argv: string[]): { flags: { [K in OptionName]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string }; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (err) {
    const m = /Unknown option '(-{1,2})([^']+)'/.exec((err as Error).message);
    if (m) {
      const hint = suggest(m[2]!, Object.keys(OPTIONS));
      throw new AppError('INVALID_ARGUMENT', `unknown option ${m[1]}${m[2]}${hint ? `; did you mean --${hint}?` : ''} (tessera --help lists the options)`);
    }
    throw new AppError('INVALID_ARGUMENT', (err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const cmd = parsed.positionals[0];
  if (cmd !== undefined && !(cmd in COMMANDS)) {
    const hint = suggest(cmd, Object.keys(COMMANDS));
    throw new AppError('INVALID_ARGUMENT', `unknown command "${cmd}"${hint ? `; did you mean "${hint}"?` : ''} (tessera --help lists the commands)`);
  }
  if (cmd !== undefined && cmd !== 'help' && !parsed.values.help) {
    const allowed = new Set<string>(COMMANDS[cmd]);
    for (const k of Object.keys(parsed.values)) {
      if (!allowed.has(k)) throw new AppError('INVALID_ARGUMENT', `option --${k} does not apply to "tessera ${cmd}" (tessera --help shows what each command takes)`);
    }
  }
  return { flags: parsed.values as ReturnType<typeof parseCommandLine>['flags'], positionals: parsed.positionals };
}

let flags: ReturnType<typeof parseCommandLine>['flags'] = {};
let positionals: string[] = [];

let dir = '';
const out = (s: string): boolean => process.stdout.write(`${s}\n`);

function addresses(): string[] {
  if (flags.addr) return flags.addr.split(',');
  if (env().TESSERA_ADDR.length) return env().TESSERA_ADDR;
  const file = readClusterFile(dir);
  if (file) return file.coordinators;
  throw new AppError('UNAVAILABLE', `no coordinator address: start a local cluster with "tessera up", or pass --addr / set TESSERA_ADDR`);
}

/** TLS material: flags, else $TESSERA_TLS_*, else the local cluster's client certificate (`up --tls`). */
function clientTls(): TlsMaterial | undefined {
  const fromFlags = loadTls(
    { caFile: flags['tls-ca'] ?? env().TESSERA_TLS_CA, certFile: flags['tls-cert'] ?? env().TESSERA_TLS_CERT, keyFile: flags['tls-key'] ?? env().TESSERA_TLS_KEY },
    'client TLS',
  );
  if (fromFlags) return fromFlags;
  if (flags.addr || env().TESSERA_ADDR.length) return undefined;
  const t = readClusterFile(dir)?.tls;
  return t ? loadTls({ caFile: t.ca, certFile: t.cert, keyFile: t.key }, 'client TLS') : undefined;
}

/**
 * The bearer token: $TESSERA_TOKEN, else the OIDC token `tessera login` stored, else one got
 * with the $TESSERA_OIDC_* client credentials (then stored); renewed before a call once expired.
 */
function clientAuth(): { token: string } | { tokenProvider: () => Promise<string> } | Record<string, never> {
  const token = env().TESSERA_TOKEN;
  if (token) return { token };
  const { TESSERA_OIDC_ISSUER: issuer, TESSERA_OIDC_CLIENT_ID: clientId, TESSERA_OIDC_CLIENT_SECRET: clientSecret } = env();
  const settings = issuer && clientId && clientSecret ? { issuer, clientId, clientSecret, audience: env().TESSERA_OIDC_AUDIENCE, scope: env().TESSERA_OIDC_SCOPE } : undefined;
  if (!settings && !existsSync(tokenFile())) return {};
  return { tokenProvider: oidcTokenSource({ file: tokenFile(), ...(settings ? { settings } : {}) }) };
}

function client(): TesseraClient {
  const tls = clientTls();
  // The certificate's name, not the dialled IP: $TESSERA_TLS_SERVER_NAME, else `localhost` for a local cluster's.
  const local = !flags.addr && !env().TESSERA_ADDR.length;
  const serverName = env().TESSERA_TLS_SERVER_NAME || (local ? 'localhost' : undefined);
  const auth = clientAuth();
  return new TesseraClient({ addresses: addresses(), ...auth, ...(tls ? { tls } : {}), ...(tls && serverName ? { tlsServerName: serverName } : {}) });
}

const stateName = (s: JobState | SegmentState): string => String(s).replace(/^(JOB|SEGMENT)_STATE_/, '');

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function printResult(job: Job): void {
  const eta = etaText(job);
  out(`job ${job.id}: ${stateName(job.state)}${job.errorCode ? ` (${job.errorCode}: ${job.errorMessage})` : ''}${eta ? ` · ${job.progress.toFixed(0)}% · ${eta}` : ''}`);
  for (const h of job.history) if (h.scope === 'ladder') out(`note: ${h.reason}`);
  if (!job.result) return;
  out(`${job.result.key.endsWith('.zip') ? 'archive' : 'manifest'}: ${job.result.uri} (${fmtBytes(job.result.bytes)}, sha256 ${job.result.sha256.slice(0, 16)}…)`);
  const rows = [['rendition', 'size', 'codec', 'kbps', 'frames', 'duration', 'bytes']];
  for (const r of job.result.renditions) rows.push([r.file, `${r.width}x${r.height}`, r.codec, String(r.videoBitrateKbps), String(r.frames), `${r.durationSec.toFixed(3)} s`, fmtBytes(r.bytes)]);
  out(table(rows));
  const nodes = new Set(job.segments.map((s) => s.nodeId));
  out(`segments: ${job.segments.length} on ${nodes.size} node(s) (${[...nodes].join(', ')})`);
  const st = job.result.streaming;
  if (st) {
    if (st.hlsUri) out(`HLS: ${st.hlsUri}${httpUrlOf(st.hlsUri) ? `  (play: ${httpUrlOf(st.hlsUri)})` : ''}`);
    if (st.dashUri) out(`DASH: ${st.dashUri}${httpUrlOf(st.dashUri) ? `  (play: ${httpUrlOf(st.dashUri)})` : ''}`);
    if (st.posterUri) out(`poster: ${st.posterUri}; seek previews (WebVTT): ${st.thumbnailsUri ?? ''}`);
    out(`streaming: ${st.files} file(s), ${fmtBytes(st.bytes)}, segments ≤ ${st.targetDurationSec} s`);
  }
}

/** The http(s) URL of an s3:// object on the cluster's S3 endpoint (path style), when one is known. */
function httpUrlOf(uri: string): string | undefined {
  const endpoint = env().S3_ENDPOINT ?? readClusterFile(dir)?.s3Endpoint;
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  return endpoint && m ? `${endpoint.replace(/\/$/, '')}/${m[1]}/${m[2]}` : undefined;
}

/** Live progress: bars on a terminal, a line every few seconds elsewhere (CI logs). */
function progressView(): { update(job: Job): void; stop(): void } {
  if (!process.stdout.isTTY) {
    let last = 0;
    let lastState = '';
    return {
      update(job) {
        const st = stateName(job.state);
        if (Date.now() - last < 2_000 && st === lastState && !isTerminal(job.state)) return;
        last = Date.now();
        lastState = st;
        const segs = job.segments.map((s) => `${s.index}:${s.nodeId}:${s.frames ? Math.floor((100 * s.framesDone) / s.frames) : 0}%`).join(' ');
        const eta = etaText(job);
        out(`[${job.progress.toFixed(1).padStart(5)}%] ${st.padEnd(10)} ${job.stage}${eta ? ` · ${eta}` : ''}${segs ? ` | ${segs}` : ''}`);
      },
      stop() {},
    };
  }
  const multi = new cliProgress.MultiBar({ format: ' {label} |{bar}| {percentage}% {info}', hideCursor: true, clearOnComplete: false, barsize: 30 }, cliProgress.Presets.shades_classic);
  const jobBar = multi.create(100, 0, { label: 'job        ', info: '' });
  const segBars = new Map<number, cliProgress.SingleBar>();
  return {
    update(job) {
      const eta = etaText(job);
      jobBar.update(Math.floor(job.progress), { info: `${stateName(job.state)} — ${job.stage}${eta ? ` · ${eta}` : ''}` });
      for (const s of job.segments) {
        let bar = segBars.get(s.index);
        if (!bar) {
          bar = multi.create(100, 0, { label: `segment ${String(s.index).padEnd(3)}`, info: '' });
          segBars.set(s.index, bar);
        }
        bar.update(s.frames ? Math.floor((100 * s.framesDone) / s.frames) : 0, { info: `${s.nodeId} a${s.attempt} ${stateName(s.state)} ${s.subSegmentsDone}/${s.subSegments} sub` });
      }
    },
    stop() {
      multi.stop();
    },
  };
}

async function download(job: Job, destDir: string): Promise<string> {
  if (!job.result) throw new AppError('FAILED_PRECONDITION', 'the job has no result to download');
  const file = readClusterFile(dir);
  const endpoint = env().S3_ENDPOINT ?? file?.s3Endpoint;
  const caFile = env().S3_CA_FILE ?? (env().S3_ENDPOINT ? undefined : file?.tls?.ca);
  const s3 = createS3Client({
    ...(endpoint ? { endpoint } : {}),
    ...(caFile ? { ca: readFileSync(caFile) } : {}),
    region: env().S3_REGION,
    accessKeyId: env().S3_ACCESS_KEY_ID,
    secretAccessKey: env().S3_SECRET_ACCESS_KEY,
    forcePathStyle: true,
    requestTimeoutMs: 600_000,
  });
  try {
    await mkdir(destDir, { recursive: true });
    const zipPath = join(destDir, `${job.id}.zip`);
    // Streaming output only (no zip): the result is the stream's manifest.json, fetched below.
    if (job.result.key.endsWith('.zip')) {
      const res = await s3Send('GetObject', () => s3.send(new GetObjectCommand({ Bucket: job.result!.bucket, Key: job.result!.key })));
      await pipeline(res.Body as Readable, createWriteStream(zipPath));
      const files = await extractZip(zipPath, join(destDir, job.id));
      out(`downloaded ${zipPath} and unpacked ${files.length} file(s) into ${join(destDir, job.id)}`);
    }
    const st = job.result.streaming;
    if (st) {
      // The streaming files, as they lie under the stream prefix (playable from the folder).
      const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(st.prefixUri);
      if (!m) throw new AppError('INTERNAL', `bad streaming prefix ${st.prefixUri}`);
      const streamDir = join(destDir, job.id, 'stream');
      await mkdir(streamDir, { recursive: true });
      let token: string | undefined;
      let n = 0;
      do {
        const page = await s3Send('ListObjectsV2', () => s3.send(new ListObjectsV2Command({ Bucket: m[1], Prefix: m[2], ...(token ? { ContinuationToken: token } : {}) })));
        for (const o of page.Contents ?? []) {
          const name = o.Key!.slice(m[2]!.length);
          if (!/^[A-Za-z0-9._-]+$/.test(name)) continue; // never a path outside the folder
          const obj = await s3Send('GetObject', () => s3.send(new GetObjectCommand({ Bucket: m[1], Key: o.Key! })));
          await pipeline(obj.Body as Readable, createWriteStream(join(streamDir, name)));
          n++;
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      out(`downloaded ${n} streaming file(s) into ${streamDir}`);
    }
    return zipPath;
  } finally {
    s3.destroy();
  }
}

/** A number of seconds ("4", "2.5"); anything else → INVALID_ARGUMENT naming the flag. */
function parseSeconds(arg: string, flag: string): number {
  const n = Number(arg.trim().replace(/s$/i, ''));
  if (arg.trim() === '' || !Number.isFinite(n) || n <= 0) throw new AppError('INVALID_ARGUMENT', `${flag} takes a number of seconds, got "${arg}"`);
  return n;
}

/** `--audio-tracks 0,2` → [0, 2]; anything but whole numbers → INVALID_ARGUMENT. */
function parseTrackList(arg: string): number[] {
  return arg.split(',').map((t) => {
    const n = Number(t.trim());
    if (t.trim() === '' || !Number.isInteger(n) || n < 0) throw new AppError('INVALID_ARGUMENT', `--audio-tracks takes 0-based track numbers separated by commas, got "${arg}"`);
    return n;
  });
}

/** One line on what the source shows and what Tessera does with it (docs/media.md). */
function describeTimeline(s: SourceInfo): string {
  const parts = [`shown ${s.displayWidth}x${s.displayHeight}${s.rotation ? ` (turned ${s.rotation}° clockwise for display; renditions stored upright)` : ''}`];
  if (s.leadInFrames > 0) parts.push(`edit list hides ${s.leadInFrames} of ${s.storedFrames} frames`);
  if (s.timestamps === 'constant') parts.push(`${s.variableFrameRate ? 'variable frame rate ' : ''}converted to a constant ${s.outputFrameRate} fps (${s.outputFrames} frames)`);
  else if (s.variableFrameRate) parts.push('variable frame rate (timestamps kept)');
  if (s.interlaced) parts.push(`interlaced ${s.fieldOrder} (deinterlaced${s.fieldRateFactor === 2 ? ' to the field rate' : ''})`);
  parts.push(s.dynamicRange === 'sdr' ? `SDR ${s.bitDepth}-bit` : `HDR ${s.dynamicRange.toUpperCase()} ${s.bitDepth}-bit (SDR rungs tone-mapped)`);
  parts.push(`${s.audioTracks.length} audio track(s)${s.audioTracks.length ? `: ${s.audioTracks.map((a) => `${a.language || 'und'} ${a.channels}ch${a.downmix ? ' downmix' : ''}`).join(', ')}` : ''}`);
  return parts.join('; ');
}

async function transcode(input: string): Promise<number> {
  const c = client();
  try {
    const spec: Partial<JobSpec> = {
      ladder: flags.ladder ? parseLadderArg(flags.ladder) : [],
      container: flags.container ?? '',
      outputUri: flags.out ?? '',
      dryRun: flags['dry-run'] ?? false,
      priority: flags.priority ? Number(flags.priority) : 0,
      idempotencyKey: flags['idempotency-key'] ?? '',
      audioTracks: flags['audio-tracks'] ? parseTrackList(flags['audio-tracks']) : [],
      ...(flags.deinterlace !== undefined ? { deinterlace: flags.deinterlace } : {}),
      ...(flags['stereo-downmix'] ? { stereoDownmix: true } : {}),
      ...(flags['frame-rate'] !== undefined ? { frameRate: flags['frame-rate'] } : {}),
      ...(flags.package !== undefined ? { package: flags.package } : {}),
      ...(flags.placement !== undefined ? { placement: flags.placement } : {}),
      ...(flags['keyframe-interval'] !== undefined ? { keyframeIntervalSec: parseSeconds(flags['keyframe-interval'], '--keyframe-interval') } : {}),
    };
    const isUri = /^[a-z][a-z0-9+.-]*:\/\//i.test(input);
    const local = !isUri && !flags.remote;
    if (local && !existsSync(input)) throw new AppError('INPUT_NOT_FOUND', `no such file: ${input}`);
    if (spec.dryRun) {
      // A dry run needs the file where the coordinator can read it: only URIs and --remote paths.
      const res = await c.submit({ ...spec, inputUri: local ? resolve(input) : input });
      if (flags.json) out(JSON.stringify(res.plan, null, 2));
      else {
        const p = res.plan!;
        out(`source: ${p.source?.width}x${p.source?.height} ${p.source?.fps} fps, ${p.source?.durationSec.toFixed(2)} s, ${p.source?.frames} frames`);
        if (p.source) out(`timeline: ${describeTimeline(p.source)}`);
        out(
          table([
            ['segment', 'start', 'end', 'frames', 'node', 'sub-segments'],
            ...p.segments.map((s) => [String(s.index), s.startSec.toFixed(3), s.endSec.toFixed(3), String(s.frames), s.nodeId, String(s.subSegments)]),
          ]),
        );
        out(
          table([
            ['rendition', 'size', 'kbps', 'codec', 'encoder', 'preset'],
            ...p.renditions.map((r) => [r.name, `${r.width}x${r.height}`, String(r.videoBitrateKbps), r.codec, r.encoder, r.preset]),
          ]),
        );
        for (const cmd of p.ffmpegCommands) out(cmd);
        if (p.note) out(`note: ${p.note}`);
      }
      return 0;
    }
    let res;
    if (local) {
      const size = (await stat(input)).size;
      const bar =
        process.stdout.isTTY && !flags.json ? new cliProgress.SingleBar({ format: ' upload      |{bar}| {percentage}% {value}/{total} bytes' }, cliProgress.Presets.shades_classic) : undefined;
      bar?.start(size, 0);
      // Resumable: an interrupted run of the same command sends only what the cluster lacks.
      const state = await uploadResumeId(input, spec);
      res = await c.upload(resolve(input), spec, {
        resumeId: state.resumeId,
        onProgress: (sent) => bar?.update(sent),
        onResume: (held, total) => {
          process.stderr.write(`resuming upload: ${held} of ${total} bytes already in the cluster\n`);
        },
      });
      bar?.stop();
      await state.done();
    } else {
      res = await c.submit({ ...spec, inputUri: input });
    }
    if (!flags.json) out(`submitted job ${res.jobId}`);
    const view = flags.json ? undefined : progressView();
    const job = await c.wait(res.jobId, (j) => view?.update(j));
    view?.stop();
    if (flags.json) out(JSON.stringify(job, null, 2));
    else printResult(job);
    if (flags.download && job.state === JobState.JOB_STATE_SUCCEEDED) await download(job, resolve(flags.download));
    return job.state === JobState.JOB_STATE_SUCCEEDED ? 0 : 1;
  } finally {
    c.close();
  }
}

async function up(): Promise<LocalCluster | undefined> {
  const existing = readClusterFile(dir);
  if (existing && existing.processes.some((p) => alive(p.pid))) {
    out(`a local cluster is already up (coordinator ${existing.coordinators.join(', ')}${existing.consoles?.[0] ? `, console ${existing.consoles[0]}` : ''}); "tessera down" stops it`);
    return undefined;
  }
  if (flags.tls && flags.autoscale) throw new AppError('INVALID_ARGUMENT', '--tls with --autoscale is not supported locally yet: the local autoscaler cannot issue node certificates');
  out(`starting a local cluster${flags.tls ? ' with mutual TLS on every link (CA in ' + join(dir, 'tls') + ')' : ''}…`);
  const autoscale = flags.autoscale
    ? {
        AUTOSCALER: 'local',
        AUTOSCALER_MIN_NODES: flags['min-nodes'] ?? '1',
        AUTOSCALER_MAX_NODES: flags['max-nodes'] ?? '4',
        AUTOSCALER_NODE_SLOTS: flags.slots ?? '1',
      }
    : undefined;
  const cluster = await LocalCluster.start({
    dir,
    nodes: Number(flags.nodes ?? (flags.autoscale ? (flags['min-nodes'] ?? 1) : 2)),
    slots: Number(flags.slots ?? 1),
    detached: true,
    // Local paths (`--remote`, dry runs) only from the directories the user names; uploads need none.
    ...(flags['input-root']
      ? {
          inputRoot: flags['input-root']
            .split(',')
            .map((d) => resolve(d))
            .join(','),
        }
      : {}),
    ...(autoscale ? { coordinatorEnv: autoscale } : {}),
    ...(flags.tls ? { tls: true } : {}),
    // One machine, one staging directory: segments and parts are handed over by path, not streamed.
    localHandoff: true,
  });
  out(
    `cluster up: coordinator ${cluster.coordinators.join(', ')}, ${cluster.nodeIds().length} node agent(s), etcd ${cluster.etcdEndpoints.join(',')}, S3 ${cluster.s3Endpoint}, logs in ${join(dir, 'logs')}, webhook secret in ${join(dir, 'webhook-secret')}`,
  );
  out(`console: ${cluster.consoles[0]}${flags.tls ? ` (your browser must trust the CA ${join(dir, 'tls', 'ca.crt')})` : ''}`);
  return cluster;
}

/** `tessera console`: prints the local cluster's console URL and opens it when xdg-open exists. */
async function openConsole(): Promise<number> {
  const url = readClusterFile(dir)?.consoles?.[0];
  if (!url) {
    process.stderr.write('error: no local cluster with a console is up here ("tessera up" starts one; a remote cluster\'s console is on its coordinators\' CONSOLE_PORT)\n');
    return 1;
  }
  out(`console: ${url}`);
  const opener = ['/usr/bin/xdg-open', '/usr/local/bin/xdg-open'].find((p) => existsSync(p));
  if (opener && process.env.TESSERA_NO_BROWSER !== '1' && (process.env.DISPLAY || process.env.WAYLAND_DISPLAY)) {
    spawn(opener, [url], { stdio: 'ignore', detached: true })
      .on('error', () => undefined)
      .unref();
  }
  return 0;
}

async function down(): Promise<void> {
  const file = readClusterFile(dir);
  if (!file) {
    out('no local cluster is up');
    return;
  }
  await stopClusterFile(file);
  out('local cluster stopped');
}

async function status(): Promise<void> {
  const c = client();
  try {
    for (;;) {
      const [st, jobs] = await Promise.all([c.clusterStatus(), c.list({ limit: 10 })]);
      if (flags.json) {
        out(JSON.stringify({ ...st, jobs }, null, 2));
        return;
      }
      const lines = [
        `leader ${st.leaderId || '(none)'} · queue ${st.queueDepth} · segments in flight ${st.segmentsInFlight} · ${st.framesPerSecond1m} frames/s (1 min)`,
        table([['node', 'state', 'busy/slots', 'segments done', 'address'], ...st.nodes.map((n) => [n.id, n.state, `${n.busySlots}/${n.slots}`, String(n.segmentsDone), n.address])]),
        table([
          ['job', 'state', 'progress', 'eta', 'stage'],
          ...jobs.map((j) => [j.id, stateName(j.state), `${'#'.repeat(Math.round(j.progress / 5)).padEnd(20, '.')} ${j.progress.toFixed(0)}%`, etaText(j) || '-', j.stage]),
        ]),
      ];
      if (process.stdout.isTTY && !flags.once) process.stdout.write('\x1b[2J\x1b[H');
      out(lines.join('\n\n'));
      if (flags.once || !process.stdout.isTTY) return;
      await new Promise((r) => setTimeout(r, 1_000));
    }
  } finally {
    c.close();
  }
}

async function demo(): Promise<number> {
  const started = await up();
  try {
    const sample = join(dir, 'demo', 'sample-30s-1080p.mp4');
    if (!existsSync(sample)) {
      out('generating a 30 s 1920x1080 30 fps sample with a 440 Hz tone…');
      await makeSample(sample, { seconds: 30, width: 1920, height: 1080, fps: 30 });
    }
    flags.download ??= join(dir, 'demo', 'output');
    return await transcode(sample);
  } finally {
    if (started) {
      await started.stop();
      out('local cluster stopped');
    }
  }
}

/** `tessera login`: a token by client credentials (or, with --device, the device flow), stored (0600) for the next commands. */
async function login(): Promise<number> {
  const issuer = flags.issuer ?? env().TESSERA_OIDC_ISSUER;
  const clientId = flags['client-id'] ?? env().TESSERA_OIDC_CLIENT_ID;
  const clientSecret = flags['client-secret'] ?? env().TESSERA_OIDC_CLIENT_SECRET;
  if (!issuer || !clientId || (!clientSecret && !flags.device))
    throw new AppError('INVALID_ARGUMENT', 'tessera login needs --issuer, --client-id and --client-secret (or $TESSERA_OIDC_ISSUER, _CLIENT_ID, _CLIENT_SECRET), or --device instead of the secret');
  const audience = flags.audience ?? env().TESSERA_OIDC_AUDIENCE;
  const scope = flags.scope ?? env().TESSERA_OIDC_SCOPE;
  const settings = { issuer, clientId, ...(clientSecret ? { clientSecret } : {}), ...(audience ? { audience } : {}), ...(scope ? { scope } : {}) };
  const t = flags.device
    ? await deviceLogin(settings, (p) => {
        process.stderr.write(`To log in, open ${p.verificationUriComplete ?? p.verificationUri} and check the code ${p.userCode} (valid ${Math.round(p.expiresInSec / 60)} min); waiting…\n`);
      })
    : await clientCredentialsLogin(settings);
  await saveToken(t, tokenFile());
  const expiresAt = new Date(t.expiresAtMs).toISOString();
  out(
    flags.json
      ? JSON.stringify({ issuer, clientId, file: tokenFile(), expiresAt })
      : `logged in to ${issuer} as ${clientId}; token stored in ${tokenFile()} (expires ${expiresAt}, renewed when needed)`,
  );
  return 0;
}

async function main(): Promise<number> {
  // `tessera admin …` (backup and restore) parses its own flags: ops/admin-cli.ts.
  if (process.argv[2] === 'admin') return runAdmin(process.argv.slice(3), out);
  ({ flags, positionals } = parseCommandLine(process.argv.slice(2)));
  dir = resolve(flags.dir ?? env().TESSERA_DIR);
  const [cmd, arg] = positionals;
  if (flags.help || cmd === 'help') {
    out(USAGE);
    return 0;
  }
  if (!cmd) {
    out(USAGE);
    process.stderr.write('error: no command given\n');
    return 2;
  }
  switch (cmd) {
    case 'up':
      await up();
      return 0;
    case 'down':
      await down();
      return 0;
    case 'demo':
      return demo();
    case 'transcode':
      if (!arg) throw new AppError('INVALID_ARGUMENT', 'usage: tessera transcode <file|uri>');
      return transcode(arg);
    case 'jobs': {
      const c = client();
      try {
        const { jobs, nextPageToken } = await c.listPage({ limit: Number(flags.limit ?? 50), pageToken: flags['page-token'] ?? '' });
        if (flags.json) out(JSON.stringify(jobs, null, 2));
        else {
          out(
            table([
              ['job', 'state', 'progress', 'created', 'input'],
              ...jobs.map((j) => [j.id, stateName(j.state), `${j.progress.toFixed(0)}%`, new Date(j.createdAtMs).toISOString(), j.spec?.inputName || j.spec?.inputUri || '']),
            ]),
          );
          if (nextPageToken) out(`more: tessera jobs --page-token ${nextPageToken}`);
        }
      } finally {
        c.close();
      }
      return 0;
    }
    case 'job': {
      if (!arg) throw new AppError('INVALID_ARGUMENT', 'usage: tessera job <id>');
      const c = client();
      try {
        const j = await c.get(arg);
        if (flags.json) out(JSON.stringify(j, null, 2));
        else {
          printResult(j);
          out(
            table([
              ['segment', 'node', 'attempt', 'state', 'frames', 'sub-segments'],
              ...j.segments.map((s) => [String(s.index), s.nodeId, String(s.attempt), stateName(s.state), `${s.framesDone}/${s.frames}`, `${s.subSegmentsDone}/${s.subSegments}`]),
            ]),
          );
          for (const h of j.history) out(`${new Date(h.atMs).toISOString()} ${h.scope.padEnd(10)} ${h.state.padEnd(12)} ${h.nodeId ? `${h.nodeId} a${h.attempt} ` : ''}${h.reason}`);
        }
      } finally {
        c.close();
      }
      return 0;
    }
    case 'cancel': {
      if (!arg) throw new AppError('INVALID_ARGUMENT', 'usage: tessera cancel <id>');
      const c = client();
      try {
        const before = await c.get(arg);
        if (isTerminal(before.state)) {
          out(`job ${before.id} had already finished: ${stateName(before.state)}; nothing to cancel`);
          return 0;
        }
        const j = await c.cancel(arg);
        out(isTerminal(j.state) && j.state !== JobState.JOB_STATE_CANCELLED ? `job ${j.id} finished before the cancel took effect: ${stateName(j.state)}` : `job ${j.id}: ${stateName(j.state)}`);
      } finally {
        c.close();
      }
      return 0;
    }
    case 'nodes': {
      const c = client();
      try {
        const nodes = await c.listNodes();
        if (flags.json) out(JSON.stringify(nodes, null, 2));
        else
          out(
            table([
              ['node', 'state', 'busy/slots', 'cores', 'segments done', 'speed', 'capabilities', 'labels', 'address'],
              ...nodes.map((n) => [
                n.id,
                n.state,
                `${n.busySlots}/${n.slots}`,
                n.cores > 0 ? String(n.cores) : '-',
                String(n.segmentsDone),
                n.speedMps > 0 ? `${n.speedMps.toFixed(1)} MP/s` : '-',
                (n.capabilities.length ? n.capabilities : codecFamilies(n.encoders)).join(' ') || '-',
                n.labels.join(',') || '-',
                n.address,
              ]),
            ]),
          );
      } finally {
        c.close();
      }
      return 0;
    }
    case 'drain':
    case 'undrain': {
      if (!arg) throw new AppError('INVALID_ARGUMENT', `usage: tessera ${cmd} <node>`);
      const c = client();
      try {
        const n = cmd === 'drain' ? await c.drain(arg) : await c.undrain(arg);
        out(flags.json ? JSON.stringify(n, null, 2) : `node ${n.id}: ${n.state}`);
      } finally {
        c.close();
      }
      return 0;
    }
    case 'status':
      await status();
      return 0;
    case 'login':
      return login();
    case 'logout':
      out((await removeToken(tokenFile())) ? `token removed (${tokenFile()})` : 'no stored token');
      return 0;
    case 'console':
      return openConsole();
    default:
      throw new AppError('INTERNAL', `command "${cmd}" is in the table but has no handler`);
  }
}

/** Runs the CLI on process.argv and exits with its code (mistakes: 2; failures: 1). */
export function runCli(): void {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      if (isAppError(err)) process.stderr.write(`error ${err.code}: ${err.message}\n`);
      else process.stderr.write(`error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(isAppError(err, 'INVALID_ARGUMENT') ? 2 : 1);
    },
  );
}

// Run when executed (`node cli/cli.ts`, the `tessera` bin); importing it does nothing.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) runCli();
