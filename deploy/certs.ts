import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PeerRole } from '../common/tls.js';

const run = promisify(execFile);

/** Files of one issued certificate. */
export interface CertFiles {
  ca: string;
  cert: string;
  key: string;
}

/** What a certificate is for: its role (subject OU), DNS names (the first is the CN) and IPs. */
export interface CertSubject {
  role: PeerRole | 'etcd' | 's3';
  names: string[];
  ips?: string[];
}

const NAME = /^[A-Za-z0-9_.-]{1,63}$/;

/**
 * A local certificate authority for `tessera up --tls` and the TLS tests: ECDSA P-256 keys made
 * with the system `openssl`, certificates valid 825 days, every leaf usable as TLS server and
 * client (mutual TLS). Keys are written 0600.
 */
export class LocalCa {
  private constructor(readonly dir: string) {}

  get caCert(): string {
    return join(this.dir, 'ca.crt');
  }

  private get caKey(): string {
    return join(this.dir, 'ca.key');
  }

  /** Opens the CA in `dir`, creating it when absent. */
  static async open(dir: string): Promise<LocalCa> {
    const ca = new LocalCa(dir);
    if (existsSync(ca.caCert) && existsSync(ca.caKey)) return ca;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      ca.caKey,
      '-out',
      ca.caCert,
      '-days',
      '825',
      '-subj',
      '/O=Tessera/CN=Tessera local CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    await chmod(ca.caKey, 0o600);
    return ca;
  }

  /** Issues (or re-issues) `<file>.crt/.key` for a subject. */
  async issue(file: string, s: CertSubject): Promise<CertFiles> {
    if (!NAME.test(file) || s.names.length === 0 || !s.names.every((n) => NAME.test(n))) throw new Error(`invalid certificate name: ${JSON.stringify([file, ...s.names])}`);
    const key = join(this.dir, `${file}.key`);
    const cert = join(this.dir, `${file}.crt`);
    const csr = join(this.dir, `${file}.csr`);
    const ext = join(this.dir, `${file}.ext`);
    const alt = [...s.names.map((n) => `DNS:${n}`), ...(s.ips ?? []).map((ip) => `IP:${ip}`)].join(',');
    await writeFile(
      ext,
      ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth,clientAuth', `subjectAltName=${alt}`, ''].join('\n'),
    );
    try {
      await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/O=Tessera/OU=${s.role}/CN=${s.names[0]}`]);
      await chmod(key, 0o600);
      await openssl([
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        this.caCert,
        '-CAkey',
        this.caKey,
        '-set_serial',
        `0x${randomBytes(12).toString('hex')}`,
        '-days',
        '825',
        '-sha256',
        '-extfile',
        ext,
        '-out',
        cert,
      ]);
    } finally {
      await rm(csr, { force: true });
      await rm(ext, { force: true });
    }
    return { ca: this.caCert, cert, key };
  }
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 30_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('openssl is needed to generate certificates (apt-get install -y openssl)');
    throw new Error(
      `openssl ${args[0]} failed: ${String(e.stderr ?? e.message)
        .trim()
        .slice(0, 500)}`,
    );
  }
}

/** The environment that points a Tessera process at its certificate (gRPC and etcd TLS). */
export function tlsEnv(f: CertFiles): Record<string, string> {
  return {
    TLS_CA_FILE: f.ca,
    TLS_CERT_FILE: f.cert,
    TLS_KEY_FILE: f.key,
    ETCD_TLS_CA_FILE: f.ca,
    ETCD_TLS_CERT_FILE: f.cert,
    ETCD_TLS_KEY_FILE: f.key,
    S3_CA_FILE: f.ca,
  };
}
