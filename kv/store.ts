/**
 * The replicated key-value state machine. It knows nothing of Raft: the
 * runtime feeds it committed commands in log order, and asks it for snapshots
 * and restores it from them.
 *
 * Determinism contract: `apply` reads no clock, draws no randomness and does
 * no I/O, so the same commands in the same order give the same state on every
 * replica. A command that cannot be decoded, or has an unknown op, is a no-op
 * that returns an error result: throwing would crash every replica
 * identically, at the same index, forever.
 *
 * Snapshots are MessagePack, one value:
 * `["raftkv.kv", 2, count, chunk, chunk, ...]` where every chunk is a
 * MessagePack `bin` holding `n` (u32 little-endian), the UTF-16 lengths of
 * key 1, value 1, ..., key n, value n (u32 each), then the UTF-8 of all of
 * them concatenated: one native encode or decode per chunk instead of two
 * per key. Version 1 (still read) held the MessagePack array `[key, value,
 * key, value, ...]` instead. Chunks let a large store be written, sent and
 * restored piece by piece while the event loop keeps running.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { concatBytes } from "../raft/bytes.ts";
import { decode, encode } from "../raft/msgpack.ts";
import { decodeCommand, type KvCommand, type KvCommandId } from "./command.ts";

/** The first element of every snapshot. */
export const SNAPSHOT_FORMAT = "raftkv.kv";
/** The snapshot format version this code writes (it reads 1 as well). */
export const SNAPSHOT_VERSION = 2;
/** The default number of keys per snapshot chunk (about 0.5 MiB and 3 ms of encoding with 100-byte values). */
export const SNAPSHOT_CHUNK_KEYS_DEFAULT = 4096;
/**
 * The default bound on a chunk's text, in UTF-16 code units (keys and values
 * together; one pair may exceed it alone). A chunk's text is built as one
 * string, and a JavaScript string holds at most about 2^29 of them: without
 * this bound, 4096 values of 1 MiB could not be snapshotted at all.
 */
export const SNAPSHOT_CHUNK_CHARS_DEFAULT = 1 << 20;

/** What applying one command did. `id` is the command's tag, if it had one. */
export type KvResult =
  | { ok: true; op: "put"; id?: KvCommandId }
  | { ok: true; op: "delete"; existed: boolean; id?: KvCommandId }
  | { ok: false; error: string };

/** Options of the snapshot methods. */
export interface KvSnapshotOptions {
  /** Keys per chunk; the event loop gets a turn between chunks. Default {@linkcode SNAPSHOT_CHUNK_KEYS_DEFAULT}. */
  chunkKeysMax?: number;
  /** Text per chunk, in UTF-16 code units. Default {@linkcode SNAPSHOT_CHUNK_CHARS_DEFAULT}. */
  chunkCharsMax?: number;
}

/**
 * A layer maps a key to its value, or to `null` for "deleted in this layer".
 * Layer 0 (the base) never holds `null`.
 */
type Layer = Map<string, string | null>;

/**
 * The key-value state machine.
 *
 * A snapshot taken with {@linkcode KvStore.snapshotChunks} captures the
 * state in O(1): the current
 * layers are frozen and later writes go to a new top layer (copy-on-write at
 * the granularity of a key). When the last snapshot in progress finishes,
 * the layers are folded back into the base in O(keys written meanwhile).
 *
 * @example
 * ```ts
 * import { encodeCommand } from "./command.ts";
 * const store = new KvStore();
 * store.apply(encodeCommand({ op: "put", key: "k", value: "v" }));
 * store.get("k"); // "v"
 * const copy = KvStore.restore(store.snapshot());
 * ```
 */
export class KvStore {
  /** `#layers[0]` is the base; writes go to the last layer. */
  #layers: Layer[] = [new Map()];
  #size = 0;
  /** Snapshots in progress: while any is, the layers below the top are frozen. */
  #views = 0;

  /** The number of keys. */
  get size(): number {
    return this.#size;
  }

  /**
   * Applies one committed command. Never throws on bad input: an undecodable
   * command or an unknown op changes nothing and returns `{ ok: false }`.
   */
  apply(command: Uint8Array): KvResult {
    let cmd;
    try {
      cmd = decodeCommand(command);
    } catch (error) {
      return { ok: false, error: error instanceof Error ? error.message : String(error) };
    }
    return this.applyCommand(cmd);
  }

  /**
   * Applies a command already decoded (or about to be encoded: the node that
   * proposed it skips decoding its own bytes). `cmd` must be what
   * `decodeCommand` gives for the entry's bytes, so every replica agrees.
   */
  applyCommand(cmd: KvCommand): KvResult {
    const tag = cmd.id === undefined ? {} : { id: cmd.id };
    if (cmd.op === "put") {
      this.#put(cmd.key, cmd.value);
      return { ok: true, op: "put", ...tag };
    }
    return { ok: true, op: "delete", existed: this.#delete(cmd.key), ...tag };
  }

  /** The value of `key`, or `undefined` if it is absent. */
  get(key: string): string | undefined {
    const layers = this.#layers;
    for (let i = layers.length - 1; i >= 0; i--) {
      const value = layers[i]!.get(key);
      if (value !== undefined) return value ?? undefined;
    }
    return undefined;
  }

  #put(key: string, value: string): void {
    const layers = this.#layers;
    if (layers.length === 1) {
      // One hash lookup instead of two: the map's growth says whether the key is new.
      const base = layers[0]!;
      const before = base.size;
      base.set(key, value);
      this.#size += base.size - before;
      return;
    }
    if (this.get(key) === undefined) this.#size++;
    layers.at(-1)!.set(key, value);
  }

  #delete(key: string): boolean {
    if (this.get(key) === undefined) return false;
    this.#size--;
    const layers = this.#layers;
    // A tombstone hides the key in the frozen layers below; the base needs none.
    if (layers.length === 1) layers[0]!.delete(key);
    else layers.at(-1)!.set(key, null);
    return true;
  }

  /**
   * The whole state as one snapshot, synchronously. For large stores prefer
   * {@linkcode KvStore.snapshotChunks}: this blocks the event loop for the
   * whole encoding (about 1 s for 1M keys of 100 bytes).
   */
  snapshot(options: KvSnapshotOptions = {}): Uint8Array {
    return concatBytes([...encodeChunks(this.#layers.slice(), this.#size, chunkLimits(options))]);
  }

  /**
   * Captures the current state in O(1) and returns its snapshot as a stream
   * of byte chunks whose concatenation is what {@linkcode KvStore.snapshot}
   * would have returned at the time of the call. Between chunks the stream
   * yields to the event loop, so writes and requests keep being served; they
   * do not change the snapshot.
   *
   * Consume it to the end, or call `return()` (a `for await` loop's `break`
   * does) or dispose of it: until then, writes go to an extra layer.
   *
   * @example
   * ```ts
   * await using stream = store.snapshotChunks();
   * for await (const chunk of stream) await file.write(chunk);
   * ```
   */
  snapshotChunks(options: KvSnapshotOptions = {}): KvSnapshotStream {
    const limits = chunkLimits(options);
    const frozen = this.#layers.slice();
    this.#layers.push(new Map());
    this.#views++;
    const release = () => {
      this.#views--;
      if (this.#views === 0) this.#fold();
    };
    return new KvSnapshotStream(encodeChunks(frozen, this.#size, limits), release);
  }

  /** Writes `[key, value, ...]` pairs during a restore. */
  #load(flat: string[]): void {
    // A store being restored has only its base layer: one map operation per key.
    const base = this.#layers[0]!;
    for (let i = 0; i < flat.length; i += 2) base.set(flat[i]!, flat[i + 1]!);
    this.#size = base.size;
  }

  /** Folds every layer into the base once no snapshot is reading them. */
  #fold(): void {
    const [base, ...deltas] = this.#layers;
    for (const delta of deltas) {
      for (const [key, value] of delta) {
        if (value === null) base!.delete(key);
        else base!.set(key, value);
      }
    }
    this.#layers = [base!];
  }

  /**
   * A store from a snapshot, synchronously. Throws a `SyntaxError` or
   * `TypeError` if `bytes` is not a valid snapshot (a corrupt snapshot must
   * stop the node, not start it with partial state).
   */
  static restore(bytes: Uint8Array): KvStore {
    const { version, count, chunks } = parseHeader(bytes);
    const store = new KvStore();
    for (const chunk of chunks) store.#load(parseChunk(chunk, version));
    checkCount(store, count);
    return store;
  }

  /**
   * A store from a snapshot, yielding to the event loop between chunks.
   * Throws like {@linkcode KvStore.restore}.
   */
  static async restoreAsync(bytes: Uint8Array): Promise<KvStore> {
    const { version, count, chunks } = parseHeader(bytes);
    const store = new KvStore();
    for (const chunk of chunks) {
      store.#load(parseChunk(chunk, version));
      await yieldToEventLoop();
    }
    checkCount(store, count);
    return store;
  }
}

/**
 * A snapshot being encoded: an async iterator of byte chunks that yields to
 * the event loop between chunks. Returned by {@linkcode KvStore.snapshotChunks}.
 */
export class KvSnapshotStream implements AsyncIterableIterator<Uint8Array>, AsyncDisposable {
  #chunks: Generator<Uint8Array, void>;
  #release: (() => void) | undefined;
  #started = false;

  /** Internal: use {@linkcode KvStore.snapshotChunks}. */
  constructor(chunks: Generator<Uint8Array, void>, release: () => void) {
    this.#chunks = chunks;
    this.#release = release;
  }

  /** The next chunk, after giving the event loop a turn. */
  async next(): Promise<IteratorResult<Uint8Array, undefined>> {
    if (this.#release === undefined) return { done: true, value: undefined };
    if (this.#started) await yieldToEventLoop();
    this.#started = true;
    if (this.#release === undefined) return { done: true, value: undefined };
    let result;
    try {
      result = this.#chunks.next();
    } catch (error) {
      this.#finish();
      throw error;
    }
    if (result.done) {
      this.#finish();
      return { done: true, value: undefined };
    }
    return { done: false, value: result.value };
  }

  /** Stops the stream and lets the store fold its layers. */
  return(): Promise<IteratorResult<Uint8Array, undefined>> {
    this.#finish();
    return Promise.resolve({ done: true, value: undefined });
  }

  /** This stream. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Same as `return()`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.#finish();
    return Promise.resolve();
  }

  #finish(): void {
    const release = this.#release;
    if (release === undefined) return;
    this.#release = undefined;
    this.#chunks.return();
    release();
  }
}

/**
 * Encodes the merged view of `layers` (which must not change while this
 * runs): first the header, then chunks of up to `limits.keys` keys and
 * `limits.chars` code units of text (a single larger pair gets a chunk of
 * its own). The header gives the chunk count, so a first pass over the keys
 * plans the chunks (lengths only, no encoding) and the second encodes them.
 */
function* encodeChunks(
  layers: Layer[],
  count: number,
  limits: ChunkLimits,
): Generator<Uint8Array, void> {
  const plan: number[] = []; // pairs per chunk
  let pairs = 0;
  let chars = 0;
  const add = (value: string, key: string) => {
    const size = key.length + value.length;
    if (pairs > 0 && (pairs === limits.keys || chars + size > limits.chars)) {
      plan.push(pairs);
      pairs = 0;
      chars = 0;
    }
    pairs++;
    chars += size;
  };
  // The usual case, one layer, without an entry array per key: 3x faster.
  if (layers.length === 1) (layers[0] as Map<string, string>).forEach(add);
  else for (const [key, value] of mergedPairs(layers)) add(value, key);
  if (pairs > 0) plan.push(pairs);
  yield concatBytes([
    arrayHeader(3 + plan.length),
    encode(SNAPSHOT_FORMAT),
    encode(SNAPSHOT_VERSION),
    encode(count),
  ]);
  let flat: string[] = [];
  let chunk = 0;
  let emitted = 0;
  for (const [key, value] of layers.length === 1 ? layers[0]! : mergedPairs(layers)) {
    flat.push(key, value!);
    if (flat.length === 2 * plan[chunk]!) {
      emitted += flat.length / 2;
      yield encodeTextChunk(flat);
      flat = [];
      chunk++;
    }
  }
  // Stays on in production: a snapshot that disagrees with the store's size
  // would silently lose or invent keys on every node restored from it.
  if (emitted !== count || flat.length > 0 || chunk !== plan.length) {
    throw new Error(`Cannot snapshot the store: wrote ${emitted} keys, expected ${count}`);
  }
}

/** Every live `[key, value]` of the merged view of `layers`, in snapshot order. */
function* mergedPairs(layers: Layer[]): Generator<[string, string]> {
  const [base, ...deltas] = layers;
  for (const [key, value] of base!) {
    const latest = lookup(deltas, deltas.length, key);
    if (latest === null) continue;
    yield [key, latest ?? value!];
  }
  for (let i = 0; i < deltas.length; i++) {
    for (const [key, value] of deltas[i]!) {
      // Keys of the base were written above; a key in a later delta is written from there.
      if (value === null || base!.has(key)) continue;
      if (lookup(deltas, deltas.length, key, i + 1) !== undefined) continue;
      yield [key, value];
    }
  }
}

/** The value of `key` in `deltas[from..end)`, searching from the top; `null` if deleted there. */
function lookup(deltas: Layer[], end: number, key: string, from = 0): string | null | undefined {
  for (let i = end - 1; i >= from; i--) {
    const value = deltas[i]!.get(key);
    if (value !== undefined) return value;
  }
  return undefined;
}

function parseHeader(
  bytes: Uint8Array,
): { version: number; count: number; chunks: Uint8Array[] } {
  let value: unknown;
  try {
    value = decode(bytes);
  } catch (error) {
    throw new SyntaxError(
      `Cannot restore the store: the snapshot is not MessagePack: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  if (!Array.isArray(value) || value[0] !== SNAPSHOT_FORMAT) {
    throw new TypeError(`Cannot restore the store: not a ${SNAPSHOT_FORMAT} snapshot`);
  }
  const [, version, count, ...chunks] = value as unknown[];
  if (version !== 1 && version !== SNAPSHOT_VERSION) {
    throw new TypeError(
      `Cannot restore the store: unsupported snapshot version ${
        String(version)
      } (this build reads 1 and ${SNAPSHOT_VERSION})`,
    );
  }
  if (typeof count !== "number" || !Number.isSafeInteger(count) || count < 0) {
    throw new TypeError(`Cannot restore the store: bad key count ${String(count)}`);
  }
  if (!chunks.every((chunk) => chunk instanceof Uint8Array)) {
    throw new TypeError("Cannot restore the store: a chunk is not a byte string");
  }
  return { version, count, chunks: chunks as Uint8Array[] };
}

const textEncoder = new TextEncoder();
// ignoreBOM: a U+FEFF at the start of the text is the first key's, not a
// byte-order mark to drop (dropping it broke the chunk's lengths).
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A version-2 chunk already wrapped as a MessagePack bin32: the pair count,
 * every string's UTF-16 length, then their UTF-8. The text is encoded in
 * place, into a buffer sized for ASCII first (one allocation and no copy in
 * the usual case), or for 3 bytes per code unit if it does not fit.
 */
function encodeTextChunk(flat: string[]): Uint8Array {
  const text = flat.join("");
  const headerBytes = 5 + 4 + 4 * flat.length;
  let out = new Uint8Array(headerBytes + text.length);
  let { read, written } = textEncoder.encodeInto(text, out.subarray(headerBytes));
  if (read < text.length) {
    out = new Uint8Array(headerBytes + 3 * text.length);
    ({ written } = textEncoder.encodeInto(text, out.subarray(headerBytes)));
  }
  const view = new DataView(out.buffer);
  out[0] = 0xc6;
  view.setUint32(1, headerBytes - 5 + written);
  view.setUint32(5, flat.length / 2, true);
  for (let i = 0; i < flat.length; i++) view.setUint32(9 + 4 * i, flat[i]!.length, true);
  return out.subarray(0, headerBytes + written);
}

/** The `[key, value, ...]` pairs of a version-2 chunk, checked. */
function parseTextChunk(chunk: Uint8Array): string[] {
  const bad = (what: string) => new TypeError(`Cannot restore the store: a chunk ${what}`);
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk.length < 4) throw bad("is cut short");
  const strings = 2 * view.getUint32(0, true);
  const headerBytes = 4 + 4 * strings;
  if (headerBytes > chunk.length) throw bad("is cut short");
  let text: string;
  try {
    text = strictUtf8.decode(chunk.subarray(headerBytes));
  } catch {
    throw bad("is not valid UTF-8");
  }
  const flat = new Array<string>(strings);
  let at = 0;
  for (let i = 0; i < strings; i++) {
    const length = view.getUint32(4 + 4 * i, true);
    if (at + length > text.length) throw bad("has lengths past its text");
    if (length === 0 && i % 2 === 0) throw bad("has an empty key");
    flat[i] = text.slice(at, at + length);
    at += length;
  }
  if (at !== text.length) throw bad("has text past its lengths");
  return flat;
}

/** The `[key, value, ...]` pairs of one chunk, checked. */
function parseChunk(chunk: Uint8Array, version: number): string[] {
  if (version !== 1) return parseTextChunk(chunk);
  let flat: unknown;
  try {
    flat = decode(chunk);
  } catch (error) {
    throw new SyntaxError(
      `Cannot restore the store: a chunk is not MessagePack: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  if (!Array.isArray(flat) || flat.length % 2 !== 0) {
    throw new TypeError("Cannot restore the store: a chunk is not an array of key-value pairs");
  }
  for (let i = 0; i < flat.length; i += 2) {
    const key: unknown = flat[i];
    if (typeof key !== "string" || key === "" || typeof flat[i + 1] !== "string") {
      throw new TypeError("Cannot restore the store: a key or value is not a string");
    }
  }
  return flat as string[];
}

function checkCount(store: KvStore, count: number): void {
  if (store.size !== count) {
    throw new TypeError(
      `Cannot restore the store: the snapshot holds ${store.size} distinct keys, its header says ${count}`,
    );
  }
}

interface ChunkLimits {
  keys: number;
  chars: number;
}

function chunkLimits(options: KvSnapshotOptions): ChunkLimits {
  const limit = (name: string, value: number) => {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(
        `Cannot snapshot the store: ${name} must be a positive integer, got ${value}`,
      );
    }
    return value;
  };
  return {
    keys: limit("chunkKeysMax", options.chunkKeysMax ?? SNAPSHOT_CHUNK_KEYS_DEFAULT),
    chars: limit("chunkCharsMax", options.chunkCharsMax ?? SNAPSHOT_CHUNK_CHARS_DEFAULT),
  };
}

/** A MessagePack array32 header. */
function arrayHeader(length: number): Uint8Array {
  const out = new Uint8Array(5);
  out[0] = 0xdd;
  new DataView(out.buffer).setUint32(1, length);
  return out;
}

/**
 * Lets timers and I/O run: a macrotask turn, not just a microtask.
 * `setImmediate` costs about 4 µs a turn here; `setTimeout(0)` about 2 ms
 * (timers nested more than 5 deep are clamped), which would double the time
 * of a 1M-key snapshot.
 */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
