import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createLogger } from '../common/logger.js';
import { processAlive } from '../common/process.js';
import { startLocalS3 } from './s3-local-server.js';

// The local S3-protocol server of `tessera up` (s3rver). Settings come from argv because this is
// a launcher helper, not a Tessera service: <dir> <port> <bucket,bucket...> <parent pid> [<cert.pem> <key.pem>]
const [dir = '.tessera/s3', port = '0', buckets = 'tessera-output', parent = '0', certFile, keyFile] = process.argv.slice(2);
const log = createLogger('s3-local');
const tls = certFile && keyFile ? { cert: readFileSync(certFile), key: readFileSync(keyFile) } : undefined;
const server = await startLocalS3({ directory: resolve(dir), port: Number(port), buckets: buckets.split(',').filter(Boolean), ...(tls ? { tls } : {}) });
log.info({ endpoint: server.endpoint }, 'local S3 server ready');
const stop = (): void => {
  void server.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
// Attached (test) clusters pass the launcher's pid: stop when it is gone.
if (Number(parent) > 0) {
  setInterval(() => {
    if (!processAlive(Number(parent))) stop();
  }, 1_000).unref();
}
process.on('SIGINT', stop);
