import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../deploy/local-cluster.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { streamFileHeaders } from '../uploader/streaming.js';
import { startTestCluster, type TestCluster, STEADY_LEASE_SEC } from './helpers.js';
import { runFfmpeg } from '../transcoder/run-ffmpeg.js';

// Verified playback: Tessera's HLS and DASH output (3 nodes × 2 slots, a source with irregular keyframes), served over local HTTP, played by hls.js and
// dash.js in a real headless Chromium (Debian's `chromium`, which has H.264 and AAC in Media
// Source). Playback starts, passes several segment boundaries, seeks to the middle, and a forced
// switch between renditions plays on with no error or stall event; a frame is not blank.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const PAGE = (player: 'hls' | 'dash'): string => `<!doctype html><html><body style="margin:0;background:#000">
<video id="v" muted playsinline width="640" height="360"></video>
<script src="/${player === 'hls' ? 'hls.min.js' : 'dash.all.min.js'}"></script>
<script>
  const v = document.getElementById('v');
  window.events = { errors: [], stalls: 0, switched: [], levels: 0 };
  v.addEventListener('error', () => window.events.errors.push('video: ' + (v.error && v.error.message)));
  ${
    player === 'hls'
      ? `
  const hls = new Hls({ capLevelToPlayerSize: false });
  window.player = hls;
  // A stall with media buffered ahead is the browser not keeping up (a loaded machine); one with
  // nothing buffered is the stream's (a gap, a missing or late segment): only those count.
  window.events.frozen = [];
  hls.on(Hls.Events.ERROR, (_, d) => {
    if (d.details === 'bufferStalledError') { if ((d.buffer || 0) < 0.5) window.events.stalls++; else window.events.frozen.push({ at: v.currentTime, buffered: d.buffer }); }
    else if (d.fatal) window.events.errors.push('hls: ' + d.details);
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => window.events.switched.push(d.level));
  hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => { window.events.levels = d.levels.length; v.play(); });
  hls.loadSource('/stream/master.m3u8');
  hls.attachMedia(v);
  window.switchTo = (i) => { hls.currentLevel = i; };
  window.current = () => hls.currentLevel;`
      : `
  const p = dashjs.MediaPlayer().create();
  window.player = p;
  p.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
  p.on(dashjs.MediaPlayer.events.ERROR, (e) => window.events.errors.push('dash: ' + JSON.stringify(e.error && e.error.message)));
  p.on(dashjs.MediaPlayer.events.PLAYBACK_STALLED, () => window.events.stalls++);
  p.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => { if (e.mediaType === 'video') window.events.switched.push(e.newRepresentation ? e.newRepresentation.index : -1); });
  p.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => { window.events.levels = p.getRepresentationsByType('video').length; });
  p.initialize(v, '/stream/manifest.mpd', true);
  window.switchTo = (i) => { p.setRepresentationForTypeByIndex('video', i, true); };
  window.current = () => { const r = p.getCurrentRepresentationForType('video'); return r ? r.index : -1; };`
  }
  // Luma spread of the current frame: a blank (black, grey) picture has almost none.
  window.spread = () => {
    const c = document.createElement('canvas'); c.width = 160; c.height = 90;
    const g = c.getContext('2d'); g.drawImage(v, 0, 0, 160, 90);
    const d = g.getImageData(0, 0, 160, 90).data; let min = 255, max = 0;
    for (let i = 0; i < d.length; i += 4) { const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; if (y < min) min = y; if (y > max) max = y; }
    return max - min;
  };
</script></body></html>`;

describe('HLS and DASH play in a real browser', () => {
  let t: TestCluster;
  let work: string;
  let server: Server;
  let base = '';
  let browser: Browser | undefined;
  const have = existsSync(CHROMIUM);

  beforeAll(async () => {
    if (!have) {
      process.stdout.write(`SKIP playback: no Chromium at ${CHROMIUM} (CI installs Debian's chromium)\n`);
      return;
    }
    t = await startTestCluster({ leaseTtlSec: STEADY_LEASE_SEC, nodes: 3, slots: 2, env: { MIN_SEGMENT_SEC: '1', MIN_SUB_SEGMENT_SEC: '0.5' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-play-'));
    // A source whose own keyframes are irregular (0, 3.1, 4.7, 11.3 s), as in the conformance test.
    const clip = join(t.inputDir, 'irregular-16s-360p.mp4');
    await runFfmpeg(
      [
        '-hide_banner',
        '-nostdin',
        '-y',
        '-loglevel',
        'error',
        '-f',
        'lavfi',
        '-i',
        'testsrc2=size=640x360:rate=30:duration=16',
        '-f',
        'lavfi',
        '-i',
        'sine=frequency=440:sample_rate=48000:duration=16',
        '-c:v',
        'libx264',
        '-preset',
        'ultrafast',
        '-g',
        '300',
        '-x264-params',
        'scenecut=0',
        '-force_key_frames',
        '0,3.1,4.7,11.3',
        '-c:a',
        'aac',
        '-shortest',
        clip,
      ],
      { noProgressMs: 120_000 },
    );
    const ladder = [360, 240].map((height) => ({ name: '', height, videoBitrateKbps: height * 2, codec: 'h264', preset: 'ultrafast', dynamicRange: '' }));
    const job = await t.client.wait((await t.client.submit({ inputUri: clip, ladder, package: 'hls,dash' })).jobId);
    if (job.state !== JobState.JOB_STATE_SUCCEEDED) throw new Error(`${job.state} ${job.errorCode} ${job.errorMessage}`);
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(job.result!.streaming!.prefixUri)!;
    const files = new Map<string, Buffer>();
    for (const o of (await t.s3.send(new ListObjectsV2Command({ Bucket: m[1], Prefix: m[2] }))).Contents ?? []) {
      const got = await t.s3.send(new GetObjectCommand({ Bucket: m[1], Key: o.Key! }));
      files.set(o.Key!.slice(m[2]!.length), Buffer.from(await got.Body!.transformToByteArray()));
    }
    const libs: Record<string, string> = {
      '/hls.min.js': join(REPO_ROOT, 'node_modules/hls.js/dist/hls.min.js'),
      '/dash.all.min.js': join(REPO_ROOT, 'node_modules/dashjs/dist/modern/umd/dash.all.min.js'),
    };
    server = createServer((req, res) => {
      void (async () => {
        const url = (req.url ?? '/').split('?')[0]!;
        if (url === '/hls.html' || url === '/dash.html') {
          res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE(url === '/hls.html' ? 'hls' : 'dash'));
        } else if (libs[url]) {
          res.writeHead(200, { 'content-type': 'text/javascript' }).end(await readFile(libs[url]!));
        } else if (url.startsWith('/stream/') && files.has(url.slice(8))) {
          const name = url.slice(8);
          res.writeHead(200, { 'content-type': streamFileHeaders(name).contentType }).end(files.get(name));
        } else {
          res.writeHead(404).end();
        }
      })();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required', '--mute-audio'] });
  }, 300_000);
  afterAll(async () => {
    await browser?.close();
    server?.close();
    await t?.close();
    if (work && !process.env.KEEP_TEST_DIRS) await rm(work, { recursive: true, force: true });
  });

  const time = (page: Page): Promise<number> => page.evaluate(() => (document.getElementById('v') as HTMLVideoElement).currentTime);
  const until = async (page: Page, what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> => {
    const end = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await page.evaluate(() => (window as unknown as { events: unknown }).events))}`);
      await page.waitForTimeout(100);
    }
  };

  for (const player of ['hls', 'dash'] as const) {
    it.skipIf(!have)(
      `${player}: plays past several segments, seeks to the middle, switches rendition without a stall; the frame is not blank`,
      async () => {
        const page = await browser!.newPage();
        try {
          await page.goto(`${base}/${player}.html`);
          // Playback starts and crosses several 2 s segment boundaries.
          await until(page, 'playback past 5 s', async () => (await time(page)) > 5);
          const events = (): Promise<{ errors: string[]; stalls: number; switched: number[]; levels: number }> =>
            page.evaluate(() => (window as unknown as { events: { errors: string[]; stalls: number; switched: number[]; levels: number } }).events);
          expect((await events()).levels).toBe(2);
          // A seek to the middle plays on from there.
          const duration = await page.evaluate(() => (document.getElementById('v') as HTMLVideoElement).duration);
          expect(Math.abs(duration - 16)).toBeLessThan(0.2);
          await page.evaluate((d) => {
            (document.getElementById('v') as HTMLVideoElement).currentTime = d / 2;
          }, duration);
          await until(page, 'playback after the seek', async () => (await time(page)) > duration / 2 + 1);
          // A forced switch to the other rendition, and on it plays.
          const from = await page.evaluate(() => (window as unknown as { current: () => number }).current());
          const to = from === 0 ? 1 : 0;
          const before = (await events()).switched.length;
          await page.evaluate((i) => (window as unknown as { switchTo: (i: number) => void }).switchTo(i), to);
          await until(page, `the switch from ${from} to ${to}`, async () => (await events()).switched.slice(before).includes(to));
          const at = await time(page);
          await until(page, 'playback after the switch', async () => (await time(page)) > Math.min(at + 2, duration - 0.5));
          const e = await events();
          expect(e.errors).toEqual([]);
          expect(e.stalls, JSON.stringify(e)).toBe(0);
          // Not blank: the frame on screen has a real spread of brightness; a screenshot is kept.
          expect(await page.evaluate(() => (window as unknown as { spread: () => number }).spread())).toBeGreaterThan(100);
          const shot = join(work, `${player}.png`);
          await writeFile(shot, await page.locator('#v').screenshot());
          expect(extname(shot)).toBe('.png');
        } finally {
          await page.close();
        }
      },
      120_000,
    );
  }
});
