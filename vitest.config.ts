import { defineConfig } from 'vitest/config';

// Unit tests sit next to the code; integration tests in test/ start real etcd, ffmpeg,
// an S3-protocol server and gRPC processes, so most run one file at a time (2-core CI).
// `integration-paired` runs two files at once: test/etcd-outages.test.ts spends most of its
// 3.5 minutes with etcd frozen on purpose (nothing to do but wait), so the files that run beside
// it use that idle time; they assert on frames, states and files, never on how long things take.
const PAIRED = ['test/etcd-outages.test.ts', 'test/media.test.ts', 'test/streaming.test.ts', 'test/history-retention.test.ts', 'test/watch-compaction.test.ts', 'test/alerts.test.ts'];

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
          include: ['{common,coordinator,node-agent,transcoder,uploader,sdk,cli,ops,deploy,bench}/**/*.test.ts', 'test/support/**/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration-paired',
          include: PAIRED,
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
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
