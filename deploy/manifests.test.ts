/**
 * Static validation of the deployment artefacts: the Dockerfile, deploy/compose.yaml,
 * deploy/k8s/*.yaml, the Grafana dashboard, log shipping (Loki + Alloy) and docs/deploy.md. No Docker engine or cluster
 * is involved: every file is parsed and checked against zod schemas for the subset of the
 * Compose spec and the Kubernetes API these files use, then cross-checked (selectors match
 * pods, ports and env references resolve, RBAC is exactly what the autoscaler needs, ...).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';

const DEPLOY = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(DEPLOY, '..');
const K8S = join(DEPLOY, 'k8s');
const NAMESPACE = 'tessera';

const read = (path: string): string => readFileSync(path, 'utf8');

// ---------------------------------------------------------------------------------------
// What the processes need (the contract the manifests must satisfy)
// ---------------------------------------------------------------------------------------

type Role = 'coordinator' | 'node-agent' | 'uploader';

/** The script each role runs: `node --import tsx <script>`. */
const ROLE_SCRIPT: Record<Role, string> = {
  coordinator: 'coordinator/main.ts',
  'node-agent': 'node-agent/main.ts',
  uploader: 'uploader/main.ts',
};
const ROLE_BY_SCRIPT = new Map<string, Role>((Object.entries(ROLE_SCRIPT) as [Role, string][]).map(([role, script]) => [script, role]));

const S3_ENV = ['S3_ENDPOINT', 'S3_REGION', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'S3_BUCKET', 'S3_FORCE_PATH_STYLE'];
/** Every process: etcd, where to listen (the default BIND_HOST is 127.0.0.1, useless in a container), shutdown budget. */
const COMMON_ENV = ['ETCD_ENDPOINTS', 'ETCD_PREFIX', 'BIND_HOST', 'GRPC_PORT', 'METRICS_PORT', 'STAGING_DIR', 'SHUTDOWN_GRACE_MS'];

/** Variables each role must receive. */
const REQUIRED_ENV: Record<Role, string[]> = {
  coordinator: [...COMMON_ENV, ...S3_ENV, 'INPUT_ROOT', 'AUTOSCALER', 'API_TOKENS', 'ADMIN_TOKENS'],
  'node-agent': [...COMMON_ENV, 'NODE_ID', 'ADVERTISE_ADDRESS', 'WORKER_SLOTS', 'LEASE_TTL_SEC', 'DRAIN_TIMEOUT_MS'],
  uploader: [...COMMON_ENV, ...S3_ENV, 'ADVERTISE_ADDRESS'],
};
/**
 * Variables the manifests set that the processes' config schemas (<role>/config.ts) do not
 * read: deployment-only helpers (POD_IP feeds $(POD_IP) in ADVERTISE_ADDRESS; TLS_SELF_ISSUE is
 * read by deploy/docker/replica-env.sh). Anything else a manifest sets must be a variable the
 * process actually reads, and an entry no manifest needs any more fails the test below.
 */
const NOT_IN_CONFIG_SCHEMA = new Set(['POD_IP', 'TLS_SELF_ISSUE']);
/** Extra variables the coordinator needs when AUTOSCALER=kubernetes. */
const K8S_AUTOSCALER_ENV = ['K8S_NAMESPACE', 'K8S_NODE_DEPLOYMENT', 'AUTOSCALER_MIN_NODES', 'AUTOSCALER_MAX_NODES'];
const SECRET_ENV = new Set(['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'API_TOKENS', 'ADMIN_TOKENS', 'WEBHOOK_SECRET']);
const DEFAULT_PORTS: Record<Role, { grpc: number; metrics: number }> = {
  coordinator: { grpc: 7400, metrics: 9400 },
  'node-agent': { grpc: 7500, metrics: 9500 },
  uploader: { grpc: 7600, metrics: 9600 },
};
/** A node agent's drain (finish or hand back segments, revoke the lease) gets this long. */
const DRAIN_SECONDS = 300;
/** Time a process needs after its own grace timer fires, or a drain after DRAIN_TIMEOUT_MS, ms. */
const SHUTDOWN_MARGIN_MS = 5_000;
const HANDBACK_MARGIN_MS = 15_000;

/** Loads `<role>/config.ts` and returns its `loadConfig(env)`, the processes' only reader of the environment. */
async function roleConfigLoader(role: Role): Promise<(env: Record<string, string>) => Record<string, unknown>> {
  const path = join(ROOT, role, 'config.ts');
  expect(existsSync(path), `${role}/config.ts`).toBe(true);
  const mod = z.looseObject({ loadConfig: z.custom<(env: Record<string, string>) => unknown>((f) => typeof f === 'function') }).parse(await import(path));
  return (env) => z.record(z.string(), z.unknown()).parse(mod.loadConfig(env));
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

function isSubset(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

const QUANTITY_SUFFIX: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};
const QUANTITY_RE = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/;
function quantity(q: string): number {
  const m = QUANTITY_RE.exec(q);
  if (!m?.[1]) throw new Error(`bad quantity ${q}`);
  return Number(m[1]) * (QUANTITY_SUFFIX[m[2] ?? ''] ?? NaN);
}

/** Go-style duration as Compose writes it ("300s", "1m30s", "2h"), in seconds. */
function durationSeconds(d: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?$/.exec(d);
  if (!m || d === '') throw new Error(`bad duration ${d}`);
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

/** host:port pairs out of a comma-separated URL list. */
function urlHosts(list: string): { host: string; port: number; protocol: string }[] {
  return list.split(',').map((u) => {
    const url = new URL(u.trim());
    const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
    return { host: url.hostname, port, protocol: url.protocol };
  });
}

function yamlDocuments(path: string, merge: boolean): unknown[] {
  const docs = parseAllDocuments(read(path), { merge, uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`);
  const out: unknown[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors.map((e) => e.message).join('; ')}`);
    if (doc.warnings.length > 0) throw new Error(`${path}: ${doc.warnings.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Kubernetes schemas (the subset of the API these manifests use; strict: unknown fields
// are typos that `kubectl apply --validate=strict` would reject)
// ---------------------------------------------------------------------------------------

const DnsLabel = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS-1123 label');
const EnvName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'env var names are UPPER_SNAKE');
const Labels = z.record(z.string().min(1), z.string());
const Quantity = z.string().regex(QUANTITY_RE, 'must be a quoted quantity like "500m", "2", "1Gi"');
const IntOrPercent = z.union([z.number().int().min(0), z.string().regex(/^\d+%$/)]);
const PortNumber = z.number().int().min(1).max(65535);
const PortRef = z.union([PortNumber, z.string().min(1).max(15)]);

const ObjectMeta = z.strictObject({
  name: DnsLabel,
  namespace: z.literal(NAMESPACE).optional(),
  labels: Labels.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
const NamespacedMeta = ObjectMeta.extend({ namespace: z.literal(NAMESPACE) });
const LabelSelector = z.strictObject({ matchLabels: Labels.refine((l) => Object.keys(l).length > 0, 'empty selector') });

const KeyRef = z.strictObject({ name: DnsLabel, key: z.string().min(1) });
const EnvVar = z
  .strictObject({
    name: EnvName,
    value: z.string().optional(),
    valueFrom: z
      .union([
        z.strictObject({ fieldRef: z.strictObject({ fieldPath: z.enum(['metadata.name', 'metadata.namespace', 'status.podIP', 'spec.nodeName']) }) }),
        z.strictObject({ secretKeyRef: KeyRef }),
        z.strictObject({ configMapKeyRef: KeyRef }),
        z.strictObject({
          resourceFieldRef: z.strictObject({
            containerName: DnsLabel,
            resource: z.enum(['requests.cpu', 'limits.cpu', 'requests.memory', 'limits.memory']),
            divisor: Quantity.optional(),
          }),
        }),
      ])
      .optional(),
  })
  .refine((e) => (e.value === undefined) !== (e.valueFrom === undefined), 'exactly one of value / valueFrom');
const EnvFromSource = z.union([z.strictObject({ configMapRef: z.strictObject({ name: DnsLabel }) }), z.strictObject({ secretRef: z.strictObject({ name: DnsLabel }) })]);
const ContainerPort = z.strictObject({
  name: z.string().regex(/^[a-z0-9-]{1,15}$/),
  containerPort: PortNumber,
  protocol: z.literal('TCP').optional(),
});
/** Probes are HTTP: /healthz and /readyz on the metrics port (etcd: /livez, /readyz). */
const Probe = z.strictObject({
  httpGet: z.strictObject({ path: z.string().startsWith('/'), port: PortRef, scheme: z.literal('HTTP').optional() }),
  initialDelaySeconds: z.number().int().min(0).optional(),
  periodSeconds: z.number().int().min(1).optional(),
  timeoutSeconds: z.number().int().min(1).optional(),
  failureThreshold: z.number().int().min(1).optional(),
  successThreshold: z.literal(1).optional(),
});
const ResourceList = z.strictObject({ cpu: Quantity, memory: Quantity, 'ephemeral-storage': Quantity.optional() });
/** "restricted" Pod Security Standard, container level. */
const ContainerSecurityContext = z.strictObject({
  allowPrivilegeEscalation: z.literal(false),
  readOnlyRootFilesystem: z.boolean(),
  capabilities: z.strictObject({ drop: z.tuple([z.literal('ALL')]) }),
});
const Container = z.strictObject({
  name: DnsLabel,
  image: z
    .string()
    .regex(/^[a-z0-9./-]+(:[\w.-]+)?$/, 'image must be name[:tag]')
    .refine((i) => !i.endsWith(':latest'), 'no :latest'),
  imagePullPolicy: z.enum(['IfNotPresent', 'Always', 'Never']).optional(),
  command: z.array(z.string()).min(1).optional(),
  args: z.array(z.string()).min(1).optional(),
  ports: z.array(ContainerPort).min(1),
  envFrom: z.array(EnvFromSource).optional(),
  env: z.array(EnvVar).optional(),
  startupProbe: Probe.optional(),
  livenessProbe: Probe,
  readinessProbe: Probe,
  resources: z.strictObject({ requests: ResourceList, limits: ResourceList }),
  securityContext: ContainerSecurityContext,
  volumeMounts: z.array(z.strictObject({ name: DnsLabel, mountPath: z.string().startsWith('/'), readOnly: z.boolean().optional() })).optional(),
});
const Volume = z
  .strictObject({
    name: DnsLabel,
    emptyDir: z.strictObject({ sizeLimit: Quantity.optional(), medium: z.literal('Memory').optional() }).optional(),
    persistentVolumeClaim: z.strictObject({ claimName: DnsLabel, readOnly: z.boolean().optional() }).optional(),
    configMap: z.strictObject({ name: DnsLabel }).optional(),
    secret: z.strictObject({ secretName: DnsLabel }).optional(),
    /** cert-manager's csi-driver: a key pair per pod, requested when the pod starts (deploy/k8s/tls.yaml). */
    csi: z
      .strictObject({
        driver: z.literal('csi.cert-manager.io'),
        readOnly: z.literal(true),
        volumeAttributes: z.record(z.string().regex(/^csi\.cert-manager\.io\/[a-z-]+$/), z.string()),
      })
      .optional(),
  })
  .refine((v) => [v.emptyDir, v.persistentVolumeClaim, v.configMap, v.secret, v.csi].filter((s) => s !== undefined).length === 1, 'exactly one volume source');
/** "restricted" Pod Security Standard, pod level. */
const PodSecurityContext = z.strictObject({
  runAsNonRoot: z.literal(true),
  runAsUser: z.number().int().positive(),
  runAsGroup: z.number().int().positive(),
  fsGroup: z.number().int().positive(),
  seccompProfile: z.strictObject({ type: z.literal('RuntimeDefault') }),
});
const Affinity = z.strictObject({
  podAntiAffinity: z.strictObject({
    preferredDuringSchedulingIgnoredDuringExecution: z
      .array(
        z.strictObject({
          weight: z.number().int().min(1).max(100),
          podAffinityTerm: z.strictObject({ topologyKey: z.string().min(1), labelSelector: LabelSelector }),
        }),
      )
      .min(1),
  }),
});
const PodTemplate = z.strictObject({
  metadata: z.strictObject({ labels: Labels, annotations: z.record(z.string(), z.string()).optional() }),
  spec: z.strictObject({
    serviceAccountName: DnsLabel.optional(),
    automountServiceAccountToken: z.boolean(),
    terminationGracePeriodSeconds: z.number().int().min(0),
    securityContext: PodSecurityContext,
    affinity: Affinity.optional(),
    containers: z.array(Container).min(1),
    volumes: z.array(Volume).optional(),
  }),
});
const PvcSpec = z.strictObject({
  accessModes: z.array(z.enum(['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'])).min(1),
  storageClassName: z.string().optional(),
  resources: z.strictObject({ requests: z.strictObject({ storage: Quantity }) }),
});
const RollingUpdate = z.strictObject({ maxSurge: IntOrPercent, maxUnavailable: IntOrPercent });

const Namespace = z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('Namespace'), metadata: ObjectMeta });
const ConfigMap = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('ConfigMap'),
  metadata: NamespacedMeta,
  data: z.record(EnvName, z.string()),
});
const Secret = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Secret'),
  metadata: NamespacedMeta,
  type: z.literal('Opaque'),
  stringData: z.record(EnvName, z.string()),
});
const ServiceAccount = z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('ServiceAccount'), metadata: NamespacedMeta });
const PolicyRule = z.strictObject({
  apiGroups: z.array(z.string()).min(1),
  resources: z.array(z.string()).min(1),
  resourceNames: z.array(z.string()).min(1).optional(),
  verbs: z.array(z.enum(['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'])).min(1),
});
const Role = z.strictObject({
  apiVersion: z.literal('rbac.authorization.k8s.io/v1'),
  kind: z.literal('Role'),
  metadata: NamespacedMeta,
  rules: z.array(PolicyRule).min(1),
});
const RoleBinding = z.strictObject({
  apiVersion: z.literal('rbac.authorization.k8s.io/v1'),
  kind: z.literal('RoleBinding'),
  metadata: NamespacedMeta,
  roleRef: z.strictObject({ apiGroup: z.literal('rbac.authorization.k8s.io'), kind: z.literal('Role'), name: DnsLabel }),
  subjects: z.array(z.strictObject({ kind: z.literal('ServiceAccount'), name: DnsLabel, namespace: z.literal(NAMESPACE) })).min(1),
});
const Service = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Service'),
  metadata: NamespacedMeta,
  spec: z.strictObject({
    type: z.literal('ClusterIP').optional(),
    clusterIP: z.literal('None').optional(),
    publishNotReadyAddresses: z.boolean().optional(),
    selector: Labels,
    ports: z.array(z.strictObject({ name: z.string().regex(/^[a-z0-9-]{1,15}$/), port: PortNumber, targetPort: PortRef, protocol: z.literal('TCP').optional() })).min(1),
  }),
});
const PersistentVolumeClaim = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('PersistentVolumeClaim'),
  metadata: NamespacedMeta,
  spec: PvcSpec,
});
const Deployment = z.strictObject({
  apiVersion: z.literal('apps/v1'),
  kind: z.literal('Deployment'),
  metadata: NamespacedMeta,
  spec: z.strictObject({
    replicas: z.number().int().min(1).optional(),
    revisionHistoryLimit: z.number().int().min(0).optional(),
    strategy: z.strictObject({ type: z.literal('RollingUpdate'), rollingUpdate: RollingUpdate }).optional(),
    selector: LabelSelector,
    template: PodTemplate,
  }),
});
const StatefulSet = z.strictObject({
  apiVersion: z.literal('apps/v1'),
  kind: z.literal('StatefulSet'),
  metadata: NamespacedMeta,
  spec: z.strictObject({
    serviceName: DnsLabel,
    replicas: z.number().int().min(1),
    podManagementPolicy: z.enum(['OrderedReady', 'Parallel']).optional(),
    updateStrategy: z.strictObject({ type: z.enum(['RollingUpdate', 'OnDelete']) }).optional(),
    selector: LabelSelector,
    template: PodTemplate,
    volumeClaimTemplates: z.array(z.strictObject({ metadata: z.strictObject({ name: DnsLabel, labels: Labels.optional() }), spec: PvcSpec })).optional(),
  }),
});
const PodDisruptionBudget = z.strictObject({
  apiVersion: z.literal('policy/v1'),
  kind: z.literal('PodDisruptionBudget'),
  metadata: NamespacedMeta,
  spec: z
    .strictObject({ minAvailable: IntOrPercent.optional(), maxUnavailable: IntOrPercent.optional(), selector: LabelSelector })
    .refine((s) => (s.minAvailable === undefined) !== (s.maxUnavailable === undefined), 'exactly one of minAvailable / maxUnavailable'),
});

const IssuerRef = z.strictObject({ name: DnsLabel, kind: z.literal('Issuer'), group: z.literal('cert-manager.io') });
const Issuer = z.strictObject({
  apiVersion: z.literal('cert-manager.io/v1'),
  kind: z.literal('Issuer'),
  metadata: NamespacedMeta,
  spec: z.union([z.strictObject({ selfSigned: z.strictObject({}) }), z.strictObject({ ca: z.strictObject({ secretName: DnsLabel }) })]),
});
const Certificate = z.strictObject({
  apiVersion: z.literal('cert-manager.io/v1'),
  kind: z.literal('Certificate'),
  metadata: NamespacedMeta,
  spec: z.strictObject({
    isCA: z.boolean().optional(),
    commonName: z.string().min(1).max(64),
    dnsNames: z.array(z.string()).optional(),
    subject: z.strictObject({ organizationalUnits: z.array(z.string()) }).optional(),
    usages: z.array(z.enum(['digital signature', 'key encipherment', 'server auth', 'client auth', 'cert sign', 'crl sign'])).optional(),
    secretName: DnsLabel,
    duration: z.string().regex(/^\d+h$/),
    privateKey: z.strictObject({ algorithm: z.enum(['ECDSA', 'RSA', 'Ed25519']), size: z.number().int() }),
    issuerRef: IssuerRef,
  }),
});
const NetworkPolicyPeer = z.strictObject({ podSelector: LabelSelector.optional(), namespaceSelector: z.union([LabelSelector, z.strictObject({})]).optional() });
const NetworkPolicy = z.strictObject({
  apiVersion: z.literal('networking.k8s.io/v1'),
  kind: z.literal('NetworkPolicy'),
  metadata: NamespacedMeta,
  spec: z.strictObject({
    podSelector: z.union([LabelSelector, z.strictObject({})]),
    policyTypes: z.array(z.enum(['Ingress', 'Egress'])).min(1),
    ingress: z.array(z.strictObject({ from: z.array(NetworkPolicyPeer).min(1).optional(), ports: z.array(z.strictObject({ port: PortNumber, protocol: z.literal('TCP') })).min(1) })).optional(),
  }),
});

const KubeObject = z.discriminatedUnion('kind', [
  Namespace,
  ConfigMap,
  Secret,
  ServiceAccount,
  Role,
  RoleBinding,
  Service,
  PersistentVolumeClaim,
  Deployment,
  StatefulSet,
  PodDisruptionBudget,
  Issuer,
  Certificate,
  NetworkPolicy,
]);
type KubeObject = z.infer<typeof KubeObject>;
type KubeKind = KubeObject['kind'];
type Workload = z.infer<typeof Deployment> | z.infer<typeof StatefulSet>;
type K8sContainer = z.infer<typeof Container>;

/** The apiVersion every kind must use (current, non-deprecated groups). */
const API_VERSION: Record<KubeKind, string> = {
  Namespace: 'v1',
  ConfigMap: 'v1',
  Secret: 'v1',
  ServiceAccount: 'v1',
  Service: 'v1',
  PersistentVolumeClaim: 'v1',
  Role: 'rbac.authorization.k8s.io/v1',
  RoleBinding: 'rbac.authorization.k8s.io/v1',
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  PodDisruptionBudget: 'policy/v1',
  Issuer: 'cert-manager.io/v1',
  Certificate: 'cert-manager.io/v1',
  NetworkPolicy: 'networking.k8s.io/v1',
};

const Kustomization = z.strictObject({
  apiVersion: z.literal('kustomize.config.k8s.io/v1beta1'),
  kind: z.literal('Kustomization'),
  namespace: z.literal(NAMESPACE),
  resources: z.array(z.string().regex(/^[\w.-]+\.yaml$/)).min(1),
  images: z.array(z.strictObject({ name: z.string(), newName: z.string().optional(), newTag: z.string().optional() })).optional(),
});

// ---------------------------------------------------------------------------------------
// Load the Kubernetes manifests
// ---------------------------------------------------------------------------------------

const k8sFiles = readdirSync(K8S)
  .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
  .sort();
const resourceFiles = k8sFiles.filter((f) => f !== 'kustomization.yaml');
const rawK8s = resourceFiles.flatMap((file) => yamlDocuments(join(K8S, file), false).map((value, index) => ({ file, index, value })));
const k8sParsed = rawK8s.map((r) => ({ ...r, result: KubeObject.safeParse(r.value) }));
const objects: KubeObject[] = k8sParsed.flatMap((p) => (p.result.success ? [p.result.data] : []));

function ofKind<K extends KubeKind>(kind: K): Extract<KubeObject, { kind: K }>[] {
  return objects.filter((o): o is Extract<KubeObject, { kind: K }> => o.kind === kind);
}
function one<K extends KubeKind>(kind: K, name: string): Extract<KubeObject, { kind: K }> {
  const found = ofKind(kind).find((o) => o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} named ${name}`);
  return found;
}
const workloads = (): Workload[] => [...ofKind('Deployment'), ...ofKind('StatefulSet')];
const roleOf = (c: K8sContainer): Role | undefined => ROLE_BY_SCRIPT.get(c.args?.[0] ?? '');
function tesseraContainers(): { workload: Workload; container: K8sContainer; role: Role }[] {
  return workloads().flatMap((workload) =>
    workload.spec.template.spec.containers.flatMap((container) => {
      const role = roleOf(container);
      return role ? [{ workload, container, role }] : [];
    }),
  );
}
function workloadFor(role: Role): Workload {
  const found = tesseraContainers().filter((t) => t.role === role);
  expect(found, `exactly one workload runs ${role}`).toHaveLength(1);
  return found[0]!.workload;
}
function containerPort(c: K8sContainer, ref: string | number): number | undefined {
  return typeof ref === 'number' ? c.ports.find((p) => p.containerPort === ref)?.containerPort : c.ports.find((p) => p.name === ref)?.containerPort;
}
function literalEnv(c: K8sContainer, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.value;
}
/** Every variable name a container receives (env, and envFrom ConfigMaps/Secrets). */
function envNames(c: K8sContainer): Set<string> {
  const names = new Set((c.env ?? []).map((e) => e.name));
  for (const src of c.envFrom ?? []) {
    const data = 'configMapRef' in src ? one('ConfigMap', src.configMapRef.name).data : one('Secret', src.secretRef.name).stringData;
    for (const k of Object.keys(data)) names.add(k);
  }
  return names;
}
/** The value a container sees for `name` when it is a literal (env value or envFrom ConfigMap). */
function envValue(c: K8sContainer, name: string): string | undefined {
  const direct = c.env?.find((e) => e.name === name);
  if (direct) {
    if (direct.value !== undefined) return direct.value;
    const ref = direct.valueFrom && 'configMapKeyRef' in direct.valueFrom ? direct.valueFrom.configMapKeyRef : undefined;
    return ref ? one('ConfigMap', ref.name).data[ref.key] : undefined;
  }
  for (const src of c.envFrom ?? []) {
    if ('configMapRef' in src) {
      const v = one('ConfigMap', src.configMapRef.name).data[name];
      if (v !== undefined) return v;
    }
  }
  return undefined;
}

/** Downward API values as a pod would see them. */
const SAMPLE_FIELDS: Record<string, string> = {
  'metadata.name': 'tessera-node-agent-7c9d8b6f5-x2v4q',
  'metadata.namespace': NAMESPACE,
  'status.podIP': '10.244.1.17',
  'spec.nodeName': 'worker-1',
};
/** The environment a container starts with (envFrom first, then env with $(VAR) expansion). */
function k8sEffectiveEnv(c: K8sContainer): Record<string, string> {
  const env: Record<string, string> = {};
  for (const src of c.envFrom ?? []) {
    Object.assign(env, 'configMapRef' in src ? one('ConfigMap', src.configMapRef.name).data : one('Secret', src.secretRef.name).stringData);
  }
  for (const e of c.env ?? []) {
    const from = e.valueFrom;
    let value: string | undefined;
    if (e.value !== undefined) value = e.value.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (m, name: string) => env[name] ?? m);
    else if (from && 'fieldRef' in from) value = SAMPLE_FIELDS[from.fieldRef.fieldPath];
    else if (from && 'secretKeyRef' in from) value = one('Secret', from.secretKeyRef.name).stringData[from.secretKeyRef.key];
    else if (from && 'configMapKeyRef' in from) value = one('ConfigMap', from.configMapKeyRef.name).data[from.configMapKeyRef.key];
    else if (from && 'resourceFieldRef' in from) {
      const [kind, resource] = from.resourceFieldRef.resource.split('.') as ['requests' | 'limits', 'cpu' | 'memory'];
      value = String(Math.ceil(quantity(c.resources[kind][resource]) / quantity(from.resourceFieldRef.divisor ?? '1')));
    }
    if (value === undefined) throw new Error(`${c.name}: cannot resolve ${e.name}`);
    env[e.name] = value;
  }
  return env;
}

// ---------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------

describe('deploy/k8s', () => {
  it('every document matches the schema of a known apiVersion/kind', () => {
    expect(rawK8s.length).toBeGreaterThan(0);
    for (const { file, index, value } of rawK8s) {
      const v = value as { apiVersion?: unknown; kind?: unknown };
      const kind = String(v.kind) as KubeKind;
      expect(Object.hasOwn(API_VERSION, kind), `${file}#${index}: unknown kind ${String(v.kind)}`).toBe(true);
      expect(v.apiVersion, `${file}#${index}: apiVersion of ${kind}`).toBe(API_VERSION[kind]);
    }
    const failures = k8sParsed.filter((p) => !p.result.success).map((p) => `${p.file}#${p.index}:\n${z.prettifyError(p.result.error!)}`);
    expect(failures, failures.join('\n\n')).toEqual([]);
  });

  it('names are unique per kind and everything lives in the tessera namespace', () => {
    const seen = new Set<string>();
    for (const o of objects) {
      const key = `${o.kind}/${o.metadata.name}`;
      expect(seen.has(key), `duplicate ${key}`).toBe(false);
      seen.add(key);
    }
    const ns = ofKind('Namespace');
    expect(ns.map((n) => n.metadata.name)).toEqual([NAMESPACE]);
    expect(ns[0]?.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('restricted');
  });

  it('kustomization.yaml lists every manifest file, and only existing ones', () => {
    const docs = yamlDocuments(join(K8S, 'kustomization.yaml'), false);
    expect(docs).toHaveLength(1);
    const k = Kustomization.parse(docs[0]);
    expect([...k.resources].sort()).toEqual(resourceFiles);
    expect(new Set(k.resources).size).toBe(k.resources.length);
    for (const f of k.resources) expect(existsSync(join(K8S, f)), f).toBe(true);
    // The image override names the image the Tessera containers use.
    const images = new Set(tesseraContainers().map((t) => t.container.image.split(':')[0]));
    expect(images.size).toBe(1);
    expect(k.images?.map((i) => i.name)).toEqual([...images]);
  });

  it('workload selectors match their pod templates and only their own pods', () => {
    const all = workloads();
    expect(all.length).toBeGreaterThan(0);
    for (const w of all) {
      const { selector, template } = w.spec;
      expect(isSubset(selector.matchLabels, template.metadata.labels), `${w.kind}/${w.metadata.name} selector vs template`).toBe(true);
      for (const other of all) {
        if (other === w) continue;
        expect(isSubset(selector.matchLabels, other.spec.template.metadata.labels), `${w.metadata.name} also selects ${other.metadata.name}'s pods`).toBe(false);
      }
      for (const term of template.spec.affinity?.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution ?? []) {
        expect(isSubset(term.podAffinityTerm.labelSelector.matchLabels, template.metadata.labels), `${w.metadata.name} anti-affinity targets its own pods`).toBe(true);
      }
    }
  });

  it('Services select existing pods and target declared container ports', () => {
    for (const svc of ofKind('Service')) {
      const selected = workloads().filter((w) => isSubset(svc.spec.selector, w.spec.template.metadata.labels));
      expect(selected.length, `Service ${svc.metadata.name} selects no pods`).toBeGreaterThan(0);
      for (const port of svc.spec.ports) {
        for (const w of selected) {
          const resolved = w.spec.template.spec.containers.map((c) => containerPort(c, port.targetPort)).filter((p) => p !== undefined);
          expect(resolved.length, `Service ${svc.metadata.name} port ${port.name} -> ${w.metadata.name}`).toBe(1);
        }
      }
    }
  });

  it('PodDisruptionBudgets each cover exactly one workload', () => {
    for (const pdb of ofKind('PodDisruptionBudget')) {
      const covered = workloads().filter((w) => isSubset(pdb.spec.selector.matchLabels, w.spec.template.metadata.labels));
      expect(
        covered.map((w) => w.metadata.name),
        `PDB ${pdb.metadata.name}`,
      ).toHaveLength(1);
    }
  });

  it('every container has an image, sane resources, and probes on declared ports', () => {
    for (const w of workloads()) {
      const pod = w.spec.template.spec;
      for (const c of pod.containers) {
        const where = `${w.metadata.name}/${c.name}`;
        expect(c.image.length, where).toBeGreaterThan(0);
        for (const r of ['cpu', 'memory'] as const) {
          expect(quantity(c.resources.requests[r]), `${where} ${r} request <= limit`).toBeLessThanOrEqual(quantity(c.resources.limits[r]));
        }
        for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
          if (!probe) continue;
          expect(containerPort(c, probe.httpGet.port), `${where} probe port ${String(probe.httpGet.port)} is declared`).toBeDefined();
        }
        const names = c.ports.map((p) => p.name);
        expect(new Set(names).size, `${where} port names unique`).toBe(names.length);
        // Volume mounts refer to declared volumes; a read-only root needs writable mounts.
        const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
        for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name) || w.kind === 'StatefulSet', `${where} mounts ${m.name}`).toBe(true);
      }
      const volumeNames = (pod.volumes ?? []).map((v) => v.name);
      expect(new Set(volumeNames).size, `${w.metadata.name} volume names unique`).toBe(volumeNames.length);
      for (const v of pod.volumes ?? []) {
        if (v.persistentVolumeClaim) one('PersistentVolumeClaim', v.persistentVolumeClaim.claimName);
      }
      if (w.kind === 'StatefulSet') {
        const claims = new Set((w.spec.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
        for (const c of pod.containers) {
          for (const m of c.volumeMounts ?? []) expect(claims.has(m.name) || volumeNames.includes(m.name), `${w.metadata.name} mounts ${m.name}`).toBe(true);
        }
      }
    }
  });

  it('every pod template carries Prometheus scrape annotations for a declared metrics port', () => {
    for (const w of workloads()) {
      const a = w.spec.template.metadata.annotations ?? {};
      expect(a['prometheus.io/scrape'], w.metadata.name).toBe('true');
      expect(a['prometheus.io/path'], w.metadata.name).toBe('/metrics');
      const metricsPorts = w.spec.template.spec.containers.map((c) => containerPort(c, 'metrics'));
      expect(metricsPorts, w.metadata.name).toContain(Number(a['prometheus.io/port']));
    }
  });

  it('env references resolve: ConfigMap/Secret keys exist and $(VAR) uses come after VAR', () => {
    for (const w of workloads()) {
      for (const c of w.spec.template.spec.containers) {
        const where = `${w.metadata.name}/${c.name}`;
        const defined = new Set<string>();
        for (const src of c.envFrom ?? []) {
          if ('configMapRef' in src) one('ConfigMap', src.configMapRef.name);
          else one('Secret', src.secretRef.name);
        }
        for (const e of c.env ?? []) {
          expect(defined.has(e.name), `${where}: ${e.name} set twice`).toBe(false);
          for (const [, ref] of (e.value ?? '').matchAll(/\$\(([A-Z_][A-Z0-9_]*)\)/g)) {
            expect(defined.has(ref!), `${where}: ${e.name} uses $(${ref}) before it is defined`).toBe(true);
          }
          const from = e.valueFrom;
          if (from && 'secretKeyRef' in from) {
            expect(Object.keys(one('Secret', from.secretKeyRef.name).stringData), `${where}: ${e.name}`).toContain(from.secretKeyRef.key);
          }
          if (from && 'configMapKeyRef' in from) {
            expect(Object.keys(one('ConfigMap', from.configMapKeyRef.name).data), `${where}: ${e.name}`).toContain(from.configMapKeyRef.key);
          }
          if (from && 'resourceFieldRef' in from) {
            expect(from.resourceFieldRef.containerName, `${where}: ${e.name}`).toBe(c.name);
          }
          defined.add(e.name);
        }
      }
    }
  });

  it('the Secret holds only clearly-marked placeholders', () => {
    const secrets = ofKind('Secret');
    expect(secrets.map((s) => s.metadata.name)).toEqual(['tessera-secrets']);
    const data = secrets[0]!.stringData;
    expect(new Set(Object.keys(data))).toEqual(SECRET_ENV);
    for (const [k, v] of Object.entries(data)) expect(v, k).toMatch(/^REPLACE-ME/);
    expect(read(join(K8S, 'secret.yaml'))).toMatch(/PLACEHOLDER/);
    // Credentials never sit in the ConfigMap.
    for (const cm of ofKind('ConfigMap')) for (const k of SECRET_ENV) expect(Object.keys(cm.data), cm.metadata.name).not.toContain(k);
  });

  it('the shipped placeholders are refused at start, and real secrets in their place are accepted', async () => {
    for (const { workload, container, role } of tesseraContainers()) {
      const where = `${workload.metadata.name}/${container.name}`;
      const mod = (await import(join(ROOT, role, 'config.ts'))) as { loadConfig: (e: Record<string, string>) => unknown; startupRefusals?: (c: unknown) => string[] };
      if (!mod.startupRefusals) continue; // a role without start-up refusals (none of the three long-running ones)
      const env = k8sEffectiveEnv(container);
      const refusals = mod.startupRefusals;
      const shipped = refusals(mod.loadConfig(env));
      const secretsRead = (container.env ?? []).filter((e) => e.valueFrom && 'secretKeyRef' in e.valueFrom).map((e) => e.name);
      for (const k of secretsRead) expect(shipped.join('\n'), `${where} refuses the placeholder ${k}`).toContain(k);
      const real = Object.fromEntries(secretsRead.map((k) => [k, `real-${k.toLowerCase()}-0123456789abcdef`]));
      expect(refusals(mod.loadConfig({ ...env, ...real })), where).toEqual([]);
    }
  });

  it('each Tessera role runs once, with every variable it needs, secrets from the Secret', () => {
    const roles = tesseraContainers()
      .map((t) => t.role)
      .sort();
    expect(roles).toEqual(['coordinator', 'node-agent', 'uploader']);
    for (const { workload, container, role } of tesseraContainers()) {
      const where = `${workload.metadata.name}/${container.name}`;
      expect(container.command, `${where} keeps the image ENTRYPOINT (node --import tsx)`).toBeUndefined();
      expect(container.args, where).toEqual([ROLE_SCRIPT[role]]);
      const have = envNames(container);
      for (const name of REQUIRED_ENV[role]) expect(have.has(name), `${where} needs ${name}`).toBe(true);
      for (const e of container.env ?? []) {
        if (SECRET_ENV.has(e.name)) expect(e.valueFrom && 'secretKeyRef' in e.valueFrom, `${where}: ${e.name} comes from a Secret`).toBe(true);
      }
      // Ports: the env the process reads agrees with the declared container ports.
      expect(Number(literalEnv(container, 'GRPC_PORT')), where).toBe(containerPort(container, 'grpc'));
      expect(Number(literalEnv(container, 'METRICS_PORT')), where).toBe(containerPort(container, 'metrics'));
      expect(containerPort(container, 'grpc'), where).toBe(DEFAULT_PORTS[role].grpc);
      expect(containerPort(container, 'metrics'), where).toBe(DEFAULT_PORTS[role].metrics);
      // Probes: readiness on /readyz, liveness (and startup) on /healthz, all on the metrics port.
      expect(container.readinessProbe.httpGet.path, where).toBe('/readyz');
      expect(container.livenessProbe.httpGet.path, where).toBe('/healthz');
      for (const p of [container.readinessProbe, container.livenessProbe, container.startupProbe]) {
        if (p) expect(containerPort(container, p.httpGet.port), where).toBe(containerPort(container, 'metrics'));
      }
      // The root filesystem is read-only: staging, input and /tmp (tsx cache) are volumes.
      expect(container.securityContext.readOnlyRootFilesystem, where).toBe(true);
      const mounts = (container.volumeMounts ?? []).map((m) => m.mountPath);
      expect(mounts, where).toContain('/tmp');
      expect(mounts, `${where} STAGING_DIR`).toContain(envValue(container, 'STAGING_DIR'));
      if (role === 'coordinator') expect(mounts, `${where} INPUT_ROOT`).toContain(envValue(container, 'INPUT_ROOT'));
      // Where the process advertises itself: the pod IP, on its gRPC port.
      if (have.has('ADVERTISE_ADDRESS')) {
        expect(literalEnv(container, 'ADVERTISE_ADDRESS'), where).toBe(`$(POD_IP):${containerPort(container, 'grpc')}`);
        const podIp = container.env?.find((e) => e.name === 'POD_IP')?.valueFrom;
        expect(podIp && 'fieldRef' in podIp ? podIp.fieldRef.fieldPath : undefined, where).toBe('status.podIP');
      }
      // Only the coordinator talks to the API server.
      expect(workload.spec.template.spec.automountServiceAccountToken, where).toBe(role === 'coordinator');
    }
  });

  it('each process accepts its configuration (<role>/config.ts) and shuts down inside its grace period', async () => {
    const readByAnyRole = new Set<string>();
    for (const { workload, container, role } of tesseraContainers()) {
      const where = `${workload.metadata.name}/${container.name}`;
      const env = k8sEffectiveEnv(container);
      const cfg = (await roleConfigLoader(role))(env);
      for (const k of Object.keys(cfg)) readByAnyRole.add(k);
      expect(cfg['BIND_HOST'], where).toBe('0.0.0.0');
      expect(cfg['GRPC_PORT'], where).toBe(containerPort(container, 'grpc'));
      expect(cfg['METRICS_PORT'], where).toBe(containerPort(container, 'metrics'));
      expect(String(cfg['STAGING_DIR']).startsWith('/'), `${where} STAGING_DIR is absolute`).toBe(true);
      expect(cfg['ETCD_ENDPOINTS'], where).toEqual(env['ETCD_ENDPOINTS']?.split(','));
      if (role === 'node-agent') {
        expect(cfg['NODE_ID'], where).toBe(SAMPLE_FIELDS['metadata.name']);
        expect(cfg['WORKER_SLOTS'], `${where} one slot per requested core`).toBe(Math.ceil(quantity(container.resources.requests.cpu)));
        expect(cfg['ADVERTISE_ADDRESS'], where).toBe(`${SAMPLE_FIELDS['status.podIP']}:${containerPort(container, 'grpc')}`);
      }
      // Every variable set on the container is one the process reads (catches typos).
      const unknown = (container.env ?? []).map((e) => e.name).filter((k) => !(k in cfg) && !NOT_IN_CONFIG_SCHEMA.has(k));
      expect(unknown, `${where} sets variables its config does not read`).toEqual([]);
      // The process's own grace timer fires before Kubernetes' SIGKILL; a drain fits inside it.
      const grace = z.number().parse(cfg['SHUTDOWN_GRACE_MS']);
      expect(grace + SHUTDOWN_MARGIN_MS, where).toBeLessThanOrEqual(workload.spec.template.spec.terminationGracePeriodSeconds * 1000);
      if (role === 'node-agent') expect(z.number().parse(cfg['DRAIN_TIMEOUT_MS']) + HANDBACK_MARGIN_MS, where).toBeLessThanOrEqual(grace);
    }
    for (const cm of ofKind('ConfigMap')) {
      const unread = Object.keys(cm.data).filter((k) => !readByAnyRole.has(k) && !NOT_IN_CONFIG_SCHEMA.has(k));
      expect(unread, `ConfigMap ${cm.metadata.name} keys no process reads`).toEqual([]);
    }
  });

  it('the etcd endpoints the processes use are the members of the etcd StatefulSet', () => {
    const etcd = one('StatefulSet', 'etcd');
    const c = etcd.spec.template.spec.containers[0]!;
    expect(c.image).toMatch(/^quay\.io\/coreos\/etcd:v3\.5\.\d+$/);
    expect(etcd.spec.replicas, 'etcd runs 3 members').toBe(3);
    expect(etcd.spec.podManagementPolicy, 'members must start together to form quorum').toBe('Parallel');
    const headless = one('Service', etcd.spec.serviceName);
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.publishNotReadyAddresses).toBe(true);
    expect(isSubset(headless.spec.selector, etcd.spec.template.metadata.labels)).toBe(true);
    const client = ofKind('Service').filter((s) => s !== headless && isSubset(s.spec.selector, etcd.spec.template.metadata.labels));
    expect(
      client.map((s) => s.spec.clusterIP),
      'a ClusterIP client Service',
    ).toEqual([undefined]);
    expect(client[0]!.spec.ports.map((p) => p.port)).toEqual([containerPort(c, 'client')]);

    const members = Array.from({ length: etcd.spec.replicas }, (_, i) => `${etcd.metadata.name}-${i}.${headless.metadata.name}`);
    const peerPort = containerPort(c, 'peer');
    const clientPort = containerPort(c, 'client');
    expect(literalEnv(c, 'ETCD_INITIAL_CLUSTER')).toBe(members.map((m, i) => `${etcd.metadata.name}-${i}=http://${m}:${peerPort}`).join(','));
    expect(literalEnv(c, 'ETCD_INITIAL_ADVERTISE_PEER_URLS')).toBe(`http://$(POD_NAME).${headless.metadata.name}:${peerPort}`);
    expect(literalEnv(c, 'ETCD_NAME')).toBe('$(POD_NAME)');
    expect(literalEnv(c, 'ETCD_LISTEN_METRICS_URLS')).toBe(`http://0.0.0.0:${containerPort(c, 'metrics')}`);
    const dataMount = c.volumeMounts?.find((m) => m.name === 'data')?.mountPath;
    expect(literalEnv(c, 'ETCD_DATA_DIR')?.startsWith(`${dataMount}/`), 'data dir on the claim').toBe(true);

    for (const { container, workload } of tesseraContainers()) {
      const endpoints = urlHosts(envValue(container, 'ETCD_ENDPOINTS') ?? '');
      expect(
        endpoints.map((e) => e.host),
        workload.metadata.name,
      ).toEqual(members);
      for (const e of endpoints) expect(e.port, workload.metadata.name).toBe(clientPort);
    }
  });

  it('the coordinator: 2 replicas behind a gRPC Service, autoscaler settings consistent', () => {
    const dep = workloadFor('coordinator');
    expect(dep.kind).toBe('Deployment');
    expect(dep.spec.replicas).toBe(2);
    const c = dep.spec.template.spec.containers.find((x) => roleOf(x) === 'coordinator')!;
    const svc = ofKind('Service').filter((s) => isSubset(s.spec.selector, dep.spec.template.metadata.labels));
    expect(svc.flatMap((s) => s.spec.ports.map((p) => [p.port, containerPort(c, p.targetPort)]))).toContainEqual([7400, 7400]);
    expect(envValue(c, 'AUTOSCALER')).toBe('kubernetes');
    for (const name of K8S_AUTOSCALER_ENV) expect(envNames(c).has(name), name).toBe(true);
    const ns = c.env?.find((e) => e.name === 'K8S_NAMESPACE')?.valueFrom;
    expect(ns && 'fieldRef' in ns ? ns.fieldRef.fieldPath : undefined).toBe('metadata.namespace');
    expect(envValue(c, 'K8S_NODE_DEPLOYMENT')).toBe(workloadFor('node-agent').metadata.name);
    const min = Number(envValue(c, 'AUTOSCALER_MIN_NODES'));
    const max = Number(envValue(c, 'AUTOSCALER_MAX_NODES'));
    expect(Number.isInteger(min) && min >= 1).toBe(true);
    expect(max).toBeGreaterThanOrEqual(min);
    // Local input files: a claim both replicas can mount at once.
    const input = dep.spec.template.spec.volumes?.find((v) => v.persistentVolumeClaim);
    expect(one('PersistentVolumeClaim', input!.persistentVolumeClaim!.claimName).spec.accessModes).toContain('ReadWriteMany');
  });

  it('the autoscaler Role grants exactly scale on the node-agent Deployment and pod annotation', () => {
    const nodeDeployment = workloadFor('node-agent').metadata.name;
    const coordinator = workloadFor('coordinator');
    const sa = coordinator.spec.template.spec.serviceAccountName;
    expect(sa).toBeDefined();
    one('ServiceAccount', sa!);

    const bindings = ofKind('RoleBinding');
    expect(bindings).toHaveLength(1);
    const binding = bindings[0]!;
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa, namespace: NAMESPACE }]);
    const role = one('Role', binding.roleRef.name);
    expect(ofKind('Role')).toHaveLength(1);

    // Flatten to (group, resource, name, verb) grants and compare as sets.
    const grants = new Set(role.rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => (r.resourceNames ?? ['*']).flatMap((n) => r.verbs.map((v) => `${g}|${res}|${n}|${v}`))))));
    expect(grants).toEqual(
      new Set([
        `apps|deployments|${nodeDeployment}|get`,
        `apps|deployments/scale|${nodeDeployment}|get`,
        `apps|deployments/scale|${nodeDeployment}|patch`,
        `apps|deployments/scale|${nodeDeployment}|update`,
        '|pods|*|get',
        '|pods|*|list',
        '|pods|*|patch',
      ]),
    );
    // Only the coordinator uses a non-default ServiceAccount.
    for (const w of workloads()) if (w !== coordinator) expect(w.spec.template.spec.serviceAccountName, w.metadata.name).toBeUndefined();
  });

  it('node agents: auto-join identity from the downward API, SIGTERM drain budget, autoscaler-owned replicas', () => {
    const dep = workloadFor('node-agent');
    expect(dep.kind).toBe('Deployment');
    if (dep.kind !== 'Deployment') return;
    const c = dep.spec.template.spec.containers.find((x) => roleOf(x) === 'node-agent')!;
    const nodeId = c.env?.find((e) => e.name === 'NODE_ID')?.valueFrom;
    expect(nodeId && 'fieldRef' in nodeId ? nodeId.fieldRef.fieldPath : undefined).toBe('metadata.name');
    expect(dep.spec.template.spec.terminationGracePeriodSeconds).toBe(DRAIN_SECONDS);
    // No preStop hook (the schema rejects `lifecycle`): SIGTERM itself starts the drain.
    expect('lifecycle' in c).toBe(false);
    // The coordinator scales this Deployment; a replica count here would fight it on every apply.
    expect(dep.spec.replicas).toBeUndefined();
    expect(dep.spec.strategy?.rollingUpdate.maxUnavailable, 'new agents join before old ones drain').toBe(0);
    const slots = c.env?.find((e) => e.name === 'WORKER_SLOTS')?.valueFrom;
    expect(slots && 'resourceFieldRef' in slots ? slots.resourceFieldRef.resource : undefined).toMatch(/cpu$/);
    expect(envValue(c, 'LEASE_TTL_SEC')).toBe('10');
    // Nothing routes to node agents through a Service: the coordinator dials ADVERTISE_ADDRESS.
    const services = ofKind('Service').filter((s) => isSubset(s.spec.selector, dep.spec.template.metadata.labels));
    expect(services).toEqual([]);
  });

  it('the uploader has a Service on its gRPC port', () => {
    const dep = workloadFor('uploader');
    const c = dep.spec.template.spec.containers.find((x) => roleOf(x) === 'uploader')!;
    const svc = ofKind('Service').filter((s) => isSubset(s.spec.selector, dep.spec.template.metadata.labels));
    expect(svc.flatMap((s) => s.spec.ports.map((p) => containerPort(c, p.targetPort)))).toEqual([7600]);
  });

  /** The certificate role (subject OU) each Tessera role presents, and the identity its peers dial it by. */
  const CERT: Record<Role, { ou: string; identity: string }> = {
    coordinator: { ou: 'coordinator', identity: 'tessera-coordinator' },
    'node-agent': { ou: 'node', identity: '${POD_NAME}' },
    uploader: { ou: 'uploader', identity: 'uploader-${POD_NAME}' },
  };

  it('mutual TLS on every Tessera pod: a csi-driver key pair from the cluster CA, with its role and the identity peers dial', () => {
    // The CA chain: a self-signed root Certificate (isCA) whose Secret backs the tessera-ca Issuer.
    const caIssuer = one('Issuer', 'tessera-ca');
    const caSecret = 'ca' in caIssuer.spec ? caIssuer.spec.ca.secretName : '';
    const root = ofKind('Certificate').find((c) => c.spec.secretName === caSecret);
    expect(root?.spec.isCA, 'the CA certificate').toBe(true);
    expect('selfSigned' in one('Issuer', root!.spec.issuerRef.name).spec).toBe(true);
    for (const { workload, container, role } of tesseraContainers()) {
      const where = `${workload.metadata.name}/${container.name}`;
      const env = new Map((container.env ?? []).map((e) => [e.name, e.value]));
      const mount = (container.volumeMounts ?? []).find((m) => m.mountPath === '/tls');
      expect(mount?.readOnly, `${where} mounts its key pair read-only at /tls`).toBe(true);
      expect([env.get('TLS_CA_FILE'), env.get('TLS_CERT_FILE'), env.get('TLS_KEY_FILE')], where).toEqual(['/tls/ca.crt', '/tls/tls.crt', '/tls/tls.key']);
      const vol = workload.spec.template.spec.volumes?.find((v) => v.name === mount!.name);
      const attrs = vol?.csi?.volumeAttributes ?? {};
      expect(attrs['csi.cert-manager.io/issuer-name'], where).toBe('tessera-ca');
      expect(attrs['csi.cert-manager.io/issuer-kind'], where).toBe('Issuer');
      expect(attrs['csi.cert-manager.io/organizationalunits'], `${where}: its role`).toBe(CERT[role].ou);
      expect(attrs['csi.cert-manager.io/dns-names']?.split(','), `${where}: the identity peers dial`).toContain(CERT[role].identity);
      expect(attrs['csi.cert-manager.io/key-usages']?.split(','), where).toEqual(expect.arrayContaining(['server auth', 'client auth']));
      expect(attrs['csi.cert-manager.io/fs-group'], `${where}: readable by the non-root user`).toBe(String(workload.spec.template.spec.securityContext.runAsUser));
    }
    // The identities match what the processes are: a node agent's NODE_ID is its pod name (the
    // coordinator dials it expecting that name); the uploader keeps its default id, uploader-<hostname>.
    const agent = tesseraContainers().find((t) => t.role === 'node-agent')!.container;
    expect(agent.env?.find((e) => e.name === 'NODE_ID')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
    expect(
      tesseraContainers()
        .find((t) => t.role === 'uploader')!
        .container.env?.some((e) => e.name === 'UPLOADER_ID'),
    ).toBe(false);
    // The coordinator's Service name is on its certificate (clients dial the Service).
    expect(ofKind('Service').map((x) => x.metadata.name)).toContain(CERT.coordinator.identity);
    // The CLI's client certificate: role client, client auth only.
    const cli = one('Certificate', 'tessera-cli');
    expect(cli.spec.subject?.organizationalUnits).toEqual(['client']);
    expect(cli.spec.usages).toContain('client auth');
    expect(cli.spec.usages).not.toContain('server auth');
  });

  it('NetworkPolicies: default deny, and only the links Tessera uses are open', () => {
    const policies = ofKind('NetworkPolicy');
    const deny = policies.find((p) => Object.keys(p.spec.podSelector).length === 0);
    expect(deny?.spec.policyTypes).toEqual(['Ingress']);
    expect(deny?.spec.ingress).toBeUndefined();
    const labelsOf = (role: Role | 'etcd'): Record<string, string> =>
      role === 'etcd' ? (one('StatefulSet', 'etcd').spec.template.metadata.labels ?? {}) : (workloadFor(role).spec.template.metadata.labels ?? {});
    /** Who (by pod labels; undefined: any pod in any namespace) may reach `to` on `port`. */
    const allowed = (to: Role | 'etcd', port: number, fromLabels: Record<string, string> | undefined): boolean =>
      policies.some(
        (p) =>
          'matchLabels' in p.spec.podSelector &&
          isSubset(p.spec.podSelector.matchLabels, labelsOf(to)) &&
          (p.spec.ingress ?? []).some(
            (rule) =>
              rule.ports.some((x) => x.port === port) &&
              (rule.from === undefined ||
                rule.from.some(
                  (peer) =>
                    (peer.namespaceSelector !== undefined && peer.podSelector === undefined) ||
                    (fromLabels !== undefined && peer.podSelector !== undefined && isSubset(peer.podSelector.matchLabels, fromLabels)),
                )),
          ),
      );
    const coordinator = labelsOf('coordinator');
    const agent = labelsOf('node-agent');
    const uploader = labelsOf('uploader');
    // The links the processes use.
    expect(allowed('coordinator', 7400, undefined), 'clients -> coordinator').toBe(true);
    expect(allowed('coordinator', 7480, undefined), 'browsers -> web console').toBe(true);
    expect(allowed('node-agent', 7500, coordinator), 'coordinator -> node agent').toBe(true);
    expect(allowed('uploader', 7600, coordinator), 'coordinator -> uploader').toBe(true);
    expect(allowed('uploader', 7600, agent), 'node agent -> uploader').toBe(true);
    for (const from of [coordinator, agent, uploader]) expect(allowed('etcd', 2379, from), 'Tessera -> etcd').toBe(true);
    expect(allowed('etcd', 2380, labelsOf('etcd')), 'etcd peers').toBe(true);
    for (const [role, port] of [
      ['coordinator', 9400],
      ['node-agent', 9500],
      ['uploader', 9600],
    ] as const)
      expect(allowed(role, port, undefined), `Prometheus -> ${role}`).toBe(true);
    // And nothing else: no one but coordinators reaches an agent; nothing but coordinators and
    // agents the uploader; nothing from outside etcd's peers reaches etcd's peer port.
    expect(allowed('node-agent', 7500, uploader)).toBe(false);
    expect(allowed('node-agent', 7500, undefined)).toBe(false);
    expect(allowed('uploader', 7600, undefined)).toBe(false);
    expect(allowed('etcd', 2379, undefined)).toBe(false);
    expect(allowed('etcd', 2380, coordinator)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------
// Docker Compose
// ---------------------------------------------------------------------------------------

const Duration = z
  .string()
  .regex(/^(?:\d+h)?(?:\d+m)?(?:\d+s)?$/)
  .refine((d) => d !== '');
const ComposeService = z.strictObject({
  image: z.string().min(1),
  build: z.strictObject({ context: z.string(), dockerfile: z.string() }).optional(),
  init: z.boolean().optional(),
  restart: z.enum(['no', 'always', 'on-failure', 'unless-stopped']),
  hostname: DnsLabel.optional(),
  entrypoint: z.array(z.string()).min(1).optional(),
  command: z.array(z.string()).min(1).optional(),
  environment: z.record(EnvName, z.string()).optional(),
  ports: z.array(z.string().regex(/^(?:\d+\.\d+\.\d+\.\d+:)?\d+:\d+$/, 'ports as "[ip:]host:container"')).optional(),
  volumes: z.array(z.string().regex(/^[^:]+:\/[^:]*(?::ro|:rw)?$/, 'volumes as "source:/target[:ro]"')).optional(),
  depends_on: z.record(z.string(), z.strictObject({ condition: z.enum(['service_started', 'service_healthy', 'service_completed_successfully']) })).optional(),
  healthcheck: z
    .strictObject({
      test: z.tuple([z.literal('CMD')], z.string()).refine((t) => t.length >= 2, 'a command after CMD'),
      interval: Duration,
      timeout: Duration,
      retries: z.number().int().min(1),
      start_period: Duration.optional(),
    })
    .optional(),
  deploy: z.strictObject({ replicas: z.number().int().min(1) }).optional(),
  stop_grace_period: Duration.optional(),
});
const ComposeFile = z.looseObject({
  name: DnsLabel,
  services: z.record(DnsLabel, ComposeService),
  volumes: z.record(DnsLabel, z.null()),
});
type ComposeServiceT = z.infer<typeof ComposeService>;

const COMPOSE_PATH = join(DEPLOY, 'compose.yaml');
const composeDocs = yamlDocuments(COMPOSE_PATH, true);
const composeParsed = ComposeFile.safeParse(composeDocs[0]);
const compose = composeParsed.success ? composeParsed.data : { name: '', services: {}, volumes: {} };
const services = Object.entries(compose.services);

const REPLICA_ENTRYPOINT = 'deploy/docker/replica-env.sh';
const HEALTHCHECK_SCRIPT = 'deploy/docker/healthcheck.mjs';
/** Compose interpolation with an empty environment: ${VAR:-default} -> default, $$ -> $. */
function interpolate(s: string): string {
  return s.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (m, _name: string | undefined, def: string | undefined) => (m === '$$' ? '$' : (def ?? '')));
}
function composeEnv(svc: ComposeServiceT): Record<string, string> {
  return Object.fromEntries(Object.entries(svc.environment ?? {}).map(([k, v]) => [k, interpolate(v)]));
}
/** The environment the process sees, including what replica-env.sh derives per container. */
function composeEffectiveEnv(svc: ComposeServiceT): Record<string, string> {
  const env = composeEnv(svc);
  if (svc.entrypoint?.includes(REPLICA_ENTRYPOINT)) {
    env['NODE_ID'] ??= '3f2a9c1b7d6e';
    env['ADVERTISE_ADDRESS'] ??= `172.18.0.5:${env['GRPC_PORT'] ?? ''}`;
  }
  return env;
}
function composeRole(svc: ComposeServiceT): Role | undefined {
  return ROLE_BY_SCRIPT.get(svc.command?.[0] ?? '');
}
const isNamedVolume = (source: string): boolean => !/^[./~$]/.test(source);

describe('deploy/compose.yaml', () => {
  it('parses and matches the Compose schema subset', () => {
    expect(composeDocs).toHaveLength(1);
    expect(composeParsed.success, composeParsed.success ? '' : z.prettifyError(composeParsed.error)).toBe(true);
    for (const key of Object.keys(composeDocs[0] as object)) {
      expect(['name', 'services', 'volumes'].includes(key) || key.startsWith('x-'), `unknown top-level key ${key}`).toBe(true);
    }
  });

  it('uses only valid interpolation (${VAR}, ${VAR:-default}, $$ escapes)', () => {
    const text = read(COMPOSE_PATH).replace(/^\s*#.*$/gm, '');
    const bad = text.replace(/\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}/g, '').match(/\$.{0,12}/g);
    expect(bad).toBeNull();
  });

  it('runs etcd, MinIO with a bucket init, 2 coordinators, 2 node agents and an uploader', () => {
    const byRole = (role: Role) => services.filter(([, s]) => composeRole(s) === role);
    const replicas = (s: ComposeServiceT) => s.deploy?.replicas ?? 1;
    expect(byRole('coordinator').reduce((n, [, s]) => n + replicas(s), 0)).toBe(2);
    expect(byRole('node-agent').reduce((n, [, s]) => n + replicas(s), 0)).toBe(2);
    expect(byRole('uploader').reduce((n, [, s]) => n + replicas(s), 0)).toBe(1);
    expect(compose.services['etcd']?.image).toMatch(/^quay\.io\/coreos\/etcd:v3\.5\.\d+$/);
    expect(compose.services['minio']?.image).toMatch(/^minio\/minio:RELEASE\./);
    expect(compose.services['minio-init']?.image).toMatch(/^minio\/mc:RELEASE\./);
    for (const [name, s] of services) {
      const role = composeRole(s);
      if (!role) continue;
      expect(interpolate(s.image), name).toMatch(/^tessera:/);
      expect(s.build?.context && resolve(DEPLOY, s.build.context), `${name} builds from the repo root`).toBe(ROOT);
      expect(s.build && existsSync(join(DEPLOY, s.build.context, s.build.dockerfile)), name).toBe(true);
    }
  });

  it('depends_on targets exist, are acyclic, and their conditions can be met', () => {
    for (const [name, s] of services) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        const target = compose.services[dep];
        expect(target, `${name} depends on unknown service ${dep}`).toBeDefined();
        if (condition === 'service_healthy') expect(target?.healthcheck, `${dep} needs a healthcheck for ${name}`).toBeDefined();
        if (condition === 'service_completed_successfully') expect(target?.restart, `${dep} is a one-shot`).toBe('no');
      }
    }
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (n: string): void => {
      if (done.has(n)) return;
      expect(visiting.has(n), `dependency cycle through ${n}`).toBe(false);
      visiting.add(n);
      for (const d of Object.keys(compose.services[n]?.depends_on ?? {})) visit(d);
      visiting.delete(n);
      done.add(n);
    };
    for (const [name] of services) visit(name);
    // Every Tessera process waits for a healthy etcd; S3 users wait for the bucket.
    for (const [name, s] of services) {
      const role = composeRole(s);
      if (!role) continue;
      expect(s.depends_on?.['etcd']?.condition, name).toBe('service_healthy');
      if (REQUIRED_ENV[role].includes('S3_BUCKET')) expect(s.depends_on?.['minio-init']?.condition, name).toBe('service_completed_successfully');
    }
  });

  it('every long-running service has a healthcheck; Tessera ones probe their own metrics port', () => {
    for (const [name, s] of services) {
      if (s.restart === 'no') continue;
      expect(s.healthcheck, `${name} has a healthcheck`).toBeDefined();
      const test = s.healthcheck!.test;
      const role = composeRole(s);
      if (!role) continue;
      expect(test.slice(1, 3), name).toEqual(['node', HEALTHCHECK_SCRIPT]);
      expect(existsSync(join(ROOT, HEALTHCHECK_SCRIPT))).toBe(true);
      expect(test[3], `${name} probes METRICS_PORT`).toBe(composeEnv(s)['METRICS_PORT']);
      expect(['/healthz', '/readyz'], name).toContain(test[4]);
    }
  });

  it('volumes: named volumes are declared and used, coordinators share the input volume, staging is never shared', () => {
    const declared = new Set(Object.keys(compose.volumes));
    const used = new Set<string>();
    const stagingOwners = new Map<string, string>();
    for (const [name, s] of services) {
      const env = composeEnv(s);
      for (const v of s.volumes ?? []) {
        const [source, target] = v.split(':') as [string, string];
        if (isNamedVolume(source)) {
          expect(declared.has(source), `${name} uses undeclared volume ${source}`).toBe(true);
          used.add(source);
        }
        if (composeRole(s) && target === env['STAGING_DIR']) {
          expect(isNamedVolume(source), `${name} staging is a named volume`).toBe(true);
          expect(stagingOwners.get(source), `staging volume ${source} shared by ${name}`).toBeUndefined();
          stagingOwners.set(source, name);
        }
      }
      const role = composeRole(s);
      if (!role) continue;
      expect(
        (s.volumes ?? []).map((v) => v.split(':')[1]),
        `${name} staging on a volume`,
      ).toContain(env['STAGING_DIR']);
    }
    expect(
      [...declared].filter((v) => !used.has(v)),
      'declared but unused volumes',
    ).toEqual([]);
    const coordinators = services.filter(([, s]) => composeRole(s) === 'coordinator');
    const inputSources = coordinators.map(([, s]) => (s.volumes ?? []).find((v) => v.split(':')[1] === composeEnv(s)['INPUT_ROOT'])?.split(':')[0]);
    expect(inputSources.every((src) => src !== undefined && isNamedVolume(src))).toBe(true);
    expect(new Set(inputSources).size, 'one input volume shared by all coordinators').toBe(1);
    expect(coordinators.every(([, s]) => composeEnv(s)['INPUT_ROOT'] === '/data/input')).toBe(true);
  });

  it('mutual TLS on every gRPC link: tls-init issues each fixed service its certificate, node agents issue their own', () => {
    const init = compose.services['tls-init']!;
    expect(init.entrypoint?.join(' ')).toBe('sh deploy/docker/tls-init.sh');
    expect(init.volumes).toContain('tls:/tls');
    const script = read(join(DEPLOY, 'docker', 'tls-init.sh'));
    /** file -> [role, DNS names] of each `issue <file> <role> <names>` line. */
    const issued = new Map([...script.matchAll(/^issue (\S+) (\S+) (\S+)/gm)].map((m) => [m[1]!, { role: m[2]!, names: m[3]!.split(',') }]));
    const OU: Record<Role, string> = { coordinator: 'coordinator', 'node-agent': 'node', uploader: 'uploader' };
    for (const [name, s] of services) {
      const role = composeRole(s);
      if (!role) continue;
      const env = composeEffectiveEnv(s);
      expect(env['TLS_CA_FILE'], name).toBe('/tls/ca.crt');
      expect(
        s.volumes?.some((v) => v.startsWith('tls:/tls')),
        `${name} mounts the tls volume`,
      ).toBe(true);
      expect(s.depends_on?.['tls-init']?.condition, name).toBe('service_completed_successfully');
      if (env['TLS_SELF_ISSUE'] === 'true') {
        // A replica signs its own, named after the NODE_ID replica-env.sh derives.
        expect(s.entrypoint?.includes(REPLICA_ENTRYPOINT), name).toBe(true);
        expect(read(join(DEPLOY, 'docker', 'replica-env.sh'))).toMatch(/certs-main\.ts \/tls "node-\$NODE_ID" node "\$NODE_ID"/);
        expect(role).toBe('node-agent');
        continue;
      }
      const file = /^\/tls\/(.+)\.crt$/.exec(env['TLS_CERT_FILE'] ?? '')?.[1];
      expect(env['TLS_KEY_FILE'], name).toBe(`/tls/${file}.key`);
      const cert = issued.get(file ?? '');
      expect(cert?.role, `${name}: its certificate's role`).toBe(OU[role]);
      // The identity peers dial: the coordinators' hostnames (and localhost for the published
      // port), the uploader's UPLOADER_ID.
      const identity = role === 'uploader' ? env['UPLOADER_ID'] : s.hostname;
      expect(cert?.names, name).toContain(identity);
      if (role === 'coordinator') expect(cert?.names, name).toContain('localhost');
    }
    expect(issued.get('cli')?.role).toBe('client');
  });

  it('each Tessera service gets every variable it needs, pointing at services that exist', () => {
    const minio = compose.services['minio']!;
    const init = compose.services['minio-init']!;
    for (const [name, s] of services) {
      const role = composeRole(s);
      if (!role) continue;
      const env = composeEnv(s);
      const replicated = s.entrypoint?.includes(REPLICA_ENTRYPOINT) ?? false;
      const provided = new Set(Object.keys(composeEffectiveEnv(s)));
      for (const v of REQUIRED_ENV[role]) expect(provided.has(v), `${name} needs ${v}`).toBe(true);
      expect(Number(env['GRPC_PORT']), name).toBe(DEFAULT_PORTS[role].grpc);
      expect(Number(env['METRICS_PORT']), name).toBe(DEFAULT_PORTS[role].metrics);
      for (const { host, port } of urlHosts(env['ETCD_ENDPOINTS'] ?? '')) {
        expect(compose.services[host], `${name}: etcd endpoint ${host}`).toBeDefined();
        expect(compose.services[host]?.command?.join(' '), `${name}: etcd listens on ${port}`).toContain(`--advertise-client-urls=http://${host}:${port}`);
      }
      if (REQUIRED_ENV[role].includes('S3_ENDPOINT')) {
        const [s3] = urlHosts(env['S3_ENDPOINT'] ?? '');
        expect(s3?.host, name).toBe('minio');
        expect(s3?.port, name).toBe(9000);
        expect(env['S3_FORCE_PATH_STYLE'], `${name}: MinIO needs path-style`).toBe('true');
        expect(s.environment?.['S3_ACCESS_KEY_ID'], name).toBe(minio.environment?.['MINIO_ROOT_USER']);
        expect(s.environment?.['S3_SECRET_ACCESS_KEY'], name).toBe(minio.environment?.['MINIO_ROOT_PASSWORD']);
        expect(env['S3_BUCKET'], `${name} uses the bucket minio-init creates`).toBe(composeEnv(init)['S3_BUCKET']);
      }
      if (role === 'coordinator') expect(env['AUTOSCALER'], name).toBe('off');
      if (role === 'node-agent') {
        expect(durationSeconds(s.stop_grace_period ?? '10s'), `${name} drain budget`).toBeGreaterThanOrEqual(DRAIN_SECONDS);
        expect(Number(env['LEASE_TTL_SEC'])).toBe(10);
      }
      // A replicated service must not pin per-container identity.
      if ((s.deploy?.replicas ?? 1) > 1) {
        expect(replicated, `${name} derives per-replica identity`).toBe(true);
        expect(s.hostname, name).toBeUndefined();
        for (const v of ['NODE_ID', 'ADVERTISE_ADDRESS']) expect(env[v], `${name} hard-codes ${v}`).toBeUndefined();
        expect(s.ports, `${name} cannot publish fixed host ports`).toBeUndefined();
      } else if (REQUIRED_ENV[role].includes('ADVERTISE_ADDRESS') || env['ADVERTISE_ADDRESS']) {
        expect(env['ADVERTISE_ADDRESS'], name).toBe(`${s.hostname}:${env['GRPC_PORT']}`);
      }
    }
    // The bucket init really creates that bucket with the MinIO credentials.
    const script = init.command?.join(' ') ?? '';
    expect(script).toMatch(/mc mb --ignore-existing "local\/\$\$S3_BUCKET"/);
    expect(script).toContain('http://minio:9000');
    expect(init.environment?.['MINIO_ROOT_USER']).toBe(minio.environment?.['MINIO_ROOT_USER']);
    expect(init.environment?.['MINIO_ROOT_PASSWORD']).toBe(minio.environment?.['MINIO_ROOT_PASSWORD']);
  });

  it('published ports are unique and map to the gRPC (or web console) port of their service', () => {
    const hostPorts = new Set<string>();
    for (const [name, s] of services) {
      for (const p of s.ports ?? []) {
        const parts = p.split(':');
        const container = Number(parts.at(-1));
        const host = parts.slice(0, -1).join(':');
        expect(hostPorts.has(host), `host port ${host} published twice`).toBe(false);
        hostPorts.add(host);
        if (composeRole(s)) expect([Number(composeEnv(s)['GRPC_PORT']), Number(composeEnv(s)['CONSOLE_PORT'])], name).toContain(container);
        if (composeRole(s) === 'coordinator') expect(host.startsWith('127.0.0.1:'), `${name}: published on loopback only`).toBe(true);
      }
    }
  });

  it('the replica entrypoint exists and hands over to node --import tsx', () => {
    const script = read(join(ROOT, REPLICA_ENTRYPOINT));
    expect(script.startsWith('#!/bin/sh')).toBe(true);
    expect(script).toMatch(/^set -eu$/m);
    expect(script).toMatch(/^exec node --import tsx "\$@"$/m);
    for (const v of ['NODE_ID', 'ADVERTISE_ADDRESS']) expect(script).toMatch(new RegExp(`export ${v}=`));
  });

  it('each process accepts its configuration (<role>/config.ts) and shuts down inside stop_grace_period', async () => {
    for (const [name, s] of services) {
      const role = composeRole(s);
      if (!role) continue;
      const env = composeEffectiveEnv(s);
      const cfg = (await roleConfigLoader(role))(env);
      expect(cfg['BIND_HOST'], name).toBe('0.0.0.0');
      expect(cfg['GRPC_PORT'], name).toBe(DEFAULT_PORTS[role].grpc);
      expect(cfg['METRICS_PORT'], name).toBe(DEFAULT_PORTS[role].metrics);
      expect(String(cfg['STAGING_DIR']).startsWith('/'), `${name} STAGING_DIR is absolute`).toBe(true);
      if (role !== 'coordinator') expect(cfg['ADVERTISE_ADDRESS'], name).toBe(env['ADVERTISE_ADDRESS']);
      const unknown = Object.keys(composeEnv(s)).filter((k) => !(k in cfg) && !NOT_IN_CONFIG_SCHEMA.has(k));
      expect(unknown, `${name} sets variables its config does not read`).toEqual([]);
      const grace = z.number().parse(cfg['SHUTDOWN_GRACE_MS']);
      expect(grace + SHUTDOWN_MARGIN_MS, name).toBeLessThanOrEqual(durationSeconds(s.stop_grace_period ?? '10s') * 1000);
      if (role === 'node-agent') expect(z.number().parse(cfg['DRAIN_TIMEOUT_MS']) + HANDBACK_MARGIN_MS, name).toBeLessThanOrEqual(grace);
    }
  });
});

describe('NOT_IN_CONFIG_SCHEMA', () => {
  it('holds only variables a manifest still sets and its process does not read (a stale entry fails)', async () => {
    // Every variable set for a Tessera process (Kubernetes env and ConfigMap keys, Compose
    // environment) that the process's config schema does not read: the list's reasons to exist.
    const unread = new Set<string>();
    const readByAnyRole = new Set<string>();
    for (const { container, role } of tesseraContainers()) {
      const cfg = (await roleConfigLoader(role))(k8sEffectiveEnv(container));
      for (const k of Object.keys(cfg)) readByAnyRole.add(k);
      for (const e of container.env ?? []) if (!(e.name in cfg)) unread.add(e.name);
    }
    for (const cm of ofKind('ConfigMap')) for (const k of Object.keys(cm.data)) if (!readByAnyRole.has(k)) unread.add(k);
    for (const [, s] of services) {
      const role = composeRole(s);
      if (!role) continue;
      const cfg = (await roleConfigLoader(role))(composeEffectiveEnv(s));
      for (const k of Object.keys(composeEnv(s))) if (!(k in cfg)) unread.add(k);
    }
    const stale = [...NOT_IN_CONFIG_SCHEMA].filter((k) => !unread.has(k));
    expect(stale, 'entries no manifest needs any more (the process reads them, or nothing sets them): remove them').toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// Dockerfile and .dockerignore
// ---------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
}
function dockerInstructions(text: string): Instruction[] {
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const joined = lines.join('\n').replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l);
      return { op: (m?.[1] ?? l).toUpperCase(), args: m?.[2] ?? '' };
    });
}
const execForm = (args: string): string[] => z.array(z.string()).parse(JSON.parse(args));

/** .dockerignore semantics: patterns from the context root, `**` any depth, last match wins, a matched directory excludes its contents. */
function dockerIgnored(patterns: string[], path: string): boolean {
  const rules = patterns
    .map((p) => p.trim())
    .filter((p) => p !== '' && !p.startsWith('#'))
    .map((p) => {
      const negate = p.startsWith('!');
      const body = (negate ? p.slice(1) : p).replace(/^\/+/, '').replace(/\/+$/, '');
      const re = body
        .split(/(\*\*\/?|\*|\?)/)
        .map((part) => (part === '**/' || part === '**' ? '(?:.*/)?' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  const segments = path.split('/');
  let ignored = false;
  for (const rule of rules) {
    for (let i = 1; i <= segments.length; i++) {
      if (rule.re.test(segments.slice(0, i).join('/'))) {
        ignored = !rule.negate;
        break;
      }
    }
  }
  return ignored;
}

describe('Dockerfile', () => {
  const dockerfile = read(join(ROOT, 'Dockerfile'));
  const ins = dockerInstructions(dockerfile);
  const ignore = read(join(ROOT, '.dockerignore')).split('\n');
  const runs = ins.filter((i) => i.op === 'RUN').map((i) => i.args);

  it('builds on node:20 (Debian bookworm slim) in /app', () => {
    const froms = ins.filter((i) => i.op === 'FROM');
    expect(froms).toHaveLength(1);
    expect(froms[0]!.args).toMatch(/^node:20[.-]/);
    expect(froms[0]!.args).toBe('node:20-bookworm-slim');
    expect(ins.filter((i) => i.op === 'WORKDIR').map((i) => i.args)).toEqual(['/app']);
  });

  it('installs ffmpeg with apt and production dependencies with npm ci --omit=dev', () => {
    expect(runs.some((r) => /apt-get install\b[^&|;]*\bffmpeg\b/.test(r))).toBe(true);
    expect(
      runs.some((r) => /apt-get update/.test(r) && /rm -rf \/var\/lib\/apt\/lists/.test(r)),
      'apt lists cleaned in the same layer',
    ).toBe(true);
    const npmIndex = ins.findIndex((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
    expect(npmIndex).toBeGreaterThan(-1);
    expect(ins[npmIndex]!.args).toMatch(/--omit=dev/);
    // The lockfile is copied before npm ci (npm ci needs it; the layer caches on it).
    const copyLock = ins.findIndex((i) => i.op === 'COPY' && /package-lock\.json/.test(i.args));
    expect(copyLock).toBeGreaterThan(-1);
    expect(copyLock).toBeLessThan(npmIndex);
    expect(existsSync(join(ROOT, 'package-lock.json'))).toBe(true);
    const pkg = z.looseObject({ dependencies: z.record(z.string(), z.string()) }).parse(JSON.parse(read(join(ROOT, 'package.json'))));
    expect(Object.keys(pkg.dependencies), 'tsx runs the TypeScript at runtime, so it must survive --omit=dev').toContain('tsx');
  });

  it('downloads nothing into a shell and fetches nothing by URL', () => {
    for (const r of runs) {
      expect(r, 'no curl|sh style installs').not.toMatch(/\b(curl|wget)\b[^|]*\|\s*(sudo\s+)?(ba|z|da)?sh\b/);
      expect(r).not.toMatch(/\b(curl|wget)\b/);
    }
    expect(ins.some((i) => i.op === 'ADD' && /https?:\/\//.test(i.args))).toBe(false);
  });

  it('runs as a non-root user', () => {
    const users = ins.filter((i) => i.op === 'USER').map((i) => i.args);
    expect(users.length).toBeGreaterThan(0);
    const last = users.at(-1)!;
    expect(['root', '0', '0:0', 'root:root']).not.toContain(last);
    // Nothing runs after the switch that would need root.
    const lastUser = ins.map((i) => i.op).lastIndexOf('USER');
    expect(ins.slice(lastUser).some((i) => i.op === 'RUN')).toBe(false);
    // The data directories the processes write exist and belong to that user (named volumes inherit it).
    expect(runs.some((r) => /mkdir -p[^&]*\/var\/lib\/tessera/.test(r) && new RegExp(`chown ${last}[: ]`).test(r))).toBe(true);
  });

  it('ENTRYPOINT is node --import tsx and CMD is the coordinator script, which the image contains', () => {
    const entry = ins.filter((i) => i.op === 'ENTRYPOINT');
    const cmd = ins.filter((i) => i.op === 'CMD');
    expect(entry).toHaveLength(1);
    expect(cmd).toHaveLength(1);
    expect(execForm(entry[0]!.args)).toEqual(['node', '--import', 'tsx']);
    const script = execForm(cmd[0]!.args);
    expect(script).toEqual([ROLE_SCRIPT.coordinator]);
    // What compose/k8s pass instead of CMD, and the helper scripts, are not excluded from the context.
    const needed = [
      ...Object.values(ROLE_SCRIPT),
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      HEALTHCHECK_SCRIPT,
      REPLICA_ENTRYPOINT,
      'proto/gen/tessera/v1/jobs.ts',
      'proto/tessera/v1/jobs.proto',
      'common/logger.ts',
    ];
    for (const p of needed) {
      expect(dockerIgnored(ignore, p), `${p} must be in the build context`).toBe(false);
    }
  });

  it('.dockerignore keeps node_modules, local state, VCS data and logs out of the context', () => {
    for (const p of ['node_modules/tsx/package.json', '.tessera/state.json', '.git/HEAD', 'debug.log', 'coordinator/trace.log']) {
      expect(dockerIgnored(ignore, p), p).toBe(true);
    }
  });
});

/** The image installs with --omit=dev: every package the runtime code imports must be a dependency. */
describe('runtime dependencies', () => {
  // deploy/ too: the CLI (cli/cli.ts) runs deploy/local-cluster.ts.
  const RUNTIME_DIRS = ['common', 'coordinator', 'node-agent', 'transcoder', 'uploader', 'sdk', 'deploy', 'proto/gen'];
  function sources(dir: string): string[] {
    const abs = join(ROOT, dir);
    if (!existsSync(abs)) return [];
    return readdirSync(abs, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && /\.(ts|mts|js|mjs)$/.test(e.name) && !/\.test\.[mc]?[tj]s$/.test(e.name))
      .map((e) => join(e.parentPath, e.name));
  }
  const IMPORT_RE = /^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm;
  const builtins = new Set(builtinModules);

  it('bare imports of runtime code resolve to `dependencies`, not `devDependencies`', () => {
    const pkg = z.looseObject({ dependencies: z.record(z.string(), z.string()) }).parse(JSON.parse(read(join(ROOT, 'package.json'))));
    const deps = new Set(Object.keys(pkg.dependencies));
    const missing: string[] = [];
    for (const file of RUNTIME_DIRS.flatMap(sources)) {
      for (const m of read(file).matchAll(IMPORT_RE)) {
        const spec = m[1] ?? m[2] ?? '';
        if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:') || builtins.has(spec.split('/')[0]!)) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (!deps.has(name)) missing.push(`${relative(ROOT, file)} imports ${name}`);
      }
    }
    expect([...new Set(missing)], 'move these packages to "dependencies" in package.json').toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// The entrypoint scripts themselves (land with the services; checked here so a renamed
// entrypoint cannot silently break the image, compose and k8s).
// ---------------------------------------------------------------------------------------

describe('process entrypoints referenced by the image, compose and k8s exist', () => {
  for (const script of Object.values(ROLE_SCRIPT)) {
    it(script, () => {
      expect(existsSync(join(ROOT, script)), `${script} is missing`).toBe(true);
    });
  }
});

// ---------------------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------------------

const METRICS = {
  tessera_jobs: { type: 'gauge', labels: ['state'] },
  tessera_jobs_submitted_total: { type: 'counter', labels: [] },
  tessera_segments_in_flight: { type: 'gauge', labels: [] },
  tessera_nodes: { type: 'gauge', labels: ['state'] },
  tessera_queue_depth: { type: 'gauge', labels: [] },
  tessera_transcode_seconds: { type: 'histogram', labels: [] },
  tessera_transcode_frames_total: { type: 'counter', labels: [] },
  tessera_segment_bytes_streamed_total: { type: 'counter', labels: [] },
  tessera_retries_total: { type: 'counter', labels: ['kind'] },
  tessera_fencing_rejections_total: { type: 'counter', labels: [] },
  tessera_upload_bytes_total: { type: 'counter', labels: [] },
  tessera_autoscaler_decisions_total: { type: 'counter', labels: ['action'] },
} as const satisfies Record<string, { type: 'gauge' | 'counter' | 'histogram'; labels: readonly string[] }>;
type MetricName = keyof typeof METRICS;
/** Labels every series has from the scrape or the registry (instance, job, service). */
const TARGET_LABELS = ['instance', 'job', 'service', 'namespace', 'pod'];

const GridPos = z.strictObject({ h: z.number().int().min(1), w: z.number().int().min(1).max(24), x: z.number().int().min(0).max(23), y: z.number().int().min(0) });
const Target = z.looseObject({ refId: z.string().min(1), expr: z.string().min(1), datasource: z.looseObject({ uid: z.enum(['${datasource}', '${loki}']) }) });
const Panel = z.looseObject({
  id: z.number().int().positive(),
  type: z.enum(['row', 'timeseries', 'stat', 'gauge', 'bargauge', 'heatmap', 'table', 'logs']),
  title: z.string().min(1),
  gridPos: GridPos,
  targets: z.array(Target).optional(),
});
const Dashboard = z.looseObject({
  uid: z.literal('tessera'),
  title: z.string().min(1),
  schemaVersion: z.number().int().min(36).max(41),
  panels: z.array(Panel).min(1),
  templating: z.looseObject({ list: z.array(z.looseObject({ name: z.string(), type: z.string(), query: z.string().optional() })) }),
});

/** Metric name -> base metric (histogram series map to their histogram). */
function baseMetric(series: string): MetricName | undefined {
  if (series in METRICS) return series as MetricName;
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  if (m?.[1] && m[1] in METRICS && METRICS[m[1] as MetricName].type === 'histogram') return m[1] as MetricName;
  return undefined;
}

describe('deploy/grafana/tessera-dashboard.json', () => {
  const raw: unknown = JSON.parse(read(join(DEPLOY, 'grafana', 'tessera-dashboard.json')));
  const parsed = Dashboard.safeParse(raw);
  const dash = parsed.success ? parsed.data : undefined;
  const panels = dash?.panels ?? [];
  // Metric panels (Prometheus); the job-log panel (Loki) is checked on its own below.
  const queryPanels = panels.filter((p) => p.type !== 'row' && p.type !== 'logs');
  const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

  it('is a dashboard with uid tessera and a Prometheus datasource variable', () => {
    expect(parsed.success, parsed.success ? '' : z.prettifyError(parsed.error)).toBe(true);
    expect(dash?.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size, 'panel ids unique').toBe(ids.length);
  });

  it('panels fit the 24-column grid without overlapping', () => {
    for (const p of panels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    for (let i = 0; i < panels.length; i++) {
      for (let j = i + 1; j < panels.length; j++) {
        const a = panels[i]!.gridPos;
        const b = panels[j]!.gridPos;
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        expect(overlap, `${panels[i]!.title} overlaps ${panels[j]!.title}`).toBe(false);
      }
    }
  });

  it('every panel queries only the Tessera metrics, and every metric has a panel', () => {
    const covered = new Set<MetricName>();
    for (const p of queryPanels) expect(p.targets?.length, `${p.title} has a query`).toBeGreaterThan(0);
    for (const { panel, expr } of exprs) {
      const series = [...expr.matchAll(/\b(tessera_[a-z_]+)\b/g)].map((m) => m[1]!);
      expect(series.length, `${panel}: ${expr} references a Tessera metric`).toBeGreaterThan(0);
      for (const s of series) {
        const base = baseMetric(s);
        expect(base, `${panel}: unknown metric ${s}`).toBeDefined();
        if (base) covered.add(base);
      }
    }
    expect([...covered].sort()).toEqual(Object.keys(METRICS).sort());
  });

  it('queries are well-formed PromQL for their metric types and labels', () => {
    for (const { panel, expr } of exprs) {
      let depth = 0;
      for (const ch of expr) {
        depth += ch === '(' ? 1 : ch === ')' ? -1 : 0;
        expect(depth, `${panel}: ${expr}`).toBeGreaterThanOrEqual(0);
      }
      expect(depth, `${panel}: unbalanced parentheses in ${expr}`).toBe(0);
      for (const m of expr.matchAll(/\b(tessera_[a-z_]+)\b(\{[^}]*\})?(\[[^\]]+\])?/g)) {
        const base = baseMetric(m[1]!);
        if (!base) continue;
        const { type, labels } = METRICS[base];
        // Counters and histogram series are only meaningful as rates/increases.
        if (type !== 'gauge') expect(m[3], `${panel}: ${m[1]} needs a range for rate()/increase()`).toBeDefined();
        if (type === 'histogram') expect(m[1], panel).toMatch(/_(bucket|sum|count)$/);
        for (const [, label] of (m[2] ?? '').matchAll(/([a-z_]+)\s*=~?/g)) expect(labels as readonly string[], `${panel}: ${m[1]} has no label ${label}`).toContain(label);
      }
      for (const m of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
        const used = [...expr.matchAll(/\b(tessera_[a-z_]+)\b/g)].map((x) => baseMetric(x[1]!)).filter((b): b is MetricName => b !== undefined);
        const allowed = new Set<string>([...TARGET_LABELS, ...used.flatMap((b) => [...METRICS[b].labels, ...(METRICS[b].type === 'histogram' ? ['le'] : [])])]);
        for (const label of m[1]!
          .split(',')
          .map((l) => l.trim())
          .filter(Boolean))
          expect(allowed.has(label), `${panel}: by (${label}) in ${expr}`).toBe(true);
      }
      if (/histogram_quantile/.test(expr)) expect(expr, panel).toMatch(/histogram_quantile\(0?\.\d+,\s*sum by \([^)]*\ble\b[^)]*\) \(rate\(tessera_\w+_bucket\[/);
    }
  });

  it('links from a job to its logs: a job id box, a Loki log panel and an Explore link with the same query', () => {
    const vars = dash?.templating.list ?? [];
    expect(vars).toContainEqual(expect.objectContaining({ name: 'loki', type: 'datasource', query: 'loki' }));
    expect(vars).toContainEqual(expect.objectContaining({ name: 'job_id', type: 'textbox' }));
    const logs = panels.filter((p) => p.type === 'logs');
    expect(logs).toHaveLength(1);
    const expr = logs[0]!.targets?.[0]?.expr ?? '';
    expect(logs[0]!.targets?.[0]?.datasource.uid).toBe('${loki}');
    // Every Tessera stream (the job label Alloy sets), filtered by the jobId the lines carry.
    expect(expr).toBe('{job=~"tessera-.+"} | jobId="$job_id"');
    for (const job of ['tessera-coordinator', 'tessera-node-agent', 'tessera-uploader']) expect(new RegExp(`^(?:${/job=~"([^"]+)"/.exec(expr)![1]})$`).test(job), job).toBe(true);
    const links = [
      ...z.array(z.looseObject({ url: z.string() })).parse((raw as { links: unknown }).links),
      ...z.array(z.looseObject({ url: z.string() })).parse((logs[0] as { links?: unknown }).links),
    ];
    expect(links.length).toBeGreaterThanOrEqual(2);
    for (const l of links) {
      const url = new URL(l.url, 'http://grafana.local');
      expect(url.pathname).toBe('/explore');
      const panes = z
        .record(z.string(), z.looseObject({ datasource: z.string(), queries: z.array(z.looseObject({ expr: z.string(), datasource: z.looseObject({ type: z.literal('loki'), uid: z.string() }) })) }))
        .parse(JSON.parse(url.searchParams.get('panes') ?? '{}'));
      const pane = Object.values(panes)[0]!;
      expect(pane.queries[0]!.expr).toBe(expr);
      // The uid the Compose provisioning gives Loki (and docs/deploy.md asks Kubernetes users to use).
      expect(pane.datasource).toBe(LOKI_UID);
      expect(pane.queries[0]!.datasource.uid).toBe(LOKI_UID);
    }
  });
});

// ---------------------------------------------------------------------------------------
// Log shipping: Loki and Grafana Alloy (Compose add-on and deploy/k8s/logging)
// ---------------------------------------------------------------------------------------

const LOKI_UID = 'loki';
const TESSERA_LOG_LABELS = ['service', 'node', 'job'];

/** One `rule { … }` of an Alloy discovery.relabel block (the attributes Prometheus relabeling knows). */
const RelabelRule = z.strictObject({
  source_labels: z.array(z.string()).optional(),
  separator: z.string().optional(),
  regex: z.string().optional(),
  action: z.enum(['replace', 'keep', 'drop']).optional(),
  target_label: z.string().optional(),
  replacement: z.string().optional(),
});
type RelabelRuleT = z.infer<typeof RelabelRule>;

/** Alloy config text without its `//` comment lines. */
const alloyText = (path: string): string =>
  read(path)
    .split('\n')
    .filter((l) => !/^\s*\/\//.test(l))
    .join('\n');

/** The body of the first `<kind> "<name>" { … }` block (braces matched, strings skipped). */
function alloyBlock(text: string, kind: string, name?: string): string | undefined {
  const m = new RegExp(`(?:^|\\n)\\s*${kind.replace(/\./g, '\\.')}\\s+${name ? `"${name}"` : '"[^"]*"'}\\s*\\{`).exec(text);
  if (!m) return undefined;
  let depth = 1;
  let inString = false;
  for (let i = m.index + m[0].length; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === '{') depth++;
    else if (ch === '}' && --depth === 0) return text.slice(m.index + m[0].length, i);
  }
  throw new Error(`unterminated ${kind} block`);
}

/** `key = <JSON-compatible literal>` attributes of a block body (one per line). */
function alloyAttributes(body: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const m of body.matchAll(/^\s*([a-z_]+)\s*=\s*(".*"|\[.*\])\s*$/gm)) out[m[1]!] = JSON.parse(m[2]!);
  return out;
}

/** The relabel rules of `discovery.relabel "<name>"`, in order. */
function relabelRules(text: string, name: string): RelabelRuleT[] {
  const body = alloyBlock(text, 'discovery.relabel', name);
  if (body === undefined) throw new Error(`no discovery.relabel "${name}"`);
  return [...body.matchAll(/\brule\s*\{([^}]*)\}/g)].map((m) => RelabelRule.parse(alloyAttributes(m[1]!)));
}

/** Prometheus relabeling as Alloy applies it: anchored regexes, $1 replacements; undefined = target dropped. */
function relabel(labels: Record<string, string>, rules: readonly RelabelRuleT[]): Record<string, string> | undefined {
  const out = { ...labels };
  for (const r of rules) {
    const value = (r.source_labels ?? []).map((l) => out[l] ?? '').join(r.separator ?? ';');
    const m = new RegExp(`^(?:${r.regex ?? '(.*)'})$`).exec(value);
    const action = r.action ?? 'replace';
    if (action === 'keep' && !m) return undefined;
    if (action === 'drop' && m) return undefined;
    if (action === 'replace' && m && r.target_label) out[r.target_label] = (r.replacement ?? '$1').replace(/\$(\d+)/g, (_, i: string) => m[Number(i)] ?? '');
  }
  return Object.fromEntries(Object.entries(out).filter(([k]) => !k.startsWith('__')));
}

/** The Loki push URL of `loki.write`, and the stages of `loki.process` that turn pino lines into labels and metadata. */
function alloyPipeline(text: string): { pushUrl: URL; jsonKeys: string[]; metadata: string[]; source: string } {
  const write = alloyBlock(text, 'loki.write');
  const endpoint = write && alloyBlock(`x "y" {${write}}`.replace(/endpoint\s*\{/, 'endpoint "e" {'), 'endpoint', 'e');
  const url = alloyAttributes(endpoint ?? '').url;
  const proc = alloyBlock(text, 'loki.process') ?? '';
  const keysOf = (stage: string): string[] => {
    const m = new RegExp(`stage\\.${stage}\\s*\\{[^}]*?(?:expressions|values)\\s*=\\s*\\{([^}]*)\\}`).exec(proc);
    return m ? [...m[1]!.matchAll(/([A-Za-z_]+)\s*=/g)].map((x) => x[1]!) : [];
  };
  const source = /\bloki\.source\.(docker|kubernetes|file)\s+"/.exec(text)?.[1] ?? '';
  return { pushUrl: new URL(String(url)), jsonKeys: keysOf('json'), metadata: keysOf('structured_metadata'), source };
}

/** Prometheus-style label name of a Kubernetes/Docker label key (app.kubernetes.io/name → app_kubernetes_io_name). */
const metaName = (k: string): string => k.replace(/[^A-Za-z0-9_]/g, '_');

describe('log shipping (Loki + Alloy)', () => {
  const lokiConfig = z.looseObject({ server: z.looseObject({ http_listen_port: z.number() }), limits_config: z.looseObject({ allow_structured_metadata: z.literal(true) }) });

  it('Loki: one configuration for Compose and Kubernetes, accepting structured metadata (jobId, traceId)', () => {
    const compose = read(join(DEPLOY, 'logging', 'loki-config.yaml'));
    expect(read(join(K8S, 'logging', 'loki-config.yaml'))).toBe(compose);
    expect(lokiConfig.parse(yamlDocuments(join(DEPLOY, 'logging', 'loki-config.yaml'), false)[0]).server.http_listen_port).toBe(3100);
  });

  describe('Compose (deploy/compose.ops.yaml)', () => {
    const ComposeAddon = z.looseObject({ services: z.record(DnsLabel, ComposeService), volumes: z.record(DnsLabel, z.null()) });
    const ops = ComposeAddon.parse(yamlDocuments(join(DEPLOY, 'compose.ops.yaml'), true)[0]);
    const text = alloyText(join(DEPLOY, 'logging', 'compose.alloy'));
    const mounts = (name: string): Map<string, string> =>
      new Map(
        (ops.services[name]?.volumes ?? []).map((v) => {
          const [src, dst] = v.split(':') as [string, string];
          return [dst, src];
        }),
      );

    it('runs Loki, Alloy (reading the Docker socket read-only) and Grafana with both data sources', () => {
      for (const name of ['loki', 'alloy', 'grafana']) expect(Object.keys(ops.services), name).toContain(name);
      expect(mounts('loki').get('/etc/loki/loki-config.yaml')).toBe('./logging/loki-config.yaml');
      expect(ops.services.loki?.command).toContain('-config.file=/etc/loki/loki-config.yaml');
      expect(mounts('alloy').get('/etc/alloy/config.alloy')).toBe('./logging/compose.alloy');
      expect(ops.services.alloy?.command?.slice(0, 2)).toEqual(['run', '/etc/alloy/config.alloy']);
      expect(ops.services.alloy?.volumes).toContain('/var/run/docker.sock:/var/run/docker.sock:ro');
      for (const name of ['loki', 'alloy', 'grafana']) {
        for (const [, src] of mounts(name)) if (src.startsWith('./')) expect(existsSync(join(DEPLOY, src)), `${name} mounts ${src}`).toBe(true);
        for (const [, src] of mounts(name)) if (isNamedVolume(src)) expect(Object.keys(ops.volumes), `${name}: volume ${src}`).toContain(src);
      }
      const ds = z
        .looseObject({ datasources: z.array(z.looseObject({ uid: z.string(), type: z.string(), url: z.string() })) })
        .parse(yamlDocuments(join(DEPLOY, 'grafana', 'provisioning', 'datasources', 'tessera.yaml'), false)[0]).datasources;
      expect(ds).toContainEqual(expect.objectContaining({ uid: LOKI_UID, type: 'loki', url: 'http://loki:3100' }));
      expect(ds).toContainEqual(expect.objectContaining({ type: 'prometheus', url: 'http://prometheus:9090' }));
      expect(mounts('grafana').get('/var/lib/grafana/dashboards/tessera-dashboard.json')).toBe('./grafana/tessera-dashboard.json');
    });

    it("Alloy ships every Tessera service's logs, and only those, labelled service, node and job", () => {
      expect(alloyPipeline(text).source).toBe('docker');
      expect(text).toContain(`"com.docker.compose.project=${compose.name}"`);
      const rules = relabelRules(text, 'tessera');
      const container = (service: string): Record<string, string> => ({
        __meta_docker_container_label_com_docker_compose_service: service,
        __meta_docker_container_name: `/${compose.name}-${service}-1`,
      });
      const tessera = [
        ...services.filter(([, s]) => composeRole(s)).map(([n, s]) => [n, composeRole(s)!] as const),
        ...Object.entries(ops.services)
          .filter(([, s]) => s.command?.[0] === 'cli/cli.ts')
          .map(([n]) => [n, n] as const),
      ];
      expect(tessera.map(([n]) => n).sort()).toEqual(['backup', 'coordinator-1', 'coordinator-2', 'node-agent', 'uploader']);
      for (const [name, role] of tessera) {
        expect(relabel(container(name), rules), name).toEqual({ service: role, node: `${compose.name}-${name}-1`, job: `tessera-${role}` });
      }
      const others = [...services.filter(([, s]) => !composeRole(s)).map(([n]) => n), ...Object.keys(ops.services).filter((n) => ops.services[n]?.command?.[0] !== 'cli/cli.ts')];
      expect(others).toEqual(expect.arrayContaining(['etcd', 'minio', 'loki', 'alloy', 'grafana', 'prometheus']));
      for (const name of others) expect(relabel(container(name), rules), `${name} is not shipped`).toBeUndefined();
    });

    it('Alloy keeps jobId and traceId as structured metadata and pushes to the Loki service', () => {
      const p = alloyPipeline(text);
      expect(p.jsonKeys).toEqual(expect.arrayContaining(['jobId', 'traceId']));
      expect(p.metadata.sort()).toEqual(['jobId', 'traceId']);
      expect(p.pushUrl.hostname).toBe('loki');
      expect(Number(p.pushUrl.port)).toBe(3100);
      expect(p.pushUrl.pathname).toBe('/loki/api/v1/push');
    });
  });

  describe('Kubernetes (deploy/k8s/logging)', () => {
    const dir = join(K8S, 'logging');
    const kust = z
      .looseObject({ namespace: z.literal(NAMESPACE), resources: z.array(z.string()), configMapGenerator: z.array(z.looseObject({ name: z.string(), files: z.array(z.string()) })) })
      .parse(yamlDocuments(join(dir, 'kustomization.yaml'), false)[0]);
    const docs = kust.resources.flatMap((f) => yamlDocuments(join(dir, f), false)) as {
      kind: string;
      metadata: { name: string; namespace?: string; labels?: Record<string, string> };
      spec?: any;
      rules?: any;
      roleRef?: any;
      subjects?: any;
    }[];
    const get = (kind: string, name: string) => {
      const o = docs.find((d) => d.kind === kind && d.metadata.name === name);
      if (!o) throw new Error(`no ${kind} ${name}`);
      return o;
    };
    const text = alloyText(join(dir, 'config.alloy'));

    it('Loki (StatefulSet + Service on 3100) and Alloy, configured from the generated ConfigMaps, all in the tessera namespace', () => {
      for (const f of [...kust.resources, ...kust.configMapGenerator.flatMap((g) => g.files)]) expect(existsSync(join(dir, f)), f).toBe(true);
      for (const d of docs) expect(d.metadata.namespace, `${d.kind} ${d.metadata.name}`).toBe(NAMESPACE);
      const svc = get('Service', 'tessera-loki');
      const loki = get('StatefulSet', 'tessera-loki');
      expect(isSubset(svc.spec.selector, loki.spec.template.metadata.labels)).toBe(true);
      expect(svc.spec.ports[0].port).toBe(3100);
      expect(loki.spec.template.spec.containers[0].ports[0].containerPort).toBe(3100);
      const volumes = (o: typeof loki): string[] => o.spec.template.spec.volumes.map((v: { configMap?: { name: string } }) => v.configMap?.name).filter(Boolean);
      const generated = kust.configMapGenerator.map((g) => g.name);
      expect(generated).toEqual(expect.arrayContaining([...volumes(loki), ...volumes(get('Deployment', 'tessera-alloy'))]));
      expect(loki.spec.template.spec.containers[0].args).toContain('-config.file=/etc/loki/loki-config.yaml');
      expect(get('Deployment', 'tessera-alloy').spec.template.spec.containers[0].args.slice(0, 2)).toEqual(['run', '/etc/alloy/config.alloy']);
    });

    it('Alloy may read pods and their logs in the namespace, nothing else', () => {
      const dep = get('Deployment', 'tessera-alloy');
      const binding = get('RoleBinding', 'tessera-alloy-logs');
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: dep.spec.template.spec.serviceAccountName, namespace: NAMESPACE }]);
      expect(get('ServiceAccount', dep.spec.template.spec.serviceAccountName)).toBeDefined();
      expect(get('Role', binding.roleRef.name).rules).toEqual([
        { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
      ]);
      expect(docs.some((d) => d.kind.startsWith('Cluster'))).toBe(false);
    });

    it("Alloy ships every Tessera pod's logs, and only those, labelled service, node, pod and job", () => {
      expect(alloyPipeline(text).source).toBe('kubernetes');
      expect(text).toMatch(new RegExp(`names\\s*=\\s*\\["${NAMESPACE}"\\]`));
      const rules = relabelRules(text, 'tessera');
      const pod = (labels: Record<string, string>, name: string): Record<string, string> => ({
        ...Object.fromEntries(Object.entries(labels).map(([k, v]) => [`__meta_kubernetes_pod_label_${metaName(k)}`, v])),
        __meta_kubernetes_pod_node_name: 'worker-1',
        __meta_kubernetes_pod_name: `${name}-0`,
      });
      const backup = yamlDocuments(join(K8S, 'backup', 'etcd-backup.yaml'), false).find((d) => (d as { kind?: string }).kind === 'CronJob') as {
        metadata: { name: string };
        spec: { jobTemplate: { spec: { template: { metadata: { labels: Record<string, string> } } } } };
      };
      const tessera = [
        ...tesseraContainers().map((t) => ({ name: t.workload.metadata.name, labels: t.workload.spec.template.metadata.labels ?? {}, role: t.role as string })),
        { name: backup.metadata.name, labels: backup.spec.jobTemplate.spec.template.metadata.labels, role: 'backup' },
      ];
      expect(tessera.map((t) => t.role).sort()).toEqual(['backup', 'coordinator', 'node-agent', 'uploader']);
      for (const t of tessera) expect(relabel(pod(t.labels, t.name), rules), t.name).toEqual({ service: t.role, node: 'worker-1', pod: `${t.name}-0`, job: `tessera-${t.role}` });
      const others = [...workloads().filter((w) => !tesseraContainers().some((t) => t.workload === w)), ...docs.filter((d) => d.kind === 'Deployment' || d.kind === 'StatefulSet')];
      expect(others.map((o) => o.metadata.name)).toEqual(expect.arrayContaining(['tessera-loki', 'tessera-alloy']));
      for (const o of others)
        expect(
          relabel(pod((o as { spec: { template: { metadata: { labels?: Record<string, string> } } } }).spec.template.metadata.labels ?? {}, o.metadata.name), rules),
          `${o.metadata.name} is not shipped`,
        ).toBeUndefined();
      for (const label of TESSERA_LOG_LABELS) expect(rules.map((r) => r.target_label)).toContain(label);
    });

    it('Alloy keeps jobId and traceId as structured metadata and pushes to the Loki Service', () => {
      const p = alloyPipeline(text);
      expect(p.jsonKeys).toEqual(expect.arrayContaining(['jobId', 'traceId']));
      expect(p.metadata.sort()).toEqual(['jobId', 'traceId']);
      const svc = get('Service', 'tessera-loki');
      expect(p.pushUrl.hostname).toBe(`${svc.metadata.name}.${NAMESPACE}.svc`);
      expect(Number(p.pushUrl.port)).toBe(svc.spec.ports[0].port);
      expect(p.pushUrl.pathname).toBe('/loki/api/v1/push');
    });
  });
});

// ---------------------------------------------------------------------------------------
// docs/deploy.md
// ---------------------------------------------------------------------------------------

describe('docs/deploy.md', () => {
  const docsPath = join(ROOT, 'docs', 'deploy.md');
  it('documents every variable the manifests set for Tessera processes, and how to run them', () => {
    const docs = read(docsPath);
    const names = new Set<string>();
    for (const [, s] of services) if (composeRole(s)) for (const k of Object.keys(s.environment ?? {})) names.add(k);
    for (const { container } of tesseraContainers()) for (const k of envNames(container)) names.add(k);
    for (const name of [...names].sort()) expect(docs, `docs/deploy.md should explain ${name}`).toMatch(new RegExp(`\\b${name}\\b`));
    expect(docs).toContain('docker compose -f deploy/compose.yaml up');
    expect(docs).toContain('kubectl apply -k deploy/k8s');
    expect(docs).toMatch(/SIGTERM/);
    expect(docs).toMatch(/drain/i);
  });
});
