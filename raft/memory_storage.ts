/**
 * `LogStorage` in memory, for the simulator and unit tests: the same
 * semantics as `FileStorage` (raft/file_storage.ts), checked by the same
 * conformance suite (raft/storage_conformance.ts), and no I/O.
 *
 * Everything a call saved is durable once the call resolves; `crash()` models
 * a process crash by handing over exactly that state to a fresh instance.
 *
 * @module
 */

import { collectBytes } from "./bytes.ts";
import type { Entry, HardState, Snapshot, SnapshotMeta } from "./types.ts";
import {
  type Identity,
  type LoadedState,
  type LogStorage,
  type SaveRequest,
  type SnapshotSource,
  type SnapshotStream,
  snapshotStreamOf,
} from "./storage.ts";

/**
 * A `LogStorage` held in memory.
 *
 * @example
 * ```ts
 * const storage = new MemoryStorage();
 * await storage.load();
 * await storage.save({ entries: [{ index: 1, term: 1, type: "normal", data: new Uint8Array() }] });
 * const restarted = storage.crash();
 * const state = await restarted.load(); // state.entries has index 1
 * ```
 */
export class MemoryStorage implements LogStorage {
  #identity: Identity | undefined;
  #hardState: HardState = { term: 0, vote: 0, commit: 0 };
  #snapshot: Snapshot | undefined;
  /** Contiguous entries after the compaction point (they may start at or below the snapshot's index). */
  #entries: Entry[] = [];
  #loaded = false;
  #closed = false;
  #failure: Error | undefined;
  #faultInjected = false;

  /** Reads everything back; called once, before any other method. */
  load(): Promise<LoadedState> {
    try {
      this.#checkUsable("load", false);
      if (this.#loaded) throw new Error("Cannot load storage: load() was already called");
      this.#loaded = true;
      const snapshotIndex = this.#snapshot?.meta.index ?? 0;
      const state: LoadedState = {
        hardState: { ...this.#hardState },
        entries: this.#entries.filter((e) => e.index > snapshotIndex).map(copyEntry),
      };
      if (this.#identity !== undefined) state.identity = { ...this.#identity };
      if (this.#snapshot !== undefined) state.snapshot = copySnapshot(this.#snapshot);
      return Promise.resolve(state);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Records the node's identity. */
  saveIdentity(identity: Identity): Promise<void> {
    try {
      this.#checkUsable("save identity");
      this.#write();
      this.#identity = { ...identity };
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Persists a received snapshot (the log is then empty after its index),
   * then entries (replacing any stored from `entries[0].index` on), then the
   * hard state. Rejects with `RangeError` on a request that breaks the log's
   * contiguity; that does not stop the storage.
   */
  save(request: SaveRequest): Promise<void> {
    try {
      this.#checkUsable("save");
      const snapshotIndex = request.snapshot?.meta.index ?? this.#snapshot?.meta.index ?? 0;
      const lastIndex = request.snapshot !== undefined ? snapshotIndex : this.#lastIndex();
      if (request.snapshot !== undefined) {
        checkSnapshotOrder(request.snapshot, this.#snapshot?.meta.index ?? 0);
      }
      checkAppend(request.entries, snapshotIndex, lastIndex);
      this.#write();
      if (request.snapshot !== undefined) {
        this.#snapshot = copySnapshot(request.snapshot);
        this.#entries = [];
      }
      const first = request.entries[0];
      if (first !== undefined) {
        const keep = this.#entries.length === 0
          ? 0
          : Math.max(0, first.index - this.#entries[0]!.index);
        this.#entries.length = Math.min(keep, this.#entries.length);
        for (const entry of request.entries) this.#entries.push(copyEntry(entry));
      }
      if (request.hardState !== undefined) this.#hardState = { ...request.hardState };
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stores a snapshot taken locally, then drops entries at or below `compactIndex`. */
  async saveSnapshot(snapshot: Snapshot | SnapshotSource, compactIndex: number): Promise<void> {
    this.#checkUsable("save snapshot");
    checkCompaction(snapshot, compactIndex);
    checkSnapshotOrder(snapshot, this.#snapshot?.meta.index ?? 0);
    const data = "data" in snapshot ? snapshot.data : await collectBytes(snapshot.chunks);
    this.#checkUsable("save snapshot");
    checkSnapshotOrder(snapshot, this.#snapshot?.meta.index ?? 0);
    this.#write();
    this.#snapshot = copySnapshot({ meta: snapshot.meta, data });
    this.#entries = this.#entries.filter((e) => e.index > compactIndex);
  }

  /** The newest snapshot, or undefined. */
  latestSnapshot(): Promise<Snapshot | undefined> {
    try {
      this.#checkUsable("read snapshot");
      return Promise.resolve(
        this.#snapshot === undefined ? undefined : copySnapshot(this.#snapshot),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The newest snapshot (a copy) as a stream of chunks, or undefined. */
  latestSnapshotStream(): Promise<SnapshotStream | undefined> {
    try {
      this.#checkUsable("read snapshot");
      return Promise.resolve(
        this.#snapshot === undefined ? undefined : snapshotStreamOf(copySnapshot(this.#snapshot)),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The newest snapshot's metadata, or undefined. */
  latestSnapshotMeta(): SnapshotMeta | undefined {
    return this.#snapshot === undefined ? undefined : copySnapshot(this.#snapshot).meta;
  }

  /** Closes the storage; later calls reject. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Models a crash: this instance stops (every later call rejects) and a new,
   * not yet loaded instance holding exactly what was durable is returned.
   */
  crash(): MemoryStorage {
    const next = new MemoryStorage();
    if (this.#identity !== undefined) next.#identity = { ...this.#identity };
    next.#hardState = { ...this.#hardState };
    if (this.#snapshot !== undefined) next.#snapshot = copySnapshot(this.#snapshot);
    next.#entries = this.#entries.map(copyEntry);
    this.#closed = true;
    return next;
  }

  /**
   * Models a failed write or fsync: the next call that writes rejects and
   * the storage becomes fail-stop, like `FileStorage` after an I/O error.
   */
  injectFault(): void {
    this.#faultInjected = true;
  }

  #lastIndex(): number {
    return this.#entries.at(-1)?.index ?? this.#snapshot?.meta.index ?? 0;
  }

  #write(): void {
    if (!this.#faultInjected) return;
    this.#faultInjected = false;
    this.#failure = new Error("Cannot write to storage: injected fault");
    throw this.#failure;
  }

  #checkUsable(action: string, needsLoad = true): void {
    if (this.#failure !== undefined) {
      throw new Error(
        `Cannot ${action}: the storage stopped after a failed write; restart the node`,
        { cause: this.#failure },
      );
    }
    if (this.#closed) throw new Error(`Cannot ${action}: the storage is closed`);
    if (needsLoad && !this.#loaded) throw new Error(`Cannot ${action}: call load() first`);
  }
}

function copyEntry(entry: Entry): Entry {
  return { index: entry.index, term: entry.term, type: entry.type, data: entry.data.slice() };
}

function copySnapshot(snapshot: Snapshot): Snapshot {
  const { index, term, conf } = snapshot.meta;
  return {
    meta: {
      index,
      term,
      conf: { voters: [...conf.voters], learners: [...conf.learners], removed: [...conf.removed] },
    },
    data: snapshot.data.slice(),
  };
}

/**
 * Checks that `entries` are contiguous and may follow a log that holds
 * entries up to `lastIndex` with everything up to `snapshotIndex` in a
 * snapshot. Shared rule of both storages (file_storage.ts imports it).
 */
export function checkAppend(entries: Entry[], snapshotIndex: number, lastIndex: number): void {
  const first = entries[0];
  if (first === undefined) return;
  if (first.index > lastIndex + 1) {
    throw new RangeError(
      `Cannot append entries at index ${first.index}: the log ends at ${lastIndex}`,
    );
  }
  if (first.index <= snapshotIndex) {
    throw new RangeError(
      `Cannot append entries at index ${first.index}: entries up to ${snapshotIndex} are in a snapshot`,
    );
  }
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.index !== first.index + i) {
      throw new RangeError(
        `Cannot append entries at index ${first.index}: entry ${i} has index ${
          entries[i]!.index
        }, not ${first.index + i}`,
      );
    }
  }
}

/** Checks that a new snapshot is not older than the newest stored one. */
export function checkSnapshotOrder(snapshot: { meta: SnapshotMeta }, latestIndex: number): void {
  if (snapshot.meta.index < latestIndex) {
    throw new RangeError(
      `Cannot save snapshot at index ${snapshot.meta.index}: a newer one at ${latestIndex} is stored`,
    );
  }
}

/** Checks `compactIndex` against the snapshot it comes with. */
export function checkCompaction(snapshot: { meta: SnapshotMeta }, compactIndex: number): void {
  if (compactIndex > snapshot.meta.index || compactIndex < 0) {
    throw new RangeError(
      `Cannot compact the log to index ${compactIndex}: the snapshot is at ${snapshot.meta.index}`,
    );
  }
}
