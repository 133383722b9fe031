/**
 * Issues one certificate from a local CA directory (created on first use), for deployments
 * without cert-manager (Docker Compose's `tls-init` step and its node agents):
 *
 *   node --import tsx deploy/certs-main.ts <ca-dir> <file> <role> <dns-name>[,<dns-name>...] [<ip>[,<ip>...]]
 *
 * writes <ca-dir>/<file>.crt and .key (0600), the subject's OU being the role (coordinator, node,
 * uploader, client) and the DNS names its identity. Exits 2 with a one-line reason on bad input.
 */
import { LocalCa } from './certs.js';

const ROLES = new Set(['coordinator', 'node', 'uploader', 'client']);

export async function issueFromArgs(argv: readonly string[]): Promise<string> {
  const [dir, file, role, names, ips] = argv;
  if (!dir || !file || !role || !names) throw new Error('usage: certs-main.ts <ca-dir> <file> <role> <dns-name>[,...] [<ip>[,...]]');
  if (!ROLES.has(role)) throw new Error(`role must be one of ${[...ROLES].join(', ')}, got "${role}"`);
  const ca = await LocalCa.open(dir);
  const out = await ca.issue(file, { role: role as 'coordinator', names: names.split(',').filter(Boolean), ...(ips ? { ips: ips.split(',').filter(Boolean) } : {}) });
  return out.cert;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  issueFromArgs(process.argv.slice(2)).then(
    (cert) => process.stdout.write(`issued ${cert}\n`),
    (err: unknown) => {
      process.stderr.write(`certs-main: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(2);
    },
  );
}
