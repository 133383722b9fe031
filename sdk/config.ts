import { z } from 'zod';
import { csv, parseEnv } from '../common/config-schema.js';

const shape = {
  TESSERA_ADDR: csv.default([]),
  TESSERA_TOKEN: z.string().optional(),
  /** `tessera login` by client credentials (flags override): the issuer, the client, the audience and scopes asked for. */
  TESSERA_OIDC_ISSUER: z.string().optional(),
  TESSERA_OIDC_CLIENT_ID: z.string().optional(),
  TESSERA_OIDC_CLIENT_SECRET: z.string().optional(),
  TESSERA_OIDC_AUDIENCE: z.string().optional(),
  TESSERA_OIDC_SCOPE: z.string().optional(),
  /** TLS to the coordinators: the cluster CA, and the client certificate and key (mutual TLS). */
  TESSERA_TLS_CA: z.string().optional(),
  TESSERA_TLS_CERT: z.string().optional(),
  TESSERA_TLS_KEY: z.string().optional(),
  /** The name the coordinators' certificates carry, checked instead of a dialled IP address. */
  TESSERA_TLS_SERVER_NAME: z.string().optional(),
  /** Extra CA for an https:// S3 endpoint (downloads). */
  S3_CA_FILE: z.string().optional(),
  TESSERA_DIR: z.string().default('.tessera'),
  S3_ENDPOINT: z.string().optional(),
  S3_REGION: z.string().default('us-east-1'),
  S3_ACCESS_KEY_ID: z.string().default('S3RVER'),
  S3_SECRET_ACCESS_KEY: z.string().default('S3RVER'),
};

/** The CLI's settings from the environment (flags override them). */
export function loadCliConfig(env: NodeJS.ProcessEnv = process.env) {
  return parseEnv(shape, env);
}
