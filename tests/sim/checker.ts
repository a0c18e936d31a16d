/**
 * The simulator's safety invariants, each fed by the driver as things happen
 * and checked on the spot (a violation throws {@linkcode SimFailure}):
 *
 * - Election safety: at most one leader per term, over the whole run.
 * - Log matching: every entry ever written to any node's log at (index,
 *   term) has the same data and the same predecessor term — so two logs that
 *   agree at (index, term) agree on everything before it.
 * - State machine safety: every node applies the same entry at each index,
 *   and reaches the same state digest there (snapshots included).
 * - Leader completeness: an entry known committed in a term below a leader's
 *   term is in that leader's log.
 * - Linearizable reads: a read returns a value written at an index at least
 *   that of every write acknowledged, and every read completed, before the
 *   read was invoked.
 *
 * @module
 */

import type { Entry, NodeId } from "../../raft/types.ts";
import { entryHash } from "./kv_machine.ts";
import { SimFailure } from "./sim_failure.ts";

/** An entry known committed: applied by some node. */
export interface CommittedEntry {
  term: number;
  hash: number;
  /** The state machine's digest after applying it. */
  digest: number;
  /** The first node that applied it. */
  node: NodeId;
}

interface WrittenEntry {
  hash: number;
  prevTerm: number;
  node: NodeId;
}

function key(index: number, term: number): number {
  return index * 2 ** 24 + term;
}

/** Records what happened across the cluster and checks the Raft invariants. */
export class Checker {
  /** term → the leader of that term. */
  readonly leaders = new Map<number, NodeId>();
  /** index → the committed entry there (holes where no node applied it yet). */
  readonly committed: (CommittedEntry | undefined)[] = [];
  /** index → the lowest term of any node seen with its commit index ≥ index. */
  readonly commitBound: number[] = [];
  #written = new Map<number, WrittenEntry>();

  /** The highest index known committed (applied somewhere). */
  get maxCommitted(): number {
    return this.committed.length - 1;
  }

  /** Election safety. */
  observeLeader(node: NodeId, term: number): void {
    const prior = this.leaders.get(term);
    if (prior === undefined) this.leaders.set(term, node);
    else if (prior !== node) {
      throw new SimFailure(
        `election safety: nodes ${prior} and ${node} both leader in term ${term}`,
      );
    }
  }

  /**
   * Log matching, fed with entries as they become durable; `prevTerm` looks
   * up the term before an index in that node's log after the write.
   */
  observeWrite(
    node: NodeId,
    entries: readonly Entry[],
    prevTerm: (index: number) => number | undefined,
  ): void {
    for (const e of entries) {
      const prev = prevTerm(e.index - 1);
      if (prev === undefined) {
        throw new SimFailure(
          `log matching: node ${node} wrote entry ${e.index} (term ${e.term}) with no entry before it`,
        );
      }
      if (prev > e.term) {
        throw new SimFailure(
          `log matching: node ${node} wrote entry ${e.index} with term ${e.term} after term ${prev}`,
        );
      }
      const hash = entryHash(e);
      const k = key(e.index, e.term);
      const seen = this.#written.get(k);
      if (seen === undefined) {
        this.#written.set(k, { hash, prevTerm: prev, node });
      } else if (seen.hash !== hash || seen.prevTerm !== prev) {
        throw new SimFailure(
          `log matching: entry ${e.index} term ${e.term} differs between node ${seen.node} ` +
            `(hash ${seen.hash}, prev term ${seen.prevTerm}) and node ${node} (hash ${hash}, prev term ${prev})`,
        );
      }
    }
  }

  /** A node's commit index rose from `from` to `to` while at `term`. */
  observeCommit(from: number, to: number, term: number): void {
    const bound = this.commitBound;
    for (let i = from + 1; i <= to; i++) {
      const b = bound[i];
      if (b === undefined || term < b) bound[i] = term;
    }
  }

  /** State machine safety: `node` applied `e` and reached `digest`. */
  observeApply(node: NodeId, e: Entry, digest: number): void {
    const hash = entryHash(e);
    const c = this.committed[e.index];
    if (c === undefined) {
      this.committed[e.index] = { term: e.term, hash, digest, node };
      return;
    }
    if (c.term !== e.term || c.hash !== hash) {
      throw new SimFailure(
        `state machine safety: node ${node} applied entry ${e.index} term ${e.term} (hash ${hash}) ` +
          `but node ${c.node} applied term ${c.term} (hash ${c.hash}) there`,
      );
    }
    if (c.digest !== digest) {
      throw new SimFailure(
        `state machine safety: node ${node} reached digest ${digest} at index ${e.index}, ` +
          `node ${c.node} reached ${c.digest}`,
      );
    }
  }

  /** State machine safety for a snapshot installed or restored at `index`. */
  observeSnapshotState(node: NodeId, index: number, term: number, digest: number): void {
    const c = this.committed[index];
    if (c === undefined) return;
    if (c.term !== term || c.digest !== digest) {
      throw new SimFailure(
        `state machine safety: node ${node} holds a snapshot at ${index} (term ${term}, digest ${digest}) ` +
          `but node ${c.node} applied term ${c.term} reaching digest ${c.digest} there`,
      );
    }
  }

  /**
   * Leader completeness: `leader` (at `term`, log holding `entries` from
   * `firstIndex`, everything below compacted after being applied) must hold
   * every entry committed in a lower term, from index `from` on. Returns the
   * first index it could not yet judge (to resume from later).
   */
  checkLeaderLog(
    leader: NodeId,
    term: number,
    firstIndex: number,
    entries: readonly Entry[],
    from: number,
    limit: number,
  ): number {
    const start = Math.max(from, firstIndex, 1);
    const end = Math.min(this.maxCommitted, start + limit - 1);
    for (let i = start; i <= end; i++) {
      const c = this.committed[i];
      const b = this.commitBound[i];
      if (c === undefined || b === undefined || b >= term) return i;
      const e = entries[i - firstIndex];
      if (e === undefined) {
        throw new SimFailure(
          `leader completeness: leader ${leader} of term ${term} lacks entry ${i} (term ${c.term}), ` +
            `committed by term ${b}; its log ends at ${firstIndex + entries.length - 1}`,
        );
      }
      if (e.index !== i || e.term !== c.term || entryHash(e) !== c.hash) {
        throw new SimFailure(
          `leader completeness: leader ${leader} of term ${term} has entry ${e.index} term ${e.term} ` +
            `where entry ${i} term ${c.term} was committed by term ${b}`,
        );
      }
    }
    return end + 1;
  }
}

interface ReadOp {
  key: string;
  floor: number;
  invokedAt: number;
}

/**
 * The client history of the key-value store: checks that reads are
 * linearizable with respect to acknowledged writes and earlier reads. Log
 * indexes order all writes, so a value's index is its version.
 */
export class KvHistory {
  /** key → the highest version acknowledged to a writer or returned to a reader. */
  #known = new Map<string, number>();
  #reads = new Map<number, ReadOp>();
  acknowledgedWrites = 0;
  completedReads = 0;

  /** A write to `key` was acknowledged; the entry that carried it is at `index`. */
  writeAcknowledged(key: string, index: number): void {
    this.acknowledgedWrites++;
    if (index > (this.#known.get(key) ?? 0)) this.#known.set(key, index);
  }

  /** A read of `key` began. */
  readInvoked(id: number, key: string, at: number): void {
    this.#reads.set(id, { key, floor: this.#known.get(key) ?? 0, invokedAt: at });
  }

  /** A read was abandoned (node crashed, timed out); it says nothing. */
  readAbandoned(id: number): void {
    this.#reads.delete(id);
  }

  /** A read returned the value written at `index` (0: absent). */
  readCompleted(id: number, node: NodeId, index: number, readIndex: number): void {
    const op = this.#reads.get(id);
    if (op === undefined) return;
    this.#reads.delete(id);
    this.completedReads++;
    if (index < op.floor) {
      throw new SimFailure(
        `linearizability: read ${id} of ${op.key} at node ${node} (read index ${readIndex}, invoked at ${op.invokedAt}) ` +
          `returned the version written at index ${index}, older than version ${op.floor} known before it began`,
      );
    }
    if (index > (this.#known.get(op.key) ?? 0)) this.#known.set(op.key, index);
  }
}
