import { plannedFields } from './support/etcd-fixtures.js';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Keys } from '../common/keys.js';
import { createLogger } from '../common/logger.js';
import { HistorySweeper } from '../coordinator/state/history-sweeper.js';
import { specHash, type JobRecord } from '../coordinator/state/job-model.js';
import { newJobId } from '../coordinator/api/job-service.js';
import { JobStore, stageName, type LeaderFence } from '../coordinator/state/job-store.js';
import { WebhookOutbox, type OutboxSettings } from '../coordinator/api/webhook-outbox.js';
import { signBody, type OutboxEntry } from '../coordinator/api/webhooks.js';
import { hostResolver } from '../coordinator/input/safe-http.js';
import { freePort } from '../deploy/ports.js';
import { JobSpec } from '../proto/gen/tessera/v1/types.js';
import { startEtcdServer, type EtcdServer } from './etcd-server.js';

const SECRET = 'outbox-test-secret';
const FAST: OutboxSettings = {
  secret: SECRET,
  baseMs: 100,
  maxMs: 400,
  retryForMs: 120_000,
  timeoutMs: 1_000,
  rescanMs: 1_000,
  concurrency: 4,
  policy: { allowPrivate: true, allowedHosts: [], resolve: hostResolver([]) },
};

interface Received {
  id: string;
  header: string;
  attempt: number;
  state: string;
  valid: boolean;
}

/** A webhook receiver on a given port, answering `status` (204 unless told otherwise). */
async function receiver(port: number, status = 204): Promise<{ got: Received[]; server: Server }> {
  const got: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString();
    });
    req.on('end', () => {
      const ev = JSON.parse(body) as { id: string; state: string };
      got.push({
        id: ev.id,
        header: String(req.headers['x-tessera-event-id']),
        attempt: Number(req.headers['x-tessera-delivery-attempt']),
        state: ev.state,
        valid: req.headers['x-tessera-signature'] === signBody(SECRET, body),
      });
      res.writeHead(status);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { got, server };
}

/**
 * The outbox as the coordinators use it, against a real etcd: JobStore writes the events, two
 * WebhookOutbox instances play the old and the new leader (their fences are the election key's
 * create revisions), receivers are real HTTP servers on loopback.
 */
describe('webhook outbox (real etcd)', () => {
  let e: EtcdServer;
  let store: JobStore;
  const keys = new Keys('/tessera/');
  const log = createLogger('test', 'warn');

  const elect = async (): Promise<LeaderFence> => {
    await e.client.delete().key(keys.election());
    const el = await e.client.put(keys.election()).value('coordinator-test').exec();
    return { key: keys.election(), createRevision: el.header.revision };
  };

  beforeAll(async () => {
    e = await startEtcdServer();
    store = new JobStore(e.client, keys, 500);
  });
  afterAll(async () => {
    await e?.stop();
  });

  const newJob = async (webhookUrl: string): Promise<string> => {
    const now = Date.now();
    const spec = JobSpec.fromPartial({
      inputUri: 's3://in/clip.mp4',
      ladder: [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryfast' }],
      container: 'mp4',
      webhookUrl,
      audioBitrateKbps: 128,
    });
    const id = newJobId();
    const rec: JobRecord = {
      id,
      spec,
      specHash: specHash(spec),
      state: 'QUEUED',
      stage: stageName('QUEUED'),
      createdAtMs: now,
      updatedAtMs: now,
      queueKey: keys.queueEntry(0, now.toString(36), id),
      history: [{ atMs: now, scope: 'job', state: 'QUEUED', nodeId: '', attempt: 0, reason: 'accepted' }],
      timings: {},
    };
    await store.create(rec, undefined);
    return id;
  };
  const result = (id: string): NonNullable<JobRecord['result']> => ({ uri: `s3://out/jobs/${id}.zip`, bucket: 'out', key: `jobs/${id}.zip`, bytes: 1234, sha256: 'ab'.repeat(32), renditions: [] });
  const entries = async (id: string): Promise<Map<string, { e: OutboxEntry; rev: string }>> => {
    const res = await e.client.getAll().prefix(keys.outboxJob(id)).exec();
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(keys.outboxJob(id).length), { e: JSON.parse(kv.value.toString()) as OutboxEntry, rev: kv.mod_revision }]));
  };

  it('writes each event in the transaction of its state change, RUNNING once, none without a webhook URL', async () => {
    const fence = await elect();
    const id = await newJob('http://127.0.0.1:9/hook');
    await store.transition(id, 'RUNNING', 'planned', plannedFields(), fence);
    const rev = (await e.client.get(keys.job(id)).exec()).kvs[0]!.mod_revision;
    let out = await entries(id);
    expect([...out.keys()]).toEqual(['0-RUNNING']);
    expect(out.get('0-RUNNING')!.rev).toBe(rev); // same revision: same transaction
    expect(out.get('0-RUNNING')!.e).toMatchObject({ id: `${id}:RUNNING`, attempts: 0, url: 'http://127.0.0.1:9/hook' });
    // Back to RUNNING after FINALIZING (lost parts reopened): no second RUNNING event.
    await store.transition(id, 'FINALIZING', 'all segments done', {}, fence);
    await store.update(id, (r) => ({ ...r, state: 'RUNNING', history: [...r.history, { atMs: Date.now(), scope: 'job', state: 'RUNNING', nodeId: '', attempt: 0, reason: 'reopened' }] }), { fence });
    expect((await entries(id)).get('0-RUNNING')!.rev).toBe(rev);
    await store.cancel(id, 'cancelled by the user');
    out = await entries(id);
    expect([...out.keys()]).toEqual(['0-RUNNING', '1-CANCELLED']);
    expect(out.get('1-CANCELLED')!.rev).toBe((await e.client.get(keys.job(id)).exec()).kvs[0]!.mod_revision);
    expect(JSON.parse(out.get('1-CANCELLED')!.e.body)).toMatchObject({ id: `${id}:CANCELLED`, state: 'CANCELLED', error: { code: 'CANCELLED' } });

    const quiet = await newJob('');
    await store.transition(quiet, 'RUNNING', 'planned', {}, fence);
    await store.transition(quiet, 'SUCCEEDED', 'done', { result: result(quiet) }, fence);
    expect((await entries(quiet)).size).toBe(0);
    await e.client.delete().prefix(keys.outbox());
  });

  it('keeps retrying across a change of leader from the recorded backoff, then delivers in order with stable ids', async () => {
    const port = await freePort(); // nothing listens yet: every attempt fails
    const url = `http://127.0.0.1:${port}/hook`;
    const fenceA = await elect();
    const a = new WebhookOutbox(e.client, keys, FAST, log);
    await a.start();
    a.elected(fenceA);
    const id = await newJob(url);
    await store.transition(id, 'RUNNING', 'planned', {}, fenceA);
    await store.transition(id, 'SUCCEEDED', 'archive uploaded', { result: result(id) }, fenceA);
    await vi.waitFor(
      async () => {
        expect((await entries(id)).get('0-RUNNING')?.e.attempts ?? 0).toBeGreaterThanOrEqual(3);
      },
      { timeout: 20_000, interval: 50 },
    );

    // The leader changes: A stops, a new election key (A's fence no longer holds), B takes over.
    a.deposed();
    await a.stop();
    const handover = (await entries(id)).get('0-RUNNING')!.e;
    const fenceB = await elect();
    const b = new WebhookOutbox(e.client, keys, FAST, log);
    await b.start();
    b.elected(fenceB);
    try {
      // B continues the count A recorded (not from 0), and keeps the events pending.
      await vi.waitFor(
        async () => {
          expect((await entries(id)).get('0-RUNNING')!.e.attempts).toBeGreaterThan(handover.attempts);
        },
        { timeout: 10_000, interval: 50 },
      );
      expect((await entries(id)).get('1-SUCCEEDED')!.e.attempts).toBe(0); // waits behind RUNNING
      const r = await receiver(port);
      try {
        await vi.waitFor(
          () => {
            expect(r.got).toHaveLength(2);
          },
          { timeout: 10_000, interval: 50 },
        );
        expect(r.got.map((g) => g.id)).toEqual([`${id}:RUNNING`, `${id}:SUCCEEDED`]);
        expect(r.got.map((g) => g.header)).toEqual([`${id}:RUNNING`, `${id}:SUCCEEDED`]);
        expect(r.got.every((g) => g.valid)).toBe(true);
        expect(r.got[0]!.attempt).toBeGreaterThan(handover.attempts);
        expect(r.got[1]!.attempt).toBe(1);
        await vi.waitFor(
          async () => {
            expect((await entries(id)).size).toBe(0);
          },
          { timeout: 5_000, interval: 50 },
        );
        process.stdout.write(`MEASURE outbox: ${handover.attempts} attempt(s) by the first leader, RUNNING delivered at attempt ${r.got[0]!.attempt} by the second\n`);
      } finally {
        r.server.close();
      }
    } finally {
      await b.stop();
    }
  });

  it('a deposed leader cannot move an entry: its fenced write fails and it stops', async () => {
    const port = await freePort();
    const fenceA = await elect();
    const id = await newJob(`http://127.0.0.1:${port}/hook`);
    await store.transition(id, 'RUNNING', 'planned', {}, fenceA);
    await elect(); // another leader now; A was never told
    const a = new WebhookOutbox(e.client, keys, FAST, log);
    await a.start();
    a.elected(fenceA);
    try {
      await new Promise((r) => setTimeout(r, 1_500));
      expect((await entries(id)).get('0-RUNNING')!.e.attempts).toBe(0);
      expect(a.activeJobs).toBe(0);
    } finally {
      await a.stop();
      await e.client.delete().prefix(keys.outbox());
    }
  });

  it('drops an event refused with a 4xx and one not delivered within the retry window', async () => {
    const fence = await elect();
    const port = await freePort();
    const r = await receiver(port, 410);
    const dropped: string[] = [];
    const b2 = new WebhookOutbox(e.client, keys, { ...FAST, retryForMs: 1_500 }, log, { onDropped: (ev, why) => dropped.push(`${ev.state}: ${why}`) });
    await b2.start();
    b2.elected(fence);
    try {
      const refused = await newJob(`http://127.0.0.1:${port}/hook`);
      await store.transition(refused, 'RUNNING', 'planned', {}, fence);
      const closed = await newJob(`http://127.0.0.1:${await freePort()}/hook`);
      await store.transition(closed, 'RUNNING', 'planned', {}, fence);
      await vi.waitFor(
        async () => {
          expect((await entries(refused)).size + (await entries(closed)).size).toBe(0);
        },
        { timeout: 15_000, interval: 100 },
      );
      expect(r.got).toHaveLength(1); // refused once, not retried
      expect(dropped.sort()).toEqual(['RUNNING: not delivered within 1500 ms', 'RUNNING: refused with HTTP 410']);
    } finally {
      r.server.close();
      await b2.stop();
    }
  });

  it('moving the job to history does not drop an event still pending', async () => {
    const fence = await elect();
    const port = await freePort();
    const id = await newJob(`http://127.0.0.1:${port}/hook`);
    await store.transition(id, 'RUNNING', 'planned', plannedFields(), fence);
    await store.transition(id, 'SUCCEEDED', 'archive uploaded', { result: result(id) }, fence);
    const sweeper = new HistorySweeper(store, { archiveAfterMs: 0, maxAgeMs: 0, maxJobs: 0, batch: 500, intervalMs: 60_000 }, () => true, log);
    await sweeper.sweep(Date.now() + 1);
    expect(await store.get(id)).toBeUndefined();
    expect((await store.getHistory(id))?.state).toBe('SUCCEEDED');
    expect([...(await entries(id)).keys()]).toEqual(['0-RUNNING', '1-SUCCEEDED']);
    const r = await receiver(port);
    const b = new WebhookOutbox(e.client, keys, FAST, log);
    await b.start();
    b.elected(fence);
    try {
      await vi.waitFor(
        () => {
          expect(r.got.map((g) => g.id)).toEqual([`${id}:RUNNING`, `${id}:SUCCEEDED`]);
        },
        { timeout: 10_000, interval: 50 },
      );
    } finally {
      r.server.close();
      await b.stop();
    }
  });
});
