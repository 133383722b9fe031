/** A promise with its resolve and reject, for a value another callback delivers later. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: unknown) => void;
}

/**
 * A promise settled from outside (Node 20 has no Promise.withResolvers). Its rejection never
 * counts as unhandled on its own: one nobody waits for any more (a segment or chunk whose work
 * ended) must not crash the process, and whoever awaits it still sees the error.
 */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
