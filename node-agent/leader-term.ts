import type { Etcd3 } from 'etcd3';
import { AppError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/**
 * Fencing of the calls that change work on this agent (RunSegment, DropSegment, PutSegment):
 * each carries the caller's leader term, the create revision of its election key. A term older
 * than the highest one this agent has seen is refused at once; with `verify`, the term is also
 * compared with the election key in etcd (a short deadline: an agent that cannot reach etcd keeps
 * the local rule). A partitioned leader that still reaches the agents thus cannot start, replace
 * or drop work once another coordinator leads. A call without a term (tests, an older
 * coordinator) is not fenced here; its etcd writes still are.
 */
export class LeaderTermGate {
  /** The highest leader term seen (0: none yet). */
  highest = 0;
  refused = 0;

  constructor(
    private readonly etcd: Etcd3,
    private readonly electionKey: string,
    private readonly log: Logger,
    private readonly verifyTimeoutMs = 1_000,
    private readonly onRefused: () => void = () => undefined,
  ) {}

  async check(term: number | undefined, what: string, verify: boolean): Promise<void> {
    if (term === undefined || term <= 0) return;
    if (term < this.highest) this.refuse(term, what, `a leader of term ${this.highest} drives this node`);
    if (verify) {
      let current: number | undefined;
      try {
        const res = await this.etcd.get(this.electionKey).options({ deadline: new Date(Date.now() + this.verifyTimeoutMs) }).exec();
        const kv = res.kvs[0];
        current = kv ? Number(kv.create_revision) : 0;
      } catch {
        current = undefined; // etcd unreachable from here: the local rule stands
      }
      if (current !== undefined) {
        if (current > term) {
          this.highest = Math.max(this.highest, current);
          this.refuse(term, what, `the leader's term is ${current}`);
        }
        if (current === 0) this.refuse(term, what, 'no coordinator holds the leadership');
      }
    }
    this.highest = Math.max(this.highest, term);
  }

  private refuse(term: number, what: string, why: string): never {
    this.refused++;
    this.onRefused();
    this.log.warn({ term, what, why }, 'refused a call from a stale leader');
    throw new AppError('FENCED', `${what}: leader term ${term} is stale (${why})`, { retryable: false });
  }
}
