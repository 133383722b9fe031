import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import type { Keys } from '../keys.js';

/** The one field read here: processes outside the coordinator know nothing else of a job record. */
const stateOnly = z.looseObject({ state: z.string() });

function stateOf(raw: string): string | undefined {
  try {
    const res = stateOnly.safeParse(JSON.parse(raw));
    return res.success ? res.data.state : undefined;
  } catch {
    return undefined; // not ours: look further
  }
}

/**
 * A job's state as etcd records it (its working record, else its history record), read in one
 * transaction; 'GONE' when neither exists or neither names a state.
 */
export async function readJobStateTx(etcd: Etcd3, keys: Keys, jobId: string): Promise<string> {
  const res = await etcd.kv.txn({
    compare: [],
    success: [keys.job(jobId), keys.historyEntry(jobId)].map((k) => ({ request_range: { key: Buffer.from(k) } })),
  });
  for (const r of res.responses) {
    const raw = r.response_range?.kvs[0]?.value.toString();
    const state = raw === undefined ? undefined : stateOf(raw);
    if (state !== undefined) return state;
  }
  return 'GONE';
}
