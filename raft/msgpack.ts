/**
 * MessagePack encoding behind one small module, so that swapping the library
 * (`@msgpack/msgpack` today, `@std/msgpack` or `msgpackr` later) is a
 * one-file change.
 *
 * @module
 */

import { Decoder, Encoder } from "@msgpack/msgpack";

// Reused instances (both are re-entrancy safe): the library's top-level
// `encode`/`decode` build a new one per call, which costs in the WAL's hot path.
const encoder = new Encoder();
const decoder = new Decoder();

/**
 * Encodes a value as MessagePack.
 *
 * @example
 * ```ts
 * const bytes = encode({ op: "put", key: "k", value: "v" });
 * ```
 */
export function encode(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/**
 * Decodes one MessagePack value. Throws on malformed input or trailing bytes.
 *
 * @example
 * ```ts
 * const value = decode(encode([1, 2])); // [1, 2]
 * ```
 */
export function decode(bytes: Uint8Array): unknown {
  return decoder.decode(bytes);
}
