import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/**
 * What ffmpeg says about itself (`-encoders`, `-h encoder=…`) kept on disk between processes.
 *
 * Every coordinator and node agent asks at start; each answer is an ffmpeg process, and an ffmpeg
 * start costs 0.15–0.25 s of CPU on a slow VM (215 shared libraries), three per agent. The answers
 * only change with the ffmpeg build, so they are keyed by the binary and its libavcodec (path,
 * size, mtime) and kept a day at most. `TESSERA_FFMPEG_INFO_CACHE=0` turns the cache off; without
 * a writable cache folder it is simply not used.
 */

const MAX_AGE_MS = 24 * 3600_000;

/** The files whose change means a different ffmpeg: the binary on PATH and its libavcodec. */
function buildIdentity(): string | undefined {
  const parts: string[] = [];
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const st = statSync(join(dir, 'ffmpeg'), { throwIfNoEntry: false });
    if (st?.isFile()) {
      parts.push(`${join(dir, 'ffmpeg')}:${st.size}:${st.mtimeMs}`);
      break;
    }
  }
  if (parts.length === 0) return undefined;
  for (const dir of ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib']) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.startsWith('libavcodec.so'));
    } catch {
      continue;
    }
    for (const n of names.sort()) {
      const st = statSync(join(dir, n), { throwIfNoEntry: false });
      if (st) parts.push(`${join(dir, n)}:${st.size}:${st.mtimeMs}`);
    }
  }
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16);
}

function cacheDir(): string {
  if (process.env.TESSERA_CACHE_DIR) return process.env.TESSERA_CACHE_DIR;
  const home = homedir();
  return home && home !== '/' ? join(home, '.cache', 'tessera') : join(tmpdir(), 'tessera-cache');
}

let identity: string | null | undefined;

/**
 * `run()`'s answer for `question` (one ffmpeg invocation's stdout), from the on-disk cache when
 * this ffmpeg build answered it in the last day; otherwise asked and stored. Failures are never
 * cached, and a cache that cannot be read or written only means asking ffmpeg.
 */
export async function cachedFfmpegAnswer(question: string, run: () => Promise<string>): Promise<string> {
  if (process.env.TESSERA_FFMPEG_INFO_CACHE === '0') return run();
  if (identity === undefined) identity = buildIdentity() ?? null;
  if (identity === null) return run();
  const file = join(cacheDir(), `ffmpeg-${identity}-${createHash('sha256').update(question).digest('hex').slice(0, 16)}.json`);
  const kept = await readFile(file, 'utf8')
    .then((t) => JSON.parse(t) as { question?: unknown; at?: unknown; answer?: unknown })
    .catch(() => undefined);
  if (kept && kept.question === question && typeof kept.answer === 'string' && typeof kept.at === 'number' && Date.now() - kept.at < MAX_AGE_MS && kept.at <= Date.now()) {
    return kept.answer;
  }
  const answer = await run();
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await mkdir(cacheDir(), { recursive: true })
    .then(() => writeFile(tmp, JSON.stringify({ question, at: Date.now(), answer })))
    .then(() => rename(tmp, file))
    .catch(() => undefined);
  return answer;
}
