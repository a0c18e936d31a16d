/**
 * The simulator's replicated state machine: a small key-value map in which
 * every key remembers the log index that last wrote it (so reads can be
 * checked against the order of writes), plus a running digest of every
 * applied entry (so two nodes' states can be compared in O(1) at any index)
 * and the membership as the applied conf entries define it (by the core's
 * rules).
 *
 * @module
 */

import { applyConfChange, confChangeError, decodeConfChange } from "../../raft/core.ts";
import { decode, encode } from "../../raft/msgpack.ts";
import type { ConfState, Entry } from "../../raft/types.ts";
import { emptyConf } from "../../raft/types.ts";

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** A value and the index of the entry that wrote it. */
export interface Versioned {
  value: string;
  index: number;
}

/** FNV-1a over bytes, continuing from `seed`. */
export function fnv1a(bytes: Uint8Array, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i] as number;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Hashes an entry's type and data (not index or term). */
export function entryHash(e: Entry): number {
  return fnv1a(e.data, e.type === "conf" ? 0x2c9277b5 : 0x811c9dc5);
}

/** Encodes a put command. Values are unique per run. */
export function encodePut(key: string, value: string): Uint8Array {
  return textEncoder.encode(`${key}=${value}`);
}

/** Decodes a put command, or undefined for a no-op or foreign data. */
export function decodePut(data: Uint8Array): { key: string; value: string } | undefined {
  if (data.length === 0) return undefined;
  const text = textDecoder.decode(data);
  const eq = text.indexOf("=");
  if (eq < 0) return undefined;
  return { key: text.slice(0, eq), value: text.slice(eq + 1) };
}

interface SnapshotBody {
  values: [string, string, number][];
  applied: number;
  appliedTerm: number;
  digest: number;
  conf: ConfState;
}

/** The state machine of one node. */
export class KvMachine {
  values = new Map<string, Versioned>();
  applied = 0;
  appliedTerm = 0;
  digest = 0;
  conf: ConfState = emptyConf();

  /** Applies one committed entry; the caller checks it is the next index. */
  apply(e: Entry): void {
    if (e.type === "normal") {
      const put = decodePut(e.data);
      if (put !== undefined) this.values.set(put.key, { value: put.value, index: e.index });
    } else {
      // The core's own rules, so that snapshot metadata carries the membership
      // the core would compute at this index (an invalid change is a no-op).
      const cc = decodeConfChange(e.data);
      if (confChangeError(this.conf, cc) === undefined) this.conf = applyConfChange(this.conf, cc);
    }
    this.applied = e.index;
    this.appliedTerm = e.term;
    this.digest = (Math.imul(this.digest ^ entryHash(e), 0x01000193) + e.term) >>> 0;
  }

  /** Serialises the whole state. */
  snapshot(): Uint8Array {
    const body: SnapshotBody = {
      values: [...this.values].map(([k, v]) => [k, v.value, v.index]),
      applied: this.applied,
      appliedTerm: this.appliedTerm,
      digest: this.digest,
      conf: this.conf,
    };
    return encode(body);
  }

  /** Rebuilds a machine from {@linkcode KvMachine.snapshot} output. */
  static restore(data: Uint8Array): KvMachine {
    const body = decode(data) as SnapshotBody;
    const kv = new KvMachine();
    for (const [k, value, index] of body.values) kv.values.set(k, { value, index });
    kv.applied = body.applied;
    kv.appliedTerm = body.appliedTerm;
    kv.digest = body.digest;
    kv.conf = body.conf;
    return kv;
  }
}
