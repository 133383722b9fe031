import { resolve } from 'node:path';
import { AppError } from '../common/errors.js';
import { loadTls } from '../common/tls.js';
import { readClusterFile } from '../deploy/local-cluster.js';
import { TesseraClient, type TesseraClientOptions } from './client.js';
import { loadCliConfig } from './config.js';

/**
 * A client for the cluster the CLI would talk to, found the same way: `TESSERA_ADDR` (with
 * `TESSERA_TLS_*` and `TESSERA_TOKEN`), else the local cluster that `tessera up` started in `dir`
 * (default `TESSERA_DIR`, `.tessera`), with its client certificate under `--tls`.
 */
export function connect(o: { dir?: string; env?: NodeJS.ProcessEnv } & Partial<TesseraClientOptions> = {}): TesseraClient {
  const cfg = loadCliConfig(o.env ?? process.env);
  const { dir: _dir, env: _env, ...rest } = o;
  const base = { ...(cfg.TESSERA_TOKEN ? { token: cfg.TESSERA_TOKEN } : {}), ...rest };
  if (cfg.TESSERA_ADDR.length) {
    const tls = loadTls({ caFile: cfg.TESSERA_TLS_CA, certFile: cfg.TESSERA_TLS_CERT, keyFile: cfg.TESSERA_TLS_KEY }, 'client TLS');
    return new TesseraClient({ addresses: cfg.TESSERA_ADDR, ...(tls ? { tls } : {}), ...(tls && cfg.TESSERA_TLS_SERVER_NAME ? { tlsServerName: cfg.TESSERA_TLS_SERVER_NAME } : {}), ...base });
  }
  const dir = resolve(o.dir ?? cfg.TESSERA_DIR);
  const file = readClusterFile(dir);
  if (!file) throw new AppError('UNAVAILABLE', `no cluster found: set TESSERA_ADDR, or start a local one with "tessera up" (looked in ${dir})`);
  const tls = file.tls ? loadTls({ caFile: file.tls.ca, certFile: file.tls.cert, keyFile: file.tls.key }, 'client TLS') : undefined;
  return new TesseraClient({ addresses: file.coordinators, ...(tls ? { tls, tlsServerName: 'localhost' } : {}), ...base });
}
