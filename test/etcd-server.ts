import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { createEtcd } from '../common/etcd.js';
import { freePort } from '../deploy/ports.js';
import { waitFor } from '../deploy/local-cluster.js';

export interface EtcdServer {
  endpoint: string;
  /** A client built the way every Tessera process builds one (deadlines, retries). */
  client: Etcd3;
  /** kill -9 and start again on the same data dir and ports. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** One real etcd member (the system binary) on free loopback ports, in a temp data dir. */
export async function startEtcdServer(): Promise<EtcdServer> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-etcd-'));
  const [client, peer] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${client}`;
  const args = [
    '--name',
    'e0',
    '--data-dir',
    join(dir, 'data'),
    '--listen-client-urls',
    endpoint,
    '--advertise-client-urls',
    endpoint,
    '--listen-peer-urls',
    `http://127.0.0.1:${peer}`,
    '--initial-advertise-peer-urls',
    `http://127.0.0.1:${peer}`,
    '--initial-cluster',
    `e0=http://127.0.0.1:${peer}`,
    '--log-level',
    'warn',
  ];
  const launch = (): { kill: (sig: NodeJS.Signals) => void; exited: Promise<void> } => {
    const proc = spawn('etcd', args, { stdio: 'ignore' });
    return { kill: (sig) => proc.kill(sig), exited: new Promise<void>((resolve) => proc.once('exit', () => resolve())) };
  };
  let proc = launch();
  const etcd = createEtcd({ endpoints: [endpoint], callTimeoutMs: 5_000 });
  const healthy = (): Promise<void> =>
    waitFor(
      async () => {
        try {
          await etcd.get('health').string();
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      'etcd',
    );
  await healthy();
  return {
    endpoint,
    client: etcd,
    async restart() {
      proc.kill('SIGKILL');
      await proc.exited;
      proc = launch();
      await healthy();
    },
    async stop() {
      etcd.close();
      proc.kill('SIGTERM');
      await proc.exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Keys under a prefix, counted by etcd (count-only range: no key or value is transferred). */
export function keyCount(etcd: Etcd3, prefix: string): Promise<number> {
  return etcd.getAll().prefix(prefix).count();
}

/**
 * The database size a fair comparison needs: compact to the current revision (drop old
 * versions), defragment (give freed pages back to the file), then the member's status.
 * (etcd3's status response does not carry dbSizeInUse, hence the defragmentation.)
 */
export async function dbSize(etcd: Etcd3): Promise<{ bytes: number; revision: number }> {
  const rev = (await etcd.maintenance.status()).header.revision;
  await etcd.kv.compact({ revision: rev, physical: true });
  await etcd.maintenance.defragment();
  const st = await etcd.maintenance.status();
  return { bytes: Number(st.dbSize), revision: Number(rev) };
}
