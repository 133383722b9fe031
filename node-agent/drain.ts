import type { Etcd3 } from 'etcd3';
import type { Keys } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import { ResilientWatch } from '../common/watch.js';

/**
 * Calls `onDrain` once when `drain/<nodeId>` exists (set by DrainNode or the autoscaler).
 * Returns a function that stops watching.
 */
export async function watchDrain(etcd: Etcd3, keys: Keys, nodeId: string, onDrain: () => void, log: Logger): Promise<() => Promise<void>> {
  let fired = false;
  const fire = (): void => {
    if (!fired) {
      fired = true;
      onDrain();
    }
  };
  const check = async (): Promise<void> => {
    if ((await etcd.get(keys.nodeDrain(nodeId)).string()) !== null) fire();
  };
  // Re-watched (and re-read) after compaction: a drain is never missed.
  const watcher = await ResilientWatch.open(
    etcd,
    { key: keys.nodeDrain(nodeId) },
    {
      put: fire,
      resync: () => void check().catch((err: unknown) => log.warn({ err }, 'could not read the drain mark')),
    },
    log,
  );
  await check();
  return async () => {
    await watcher.cancel();
  };
}
