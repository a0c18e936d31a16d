/**
 * MessagePack encoding behind one small module, so that swapping the library
 * (`@msgpack/msgpack` today, `@std/msgpack` or `msgpackr` later) is a
 * one-file change.
 *
 * @module
 */

import { decode as msgpackDecode, encode as msgpackEncode } from "@msgpack/msgpack";

/**
 * Encodes a value as MessagePack.
 *
 * @example
 * ```ts
 * const bytes = encode({ op: "put", key: "k", value: "v" });
 * ```
 */
export function encode(value: unknown): Uint8Array {
  return msgpackEncode(value);
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
  return msgpackDecode(bytes);
}
