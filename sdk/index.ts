/**
 * The Tessera SDK: `import { connect, TesseraClient } from '@tessera-cluster/tessera'`.
 * `connect()` finds the cluster as the CLI does (TESSERA_ADDR, else the local `tessera up` one).
 */
export { TesseraClient, isTerminal, newResumeId, type TesseraClientOptions } from './client.js';
export { connect } from './local.js';
export { oidcTokenSource, clientCredentialsLogin, type OidcClientSettings } from './oidc-login.js';
export { JobState, SegmentState, type Job, type JobSpec, type Rendition } from '../proto/gen/tessera/v1/types.js';
export { AppError, isAppError } from '../common/errors.js';
