/**
 * MessagePack, behind one small module so that swapping the library is a
 * one-file change. Byte strings are `Uint8Array`; a decoded byte string may
 * be a view into the input buffer.
 *
 * @module
 */

import { Decoder, Encoder } from "@msgpack/msgpack";

// Reused instances: the library's top-level functions build one per call.
const encoder = new Encoder();
const decoder = new Decoder();

/** Encodes `value` as MessagePack into a fresh buffer. */
export function encode(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/** Decodes one MessagePack value; throws `RangeError` or `Error` on malformed input. */
export function decode(bytes: Uint8Array): unknown {
  return decoder.decode(bytes);
}
