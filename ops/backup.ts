import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectsCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Etcd3 } from 'etcd3';
import type { Keys } from '../common/keys.js';
import { s3Send } from '../common/s3-client.js';

/** What `<prefix>etcd-<time>.json` says of its snapshot. */
export interface BackupInfo {
  key: string;
  bucket: string;
  /** The backup marker written into etcd just before the snapshot (the snapshot holds it). */
  takenAtMs: number;
  /** etcd revision the snapshot was taken at. */
  revision: string;
  bytes: number;
  sha256: string;
  durationMs: number;
}

export interface BackupOptions {
  etcd: Etcd3;
  keys: Keys;
  s3: S3Client;
  bucket: string;
  prefix: string;
  retain: number;
  journalPrefix: string;
  now?: () => number;
}

/** Backup object names sort by time: `etcd-20261201T101500123Z.db`. */
export function backupName(atMs: number): string {
  return `etcd-${new Date(atMs).toISOString().replace(/[-:.]/g, '')}.db`;
}

/**
 * Takes one etcd snapshot (the Maintenance.Snapshot stream of the member answering, the same
 * bytes as `etcdctl snapshot save`, sha256-trailed so `snapshot restore` checks them) and puts
 * it in S3, then applies retention: the newest `retain` backups stay; older ones go, and so do
 * journal entries that only a deleted backup could need. Records the backup in etcd
 * (`ops/last-backup`, read by the coordinators' `tessera_backup_last_success_timestamp_seconds`).
 */
export async function takeBackup(o: BackupOptions): Promise<{ info: BackupInfo; deleted: string[]; journalPruned: number }> {
  const now = o.now ?? Date.now;
  const t0 = now();
  const takenAtMs = t0;
  // In the snapshot: after a restore, the cluster knows when its state is from.
  await o.etcd.put(o.keys.backupMarker()).value(JSON.stringify({ takenAtMs }));
  const dir = await mkdtemp(join(tmpdir(), 'tessera-backup-'));
  try {
    const file = join(dir, 'snapshot.db');
    const { revision, sha256 } = await saveSnapshot(o.etcd, file);
    const bytes = (await stat(file)).size;
    const key = `${o.prefix}${backupName(takenAtMs)}`;
    // Sent again whole (the file opened again) if it fails: the client itself makes one attempt per request.
    await s3Send('Upload', () => new Upload({ client: o.s3, params: { Bucket: o.bucket, Key: key, Body: createReadStream(file), ContentType: 'application/octet-stream' } }).done());
    const info: BackupInfo = { key, bucket: o.bucket, takenAtMs, revision, bytes, sha256, durationMs: now() - t0 };
    await s3Send('PutObject', () => o.s3.send(new PutObjectCommand({ Bucket: o.bucket, Key: key.replace(/\.db$/, '.json'), Body: JSON.stringify(info, null, 2), ContentType: 'application/json' })));
    await o.etcd.put(o.keys.lastBackup()).value(JSON.stringify({ atMs: now(), key, bytes, sha256, takenAtMs }));
    const { deleted, oldestKeptMs } = await applyRetention(o.s3, o.bucket, o.prefix, o.retain);
    const journalPruned = oldestKeptMs === undefined ? 0 : await pruneJournal(o.s3, o.bucket, o.journalPrefix, oldestKeptMs);
    return { info, deleted, journalPruned };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Streams a snapshot into `file`; resolves with the revision it was taken at and the file's SHA-256. */
async function saveSnapshot(etcd: Etcd3, file: string): Promise<{ revision: string; sha256: string }> {
  const stream = await etcd.maintenance.snapshot();
  const out = createWriteStream(file);
  const hash = createHash('sha256');
  let revision = '';
  await new Promise<void>((resolve, reject) => {
    stream.on('data', (m) => {
      if (!revision && m.header?.revision) revision = String(m.header.revision);
      const blob = Buffer.from(m.blob);
      hash.update(blob);
      // No back-pressure on the etcd stream: the snapshot is bounded by etcd's quota (2 GiB by default).
      out.write(blob);
    });
    stream.on('error', reject);
    stream.on('end', () => resolve());
  });
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return { revision, sha256: hash.digest('hex') };
}

/** The backups under `prefix`, newest first. */
export async function listBackups(s3: S3Client, bucket: string, prefix: string): Promise<{ key: string; takenAtMs: number }[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const res = await s3Send('ListObjectsV2', () => s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}etcd-`, ...(token ? { ContinuationToken: token } : {}) })));
    for (const c of res.Contents ?? []) if (c.Key?.endsWith('.db')) keys.push(c.Key);
    token = res.IsTruncated ? res.NextContinuationToken : undefined;
  } while (token);
  return keys
    .sort()
    .reverse()
    .map((key) => ({ key, takenAtMs: parseBackupTime(key) }));
}

/** `…/etcd-20261201T101500123Z.db` → its time in ms. */
export function parseBackupTime(key: string): number {
  const m = /etcd-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z\.db$/.exec(key);
  if (!m) return Number.NaN;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), Number(m[7]));
}

async function applyRetention(s3: S3Client, bucket: string, prefix: string, retain: number): Promise<{ deleted: string[]; oldestKeptMs: number | undefined }> {
  const all = await listBackups(s3, bucket, prefix);
  const kept = all.slice(0, retain);
  const gone = all.slice(retain).map((b) => b.key);
  await deleteKeys(
    s3,
    bucket,
    gone.flatMap((k) => [k, k.replace(/\.db$/, '.json')]),
  );
  return { deleted: gone, oldestKeptMs: kept[kept.length - 1]?.takenAtMs };
}

/** Journal entries no kept backup needs are older than the oldest backup by more than this margin (clock skew). */
export const JOURNAL_MARGIN_MS = 10 * 60_000;

/**
 * Deletes acceptance entries of jobs created, and finished entries written, more than the margin
 * before the oldest kept backup: every backup still kept holds those jobs as they were.
 */
async function pruneJournal(s3: S3Client, bucket: string, prefix: string, oldestKeptMs: number): Promise<number> {
  if (!prefix) return 0;
  const before = oldestKeptMs - JOURNAL_MARGIN_MS;
  const doomed: string[] = [];
  for (const sub of ['accepted/', 'finished/']) {
    let token: string | undefined;
    do {
      const res = await s3Send('ListObjectsV2', () => s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}${sub}`, ...(token ? { ContinuationToken: token } : {}) })));
      for (const c of res.Contents ?? []) {
        const id = c.Key?.slice(`${prefix}${sub}`.length).replace(/\.json$/, '') ?? '';
        const at = sub === 'accepted/' ? jobIdTime(id) : (c.LastModified?.getTime() ?? Number.NaN);
        if (c.Key && at < before) doomed.push(c.Key);
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  }
  await deleteKeys(s3, bucket, doomed);
  return doomed.length;
}

/** Creation time of a job id (`j` + base-36 ms, 9 digits, + random hex); NaN for other ids. */
export function jobIdTime(id: string): number {
  const m = /^j([0-9a-z]{9})/.exec(id);
  return m ? parseInt(m[1]!, 36) : Number.NaN;
}

/** The smallest job id created at or after `ms` sorts after this string. */
export function jobIdFloor(ms: number): string {
  return `j${Math.max(0, ms).toString(36).padStart(9, '0')}`;
}

async function deleteKeys(s3: S3Client, bucket: string, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000);
    if (batch.length > 0) await s3Send('DeleteObjects', () => s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })));
  }
}
