/**
 * The logical Raft log: entries after a compaction point, with the cursors
 * that say how far they are persisted, committed and applied. Pure: no I/O.
 *
 * ```
 *   snapIndex < firstIndex ≤ applied ≤ committed ≤ lastIndex
 *                            stable ≤ lastIndex (persisted through)
 * ```
 *
 * @module
 */

import type { Entry } from "./types.ts";

/** Entries handed out at once are capped by count and by bytes. */
export interface LogLimits {
  /** Most entries returned by one `slice` for sending or applying. */
  batchEntriesMax: number;
  /** Most data bytes returned by one `slice` (at least one entry is always returned). */
  batchBytesMax: number;
}

/** The logical log. */
export class RaftLog {
  /** Index of the last entry folded into a snapshot (compacted away). */
  snapIndex: number;
  /** Term of the entry at `snapIndex`. */
  snapTerm: number;
  #entries: Entry[];
  /** Highest index known to be persisted locally. */
  stable: number;
  /** Highest index handed to the runtime for persisting (≥ stable). */
  persisting: number;
  committed: number;
  /** Highest index the runtime has applied. */
  applied: number;
  /** Highest index handed to the runtime for applying (≥ applied). */
  applying: number;

  constructor(
    init: {
      snapIndex: number;
      snapTerm: number;
      entries: Entry[];
      committed: number;
      applied: number;
    },
  ) {
    this.snapIndex = init.snapIndex;
    this.snapTerm = init.snapTerm;
    this.#entries = [...init.entries];
    const last = this.lastIndex();
    for (let i = 0; i < this.#entries.length; i++) {
      // Storage must hand back a contiguous log: anything else is corruption.
      if (this.#entries[i]!.index !== this.snapIndex + 1 + i) {
        throw new RangeError(
          `Cannot load the log: entry ${i} has index ${this.#entries[i]!.index}, expected ${
            this.snapIndex + 1 + i
          }`,
        );
      }
    }
    this.stable = last;
    this.persisting = last;
    this.committed = Math.min(Math.max(init.committed, this.snapIndex), last);
    this.applied = Math.min(Math.max(init.applied, this.snapIndex), this.committed);
    this.applying = this.applied;
  }

  firstIndex(): number {
    return this.snapIndex + 1;
  }

  lastIndex(): number {
    return this.snapIndex + this.#entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** The term of the entry at `index`, or undefined if it is compacted or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapIndex) return this.snapTerm;
    if (index < this.snapIndex || index > this.lastIndex()) return undefined;
    return this.#entries[index - this.snapIndex - 1]!.term;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** §5.4.1: a candidate's log is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapIndex || index > this.lastIndex()) return undefined;
    return this.#entries[index - this.snapIndex - 1];
  }

  /**
   * Entries from `lo` through `hi` (inclusive), capped by `limits`. Returns
   * undefined if `lo` is compacted away.
   */
  slice(lo: number, hi: number, limits: LogLimits): Entry[] | undefined {
    if (lo <= this.snapIndex) return undefined;
    hi = Math.min(hi, this.lastIndex(), lo + limits.batchEntriesMax - 1);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i <= hi; i++) {
      const e = this.#entries[i - this.snapIndex - 1]!;
      bytes += e.data.byteLength;
      if (out.length > 0 && bytes > limits.batchBytesMax) break;
      out.push(e);
    }
    return out;
  }

  /**
   * The largest index ≤ `index` whose term is ≤ `term` (or the compaction
   * point): where a leader's probe should resume after a rejection
   * (fast backtracking, the thesis §5.3 optimisation).
   */
  findConflictByTerm(index: number, term: number): number {
    index = Math.min(index, this.lastIndex());
    while (index > this.snapIndex) {
      const t = this.term(index)!;
      if (t <= term) return index;
      index--;
    }
    return this.snapIndex;
  }

  /** Appends entries at the end (the leader's own proposals). */
  append(entries: Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.lastIndex() + 1) {
        throw new RangeError(
          `Cannot append the entry at index ${e.index}: the log ends at ${this.lastIndex()}`,
        );
      }
      this.#entries.push(e);
    }
  }

  /**
   * §5.3: appends a leader's entries that follow `prevIndex`; an existing
   * entry that conflicts (same index, other term) is deleted with all that
   * follow it. Entries already present are kept. Returns the index of the
   * last new entry and the first index whose entry changed (Infinity if none).
   */
  maybeAppend(prevIndex: number, entries: Entry[]): { lastNew: number; changedFrom: number } {
    let i = 0;
    // Skip entries we already hold (they match by log matching).
    for (; i < entries.length; i++) {
      const e = entries[i]!;
      const t = this.term(e.index);
      if (e.index <= this.snapIndex) continue; // already in our snapshot
      if (t !== e.term) break;
    }
    let changedFrom = Infinity;
    if (i < entries.length) {
      const first = entries[i]!;
      changedFrom = first.index;
      if (first.index <= this.committed) {
        // Raft guarantees committed entries never conflict; continuing would
        // apply a different history than the rest of the cluster.
        throw new Error(
          `Cannot truncate the log at index ${first.index}: it is committed (commit ${this.committed})`,
        );
      }
      this.truncateFrom(first.index);
      this.append(entries.slice(i));
    }
    return { lastNew: prevIndex + entries.length, changedFrom };
  }

  /** Deletes the entries from `index` on. */
  truncateFrom(index: number): void {
    if (index <= this.snapIndex) {
      throw new RangeError(`Cannot truncate at compacted index ${index}`);
    }
    this.#entries.length = Math.max(0, index - this.snapIndex - 1);
    this.stable = Math.min(this.stable, index - 1);
    this.persisting = Math.min(this.persisting, index - 1);
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    if (index > this.lastIndex()) {
      throw new RangeError(
        `Cannot commit index ${index}: the log ends at ${this.lastIndex()}`,
      );
    }
    this.committed = index;
    return true;
  }

  /** Entries not yet handed out for persisting. */
  unstableEntries(): Entry[] {
    if (this.persisting >= this.lastIndex()) return [];
    return this.#entries.slice(this.persisting - this.snapIndex);
  }

  /** The runtime persisted entries through `index` (whose term was `term`). */
  stableTo(index: number, term: number): void {
    // After a truncation the persisted entry may be gone: only a matching
    // term proves that what was written is still our log.
    if (this.term(index) === term && index > this.stable) this.stable = index;
  }

  /** Committed, locally durable entries not yet handed out for applying. */
  hasEntriesToApply(): boolean {
    return Math.min(this.committed, this.stable) > this.applying;
  }

  entriesToApply(limits: LogLimits): Entry[] {
    const hi = Math.min(this.committed, this.stable);
    if (hi <= this.applying) return [];
    return this.slice(this.applying + 1, hi, limits) ?? [];
  }

  /** Drops entries through `index` (already in a snapshot the runtime saved). */
  compact(index: number): void {
    if (index <= this.snapIndex) return;
    if (index > this.applied) {
      throw new RangeError(`Cannot compact the log to ${index}: applied only ${this.applied}`);
    }
    const term = this.term(index)!;
    this.#entries = this.#entries.slice(index - this.snapIndex);
    this.snapIndex = index;
    this.snapTerm = term;
  }

  /** Replaces the whole log with a snapshot's compaction point (a follower installing a snapshot). */
  restore(index: number, term: number): void {
    this.#entries = [];
    this.snapIndex = index;
    this.snapTerm = term;
    this.committed = index;
    this.stable = index;
    this.persisting = index;
    this.applied = Math.max(this.applied, index);
    this.applying = Math.max(this.applying, index);
  }

  /** Every entry from `lo` on (for tests and the simulator's checks). */
  entriesFrom(lo: number): Entry[] {
    return this.#entries.slice(Math.max(0, lo - this.snapIndex - 1));
  }
}
