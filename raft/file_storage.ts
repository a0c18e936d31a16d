/**
 * `LogStorage` in a state directory: a segmented write-ahead log, snapshot
 * files and an identity file, written through Deno's file APIs.
 *
 * Directory layout:
 *
 * - `LOCK`: held (advisory, exclusive) while a `FileStorage` is open.
 * - `identity.json`: `{"version":1,"nodeId":…,"clusterId":"…"}`, replaced
 *   atomically (temp file, fsync, rename, directory fsync).
 * - `wal-<seq, 16 hex>.wal`: WAL segments, numbered without gaps. A segment
 *   is a 20-byte header (magic `RKVW`, format version u32, sequence number
 *   u64, CRC-32C of the previous 16 bytes; all little-endian) followed by
 *   records. New segments are created under a temp name with their header
 *   and the current hard state, fsynced, renamed, and the directory fsynced,
 *   so a segment's header is never torn. The last segment is zero-filled
 *   ahead of its records (1 MiB at a time, up to the segment size), and
 *   records overwrite those zeros in place; a segment is cut to its records
 *   before the next one is created, so only the last one ends in zeros.
 * - `snap-<index, 16 hex>.snap`: snapshots (magic `RKVS`, version, meta and
 *   data lengths, MessagePack meta, data, CRC-32C of all that), written the
 *   same atomic way; the newest 3 are kept.
 *
 * A WAL record is a 12-byte frame (payload length u32, payload CRC-32C u32,
 * CRC-32C of those 8 bytes u32) and a MessagePack payload, one of:
 * `[1, firstIndex, [[term, type, data], …]]` entries that replace every
 * entry from `firstIndex` on; `[2, term, vote, commit]` hard state (the last
 * one wins); `[3, index, term]` a snapshot received from the leader was
 * installed: the log is empty after `index`.
 *
 * **Torn tail rule.** Only the tail of the *last* segment may be torn, and
 * a record there counts as torn (cut off with a warning) when its frame
 * header is incomplete, when its frame header fails its own checksum and
 * every byte after the header to the end of the file is zero, when its payload
 * runs past the end of the file, or when its payload fails its checksum and
 * it is the final record (it ends exactly at the end of the file, or only
 * zeros follow). Anything else, including a bad frame header followed by
 * non-zero bytes, a bad record in any other position or segment, a missing
 * segment, or a bad segment header, throws `StorageCorruptionError`. The
 * frame header's own checksum is what makes this safe: a flipped bit in a
 * length field cannot make intact records look like a torn tail. The rule's
 * one blind spot (shared with etcd): a bit flip inside the payload of the
 * very last record is indistinguishable from a torn write and is cut.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { crc32c } from "./checksum.ts";
import { checkAppend, checkCompaction, checkSnapshotOrder } from "./memory_storage.ts";
import { decode, encode } from "./msgpack.ts";
import {
  type Identity,
  type LoadedState,
  type LogStorage,
  type SaveRequest,
  type SnapshotSource,
  type SnapshotStream,
  StorageCorruptionError,
} from "./storage.ts";
import type { Entry, EntryType, HardState, Snapshot, SnapshotMeta } from "./types.ts";

/** The WAL format version this code writes and reads. */
export const FORMAT_VERSION = 1;
/**
 * The snapshot file format this code writes. Version 2 puts the data length
 * in the trailer, so that a snapshot can be written as it is encoded;
 * version 1 files (length in the header) are still read.
 */
export const SNAPSHOT_FORMAT_VERSION = 2;
/** The largest single write call (snapshots are written in slices of this). */
const WRITE_SLICE_BYTES = 4 << 20;

const WAL_MAGIC = 0x57564b52; // "RKVW" little-endian
const SNAP_MAGIC = 0x53564b52; // "RKVS" little-endian
const SEGMENT_HEADER_BYTES = 20;
const FRAME_BYTES = 12;
/** WAL batches up to this size are written synchronously (see #writeAllSync). */
const SYNC_WRITE_BYTES_MAX = 1 << 20;
/**
 * A snapshot being written is fdatasynced every this many bytes, so that a
 * WAL fdatasync never waits for more than this much of it to reach the disk.
 */
const SNAPSHOT_SYNC_BYTES = 1 << 20;
/** The default pace of the snapshots a node takes itself, in bytes per second. */
export const SNAPSHOT_BYTES_PER_SECOND_DEFAULT = 64 << 20;
/** Version 1 header: magic, version, meta length, data length (u64). */
const SNAP_V1_HEADER_BYTES = 20;
/** Version 2 header: magic, version, meta length. */
const SNAP_HEADER_BYTES = 12;
/** Version 2 trailer: data length (u64), then the CRC-32C of every byte before it. */
const SNAP_TRAILER_BYTES = 12;
const SNAPSHOTS_KEPT = 3;
/**
 * The active segment is zero-filled this far ahead of its records. An
 * fdatasync that must also record a new file size costs a second disk write
 * (the inode); overwriting zeros already on disk does not, which takes a
 * third off every WAL fdatasync on ext4. Like etcd's preallocated segments,
 * but with real zeros: space from fallocate(2) would need its extents
 * converted on first write, which is metadata again.
 */
const PREALLOCATE_BYTES = 1 << 20;

const RECORD_ENTRIES = 1;
const RECORD_HARD_STATE = 2;
const RECORD_SNAPSHOT = 3;

const OPERATOR_HINT =
  "restore the state directory from a backup, or remove this node's state directory and re-join the node to the cluster";

/** Options of {@linkcode FileStorage.open}. */
export interface FileStorageOptions {
  /** A segment is rolled over once the next batch would take it past this size. Default 64 MiB. */
  segmentBytesMax?: number;
  /**
   * The pace at which {@linkcode FileStorage.saveSnapshot} writes a snapshot
   * the node took itself, in bytes per second. A snapshot written flat out
   * fills the disk's queue and every WAL fdatasync waits behind it: beside
   * three such writers a 3 KB WAL write's fdatasync took 1.0-1.9 ms at the
   * median instead of 0.14 ms; at 64 MiB/s each, 0.16 ms. Snapshots received
   * from the leader, and any snapshot write something else is waiting for (a
   * read of the snapshot, a close), go at full speed. Default 64 MiB/s;
   * `Infinity` for no pacing.
   */
  snapshotBytesPerSecond?: number;
  /**
   * Test hook: called before every WAL/snapshot/identity write and fsync;
   * throwing from it simulates an I/O failure.
   */
  faultInjector?: (operation: "write" | "sync", path: string) => void;
}

interface Segment {
  seq: number;
  path: string;
  /** Highest entry or snapshot-marker index recorded in this segment (0 if none). */
  maxIndex: number;
}

interface Pending {
  payloads: Uint8Array[];
  crcs: number[];
  bytes: number;
  snapshot: Snapshot | undefined;
  hardState: HardState | undefined;
  maxIndex: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Durable `LogStorage` in a state directory; see the module docs for the
 * format and the torn tail rule.
 *
 * @example
 * ```ts
 * await using storage = await FileStorage.open("/var/lib/raftkv");
 * const state = await storage.load();
 * await storage.save({ entries: [], hardState: { term: 1, vote: 1, commit: 0 } });
 * ```
 */
export class FileStorage implements LogStorage {
  readonly #dir: string;
  readonly #segmentBytesMax: number;
  readonly #faultInjector: FileStorageOptions["faultInjector"];
  readonly #snapshotBytesPerSecond: number;
  #lock: Deno.FsFile | undefined;

  #loaded = false;
  #closed = false;
  #failure: unknown;

  #segments: Segment[] = [];
  #active: Deno.FsFile | undefined;
  /** Where the active segment's records end (the file position). */
  #activeBytes = 0;
  /** The active segment's file size: its records, then zero-filled space. */
  #activeAllocated = 0;
  #syncCount = 0;

  // The log as it will be once every accepted save is written.
  #lastIndex = 0;
  #snapshotIndex = 0;
  #snapshotMeta: SnapshotMeta | undefined;
  /** Snapshot indexes on disk, ascending. */
  #snapshotIndexes: number[] = [];
  /** The hard state of the last record written (not merely queued). */
  #writtenHardState: HardState | undefined;

  #pending: Pending[] = [];
  #flushing: Promise<void> | undefined;
  #snapshotQueue: Promise<unknown> = Promise.resolve();
  /** Snapshot operations queued or running: a paced write goes flat out when another waits. */
  #snapshotOps = 0;
  /** The paced snapshot write's current pause, to cut short. */
  #pause: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;

  private constructor(dir: string, options: FileStorageOptions, lock: Deno.FsFile) {
    this.#dir = dir;
    this.#segmentBytesMax = options.segmentBytesMax ?? 64 * 1024 * 1024;
    this.#faultInjector = options.faultInjector;
    const pace = options.snapshotBytesPerSecond ?? SNAPSHOT_BYTES_PER_SECOND_DEFAULT;
    if (!(pace > 0)) {
      throw new RangeError(`Cannot open storage: snapshotBytesPerSecond must be > 0, got ${pace}`);
    }
    this.#snapshotBytesPerSecond = pace;
    this.#lock = lock;
  }

  /**
   * Opens (creating if missing) the state directory `dir` and takes its lock.
   * Nothing is read until {@linkcode FileStorage.load}.
   */
  static async open(dir: string, options: FileStorageOptions = {}): Promise<FileStorage> {
    await Deno.mkdir(dir, { recursive: true });
    const lock = await Deno.open(`${dir}/LOCK`, { read: true, write: true, create: true });
    if (!(await lock.tryLock(true))) {
      lock.close();
      throw new Error(
        `Cannot open state directory ${dir}: another process holds its lock (${dir}/LOCK)`,
      );
    }
    return new FileStorage(dir, options, lock);
  }

  /** The number of WAL fdatasync calls so far (for benchmarks and tests). */
  get syncCount(): number {
    return this.#syncCount;
  }

  /**
   * Recovers the state: the newest valid snapshot, then the WAL replayed
   * after it, cutting a torn tail off the last segment. Throws
   * `StorageCorruptionError` on any other damage.
   */
  async load(): Promise<LoadedState> {
    this.#checkUsable("load storage", false);
    if (this.#loaded) throw new Error("Cannot load storage: load() was already called");
    this.#loaded = true;
    try {
      return await this.#load();
    } catch (error) {
      this.#failure = error;
      throw error;
    }
  }

  /** Writes the identity file atomically. */
  async saveIdentity(identity: Identity): Promise<void> {
    this.#checkUsable("save identity");
    const body = JSON.stringify({ version: FORMAT_VERSION, ...identity }) + "\n";
    await this.#failStop(() =>
      this.#writeAtomically(
        "identity.json",
        (file, path) => this.#writeAll(file, path, new TextEncoder().encode(body)),
      )
    );
  }

  /**
   * Appends the request to the WAL. Calls made while a write is in flight
   * are grouped into the next write and fdatasync and resolve in call order.
   */
  save(request: SaveRequest): Promise<void> {
    try {
      this.#checkUsable("save");
      const snapshot = request.snapshot;
      const snapshotIndex = snapshot?.meta.index ?? this.#snapshotIndex;
      const lastIndex = snapshot !== undefined ? snapshotIndex : this.#lastIndex;
      if (snapshot !== undefined) checkSnapshotOrder(snapshot, this.#snapshotIndex);
      checkAppend(request.entries, snapshotIndex, lastIndex);
      const payloads: Uint8Array[] = [];
      let maxIndex = 0;
      if (snapshot !== undefined) {
        payloads.push(encode([RECORD_SNAPSHOT, snapshot.meta.index, snapshot.meta.term]));
        this.#snapshotIndex = snapshot.meta.index;
        this.#lastIndex = snapshot.meta.index;
        maxIndex = snapshot.meta.index;
      }
      const first = request.entries[0];
      if (first !== undefined) {
        const list = new Array<[number, number, Uint8Array]>(request.entries.length);
        for (let i = 0; i < request.entries.length; i++) {
          const e = request.entries[i]!;
          list[i] = [e.term, e.type === "conf" ? 1 : 0, e.data];
        }
        payloads.push(encode([RECORD_ENTRIES, first.index, list]));
        this.#lastIndex = first.index + request.entries.length - 1;
        maxIndex = Math.max(maxIndex, this.#lastIndex);
      }
      const hs = request.hardState;
      if (hs !== undefined) {
        payloads.push(encode([RECORD_HARD_STATE, hs.term, hs.vote, hs.commit]));
      }
      const crcs = payloads.map((p) => crc32c(p));
      let bytes = 0;
      for (const p of payloads) bytes += FRAME_BYTES + p.length;
      const { promise, resolve, reject } = Promise.withResolvers<void>();
      this.#pending.push({
        payloads,
        crcs,
        bytes,
        snapshot,
        hardState: hs === undefined ? undefined : { ...hs },
        maxIndex,
        resolve,
        reject,
      });
      this.#flushing ??= this.#flushLoop();
      return promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Writes a snapshot the local state machine took, then removes WAL
   * segments wholly at or below `compactIndex` (never the active one) and
   * snapshots beyond the newest 3.
   */
  async saveSnapshot(snapshot: Snapshot | SnapshotSource, compactIndex: number): Promise<void> {
    this.#checkUsable("save snapshot");
    checkCompaction(snapshot, compactIndex);
    checkSnapshotOrder(snapshot, this.#snapshotIndex);
    if (snapshot.meta.index > this.#snapshotIndex) this.#snapshotIndex = snapshot.meta.index;
    if (snapshot.meta.index > this.#lastIndex) this.#lastIndex = snapshot.meta.index;
    await this.#serialSnapshot(async () => {
      try {
        await this.#writeSnapshotFile(
          snapshot.meta,
          "data" in snapshot ? [snapshot.data] : snapshot.chunks,
          this.#snapshotBytesPerSecond,
        );
      } catch (error) {
        // The producer failed, not the disk: nothing was stored, storage goes on.
        if (error instanceof SnapshotSourceError) throw error.cause;
        throw this.#stop(error);
      }
      await this.#failStop(() => this.#compact(compactIndex));
    });
  }

  /** Reads the newest snapshot file, or returns undefined if there is none. */
  async latestSnapshot(): Promise<Snapshot | undefined> {
    this.#checkUsable("read snapshot");
    return await this.#serialSnapshot(() => {
      const index = this.#snapshotIndexes.at(-1);
      return index === undefined ? Promise.resolve(undefined) : this.#readSnapshotFile(index);
    });
  }

  /** The newest snapshot as a stream: its file is read as the chunks are taken. */
  async latestSnapshotStream(): Promise<SnapshotStream | undefined> {
    this.#checkUsable("read snapshot");
    return await this.#serialSnapshot(() => {
      const index = this.#snapshotIndexes.at(-1);
      return index === undefined ? Promise.resolve(undefined) : this.#openSnapshotStream(index);
    });
  }

  /** The newest snapshot's metadata, from memory. */
  latestSnapshotMeta(): SnapshotMeta | undefined {
    return this.#snapshotMeta === undefined ? undefined : structuredClone(this.#snapshotMeta);
  }

  /** Waits for writes in flight, then closes every file and releases the lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#hurry();
    try {
      await this.#flushing;
      await this.#snapshotQueue;
    } catch {
      // Already reported to the callers concerned.
    }
    this.#active?.close();
    this.#active = undefined;
    this.#lock?.close();
    this.#lock = undefined;
  }

  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- writing -------------------------------------------------------------

  async #flushLoop(): Promise<void> {
    // Let the saves made in the current task join the first batch.
    await Promise.resolve();
    try {
      while (this.#pending.length > 0) {
        const head = this.#pending[0]!;
        if (head.snapshot !== undefined) {
          const snap = head.snapshot;
          await this.#serialSnapshot(() => this.#writeSnapshotFile(snap.meta, [snap.data]));
        }
        let count = 1;
        while (count < this.#pending.length && this.#pending[count]!.snapshot === undefined) {
          count++;
        }
        const batch = this.#pending.slice(0, count);
        let total = 0;
        for (const p of batch) total += p.bytes;
        const buffer = new Uint8Array(total);
        const view = new DataView(buffer.buffer);
        let offset = 0;
        let maxIndex = 0;
        let hardState = this.#writtenHardState;
        for (const p of batch) {
          for (let i = 0; i < p.payloads.length; i++) {
            const payload = p.payloads[i]!;
            view.setUint32(offset, payload.length, true);
            view.setUint32(offset + 4, p.crcs[i]!, true);
            view.setUint32(offset + 8, crc32c(buffer.subarray(offset, offset + 8)), true);
            buffer.set(payload, offset + FRAME_BYTES);
            offset += FRAME_BYTES + payload.length;
          }
          if (p.maxIndex > maxIndex) maxIndex = p.maxIndex;
          if (p.hardState !== undefined) hardState = p.hardState;
        }
        if (
          this.#activeBytes > SEGMENT_HEADER_BYTES &&
          this.#activeBytes + total > this.#segmentBytesMax
        ) {
          await this.#roll();
        }
        const segment = this.#segments.at(-1)!;
        if (this.#activeBytes + total > this.#activeAllocated) {
          this.#preallocate(segment.path, this.#activeBytes + total);
        }
        if (buffer.length <= SYNC_WRITE_BYTES_MAX) {
          this.#writeAllSync(this.#active!, segment.path, buffer);
        } else {
          await this.#writeAll(this.#active!, segment.path, buffer);
        }
        this.#faultInjector?.("sync", segment.path);
        await this.#active!.syncData();
        this.#syncCount++;
        this.#activeBytes += total;
        if (maxIndex > segment.maxIndex) segment.maxIndex = maxIndex;
        this.#writtenHardState = hardState;
        this.#pending.splice(0, count);
        for (const p of batch) p.resolve();
        if (head.snapshot !== undefined) {
          const index = head.snapshot.meta.index;
          await this.#serialSnapshot(() => this.#compact(index));
        }
      }
    } catch (error) {
      this.#failure ??= error;
      const failed = this.#pending.splice(0);
      for (const p of failed) p.reject(this.#stoppedError("save", error));
    } finally {
      this.#flushing = undefined;
    }
  }

  /**
   * Zero-fills the active segment up to at least `needed` bytes (a step
   * ahead, up to the segment size limit). No fdatasync of its own: the
   * batch's that follows makes the zeros and the new size durable.
   */
  #preallocate(path: string, needed: number): void {
    const target = Math.max(
      needed,
      Math.min(this.#activeAllocated + PREALLOCATE_BYTES, this.#segmentBytesMax),
    );
    const file = this.#active!;
    file.seekSync(this.#activeAllocated, Deno.SeekMode.Start);
    this.#writeAllSync(file, path, new Uint8Array(target - this.#activeAllocated));
    file.seekSync(this.#activeBytes, Deno.SeekMode.Start);
    this.#activeAllocated = target;
  }

  /**
   * Cuts the active segment's unused zero-filled space off (only the last
   * segment may end in zeros), then creates the next segment (atomically,
   * with the current hard state) and makes it active.
   */
  async #roll(): Promise<void> {
    const previous = this.#segments.at(-1);
    if (this.#active !== undefined && previous && this.#activeAllocated > this.#activeBytes) {
      this.#faultInjector?.("write", previous.path);
      await this.#active.truncate(this.#activeBytes);
      this.#faultInjector?.("sync", previous.path);
      await this.#active.syncData();
    }
    const seq = (previous?.seq ?? 0) + 1;
    const name = segmentName(seq);
    const parts = [segmentHeader(seq)];
    const hs = this.#writtenHardState;
    if (hs !== undefined) {
      parts.push(frame(encode([RECORD_HARD_STATE, hs.term, hs.vote, hs.commit])));
    }
    await this.#writeAtomically(name, async (file, path) => {
      for (const part of parts) await this.#writeAll(file, path, part);
    });
    const path = `${this.#dir}/${name}`;
    const file = await Deno.open(path, { write: true });
    this.#active?.close();
    this.#active = file;
    this.#activeBytes = parts.reduce((n, p) => n + p.length, 0);
    this.#activeAllocated = this.#activeBytes;
    file.seekSync(this.#activeBytes, Deno.SeekMode.Start);
    this.#segments.push({ seq, path, maxIndex: 0 });
  }

  /**
   * Writes a snapshot file (version 2) as its chunks arrive: header and
   * metadata, the data, then a trailer with the data length and a CRC-32C of
   * everything before it. Written to a temp file, fsynced, renamed, and the
   * directory fsynced; only a complete file ever has the snapshot's name.
   * The data is written at `bytesPerSecond` at most, unless hurried.
   */
  async #writeSnapshotFile(
    meta: SnapshotMeta,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    bytesPerSecond = Infinity,
  ): Promise<void> {
    const metaBytes = encode(meta);
    const header = new Uint8Array(SNAP_HEADER_BYTES + metaBytes.length);
    const view = new DataView(header.buffer);
    view.setUint32(0, SNAP_MAGIC, true);
    view.setUint32(4, SNAPSHOT_FORMAT_VERSION, true);
    view.setUint32(8, metaBytes.length, true);
    header.set(metaBytes, SNAP_HEADER_BYTES);
    const index = meta.index;
    await this.#writeAtomically(snapshotName(index), async (file, path) => {
      let crc = crc32c(header);
      await this.#writeAll(file, path, header);
      let dataBytes = 0;
      let unsynced = 0;
      const started = performance.now();
      const it = Symbol.asyncIterator in chunks
        ? chunks[Symbol.asyncIterator]()
        : chunks[Symbol.iterator]();
      let done = false;
      try {
        for (;;) {
          let next: IteratorResult<Uint8Array>;
          try {
            next = await it.next();
          } catch (error) {
            done = true; // a generator that threw is finished
            throw new SnapshotSourceError(error);
          }
          if (next.done) {
            done = true;
            break;
          }
          crc = await crc32cYielding(next.value, crc);
          await this.#writeAll(file, path, next.value);
          dataBytes += next.value.byteLength;
          unsynced += next.value.byteLength;
          if (unsynced >= SNAPSHOT_SYNC_BYTES) {
            // Flush as we go: on ext4 a WAL fdatasync can otherwise end up
            // waiting for a hundred MiB of this file's dirty pages.
            unsynced = 0;
            await file.syncData();
          }
          if (bytesPerSecond !== Infinity && this.#snapshotOps === 1 && !this.#closed) {
            await this.#sleep(started + (dataBytes / bytesPerSecond) * 1000 - performance.now());
          }
        }
      } finally {
        // A write failed: let the producer release what it holds.
        if (!done) await it.return?.();
      }
      const trailer = new Uint8Array(SNAP_TRAILER_BYTES);
      const tv = new DataView(trailer.buffer);
      tv.setUint32(0, dataBytes % 2 ** 32, true);
      tv.setUint32(4, Math.floor(dataBytes / 2 ** 32), true);
      tv.setUint32(8, crc32c(trailer.subarray(0, 8), crc), true);
      await this.#writeAll(file, path, trailer);
    });
    if (!this.#snapshotIndexes.includes(index)) {
      this.#snapshotIndexes.push(index);
      this.#snapshotIndexes.sort((a, b) => a - b);
    }
    if (index >= (this.#snapshotMeta?.index ?? 0)) {
      this.#snapshotMeta = structuredClone(meta);
    }
  }

  /** Removes old snapshots and the WAL segments (a prefix, never the active one) wholly at or below `compactIndex`. */
  async #compact(compactIndex: number): Promise<void> {
    const removed: string[] = [];
    while (this.#snapshotIndexes.length > SNAPSHOTS_KEPT) {
      removed.push(`${this.#dir}/${snapshotName(this.#snapshotIndexes.shift()!)}`);
    }
    while (this.#segments.length > 1 && this.#segments[0]!.maxIndex <= compactIndex) {
      removed.push(this.#segments.shift()!.path);
    }
    if (removed.length === 0) return;
    for (const path of removed) await Deno.remove(path);
    await this.#syncDir();
  }

  /** Writes a file under a temp name with `write`, fsyncs it, renames it into place, fsyncs the directory. */
  async #writeAtomically(
    name: string,
    write: (file: Deno.FsFile, path: string) => Promise<void>,
  ): Promise<void> {
    const path = `${this.#dir}/${name}`;
    const tmp = `${path}.tmp`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      await write(file, tmp);
      this.#faultInjector?.("sync", tmp);
      await file.sync();
    } catch (error) {
      file.close();
      await Deno.remove(tmp).catch(() => {});
      throw error;
    }
    file.close();
    await Deno.rename(tmp, path);
    await this.#syncDir();
  }

  /**
   * Writes a small WAL batch without a hop to the I/O thread pool: it only
   * reaches the page cache (the fdatasync after it is what waits for the
   * disk), and a thread hop costs more than the copy.
   */
  #writeAllSync(file: Deno.FsFile, path: string, bytes: Uint8Array): void {
    this.#faultInjector?.("write", path);
    let written = 0;
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
  }

  async #writeAll(file: Deno.FsFile, path: string, bytes: Uint8Array): Promise<void> {
    this.#faultInjector?.("write", path);
    let written = 0;
    // In slices: one write of 100+ MiB holds the event loop while it is handed over.
    while (written < bytes.length) {
      written += await file.write(bytes.subarray(written, written + WRITE_SLICE_BYTES));
    }
  }

  async #syncDir(): Promise<void> {
    this.#faultInjector?.("sync", this.#dir);
    const dir = await Deno.open(this.#dir, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  }

  /** Waits `ms` (if at least 1), or until hurried. */
  #sleep(ms: number): Promise<void> {
    if (!(ms >= 1)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pause = undefined;
        resolve();
      }, ms);
      this.#pause = { timer, resolve };
    });
  }

  /** Lets the paced snapshot write in progress (if any) finish flat out. */
  #hurry(): void {
    const pause = this.#pause;
    if (pause === undefined) return;
    this.#pause = undefined;
    clearTimeout(pause.timer);
    pause.resolve();
  }

  /** Runs snapshot-file operations one at a time; a paced write ahead goes flat out. */
  #serialSnapshot<T>(fn: () => Promise<T>): Promise<T> {
    this.#snapshotOps++;
    this.#hurry();
    const run = this.#snapshotQueue.then(fn, fn).finally(() => this.#snapshotOps--);
    this.#snapshotQueue = run.catch(() => {});
    return run;
  }

  async #failStop<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw this.#stop(error);
    }
  }

  /** Records a write failure (every later call is refused) and returns the error to throw. */
  #stop(error: unknown): Error {
    this.#failure ??= error;
    return this.#stoppedError("write", error);
  }

  #stoppedError(action: string, cause: unknown): Error {
    return new Error(
      `Cannot ${action}: the storage stopped after an earlier failure (fail-stop); restart the node`,
      { cause },
    );
  }

  #checkUsable(action: string, needsLoad = true): void {
    if (this.#failure !== undefined) throw this.#stoppedError(action, this.#failure);
    if (this.#closed) throw new Error(`Cannot ${action}: the storage is closed`);
    if (needsLoad && !this.#loaded) throw new Error(`Cannot ${action}: call load() first`);
  }

  // ---- recovery ------------------------------------------------------------

  async #load(): Promise<LoadedState> {
    const names: string[] = [];
    for await (const item of Deno.readDir(this.#dir)) if (item.isFile) names.push(item.name);
    for (const name of names.filter((n) => n.endsWith(".tmp"))) {
      console.warn("storage: removed leftover temp file", { file: `${this.#dir}/${name}` });
      await Deno.remove(`${this.#dir}/${name}`);
    }
    const identity = await this.#readIdentity(names.includes("identity.json"));

    // Snapshots, newest first; unreadable ones are skipped for now.
    const snapIndexes = names.flatMap((n) => {
      const m = /^snap-([0-9a-f]{16})\.snap$/.exec(n);
      return m ? [parseInt(m[1]!, 16)] : [];
    }).sort((a, b) => a - b);
    const unreadable: { file: string; error: unknown }[] = [];
    let snapshot: Snapshot | undefined;
    for (let i = snapIndexes.length - 1; i >= 0 && snapshot === undefined; i--) {
      try {
        snapshot = await this.#readSnapshotFile(snapIndexes[i]!);
      } catch (error) {
        if (!(error instanceof StorageCorruptionError)) throw error;
        unreadable.push({ file: `${this.#dir}/${snapshotName(snapIndexes[i]!)}`, error });
      }
    }

    // WAL segments, in sequence, without gaps.
    const seqs = names.flatMap((n) => {
      const m = /^wal-([0-9a-f]{16})\.wal$/.exec(n);
      return m ? [parseInt(m[1]!, 16)] : [];
    }).sort((a, b) => a - b);
    for (let i = 1; i < seqs.length; i++) {
      if (seqs[i] !== seqs[i - 1]! + 1) {
        throw this.#corruption(
          `Cannot open WAL segment ${this.#dir}/${segmentName(seqs[i - 1]! + 1)}: it is missing ` +
            `(segments ${seqs[i - 1]} and ${seqs[i]} exist)`,
        );
      }
    }
    if (seqs.length === 0 && (snapIndexes.length > 0 || identity !== undefined)) {
      throw this.#corruption(
        `Cannot open the WAL in ${this.#dir}: no segment exists, but the directory holds ` +
          `${snapIndexes.length > 0 ? "snapshots" : "an identity"}`,
      );
    }

    const replay = new Replay();
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i]!;
      const path = `${this.#dir}/${segmentName(seq)}`;
      const bytes = await Deno.readFile(path);
      const last = i === seqs.length - 1;
      const end = this.#scanSegment(path, seq, bytes, last, replay);
      let size = bytes.length;
      if (end < bytes.length && !allZero(bytes, end)) {
        console.warn("wal: cut torn tail", { file: path, offset: end, bytes: bytes.length - end });
        size = end;
        const file = await Deno.open(path, { write: true });
        try {
          await file.truncate(end);
          await file.sync();
        } finally {
          file.close();
        }
      }
      this.#segments.push({ seq, path, maxIndex: replay.segmentMaxIndex });
      if (last) {
        // Zeros after the records are space preallocated for the next ones.
        this.#activeBytes = end;
        this.#activeAllocated = size;
      }
    }

    // The newest readable snapshot the WAL continues from.
    const chosen = snapshot?.meta.index ?? 0;
    const base = replay.base;
    if (base !== undefined && base > chosen) {
      const why = unreadable.length > 0
        ? `the newer snapshot ${unreadable[0]!.file} is unreadable (${
          String(unreadable[0]!.error)
        }) and the WAL starts after index ${base}`
        : `the WAL starts after index ${base}, but the newest snapshot is at ${chosen}`;
      throw this.#corruption(`Cannot recover the log in ${this.#dir}: ${why}`);
    }
    for (const u of unreadable) {
      console.warn("snapshot: unreadable, using an older one", {
        file: u.file,
        error: String(u.error),
        using: chosen,
      });
      await Deno.rename(u.file, `${u.file}.broken`);
    }

    let entries = replay.entriesAfter(chosen);
    // A snapshot received just before a crash may have no marker in the WAL
    // yet; entries after it then belong to another history unless the WAL's
    // entry at the snapshot's index has the snapshot's term.
    const atSnapshot = replay.entryAt(chosen);
    if (
      snapshot !== undefined && atSnapshot !== undefined && atSnapshot.term !== snapshot.meta.term
    ) {
      console.warn("wal: dropped entries that conflict with the snapshot", {
        index: chosen,
        entries: entries.length,
      });
      entries = [];
    }

    this.#snapshotIndexes = snapIndexes.filter((index) =>
      !unreadable.some((u) => u.file.endsWith(snapshotName(index)))
    );
    if (snapshot !== undefined) this.#snapshotMeta = structuredClone(snapshot.meta);
    this.#snapshotIndex = chosen;
    this.#lastIndex = entries.at(-1)?.index ?? chosen;
    this.#writtenHardState = replay.hardState;

    if (this.#segments.length === 0) {
      await this.#roll();
    } else {
      this.#active = await Deno.open(this.#segments.at(-1)!.path, { write: true });
      this.#active.seekSync(this.#activeBytes, Deno.SeekMode.Start);
    }
    if (replay.lastIndex > this.#lastIndex) {
      // Conflicting entries were dropped above: record that durably.
      await this.#appendNow(encode([RECORD_SNAPSHOT, chosen, snapshot?.meta.term ?? 0]));
    }

    const state: LoadedState = {
      hardState: replay.hardState ?? { term: 0, vote: 0, commit: 0 },
      entries,
    };
    if (identity !== undefined) state.identity = identity;
    if (snapshot !== undefined) state.snapshot = snapshot;
    return state;
  }

  async #appendNow(payload: Uint8Array): Promise<void> {
    const segment = this.#segments.at(-1)!;
    const bytes = frame(payload);
    await this.#writeAll(this.#active!, segment.path, bytes);
    await this.#active!.syncData();
    this.#activeBytes += bytes.length;
    this.#activeAllocated = Math.max(this.#activeAllocated, this.#activeBytes);
  }

  /**
   * Replays one segment into `replay`; returns the offset where valid data
   * ends (less than the length only for a torn tail of the last segment).
   */
  #scanSegment(
    path: string,
    seq: number,
    bytes: Uint8Array,
    last: boolean,
    replay: Replay,
  ): number {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const fail = (offset: number, what: string) =>
      this.#corruption(`Cannot open WAL segment ${path} at offset ${offset}: ${what}`);
    if (bytes.length < SEGMENT_HEADER_BYTES) throw fail(0, "the segment header is incomplete");
    if (view.getUint32(0, true) !== WAL_MAGIC) throw fail(0, "not a WAL segment (bad magic)");
    const version = view.getUint32(4, true);
    if (version !== FORMAT_VERSION) {
      throw fail(
        4,
        `format version ${version} is not supported (this build reads ${FORMAT_VERSION})`,
      );
    }
    if (view.getUint32(16, true) !== crc32c(bytes.subarray(0, 16))) {
      throw fail(16, "segment header checksum mismatch");
    }
    const headerSeq = view.getUint32(8, true) + view.getUint32(12, true) * 2 ** 32;
    if (headerSeq !== seq) throw fail(8, `the header says segment ${headerSeq}`);
    replay.startSegment();
    let offset = SEGMENT_HEADER_BYTES;
    while (offset < bytes.length) {
      const rest = bytes.length - offset;
      if (rest < FRAME_BYTES) {
        if (last) return offset;
        throw fail(offset, "the record's frame is incomplete");
      }
      const length = view.getUint32(offset, true);
      const payloadCrc = view.getUint32(offset + 4, true);
      if (view.getUint32(offset + 8, true) !== crc32c(bytes.subarray(offset, offset + 8))) {
        // Torn: nothing but zeros after it (no payload was written; a
        // preallocated segment has zeros there, not an end of file).
        if (last && allZero(bytes, offset + FRAME_BYTES)) return offset;
        throw fail(offset, "record frame checksum mismatch");
      }
      if (length === 0) throw fail(offset, "the record is empty");
      const end = offset + FRAME_BYTES + length;
      if (end > bytes.length) {
        if (last) return offset;
        throw fail(offset, "the record runs past the end of the file");
      }
      const payload = bytes.subarray(offset + FRAME_BYTES, end);
      if (crc32c(payload) !== payloadCrc) {
        if (last && (end === bytes.length || allZero(bytes, end))) return offset;
        throw fail(offset, "record checksum mismatch");
      }
      try {
        replay.apply(decode(payload));
      } catch (error) {
        throw fail(offset, `the record cannot be read (${String(error)})`);
      }
      offset = end;
    }
    return offset;
  }

  async #readIdentity(exists: boolean): Promise<Identity | undefined> {
    if (!exists) return undefined;
    const path = `${this.#dir}/identity.json`;
    let value: unknown;
    try {
      value = JSON.parse(await Deno.readTextFile(path));
    } catch (error) {
      throw this.#corruption(`Cannot read identity file ${path}: ${String(error)}`);
    }
    const v = value as {
      version?: unknown;
      nodeId?: unknown;
      clusterId?: unknown;
      removed?: unknown;
    };
    if (v.version !== FORMAT_VERSION) {
      throw this.#corruption(
        `Cannot read identity file ${path}: format version ${String(v.version)} is not supported`,
      );
    }
    if (typeof v.nodeId !== "number" || typeof v.clusterId !== "string") {
      throw this.#corruption(`Cannot read identity file ${path}: nodeId or clusterId is missing`);
    }
    const identity: Identity = { nodeId: v.nodeId, clusterId: v.clusterId };
    if (v.removed === true) identity.removed = true;
    return identity;
  }

  async #readSnapshotFile(index: number): Promise<Snapshot> {
    const path = `${this.#dir}/${snapshotName(index)}`;
    const bytes = await Deno.readFile(path);
    const at = (offset: number, length: number) =>
      Promise.resolve(bytes.subarray(offset, offset + length));
    const layout = await this.#snapshotLayout(path, bytes.length, at);
    const crcOffset = bytes.length - 4;
    const stored = new DataView(bytes.buffer, bytes.byteOffset).getUint32(crcOffset, true);
    if (await crc32cYielding(bytes.subarray(0, crcOffset), 0) !== stored) {
      throw this.#snapshotDamage(path, crcOffset, "checksum mismatch");
    }
    const meta = await this.#readSnapshotMeta(path, index, layout, at);
    return { meta, data: bytes.subarray(layout.dataStart, layout.dataEnd) };
  }

  /** Opens the newest snapshot's file for {@linkcode latestSnapshotStream}: its metadata and layout. */
  async #openSnapshotStream(index: number): Promise<SnapshotStream> {
    const path = `${this.#dir}/${snapshotName(index)}`;
    using file = await Deno.open(path, { read: true });
    const size = (await file.stat()).size;
    const at = (offset: number, length: number) => readAt(file, path, offset, length);
    const layout = await this.#snapshotLayout(path, size, at);
    const meta = await this.#readSnapshotMeta(path, index, layout, at);
    return {
      meta,
      dataBytes: layout.dataEnd - layout.dataStart,
      chunks: (maxBytes) => this.#snapshotChunks(path, size, layout, maxBytes),
    };
  }

  /**
   * Reads a snapshot file's data in chunks, checking its CRC on the way; the
   * last chunk is held back until the CRC matched.
   */
  async *#snapshotChunks(
    path: string,
    size: number,
    layout: SnapshotLayout,
    maxBytes: number,
  ): AsyncGenerator<Uint8Array, void, undefined> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      throw new Error(`Cannot read snapshot ${path}: a newer one replaced it meanwhile`);
    }
    try {
      let crc = crc32c(await readAt(file, path, 0, layout.dataStart));
      let held: Uint8Array | undefined;
      for (let pos = layout.dataStart; pos < layout.dataEnd;) {
        const chunk = await readAt(file, path, pos, Math.min(maxBytes, layout.dataEnd - pos));
        crc = await crc32cYielding(chunk, crc);
        pos += chunk.length;
        if (held !== undefined) yield held;
        held = chunk;
      }
      const tail = await readAt(file, path, layout.dataEnd, size - layout.dataEnd);
      crc = crc32c(tail.subarray(0, tail.length - 4), crc);
      if (crc !== new DataView(tail.buffer, tail.byteOffset).getUint32(tail.length - 4, true)) {
        throw this.#snapshotDamage(path, size - 4, "checksum mismatch");
      }
      if (held !== undefined) yield held;
    } finally {
      file.close();
    }
  }

  /**
   * Where a snapshot file's data lies, from its header and trailer (every
   * check but the CRC and the metadata). `at(offset, length)` reads the file.
   */
  async #snapshotLayout(
    path: string,
    size: number,
    at: (offset: number, length: number) => Promise<Uint8Array>,
  ): Promise<SnapshotLayout> {
    if (size < SNAP_HEADER_BYTES) throw this.#snapshotDamage(path, 0, "the file is too short");
    const head = await at(0, Math.min(size, SNAP_V1_HEADER_BYTES));
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    if (view.getUint32(0, true) !== SNAP_MAGIC) {
      throw this.#snapshotDamage(path, 0, "not a snapshot (bad magic)");
    }
    const version = view.getUint32(4, true);
    const metaBytes = view.getUint32(8, true);
    const mismatch = () => this.#snapshotDamage(path, 8, "the lengths do not match the file size");
    if (version === 1) {
      // Header: magic, version, meta length, data length; trailer: the CRC.
      const headerBytes = SNAP_V1_HEADER_BYTES;
      if (size < headerBytes + 4) throw this.#snapshotDamage(path, 0, "the file is too short");
      const dataEnd = headerBytes + metaBytes + u64le(view, 12);
      if (dataEnd + 4 !== size) throw mismatch();
      return { headerBytes, metaBytes, dataStart: headerBytes + metaBytes, dataEnd };
    }
    if (version === SNAPSHOT_FORMAT_VERSION) {
      const headerBytes = SNAP_HEADER_BYTES;
      const dataEnd = size - SNAP_TRAILER_BYTES;
      if (dataEnd < headerBytes + metaBytes) throw mismatch();
      const length = await at(dataEnd, 8);
      if (
        headerBytes + metaBytes + u64le(new DataView(length.buffer, length.byteOffset), 0) !==
          dataEnd
      ) {
        throw mismatch();
      }
      return { headerBytes, metaBytes, dataStart: headerBytes + metaBytes, dataEnd };
    }
    throw this.#snapshotDamage(
      path,
      4,
      `format version ${version} is not supported (this build reads 1 and ${SNAPSHOT_FORMAT_VERSION})`,
    );
  }

  /** A snapshot file's metadata, checked against the index its name gives. */
  async #readSnapshotMeta(
    path: string,
    index: number,
    layout: SnapshotLayout,
    at: (offset: number, length: number) => Promise<Uint8Array>,
  ): Promise<SnapshotMeta> {
    let meta: SnapshotMeta;
    try {
      meta = checkMeta(decode(await at(layout.headerBytes, layout.metaBytes)));
    } catch (error) {
      throw this.#snapshotDamage(
        path,
        layout.headerBytes,
        `the metadata cannot be read (${String(error)})`,
      );
    }
    if (meta.index !== index) {
      throw this.#snapshotDamage(path, layout.headerBytes, `the metadata says index ${meta.index}`);
    }
    return meta;
  }

  #snapshotDamage(path: string, offset: number, what: string): StorageCorruptionError {
    return this.#corruption(`Cannot read snapshot ${path} at offset ${offset}: ${what}`);
  }

  #corruption(message: string): StorageCorruptionError {
    return new StorageCorruptionError(
      `${message}. The node must not start, as this may hide acknowledged writes: ${OPERATOR_HINT} (${this.#dir})`,
    );
  }
}

/** The log as rebuilt from WAL records. */
class Replay {
  /** Index before `entries[0]`; undefined until a record sets it. */
  base: number | undefined;
  entries: Entry[] = [];
  hardState: HardState | undefined;
  segmentMaxIndex = 0;

  get lastIndex(): number {
    return (this.base ?? 0) + this.entries.length;
  }

  startSegment(): void {
    this.segmentMaxIndex = 0;
  }

  apply(record: unknown): void {
    if (!Array.isArray(record)) throw new TypeError("not an array");
    switch (record[0]) {
      case RECORD_ENTRIES: {
        const first = integer(record[1]);
        const list = record[2];
        if (!Array.isArray(list) || list.length === 0) throw new TypeError("bad entry list");
        if (this.base === undefined || first <= this.base) {
          this.base = first - 1;
          this.entries = [];
        } else if (first > this.lastIndex + 1) {
          throw new RangeError(`entries at ${first} leave a gap after ${this.lastIndex}`);
        } else {
          this.entries.length = first - this.base - 1;
        }
        for (let i = 0; i < list.length; i++) {
          const item = list[i] as unknown;
          if (!Array.isArray(item) || !(item[2] instanceof Uint8Array)) {
            throw new TypeError("bad entry");
          }
          const type: EntryType = item[1] === 1 ? "conf" : "normal";
          this.entries.push({ index: first + i, term: integer(item[0]), type, data: item[2] });
        }
        this.segmentMaxIndex = Math.max(this.segmentMaxIndex, first + list.length - 1);
        return;
      }
      case RECORD_HARD_STATE:
        this.hardState = {
          term: integer(record[1]),
          vote: integer(record[2]),
          commit: integer(record[3]),
        };
        return;
      case RECORD_SNAPSHOT: {
        const index = integer(record[1]);
        this.base = index;
        this.entries = [];
        this.segmentMaxIndex = Math.max(this.segmentMaxIndex, index);
        return;
      }
      default:
        throw new TypeError(`unknown record type ${String(record[0])}`);
    }
  }

  entryAt(index: number): Entry | undefined {
    if (this.base === undefined || index <= this.base) return undefined;
    return this.entries[index - this.base - 1];
  }

  entriesAfter(index: number): Entry[] {
    if (this.base === undefined) return [];
    return this.entries.slice(Math.max(0, index - this.base));
  }
}

function integer(value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`expected a non-negative integer, got ${String(value)}`);
  }
  return value;
}

function checkMeta(value: unknown): SnapshotMeta {
  const m = value as SnapshotMeta;
  if (
    typeof m !== "object" || m === null || typeof m.index !== "number" ||
    typeof m.term !== "number" || typeof m.conf !== "object" || m.conf === null ||
    !Array.isArray(m.conf.voters) || !Array.isArray(m.conf.learners) ||
    !Array.isArray(m.conf.removed)
  ) {
    throw new TypeError("bad snapshot metadata");
  }
  return m;
}

function allZero(bytes: Uint8Array, from: number): boolean {
  // A preallocated segment ends in up to 64 MiB of zeros: compare 4 bytes at a time.
  let i = from;
  while (i < bytes.length && (bytes.byteOffset + i) % 4 !== 0) if (bytes[i++] !== 0) return false;
  const words = Math.floor((bytes.length - i) / 4);
  const view = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words);
  for (let w = 0; w < words; w++) if (view[w] !== 0) return false;
  for (i += words * 4; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

function hex16(n: number): string {
  return n.toString(16).padStart(16, "0");
}

function segmentName(seq: number): string {
  return `wal-${hex16(seq)}.wal`;
}

function snapshotName(index: number): string {
  return `snap-${hex16(index)}.snap`;
}

function segmentHeader(seq: number): Uint8Array {
  const header = new Uint8Array(SEGMENT_HEADER_BYTES);
  const view = new DataView(header.buffer);
  view.setUint32(0, WAL_MAGIC, true);
  view.setUint32(4, FORMAT_VERSION, true);
  view.setUint32(8, seq % 2 ** 32, true);
  view.setUint32(12, Math.floor(seq / 2 ** 32), true);
  view.setUint32(16, crc32c(header.subarray(0, 16)), true);
  return header;
}

/** One framed record. */
function frame(payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(FRAME_BYTES + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, payload.length, true);
  view.setUint32(4, crc32c(payload), true);
  view.setUint32(8, crc32c(bytes.subarray(0, 8)), true);
  bytes.set(payload, FRAME_BYTES);
  return bytes;
}

/**
 * CRC-32C of a large buffer in 4 MiB slices, giving the event loop a turn
 * between them: a 100 MiB snapshot would otherwise stall heartbeats and
 * requests for about 100 ms.
 */
async function crc32cYielding(bytes: Uint8Array, seed: number): Promise<number> {
  const sliceBytes = 4 << 20;
  let crc = seed;
  for (let at = 0; at < bytes.byteLength; at += sliceBytes) {
    crc = crc32c(bytes.subarray(at, at + sliceBytes), crc);
    if (at + sliceBytes < bytes.byteLength) await new Promise<void>((r) => setImmediate(r));
  }
  return crc;
}

/** A snapshot's producer (not the disk) failed while the snapshot was written. */
class SnapshotSourceError extends Error {
  constructor(cause: unknown) {
    super("The snapshot's producer failed", { cause });
  }
}

/** Where the parts of a snapshot file lie. */
interface SnapshotLayout {
  headerBytes: number;
  metaBytes: number;
  /** The data is `[dataStart, dataEnd)`; the trailer follows it. */
  dataStart: number;
  dataEnd: number;
}

/** A little-endian unsigned 64-bit integer (below 2^53) at `at`. */
function u64le(view: DataView, at: number): number {
  return view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
}

/** Reads exactly `length` bytes of `file` at `offset` into a fresh buffer. */
async function readAt(
  file: Deno.FsFile,
  path: string,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < length) {
    const n = await file.read(bytes.subarray(filled));
    if (n === null) {
      throw new Error(`Cannot read ${path}: it ended at ${offset + filled} of ${offset + length}`);
    }
    filled += n;
  }
  return bytes;
}
