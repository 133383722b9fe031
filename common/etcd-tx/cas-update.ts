import type { Etcd3 } from 'etcd3';
import type { z } from 'zod';
import { parseRecord } from '../record-schemas.js';
import { commitTx, compareHolds, type Compare, type TxOp } from './compare.js';

/** What a mutation wants written: the record's next value, and what rides in the same transaction. */
export interface CasStep<T> {
  /** Absent: the record stays as it is, and `ops` are committed only while it is still as read (a guarded write). */
  next?: T;
  /** Compares besides the record's own revision and the fence (e.g. sibling records read meanwhile). */
  compares?: readonly Compare[];
  /** Further writes, committed if and only if the record is. */
  ops?: readonly TxOp[];
}

/**
 * The mutation of one read-modify-write round: gets the record as read (undefined when absent and
 * `allowCreate`) and its mod revision ('0' when absent); returns undefined for "no change".
 * Runs again on every retry, so it must not have side effects.
 */
export type CasMutation<T> = (cur: T | undefined, modRevision: string) => CasStep<T> | undefined | Promise<CasStep<T> | undefined>;

export interface CasOptions {
  /**
   * A fencing compare (leader term, segment owner): part of every transaction, and read again
   * after a failed one, so a lost fence ends the loop at once with `fenced`.
   */
  fence?: Compare | undefined;
  /** Compares added to every transaction (not read again on failure). */
  extraCompares?: readonly Compare[];
  /** A missing record is handed to the mutation as undefined (else the outcome is `missing`). */
  allowCreate?: boolean;
  /** Read-modify-write rounds before giving up with `contention` (default 50). */
  maxAttempts?: number;
}

export type CasOutcome<T> =
  | { ok: true; changed: true; value: T; previous: T | undefined; revision: string }
  | { ok: true; changed: false; value: T | undefined; revision: string }
  | { ok: false; reason: 'missing' | 'fenced' | 'contention' };

/**
 * Compare-and-swap on one JSON record, fenced: read it (parsed with `schema`) with its mod
 * revision, let `mutate` build the next value, and commit it only if the record still has that
 * revision, the fence holds and every extra compare holds; on a conflict read again and retry.
 * The one read-modify-write loop of the code base: job records, checkpoints, and writes guarded
 * by a record's revision (the state index).
 * `revision` is the transaction's revision when changed, else the record's mod revision.
 */
export async function casUpdate<T>(etcd: Etcd3, key: string, schema: z.ZodType<T>, mutate: CasMutation<T>, opts: CasOptions = {}): Promise<CasOutcome<T>> {
  const attempts = opts.maxAttempts ?? 50;
  for (let i = 0; i < attempts; i++) {
    const kv = (await etcd.get(key).exec()).kvs[0];
    if (!kv && !opts.allowCreate) return { ok: false, reason: 'missing' };
    const cur = kv ? parseRecord(schema, kv.value, key) : undefined;
    const rev = kv?.mod_revision ?? '0';
    const step = await mutate(cur, rev);
    if (!step) return { ok: true, changed: false, value: cur, revision: rev };
    const value = step.next ?? cur;
    if (value === undefined) throw new Error(`casUpdate: a guarded write needs the record at ${key}`);
    const compares: Compare[] = [{ key, target: 'Mod', op: '==', value: rev }, ...(opts.fence ? [opts.fence] : []), ...(opts.extraCompares ?? []), ...(step.compares ?? [])];
    const write = step.next === undefined ? [] : [etcd.put(key).value(JSON.stringify(step.next))];
    const res = await commitTx(etcd, compares, [...write, ...(step.ops ?? [])]);
    if (res.succeeded) return { ok: true, changed: true, value, previous: cur, revision: res.revision };
    if (opts.fence && !(await compareHolds(etcd, opts.fence))) return { ok: false, reason: 'fenced' };
  }
  return { ok: false, reason: 'contention' };
}
