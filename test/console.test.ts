import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TesseraClient } from '../sdk/client.js';
import { JobState, SegmentState } from '../proto/gen/tessera/v1/types.js';
import { fixture, startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { nodeArgs } from '../common/node-entry.js';

// The web console (docs/console.md) in a real headless Chromium: submit by upload and watch the
// row reach SUCCEEDED, the job's segment timeline (one row per node, one bar per segment), drain
// a node, cancel a running job (with a token that may submit and administer); then, without a
// token or with a read-only one, mutations are refused and the page says why. One cluster, with
// TLS and tokens (the console serves HTTPS). Asserts on the DOM (and on the
// Chart.js chart's data), never on pixels. Screenshots go to $CONSOLE_SCREENSHOT_DIR (else a
// folder in the test's cluster dir): docs/img/console-timeline.png comes from here.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const have = existsSync(CHROMIUM);
const run = promisify(execFile);
const RUNG = '240:300';
const SLOW_RUNG = [{ name: '', height: 360, videoBitrateKbps: 800, codec: 'h264', preset: 'veryslow' }];

async function shoot(page: Page, dir: string, name: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await page.screenshot({ path: join(dir, name), fullPage: true });
}

const stateOf = (page: Page, id: string): Promise<string | null> =>
  page
    .locator(`#jobs-table tr[data-job-id="${id}"]`)
    .getAttribute('data-state', { timeout: 1_000 })
    .catch(() => null);

// The operator's token may submit (API_TOKENS) and administer (ADMIN_TOKENS): its scopes add up.
const OPS = 'console-ops-token-0123456';
const tokens = { API_TOKENS: `console-write-token-0123,${OPS}`, READ_TOKENS: 'console-read-token-0123', ADMIN_TOKENS: `console-admin-token-0123,${OPS}` };

describe('web console in a browser (TLS, tokens)', () => {
  let t: TestCluster;
  let browser: Browser | undefined;
  let ctx: BrowserContext;
  let page: Page;
  let ops: TesseraClient;
  let shots = '';

  beforeAll(async () => {
    if (!have) {
      process.stdout.write(`SKIP console: no Chromium at ${CHROMIUM}\n`);
      return;
    }
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 2, tls: true, coordinatorEnv: tokens, env: { MIN_SEGMENT_SEC: '1', MIN_SUB_SEGMENT_SEC: '0.5' } });
    ops = new TesseraClient({ addresses: t.cluster.coordinators, tls: t.cluster.clientTls()!, tlsServerName: 'localhost', token: OPS, timeoutMs: 20_000 });
    shots = process.env.CONSOLE_SCREENSHOT_DIR ?? join(t.dir, 'screenshots');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    // The local CA is not the browser's: accept the coordinator's certificate here.
    ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    page = await ctx.newPage();
  }, 180_000);
  afterAll(async () => {
    ops?.close();
    await browser?.close();
    await t?.close();
  });

  const useToken = async (p: Page, tok: string): Promise<void> => {
    if (tok) await p.fill('#token', tok);
    await p.getByRole('button', { name: tok ? 'Use token' : 'Forget' }).click();
  };
  const noticeText = (p: Page): Promise<string> =>
    p
      .locator('#notice')
      .textContent()
      .then((s) => s ?? '');

  it.skipIf(!have)('tessera console prints the URL that tessera up recorded', async () => {
    const { stdout } = await run(process.execPath, [...nodeArgs('cli/cli.ts'), 'console', '--dir', t.dir], {
      env: { ...process.env, TESSERA_NO_BROWSER: '1' },
      timeout: 30_000,
    });
    expect(t.cluster.consoles[0]).toMatch(/^https:\/\/localhost:\d+\/$/);
    expect(stdout.trim()).toBe(`console: ${t.cluster.consoles[0]}`);
  });

  it.skipIf(!have)('uploads a job, shows its timeline, drains a node and cancels a running job', async () => {
    const url = t.cluster.consoles[0]!;
    const clip = await fixture(t.inputDir, 'console-6s-240p.mp4', { seconds: 6, width: 320, height: 240, fps: 25 });

    // Jobs: submit by upload (progress shown) and watch the row reach SUCCEEDED.
    await page.goto(url);
    await useToken(page, OPS);
    await page.locator('#jobs-live').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
    await page.setInputFiles('#upload-file', clip);
    await page.fill('#upload-ladder', RUNG);
    await page.getByRole('button', { name: 'Upload and submit' }).click();
    const status = page.locator('#upload-status[data-job-id]');
    await status.waitFor({ timeout: 30_000 });
    const jobId = (await status.getAttribute('data-job-id'))!;
    expect(jobId).toMatch(/\S/);
    expect(await page.locator('#upload-progress').getAttribute('value')).toBe('100');
    await page.locator(`#jobs-table tr[data-job-id="${jobId}"][data-state="SUCCEEDED"]`).waitFor({ timeout: 90_000 });
    const row = page.locator(`#jobs-table tr[data-job-id="${jobId}"]`);
    expect(await row.textContent()).toContain('console-6s-240p.mp4');
    expect(await row.textContent()).toContain('240p');
    // The state filter narrows the list.
    await page.selectOption('#state-filter', 'FAILED');
    await page.locator(`#jobs-table tr[data-job-id="${jobId}"]`).waitFor({ state: 'detached', timeout: 10_000 });
    await page.selectOption('#state-filter', 'SUCCEEDED');
    await row.waitFor({ timeout: 10_000 });
    await shoot(page, shots, 'console-jobs.png');

    // Job detail: one timeline row per node, one bar per segment attempt, every bar done.
    const job = await ops.get(jobId);
    const nodesUsed = [...new Set(job.segments.map((s) => s.nodeId))].sort();
    expect(nodesUsed).toEqual(t.cluster.nodeIds().sort());
    await row.getByRole('link').click();
    await page.locator('#job-facts [data-fact="state"]').filter({ hasText: 'SUCCEEDED' }).waitFor({ timeout: 15_000 });
    await page.locator('#timeline-table tbody tr').first().waitFor();
    const chart = await page.evaluate(() => {
      type Ds = { kind: string; label: string; data: { bar?: { segment: number; node: string } }[] };
      const c = document.getElementById('timeline') as HTMLCanvasElement;
      const ch = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: { labels: string[]; datasets: Ds[] } } } }).Chart.getChart(c);
      const segs = ch.data.datasets.filter((d) => d.kind === 'segment');
      return { labels: ch.data.labels, bars: segs.flatMap((d) => d.data.map((x) => ({ state: d.label, segment: x.bar!.segment, node: x.bar!.node }))), kinds: ch.data.datasets.map((d) => d.kind) };
    });
    // A row for the job's own phases (preparing, finalizing), then one row per node.
    expect(chart.labels[0]).toBe('job');
    expect(chart.kinds).toContain('job');
    chart.labels = chart.labels.slice(1);
    expect(chart.labels).toEqual(nodesUsed);
    const attempts = job.segments.reduce((a, s) => a + s.attempt, 0);
    expect(chart.bars.length).toBe(attempts);
    expect([...new Set(chart.bars.map((b) => b.segment))].sort((a, b) => a - b)).toEqual(job.segments.map((s) => s.index).sort((a, b) => a - b));
    // Each segment's last bar is on the node that finished it, and says done.
    for (const s of job.segments) expect(chart.bars.some((b) => b.segment === s.index && b.node === s.nodeId && b.state === 'done')).toBe(true);
    const tableRows = await page
      .locator('#timeline-table tbody tr')
      .evaluateAll((rows) => rows.map((r) => ({ node: r.getAttribute('data-node'), segment: Number(r.getAttribute('data-segment')), state: r.getAttribute('data-state') })));
    expect(tableRows.length).toBe(chart.bars.length);
    expect(new Set(tableRows.map((r) => r.node))).toEqual(new Set(nodesUsed));
    expect(await page.locator('#renditions-table tbody tr[data-rendition="240p"]').count()).toBe(1);
    expect(await page.locator('#job-trail li').count()).toBeGreaterThan(job.segments.length);
    // The download link serves the archive (a zip).
    const zipHead = await page.evaluate(async (id) => {
      const r = await fetch(`/api/jobs/${id}/download-link`, { method: 'POST', headers: { 'x-tessera-console': '1', authorization: `Bearer ${sessionStorage.getItem('tessera-console-token')}` } });
      const { url: link } = (await r.json()) as { url: string };
      const z = await fetch(link);
      return { status: z.status, head: Array.from(new Uint8Array(await z.arrayBuffer()).slice(0, 2)) };
    }, jobId);
    expect(zipHead).toEqual({ status: 200, head: [0x50, 0x4b] });
    await page.locator('#job-download').waitFor();
    expect(await page.locator('#job-facts [data-fact="phases"]').textContent()).toMatch(/preparing [\d.]+ s · segments [\d.]+ s · finalizing [\d.]+ s/);
    await shoot(page, shots, 'console-timeline.png');

    // A running job (submitted by the SDK: a slow preset keeps it running).
    const long = await fixture(t.inputDir, 'console-16s-360p.mp4', { seconds: 16, width: 640, height: 360, fps: 30 });
    const { jobId: longId } = await ops.submit({ inputUri: long, ladder: SLOW_RUNG });
    for await (const j of ops.watch(longId)) if (j.segments.some((s) => s.framesDone > 0 || s.state === SegmentState.SEGMENT_STATE_TRANSCODING)) break;

    // Nodes: drain one; its state changes to draining (it holds a segment, so it stays a while).
    await page.getByRole('link', { name: 'Nodes' }).click();
    const victim = t.cluster.nodeIds().sort()[1]!;
    const nodeRow = page.locator(`#nodes-table tr[data-node="${victim}"]`);
    await nodeRow.waitFor({ timeout: 15_000 });
    expect(await nodeRow.getAttribute('data-state')).toBe('ready');
    expect(await nodeRow.textContent()).toContain('h264');
    await page.getByRole('button', { name: `Drain node ${victim}` }).click();
    await page.locator(`#nodes-table tr[data-node="${victim}"] .node-state`).filter({ hasText: 'draining' }).waitFor({ timeout: 10_000 });
    await page.getByRole('button', { name: `Undrain node ${victim}` }).waitFor({ timeout: 10_000 });
    await shoot(page, shots, 'console-nodes.png');

    // Jobs: cancel the running job; its row reaches CANCELLED.
    await page.getByRole('link', { name: 'Jobs' }).click();
    await page.locator(`#jobs-table tr[data-job-id="${longId}"]`).waitFor({ timeout: 15_000 });
    const before = await stateOf(page, longId);
    expect(['RUNNING', 'PREPARING', 'QUEUED']).toContain(before);
    await page.getByRole('button', { name: `Cancel job ${longId}` }).click();
    await page.locator(`#jobs-table tr[data-job-id="${longId}"][data-state="CANCELLED"]`).waitFor({ timeout: 30_000 });
    expect((await ops.get(longId)).state).toBe(JobState.JOB_STATE_CANCELLED);

    // Cluster: the leader and a throughput chart.
    await page.getByRole('link', { name: 'Cluster' }).click();
    await page.locator('#cluster-facts [data-fact="leader"]').filter({ hasText: 'coordinator-0' }).waitFor({ timeout: 15_000 });
    expect(
      await page.evaluate(() => (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): unknown } }).Chart.getChart(document.getElementById('throughput') as HTMLCanvasElement) !== undefined),
    ).toBe(true);
    await shoot(page, shots, 'console-cluster.png');
  });

  it.skipIf(!have)('refuses mutations without a token or with a read-only token, and says why', async () => {
    const url = t.cluster.consoles[0]!;
    const clip = await fixture(t.inputDir, 'console-16s-360p.mp4', { seconds: 16, width: 640, height: 360, fps: 30 });
    const { jobId } = await ops.upload(clip, { ladder: SLOW_RUNG });
    // A fresh browser context: no token in its session storage.
    const fresh = await browser!.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await fresh.newPage();
    await page.goto(url);

    // No token: the list itself is refused, and so is an upload.
    await page.locator('#notice').filter({ hasText: 'UNAUTHENTICATED' }).waitFor({ timeout: 15_000 });
    expect(await noticeText(page)).toContain('enter one above');
    await page.setInputFiles('#upload-file', clip);
    await page.getByRole('button', { name: 'Upload and submit' }).click();
    await page.locator('#notice').filter({ hasText: 'Upload refused' }).waitFor({ timeout: 15_000 });
    expect(await noticeText(page)).toContain('UNAUTHENTICATED');

    // A read token: the list shows, but upload, cancel and drain are refused with the reason.
    await useToken(page, tokens.READ_TOKENS);
    await page.locator(`#jobs-table tr[data-job-id="${jobId}"]`).waitFor({ timeout: 15_000 });
    await page.setInputFiles('#upload-file', clip);
    await page.getByRole('button', { name: 'Upload and submit' }).click();
    await page.locator('#notice').filter({ hasText: 'Upload refused' }).waitFor({ timeout: 15_000 });
    expect(await noticeText(page)).toContain('PERMISSION_DENIED');
    expect(await noticeText(page)).toContain('may not submit');
    await page.getByRole('button', { name: `Cancel job ${jobId}` }).click();
    await page.locator('#notice').filter({ hasText: 'Cancel of' }).waitFor({ timeout: 15_000 });
    expect(await noticeText(page)).toContain('PERMISSION_DENIED');
    expect((await ops.get(jobId)).state).not.toBe(JobState.JOB_STATE_CANCELLED);
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.locator('#notice').filter({ hasText: 'PERMISSION_DENIED' }).waitFor({ timeout: 15_000 });
    expect(await noticeText(page)).toContain('admin');
    expect(await page.locator('#nodes-table tbody tr[data-node]').count()).toBe(0);
    // A direct drain call with the read token is refused by the API's own check.
    const drain = await page.evaluate(
      async ([tok, node]) => {
        const r = await fetch(`/api/nodes/${node}/drain`, { method: 'POST', headers: { authorization: `Bearer ${tok}`, 'x-tessera-console': '1' } });
        return { status: r.status, body: (await r.json()) as { error: { code: string } } };
      },
      [tokens.READ_TOKENS, 'node-0'] as const,
    );
    expect(drain).toEqual({ status: 403, body: { error: { code: 'PERMISSION_DENIED', message: expect.stringContaining('admin') } } });

    // CSRF: even the write token's cancel is refused without the console header, or from another origin.
    const csrf = await page.evaluate(
      async ([tok, id]) => {
        const a = await fetch(`/api/jobs/${id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${tok}` } });
        return { status: a.status, body: (await a.json()) as { error: { code: string; message: string } } };
      },
      [OPS, jobId] as const,
    );
    expect(csrf.status).toBe(403);
    expect(csrf.body.error.message).toContain('x-tessera-console');
    expect((await ops.get(jobId)).state).not.toBe(JobState.JOB_STATE_CANCELLED);

    // The admin token sees the nodes (over TLS); the write token cancels the job from the page.
    await useToken(page, 'console-admin-token-0123');
    await page.locator('#nodes-table tr[data-node="node-0"]').waitFor({ timeout: 15_000 });
    await page.getByRole('link', { name: 'Jobs' }).click();
    await useToken(page, 'console-write-token-0123');
    await page.getByRole('button', { name: `Cancel job ${jobId}` }).click();
    await page.locator(`#jobs-table tr[data-job-id="${jobId}"][data-state="CANCELLED"]`).waitFor({ timeout: 30_000 });
    expect(await page.locator('#notice').isHidden()).toBe(true);
    await fresh.close();
  });
});
