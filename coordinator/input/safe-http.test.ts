import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { pinnedRequest, vetTarget, type OutboundPolicy } from './safe-http.js';

describe('vetTarget + pinnedRequest', () => {
  it('resolves once and connects to the vetted address: no second lookup by anyone', async () => {
    let hits = 0;
    const server = createServer((req, res) => {
      hits++;
      res.end(`host=${req.headers.host}`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const lookups: string[] = [];
      // A name no real resolver knows: if anything looked it up again, the request would fail.
      const policy: OutboundPolicy = {
        allowPrivate: true,
        allowedHosts: [],
        resolve: async (h) => {
          lookups.push(h);
          return ['127.0.0.1'];
        },
      };
      const url = new URL(`http://video.example.invalid:${port}/clip.mp4`);
      const target = await vetTarget(url, policy, 'input');
      expect(target).toEqual({ host: 'video.example.invalid', address: '127.0.0.1', family: 4 });
      const res = await pinnedRequest(url, target, { signal: AbortSignal.timeout(5_000) });
      let body = '';
      for await (const c of res.body) body += String(c);
      expect(res.status).toBe(200);
      expect(body).toBe(`host=video.example.invalid:${port}`); // the Host header still names the host
      expect(lookups).toEqual(['video.example.invalid']);
      expect(hits).toBe(1);
    } finally {
      server.close();
    }
  });

  it('refuses when any answer is special, and honours the host list', async () => {
    const policy = (addrs: string[], allowedHosts: string[] = []): OutboundPolicy => ({ allowPrivate: false, allowedHosts, resolve: async () => addrs });
    const code = (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'OK',
        (e: { code: string }) => e.code,
      );
    expect(await code(vetTarget(new URL('http://a.test/'), policy(['93.184.215.14']), 'input'))).toBe('OK');
    expect(await code(vetTarget(new URL('http://a.test/'), policy(['93.184.215.14', '10.0.0.1']), 'input'))).toBe('PERMISSION_DENIED');
    expect(await code(vetTarget(new URL('http://a.test/'), policy(['2606:4700::1', 'fd00::1']), 'input'))).toBe('PERMISSION_DENIED');
    expect(await code(vetTarget(new URL('http://a.test/'), policy([]), 'input'))).toBe('INPUT_NOT_FOUND');
    expect(await code(vetTarget(new URL('http://a.test/'), policy(['93.184.215.14'], ['b.test']), 'input'))).toBe('PERMISSION_DENIED');
    expect(await code(vetTarget(new URL('http://0x7f.1/'), policy([]), 'input'))).toBe('PERMISSION_DENIED');
    expect(await code(vetTarget(new URL('ftp://a.test/'), policy(['93.184.215.14']), 'input'))).toBe('UNSUPPORTED_URI_SCHEME');
  });
});
