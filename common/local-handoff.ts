import type { BigIntStats } from 'node:fs';
import { link, mkdir, realpath, stat } from 'node:fs/promises';
import { dirname, sep } from 'node:path';
import { AppError } from './errors.js';

/** A file named instead of streamed: its path and what identifies it ("dev:ino:size:mtime_ns"). */
export interface LocalFile {
  localPath: string;
  localIdentity: string;
}

/** How long a receiver that refused a handoff is sent bytes instead before it is offered one again. */
const REFUSED_FOR_MS = 60_000;

/** The identity a handoff carries: device, inode, size and modification time (ns) of the file. */
export async function localIdentity(path: string): Promise<string> {
  return identityOf(await stat(path, { bigint: true }));
}

function identityOf(s: BigIntStats): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
}

/** A handed-over file as the receiver found it: its real path and size. */
export interface AcceptedFile {
  path: string;
  size: number;
}

/**
 * Local handoff between co-located processes (LOCAL_HANDOFF, one staging directory): a segment
 * goes from the coordinator to a node agent, and a part from a node agent to the uploader, as a
 * path the receiver reads from disk instead of bytes through gRPC. On one machine the stream
 * costs both processes CPU (the segments of a 60 s 1080p job took 1.8 s to cross, the parts
 * ~0.8 s at each chunk boundary) for bytes the receiver could read itself.
 *
 * The receiver reads only a regular file under its own staging directory whose device, inode,
 * size and modification time are the ones the sender saw: the same file on the same machine,
 * never another host's file that happens to have the same name. It verifies the bytes exactly as
 * it verifies streamed ones (size, CRC-32 or SHA-256). Anything else is refused with
 * FAILED_PRECONDITION, and the sender streams the bytes instead (another host, handoff off on one
 * side, a receiver too old to know the fields: it sees no bytes and fails the send).
 */
export class LocalHandoff {
  private readonly refused = new Map<string, number>();
  private rootReal: Promise<string | undefined> | undefined;

  /** `root`: this process's staging directory when LOCAL_HANDOFF is on; undefined: off. */
  constructor(private readonly root: string | undefined) {}

  get enabled(): boolean {
    return this.root !== undefined;
  }

  private realRoot(): Promise<string | undefined> {
    this.rootReal ??= this.root === undefined ? Promise.resolve(undefined) : realpath(this.root).catch(() => undefined);
    return this.rootReal;
  }

  /** Sender: what to name instead of streaming `path` to `peer` (with the file's size); undefined: stream it. */
  async offer(peer: string, path: string): Promise<(LocalFile & { size: number }) | undefined> {
    const until = this.refused.get(peer);
    if (until !== undefined) {
      if (Date.now() < until) return undefined;
      this.refused.delete(peer);
    }
    const root = await this.realRoot();
    if (root === undefined) return undefined;
    try {
      const real = await realpath(path);
      if (!real.startsWith(root + sep)) return undefined;
      const st = await stat(real, { bigint: true });
      return { localPath: real, localIdentity: identityOf(st), size: Number(st.size) };
    } catch {
      return undefined;
    }
  }

  /** Sender: `peer` refused or failed a handoff; it is sent bytes for a while. */
  refusedBy(peer: string): void {
    this.refused.set(peer, Date.now() + REFUSED_FOR_MS);
  }

  /**
   * Receiver: the file a handoff names, checked (handoff on here, a regular file under this
   * process's staging directory, the identity the sender saw); FAILED_PRECONDITION otherwise.
   */
  async accept(f: LocalFile): Promise<AcceptedFile> {
    const refuse = (why: string): AppError => new AppError('FAILED_PRECONDITION', `local handoff refused: ${why}`, { retryable: false });
    const root = await this.realRoot();
    if (root === undefined) throw refuse('LOCAL_HANDOFF is off on this process');
    let real: string;
    try {
      real = await realpath(f.localPath);
    } catch {
      throw refuse(`no file ${f.localPath} on this machine`);
    }
    if (!real.startsWith(root + sep)) throw refuse(`${f.localPath} is not under this process's staging directory`);
    const st = await stat(real, { bigint: true });
    if (!st.isFile()) throw refuse(`${f.localPath} is not a regular file`);
    if (identityOf(st) !== f.localIdentity) throw refuse(`${f.localPath} here is not the sender's file`);
    return { path: real, size: Number(st.size) };
  }
}

/**
 * Makes `dest` a hard link of an accepted handed-over file: no byte is read or written. Only for
 * files their writer never rewrites in place (the coordinator cuts segments into a folder it has
 * just emptied, so a re-cut makes new files); a part, which a retried encode writes again at the
 * same path, is copied instead. False where no link can be made (another file system): copy then.
 */
export async function linkLocal(src: string, dest: string): Promise<boolean> {
  await mkdir(dirname(dest), { recursive: true });
  try {
    await link(src, dest);
    return true;
  } catch {
    return false;
  }
}
