import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, waitFor } from '../deploy/local-cluster.js';
import { freePort } from '../deploy/ports.js';
import { JobState } from '../proto/gen/tessera/v1/types.js';
import { fixture, startTestCluster, type TestCluster } from './helpers.js';

/**
 * A real Prometheus (Debian's `prometheus`, installed by .ci/run) scrapes a local cluster's
 * coordinator with the shipped alert rules — every `for:` shortened to 3 s in a templated
 * copy — and the "no ready nodes" alert fires through the HTTP API once every node agent is
 * killed while a job waits.
 */
const hasPrometheus = spawnSync('prometheus', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasPrometheus) process.stdout.write('test/alerts.test.ts skipped: no `prometheus` binary (apt-get install prometheus; .ci/run installs it)\n');

/** The shipped rules with every `for:` replaced (the shipped file keeps production values). */
export async function templatedRules(forValue: string): Promise<string> {
  const text = await readFile(join(REPO_ROOT, 'deploy/prometheus/tessera-rules.yaml'), 'utf8');
  return text.replace(/^(\s+for:\s*)\S+$/gm, `$1${forValue}`);
}

interface PromAlert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
  activeAt: string;
}

describe.skipIf(!hasPrometheus)('alert rules against a real Prometheus', () => {
  let t: TestCluster;
  let work: string;
  let prom: ChildProcess | undefined;
  let promUrl = '';

  const alerts = async (): Promise<PromAlert[]> => {
    const res = await fetch(`${promUrl}/api/v1/alerts`, { signal: AbortSignal.timeout(3_000) });
    return ((await res.json()) as { data: { alerts: PromAlert[] } }).data.alerts;
  };

  beforeAll(async () => {
    const metricsPort = await freePort();
    t = await startTestCluster({ nodes: 2, coordinatorEnv: { METRICS_PORT: String(metricsPort), OPS_PROBE_INTERVAL_MS: '500' } });
    work = await mkdtemp(join(tmpdir(), 'tessera-alerts-'));
    await writeFile(join(work, 'rules.yaml'), await templatedRules('3s'));
    await writeFile(
      join(work, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'rule_files: [rules.yaml]',
        'scrape_configs:',
        '  - job_name: tessera-coordinator',
        `    static_configs: [{ targets: ['127.0.0.1:${metricsPort}'] }]`,
        '',
      ].join('\n'),
    );
    const promPort = await freePort();
    promUrl = `http://127.0.0.1:${promPort}`;
    prom = spawn('prometheus', [`--config.file=${join(work, 'prometheus.yml')}`, `--storage.tsdb.path=${join(work, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'], {
      stdio: 'ignore',
    });
    await waitFor(async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok === true, 30_000, 'prometheus');
  });

  afterAll(async () => {
    if (prom?.pid) {
      prom.kill('SIGTERM');
      await new Promise((r) => prom!.once('exit', r));
    }
    await t?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('fires "no ready nodes" once every node agent is killed while a job waits', async () => {
    const clip = await fixture(t.inputDir, 'clip-16s-240p.mp4', { seconds: 16, width: 426, height: 240, fps: 25 });
    // Prometheus sees the cluster healthy first: nodes ready, the alert inactive.
    await waitFor(
      async () => {
        const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent('max(tessera_nodes{state="ready"})')}`);
        const v = ((await r.json()) as { data: { result: { value: [number, string] }[] } }).data.result[0]?.value[1];
        return v === '2';
      },
      20_000,
      'Prometheus to scrape 2 ready nodes',
    );
    const { jobId } = await t.client.submit({ inputUri: clip, ladder: [{ name: '', height: 240, videoBitrateKbps: 300, codec: 'h264', preset: 'ultrafast' }] });
    await waitFor(async () => (await t.client.get(jobId)).state === JobState.JOB_STATE_RUNNING, 30_000, 'the job to run');
    expect((await alerts()).filter((a) => a.labels.alertname === 'TesseraNoReadyNodes')).toEqual([]);

    const killedAt = Date.now();
    for (const id of t.cluster.nodeIds()) t.cluster.signal(id, 'SIGKILL');
    let firing: PromAlert | undefined;
    await waitFor(
      async () => {
        firing = (await alerts()).find((a) => a.labels.alertname === 'TesseraNoReadyNodes' && a.state === 'firing');
        return firing !== undefined;
      },
      60_000,
      'TesseraNoReadyNodes to fire',
    );
    const firedAfterMs = Date.now() - killedAt;
    process.stdout.write(`TesseraNoReadyNodes firing ${firedAfterMs} ms after the kill (lease TTL 2 s, for: 3 s, scrape/eval 1 s); active since ${firing!.activeAt}\n`);
    expect(firing!.labels.severity).toBe('critical');
    // The job still waits (nothing lost): it is not terminal.
    expect([JobState.JOB_STATE_RUNNING, JobState.JOB_STATE_PREPARING, JobState.JOB_STATE_QUEUED]).toContain((await t.client.get(jobId)).state);
    // A node comes back: the alert resolves.
    await t.cluster.addNode();
    await waitFor(async () => !(await alerts()).some((a) => a.labels.alertname === 'TesseraNoReadyNodes'), 30_000, 'the alert to resolve');
    await t.client.cancel(jobId);
  });
});
