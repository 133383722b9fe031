import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The node agent's Prometheus metrics. */
export function agentMetrics(registry: Registry) {
  return {
    transcodeSeconds: new Histogram({
      name: 'tessera_transcode_seconds',
      help: 'Wall time of one sub-segment transcode (all renditions), s',
      buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300],
      registers: [registry],
    }),
    framesTotal: new Counter({ name: 'tessera_transcode_frames_total', help: 'Source frames transcoded (all renditions at once)', registers: [registry] }),
    bytesStreamed: new Counter({ name: 'tessera_segment_bytes_streamed_total', help: 'Segment bytes received over gRPC', registers: [registry] }),
    handoffs: new Counter({
      name: 'tessera_local_handoffs_total',
      help: 'Files handed to a co-located receiver by path instead of streamed (LOCAL_HANDOFF), by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
    retries: new Counter({ name: 'tessera_retries_total', help: 'Retries by kind', labelNames: ['kind'], registers: [registry] }),
    fencingRejections: new Counter({ name: 'tessera_fencing_rejections_total', help: 'Writes rejected because the segment was reassigned', registers: [registry] }),
    busySlots: new Gauge({ name: 'tessera_node_busy_slots', help: 'Worker slots running ffmpeg', registers: [registry] }),
    segmentsInFlight: new Gauge({ name: 'tessera_segments_in_flight', help: 'Segments held by this node', registers: [registry] }),
    stagingFull: new Gauge({ name: 'tessera_node_staging_full', help: '1 while the staging disk is full and the node takes no new work (not-ready)', registers: [registry] }),
    stagingFreeBytes: new Gauge({ name: 'tessera_node_staging_free_bytes', help: 'Free bytes on the staging disk', registers: [registry] }),
  };
}

export type AgentMetrics = ReturnType<typeof agentMetrics>;
