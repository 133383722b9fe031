// Container health probe for Docker/Compose: the image has no curl or wget, so this asks the
// process's own metrics server with Node's fetch.
//   node deploy/docker/healthcheck.mjs <port> [path]     (path defaults to /readyz)
// Exits 0 on HTTP 200, 1 on anything else (non-200, refused, timeout).
const port = Number(process.argv[2] ?? process.env.METRICS_PORT);
const path = process.argv[3] ?? '/readyz';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`healthcheck: bad port ${JSON.stringify(process.argv[2] ?? process.env.METRICS_PORT)}`);
  process.exit(2);
}
try {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3000) });
  process.exit(res.status === 200 ? 0 : 1);
} catch (err) {
  console.error(`healthcheck: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
