import type { Etcd3, Lease } from 'etcd3';
import { commitTx, type LeaderFence } from '../../../common/etcd-tx/compare.js';

export type CampaignOutcome = { ok: true; fence: LeaderFence } | { ok: false; reason: 'held'; holder: string };

/**
 * One round of leader election: creates the election key under `lease` with `id` as its value,
 * only if the key does not exist (one transaction). The winner's fencing token is the key's
 * create revision (the transaction's revision). `held`: another candidate (`holder`) leads.
 */
export async function campaign(etcd: Etcd3, lease: Lease, key: string, id: string): Promise<CampaignOutcome> {
  const res = await commitTx(etcd, [{ key, target: 'Create', op: '==', value: 0 }], [lease.put(key).value(id)], [etcd.get(key)]);
  if (res.succeeded) return { ok: true, fence: { key, createRevision: res.revision } };
  return { ok: false, reason: 'held', holder: res.responses[0]?.response_range?.kvs[0]?.value.toString() ?? '' };
}
