import type { Etcd3 } from 'etcd3';
import type { Keys } from '../common/keys.js';

/**
 * Calls `onDrain` once when `drain/<nodeId>` exists (set by DrainNode or the autoscaler).
 * Returns a function that stops watching.
 */
export async function watchDrain(etcd: Etcd3, keys: Keys, nodeId: string, onDrain: () => void): Promise<() => Promise<void>> {
  let fired = false;
  const fire = (): void => {
    if (!fired) {
      fired = true;
      onDrain();
    }
  };
  const watcher = await etcd.watch().key(keys.nodeDrain(nodeId)).create();
  watcher.on('put', fire);
  if ((await etcd.get(keys.nodeDrain(nodeId)).string()) !== null) fire();
  return async () => { await watcher.cancel(); };
}
