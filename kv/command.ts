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
