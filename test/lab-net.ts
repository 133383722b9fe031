import { execFileSync } from 'node:child_process';

/**
 * The network lab of /work/shared/LAB.md, for partition tests: network namespaces joined to the
 * host by veth links that a test downs and heals. Every name starts with one run prefix; a sweep
 * at start removes what a failed run left, and `close()` removes everything it made.
 *
 * Addresses (private test ranges; nothing else is ever a target):
 * - 10.201.0.1: the services' address on the host (etcd, uploader, coordinators), the host end of
 *   a veth whose other end sits in `<prefix>svc` and is never downed.
 * - node K (namespace `<prefix>nK`): link a, 10.201.K.1 (host) – 10.201.K.2 (node), carries the
 *   node's own traffic (etcd, uploader) through its default route; link b, 10.202.K.1 – 10.202.K.2,
 *   carries what others dial: the node advertises 10.202.K.2. Down b alone: others cannot reach
 *   the node while it still reaches etcd (asymmetric). Down both: a symmetric partition.
 * - coordinator namespace `<prefix>c0`: link a, 10.201.100.1 – 10.201.100.2 (etcd, uploader, the
 *   other coordinator, clients), and a direct link to every node namespace, 10.203.K.1 –
 *   10.203.K.2, routed to the node's advertised address. Down a: the coordinator is cut off from
 *   etcd but still drives the nodes (a partitioned leader).
 */
export class LabNet {
  static readonly SERVICE_HOST = '10.201.0.1';
  private readonly made: string[] = [];

  private constructor(readonly prefix: string) {}

  /** Why the lab cannot run here (not root, no `ip`, no netns/veth), or undefined. */
  static unavailable(): string | undefined {
    if (process.getuid?.() !== 0) return 'needs root (network namespaces and veth links)';
    try {
      execFileSync('ip', ['-V'], { stdio: 'ignore' });
    } catch {
      return 'needs iproute2 (`ip`)';
    }
    return undefined;
  }

  /** Why shaped links (tc tbf) cannot be made here, or undefined. */
  static tcUnavailable(): string | undefined {
    const why = LabNet.unavailable();
    if (why) return why;
    try {
      execFileSync('tc', ['-V'], { stdio: 'ignore' });
    } catch {
      return 'needs tc (iproute2) for the 100 Mbit/s links';
    }
    return undefined;
  }

  static open(prefix: string): LabNet {
    const lab = new LabNet(prefix);
    lab.sweep();
    try {
      lab.ip('netns', 'add', `${prefix}svc`);
      lab.made.push(`netns:${prefix}svc`);
      lab.veth(`${prefix}svc-h`, `${prefix}svc-n`, `${prefix}svc`);
      lab.ip('addr', 'add', `${LabNet.SERVICE_HOST}/24`, 'dev', `${prefix}svc-h`);
      lab.ip('link', 'set', `${prefix}svc-h`, 'up');
      lab.ns(`${prefix}svc`, 'ip', 'link', 'set', `${prefix}svc-n`, 'up');
    } catch (err) {
      lab.close();
      throw err;
    }
    return lab;
  }

  /** The namespace of node `k` (1…99), with links a and b; returns its advertised address. */
  addNode(k: number): { netns: string; address: string } {
    const ns = `${this.prefix}n${k}`;
    this.ip('netns', 'add', ns);
    this.made.push(`netns:${ns}`);
    this.ns(ns, 'ip', 'link', 'set', 'lo', 'up');
    this.link(`${this.prefix}n${k}-ah`, `${this.prefix}n${k}-an`, ns, `10.201.${k}.1`, `10.201.${k}.2`);
    this.link(`${this.prefix}n${k}-bh`, `${this.prefix}n${k}-bn`, ns, `10.202.${k}.1`, `10.202.${k}.2`);
    this.ns(ns, 'ip', 'route', 'add', 'default', 'via', `10.201.${k}.1`);
    return { netns: ns, address: `10.202.${k}.2` };
  }

  /**
   * A simulated host `k` (1…99) for benchmarks: its namespace joined to the host by one veth link,
   * 10.201.K.1 (host) – 10.201.K.2 (node), which carries all its traffic, both ways. With
   * `rateMbit`, both ends of that link are shaped by a token bucket (tc tbf, burst 256 kB,
   * latency 50 ms: LAB.md), so the host has a link of that rate. Returns its address, which it
   * advertises, and the two ends' device names.
   */
  addHost(k: number, opts: { rateMbit?: number } = {}): { netns: string; address: string; hostDev: string; nodeDev: string } {
    const ns = `${this.prefix}n${k}`;
    const hostDev = `${this.prefix}n${k}-ah`;
    const nodeDev = `${this.prefix}n${k}-an`;
    this.ip('netns', 'add', ns);
    this.made.push(`netns:${ns}`);
    this.ns(ns, 'ip', 'link', 'set', 'lo', 'up');
    this.link(hostDev, nodeDev, ns, `10.201.${k}.1`, `10.201.${k}.2`);
    this.ns(ns, 'ip', 'route', 'add', 'default', 'via', `10.201.${k}.1`);
    if (opts.rateMbit !== undefined) {
      // The qdiscs go with their devices (the veth is deleted in close()).
      const tbf = ['root', 'tbf', 'rate', `${opts.rateMbit}mbit`, 'burst', '256kb', 'latency', '50ms'];
      execFileSync('tc', ['qdisc', 'add', 'dev', hostDev, ...tbf], { stdio: ['ignore', 'ignore', 'pipe'] });
      this.ns(ns, 'tc', 'qdisc', 'add', 'dev', nodeDev, ...tbf);
    }
    return { netns: ns, address: `10.201.${k}.2`, hostDev, nodeDev };
  }

  /** The coordinator namespace, with link a to the host and a direct link to each node namespace `ks`; returns its address. */
  addCoordinator(ks: number[]): { netns: string; address: string } {
    const ns = `${this.prefix}c0`;
    this.ip('netns', 'add', ns);
    this.made.push(`netns:${ns}`);
    this.ns(ns, 'ip', 'link', 'set', 'lo', 'up');
    this.link(`${this.prefix}c0-ah`, `${this.prefix}c0-an`, ns, '10.201.100.1', '10.201.100.2');
    this.ns(ns, 'ip', 'route', 'add', 'default', 'via', '10.201.100.1');
    for (const k of ks) {
      const a = `${this.prefix}c0-k${k}`;
      const b = `${this.prefix}n${k}-c`;
      // Both ends live in namespaces: made on the host, then moved.
      this.ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
      this.ip('link', 'set', a, 'netns', ns);
      this.ip('link', 'set', b, 'netns', `${this.prefix}n${k}`);
      this.ns(ns, 'ip', 'addr', 'add', `10.203.${k}.1/24`, 'dev', a);
      this.ns(ns, 'ip', 'link', 'set', a, 'up');
      this.ns(`${this.prefix}n${k}`, 'ip', 'addr', 'add', `10.203.${k}.2/24`, 'dev', b);
      this.ns(`${this.prefix}n${k}`, 'ip', 'link', 'set', b, 'up');
      this.ns(ns, 'ip', 'route', 'add', `10.202.${k}.2/32`, 'via', `10.203.${k}.2`);
    }
    return { netns: ns, address: '10.201.100.2' };
  }

  /** Downs (or heals) node k's links: 'both' = symmetric partition, 'b' = others cannot reach it. */
  node(k: number, which: 'both' | 'b', up: boolean): void {
    const links = which === 'both' ? [`${this.prefix}n${k}-ah`, `${this.prefix}n${k}-bh`] : [`${this.prefix}n${k}-bh`];
    for (const l of links) this.ip('link', 'set', l, up ? 'up' : 'down');
  }

  /** Downs (or heals) the coordinator namespace's link to the host (etcd, uploader, clients). */
  coordinator(up: boolean): void {
    this.ip('link', 'set', `${this.prefix}c0-ah`, up ? 'up' : 'down');
  }

  /** Removes everything this lab made (idempotent; every step runs even if one fails). */
  close(): void {
    for (const m of this.made.reverse()) {
      const [kind, name] = m.split(':') as [string, string];
      try {
        if (kind === 'netns') this.ip('netns', 'del', name);
        else this.ip('link', 'del', name);
      } catch {
        // already gone
      }
    }
    this.made.length = 0;
    this.sweep();
  }

  /** Removes namespaces and links of this prefix (a failed run's leftovers). */
  sweep(): void {
    const nss = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(this.prefix));
    for (const n of nss) {
      try {
        this.ip('netns', 'del', n);
      } catch {
        /* gone */
      }
    }
    const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '')
      .filter((n) => n.startsWith(this.prefix));
    for (const l of links) {
      try {
        this.ip('link', 'del', l);
      } catch {
        /* gone with its peer */
      }
    }
  }

  private veth(host: string, peer: string, ns: string): void {
    this.ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    this.made.push(`link:${host}`);
    this.ip('link', 'set', peer, 'netns', ns);
  }

  private link(host: string, peer: string, ns: string, hostAddr: string, nsAddr: string): void {
    this.veth(host, peer, ns);
    this.ip('addr', 'add', `${hostAddr}/24`, 'dev', host);
    this.ip('link', 'set', host, 'up');
    this.ns(ns, 'ip', 'addr', 'add', `${nsAddr}/24`, 'dev', peer);
    this.ns(ns, 'ip', 'link', 'set', peer, 'up');
  }

  private ns(ns: string, ...cmd: string[]): void {
    this.ip('netns', 'exec', ns, ...cmd);
  }

  private ip(...args: string[]): void {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}
