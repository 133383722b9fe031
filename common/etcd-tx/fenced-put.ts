import type { Etcd3 } from 'etcd3';
import { commitTx, compareHolds, type Compare, type TxOp } from './compare.js';

export type FencedPutOutcome = { ok: true; revision: string } | { ok: false; reason: 'fenced' };

/** Puts `value` at `key` only while `fence` holds (a leader term, a segment owner), in one transaction. */
export async function fencedPut(etcd: Etcd3, fence: Compare, key: string, value: string): Promise<FencedPutOutcome> {
  const res = await commitTx(etcd, [fence], [etcd.put(key).value(value)]);
  return res.succeeded ? { ok: true, revision: res.revision } : { ok: false, reason: 'fenced' };
}

export type FencedWriteOutcome = { ok: true; revision: string } | { ok: false; reason: 'fenced' | 'moved' };

/**
 * One write (`ops`) only while `fence` holds and every compare in `expect` holds (a record as
 * read), in one transaction. On refusal the fence is read again: `fenced` when it is lost, else
 * `moved` (the record changed meanwhile: the caller reads again or lets it be).
 */
export async function fencedWrite(etcd: Etcd3, fence: Compare, expect: readonly Compare[], ops: readonly TxOp[]): Promise<FencedWriteOutcome> {
  const res = await commitTx(etcd, [fence, ...expect], ops);
  if (res.succeeded) return { ok: true, revision: res.revision };
  return { ok: false, reason: (await compareHolds(etcd, fence)) ? 'moved' : 'fenced' };
}
