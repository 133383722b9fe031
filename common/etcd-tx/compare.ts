import type { Etcd3, IOperation } from 'etcd3';

/** One compare clause of an etcd transaction: etcd3's `.if(key, target, op, value)` as data. */
export interface Compare {
  key: string;
  target: 'Create' | 'Mod' | 'Version' | 'Value';
  op: '==' | '!=' | '>' | '<';
  value: string | number;
}

/** A request of a transaction: a put, delete or range builder of the same client (`etcd.put(k).value(v)`). */
export type TxOp = IOperation;

/**
 * The leader's fencing token: the create revision of its election key. Writes made by the
 * leader's job runners compare it inside the same transaction, so a deposed leader cannot write.
 */
export interface LeaderFence {
  key: string;
  createRevision: string;
}

/** The compare that holds while `fence` is the current leader term. */
export function leaderFenceCompare(fence: LeaderFence): Compare {
  return { key: fence.key, target: 'Create', op: '==', value: fence.createRevision };
}

/** The compare that holds while the segment owner key still has the revision the owner was handed. */
export function ownerFenceCompare(ownerKey: string, ownerRevision: number | string): Compare {
  return { key: ownerKey, target: 'Mod', op: '==', value: ownerRevision };
}

/** What one committed transaction said. */
export interface TxResult {
  succeeded: boolean;
  /** The store's revision after the transaction (the writes' mod revision when it succeeded). */
  revision: string;
  responses: Awaited<ReturnType<ReturnType<Etcd3['if']>['commit']>>['responses'];
}

/** Runs `if (every compare) then ops else elseOps` as one transaction. At least one compare. */
export async function commitTx(etcd: Etcd3, compares: readonly Compare[], ops: readonly TxOp[], elseOps: readonly TxOp[] = []): Promise<TxResult> {
  const [first, ...rest] = compares;
  if (!first) throw new Error('commitTx needs at least one compare');
  let b = etcd.if(first.key, first.target, first.op, first.value);
  for (const c of rest) b = b.and(c.key, c.target, c.op, c.value);
  if (ops.length > 0) b = b.then(...ops);
  if (elseOps.length > 0) b = b.else(...elseOps);
  const res = await b.commit();
  return { succeeded: res.succeeded, revision: res.header.revision, responses: res.responses };
}

/**
 * Whether `c` holds right now (one read of its key). After a transaction failed, this tells a
 * fence that no longer holds ("fenced": stop) from a record that merely moved ("retry").
 */
export async function compareHolds(etcd: Etcd3, c: Compare): Promise<boolean> {
  const kv = (await etcd.get(c.key).exec()).kvs[0];
  if (c.target === 'Value') {
    const v = kv?.value.toString();
    const want = String(c.value);
    switch (c.op) {
      case '==':
        return v === want;
      case '!=':
        return v !== want;
      case '>':
        return v !== undefined && v > want;
      case '<':
        return v !== undefined && v < want;
    }
  }
  const field = c.target === 'Create' ? kv?.create_revision : c.target === 'Mod' ? kv?.mod_revision : kv?.version;
  const have = BigInt(field ?? 0);
  const want = BigInt(c.value);
  switch (c.op) {
    case '==':
      return have === want;
    case '!=':
      return have !== want;
    case '>':
      return have > want;
    case '<':
      return have < want;
  }
}
