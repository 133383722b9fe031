import { Counter, Gauge, type Registry } from 'prom-client';

/** The coordinator's Prometheus metrics. */
export function coordinatorMetrics(registry: Registry) {
  return {
    jobs: new Gauge({ name: 'tessera_jobs', help: 'Jobs by state (as last listed)', labelNames: ['state'], registers: [registry] }),
    jobsSubmitted: new Counter({ name: 'tessera_jobs_submitted_total', help: 'Jobs accepted', registers: [registry] }),
    segmentsInFlight: new Gauge({ name: 'tessera_segments_in_flight', help: 'Segments dispatched and not yet done', registers: [registry] }),
    nodes: new Gauge({ name: 'tessera_nodes', help: 'Registered node agents by state', labelNames: ['state'], registers: [registry] }),
    queueDepth: new Gauge({ name: 'tessera_queue_depth', help: 'Jobs waiting in the queue', registers: [registry] }),
    bytesStreamed: new Counter({ name: 'tessera_segment_bytes_streamed_total', help: 'Segment bytes sent to node agents', registers: [registry] }),
    handoffs: new Counter({
      name: 'tessera_local_handoffs_total',
      help: 'Files handed to a co-located receiver by path instead of streamed (LOCAL_HANDOFF), by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
    uploadBytes: new Counter({ name: 'tessera_upload_bytes_received_total', help: 'Bytes of client uploads received (resumed uploads count only what was sent again)', registers: [registry] }),
    uploadPartsStored: new Counter({ name: 'tessera_upload_parts_stored_total', help: 'S3 multipart parts of client uploads stored', registers: [registry] }),
    retries: new Counter({ name: 'tessera_retries_total', help: 'Retries by kind', labelNames: ['kind'], registers: [registry] }),
    segmentsReattached: new Counter({ name: 'tessera_segments_reattached_total', help: 'Segments a new leader re-attached to on their nodes instead of reassigning them', registers: [registry] }),
    chunksDuplicated: new Counter({
      name: 'tessera_chunks_duplicated_total',
      help: "Copies of a straggler's running chunk started on an idle node (the first recorded done wins)",
      registers: [registry],
    }),
    chunksStolen: new Counter({ name: 'tessera_chunks_stolen_total', help: 'Queued chunks moved from a busy node to an idle one (work stealing)', registers: [registry] }),
    fencingRejections: new Counter({ name: 'tessera_fencing_rejections_total', help: 'Writes refused because this coordinator lost leadership', registers: [registry] }),
    framesDone: new Counter({ name: 'tessera_transcode_frames_total', help: 'Source frames reported transcoded by nodes', registers: [registry] }),
    isLeader: new Gauge({ name: 'tessera_coordinator_leader', help: '1 while this coordinator leads', registers: [registry] }),
    autoscalerDecisions: new Counter({ name: 'tessera_autoscaler_decisions_total', help: 'Autoscaler decisions by action', labelNames: ['action'], registers: [registry] }),
  };
}

export type CoordinatorMetrics = ReturnType<typeof coordinatorMetrics>;
