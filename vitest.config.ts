import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// Unit tests sit next to the code; integration tests in test/ start real etcd, ffmpeg, an
// S3-protocol server and gRPC processes.
//
// `integration-paired` runs two files at once. test/etcd-outages.test.ts spends most of its 3.5
// minutes with etcd frozen on purpose, and the files that run beside it use that idle time. The
// other files here check what a job produces (frames, states, files, codes) and nothing about how
// long it takes, so a CPU-bound neighbour slows them without changing their outcome; together they
// use the 15-35 % of the two cores a single file leaves idle (measured: one file alone keeps the
// cores 66-86 % busy on this kind of VM).
//
// `integration` runs one file at a time, after the paired ones (groupOrder): fault injection, lease
// and watchdog timings, latency assertions, and the browser tests, which must not share the cores.
//
// Unit files share their workers (isolate: false): a unit run took 62 s and 104 s of CPU instead
// of 89 s and 156 s. Integration files keep a worker each (isolate, the default): they start
// clusters, clients and servers, and saved only 0.75 s of CPU per file when shared. (A
// fence-transfer hang once blamed on shared workers was its fake uploader, which never answered a
// cancelled call; fixed.)

const PAIRED = [
  'test/etcd-outages.test.ts',
  'test/media.test.ts',
  'test/streaming.test.ts',
  'test/history-retention.test.ts',
  'test/watch-compaction.test.ts',
  'test/alerts.test.ts',
  'test/pipeline.test.ts',
  'test/cli.test.ts',
  'test/tls.test.ts',
  'test/oidc.test.ts',
  'test/tenants.test.ts',
  'test/hostile.test.ts',
  'test/uploads.test.ts',
  'test/backup-restore.test.ts',
  'test/ranged-input.test.ts',
  'test/staging-too-small.test.ts',
  'test/staging-sweeper.test.ts',
  'test/placement.test.ts',
  'test/secure-start.test.ts',
  'test/frame-cuts.test.ts',
  'test/job-logs.test.ts',
  'test/reconcile-journal.test.ts',
  'test/etcd-cluster.test.ts',
  'test/webhook-outbox.test.ts',
  'test/ssrf.test.ts',
  'test/fence-transfer.test.ts',
  'test/control-plane-bench.test.ts',
  'test/disk-full.test.ts',
  // Mostly waiting (a receiver started 20 s late, a throttled upload): 42 % of the cores alone.
  'test/leftovers.test.ts',
];

// The paired phase is CPU-bound, except while etcd-outages waits on a frozen etcd: it starts first,
// beside the files that can keep both cores busy on their own (several jobs at once), instead of
// wherever its size put it (it came 13th, beside light files, with a core idle).
const FIRST = ['test/etcd-outages.test.ts', 'test/media.test.ts', 'test/streaming.test.ts', 'test/cli.test.ts'];

class HeavyBesideIdle extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification): number => {
      const i = FIRST.findIndex((p) => f.moduleId.endsWith(p));
      return i < 0 ? FIRST.length : i;
    };
    return [...sorted].sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    // Two workers on a 2-core machine (vitest's default there is one): unit files in parallel,
    // and the paired integration files two at a time; `integration` stays one at a time.
    maxWorkers: 2,
    sequence: { sequencer: HeavyBesideIdle },
    projects: [
      {
        test: {
          name: 'unit',
          isolate: false,
          sequence: { groupOrder: 0 },
          include: ['{common,coordinator,node-agent,transcoder,uploader,sdk,cli,ops,deploy,bench}/**/*.test.ts', 'test/support/**/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration-paired',
          include: PAIRED,
          sequence: { groupOrder: 0 },
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: [...PAIRED, 'test/support/**'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
