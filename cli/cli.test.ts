import { describe, expect, it } from 'vitest';
import { isAppError } from '../common/errors.js';
import { parseCommandLine, suggest } from './cli.js';

/** The error a command line gets, as the CLI prints it (code and message). */
function refusal(argv: string[]): { code: string; message: string } {
  try {
    parseCommandLine(argv);
  } catch (err) {
    if (isAppError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

// The command table, imported in process (importing the CLI does no work).
describe('the CLI command table', () => {
  it('parses a command with its typed flags', () => {
    const { flags, positionals } = parseCommandLine(['transcode', 'in.mp4', '--ladder', '720:2800', '--dry-run', '--priority', '3']);
    expect(positionals).toEqual(['transcode', 'in.mp4']);
    expect(flags).toMatchObject({ ladder: '720:2800', 'dry-run': true, priority: '3' });
  });

  it('names an unknown option with the likely one', () => {
    expect(refusal(['transcode', 'x.mp4', '--ladr', '720'])).toEqual({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/unknown option --ladr; did you mean --ladder\?/) });
  });

  it('names an unknown command with the likely one', () => {
    expect(refusal(['trancode', 'x.mp4'])).toEqual({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/unknown command "trancode"; did you mean "transcode"\?/) });
    expect(refusal(['frobnicate']).message).not.toMatch(/did you mean/);
  });

  it('refuses an option the command does not take, naming both', () => {
    expect(refusal(['nodes', '--ladder', '720']).message).toMatch(/option --ladder does not apply to "tessera nodes"/);
  });

  it('lets --help through on any command', () => {
    expect(parseCommandLine(['nodes', '--help']).flags.help).toBe(true);
  });

  it('suggests only close names', () => {
    expect(suggest('jbos', ['jobs', 'job', 'nodes'])).toBe('jobs');
    expect(suggest('xyz', ['jobs', 'nodes'])).toBeUndefined();
  });
});
