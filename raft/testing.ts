/**
 * A deterministic, in-memory harness for tests of the pure Raft core: a
 * cluster of {@linkcode RaftCore} nodes, each with an instant "disk" (a
 * {@linkcode NodeStore}), a toy state machine (the list of applied entries),
 * and a FIFO network with drop filters and partitions. No I/O, no clock, no
 * global randomness: every node draws from its own seeded generator.
 *
 * The harness plays the runtime's part of the {@linkcode Ready} contract:
 * persist (snapshot, entries with truncation, hard state), then send
 * `persistedMessages`, then install the snapshot and apply committed entries,
 * then `advance`. `messages` are queued at once.
 *
 * @example
 * ```ts
 * const c = new Cluster({ voters: 3 });
 * c.elect(1);
 * c.propose(1, "x=1");
 * c.stabilize();
 * // c.commands(2) is ["x=1"]
 * ```
 *
 * @module
 */

import { applyConfChange, confChangeError, type CoreOptions, decodeConfChange } from "./core.ts";
import { encodeConfChange, RaftCore } from "./core.ts";
import {
  type ConfState,
  emptyConf,
  type Entry,
  type HardState,
  type InitialState,
  type Message,
  type NodeId,
  type ReadState,
  type Ready,
  type Snapshot,
} from "./types.ts";

/** Core options a test may set for every node of a cluster. */
export type TestCoreOptions = Omit<CoreOptions, "id" | "initial" | "random">;

/** mulberry32: a tiny seeded generator of numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 2 ** 32;
  };
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** The bytes of a test command. */
export function bytes(text: string): Uint8Array {
  return textEncoder.encode(text);
}

/** The text of a test command. */
export function text(data: Uint8Array): string {
  return textDecoder.decode(data);
}

/**
 * The state every node of a statically bootstrapped cluster of `voters`
 * nodes starts from: entries 1..voters add each voter, all committed in term 1.
 */
export function bootstrapState(voters: number): InitialState {
  const entries: Entry[] = [];
  for (let i = 1; i <= voters; i++) {
    entries.push({
      index: i,
      term: 1,
      type: "conf",
      data: encodeConfChange({ type: "addVoter", nodeId: i }),
    });
  }
  return {
    hardState: { term: 1, vote: 0, commit: voters },
    snapshotMeta: { index: 0, term: 0, conf: emptyConf() },
    entries,
    applied: 0,
  };
}

/**
 * A bootstrapped state (see {@linkcode bootstrapState}) followed by normal
 * entries of the given `terms` (one entry per element, data `"<index>@<term>"`),
 * with the hard state's term set to `term` (default: the last entry's term).
 */
export function stateWithLog(
  voters: number,
  terms: readonly number[],
  options: { term?: number; vote?: NodeId } = {},
): InitialState {
  const st = bootstrapState(voters);
  for (const t of terms) {
    const index = st.entries.length + 1;
    st.entries.push({ index, term: t, type: "normal", data: bytes(`${index}@${t}`) });
  }
  const lastTerm = st.entries[st.entries.length - 1]?.term ?? 1;
  st.hardState = { term: options.term ?? lastTerm, vote: options.vote ?? 0, commit: voters };
  return st;
}

/** An empty state: a node that joins an existing cluster. */
export function emptyState(): InitialState {
  return {
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshotMeta: { index: 0, term: 0, conf: emptyConf() },
    entries: [],
    applied: 0,
  };
}

/** A node's "disk": what survives a crash. Writes are instant and durable. */
export interface NodeStore {
  hardState: HardState;
  /** The newest snapshot; index 0 if none. */
  snapshot: Snapshot;
  /** Contiguous entries after the snapshot. */
  entries: Entry[];
}

/** One applied entry as the toy state machine records it. */
export interface AppliedEntry {
  index: number;
  term: number;
  type: Entry["type"];
  data: string;
}

/** A node of the test cluster. */
export interface TestNode {
  id: NodeId;
  /** Undefined while the node is crashed. */
  core: RaftCore | undefined;
  store: NodeStore;
  /** The toy state machine: every applied entry, in order (rebuilt from the snapshot on restart). */
  applied: AppliedEntry[];
  /** The membership as of the last applied entry (what a snapshot records). */
  appliedConf: ConfState;
  /** Every read state this node's Readys reported. */
  readStates: ReadState[];
  random: () => number;
}

/** A message the harness saw leave a node, and from which list of the Ready. */
export interface SentMessage {
  message: Message;
  via: "messages" | "persistedMessages";
}

/** Options of a {@linkcode Cluster}. */
export interface ClusterOptions {
  /** Nodes 1..voters, bootstrapped with static membership. Default 3. */
  voters?: number;
  /** Seeds every node's generator (node i draws from seed * 1000 + i). Default 1. */
  seed?: number;
  /** Core options for every node (default: the core's own defaults). */
  core?: TestCoreOptions;
  /** Per-node initial state, overriding the bootstrap state. */
  initial?: (id: NodeId) => InitialState | undefined;
  /** Most rounds {@linkcode Cluster.stabilize} runs before it gives up. Default 10000. */
  roundsMax?: number;
}

/** A deterministic in-memory cluster of Raft cores. */
export class Cluster {
  readonly nodes = new Map<NodeId, TestNode>();
  /** Every message any node sent, in order (tests count and inspect them). */
  readonly sent: SentMessage[] = [];
  /** Every Ready any node produced, in order. */
  readonly readies: { id: NodeId; ready: Ready }[] = [];
  #queue: Message[] = [];
  #drops: ((m: Message) => boolean)[] = [];
  #cuts = new Set<string>();
  readonly #seed: number;
  readonly #coreOptions: TestCoreOptions;
  readonly #roundsMax: number;

  constructor(options: ClusterOptions = {}) {
    const voters = options.voters ?? 3;
    this.#seed = options.seed ?? 1;
    this.#coreOptions = options.core ?? {};
    this.#roundsMax = options.roundsMax ?? 10000;
    for (let id = 1; id <= voters; id++) {
      this.addNode(id, options.initial?.(id) ?? bootstrapState(voters));
    }
  }

  // ------------------------------------------------------------ nodes

  /** Starts a node from `initial` (default: empty, as a node joining the cluster). */
  addNode(id: NodeId, initial: InitialState = emptyState()): TestNode {
    if (this.nodes.has(id)) throw new Error(`Cannot add node ${id}: it exists`);
    const snapshot: Snapshot = {
      meta: structuredClone(initial.snapshotMeta),
      data: encodeApplied([]),
    };
    const node: TestNode = {
      id,
      core: undefined,
      store: {
        hardState: { ...initial.hardState },
        snapshot,
        entries: initial.entries.map((e) => ({ ...e })),
      },
      applied: [],
      appliedConf: structuredClone(initial.snapshotMeta.conf),
      readStates: [],
      random: seededRandom(this.#seed * 1000 + id),
    };
    this.nodes.set(id, node);
    this.#start(node, initial.applied);
    return node;
  }

  #start(node: TestNode, applied: number): void {
    node.core = new RaftCore({
      ...this.#coreOptions,
      id: node.id,
      random: node.random,
      initial: {
        hardState: { ...node.store.hardState },
        snapshotMeta: node.store.snapshot.meta,
        entries: [...node.store.entries],
        applied,
      },
    });
  }

  /** The node with this id; throws if there is none. */
  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`Cannot find node ${id}`);
    return n;
  }

  /** The core of a running node; throws if it is crashed. */
  core(id: NodeId): RaftCore {
    const c = this.node(id).core;
    if (!c) throw new Error(`Cannot use node ${id}: it is crashed`);
    return c;
  }

  /** Stops a node: its memory is lost, its store stays; messages to it are dropped. */
  crash(id: NodeId): void {
    this.node(id).core = undefined;
  }

  /**
   * Restarts a node from its store: the core from the hard state, snapshot
   * and entries; the state machine from the snapshot (entries after it are
   * applied again as they commit).
   */
  restart(id: NodeId): RaftCore {
    const node = this.node(id);
    if (node.core) this.crash(id);
    node.applied = decodeApplied(node.store.snapshot.data);
    node.appliedConf = structuredClone(node.store.snapshot.meta.conf);
    this.#start(node, node.store.snapshot.meta.index);
    return node.core!;
  }

  /** The ids of running nodes, ascending. */
  liveIds(): NodeId[] {
    return [...this.nodes.values()].filter((n) => n.core).map((n) => n.id).sort((a, b) => a - b);
  }

  // ------------------------------------------------------------ network

  /** Drops every message for which `predicate` is true, until {@linkcode heal}. Returns a remover. */
  drop(predicate: (m: Message) => boolean): () => void {
    this.#drops.push(predicate);
    return () => {
      this.#drops = this.#drops.filter((p) => p !== predicate);
    };
  }

  /** Cuts every link between `id` and any other node (both directions). */
  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) if (other !== id) this.cut(id, other);
  }

  /** Cuts the link between `a` and `b` in both directions. */
  cut(a: NodeId, b: NodeId): void {
    this.#cuts.add(`${a}>${b}`);
    this.#cuts.add(`${b}>${a}`);
  }

  /** Splits the nodes into groups that cannot talk to each other. */
  partition(...groups: NodeId[][]): void {
    for (let i = 0; i < groups.length; i++) {
      for (let j = i + 1; j < groups.length; j++) {
        for (const a of groups[i]!) for (const b of groups[j]!) this.cut(a, b);
      }
    }
  }

  /** Restores every link and removes every drop filter. */
  heal(): void {
    this.#cuts.clear();
    this.#drops = [];
  }

  #dropped(m: Message): boolean {
    if (this.#cuts.has(`${m.from}>${m.to}`)) return true;
    return this.#drops.some((p) => p(m));
  }

  /** Messages queued and not yet delivered. */
  inFlight(): readonly Message[] {
    return this.#queue;
  }

  /** Sent messages of `type` (optionally from / to a node) since index `since` of {@linkcode sent}. */
  sentOf(
    type: Message["type"],
    filter: { from?: NodeId; to?: NodeId; since?: number } = {},
  ): Message[] {
    return this.sent.slice(filter.since ?? 0).map((s) => s.message).filter((m) =>
      m.type === type && (filter.from === undefined || m.from === filter.from) &&
      (filter.to === undefined || m.to === filter.to)
    );
  }

  /**
   * Delivers one message to its node now (a test may craft messages). A
   * `snap` is filled with the sender's newest stored snapshot, and the
   * sender is told whether it got through.
   */
  deliver(m: Message): void {
    const sender = this.nodes.get(m.from);
    const target = this.nodes.get(m.to)?.core;
    const lost = target === undefined || this.#dropped(m);
    if (m.type === "snap" && sender?.core) {
      if (!lost) {
        m = { ...m, snapshot: structuredClone(sender.store.snapshot) };
        target.step(m);
      }
      sender.core.reportSnapshot(m.to, !lost);
      return;
    }
    if (!lost) target.step(m);
  }

  // ------------------------------------------------------------ readys

  /** Processes one Ready of node `id` as the runtime would; false if it had none. */
  processReady(id: NodeId): boolean {
    const node = this.node(id);
    const core = node.core;
    if (!core || !core.hasReady()) return false;
    const rd = core.ready();
    this.readies.push({ id, ready: rd });
    for (const m of rd.messages) this.#send(m, "messages");
    // 1. Persist: snapshot, then entries (truncating a conflicting suffix), then hard state.
    const store = node.store;
    if (rd.snapshot) {
      store.snapshot = structuredClone(rd.snapshot);
      store.entries = [];
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0]!.index;
      const base = store.snapshot.meta.index;
      if (first > base + store.entries.length + 1) {
        throw new Error(
          `Cannot persist entries at ${first} on node ${id}: the store ends at ${
            base + store.entries.length
          }`,
        );
      }
      store.entries = store.entries.slice(0, Math.max(0, first - base - 1));
      store.entries.push(...rd.entries.map((e) => ({ ...e })));
    }
    if (rd.hardState) store.hardState = { ...rd.hardState };
    // 2. Messages that promise what was just persisted.
    for (const m of rd.persistedMessages) this.#send(m, "persistedMessages");
    // 3. Install the snapshot, then apply committed entries in order.
    if (rd.snapshot) {
      node.applied = decodeApplied(rd.snapshot.data);
      node.appliedConf = structuredClone(rd.snapshot.meta.conf);
    }
    for (const e of rd.committedEntries) {
      const last = node.applied[node.applied.length - 1];
      if (last && e.index !== last.index + 1) {
        throw new Error(`Node ${id} applied ${e.index} after ${last.index}: out of order`);
      }
      node.applied.push({ index: e.index, term: e.term, type: e.type, data: text(e.data) });
      if (e.type === "conf") {
        const cc = decodeConfChange(e.data);
        if (confChangeError(node.appliedConf, cc) === undefined) {
          node.appliedConf = applyConfChange(node.appliedConf, cc);
        }
      }
    }
    node.readStates.push(...rd.readStates);
    core.advance(rd);
    return true;
  }

  #send(m: Message, via: SentMessage["via"]): void {
    this.sent.push({ message: m, via });
    this.#queue.push(m);
  }

  /**
   * Processes Readys and delivers messages until nothing is left to do
   * (no tick happens). When idle, a leader's untold commit index is flushed
   * with {@linkcode RaftCore.flushCommit}, as the runtime does, unless
   * `flushCommit` is false. Throws if that takes more than `roundsMax` rounds.
   */
  stabilize(options: { flushCommit?: boolean } = {}): void {
    const flush = options.flushCommit ?? true;
    for (let round = 0; round < this.#roundsMax; round++) {
      let busy = false;
      for (const id of this.liveIds()) while (this.processReady(id)) busy = true;
      const batch = this.#queue;
      this.#queue = [];
      for (const m of batch) this.deliver(m);
      if (busy || batch.length > 0) continue;
      if (!flush) return;
      // Idle: a leader tells its followers a commit index no append carried,
      // as the runtime does when nothing else goes out for a moment.
      let flushed = false;
      for (const id of this.liveIds()) if (this.core(id).flushCommit()) flushed = true;
      if (!flushed) return;
    }
    throw new Error(`Cannot stabilize the cluster within ${this.#roundsMax} rounds`);
  }

  // ------------------------------------------------------------ time

  /** Ticks node `id` `n` times, stabilizing after each tick (messages are instant). */
  tick(id: NodeId, n = 1): void {
    for (let i = 0; i < n; i++) {
      this.core(id).tick();
      this.stabilize();
    }
  }

  /** Ticks every running node `n` times, stabilizing after each round of ticks. */
  tickAll(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const id of this.liveIds()) this.core(id).tick();
      this.stabilize();
    }
  }

  // ------------------------------------------------------------ high-level helpers

  /** Makes node `id` campaign and runs the election; throws unless it won. */
  elect(id: NodeId): void {
    this.core(id).campaign();
    this.stabilize();
    const core = this.core(id);
    if (core.role !== "leader") {
      throw new Error(`Cannot elect node ${id}: it is ${core.role} in term ${core.term}`);
    }
  }

  /** The node that every running node agrees leads, or undefined. */
  leader(): NodeId | undefined {
    const leaders = this.liveIds().filter((id) => this.core(id).role === "leader");
    if (leaders.length !== 1) return undefined;
    return leaders[0];
  }

  /** Proposes command `data` on node `id`; the core's answer (false = refused). */
  propose(id: NodeId, data: string): boolean {
    return this.core(id).propose(bytes(data));
  }

  /** The commands (non-empty normal entries) node `id` has applied, in order. */
  commands(id: NodeId): string[] {
    return this.node(id).applied.filter((e) => e.type === "normal" && e.data !== "").map((e) =>
      e.data
    );
  }

  /** The terms of node `id`'s in-memory log, from its first index on. */
  logTerms(id: NodeId): number[] {
    const core = this.core(id);
    return core.entriesFrom(core.status().firstIndex).map((e) => e.term);
  }

  /**
   * Takes a snapshot on node `id` at its applied index (or `index` ≤ it),
   * stores it, and lets the core drop entries through that index.
   */
  compact(id: NodeId, index?: number): Snapshot {
    const node = this.node(id);
    const core = this.core(id);
    const at = index ?? core.status().applied;
    const last = node.applied[node.applied.length - 1];
    if (at !== (last?.index ?? node.store.snapshot.meta.index)) {
      throw new RangeError(`Cannot snapshot node ${id} at ${at}: the harness snapshots at applied`);
    }
    const term = core.entriesFrom(at).find((e) => e.index === at)?.term ??
      (at === node.store.snapshot.meta.index ? node.store.snapshot.meta.term : undefined);
    if (term === undefined) throw new RangeError(`Cannot snapshot node ${id} at ${at}`);
    const snapshot: Snapshot = {
      meta: { index: at, term, conf: structuredClone(node.appliedConf) },
      data: encodeApplied(node.applied),
    };
    node.store.snapshot = snapshot;
    node.store.entries = node.store.entries.filter((e) => e.index > at);
    core.compact(at, snapshot.meta);
    return snapshot;
  }
}

function encodeApplied(applied: AppliedEntry[]): Uint8Array {
  return bytes(JSON.stringify(applied));
}

function decodeApplied(data: Uint8Array): AppliedEntry[] {
  return data.byteLength === 0 ? [] : JSON.parse(text(data)) as AppliedEntry[];
}
