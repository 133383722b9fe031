import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { freePort } from '../deploy/ports.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { startTestCluster, type TestCluster } from './helpers.js';

/*
 * SSRF, end to end (docs/security.md). Lab (docs: /work/shared/LAB.md): one network namespace,
 * run prefix `tlz-`, joined to the host by a veth pair. Inside it run a DNS server that answers
 * a "public" address and 127.0.0.1 in turn for one name, and an HTTP server that redirects.
 * The "public" address (11.211.77.2) and a link-local one (169.254.77.2) exist only on the
 * namespace's end of the veth; the host routes them there (/32 routes), so nothing leaves the
 * machine. The trap is a TCP server on 127.0.0.1 that must see no connection at all. The
 * coordinator is real and resolves names through DNS_SERVERS = the namespace's DNS server.
 */
const NS = 'tlz-dns';
const VETH_HOST = 'tlz-dns-h';
const VETH_NS = 'tlz-dns-n';
const HOST_IP = '10.211.77.1';
const NS_IP = '10.211.77.2';
const PUBLIC_IP = '11.211.77.2';
const LINK_LOCAL_IP = '169.254.77.2';
const LADDER = [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'ultrafast' }];

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const quiet = (...args: string[]): void => {
  try {
    ip(...args);
  } catch {
    // already gone
  }
};

/** Removes whatever a previous run of this prefix left behind (the namespace takes its veth end along). */
function sweep(): void {
  quiet('netns', 'del', NS);
  quiet('link', 'del', VETH_HOST);
}

/** Why the lab cannot run here, or undefined when it can (root, `ip`, network namespaces). */
function labUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces';
  try {
    ip('-V');
  } catch {
    return 'needs iproute2 (`ip`)';
  }
  return undefined;
}

function setUpLab(): void {
  sweep();
  ip('netns', 'add', NS);
  ip('link', 'add', VETH_HOST, 'type', 'veth', 'peer', 'name', VETH_NS);
  ip('link', 'set', VETH_NS, 'netns', NS);
  ip('addr', 'add', `${HOST_IP}/24`, 'dev', VETH_HOST);
  ip('link', 'set', VETH_HOST, 'up');
  ip('-n', NS, 'addr', 'add', `${NS_IP}/24`, 'dev', VETH_NS);
  ip('-n', NS, 'addr', 'add', `${PUBLIC_IP}/32`, 'dev', VETH_NS);
  ip('-n', NS, 'addr', 'add', `${LINK_LOCAL_IP}/32`, 'dev', VETH_NS);
  ip('-n', NS, 'link', 'set', VETH_NS, 'up');
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  ip('route', 'add', `${PUBLIC_IP}/32`, 'dev', VETH_HOST, 'src', HOST_IP);
  ip('route', 'add', `${LINK_LOCAL_IP}/32`, 'dev', VETH_HOST, 'src', HOST_IP);
  // Never a real host: both stand-ins must route into our namespace, or the test stops here.
  for (const a of [PUBLIC_IP, LINK_LOCAL_IP]) {
    const route = ip('route', 'get', a);
    if (!route.includes(`dev ${VETH_HOST}`)) throw new Error(`${a} does not route into the lab namespace: ${route}`);
  }
}

interface LabEvent {
  dns?: string;
  answer?: string;
  conn?: string;
  path?: string;
  ready?: boolean;
}

const why = labUnavailable();
if (why) process.stdout.write(`test/ssrf.test.ts: skipped: ${why}\n`);

describe.skipIf(why !== undefined)('SSRF: inputs and webhooks never reach special addresses (lab: DNS rebinding in a namespace)', () => {
  let t: TestCluster;
  let trap: Server;
  let trapPort = 0;
  let trapConnections = 0;
  let httpPort = 0;
  let helper: ChildProcess | undefined;
  const events: LabEvent[] = [];

  beforeAll(async () => {
    trap = createServer((s) => {
      trapConnections++;
      s.destroy();
    });
    await new Promise<void>((r) => trap.listen(0, '127.0.0.1', r));
    trapPort = (trap.address() as { port: number }).port;
    httpPort = await freePort();
    setUpLab();
    // The attacker's servers, inside the namespace; the HTTP one redirects to the trap's port.
    helper = spawn('ip', ['netns', 'exec', NS, process.execPath, '--import', 'tsx', 'test/lab/rebind-server.ts', NS_IP, String(httpPort), PUBLIC_IP, LINK_LOCAL_IP, String(trapPort)], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    const ready = new Promise<void>((resolve, reject) => {
      helper!.on('exit', (c) => reject(new Error(`lab helper exited with ${c}`)));
      helper!.stdout!.on('data', (b: Buffer) => {
        buf += b.toString();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const e = JSON.parse(buf.slice(0, nl)) as LabEvent;
          buf = buf.slice(nl + 1);
          if (e.ready) resolve();
          else events.push(e);
        }
      });
    });
    await ready;
    // A real cluster with the secure defaults: no HTTP_ALLOW_PRIVATE, no host list.
    t = await startTestCluster({ nodes: 1, coordinatorEnv: { DNS_SERVERS: `${NS_IP}:53`, WEBHOOK_BACKOFF_MS: '100', WEBHOOK_RESCAN_MS: '500', HTTP_INPUT_TIMEOUT_MS: '20000' } });
  });

  afterAll(async () => {
    await t?.close();
    if (helper?.pid && helper.exitCode === null) helper.kill('SIGKILL');
    trap?.close();
    if (!why) sweep();
  });

  /** Submits an input URL; the job's final error (or the call's), with its message. */
  const outcome = async (inputUri: string, webhookUrl = ''): Promise<{ code: string; message: string; jobId: string }> => {
    try {
      const { jobId } = await t.client.submit({ inputUri, ladder: LADDER, webhookUrl });
      const job = await t.client.wait(jobId);
      return { code: job.state === JobState.JOB_STATE_SUCCEEDED ? 'SUCCEEDED' : job.errorCode, message: job.errorMessage, jobId };
    } catch (err) {
      return isAppError(err) ? { code: err.code, message: err.message, jobId: '' } : { code: String(err), message: '', jobId: '' };
    }
  };

  it('refuses IPv4-mapped, IPv4-compatible and NAT64 spellings of 127.0.0.1', async () => {
    const mapped = await outcome(`http://[::ffff:127.0.0.1]:${trapPort}/clip.mp4`);
    expect(mapped.code).toBe('PERMISSION_DENIED');
    expect(mapped.message).toContain('IPv4-mapped (127.0.0.1)');
    const compatible = await outcome(`http://[::127.0.0.1]:${trapPort}/clip.mp4`);
    expect(compatible.code).toBe('PERMISSION_DENIED');
    expect(compatible.message).toContain('IPv4-compatible (127.0.0.1)');
    expect((await outcome(`http://[64:ff9b::7f00:1]:${trapPort}/clip.mp4`)).code).toBe('PERMISSION_DENIED');
    expect((await outcome(`http://2130706433:${trapPort}/clip.mp4`)).code).toBe('PERMISSION_DENIED');
    expect(trapConnections).toBe(0);
  });

  it('refuses a rebinding name, whichever answer each lookup gets', async () => {
    // Odd lookups answer the "public" address (the check passes, and we connect to that very
    // address: the namespace's server, which redirects to the same name), even ones 127.0.0.1.
    for (let i = 0; i < 3; i++) {
      const r = await outcome(`http://rebind.tessera.test:${trapPort}/clip-${i}.mp4`);
      expect(r.code, r.message).toBe('PERMISSION_DENIED');
      expect(r.message).toMatch(/rebind\.tessera\.test resolves to 127\.0\.0\.1, a loopback address/);
    }
    const answers = events.filter((e) => e.dns === 'rebind.tessera.test').map((e) => e.answer);
    expect(answers).toContain(PUBLIC_IP);
    expect(answers).toContain('127.0.0.1');
    // The public answers were connected to — in the namespace, never on loopback.
    expect(events.filter((e) => e.conn !== undefined).every((e) => e.conn === PUBLIC_IP)).toBe(true);
    expect(events.some((e) => e.conn === PUBLIC_IP)).toBe(true);
    expect(trapConnections).toBe(0);
  });

  it('checks every redirect: one to a link-local address is refused and never connected', async () => {
    const before = events.length;
    const r = await outcome(`http://public.tessera.test:${httpPort}/to-link-local`);
    expect(r.code).toBe('PERMISSION_DENIED');
    expect(r.message).toContain(`${LINK_LOCAL_IP}, a link-local address`);
    const seen = events.slice(before).filter((e) => e.conn !== undefined);
    expect(seen).toEqual([{ conn: PUBLIC_IP, path: '/to-link-local' }]); // the first hop only
    expect(trapConnections).toBe(0);
  });

  it('applies the same rules to webhooks: at submit, and again at every delivery', async () => {
    for (const hook of [`http://127.0.0.1:${trapPort}/hook`, `http://[::ffff:127.0.0.1]:${trapPort}/hook`, `http://localhost.:${trapPort}/hook`]) {
      const r = await outcome(`s3://tessera-input/none.mp4`, hook);
      expect(r.code, hook).toMatch(/PERMISSION_DENIED|INPUT_NOT_FOUND/);
    }
    expect((await outcome('s3://tessera-input/none.mp4', `http://127.0.0.1:${trapPort}/hook`)).message).toContain('webhook host 127.0.0.1 resolves to 127.0.0.1, a loopback address');
    // A name that is public when submitted and loopback by delivery time: the job is accepted,
    // its FAILED event is checked again when sent, refused and dropped — the trap sees nothing.
    const r = await outcome('s3://tessera-input/none.mp4', `http://flip.tessera.test:${trapPort}/hook`);
    expect(r.code).toBe('INPUT_NOT_FOUND');
    const log = join(t.dir, 'logs', 'coordinator-0.log');
    const dropped = async (): Promise<string | undefined> =>
      readFileSync(log, 'utf8')
        .split('\n')
        .find((l) => l.includes('webhook event dropped') && l.includes(r.jobId));
    const deadline = Date.now() + 20_000;
    while (!(await dropped()) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
    expect(await dropped()).toMatch(/webhook host flip\.tessera\.test resolves to 127\.0\.0\.1, a loopback address/);
    expect(trapConnections).toBe(0);
  });
});
