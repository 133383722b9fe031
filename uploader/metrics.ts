import { Counter, Gauge, type Registry } from 'prom-client';

/** The uploader's Prometheus metrics. */
export function uploaderMetrics(registry: Registry) {
  return {
    partBytes: new Counter({ name: 'tessera_part_bytes_received_total', help: 'Rendition part bytes received', registers: [registry] }),
    uploadBytes: new Gauge({ name: 'tessera_upload_bytes_in_progress', help: 'Bytes of the current archive already in S3', registers: [registry] }),
    uploadedTotal: new Counter({ name: 'tessera_upload_bytes_total', help: 'Archive bytes uploaded to S3', registers: [registry] }),
    fencedParts: new Counter({ name: 'tessera_parts_fenced_total', help: 'Parts refused because their attempt no longer owns the segment', registers: [registry] }),
  };
}

export type UploaderMetrics = ReturnType<typeof uploaderMetrics>;
