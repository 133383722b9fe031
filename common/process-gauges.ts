import { X509Certificate } from 'node:crypto';
import { readFileSync, statfsSync } from 'node:fs';
import { Gauge, type Registry } from 'prom-client';

/** What the process-level operational gauges read: its TLS certificate and its staging disk. */
export interface ProcessGaugeSources {
  certFile?: string | undefined;
  stagingDir?: string | undefined;
}

let sources: ProcessGaugeSources = {};

/**
 * Called once by bootProcess with the process's config, so every role's registry gets these
 * gauges without its main wiring them (alert rules: disk nearly full, certificate expiry).
 */
export function setProcessGaugeSources(s: ProcessGaugeSources): void {
  sources = { ...s };
}

/**
 * Registers, on every process's registry:
 * - `tessera_tls_cert_expiry_timestamp_seconds`: notAfter of the TLS_CERT_FILE certificate,
 *   read at scrape time (a rotated file is seen at the next scrape); absent without TLS.
 * - `tessera_staging_free_ratio` and `tessera_staging_free_bytes`: free space (for an
 *   unprivileged user) on the filesystem of STAGING_DIR, read with statfs at scrape time.
 */
export function registerProcessGauges(registry: Registry, s: ProcessGaugeSources = sources): void {
  new Gauge({
    name: 'tessera_tls_cert_expiry_timestamp_seconds',
    help: "Expiry (notAfter) of this process's TLS certificate, Unix seconds; absent without TLS",
    registers: [registry],
    collect() {
      this.reset();
      const at = certExpirySeconds(s.certFile);
      if (at !== undefined) this.set(at);
    },
  });
  const disk = (): { free: number; ratio: number } | undefined => stagingFree(s.stagingDir);
  new Gauge({
    name: 'tessera_staging_free_ratio',
    help: 'Free share (0..1) of the filesystem that holds STAGING_DIR',
    registers: [registry],
    collect() {
      this.reset();
      const d = disk();
      if (d) this.set(d.ratio);
    },
  });
  new Gauge({
    name: 'tessera_staging_free_bytes',
    help: 'Free bytes on the filesystem that holds STAGING_DIR',
    registers: [registry],
    collect() {
      this.reset();
      const d = disk();
      if (d) this.set(d.free);
    },
  });
}

/** notAfter of a PEM certificate file in Unix seconds; undefined when unset or unreadable. */
export function certExpirySeconds(file: string | undefined): number | undefined {
  if (!file) return undefined;
  try {
    return Math.floor(Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000);
  } catch {
    return undefined;
  }
}

/** Free bytes and free share of the filesystem holding `dir` (its nearest existing ancestor). */
export function stagingFree(dir: string | undefined): { free: number; ratio: number } | undefined {
  if (!dir) return undefined;
  for (let d = dir; ;) {
    try {
      const st = statfsSync(d);
      return st.blocks > 0 ? { free: st.bavail * st.bsize, ratio: st.bavail / st.blocks } : undefined;
    } catch {
      const up = d.replace(/\/[^/]*\/?$/, '');
      if (up === d || up === '') {
        if (d === '/') return undefined;
        d = '/';
      } else d = up;
    }
  }
}
