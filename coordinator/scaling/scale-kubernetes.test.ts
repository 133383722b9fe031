import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import { DELETION_COST, KubernetesScaleProvider } from './scale-kubernetes.js';

// A fake API server (the one place a fake is acceptable: there is no Kubernetes here) that
// records the exact requests the provider sends.
interface Seen {
  method: string;
  url: string;
  auth: string;
  type: string;
  body: unknown;
}

describe('kubernetes scale provider', () => {
  const seen: Seen[] = [];
  let replicas = 3;
  let url = '';
  const server = createServer((req: IncomingMessage, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => {
      raw += c.toString();
    });
    req.on('end', () => {
      const body = raw ? (JSON.parse(raw) as { spec?: { replicas?: number } }) : undefined;
      seen.push({ method: req.method!, url: req.url!, auth: req.headers.authorization ?? '', type: req.headers['content-type'] ?? '', body });
      if (req.url!.endsWith('/scale') && req.method === 'PATCH') replicas = body?.spec?.replicas ?? replicas;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(req.url!.endsWith('/scale') ? { kind: 'Scale', spec: { replicas } } : { kind: 'Pod' }));
    });
  });
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
  });

  it('scales up through the scale subresource', async () => {
    const p = new KubernetesScaleProvider({ apiUrl: url, namespace: 'tessera', deployment: 'tessera-node-agent', token: 'tok', timeoutMs: 2000 }, createLogger('test', 'silent'));
    seen.length = 0;
    await p.scaleUp(2);
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      'GET /apis/apps/v1/namespaces/tessera/deployments/tessera-node-agent/scale',
      'PATCH /apis/apps/v1/namespaces/tessera/deployments/tessera-node-agent/scale',
    ]);
    expect(seen[1]!.body).toEqual({ spec: { replicas: 5 } });
    expect(seen[1]!.type).toBe('application/merge-patch+json');
    expect(seen[1]!.auth).toBe('Bearer tok');
    expect(p.pending(new Set(['a', 'b', 'c']))).toBe(2);
  });

  it('marks the drained pod for deletion first, then shrinks', async () => {
    const p = new KubernetesScaleProvider({ apiUrl: url, namespace: 'tessera', deployment: 'tessera-node-agent', token: 'tok', timeoutMs: 2000 }, createLogger('test', 'silent'));
    seen.length = 0;
    await p.scaleDown(['tessera-node-agent-7d9f-abcde']);
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      'PATCH /api/v1/namespaces/tessera/pods/tessera-node-agent-7d9f-abcde',
      'GET /apis/apps/v1/namespaces/tessera/deployments/tessera-node-agent/scale',
      'PATCH /apis/apps/v1/namespaces/tessera/deployments/tessera-node-agent/scale',
    ]);
    expect(seen[0]!.body).toEqual({ metadata: { annotations: { [DELETION_COST]: '-1000' } } });
    expect(seen[2]!.body).toEqual({ spec: { replicas: 4 } });
  });

  it('grows and shrinks a pool through its own Deployment, counting its pods apart', async () => {
    const p = new KubernetesScaleProvider({ apiUrl: url, namespace: 'tessera', deployment: 'tessera-node-agent', token: 'tok', timeoutMs: 2000 }, createLogger('test', 'silent'));
    replicas = 0;
    seen.length = 0;
    await p.scaleUp(1, { name: 'gpu', deployment: 'tessera-node-gpu', capabilities: ['nvenc'], labels: {} });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      'GET /apis/apps/v1/namespaces/tessera/deployments/tessera-node-gpu/scale',
      'PATCH /apis/apps/v1/namespaces/tessera/deployments/tessera-node-gpu/scale',
    ]);
    expect(seen[1]!.body).toEqual({ spec: { replicas: 1 } });
    // Three default nodes registered, the pool's pod not yet: one pending.
    expect(p.pending(new Set(['tessera-node-agent-1', 'tessera-node-agent-2', 'tessera-node-agent-3']))).toBe(1);
    expect(p.pending(new Set(['tessera-node-agent-1', 'tessera-node-gpu-5c4-xyz']))).toBe(0);
    seen.length = 0;
    await p.scaleDown(['tessera-node-gpu-5c4-xyz']);
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      'PATCH /api/v1/namespaces/tessera/pods/tessera-node-gpu-5c4-xyz',
      'GET /apis/apps/v1/namespaces/tessera/deployments/tessera-node-gpu/scale',
      'PATCH /apis/apps/v1/namespaces/tessera/deployments/tessera-node-gpu/scale',
    ]);
    expect(seen[2]!.body).toEqual({ spec: { replicas: 0 } });
  });
});
