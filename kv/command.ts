/**
 * The commands of the replicated key-value state machine and their
 * MessagePack encoding. A command is what a `normal` log entry carries.
 *
 * @module
 */

import { decode, encode } from "../raft/msgpack.ts";

/**
 * An optional tag the runtime puts on a proposal to match the applied entry to
 * the request waiting for it. The state machine ignores it.
 */
export type KvCommandId = number | string;

/** Set `key` to `value`. */
export interface KvPutCommand {
  op: "put";
  key: string;
  value: string;
  id?: KvCommandId;
}

/** Remove `key` (a no-op if it is absent). */
export interface KvDeleteCommand {
  op: "delete";
  key: string;
  id?: KvCommandId;
}

/** A command of the key-value state machine. */
export type KvCommand = KvPutCommand | KvDeleteCommand;

/**
 * Encodes a command as MessagePack. Only the known fields are written, so the
 * bytes do not depend on extra properties of `cmd`.
 *
 * @example
 * ```ts
 * const data = encodeCommand({ op: "put", key: "k", value: "v", id: 7 });
 * ```
 */
export function encodeCommand(cmd: KvCommand): Uint8Array {
  const problem = checkCommand(cmd) ?? checkText(cmd);
  if (problem !== undefined) throw new TypeError(`Cannot encode the command: ${problem}`);
  if (cmd.id === undefined || typeof cmd.id === "string") return encodeDirect(cmd);
  return encodeCommandGeneric(cmd);
}

/**
 * {@linkcode encodeCommand} through the generic MessagePack encoder alone,
 * without the checks: the reference whose bytes the direct path must match
 * (exported for its tests).
 */
export function encodeCommandGeneric(cmd: KvCommand): Uint8Array {
  const out: Record<string, unknown> = { op: cmd.op, key: cmd.key };
  if (cmd.op === "put") out.value = cmd.value;
  if (cmd.id !== undefined) out.id = cmd.id;
  return encode(out);
}

/**
 * Decodes a command. Throws a `SyntaxError` if `bytes` is not one MessagePack
 * value, a `TypeError` if the value is not a valid command. Unknown extra
 * fields are ignored (and dropped).
 *
 * @example
 * ```ts
 * const cmd = decodeCommand(encodeCommand({ op: "delete", key: "k" }));
 * // { op: "delete", key: "k" }
 * ```
 */
export function decodeCommand(bytes: Uint8Array): KvCommand {
  return decodeDirect(bytes) ?? decodeCommandGeneric(bytes);
}

/**
 * {@linkcode decodeCommand} through the generic MessagePack decoder alone:
 * the reference the direct path must agree with (exported for its tests).
 */
export function decodeCommandGeneric(bytes: Uint8Array): KvCommand {
  let value: unknown;
  try {
    value = decode(bytes);
  } catch (error) {
    throw new SyntaxError(
      `Cannot decode the command: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const problem = checkCommand(value);
  if (problem !== undefined) throw new TypeError(`Cannot decode the command: ${problem}`);
  const cmd = value as KvCommand;
  const out: KvCommand = cmd.op === "put"
    ? { op: "put", key: cmd.key, value: cmd.value }
    : { op: "delete", key: cmd.key };
  if (cmd.id !== undefined) out.id = cmd.id;
  return out;
}

/**
 * Keys and values must be well-formed UTF-16 (no lone surrogates): UTF-8
 * cannot carry them, so the bytes would decode to a different string, and
 * a node that applies its own command without decoding it would disagree
 * with the others.
 */
function checkText(cmd: KvCommand): string | undefined {
  if (!cmd.key.isWellFormed()) return "the key is not valid Unicode (a lone surrogate)";
  if (cmd.op === "put" && !cmd.value.isWellFormed()) {
    return "the value is not valid Unicode (a lone surrogate)";
  }
  return undefined;
}

/** Returns why `value` is not a valid command, or `undefined` if it is one. */
function checkCommand(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "not a map";
  }
  const { op, key, value: v, id } = value as Record<string, unknown>;
  if (op !== "put" && op !== "delete") return `unknown op ${JSON.stringify(op) ?? String(op)}`;
  if (typeof key !== "string" || key === "") return "key must be a non-empty string";
  if (op === "put" && typeof v !== "string") return "value must be a string";
  if (id !== undefined && typeof id !== "number" && typeof id !== "string") {
    return "id must be a number or a string";
  }
  return undefined;
}

// ---- the common shapes without the generic codec ----------------------------
//
// Every write passes through here on every node, so the usual command (string
// key, value and id) is written and read directly. The bytes are exactly what
// the generic MessagePack encoder writes for the same object; anything else
// (a numeric id, a field in another order or form, text that is not UTF-8)
// goes through the generic codec, so the results never differ.

const textEncoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of the key or value (the generic
// decoder drops it from strings of 200 bytes or more; this path must not).
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
// fixstr field names, as the generic encoder writes them.
const OP = [0xa2, 0x6f, 0x70]; // "op"
const KEY = [0xa3, 0x6b, 0x65, 0x79]; // "key"
const VALUE = [0xa5, 0x76, 0x61, 0x6c, 0x75, 0x65]; // "value"
const ID = [0xa2, 0x69, 0x64]; // "id"
const PUT = [0xa3, 0x70, 0x75, 0x74]; // "put"
const DELETE = [0xa6, 0x64, 0x65, 0x6c, 0x65, 0x74, 0x65]; // "delete"

let scratch = new Uint8Array(4096);

function encodeDirect(cmd: KvCommand): Uint8Array {
  const value = cmd.op === "put" ? cmd.value : undefined;
  const id = cmd.id as string | undefined;
  // UTF-8 takes at most 3 bytes per UTF-16 code unit. Besides the strings:
  // the map header, names and op (21 bytes at most, a put with an id), and 5
  // bytes for each of the 3 strings' headers (putString encodes after room
  // for the largest and moves back over a shorter one).
  const max = 21 + 3 * 5 + 3 * (cmd.key.length + (value?.length ?? 0) + (id?.length ?? 0));
  if (scratch.length < max) scratch = new Uint8Array(Math.max(max, 2 * scratch.length));
  const out = scratch;
  out[0] = 0x82 + (value === undefined ? 0 : 1) + (id === undefined ? 0 : 1); // fixmap
  let at = 1;
  at = put(out, at, OP);
  at = put(out, at, value === undefined ? DELETE : PUT);
  at = put(out, at, KEY);
  at = putString(out, at, cmd.key);
  if (value !== undefined) {
    at = put(out, at, VALUE);
    at = putString(out, at, value);
  }
  if (id !== undefined) {
    at = put(out, at, ID);
    at = putString(out, at, id);
  }
  return out.slice(0, at);
}

function put(out: Uint8Array, at: number, bytes: number[]): number {
  for (let i = 0; i < bytes.length; i++) out[at + i] = bytes[i]!;
  return at + bytes.length;
}

/** Writes `text` as a MessagePack str (the smallest header that fits, as the generic encoder does). */
function putString(out: Uint8Array, at: number, text: string): number {
  // Short ASCII (most keys and many values) without a call into the runtime.
  const n = text.length;
  if (n < 0x100) {
    const header = n < 32 ? 1 : 2;
    let i = 0;
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) break;
      out[at + header + i] = c;
    }
    if (i === n) {
      if (header === 1) {
        out[at] = 0xa0 + n;
      } else {
        out[at] = 0xd9;
        out[at + 1] = n;
      }
      return at + header + n;
    }
  }
  // Encode after room for the largest header, then move the bytes back if the header is smaller.
  const { written } = textEncoder.encodeInto(text, out.subarray(at + 5));
  let header: number;
  if (written < 32) {
    out[at] = 0xa0 + written;
    header = 1;
  } else if (written < 0x100) {
    out[at] = 0xd9;
    out[at + 1] = written;
    header = 2;
  } else if (written < 0x10000) {
    out[at] = 0xda;
    out[at + 1] = written >>> 8;
    out[at + 2] = written & 0xff;
    header = 3;
  } else {
    out[at] = 0xdb;
    out[at + 1] = written >>> 24;
    out[at + 2] = (written >>> 16) & 0xff;
    out[at + 3] = (written >>> 8) & 0xff;
    out[at + 4] = written & 0xff;
    header = 5;
  }
  if (header < 5) out.copyWithin(at + header, at + 5, at + 5 + written);
  return at + header + written;
}

/**
 * The command in `bytes` if it is a map of fixstr names to str values (and
 * a numeric id) that decodes to a valid command; otherwise `undefined` (the
 * generic path decides, and reports what is wrong).
 */
function decodeDirect(bytes: Uint8Array): KvCommand | undefined {
  const head = bytes[0];
  if (head === undefined || (head & 0xf0) !== 0x80) return undefined;
  let op: string | undefined;
  let key: string | undefined;
  let value: string | undefined;
  let id: KvCommandId | undefined;
  let at = 1;
  for (let n = head & 0x0f; n > 0; n--) {
    const name = bytes[at]!;
    let field: 0 | 1 | 2 | 3;
    if (matches(bytes, at, OP)) field = 0;
    else if (matches(bytes, at, KEY)) field = 1;
    else if (matches(bytes, at, VALUE)) field = 2;
    else if (matches(bytes, at, ID)) field = 3;
    else return undefined;
    at += 1 + (name & 0x1f);
    const tag = bytes[at];
    if (tag === undefined) return undefined;
    const str = (tag & 0xe0) === 0xa0 || tag === 0xd9 || tag === 0xda || tag === 0xdb;
    if (field === 3 && !str) {
      // A numeric id, read as the generic decoder reads it.
      if (id !== undefined) return undefined;
      const number = readNumber(bytes, at);
      if (number === undefined) return undefined;
      id = number.value;
      at = number.end;
      continue;
    }
    // A str value: its length and where its bytes start.
    let length: number;
    if ((tag & 0xe0) === 0xa0) {
      length = tag & 0x1f;
      at += 1;
    } else if (tag === 0xd9) {
      length = bytes[at + 1]!;
      at += 2;
    } else if (tag === 0xda) {
      length = (bytes[at + 1]! << 8) | bytes[at + 2]!;
      at += 3;
    } else if (tag === 0xdb) {
      length = ((bytes[at + 1]! << 24) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 8) |
        bytes[at + 4]!) >>> 0;
      at += 5;
    } else {
      return undefined;
    }
    if (at + length > bytes.length) return undefined;
    const text = decodeText(bytes.subarray(at, at + length));
    if (text === undefined) return undefined;
    at += length;
    // A repeated name: the generic decoder keeps the last; let it.
    if (field === 0) {
      if (op !== undefined) return undefined;
      op = text;
    } else if (field === 1) {
      if (key !== undefined) return undefined;
      key = text;
    } else if (field === 2) {
      if (value !== undefined) return undefined;
      value = text;
    } else {
      if (id !== undefined) return undefined;
      id = text;
    }
  }
  if (at !== bytes.length || key === undefined || key === "") return undefined;
  let cmd: KvCommand;
  if (op === "put" && value !== undefined) cmd = { op: "put", key, value };
  else if (op === "delete") cmd = { op: "delete", key };
  else return undefined;
  if (id !== undefined) cmd.id = id;
  return cmd;
}

/**
 * The MessagePack number at `bytes[at]` and where it ends, as the generic
 * decoder gives it (64-bit integers as high * 2^32 + low); `undefined` if
 * it is not a number or is cut short.
 */
function readNumber(bytes: Uint8Array, at: number): { value: number; end: number } | undefined {
  const tag = bytes[at]!;
  const size = tag <= 0x7f || tag >= 0xe0 ? 0 : ({
    0xcc: 1,
    0xcd: 2,
    0xce: 4,
    0xcf: 8,
    0xd0: 1,
    0xd1: 2,
    0xd2: 4,
    0xd3: 8,
    0xca: 4,
    0xcb: 8,
  } as Record<number, number>)[tag];
  if (size === undefined || at + 1 + size > bytes.length) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset + at + 1, size);
  let value: number;
  if (size === 0) value = tag <= 0x7f ? tag : tag - 0x100;
  else if (tag === 0xcc) value = view.getUint8(0);
  else if (tag === 0xcd) value = view.getUint16(0);
  else if (tag === 0xce) value = view.getUint32(0);
  else if (tag === 0xcf) value = view.getUint32(0) * 2 ** 32 + view.getUint32(4);
  else if (tag === 0xd0) value = view.getInt8(0);
  else if (tag === 0xd1) value = view.getInt16(0);
  else if (tag === 0xd2) value = view.getInt32(0);
  else if (tag === 0xd3) value = view.getInt32(0) * 2 ** 32 + view.getUint32(4);
  else if (tag === 0xca) value = view.getFloat32(0);
  else value = view.getFloat64(0);
  return { value, end: at + 1 + size };
}

/** UTF-8 to text, or `undefined` if it is not valid UTF-8. */
function decodeText(bytes: Uint8Array): string | undefined {
  // Short ASCII (most keys) without a call into the runtime: 5x faster. Not
  // for longer text: apply() copies its arguments into a list first, which is
  // more garbage than the string (and no faster than the decoder by then).
  if (bytes.length <= 32) {
    let ascii = true;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

function matches(bytes: Uint8Array, at: number, name: number[]): boolean {
  for (let i = 0; i < name.length; i++) if (bytes[at + i] !== name[i]) return false;
  return true;
}
