import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { registerProcessGauges } from './process-gauges.js';

/** A Prometheus registry with the process's default metrics and its certificate/disk gauges. */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  // Certificate expiry and staging disk space, for the alert rules (deploy/prometheus).
  registerProcessGauges(registry);
  return registry;
}

/**
 * HTTP server for `GET /metrics` (Prometheus text), `GET /healthz` (process alive) and
 * `GET /readyz` (ready to take work, per `isReady`).
 */
export async function startMetricsServer(registry: Registry, port: number, host: string, isReady: () => boolean): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/metrics')) {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    } else if (url.startsWith('/healthz')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    } else if (url.startsWith('/readyz')) {
      const ok = isReady();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ready\n' : 'not ready\n');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    server,
    port: actual,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
