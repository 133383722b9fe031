import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile, rename } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { RESUME_ID } from '../common/chunks.js';
import { newResumeId } from '../sdk/client.js';

/** Where the CLI keeps the resume ids of unfinished uploads: TESSERA_STATE_DIR, else $XDG_STATE_HOME/tessera/uploads. */
export function uploadStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TESSERA_STATE_DIR) return resolve(env.TESSERA_STATE_DIR);
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'tessera', 'uploads');
}

/**
 * The resume id of an upload of `file` with `spec`: the one an interrupted run of the same
 * command left (same path, size, modification time and job settings), else a new one, recorded
 * until `done()` — so running the command again sends only what the cluster does not hold yet,
 * and running it again after success uploads afresh.
 */
export async function uploadResumeId(file: string, spec: unknown, dir = uploadStateDir()): Promise<{ resumeId: string; resumed: boolean; done: () => Promise<void> }> {
  const abs = resolve(file);
  const st = await stat(abs);
  const name = createHash('sha256')
    .update(JSON.stringify([abs, st.size, st.mtimeMs, spec]))
    .digest('hex')
    .slice(0, 32);
  const path = join(dir, `${name}.json`);
  const done = (): Promise<void> => rm(path, { force: true });
  try {
    const saved = JSON.parse(await readFile(path, 'utf8')) as { resumeId?: unknown };
    if (typeof saved.resumeId === 'string' && RESUME_ID.test(saved.resumeId)) return { resumeId: saved.resumeId, resumed: true, done };
  } catch {
    // none yet (or unreadable): start a new upload
  }
  const resumeId = newResumeId();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(`${path}.tmp`, JSON.stringify({ resumeId, file: abs, size: st.size, startedAt: new Date().toISOString() }), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
  return { resumeId, resumed: false, done };
}
