import type { MethodPolicy } from './auth.js';

const SUBMIT = new Set(['SubmitJob', 'UploadAndSubmit', 'CancelJob']);

/**
 * What the coordinator's methods require: JobService calls need the submit scope (submit,
 * upload, cancel) or the read scope; Admin calls the admin scope. With mutual TLS the caller's
 * certificate must be a client's or a coordinator's (a node or uploader certificate may not
 * drive jobs). Health and reflection stay open (load balancers and probes).
 */
export function coordinatorPolicy(path: string): MethodPolicy | undefined {
  const [, service, method = ''] = path.split('/');
  const roles = ['client', 'coordinator'] as const;
  if (service === 'tessera.v1.JobService') return { scope: SUBMIT.has(method) ? 'submit' : 'read', roles };
  if (service === 'tessera.v1.Admin') return { scope: 'admin', roles };
  return undefined;
}

/** Node agents take segment calls only from coordinators. */
export function nodeAgentPolicy(path: string): MethodPolicy | undefined {
  return path.startsWith('/tessera.v1.NodeAgent/') ? { roles: ['coordinator'] } : undefined;
}

/**
 * Uploaders take parts from node agents (and the audio from coordinators: the service checks which
 * part each may send, and that a video part comes from its segment's owner) and Finalize/Cleanup
 * from coordinators only: a node certificate may not publish or delete a job's output.
 */
export function uploaderPolicy(path: string): MethodPolicy | undefined {
  if (!path.startsWith('/tessera.v1.Uploader/')) return undefined;
  return path === '/tessera.v1.Uploader/PutPart' ? { roles: ['node', 'coordinator'] } : { roles: ['coordinator'] };
}
