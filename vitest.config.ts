import { defineConfig } from 'vitest/config';

// Unit tests sit next to the code; integration tests in test/ start real etcd, ffmpeg,
// an S3-protocol server and gRPC processes, so they run one file at a time (2-core CI).
export default defineConfig({
  test: {
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['{common,coordinator,node-agent,transcoder,uploader,sdk,ops,deploy,bench}/**/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
