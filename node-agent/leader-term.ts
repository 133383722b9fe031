import type { Etcd3 } from 'etcd3';
import { AppError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

/**
 * Fencing of the calls that change work on this agent (RunSegment, DropSegment, PutSegment):
 * each carries the caller's leader term, the create revision of its election key. With `verify`
 * the term is compared with the election key in etcd first (a short deadline): the current term
 * passes, an older one (or none while nobody leads) is refused. When etcd does not answer, or
 * without `verify`, a term older than the highest this agent has seen is refused. A partitioned
 * leader that still reaches the agents thus cannot start, replace or drop work once another
 * coordinator leads. A call without a term (tests, an older
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
    if (verify) {
      // etcd is the authority when it answers: the election key's create revision is the term.
      let current: number | undefined;
      try {
        const res = await this.etcd
          .get(this.electionKey)
          .options({ deadline: new Date(Date.now() + this.verifyTimeoutMs) })
          .exec();
        const kv = res.kvs[0];
        current = kv ? Number(kv.create_revision) : 0;
      } catch {
        current = undefined; // etcd unreachable from here: the local rule below stands
      }
      if (current === term) {
        // The caller leads now. (Also after an etcd rebuilt from scratch, whose revisions start again.)
        this.highest = term;
        return;
      }
      if (current === 0) this.refuse(term, what, 'no coordinator holds the leadership');
      if (current !== undefined && current > term) {
        this.highest = Math.max(this.highest, current);
        this.refuse(term, what, `the leader's term is ${current}`);
      }
    }
    if (term < this.highest) this.refuse(term, what, `a leader of term ${this.highest} drives this node`);
    this.highest = Math.max(this.highest, term);
  }

  private refuse(term: number, what: string, why: string): never {
    this.refused++;
    this.onRefused();
    this.log.warn({ term, what, why }, 'refused a call from a stale leader');
    throw new AppError('FENCED', `${what}: leader term ${term} is stale (${why})`, { retryable: false });
  }
}
