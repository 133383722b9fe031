import { defineConfig } from 'vitest/config';

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
// Every file keeps its own worker (isolate, the default). Shared workers (isolate: false) saved
// 0.75 s of CPU per file, but a fence-transfer case then hung for its whole 240 s timeout in CI;
// a likely cause is grpc-js's process-wide subchannel pool, where a client can pick up a
// subchannel an earlier file left backing off from a port the OS has since reused.

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
];

export default defineConfig({
  test: {
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    // Two workers on a 2-core machine (vitest's default there is one): unit files in parallel,
    // and the paired integration files two at a time; `integration` stays one at a time.
    maxWorkers: 2,
    projects: [
      {
        test: {
          name: 'unit',
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
