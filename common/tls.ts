import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { credentials, ServerCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { AppError } from './errors.js';

/**
 * Roles a Tessera certificate can carry, in its subject's OU. Servers check the caller's role:
 * node agents take calls only from coordinators, uploaders from node agents and coordinators.
 */
export type PeerRole = 'coordinator' | 'node' | 'uploader' | 'client';

/** PEM material of one process: the cluster CA, its own certificate chain and key. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Reads the three PEM files; all three or none (undefined: plaintext). */
export function loadTls(files: { caFile?: string | undefined; certFile?: string | undefined; keyFile?: string | undefined }, what = 'TLS'): TlsMaterial | undefined {
  const given = [files.caFile, files.certFile, files.keyFile].filter((f) => f !== undefined && f !== '');
  if (given.length === 0) return undefined;
  if (given.length !== 3) throw new AppError('INVALID_ARGUMENT', `${what}: set the CA, certificate and key files together`);
  const read = (f: string): Buffer => {
    try {
      return readFileSync(f);
    } catch (err) {
      throw new AppError('INVALID_ARGUMENT', `${what}: cannot read ${f}`, { cause: err });
    }
  };
  return { ca: read(files.caFile!), cert: read(files.certFile!), key: read(files.keyFile!) };
}

/**
 * Server credentials: plaintext without material; otherwise TLS with the cluster CA, and with
 * `requireClientCert` (mutual TLS) every caller must present a certificate the CA signed.
 */
export function serverCredentials(tls: TlsMaterial | undefined, requireClientCert = true): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(tls.ca, [{ cert_chain: tls.cert, private_key: tls.key }], requireClientCert);
}

/** Channel credentials: plaintext without material; otherwise TLS trusting the cluster CA and presenting our certificate. */
export function channelCredentials(tls: TlsMaterial | undefined): ChannelCredentials {
  if (!tls) return credentials.createInsecure();
  return credentials.createSsl(tls.ca, tls.key, tls.cert);
}

/**
 * Channel options that make TLS verify the server's certificate names `identity` (a node id, an
 * uploader id) rather than the host it is dialled at: a node agent whose certificate was issued
 * for another node id fails the handshake.
 */
export function identityOptions(identity: string | undefined): Record<string, string> {
  return identity === undefined ? {} : { 'grpc.ssl_target_name_override': identity, 'grpc.default_authority': identity };
}

/** True when the certificate (PEM) is valid for `identity` (its DNS names, as TLS checks them). */
export function certNames(certPem: Buffer | string, identity: string): boolean {
  const x = new X509Certificate(certPem);
  return x.checkHost(identity, { subject: 'never' }) !== undefined;
}

/** Logs an error when this process's certificate does not name its id: its peers will refuse it. */
export function checkOwnCertificate(tls: TlsMaterial | undefined, id: string, log: { error(o: object, msg: string): void }): void {
  if (tls && !certNames(tls.cert, id)) log.error({ id, cert: describeCert(tls.cert) }, `the TLS certificate does not name ${id}: its peers will refuse this process`);
}

/** The subject fields and alt names of a PEM certificate (for logs and the agent's self-check). */
export function describeCert(certPem: Buffer | string): { subject: string; altNames: string; notAfter: string } {
  const x = new X509Certificate(certPem);
  return { subject: x.subject.replace(/\n/g, ', '), altNames: x.subjectAltName ?? '', notAfter: x.validTo };
}

function field(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** The role (subject OU) of a peer certificate, if it carries a known one. */
export function peerRole(cert: PeerCertificate | undefined): PeerRole | undefined {
  const ous = field(cert?.subject?.OU as string | string[] | undefined);
  return ous.find((o): o is PeerRole => o === 'coordinator' || o === 'node' || o === 'uploader' || o === 'client');
}

/** The DNS names a peer certificate carries (its subject alt names): a Tessera process's id. */
export function peerNames(cert: PeerCertificate | undefined): string[] {
  const alt = (cert as { subjectaltname?: string } | undefined)?.subjectaltname ?? '';
  return alt
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.startsWith('DNS:'))
    .map((x) => x.slice(4));
}

/** Who called (mutual TLS): the certificate's role and names; undefined without a client certificate. */
export function callerOf(call: { getAuthContext?: () => { sslPeerCertificate?: PeerCertificate } }): { role: PeerRole | undefined; names: string[] } | undefined {
  const cert = call.getAuthContext?.().sslPeerCertificate;
  if (!cert || Object.keys(cert).length === 0) return undefined;
  return { role: peerRole(cert), names: peerNames(cert) };
}
