import { execFileSync } from 'node:child_process';

/** The handle of the qdisc this helper puts on loopback (a sweep removes only its own). */
const HANDLE = '7e57';

function tc(...args: string[]): string {
  return execFileSync('tc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why a loopback port cannot be limited here (not root, no `tc`, no htb), or undefined. */
export function portLimitUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (tc on loopback)';
  try {
    tc('-V');
  } catch {
    return 'needs iproute2 (`tc`)';
  }
  return undefined;
}

/** Removes what an earlier run left (only this helper's qdisc, by its handle). */
function sweep(): void {
  if (tc('qdisc', 'show', 'dev', 'lo').includes(`htb ${HANDLE}:`)) tc('qdisc', 'del', 'dev', 'lo', 'root');
}

/**
 * A link of `mbit` Mbit/s to one TCP port on loopback (../shared/LAB.md: `tc`, htb): traffic *to*
 * `port` (an upload into the server listening there) goes through an htb class at that rate;
 * everything else on loopback through a class no test can fill. Returns the clean-up (idempotent),
 * which a test calls in `finally`.
 */
export function limitPortUpload(port: number, mbit: number): () => void {
  sweep();
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', `${HANDLE}:`, 'htb', 'default', '20', 'r2q', '1000');
  let removed = false;
  const remove = (): void => {
    if (removed) return;
    removed = true;
    try {
      sweep();
    } catch {
      // already gone
    }
  };
  try {
    tc('class', 'add', 'dev', 'lo', 'parent', `${HANDLE}:`, 'classid', `${HANDLE}:20`, 'htb', 'rate', '100gbit', 'ceil', '100gbit', 'burst', '16mb', 'cburst', '16mb');
    tc('class', 'add', 'dev', 'lo', 'parent', `${HANDLE}:`, 'classid', `${HANDLE}:10`, 'htb', 'rate', `${mbit}mbit`, 'ceil', `${mbit}mbit`, 'burst', '1mb', 'cburst', '1mb');
    tc('filter', 'add', 'dev', 'lo', 'parent', `${HANDLE}:`, 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'dport', String(port), '0xffff', 'flowid', `${HANDLE}:10`);
  } catch (err) {
    remove();
    throw err;
  }
  return remove;
}

/** Bytes sent through the limited class so far (to show the limit carried the upload). */
export function limitedBytes(): number {
  const out = tc('-s', 'class', 'show', 'dev', 'lo', 'classid', `${HANDLE}:10`);
  const m = /Sent (\d+) bytes/.exec(out);
  if (!m) throw new Error(`no statistics for class ${HANDLE}:10 on lo:\n${out}`);
  return Number(m[1]);
}
