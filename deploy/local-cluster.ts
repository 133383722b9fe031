import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { openSync, closeSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { connect } from 'node:net';
import { Etcd3 } from 'etcd3';
import { grpcServing } from '../common/health-client.js';
import { processAlive } from '../common/process.js';
import { CHECKOUT_ROOT, nodeArgs } from '../common/node-entry.js';
import { freePort } from './ports.js';
import { LocalCa, tlsEnv, type CertFiles } from './certs.js';
import { channelCredentials, loadTls, type TlsMaterial } from '../common/tls.js';

/** The checkout (also when this module runs from the JavaScript build: common/node-entry.ts). */
export const REPO_ROOT = CHECKOUT_ROOT;

export interface LocalClusterOptions {
  /** Folder for etcd data, S3 data, staging and logs (default ./.tessera). */
  dir: string;
  nodes: number;
  slots: number;
  coordinators?: number;
  etcdMembers?: 1 | 3;
  leaseTtlSec?: number;
  /** Extra environment for every Tessera process (timers shrink in tests). */
  env?: Record<string, string>;
  nodeEnv?: Record<string, string>;
  coordinatorEnv?: Record<string, string>;
  /** Extra environment for uploaders (tests route their S3 traffic through a throttled link). */
  uploaderEnv?: Record<string, string>;
  /** CPU list (taskset) per node agent, by index: benchmarks pin agents to cores. */
  nodeCpus?: string[];
  /** CPU list (taskset) for etcd, the S3 server, coordinators and the uploader (benchmarks). */
  controlCpus?: string;
  /** Detached processes outlive this one (`tessera up`); attached ones die with it (tests). */
  detached?: boolean;
  /**
   * Directories (comma-separated) the coordinators take local-path inputs from; unset: none
   * (local files still go in by upload, which needs no root).
   */
  inputRoot?: string;
  logLevel?: string;
  bucket?: string;
  /**
   * Mutual TLS everywhere: a local CA under `<dir>/tls` issues a certificate per process (its
   * role in the OU, its id as DNS name); etcd and the S3 server serve TLS too.
   */
  tls?: boolean;
  /**
   * The address etcd (besides loopback), the uploader and the coordinators listen on and
   * advertise (default 127.0.0.1). The network lab (test/lab-net.ts) sets the host end of a veth
   * link, so that node agents in network namespaces reach them.
   */
  serviceHost?: string;
  /**
   * Segments and parts go between the processes by path, not through gRPC (LOCAL_HANDOFF: they
   * share this machine and its staging directory). `tessera up` turns it on; tests leave it off
   * unless they test it, so the streams stay what they exercise.
   */
  localHandoff?: boolean;
}

export interface ProcInfo {
  name: string;
  role: 'etcd' | 's3' | 'coordinator' | 'node-agent' | 'uploader';
  pid: number;
  port?: number;
  log: string;
}

/** What `tessera up` leaves in `<dir>/cluster.json` for later commands. */
export interface ClusterFile {
  dir: string;
  etcdEndpoints: string[];
  s3Endpoint: string;
  bucket: string;
  coordinators: string[];
  /** The web console of each coordinator (docs/console.md). */
  consoles?: string[];
  processes: ProcInfo[];
  startedAtMs: number;
  /** With `--tls`: the CLI's client certificate (and the CA, which also signs the S3 server's). */
  tls?: CertFiles;
}

const TS_ENTRY: Record<'coordinator' | 'node-agent' | 'uploader', string> = {
  coordinator: 'coordinator/main.ts',
  'node-agent': 'node-agent/main.ts',
  uploader: 'uploader/main.ts',
};

/**
 * A whole Tessera cluster on this machine: etcd (the system binary) on free ports with its data
 * under `dir`, the local S3-protocol server, coordinators, node agents and an uploader — each a
 * real process. Used by `tessera up` and by the integration tests.
 */
export class LocalCluster {
  readonly procs = new Map<string, { info: ProcInfo; child?: ChildProcess }>();
  /**
   * Processes that ended by themselves with a failure (an exit code other than 0, not a signal
   * this cluster or a test sent): a crash, whose log tail `crashReport` gives.
   */
  readonly crashes: { name: string; code: number; atMs: number; log: string }[] = [];
  etcdEndpoints: string[] = [];
  s3Endpoint = '';
  coordinators: string[] = [];
  /** The web console URL of each coordinator, in the order of `coordinators`. */
  consoles: string[] = [];
  private nodeSeq = 0;
  private etcd: Etcd3 | undefined;
  private ca: LocalCa | undefined;
  /** The CLI's / tests' client certificate when the cluster runs TLS. */
  clientCert: CertFiles | undefined;

  private constructor(readonly o: Required<Pick<LocalClusterOptions, 'dir' | 'nodes' | 'slots'>> & LocalClusterOptions) {}

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    const c = new LocalCluster({ ...opts, dir: resolve(opts.dir) });
    try {
      await c.boot();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get bucket(): string {
    return this.o.bucket ?? 'tessera-output';
  }

  private get host(): string {
    return this.o.serviceHost ?? '127.0.0.1';
  }

  private get logDir(): string {
    return join(this.o.dir, 'logs');
  }

  private async boot(): Promise<void> {
    await mkdir(this.logDir, { recursive: true });
    let s3Tls: string[] = [];
    if (this.o.tls) {
      const tlsDir = join(this.o.dir, 'tls');
      await rm(tlsDir, { recursive: true, force: true }); // a fresh CA per cluster
      this.ca = await LocalCa.open(tlsDir);
      this.clientCert = await this.ca.issue('client', { role: 'client', names: ['tessera-cli'] });
      const s3 = await this.ca.issue('s3', { role: 's3', names: ['localhost'], ips: ['127.0.0.1'] });
      s3Tls = [s3.cert, s3.key];
    }
    // etcd and the S3 server start side by side; then every Tessera process at once (each only
    // needs etcd and S3 to be up: the coordinator finds the uploader and the agents in etcd).
    const s3Port = await freePort();
    this.s3Endpoint = `${this.o.tls ? 'https' : 'http'}://127.0.0.1:${s3Port}`;
    this.spawnTs('s3', 's3', 'deploy/s3-server-main.ts', {}, [join(this.o.dir, 's3'), String(s3Port), `${this.bucket},tessera-input`, this.o.detached ? '0' : String(process.pid), ...s3Tls], s3Port);
    await Promise.all([this.startEtcd(this.o.etcdMembers ?? 1), waitFor(() => httpOk(`${this.s3Endpoint}/`, this.clientTls()?.ca), BOOT_WAIT_MS, 'the local S3 server')]);
    const coordinatorCount = this.o.coordinators ?? 1;
    const starting: Promise<unknown>[] = [this.startUploader()];
    for (let i = 0; i < coordinatorCount; i++) starting.push(this.startCoordinator());
    for (let i = 0; i < this.o.nodes; i++) starting.push(this.addNode(this.o.nodeCpus?.[i] ? { cpus: this.o.nodeCpus[i]! } : {}));
    await Promise.all(starting);
    await this.writeClusterFile();
  }

  private async startEtcd(members: number): Promise<void> {
    const specs = [];
    for (let i = 0; i < members; i++) specs.push({ name: `etcd${i}`, client: await freePort(), peer: await freePort() });
    const initial = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peer}`).join(',');
    const scheme = this.ca ? 'https' : 'http';
    const etcdCert = this.ca ? await this.ca.issue('etcd', { role: 'etcd', names: ['localhost'], ips: ['127.0.0.1'] }) : undefined;
    // Client links are mutual TLS with the cluster CA; peer links stay on loopback in plaintext.
    const tlsFlags = etcdCert ? ['--cert-file', etcdCert.cert, '--key-file', etcdCert.key, '--trusted-ca-file', etcdCert.ca, '--client-cert-auth'] : [];
    for (const s of specs) {
      const dataDir = join(this.o.dir, 'etcd', s.name);
      await rm(dataDir, { recursive: true, force: true });
      await mkdir(dataDir, { recursive: true });
      this.etcdMembers.set(s.name, {
        port: s.client,
        args: [
          '--name',
          s.name,
          '--data-dir',
          dataDir,
          '--listen-client-urls',
          this.host === '127.0.0.1' ? `${scheme}://127.0.0.1:${s.client}` : `${scheme}://127.0.0.1:${s.client},${scheme}://${this.host}:${s.client}`,
          '--advertise-client-urls',
          `${scheme}://${this.host}:${s.client}`,
          ...tlsFlags,
          '--listen-peer-urls',
          `http://127.0.0.1:${s.peer}`,
          '--initial-advertise-peer-urls',
          `http://127.0.0.1:${s.peer}`,
          '--initial-cluster',
          initial,
          '--initial-cluster-state',
          'new',
          '--heartbeat-interval',
          '100',
          '--election-timeout',
          '1000',
          '--log-level',
          'warn',
        ],
      });
      this.spawn(s.name, 'etcd', 'etcd', this.etcdMembers.get(s.name)!.args, {}, s.client);
    }
    this.etcdEndpoints = specs.map((s) => `${scheme}://${this.host}:${s.client}`);
    this.etcd = this.newEtcdClient();
    await this.etcdHealthy();
  }

  /** How each etcd member was started (a restart re-uses its data dir, ports and flags). */
  private readonly etcdMembers = new Map<string, { port: number; args: string[] }>();

  /** Where etcd member `name` keeps its data and how its peers reach it (restore tests rebuild its data dir). */
  etcdMember(name: string): { dataDir: string; peerUrl: string } {
    const m = this.etcdMembers.get(name);
    if (!m) throw new Error(`no etcd member ${name}`);
    const arg = (flag: string): string => m.args[m.args.indexOf(flag) + 1]!;
    return { dataDir: arg('--data-dir'), peerUrl: arg('--initial-advertise-peer-urls') };
  }

  /** Kills one etcd member (`etcd0`…) and starts it again on its data dir: a member restart. */
  async restartEtcd(name: string): Promise<void> {
    const m = this.etcdMembers.get(name);
    if (!m) throw new Error(`no etcd member ${name}`);
    await this.stopProcess(name, 'SIGKILL');
    this.spawn(name, 'etcd', 'etcd', m.args, {}, m.port);
    await this.etcdHealthy();
  }

  private async etcdHealthy(): Promise<void> {
    // First until each member accepts connections: a gRPC call made before that puts the client's
    // channel into reconnect backoff (1 s, 1.6 s, 2.6 s…), which cost up to 5 s per cluster start.
    for (const m of this.etcdMembers.values()) await waitFor(() => tcpOpen(m.port), 30_000, 'etcd to listen');
    await waitFor(
      async () => {
        try {
          await this.client()
            .get('health')
            .options({ deadline: new Date(Date.now() + 1000) })
            .string();
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      'etcd',
    );
  }

  private baseEnv(): Record<string, string> {
    return {
      ETCD_ENDPOINTS: this.etcdEndpoints.join(','),
      ETCD_PREFIX: '/tessera/',
      S3_ENDPOINT: this.s3Endpoint,
      S3_BUCKET: this.bucket,
      S3_ACCESS_KEY_ID: 'S3RVER',
      S3_SECRET_ACCESS_KEY: 'S3RVER',
      S3_FORCE_PATH_STYLE: 'true',
      STAGING_DIR: join(this.o.dir, 'staging'),
      ...(this.o.localHandoff ? { LOCAL_HANDOFF: 'true' } : {}),
      LOG_LEVEL: this.o.logLevel ?? 'info',
      LEASE_TTL_SEC: String(this.o.leaseTtlSec ?? 10),
      BIND_HOST: this.host,
      // The SDK version in package-lock.json supports Node 20; its notice about later releases is noise here.
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      // Attached clusters (tests) stop when their runner dies, even by SIGKILL.
      ...(this.o.detached ? {} : { EXIT_WITH_PARENT_PID: String(process.pid) }),
      ...(this.o.env ?? {}),
    };
  }

  async startUploader(name = 'uploader-0'): Promise<ProcInfo> {
    const certEnv = this.ca ? tlsEnv(await this.ca.issue(name, { role: 'uploader', names: [name] })) : {};
    const info = this.spawnTs(name, 'uploader', TS_ENTRY.uploader, { UPLOADER_ID: name, GRPC_PORT: '0', METRICS_PORT: '0', ...certEnv, ...(this.o.uploaderEnv ?? {}) });
    await waitFor(async () => (await this.client().get(`/tessera/uploaders/${name}`).string()) !== null, BOOT_WAIT_MS, name);
    return info;
  }

  /**
   * Starts one more coordinator; `netns`/`host`: inside a network namespace (ip netns exec),
   * listening on and advertising that namespace's address (the network lab).
   */
  async startCoordinator(opts: { netns?: string; host?: string } = {}): Promise<string> {
    const port = await freePort();
    const consolePort = await freePort();
    const name = `coordinator-${this.coordinators.length}`;
    const address = `${opts.host ?? this.host}:${port}`;
    this.coordinators.push(address);
    // Under TLS the console serves the coordinator's certificate, which names localhost.
    this.consoles.push(this.ca && !opts.host ? `https://localhost:${consolePort}/` : `${this.ca ? 'https' : 'http'}://${opts.host ?? this.host}:${consolePort}/`);
    const certEnv = this.ca ? tlsEnv(await this.ca.issue(name, { role: 'coordinator', names: [name, 'localhost'], ips: ['127.0.0.1'] })) : {};
    this.spawnTs(
      name,
      'coordinator',
      TS_ENTRY.coordinator,
      {
        ...certEnv,
        COORDINATOR_ID: name,
        GRPC_PORT: String(port),
        METRICS_PORT: '0',
        CONSOLE_PORT: String(consolePort),
        ...(this.o.inputRoot ? { INPUT_ROOT: this.o.inputRoot } : {}),
        // A local cluster listens on loopback only (BIND_HOST 127.0.0.1): open APIs are a choice
        // made here, on purpose, not a default of the coordinator. Tests may still set tokens.
        ALLOW_ANONYMOUS: 'true',
        WEBHOOK_SECRET: await this.webhookSecret(),
        ...(opts.host ? { BIND_HOST: opts.host } : {}),
        ...(this.o.coordinatorEnv ?? {}),
      },
      [],
      port,
      undefined,
      opts.netns,
    );
    await waitFor(() => grpcServing(address, 1_000, '', channelCredentials(this.clientTls())), BOOT_WAIT_MS, name);
    return name;
  }

  /**
   * Starts one more node agent and resolves once it is registered in etcd. TLS clusters issue it
   * a certificate for its id (or for `certFor`: tests of a node presenting another node's identity).
   */
  async addNode(opts: { slots?: number; env?: Record<string, string>; id?: string; cpus?: string; certFor?: string; netns?: string } = {}): Promise<string> {
    const id = opts.id ?? `node-${this.nodeSeq++}`;
    const certEnv = this.ca ? tlsEnv(await this.ca.issue(`node-cert-${id}`, { role: 'node', names: [opts.certFor ?? id] })) : {};
    this.spawnTs(
      id,
      'node-agent',
      TS_ENTRY['node-agent'],
      {
        ...certEnv,
        NODE_ID: id,
        GRPC_PORT: '0',
        METRICS_PORT: '0',
        WORKER_SLOTS: String(opts.slots ?? this.o.slots),
        // Agents sharing this machine share its cores (pinned ones see only their own).
        ...(opts.cpus ? {} : { CPU_CORES: String(Math.max(1, Math.floor(availableParallelism() / Math.max(1, this.o.nodes)))) }),
        ...(this.o.nodeEnv ?? {}),
        ...(opts.env ?? {}),
      },
      [],
      undefined,
      opts.cpus,
      opts.netns,
    );
    await waitFor(async () => (await this.client().get(`/tessera/nodes/${id}`).string()) !== null, BOOT_WAIT_MS, id);
    return id;
  }

  /** etcd client for inspection (tests, CLI). */
  client(): Etcd3 {
    this.etcd ??= this.newEtcdClient();
    return this.etcd;
  }

  private newEtcdClient(): Etcd3 {
    const tls = this.clientTls();
    return new Etcd3({ hosts: this.etcdEndpoints, dialTimeout: 2_000, ...(tls ? { credentials: { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key } } : {}) });
  }

  private clientMaterial: TlsMaterial | undefined;

  /** The client certificate material (TLS clusters), for SDK clients in tests; read once. */
  clientTls(): TlsMaterial | undefined {
    if (this.clientCert && !this.clientMaterial) this.clientMaterial = loadTls({ caFile: this.clientCert.ca, certFile: this.clientCert.cert, keyFile: this.clientCert.key });
    return this.clientMaterial;
  }

  /** Issues a certificate from this cluster's CA (TLS clusters): tests make wrong ones on purpose. */
  async issueCert(file: string, role: 'coordinator' | 'node' | 'uploader' | 'client', names: string[], ips: string[] = []): Promise<CertFiles> {
    if (!this.ca) throw new Error('this cluster runs without TLS');
    return this.ca.issue(file, { role, names, ips });
  }

  pid(name: string): number | undefined {
    return this.procs.get(name)?.info.pid;
  }

  nodeIds(): string[] {
    return [...this.procs.values()].filter((p) => p.info.role === 'node-agent').map((p) => p.info.name);
  }

  /** Sends a signal to one process (SIGKILL to simulate a crash, SIGSTOP to pause it). */
  signal(name: string, sig: NodeJS.Signals): void {
    const p = this.procs.get(name);
    if (!p) throw new Error(`no process ${name}`);
    process.kill(p.info.pid, sig);
  }

  /** The last lines of each crashed process's log ('' when none crashed): what a failed test run should show. */
  crashReport(lines = 40): string {
    return this.crashes
      .map((c) => {
        let tail = '';
        try {
          tail = readFileSync(c.log, 'utf8')
            .split('\n')
            .slice(-lines - 1)
            .join('\n');
        } catch {
          tail = '(log unreadable)';
        }
        return `${c.name} exited with code ${c.code} at ${new Date(c.atMs).toISOString()}; the end of ${c.log}:\n${tail}\n`;
      })
      .join('\n');
  }

  /** Stops one process and waits for it to exit (SIGKILL after `graceMs`). */
  async stopProcess(name: string, sig: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<void> {
    const p = this.procs.get(name);
    if (!p) return;
    await terminate(p.info.pid, sig, graceMs, p.child);
    this.procs.delete(name);
  }

  private spawnTs(name: string, role: ProcInfo['role'], entry: string, env: Record<string, string>, args: string[] = [], port?: number, cpus?: string, netns?: string): ProcInfo {
    return this.spawn(name, role, process.execPath, [...nodeArgs(entry), ...args], { ...this.baseEnv(), ...env }, port, cpus, netns);
  }

  private spawn(name: string, role: ProcInfo['role'], command: string, commandArgs: string[], env: Record<string, string>, port?: number, nodeCpus?: string, netns?: string): ProcInfo {
    // Pinned to CPUs with taskset (benchmarks): children (ffmpeg) inherit the affinity.
    const cpus = role === 'node-agent' ? nodeCpus : this.o.controlCpus;
    const pinned = cpus ? ['taskset', '-c', cpus, command, ...commandArgs] : [command, ...commandArgs];
    // In a network namespace (the lab): `ip netns exec` execs the command, so the pid is the process's.
    const [cmd, ...args] = netns ? ['ip', 'netns', 'exec', netns, ...pinned] : pinned;
    const log = join(this.logDir, `${name}.log`);
    const fd = openSync(log, 'a');
    const child = spawn(cmd!, args, {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...env },
      stdio: ['ignore', fd, fd],
      detached: this.o.detached ?? false,
    });
    closeSync(fd);
    if (this.o.detached) child.unref();
    else child.once('exit', (code) => code !== null && code !== 0 && this.crashes.push({ name, code, atMs: Date.now(), log }));
    const info: ProcInfo = { name, role, pid: child.pid ?? -1, log, ...(port !== undefined ? { port } : {}) };
    this.procs.set(name, { info, ...(this.o.detached ? {} : { child }) });
    return info;
  }

  /**
   * The local cluster's webhook secret: generated once (32 random bytes, hex) into
   * `<dir>/webhook-secret` (mode 0600) and kept across `tessera up`s, so receivers stay configured.
   */
  async webhookSecret(): Promise<string> {
    const file = join(this.o.dir, 'webhook-secret');
    const held = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
    if (held.length >= 16) return held;
    const secret = randomBytes(32).toString('hex');
    await writeFile(file, `${secret}\n`, { mode: 0o600 });
    return secret;
  }

  async writeClusterFile(): Promise<void> {
    const file: ClusterFile = {
      dir: this.o.dir,
      etcdEndpoints: this.etcdEndpoints,
      s3Endpoint: this.s3Endpoint,
      bucket: this.bucket,
      coordinators: this.coordinators,
      consoles: this.consoles,
      processes: [...this.procs.values()].map((p) => p.info),
      startedAtMs: Date.now(),
      ...(this.clientCert ? { tls: this.clientCert } : {}),
    };
    await writeFile(join(this.o.dir, 'cluster.json'), JSON.stringify(file, null, 2));
  }

  /** Stops everything: Tessera processes first (graceful), then S3 and etcd. Idempotent. */
  async stop(): Promise<void> {
    this.etcd?.close();
    this.etcd = undefined;
    const order: ProcInfo['role'][] = ['coordinator', 'node-agent', 'uploader', 's3', 'etcd'];
    for (const role of order) {
      await Promise.all([...this.procs.values()].filter((p) => p.info.role === role).map((p) => terminate(p.info.pid, 'SIGTERM', 10_000, p.child)));
      if (role === 'node-agent') await stopStrays(this.etcdEndpoints);
    }
    this.procs.clear();
    await rm(join(this.o.dir, 'cluster.json'), { force: true });
  }
}

/**
 * Stops processes this cluster started indirectly (node agents the local autoscaler spawned):
 * any process whose environment names this cluster's etcd.
 */
async function stopStrays(etcdEndpoints: string[]): Promise<void> {
  if (etcdEndpoints.length === 0) return;
  const marker = `ETCD_ENDPOINTS=${etcdEndpoints.join(',')}`;
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/environ`, 'utf8').split('\0').includes(marker)) pids.push(Number(d));
    } catch {
      // gone, or not ours to read
    }
  }
  await Promise.all(pids.map((pid) => terminate(pid, 'SIGTERM', 10_000)));
}

/** Reads `<dir>/cluster.json` left by `tessera up`, if a cluster is up. */
export function readClusterFile(dir: string): ClusterFile | undefined {
  const f = join(resolve(dir), 'cluster.json');
  if (!existsSync(f)) return undefined;
  return JSON.parse(readFileSync(f, 'utf8')) as ClusterFile;
}

/** Stops the processes a cluster file lists (for `tessera down` from another process). */
export async function stopClusterFile(file: ClusterFile): Promise<void> {
  const order: ProcInfo['role'][] = ['coordinator', 'node-agent', 'uploader', 's3', 'etcd'];
  for (const role of order) {
    await Promise.all(file.processes.filter((p) => p.role === role).map((p) => terminate(p.pid, 'SIGTERM', 10_000)));
    if (role === 'node-agent') await stopStrays(file.etcdEndpoints);
  }
  await rm(join(file.dir, 'cluster.json'), { force: true });
}

/** True while the process exists (the CLI checks a cluster file's pids with it). */
export const alive = processAlive;

async function terminate(pid: number, sig: NodeJS.Signals, graceMs: number, child?: ChildProcess): Promise<void> {
  if (pid <= 0 || !alive(pid)) return;
  const exited = child
    ? new Promise<void>((r) => {
        if (child.exitCode !== null || child.signalCode !== null) r();
        else child.once('exit', () => r());
      })
    : waitFor(async () => !alive(pid), graceMs + 5_000, `pid ${pid}`).catch(() => undefined);
  try {
    process.kill(pid, 'SIGCONT'); // a paused process cannot handle SIGTERM
    process.kill(pid, sig);
  } catch {
    return;
  }
  const t = setTimeout(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, graceMs);
  await exited;
  clearTimeout(t);
}

/**
 * How long a process of a local cluster may take to come up (S3 server, uploader, coordinator,
 * node agent): each starts through tsx, which on a loaded 2-core machine took over 20 s.
 */
const BOOT_WAIT_MS = 60_000;

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** True once something accepts a TCP connection on 127.0.0.1:`port`. */
function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.setTimeout(1_000, () => sock.destroy());
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
    sock.once('close', () => resolve(false));
  });
}

/** True once something answers HTTP(S) at `url` (any status); `ca` is trusted for https. */
function httpOk(url: string, ca?: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { timeout: 1_000, ...(ca ? { ca } : {}) }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
