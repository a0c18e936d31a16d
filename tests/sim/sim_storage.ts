/**
 * One node's simulated durable storage: what survives a crash. The driver
 * writes a Ready's snapshot, entries and hard state here only when its
 * simulated fsync completes; a crash before that loses the write, or keeps a
 * prefix of it (a torn tail: the records written before the power went out).
 *
 * @module
 */

import type { Entry, HardState, InitialState, Snapshot } from "../../raft/types.ts";
import { emptyConf } from "../../raft/types.ts";
import { SimFailure } from "./sim_failure.ts";

/** One durable write, applied in the order snapshot, entries, hard state. */
export interface StorageWrite {
  snapshot?: Snapshot;
  entries: Entry[];
  hardState?: HardState;
}

/** The number of records a write consists of (for tearing it). */
export function recordCount(write: StorageWrite): number {
  return (write.snapshot ? 1 : 0) + write.entries.length + (write.hardState ? 1 : 0);
}

/** Durable state of one simulated node. */
export class SimStorage {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  snapshot: Snapshot | undefined;
  /** Durable entries, contiguous; may start at or below the snapshot's index (kept for catch-up). */
  entries: Entry[] = [];

  /** The index of the last durable entry (or the snapshot's index). */
  lastIndex(): number {
    const last = this.entries[this.entries.length - 1];
    return last?.index ?? this.snapshot?.meta.index ?? 0;
  }

  /** The first index held in `entries` (lastIndex + 1 when empty). */
  firstIndex(): number {
    return this.entries[0]?.index ?? this.lastIndex() + 1;
  }

  /** The durable entry at `index`, if held. */
  entry(index: number): Entry | undefined {
    const first = this.entries[0];
    if (first === undefined) return undefined;
    return this.entries[index - first.index];
  }

  /** The term at `index` from entries or the snapshot; undefined if unknown. */
  termAt(index: number): number | undefined {
    if (index === 0) return 0;
    const e = this.entry(index);
    if (e !== undefined) return e.term;
    if (this.snapshot?.meta.index === index) return this.snapshot.meta.term;
    return undefined;
  }

  /**
   * Applies `write`, or only its first `records` records when torn. Returns
   * the entries actually written (for the log-matching check).
   */
  write(write: StorageWrite, records = Infinity): Entry[] {
    let budget = records;
    if (write.snapshot !== undefined) {
      if (budget-- <= 0) return [];
      this.#installSnapshot(write.snapshot);
    }
    const written: Entry[] = [];
    for (const e of write.entries) {
      if (budget-- <= 0) return written;
      this.#append(e);
      written.push(e);
    }
    if (write.hardState !== undefined) {
      if (budget-- <= 0) return written;
      this.hardState = { ...write.hardState };
    }
    return written;
  }

  /**
   * Stores a snapshot the node's own state machine took, then drops entries
   * up to `compactIndex`.
   */
  saveLocalSnapshot(snapshot: Snapshot, compactIndex: number): void {
    if (this.snapshot === undefined || snapshot.meta.index > this.snapshot.meta.index) {
      this.snapshot = snapshot;
    }
    const first = this.entries[0];
    if (first !== undefined && compactIndex >= first.index) {
      this.entries = this.entries.slice(compactIndex - first.index + 1);
    }
  }

  /** What a restarting core is built from. */
  load(): InitialState {
    const meta = this.snapshot?.meta ?? { index: 0, term: 0, conf: emptyConf() };
    const entries = this.entries.filter((e) => e.index > meta.index);
    const hardState = { ...this.hardState };
    // A torn write can keep a received snapshot but lose the hard state that
    // followed it; the snapshot alone proves its index is committed.
    if (hardState.commit < meta.index) hardState.commit = meta.index;
    return { hardState, snapshotMeta: meta, entries, applied: meta.index };
  }

  #installSnapshot(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    if (this.snapshot !== undefined && this.snapshot.meta.index > index) {
      throw new SimFailure(
        `storage: a Ready's snapshot at index ${index} is older than the durable one at ${this.snapshot.meta.index}`,
      );
    }
    // Raft §7 (Figure 13): keep the log after the snapshot only if it agrees
    // with the snapshot at its last index; otherwise discard the whole log.
    const at = this.entry(index);
    if (at !== undefined && at.term === term) {
      this.entries = this.entries.filter((e) => e.index > index);
    } else {
      this.entries = [];
    }
    this.snapshot = snapshot;
  }

  #append(e: Entry): void {
    const snapIndex = this.snapshot?.meta.index ?? 0;
    if (e.index <= snapIndex) {
      throw new SimFailure(
        `storage: entry ${e.index} (term ${e.term}) written at or below the snapshot index ${snapIndex}`,
      );
    }
    const first = this.entries[0];
    if (first === undefined) {
      if (e.index !== snapIndex + 1) {
        throw new SimFailure(
          `storage: entry ${e.index} would leave a gap after the snapshot index ${snapIndex}`,
        );
      }
      this.entries.push(e);
      return;
    }
    const last = this.lastIndex();
    if (e.index > last + 1) {
      throw new SimFailure(
        `storage: entry ${e.index} would leave a gap after the last index ${last}`,
      );
    }
    if (e.index < first.index) {
      throw new SimFailure(
        `storage: entry ${e.index} overwrites below the first stored index ${first.index}`,
      );
    }
    // Overwrite a conflicting suffix.
    this.entries.length = e.index - first.index;
    this.entries.push(e);
  }
}
