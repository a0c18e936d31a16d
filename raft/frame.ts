/**
 * Length-prefixed MessagePack framing for peer connections.
 *
 * Every frame is a 4-byte big-endian length followed by exactly that many
 * bytes holding one MessagePack value. {@linkcode FrameReader} turns a byte
 * source into decoded values; {@linkcode FrameWriter} (and
 * {@linkcode encodeFrames}) turns many values into one buffer and one write.
 *
 * @module
 */

import { decode, encode } from "./msgpack.ts";

/** The default limit on one frame's payload: 16 MiB. */
export const FRAME_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;

/** Bytes of the length prefix in front of every frame. */
export const FRAME_HEADER_BYTES = 4;

/** Something bytes can be read from, like a `Deno.Conn`: `null` at end of stream. */
export interface ByteSource {
  read(p: Uint8Array): Promise<number | null>;
}

/** Something bytes can be written to, like a `Deno.Conn`: may write fewer bytes than asked. */
export interface ByteSink {
  write(p: Uint8Array): Promise<number>;
}

/** Options of {@linkcode FrameReader}. */
export interface FrameReaderOptions {
  /** The largest accepted frame payload; a longer frame makes `next()` throw. Default 16 MiB. */
  frameBytesMax?: number;
  /** The size of the reusable read buffer. Default 64 KiB. */
  readBufferBytes?: number;
}

/** A frame's length prefix announced more bytes than the limit allows. */
export class FrameTooLargeError extends RangeError {
  override name = "FrameTooLargeError";
}

/** The stream ended, or held bytes that are not a frame of one MessagePack value. */
export class FrameFormatError extends SyntaxError {
  override name = "FrameFormatError";
}

/** Adapts a `ReadableStream<Uint8Array>` to {@linkcode ByteSource}, keeping the unread rest of a chunk. */
class StreamSource implements ByteSource {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #rest: Uint8Array = new Uint8Array(0);

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#rest.byteLength === 0) {
      const { done, value } = await this.#reader.read();
      if (done) return null;
      this.#rest = value;
    }
    const n = Math.min(p.byteLength, this.#rest.byteLength);
    p.set(this.#rest.subarray(0, n));
    this.#rest = this.#rest.subarray(n);
    return n;
  }

  release(): void {
    this.#reader.releaseLock();
  }
}

/**
 * Reads frames from a connection or stream and decodes each to a value.
 *
 * Reads go into one reusable buffer; all complete frames found after a read
 * are copied out together with one copy (decoded byte strings are views into
 * that copy, so they stay valid after later reads). A frame larger than the
 * buffer is read straight into its own allocation. A frame split across reads
 * waits for the rest; many frames in one read are all returned in turn.
 *
 * `next()` throws {@linkcode FrameTooLargeError} when a length prefix exceeds
 * `frameBytesMax` (before reading the payload), and
 * {@linkcode FrameFormatError} when a payload does not decode or the stream
 * ends inside a frame. After a throw the reader is unusable: close the
 * connection.
 *
 * @example
 * ```ts
 * const reader = new FrameReader(conn, { frameBytesMax: 1 << 20 });
 * for await (const value of reader) console.log(value);
 * ```
 */
export class FrameReader implements AsyncIterableIterator<unknown> {
  #source: ByteSource;
  #streamSource: StreamSource | undefined;
  #frameBytesMax: number;
  #buf: Uint8Array;
  #view: DataView;
  /** Unconsumed bytes are `#buf[#start, #end)`. */
  #start = 0;
  #end = 0;
  /** Complete frames already copied out of `#buf`, not yet decoded. */
  #ready: Uint8Array[] = [];
  #readyNext = 0;
  #eof = false;

  constructor(source: ByteSource | ReadableStream<Uint8Array>, options: FrameReaderOptions = {}) {
    if (source instanceof ReadableStream) {
      this.#streamSource = new StreamSource(source);
      this.#source = this.#streamSource;
    } else {
      this.#source = source;
    }
    this.#frameBytesMax = options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT;
    this.#buf = new Uint8Array(options.readBufferBytes ?? 64 * 1024);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** The next frame's raw payload (owned by the caller), or `null` at a clean end of stream. */
  async readFrame(): Promise<Uint8Array | null> {
    for (;;) {
      const frame = this.#ready[this.#readyNext];
      if (frame !== undefined) {
        this.#ready[this.#readyNext++] = EMPTY;
        if (this.#readyNext === this.#ready.length) {
          this.#ready.length = 0;
          this.#readyNext = 0;
        }
        return frame;
      }
      if (this.#eof) {
        if (this.#start === this.#end) return null;
        throw new FrameFormatError(
          `Cannot read frame: the stream ended inside a frame (${
            this.#end - this.#start
          } bytes left over)`,
        );
      }
      this.#collect();
      if (this.#ready.length > 0) continue;
      const available = this.#end - this.#start;
      if (available >= FRAME_HEADER_BYTES) {
        const length = this.#view.getUint32(this.#start);
        if (FRAME_HEADER_BYTES + length > this.#buf.byteLength) {
          return await this.#readLarge(length);
        }
      }
      // Make room at the end: move the partial frame to the front.
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.#source.read(this.#buf.subarray(this.#end));
      if (n === null) this.#eof = true;
      else this.#end += n;
    }
  }

  /** Decodes the next frame; `done` at a clean end of stream. */
  async next(): Promise<IteratorResult<unknown, undefined>> {
    const frame = await this.readFrame();
    if (frame === null) return { done: true, value: undefined };
    return { done: false, value: decodeFrame(frame) };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<unknown> {
    return this;
  }

  /** Releases the lock on a stream source (no-op for a `ByteSource`). */
  release(): void {
    this.#streamSource?.release();
  }

  /** Finds every complete frame in the buffer and copies them all out with one copy. */
  #collect(): void {
    let pos = this.#start;
    const boundaries: number[] = [];
    while (this.#end - pos >= FRAME_HEADER_BYTES) {
      const length = this.#view.getUint32(pos);
      // Hand out the complete frames before this one first; throw when it is next.
      if (length > this.#frameBytesMax && boundaries.length > 0) break;
      this.#checkLength(length);
      const frameEnd = pos + FRAME_HEADER_BYTES + length;
      if (frameEnd > this.#end) break;
      boundaries.push(pos);
      pos = frameEnd;
    }
    if (boundaries.length === 0) return;
    const base = this.#start;
    const copy = this.#buf.slice(base, pos);
    for (const at of boundaries) {
      const length = this.#view.getUint32(at);
      const from = at - base + FRAME_HEADER_BYTES;
      this.#ready.push(copy.subarray(from, from + length));
    }
    this.#start = pos;
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  /** Reads a frame too large for the buffer directly into its own allocation. */
  async #readLarge(length: number): Promise<Uint8Array> {
    const frame = new Uint8Array(length);
    const have = this.#end - this.#start - FRAME_HEADER_BYTES;
    frame.set(this.#buf.subarray(this.#start + FRAME_HEADER_BYTES, this.#end));
    this.#start = this.#end = 0;
    let filled = have;
    while (filled < length) {
      const n = await this.#source.read(frame.subarray(filled));
      if (n === null) {
        this.#eof = true;
        throw new FrameFormatError(
          `Cannot read frame: the stream ended inside a frame (${filled} of ${length} bytes)`,
        );
      }
      filled += n;
    }
    return frame;
  }

  #checkLength(length: number): void {
    if (length > this.#frameBytesMax) {
      throw new FrameTooLargeError(
        `Cannot read frame: its length ${length} exceeds frameBytesMax ${this.#frameBytesMax}`,
      );
    }
  }
}

const EMPTY = new Uint8Array(0);

/** Decodes one frame payload, wrapping decoder errors in {@linkcode FrameFormatError}. */
export function decodeFrame(payload: Uint8Array): unknown {
  try {
    return decode(payload);
  } catch (error) {
    throw new FrameFormatError(
      `Cannot decode frame: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}

/**
 * Encodes values as consecutive frames in one buffer.
 *
 * Throws {@linkcode FrameTooLargeError} if one value encodes to more than
 * `frameBytesMax` bytes (nothing is returned then).
 */
export function encodeFrames(
  values: readonly unknown[],
  options: { frameBytesMax?: number } = {},
): Uint8Array {
  const payloads = encodePayloads(values, options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT);
  let total = 0;
  for (const p of payloads) total += FRAME_HEADER_BYTES + p.byteLength;
  const out = new Uint8Array(total);
  fillFrames(out, payloads);
  return out;
}

function encodePayloads(values: readonly unknown[], frameBytesMax: number): Uint8Array[] {
  const payloads: Uint8Array[] = new Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const payload = encode(values[i]);
    if (payload.byteLength > frameBytesMax) {
      throw new FrameTooLargeError(
        `Cannot encode frame: its length ${payload.byteLength} exceeds frameBytesMax ${frameBytesMax}`,
      );
    }
    payloads[i] = payload;
  }
  return payloads;
}

function fillFrames(out: Uint8Array, payloads: readonly Uint8Array[]): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let pos = 0;
  for (const p of payloads) {
    view.setUint32(pos, p.byteLength);
    out.set(p, pos + FRAME_HEADER_BYTES);
    pos += FRAME_HEADER_BYTES + p.byteLength;
  }
  return pos;
}

/** Writes all of `bytes`, looping over short writes. */
export async function writeAll(sink: ByteSink, bytes: Uint8Array): Promise<void> {
  let pos = 0;
  while (pos < bytes.byteLength) pos += await sink.write(bytes.subarray(pos));
}

/**
 * Writes batches of values as frames: each `write(values)` encodes every
 * value into one reused buffer and issues one write (plus continuations if
 * the OS takes fewer bytes). Not safe for concurrent `write` calls: await
 * each one.
 *
 * @example
 * ```ts
 * const writer = new FrameWriter(conn);
 * await writer.write([msg1, msg2, msg3]); // one write syscall
 * ```
 */
export class FrameWriter {
  #sink: ByteSink;
  #frameBytesMax: number;
  #buf: Uint8Array = new Uint8Array(64 * 1024);
  /** Batches written so far (one `write()` call each); lets tests observe batching. */
  batches = 0;
  /** Frames written so far. */
  frames = 0;

  constructor(sink: ByteSink, options: { frameBytesMax?: number } = {}) {
    this.#sink = sink;
    this.#frameBytesMax = options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT;
  }

  /** Encodes `values` as frames and writes them with one write; throws before writing anything if one is too large. */
  async write(values: readonly unknown[]): Promise<void> {
    if (values.length === 0) return;
    const payloads = encodePayloads(values, this.#frameBytesMax);
    let total = 0;
    for (const p of payloads) total += FRAME_HEADER_BYTES + p.byteLength;
    if (total > this.#buf.byteLength) {
      this.#buf = new Uint8Array(Math.max(total, this.#buf.byteLength * 2));
    }
    const n = fillFrames(this.#buf, payloads);
    await writeAll(this.#sink, this.#buf.subarray(0, n));
    // Don't keep a huge buffer alive after a snapshot chunk or a large batch.
    if (this.#buf.byteLength > 4 * 1024 * 1024) this.#buf = new Uint8Array(64 * 1024);
    this.batches++;
    this.frames += values.length;
  }
}
