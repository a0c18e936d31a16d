/**
 * The data types shared by the Raft core, its storage, its transport and the
 * node runtime. Everything here is plain data so that it survives a
 * MessagePack round trip unchanged: numbers stay below 2^53, byte strings are
 * `Uint8Array`, optional fields are omitted rather than `undefined`.
 *
 * @module
 */

/** A node's id: a positive integer below 2^53, never reused after removal. */
export type NodeId = number;

/** No node: used for "no vote" and "no known leader". */
export const NONE: NodeId = 0;

/** What an entry carries: a command for the state machine, or a membership change. */
export type EntryType = "normal" | "conf";

/** One log entry. `data` is opaque to the core except for `conf` entries. */
export interface Entry {
  index: number;
  term: number;
  type: EntryType;
  /** For `normal`: the application's command (may be empty: a leader's no-op). For `conf`: an encoded {@linkcode ConfChange}. */
  data: Uint8Array;
}

/** The state that must be durable before any message that depends on it is sent. */
export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

/** The membership of the cluster as the core sees it. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
  /** Ids that were removed; they are never accepted again. */
  removed: NodeId[];
}

/** The kinds of single-step membership change. */
export type ConfChangeType = "addVoter" | "addLearner" | "promote" | "remove";

/** A membership change, carried by a `conf` entry. */
export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque to the core: the runtime stores addresses here. */
  context?: Uint8Array;
}

/** What a snapshot covers. */
export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

/** A snapshot: its metadata and the runtime's opaque data (state machine and address book). */
export interface Snapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

/** Every message kind. `hup`, `beat`, `prop`, `readIndex`, `transferLeader`, `snapStatus` and `unreachable` may be local. */
export type MessageType =
  | "hup" // local: start an election
  | "beat" // local: leader sends heartbeats
  | "prop" // a proposal (local, or forwarded by a follower)
  | "app" // append entries
  | "appResp"
  | "vote"
  | "voteResp"
  | "preVote"
  | "preVoteResp"
  | "snap" // install snapshot
  | "heartbeat"
  | "heartbeatResp"
  | "timeoutNow" // leadership transfer: campaign now
  | "transferLeader"
  | "readIndex"
  | "readIndexResp"
  | "snapStatus" // local: the runtime reports a snapshot send's outcome (`reject` = failed)
  | "unreachable" // local: the runtime could not reach `from`
  | "removed"; // "you were removed from the cluster": sent to a removed node that still talks

/**
 * One Raft message. Fields a kind does not use are zero / false / empty so
 * that every message has the same shape.
 */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** `app`: term of the entry at `index`. `appResp` on reject: term of the follower's entry at `rejectHint`. Votes: candidate's last log term. */
  logTerm: number;
  /** `app`: index before `entries`. `appResp`: the follower's match (or rejected) index. Votes: candidate's last index. `readIndexResp`: the read index. */
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  rejectHint: number;
  snapshot?: Snapshot;
  /** Read requests and heartbeats carry the read's context. */
  context?: Uint8Array;
}

/** The role a node plays. */
export type Role = "follower" | "preCandidate" | "candidate" | "leader";

/** Volatile state that the runtime may want to show; not persisted. */
export interface SoftState {
  leader: NodeId;
  role: Role;
  /** True once this node knows it was removed from the cluster. */
  removed: boolean;
}

/** A read that became safe: once the state machine has applied `index`, the read identified by `context` may be answered. */
export interface ReadState {
  index: number;
  context: Uint8Array;
}

/**
 * One batch of work for the runtime. The runtime must, in this order:
 * 1. persist `snapshot` (if any), then `entries` (overwriting any existing
 *    entries from `entries[0].index` on), then `hardState` (if any), with an
 *    fsync;
 * 2. send `persistedMessages` (they promise what was just persisted);
 * 3. install `snapshot` into the state machine, then apply
 *    `committedEntries` in order;
 * 4. call `advance(ready)`.
 * `messages` may be sent at once, before or during the persist.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  messages: Message[];
  persistedMessages: Message[];
  readStates: ReadState[];
}

/** What a node starts from: all that its storage holds. */
export interface InitialState {
  hardState: HardState;
  /** The newest snapshot's metadata; index 0 if none. */
  snapshotMeta: SnapshotMeta;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
  /** The highest index already applied to the state machine (at least the snapshot's). */
  applied: number;
}

/** An empty membership. */
export function emptyConf(): ConfState {
  return { voters: [], learners: [], removed: [] };
}

/** A message with every field at its zero value, overridden by `fields`. */
export function message(
  fields: Partial<Message> & Pick<Message, "type" | "from" | "to">,
): Message {
  return {
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    ...fields,
  };
}
