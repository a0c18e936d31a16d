/**
 * The durable storage a node runtime needs: the write-ahead log of entries
 * and hard state, snapshots, and the node's identity. Two implementations:
 * `FileStorage` (raft/file_storage.ts, the state directory) and
 * `MemoryStorage` (raft/memory_storage.ts, the simulator and unit tests).
 * One conformance suite (raft/storage_conformance.ts) runs against both.
 *
 * @module
 */

import type { Entry, HardState, NodeId, Snapshot, SnapshotMeta } from "./types.ts";

/**
 * A snapshot whose data is produced while it is written: the state machine
 * encodes a chunk, storage writes it, and so on, so a large state is never
 * held in one buffer.
 */
export interface SnapshotSource {
  meta: SnapshotMeta;
  /** The data, in order; their concatenation is what `latestSnapshot()` returns later. */
  chunks: AsyncIterable<Uint8Array>;
}

/**
 * The newest snapshot, read as it is sent: its metadata and size at once,
 * its data in chunks later, so that sending a large state never holds it
 * whole.
 */
export interface SnapshotStream {
  meta: SnapshotMeta;
  /** The data's length in bytes. */
  dataBytes: number;
  /**
   * The data in order, in chunks of at most `maxBytes` that stay valid
   * after later chunks. Reading starts at the first `next()`. The last chunk comes only
   * once the stored snapshot is verified whole, so a damaged one throws
   * before it is complete. Finishing, a throw or `return()` releases the
   * file; one that was never iterated holds nothing.
   */
  chunks(maxBytes: number): AsyncGenerator<Uint8Array, void, undefined>;
}

/** A snapshot held in memory as a {@linkcode SnapshotStream} of views into its data. */
export function snapshotStreamOf(snapshot: Snapshot): SnapshotStream {
  const { meta, data } = snapshot;
  return {
    meta,
    dataBytes: data.byteLength,
    async *chunks(maxBytes: number) {
      for (let pos = 0; pos < data.byteLength; pos += maxBytes) {
        yield data.subarray(pos, pos + maxBytes);
      }
    },
  };
}

/** Who this node is; written once when the node first gets its id. */
export interface Identity {
  nodeId: NodeId;
  /** The cluster's random id, checked in every peer handshake. */
  clusterId: string;
  /**
   * Set once this node has learned that it was removed from the cluster (a
   * committed fact: ids are never reused), so that it refuses to start on
   * this state again instead of rejoining as a stranger.
   */
  removed?: boolean;
}

/** All that storage holds, as loaded at start. */
export interface LoadedState {
  identity?: Identity;
  hardState: HardState;
  /** The newest valid snapshot, if any. */
  snapshot?: Snapshot;
  /** Entries after the snapshot's index (or from index 1), contiguous. */
  entries: Entry[];
}

/** One durable write: applied in the order snapshot, entries, hard state. */
export interface SaveRequest {
  /** A snapshot received from the leader; entries at or below its index become obsolete. */
  snapshot?: Snapshot;
  /** Entries to append; they replace any stored entries from `entries[0].index` on (a conflicting suffix). */
  entries: Entry[];
  hardState?: HardState;
}

/**
 * Durable log and snapshot storage. Every method that resolves has made its
 * effect durable (fdatasync). Calls may overlap: `save` calls made while an
 * fsync is in flight are grouped into the next one (group commit), and
 * resolve in the order they were made. A failed write or fsync rejects and
 * the storage refuses every later call (fail-stop): the caller must stop.
 */
export interface LogStorage extends AsyncDisposable {
  /** Reads everything back. Called once, before any other method. Throws `StorageCorruptionError` on damage that is not a torn tail. */
  load(): Promise<LoadedState>;
  /** Records the node's identity durably. */
  saveIdentity(identity: Identity): Promise<void>;
  /** Persists entries, hard state and/or a received snapshot. */
  save(request: SaveRequest): Promise<void>;
  /**
   * Stores a snapshot the local state machine took at `snapshot.meta.index`
   * (already applied here), then drops log entries up to `compactIndex`
   * (at most the snapshot's index; kept lower so slow followers can catch up
   * without a snapshot). The data may be given whole or as a stream of chunks.
   */
  saveSnapshot(snapshot: Snapshot | SnapshotSource, compactIndex: number): Promise<void>;
  /** The newest snapshot, or undefined. */
  latestSnapshot(): Promise<Snapshot | undefined>;
  /** The newest snapshot as a stream (for sending to a follower), or undefined. */
  latestSnapshotStream(): Promise<SnapshotStream | undefined>;
  /** The newest snapshot's metadata without reading its data. */
  latestSnapshotMeta(): SnapshotMeta | undefined;
  close(): Promise<void>;
}

/** Storage found damaged in a way that may hide acknowledged data. The node must not start. */
export class StorageCorruptionError extends Error {
  override name = "StorageCorruptionError";
}
