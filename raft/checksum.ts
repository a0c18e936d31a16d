/**
 * CRC-32C (Castagnoli), the checksum of WAL records and snapshot files. The
 * one place that names the implementation (hash-wasm's WebAssembly
 * slicing-by-8), so that a swap is a one-file change.
 *
 * @module
 */

import { createCRC32 } from "hash-wasm";

/** The reversed Castagnoli polynomial. */
const CASTAGNOLI = 0x82f63b78;

// Initialised once; every call below is synchronous.
const hasher = await createCRC32(CASTAGNOLI);
hasher.init();
// hash-wasm's saved state is a 4-byte implementation tag followed by the
// running CRC (little-endian), so a seed is loaded by patching those 4 bytes.
const seededState = hasher.save();
const seededView = new DataView(seededState.buffer, seededState.byteOffset, seededState.byteLength);
const seedOffset = seededState.byteLength - 4;

/**
 * Computes the CRC-32C of `bytes`. Pass a previous result as `seed` to
 * continue it: `crc32c(b, crc32c(a))` equals `crc32c(a ++ b)`.
 *
 * @example
 * ```ts
 * crc32c(new TextEncoder().encode("123456789")); // 0xe3069283
 * ```
 */
export function crc32c(bytes: Uint8Array, seed = 0): number {
  if (seed === 0) {
    hasher.init();
  } else {
    seededView.setUint32(seedOffset, seed >>> 0, true);
    hasher.load(seededState);
  }
  hasher.update(bytes);
  const digest = hasher.digest("binary");
  // The digest is big-endian.
  return ((digest[0]! << 24) | (digest[1]! << 16) | (digest[2]! << 8) | digest[3]!) >>> 0;
}
