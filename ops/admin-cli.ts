import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AppError } from '../common/errors.js';
import { createEtcd } from '../common/etcd.js';
import { Keys } from '../common/keys.js';
import { loadTls } from '../common/tls.js';
import { JobStore } from '../coordinator/state/job-store.js';
import { readClusterFile } from '../deploy/local-cluster.js';
import { createS3Client, s3SettingsFromConfig } from '../common/s3-client.js';
import { listBackups, takeBackup } from './backup.js';
import { loadOpsConfig, type OpsConfig } from './config.js';
import { formatReport, reconcile } from './reconcile.js';
import { restoreDataDir } from './restore.js';

export const ADMIN_USAGE = `tessera admin — backup and disaster recovery (talks to etcd and S3 directly: ETCD_*, S3_*)

  tessera admin backup [--retain N] [--every 1h]   etcd snapshot to s3://$S3_BUCKET/$BACKUP_PREFIX, keep the newest N
                                                   (BACKUP_RETAIN, 48); --every: repeat until stopped (Compose)
  tessera admin backups [--json]                   list the backups, newest first
  tessera admin restore --data-dir DIR [--from latest|<key>|s3://b/k|<file>]
                        [--name etcd-0 --initial-cluster … --initial-advertise-peer-urls … --initial-cluster-token …]
                                                   a new etcd data directory from a backup (etcdutl/etcdctl snapshot restore)
  tessera admin reconcile [--requeue-lost] [--since ISO-time] [--json]
                                                   after etcd runs on the restored data, before coordinators start:
                                                   jobs finished after the snapshot are marked, jobs accepted after it are
                                                   reported as lost (--requeue-lost: queued again under their ids)

  Without ETCD_ENDPOINTS, the local cluster of \`tessera up\` (--dir, .tessera) is used.  See docs/disaster-recovery.md.`;

/** `tessera admin …`: parses its own flags (argv after "admin"). Returns the exit code. */
export async function runAdmin(argv: string[], out: (s: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const { values: f, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      retain: { type: 'string' },
      every: { type: 'string' },
      from: { type: 'string' },
      'data-dir': { type: 'string' },
      name: { type: 'string' },
      'initial-cluster': { type: 'string' },
      'initial-advertise-peer-urls': { type: 'string' },
      'initial-cluster-token': { type: 'string' },
      'requeue-lost': { type: 'boolean' },
      since: { type: 'string' },
      json: { type: 'boolean' },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [sub] = positionals;
  if (f.help || !sub) {
    out(ADMIN_USAGE);
    return sub ? 0 : 2;
  }
  const cfg = loadOpsConfig(withLocalCluster(env, f.dir));
  const s3 = createS3Client(s3SettingsFromConfig(cfg));
  try {
    switch (sub) {
      case 'backup': {
        const retain = f.retain ? Number(f.retain) : cfg.BACKUP_RETAIN;
        if (!Number.isInteger(retain) || retain < 1) throw new AppError('INVALID_ARGUMENT', '--retain must be a whole number ≥ 1');
        const everyMs = f.every !== undefined ? parseDuration(f.every || String(cfg.BACKUP_INTERVAL_MS)) : undefined;
        const once = async (): Promise<void> => {
          const etcd = etcdOf(cfg);
          try {
            const r = await takeBackup({ etcd, keys: new Keys(cfg.ETCD_PREFIX), s3, bucket: cfg.S3_BUCKET, prefix: cfg.BACKUP_PREFIX, retain, journalPrefix: cfg.JOURNAL_PREFIX });
            out(
              f.json
                ? JSON.stringify(r)
                : `backup s3://${r.info.bucket}/${r.info.key}: ${r.info.bytes} bytes at revision ${r.info.revision}, sha256 ${r.info.sha256}, ${r.info.durationMs} ms; ${r.deleted.length} old backup(s) and ${r.journalPruned} journal entries deleted`,
            );
          } finally {
            etcd.close();
          }
        };
        if (everyMs === undefined) {
          await once();
          return 0;
        }
        // A loop for deployments without a scheduler (Compose): a failed backup is logged and retried next time.
        const stop = new AbortController();
        for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => stop.abort());
        while (!stop.signal.aborted) {
          await once().catch((err: unknown) => out(`backup failed: ${(err as Error).message}`));
          await new Promise<void>((r) => {
            const t = setTimeout(r, everyMs);
            stop.signal.addEventListener(
              'abort',
              () => {
                clearTimeout(t);
                r();
              },
              { once: true },
            );
          });
        }
        return 0;
      }
      case 'backups': {
        const list = await listBackups(s3, cfg.S3_BUCKET, cfg.BACKUP_PREFIX);
        if (f.json) out(JSON.stringify(list, null, 2));
        else for (const b of list) out(`${new Date(b.takenAtMs).toISOString()}  s3://${cfg.S3_BUCKET}/${b.key}`);
        return 0;
      }
      case 'restore': {
        if (!f['data-dir']) throw new AppError('INVALID_ARGUMENT', 'usage: tessera admin restore --data-dir DIR [--from latest|<key>|s3://…|<file>]');
        const r = await restoreDataDir({
          s3,
          bucket: cfg.S3_BUCKET,
          prefix: cfg.BACKUP_PREFIX,
          from: f.from ?? 'latest',
          dataDir: resolve(f['data-dir']),
          name: f.name,
          initialCluster: f['initial-cluster'],
          initialAdvertisePeerUrls: f['initial-advertise-peer-urls'],
          initialClusterToken: f['initial-cluster-token'],
        });
        out(
          f.json
            ? JSON.stringify(r)
            : `restored ${r.key}${r.takenAtMs ? ` (taken ${new Date(r.takenAtMs).toISOString()})` : ''} into ${resolve(f['data-dir'])} with ${r.tool}.\nNext: start etcd on it, then \`tessera admin reconcile\` before any coordinator starts.`,
        );
        return 0;
      }
      case 'reconcile': {
        const etcd = etcdOf(cfg);
        try {
          const keys = new Keys(cfg.ETCD_PREFIX);
          const sinceMs = f.since ? Date.parse(f.since) : undefined;
          if (sinceMs !== undefined && Number.isNaN(sinceMs)) throw new AppError('INVALID_ARGUMENT', '--since takes an ISO time');
          const report = await reconcile({
            etcd,
            keys,
            store: new JobStore(etcd, keys, 500),
            s3,
            bucket: cfg.S3_BUCKET,
            journalPrefix: cfg.JOURNAL_PREFIX,
            requeueLost: f['requeue-lost'] ?? false,
            sinceMs,
          });
          if (f.json) out(JSON.stringify(report, null, 2));
          else for (const l of formatReport(report)) out(l);
          return 0;
        } finally {
          etcd.close();
        }
      }
      default:
        out(ADMIN_USAGE);
        return 2;
    }
  } finally {
    s3.destroy();
  }
}

function etcdOf(cfg: OpsConfig) {
  const tls = loadTls({ caFile: cfg.ETCD_TLS_CA_FILE, certFile: cfg.ETCD_TLS_CERT_FILE, keyFile: cfg.ETCD_TLS_KEY_FILE }, 'etcd TLS');
  return createEtcd({ endpoints: cfg.ETCD_ENDPOINTS, callTimeoutMs: cfg.ETCD_CALL_TIMEOUT_MS, username: cfg.ETCD_USERNAME, password: cfg.ETCD_PASSWORD, tls });
}

/** Without ETCD_ENDPOINTS: the endpoints, S3 server and bucket of the local cluster, if one is up. */
function withLocalCluster(env: NodeJS.ProcessEnv, dir: string | undefined): NodeJS.ProcessEnv {
  if (env.ETCD_ENDPOINTS) return env;
  const file = readClusterFile(resolve(dir ?? env.TESSERA_DIR ?? '.tessera'));
  if (!file) return env;
  return { ETCD_ENDPOINTS: file.etcdEndpoints.join(','), S3_ENDPOINT: file.s3Endpoint, S3_BUCKET: file.bucket, ...env };
}

/** `90s`, `15m`, `1h`, `1d` or plain milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(s.trim());
  if (!m) throw new AppError('INVALID_ARGUMENT', `not a duration: ${s} (e.g. 30m, 1h)`);
  const mult = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms'];
  const ms = Math.round(Number(m[1]) * mult);
  if (ms < 1_000) throw new AppError('INVALID_ARGUMENT', 'the backup interval must be at least 1 s');
  return ms;
}
