#!/usr/bin/env node
// Entry point of the `tessera` command: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
register();
const { runCli } = await import('./cli.ts');
runCli();
