import { describe, expect, it } from 'vitest';
import type { Job } from '../proto/gen/tessera/v1/types.js';
import { serialParts } from './lab.js';

describe('serialParts', () => {
  it('reads queue + prepare and finalize from the job-scope history', () => {
    const h = (state: string, atMs: number, scope = 'job'): Job['history'][number] => ({ atMs, scope, state, nodeId: '', attempt: 0, reason: '' });
    const job = { history: [h('QUEUED', 1_000), h('PREPARING', 1_200), h('RUNNING', 3_000), h('RUNNING', 3_500, 'segment/0'), h('FINALIZING', 50_000), h('SUCCEEDED', 52_500)] } as unknown as Job;
    expect(serialParts(job)).toEqual({ prepareMs: 2_000, finalizeMs: 2_500 });
  });
});
