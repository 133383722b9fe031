import { readFile } from 'node:fs/promises';
import { AppError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ScaleProvider } from './autoscaler.js';

export interface KubernetesSettings {
  /** API server base URL, e.g. https://kubernetes.default.svc */
  apiUrl: string;
  namespace: string;
  deployment: string;
  /** Bearer token (in a pod: the service account token file). */
  token: string;
  timeoutMs: number;
  /** fetch implementation (a pod passes one trusting the cluster CA). */
  fetch?: typeof fetch;
}

/** Reads in-cluster settings: the service account token and the API server from the environment. */
export async function inClusterSettings(namespace: string, deployment: string, host: string, port: string): Promise<KubernetesSettings> {
  const token = (await readFile('/var/run/secrets/kubernetes.io/serviceaccount/token', 'utf8')).trim();
  return { apiUrl: `https://${host}:${port}`, namespace, deployment, token, timeoutMs: 10_000 };
}

/** The pod-deletion-cost annotation: the ReplicaSet removes the lowest-cost pod first. */
export const DELETION_COST = 'controller.kubernetes.io/pod-deletion-cost';

/**
 * The `kubernetes` provider: scales the node-agent Deployment through its scale subresource.
 * Scale-down first marks each drained pod with the lowest pod-deletion cost, so when the replica
 * count drops the ReplicaSet deletes exactly those pods and never a busy one. Node ids are pod
 * names (NODE_ID from the downward API).
 */
export class KubernetesScaleProvider implements ScaleProvider {
  readonly name = 'kubernetes';
  private wanted: number | undefined;

  constructor(private readonly s: KubernetesSettings, private readonly log: Logger) {}

  private async call(method: string, path: string, body?: unknown, contentType = 'application/merge-patch+json'): Promise<unknown> {
    const f = this.s.fetch ?? fetch;
    const res = await f(`${this.s.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.s.token}`, accept: 'application/json', ...(body ? { 'content-type': contentType } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(this.s.timeoutMs),
    });
    if (!res.ok) throw new AppError(res.status >= 500 ? 'UNAVAILABLE' : 'FAILED_PRECONDITION', `kubernetes ${method} ${path} answered ${res.status}`);
    return res.json();
  }

  private scalePath(): string {
    return `/apis/apps/v1/namespaces/${encodeURIComponent(this.s.namespace)}/deployments/${encodeURIComponent(this.s.deployment)}/scale`;
  }

  async replicas(): Promise<number> {
    const scale = (await this.call('GET', this.scalePath())) as { spec?: { replicas?: number } };
    return scale.spec?.replicas ?? 0;
  }

  private async setReplicas(n: number): Promise<void> {
    await this.call('PATCH', this.scalePath(), { spec: { replicas: n } });
    this.wanted = n;
    this.log.info({ deployment: this.s.deployment, replicas: n }, 'scaled the node-agent deployment');
  }

  async scaleUp(count: number): Promise<void> {
    await this.setReplicas((await this.replicas()) + count);
  }

  async scaleDown(nodeIds: string[]): Promise<void> {
    for (const pod of nodeIds) {
      await this.call('PATCH', `/api/v1/namespaces/${encodeURIComponent(this.s.namespace)}/pods/${encodeURIComponent(pod)}`, {
        metadata: { annotations: { [DELETION_COST]: '-1000' } },
      });
    }
    await this.setReplicas(Math.max(0, (await this.replicas()) - nodeIds.length));
  }

  pending(registered: ReadonlySet<string>): number {
    return this.wanted === undefined ? 0 : Math.max(0, this.wanted - registered.size);
  }

  async close(): Promise<void> {}
}
