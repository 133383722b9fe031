// Minimal types for s3rver 3.7.1 (the package ships none): only what deploy/s3-local-server.ts uses.
declare module 's3rver' {
  /** The slice of a Koa context the multipart shim reads and writes. */
  interface S3rverKoaContext {
    method: string;
    path: string;
    query: Record<string, string | string[] | undefined>;
    headers: Record<string, string | string[] | undefined>;
    status: number;
    body: unknown;
    type: string;
    /** A request header ('' when absent). */
    get(field: string): string;
    response: { get(field: string): string };
    remove(field: string): void;
  }

  type S3rverMiddleware = (ctx: S3rverKoaContext, next: () => Promise<void>) => unknown;

  interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    serviceEndpoint?: string;
    configureBuckets?: { name: string; configs?: (string | Buffer)[] }[];
    /** With both, s3rver serves HTTPS. */
    cert?: Buffer;
    key?: Buffer;
  }

  class S3rver {
    constructor(options?: S3rverOptions);
    /** Koa's middleware array; composed when the HTTP server starts (run()). */
    middleware: S3rverMiddleware[];
    /** The filesystem store (internal API, stable in the unmaintained 3.x line). */
    store: { getResourcePath(bucket: string, key: string | undefined, resource: string): string; deleteObject(bucket: string, key: string): Promise<void> };
    httpServer?: import('node:http').Server;
    run(): Promise<import('node:net').AddressInfo>;
    close(): Promise<void>;
  }

  export = S3rver;
}
