import type { Etcd3 } from 'etcd3';
import { createEtcd } from './etcd.js';
import { Lifecycle } from './lifecycle.js';
import { createLogger, type Logger } from './logger.js';
import { loadTls, type TlsMaterial } from './tls.js';
import { setProcessGaugeSources } from './process-gauges.js';

/** What every process's config has in common. */
interface BaseConfig {
  LOG_LEVEL: string;
  SHUTDOWN_GRACE_MS: number;
  ETCD_ENDPOINTS: string[];
  ETCD_CALL_TIMEOUT_MS: number;
  ETCD_USERNAME?: string | undefined;
  ETCD_PASSWORD?: string | undefined;
  ETCD_TLS_CA_FILE?: string | undefined;
  ETCD_TLS_CERT_FILE?: string | undefined;
  ETCD_TLS_KEY_FILE?: string | undefined;
  TLS_CA_FILE?: string | undefined;
  TLS_CERT_FILE?: string | undefined;
  TLS_KEY_FILE?: string | undefined;
  EXIT_WITH_PARENT_PID: number;
  STAGING_DIR?: string | undefined;
}

/**
 * The start of every main.ts: load and validate the config (exit 2 with every problem listed,
 * before any port opens), create the logger and the lifecycle that owns SIGTERM/SIGINT.
 */
export function bootProcess<C extends BaseConfig>(
  service: string,
  load: () => C,
  identity: (cfg: C) => Record<string, string>,
): { cfg: C; log: Logger; life: Lifecycle } {
  let cfg: C;
  try {
    cfg = load();
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  setProcessGaugeSources({ certFile: cfg.TLS_CERT_FILE, stagingDir: cfg.STAGING_DIR });
  const log = createLogger(service, cfg.LOG_LEVEL, identity(cfg));
  const life = new Lifecycle(log);
  life.handleSignals(cfg.SHUTDOWN_GRACE_MS, (code) => process.exit(code));
  if (cfg.EXIT_WITH_PARENT_PID > 0) {
    const parent = cfg.EXIT_WITH_PARENT_PID;
    const timer = setInterval(() => {
      if (!processAlive(parent)) {
        clearInterval(timer);
        log.warn({ parent }, 'launcher is gone: stopping');
        void life.stop('launcher gone').then(() => process.exit(0));
      }
    }, 1_000);
    timer.unref();
  }
  return { cfg, log, life };
}

/** Runs a process's main; a startup failure is logged, cleaned up and exits non-zero. */
export function runMain(main: () => Promise<void>, log: Logger, life: Lifecycle): void {
  main().catch((err: unknown) => {
    log.fatal({ err }, 'failed to start');
    void life.stop('startup failure').then(() => process.exit(1));
  });
}

/** The process's etcd client, closed last on shutdown. */
export function processEtcd(cfg: BaseConfig, life: Lifecycle): Etcd3 {
  const tls = loadTls({ caFile: cfg.ETCD_TLS_CA_FILE, certFile: cfg.ETCD_TLS_CERT_FILE, keyFile: cfg.ETCD_TLS_KEY_FILE }, 'etcd TLS');
  const etcd = createEtcd({ endpoints: cfg.ETCD_ENDPOINTS, callTimeoutMs: cfg.ETCD_CALL_TIMEOUT_MS, username: cfg.ETCD_USERNAME, password: cfg.ETCD_PASSWORD, tls });
  life.onStop('etcd', () => etcd.close());
  return etcd;
}

/** The process's gRPC TLS material (TLS_* files), or undefined for plaintext links. */
export function processTls(cfg: BaseConfig): TlsMaterial | undefined {
  return loadTls({ caFile: cfg.TLS_CA_FILE, certFile: cfg.TLS_CERT_FILE, keyFile: cfg.TLS_KEY_FILE }, 'gRPC TLS');
}

/** True while a process with this pid exists (signal 0 probes without touching it). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
