import { describe, expect, it } from 'vitest';
import { randomKeys, useEtcd } from '../../test/support/etcd-fixtures.js';
import { isFinished, readJobState } from '../job-state.js';

describe('readJobState (real etcd)', () => {
  const e = useEtcd();
  const keys = randomKeys();

  it('reads the working record first, then history, else GONE', async () => {
    await e.client.put(keys.job('live')).value(JSON.stringify({ id: 'live', state: 'RUNNING' }));
    await e.client.put(keys.historyEntry('live')).value(JSON.stringify({ id: 'live', state: 'SUCCEEDED' }));
    await e.client.put(keys.historyEntry('old')).value(JSON.stringify({ id: 'old', state: 'CANCELLED' }));
    expect(await readJobState(e.client, keys, 'live')).toBe('RUNNING');
    expect(await readJobState(e.client, keys, 'old')).toBe('CANCELLED');
    expect(await readJobState(e.client, keys, 'never')).toBe('GONE');
    expect(isFinished('GONE') && isFinished('CANCELLED') && !isFinished('RUNNING')).toBe(true);
  });

  it('looks past a record that is not ours (not JSON, or no state)', async () => {
    await e.client.put(keys.job('odd')).value('not json');
    await e.client.put(keys.historyEntry('odd')).value(JSON.stringify({ id: 'odd', state: 'FAILED' }));
    expect(await readJobState(e.client, keys, 'odd')).toBe('FAILED');
    await e.client.put(keys.job('nostate')).value(JSON.stringify({ id: 'nostate', state: 7 }));
    expect(await readJobState(e.client, keys, 'nostate')).toBe('GONE');
  });
});
