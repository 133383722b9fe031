import { readFile } from 'node:fs/promises';
import { AppError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { ScaleProvider } from './autoscaler.js';
import type { NodePool } from './autoscaler-policy.js';

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
  /** Replicas asked of each pool's Deployment (pods are named `<deployment>-…`). */
  private poolWanted = new Map<string, number>();

  constructor(
    private readonly s: KubernetesSettings,
    private readonly log: Logger,
  ) {}

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

  private scalePath(deployment = this.s.deployment): string {
    return `/apis/apps/v1/namespaces/${encodeURIComponent(this.s.namespace)}/deployments/${encodeURIComponent(deployment)}/scale`;
  }

  async replicas(deployment = this.s.deployment): Promise<number> {
    const scale = (await this.call('GET', this.scalePath(deployment))) as { spec?: { replicas?: number } };
    return scale.spec?.replicas ?? 0;
  }

  private async setReplicas(n: number, deployment = this.s.deployment): Promise<void> {
    await this.call('PATCH', this.scalePath(deployment), { spec: { replicas: n } });
    if (deployment === this.s.deployment) this.wanted = n;
    else this.poolWanted.set(deployment, n);
    this.log.info({ deployment, replicas: n }, 'scaled the node-agent deployment');
  }

  /** The pool Deployment a pod belongs to (by name prefix), or undefined for the main one. */
  private poolOf(pod: string): string | undefined {
    return [...this.poolWanted.keys()].find((d) => pod.startsWith(`${d}-`));
  }

  async scaleUp(count: number, pool?: NodePool): Promise<void> {
    const deployment = pool?.deployment ?? this.s.deployment;
    await this.setReplicas((await this.replicas(deployment)) + count, deployment);
  }

  async scaleDown(nodeIds: string[]): Promise<void> {
    const byDeployment = new Map<string, number>();
    for (const pod of nodeIds) {
      await this.call('PATCH', `/api/v1/namespaces/${encodeURIComponent(this.s.namespace)}/pods/${encodeURIComponent(pod)}`, {
        metadata: { annotations: { [DELETION_COST]: '-1000' } },
      });
      const d = this.poolOf(pod) ?? this.s.deployment;
      byDeployment.set(d, (byDeployment.get(d) ?? 0) + 1);
    }
    for (const [d, n] of byDeployment) await this.setReplicas(Math.max(0, (await this.replicas(d)) - n), d);
  }

  pending(registered: ReadonlySet<string>): number {
    let pending = 0;
    let inPools = 0;
    for (const [d, wanted] of this.poolWanted) {
      const have = [...registered].filter((id) => id.startsWith(`${d}-`)).length;
      inPools += have;
      pending += Math.max(0, wanted - have);
    }
    return pending + (this.wanted === undefined ? 0 : Math.max(0, this.wanted - (registered.size - inPools)));
  }

  async close(): Promise<void> {}
}
