// A complete SDK example (README "The SDK"; test/cli.test.ts runs it):
//   npx tessera up          # or set TESSERA_ADDR to a cluster's coordinators
//   node --import tsx examples/transcode.ts movie.mp4
import { connect, JobState } from '@tessera-cluster/tessera';

const file = process.argv[2];
if (!file) {
  console.error('usage: node --import tsx examples/transcode.ts <video file>');
  process.exit(2);
}
const c = connect();
try {
  const { jobId } = await c.upload(file, { ladder: [{ name: '', height: 240, videoBitrateKbps: 400, codec: 'h264', preset: 'veryfast', dynamicRange: '' }] });
  console.log(`job ${jobId} submitted`);
  for await (const job of c.watch(jobId)) {
    console.log(`${JobState[job.state]} ${job.progress.toFixed(0)}%`);
    if (job.result) console.log(`archive: ${job.result.uri}`);
  }
} finally {
  c.close();
}
