/**
 * Lab helper for test/ssrf.test.ts, run inside the test's network namespace: a tiny DNS server
 * and an HTTP server that play the attacker. Not a test itself. Prints one JSON line per event
 * on stdout (`{"dns":name,"answer":ip}`, `{"conn":localAddress,"path":…}`).
 *
 * argv: <dns listen ip> <http port> <public ip> <link-local ip> <redirect port>
 *
 * DNS (A records, TTL 0; AAAA: no answer; anything else: NXDOMAIN):
 *   rebind.tessera.test  alternates <public ip> and 127.0.0.1, starting with the public one
 *   public.tessera.test  always <public ip>
 *   flip.tessera.test    <public ip> once, then 127.0.0.1 for ever
 * HTTP on every address, ports <http port> and <redirect port>:
 *   /to-link-local       302 to http://<link-local ip>:<http port>/latest/meta-data
 *   anything else        302 to http://rebind.tessera.test:<redirect port>/<same path> (a second lookup)
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';

const [dnsIp = '', httpPortArg = '', publicIp = '', linkLocalIp = '', redirectPortArg = ''] = process.argv.slice(2);
const httpPort = Number(httpPortArg);
const redirectPort = Number(redirectPortArg);
const emit = (e: object): void => {
  process.stdout.write(`${JSON.stringify(e)}\n`);
};

let rebindQueries = 0;
let flipQueries = 0;
function answerFor(name: string): string | undefined {
  if (name === 'rebind.tessera.test') return rebindQueries++ % 2 === 0 ? publicIp : '127.0.0.1';
  if (name === 'public.tessera.test') return publicIp;
  if (name === 'flip.tessera.test') return flipQueries++ === 0 ? publicIp : '127.0.0.1';
  return undefined;
}

const dns = createSocket('udp4');
dns.on('message', (msg, rinfo) => {
  if (msg.length < 12) return;
  // Question: labels from offset 12, then QTYPE, QCLASS.
  const labels: string[] = [];
  let at = 12;
  while (at < msg.length && msg[at]! > 0) {
    const len = msg[at]!;
    labels.push(msg.subarray(at + 1, at + 1 + len).toString('ascii'));
    at += 1 + len;
  }
  const qEnd = at + 5;
  const qtype = msg.readUInt16BE(at + 1);
  const name = labels.join('.').toLowerCase();
  const known = ['rebind.tessera.test', 'public.tessera.test', 'flip.tessera.test'].includes(name);
  const ip = known && qtype === 1 ? answerFor(name) : undefined;
  const head = Buffer.alloc(12);
  msg.copy(head, 0, 0, 2); // id
  head.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); // response, RD+RA, NOERROR or NXDOMAIN
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(ip ? 1 : 0, 6);
  const parts = [head, msg.subarray(12, qEnd)];
  if (ip) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    rr.writeUInt16BE(1, 2); // A
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(0, 6); // TTL 0: never cached
    rr.writeUInt16BE(4, 10);
    ip.split('.').forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
    parts.push(rr);
    emit({ dns: name, answer: ip });
  }
  dns.send(Buffer.concat(parts), rinfo.port, rinfo.address);
});
dns.bind(53, dnsIp, () => {
  const http = createServer((req, res) => {
    emit({ conn: req.socket.localAddress, path: req.url });
    const location = req.url === '/to-link-local' ? `http://${linkLocalIp}:${httpPort}/latest/meta-data` : `http://rebind.tessera.test:${redirectPort}${req.url ?? '/'}`;
    res.writeHead(302, { location, 'content-length': '0' });
    res.end();
  });
  // The rebinding name is asked for on the trap's port: its public answer must find us there too.
  http.listen(httpPort, '0.0.0.0', () => {
    const again = createServer(http.listeners('request')[0] as Parameters<typeof createServer>[0]);
    again.listen(redirectPort, '0.0.0.0', () => emit({ ready: true }));
  });
});
