import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { AppError } from '../common/errors.js';
import { readJsonObject } from '../coordinator/state/journal.js';
import { listBackups, type BackupInfo } from './backup.js';
import { s3Send } from '../common/s3-client.js';

export interface RestoreOptions {
  s3: S3Client;
  bucket: string;
  prefix: string;
  /** `latest`, a key in the bucket, `s3://bucket/key`, or a local file. */
  from: string;
  dataDir: string;
  /** etcd member flags for `snapshot restore` (a member of a multi-member cluster needs all three). */
  name?: string | undefined;
  initialCluster?: string | undefined;
  initialAdvertisePeerUrls?: string | undefined;
  initialClusterToken?: string | undefined;
  /** The restore tool: `etcdutl` when installed (etcd ≥ 3.5), else `etcdctl` (3.4 has restore there). */
  tool?: string | undefined;
}

/**
 * Restores an etcd data directory from a backup: fetches the snapshot (checking its SHA-256
 * against the backup's description when there is one) and runs `etcdutl|etcdctl snapshot
 * restore` into `dataDir`, which must not exist yet. Start etcd on that directory afterwards,
 * then run `tessera admin reconcile` before any coordinator starts.
 */
export async function restoreDataDir(o: RestoreOptions): Promise<{ key: string; takenAtMs: number | undefined; tool: string }> {
  if (existsSync(o.dataDir)) throw new AppError('FAILED_PRECONDITION', `${o.dataDir} exists: etcd restores only into a new data directory (move the old one away)`);
  const tmp = await mkdtemp(join(tmpdir(), 'tessera-restore-'));
  try {
    let file: string;
    let key = o.from;
    let info: BackupInfo | undefined;
    if (existsSync(o.from)) {
      file = o.from;
    } else {
      let bucket = o.bucket;
      if (o.from === 'latest') {
        const newest = (await listBackups(o.s3, o.bucket, o.prefix))[0];
        if (!newest) throw new AppError('NOT_FOUND', `no backup under s3://${o.bucket}/${o.prefix}`);
        key = newest.key;
      } else if (o.from.startsWith('s3://')) {
        const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(o.from);
        if (!m) throw new AppError('INVALID_ARGUMENT', `not an s3:// URI: ${o.from}`);
        bucket = m[1]!;
        key = m[2]!;
      }
      info = await readJsonObject<BackupInfo>(o.s3, bucket, key.replace(/\.db$/, '.json'));
      file = join(tmp, 'snapshot.db');
      const res = await s3Send('GetObject', () => o.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key })));
      await pipeline(res.Body as Readable, createWriteStream(file));
      if (info) {
        const sha = createHash('sha256');
        await pipeline(createReadStream(file), sha);
        if (sha.digest('hex') !== info.sha256) throw new AppError('FAILED_PRECONDITION', `the snapshot ${key} does not match the SHA-256 its backup recorded`);
      }
    }
    const tool = o.tool ?? (onPath('etcdutl') ? 'etcdutl' : 'etcdctl');
    const args = ['snapshot', 'restore', file, '--data-dir', o.dataDir];
    if (o.name) args.push('--name', o.name);
    if (o.initialCluster) args.push('--initial-cluster', o.initialCluster);
    if (o.initialAdvertisePeerUrls) args.push('--initial-advertise-peer-urls', o.initialAdvertisePeerUrls);
    if (o.initialClusterToken) args.push('--initial-cluster-token', o.initialClusterToken);
    await run(tool, args);
    return { key, takenAtMs: info?.takenAtMs, tool };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, cmd)));
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCDCTL_API: '3' } });
    let err = '';
    p.stdout.on('data', () => undefined);
    p.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
    });
    p.once('error', (e) => reject(new AppError('FAILED_PRECONDITION', `${cmd} could not run (${e.message}): install etcd's client tools (Debian: apt-get install etcd-client)`)));
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new AppError('INTERNAL', `${cmd} ${args.join(' ')} exited with ${code}: ${err.trim()}`))));
  });
}
