import { randomBytes, createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * How this checkout starts one of its own TypeScript programs as a Node process (local clusters,
 * the local autoscaler, tests that run the CLI).
 *
 * Through tsx, every start costs about 0.8 s of wall time and 1.2 s of CPU more than plain
 * JavaScript (measured: the coordinator's, agent's and uploader's imports 1.5–1.7 s against
 * 0.76–0.80 s, RSS 131 MB against 89 MB): tsx's loader hooks run on a thread of their own and
 * every import, node_modules included, makes a round trip to it. So the sources are transpiled
 * once by esbuild (type-stripping only, one output file per source file; no bundling, so paths
 * relative to a module stay as they are) into `node_modules/.cache/tessera-build/<hash>/`, where
 * `<hash>` names the sources' paths, sizes and modification times: an edited file gives a new
 * build, made again in well under a second. Everything that is not TypeScript (proto files, the
 * console's pages, rule files, package.json, node_modules) is a symlink in the build, so code
 * that finds files next to itself finds the same ones. Several processes may build at once: each
 * writes a folder of its own and renames it into place; the first rename wins.
 *
 * When the build cannot be made (no esbuild, a read-only checkout), the program runs through tsx
 * as before. `TESSERA_NO_BUILD=1` asks for tsx.
 */

/** The folders whose TypeScript a Tessera process may import. */
const SOURCE_DIRS = ['common', 'coordinator', 'node-agent', 'transcoder', 'uploader', 'sdk', 'cli', 'ops', 'deploy', 'proto', 'examples'];
/** Written at a build's root: code running from a build knows it is one, and where it came from. */
const MARKER = '.tessera-build.json';
const HERE = dirname(fileURLToPath(import.meta.url));

/** Where this module runs from: a build (its marker names the checkout), or the checkout itself. */
const { checkout, runningBuild } = ((): { checkout: string; runningBuild: string | undefined } => {
  const root = resolve(HERE, '..');
  try {
    return { checkout: (JSON.parse(readFileSync(join(root, MARKER), 'utf8')) as { checkout: string }).checkout, runningBuild: root };
  } catch {
    return { checkout: root, runningBuild: undefined };
  }
})();

/** The checkout, also when this module itself runs from a build. */
export const CHECKOUT_ROOT: string = checkout;

let built: string | null | undefined;

/** Node's arguments that run `entry` (a path relative to the checkout, ending in .ts). */
export function nodeArgs(entry: string): string[] {
  const root = buildRoot();
  if (root) return [join(root, entry.replace(/\.ts$/, '.js'))];
  return ['--import', 'tsx', join(CHECKOUT_ROOT, entry)];
}

/** The build's root (made when missing or stale), or undefined to run through tsx. */
export function buildRoot(): string | undefined {
  if (runningBuild) return runningBuild;
  if (process.env.TESSERA_NO_BUILD === '1') return undefined;
  if (built === undefined) {
    try {
      built = ensureBuild();
    } catch (err) {
      process.emitWarning(`running TypeScript through tsx: the JavaScript build failed (${err instanceof Error ? err.message : String(err)})`);
      built = null;
    }
  }
  return built ?? undefined;
}

function sourceFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    let ents;
    try {
      ents = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && !e.name.endsWith('.test.ts')) out.push(p);
    }
  };
  for (const d of SOURCE_DIRS) walk(join(CHECKOUT_ROOT, d));
  return out.sort();
}

function ensureBuild(): string {
  const files = sourceFiles();
  const h = createHash('sha256');
  for (const f of files) {
    const st = statSync(f);
    h.update(`${relative(CHECKOUT_ROOT, f)}\0${st.size}\0${st.mtimeMs}\n`);
  }
  const cache = join(CHECKOUT_ROOT, 'node_modules', '.cache', 'tessera-build');
  const target = join(cache, h.digest('hex').slice(0, 16));
  if (existsSync(join(target, MARKER))) return target;
  mkdirSync(cache, { recursive: true });
  const tmp = join(cache, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const ts = files.filter((f) => f.endsWith('.ts'));
    const esbuild = loadEsbuild();
    esbuild.buildSync({
      entryPoints: ts,
      outdir: tmp,
      outbase: CHECKOUT_ROOT,
      bundle: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcemap: 'linked',
      logLevel: 'silent',
    });
    for (const f of files) {
      if (f.endsWith('.ts')) continue;
      const link = join(tmp, relative(CHECKOUT_ROOT, f));
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(f, link);
    }
    for (const name of ['package.json', 'node_modules']) symlinkSync(join(CHECKOUT_ROOT, name), join(tmp, name));
    writeFileSync(join(tmp, MARKER), JSON.stringify({ checkout: CHECKOUT_ROOT, files: files.length, builtAtMs: Date.now() }));
    try {
      renameSync(tmp, target);
    } catch (err) {
      // Another process renamed its build into place first: the same sources, so the same build.
      if (!existsSync(join(target, MARKER))) throw err;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  pruneOld(cache, target);
  return target;
}

/** Builds of older sources, left an hour: a cluster started before an edit may still run one. */
function pruneOld(cache: string, keep: string): void {
  for (const e of readdirSync(cache)) {
    const p = join(cache, e);
    if (p === keep) continue;
    try {
      if (Date.now() - statSync(p).mtimeMs > 3_600_000) rmSync(p, { recursive: true, force: true });
    } catch {
      // gone already
    }
  }
}

interface Esbuild {
  buildSync(o: Record<string, unknown>): unknown;
}

/** esbuild, resolved from the checkout (a synchronous require: spawning stays synchronous). */
function loadEsbuild(): Esbuild {
  return createRequire(join(CHECKOUT_ROOT, 'package.json'))('esbuild') as Esbuild;
}
