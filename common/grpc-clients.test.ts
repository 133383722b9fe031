import { describe, expect, it } from 'vitest';
import { AdminClient } from '../proto/gen/tessera/v1/admin.js';
import { JobServiceClient } from './bulk-codec.js';
import { ClientCache } from './grpc-clients.js';

describe('ClientCache', () => {
  it('keeps one client per service and address (generated classes share a name)', () => {
    const cache = new ClientCache();
    const admin = cache.get(AdminClient, '127.0.0.1:1');
    const jobs = cache.get(JobServiceClient, '127.0.0.1:1');
    expect(admin).not.toBe(jobs);
    expect(typeof jobs.getJob).toBe('function');
    expect(typeof admin.listNodes).toBe('function');
    expect(cache.get(AdminClient, '127.0.0.1:1')).toBe(admin);
    cache.closeAll();
  });
});
