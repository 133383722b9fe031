import type { Etcd3 } from 'etcd3';
import { commitTx, type Compare } from './compare.js';

export type FencedPutOutcome = { ok: true; revision: string } | { ok: false; reason: 'fenced' };

/** Puts `value` at `key` only while `fence` holds (a leader term, a segment owner), in one transaction. */
export async function fencedPut(etcd: Etcd3, fence: Compare, key: string, value: string): Promise<FencedPutOutcome> {
  const res = await commitTx(etcd, [fence], [etcd.put(key).value(value)]);
  return res.succeeded ? { ok: true, revision: res.revision } : { ok: false, reason: 'fenced' };
}
