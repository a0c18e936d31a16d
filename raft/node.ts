/**
 * The node runtime: drives the pure core with real timers, durable storage,
 * the TCP transport and the key-value state machine, and serves the
 * requests the HTTP layer makes (`KvService`).
 *
 * Ordering (thesis §3.8, DESIGN.md): a Ready's snapshot, entries and hard
 * state are fsynced before its `persistedMessages` go out; committed entries
 * are applied in order, exactly once per process (a restart rebuilds the
 * state machine from the newest snapshot and re-applies the log after it).
 * Messages that depend on nothing durable (a leader's appends and
 * heartbeats) are sent at once, also while a persist is in flight, so a busy
 * disk does not cause elections.
 *
 * @module
 */

import { applyConfChange, confChangeError, decodeConfChange, RaftCore } from "./core.ts";
import type { CoreStatus } from "./core.ts";
import { FileStorage } from "./file_storage.ts";
import type { Identity, LoadedState, LogStorage } from "./storage.ts";
import { TcpTransport } from "./transport.ts";
import {
  type ConfChange,
  type ConfState,
  emptyConf,
  type Entry,
  type HardState,
  type InitialState,
  type Message,
  type NodeId,
  NONE,
  type ReadState,
  type Ready,
  type Snapshot,
  type SnapshotMeta,
} from "./types.ts";
import {
  NotLeaderError,
  OutcomeUnknownError,
  StoppedError,
  UnavailableError,
  UnknownMemberError,
} from "./errors.ts";
import { decode, encode } from "./msgpack.ts";
import { setImmediate } from "node:timers";
import { KvStore } from "../kv/store.ts";
import type { KvService, Member } from "../http/app.ts";
import { encodeCommand, type KvCommand } from "../kv/command.ts";

/** Options of {@linkcode RaftNode.open}. */
export interface NodeOptions {
  stateDir: string;
  /** Where the peer transport listens ("host:port" or ":port"). */
  raftListen: string;
  /** The raft address peers dial; default derived from the bound listener. */
  raftAdvertise?: string;
  /** The HTTP address other nodes and users reach this node's API at. */
  apiAdvertise: string;
  /** A member's raft address to join through, when the state directory is empty. */
  join?: string;
  tickIntervalMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  /** Take a snapshot after this many applied entries. Default 100000 (etcd's default snapshot count). */
  snapshotEntries?: number;
  /** Take a snapshot after this many bytes of applied commands, whatever their count. Default 256 MiB. */
  snapshotBytes?: number;
  /**
   * Besides `snapshotEntries`, wait until the commands applied since the
   * last snapshot add up to this fraction of its size. A snapshot costs time
   * in proportion to the state; this keeps its cost per write the same
   * however large the state grows, and bounds what a restart replays to this
   * fraction of a snapshot's worth of log. Default 0.5; 0 turns it off.
   */
  snapshotLogRatio?: number;
  /**
   * The pace at which a snapshot the node takes is written, in bytes per
   * second (see `FileStorageOptions.snapshotBytesPerSecond`). Default 64 MiB/s;
   * `Infinity` for no pacing.
   */
  snapshotBytesPerSecond?: number;
  /** Entries kept in the log behind a snapshot for slow followers. Default 5000. */
  catchUpEntries?: number;
  /** How long a join keeps retrying before the node gives up. Default 60 s. */
  joinTimeoutMs?: number;
  /** A storage to use instead of the state directory's (tests). */
  storage?: LogStorage;
  log?: (message: string, fields: Record<string, unknown>) => void;
}

/** What the address book holds for a member (current or removed). */
interface MemberAddr {
  addr: string;
  api: string;
  removed: boolean;
}

/** The context of a membership-change entry. */
interface ConfContext {
  addr: string;
  api: string;
  clusterId?: string;
}

/** The runtime's snapshot payload around the state machine's bytes. */
interface SnapshotPayload {
  v: 1;
  clusterId: string;
  members: [NodeId, string, string, boolean][];
  kv: Uint8Array;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

/**
 * A write waiting to be applied. One object (no closures) per write: it is
 * its own abort listener, and leaves `pending` when its deadline passes.
 */
class ProposalWaiter implements Waiter<boolean> {
  readonly promise: Promise<boolean>;
  readonly #id: string;
  readonly #signal: AbortSignal;
  readonly #pending: Map<string, Waiter<boolean>>;
  readonly #resolve: (value: boolean) => void;
  readonly #reject: (error: Error) => void;

  constructor(id: string, signal: AbortSignal, pending: Map<string, Waiter<boolean>>) {
    const { promise, resolve, reject } = Promise.withResolvers<boolean>();
    this.promise = promise;
    this.#id = id;
    this.#signal = signal;
    this.#pending = pending;
    this.#resolve = resolve;
    this.#reject = reject;
    signal.addEventListener("abort", this, ONCE);
  }

  resolve(value: boolean): void {
    this.#signal.removeEventListener("abort", this);
    this.#resolve(value);
  }

  reject(error: Error): void {
    this.#signal.removeEventListener("abort", this);
    this.#reject(error);
  }

  /** The request's deadline passed. */
  handleEvent(): void {
    this.#pending.delete(this.#id);
    this.#reject(
      new OutcomeUnknownError(
        "Cannot confirm the write in time: it may still be applied; retry to be sure",
      ),
    );
  }
}

const ONCE = { once: true } as const;

interface ReadWaiter extends Waiter<void> {
  signal: AbortSignal;
}

const SNAPSHOT_PAYLOAD_VERSION = 1;
const PROPOSALS_PENDING_MAX = 65536;
const READS_PENDING_MAX = 65536;
/** How long a new commit index may wait for an append to carry it (see #armCommitFlush). */
const COMMIT_FLUSH_MS = 2;

/** What a join request is answered with. */
interface JoinAnswer {
  nodeId: NodeId;
  clusterId: string;
  /** Current members, so the new node can answer them before it has replayed the log. */
  members: [NodeId, string, string][];
}

/** Why the node stopped. */
export interface StopReason {
  reason: "closed" | "removed" | "failed";
  error?: Error;
}

/** One Raft node with its state machine. */
export class RaftNode implements KvService, AsyncDisposable {
  readonly id: NodeId;
  readonly clusterId: string;
  readonly raftAddr: string;
  readonly apiAddr: string;
  #core: RaftCore;
  #storage: LogStorage;
  #transport: TcpTransport;
  #kv: KvStore;
  #members: Map<NodeId, MemberAddr>;
  /** Membership as of the applied index (the core's is as of the commit index). */
  #appliedConf: ConfState;
  #appliedIndex: number;
  #appliedTerm: number;
  #log: (message: string, fields: Record<string, unknown>) => void;
  #options: Required<
    Pick<
      NodeOptions,
      "tickIntervalMs" | "snapshotEntries" | "snapshotBytes" | "snapshotLogRatio" | "catchUpEntries"
    >
  >;

  #ticker: ReturnType<typeof setInterval> | undefined;
  /** Tells the followers a commit index that no append or heartbeat carried in time. */
  #commitFlushTimer: ReturnType<typeof setTimeout> | undefined;
  /** The newest hard state not yet written (only its commit index changed). */
  #unsavedHardState: HardState | undefined;
  #savedTerm: number;
  #savedVote: NodeId;
  #scheduled = false;
  #persisting = false;
  #stopping = false;
  #stopped = false;
  #stop!: (r: StopReason) => void;
  /** Resolves once the node has stopped, with why. */
  readonly stopped: Promise<StopReason>;

  // Proposals waiting to be applied, by command id.
  #incarnation = crypto.randomUUID().slice(0, 8);
  #seq = 0;
  #proposals = new Map<string, Waiter<boolean>>();
  /** Commands proposed here, by their encoded bytes (the same object reaches #apply on a leader). */
  #proposedCommands = new WeakMap<Uint8Array, KvCommand>();
  #proposalQueue: { id: string; data: Uint8Array }[] = [];
  #confWaiters = new Map<string, Waiter<void>[]>();
  // Linearizable reads: a batch waits for one ReadIndex round, then for apply.
  #readsQueued: ReadWaiter[] = [];
  #readRound: { ctx: string; waiters: ReadWaiter[]; startedTicks: number } | undefined;
  #readsApplying: { index: number; waiters: ReadWaiter[] }[] = [];
  #ticks = 0;
  #leaderWaiters: Waiter<void>[] = [];
  #snapshotting = false;
  /** A snapshot from the leader is being loaded into the state machine. */
  #installing = false;
  /** Command bytes applied since the last snapshot (a log of large values grows by bytes). */
  #bytesSinceSnapshot = 0;
  #lastSnapshotIndex: number;
  /** The size of the last snapshot taken, installed or loaded (0: none). */
  #lastSnapshotBytes: number;
  #promoting = false;
  #membershipLock: Promise<unknown> = Promise.resolve();

  private constructor(
    init: {
      identity: Identity;
      raftAddr: string;
      apiAddr: string;
      initial: InitialState;
      kv: KvStore;
      snapshotBytes: number;
      members: Map<NodeId, MemberAddr>;
      storage: LogStorage;
      transport: TcpTransport;
      options: NodeOptions;
      log: (message: string, fields: Record<string, unknown>) => void;
    },
  ) {
    this.id = init.identity.nodeId;
    this.clusterId = init.identity.clusterId;
    this.raftAddr = init.raftAddr;
    this.apiAddr = init.apiAddr;
    this.#storage = init.storage;
    this.#transport = init.transport;
    this.#kv = init.kv;
    this.#members = init.members;
    this.#log = init.log;
    this.#options = {
      tickIntervalMs: init.options.tickIntervalMs ?? 100,
      snapshotEntries: init.options.snapshotEntries ?? 100_000,
      snapshotBytes: init.options.snapshotBytes ?? 256 * 1024 * 1024,
      snapshotLogRatio: init.options.snapshotLogRatio ?? 0.5,
      // etcd keeps 5000 entries behind a snapshot for slow followers; never more than a snapshot's worth.
      catchUpEntries: init.options.catchUpEntries ??
        Math.min(5000, init.options.snapshotEntries ?? 100_000),
    };
    this.#appliedConf = init.initial.snapshotMeta.conf;
    this.#appliedIndex = init.initial.snapshotMeta.index;
    this.#appliedTerm = init.initial.snapshotMeta.term;
    this.#lastSnapshotIndex = init.initial.snapshotMeta.index;
    this.#lastSnapshotBytes = init.snapshotBytes;
    this.#savedTerm = init.initial.hardState.term;
    this.#savedVote = init.initial.hardState.vote;
    this.stopped = new Promise((resolve) => this.#stop = resolve);
    this.#core = new RaftCore({
      id: this.id,
      initial: init.initial,
      random: Math.random,
      electionTicks: init.options.electionTicks ?? 10,
      heartbeatTicks: init.options.heartbeatTicks ?? 1,
      log: (message, fields) => this.#log(`raft: ${message}`, fields),
    });
    for (const [id, m] of this.#members) {
      if (id !== this.id) this.#transport.setPeer(id, m.addr);
    }
  }

  /**
   * Opens the state directory and starts the node: restarts from existing
   * state, joins through `join` if the directory is empty, or else starts a
   * new one-member cluster.
   */
  static async open(options: NodeOptions): Promise<RaftNode> {
    const log = options.log ?? ((message, fields) => console.error(message, fields));
    const storage = options.storage ?? await FileStorage.open(
      options.stateDir,
      options.snapshotBytesPerSecond === undefined
        ? {}
        : { snapshotBytesPerSecond: options.snapshotBytesPerSecond },
    );
    let transport: TcpTransport | undefined;
    try {
      const loaded = await storage.load();
      transport = new TcpTransport({
        nodeId: loaded.identity?.nodeId ?? 0,
        clusterId: loaded.identity?.clusterId ?? "",
        listenAddr: options.raftListen,
        log,
      });
      // Requests that arrive before the node exists are refused with a clear error.
      // deno-lint-ignore prefer-const -- assigned below, once the handlers exist
      let node: RaftNode | undefined;
      const early: Message[] = [];
      await transport.listen({
        onMessage: (m) => node ? node.#onMessage(m) : early.length < 1024 && early.push(m),
        onRequest: (req) =>
          node
            ? node.#onRequest(req)
            : Promise.reject(new UnavailableError("Cannot serve: the node is still starting")),
        onUnreachable: (id) => {
          if (!node || node.#stopped) return;
          node.#core.reportUnreachable(id);
          node.#schedule();
        },
        onSnapshotSent: (to, ok) => {
          if (!node || node.#stopped) return;
          node.#core.reportSnapshot(to, ok);
          node.#schedule();
        },
      });
      const raftAddr = options.raftAdvertise ?? boundDialAddress(transport.addr);
      transport.setAdvertiseAddr(raftAddr);
      const apiAddr = options.apiAdvertise;
      const start = await prepare(
        storage,
        loaded,
        transport,
        { ...options, raftAddr, apiAddr },
        log,
      );
      node = new RaftNode({
        ...start,
        raftAddr,
        apiAddr,
        storage,
        transport,
        options,
        log,
      });
      for (const m of early) node.#onMessage(m);
      node.#start();
      return node;
    } catch (error) {
      await transport?.close();
      await storage.close().catch(() => {});
      throw error;
    }
  }

  #start(): void {
    this.#ticker = setInterval(() => this.#tick(), this.#options.tickIntervalMs);
    this.#log("node started", {
      id: this.id,
      cluster: this.clusterId,
      raft: this.raftAddr,
      api: this.apiAddr,
      role: this.#core.role,
    });
    // A lone voter need not wait a whole election timeout.
    const conf = this.#core.conf();
    if (conf.voters.length === 1 && conf.voters[0] === this.id) this.#core.campaign();
    this.#schedule();
  }

  // ------------------------------------------------------------ driving the core

  #tick(): void {
    if (this.#stopped) return;
    this.#ticks++;
    this.#core.tick();
    this.#checkReadRound();
    this.#maybePromoteLearners();
    this.#schedule();
  }

  #onMessage(m: Message): void {
    if (this.#stopped) return;
    if (m.to !== this.id) return; // not for us (a stale address book somewhere)
    this.#core.step(m);
    this.#schedule();
  }

  /** Runs the processing step soon (once per event-loop turn however many events came). */
  #schedule(): void {
    if (this.#scheduled || this.#stopped) return;
    this.#scheduled = true;
    // After the I/O that is ready now: every request and message that arrived
    // in this turn joins one batch (one append per follower, one fsync).
    setImmediate(() => {
      this.#scheduled = false;
      this.#process();
    });
  }

  #process(): void {
    if (this.#stopped) return;
    this.#flushProposals();
    this.#sendMessages(this.#core.takeMessages());
    this.#armCommitFlush();
    if (this.#persisting) {
      // What a quorum acknowledged meanwhile is answered now, not after this
      // node's own fsync of newer entries.
      this.#applyCommitted();
      return;
    }
    if (!this.#core.hasReady()) return;
    const rd = this.#core.ready();
    this.#persisting = true;
    this.#handleReady(rd).then(
      () => {
        this.#persisting = false;
        this.#schedule();
      },
      (error) => this.#fail(error),
    );
  }

  /**
   * A new commit index rides on the next append (under load, at once) or
   * heartbeat; when no write follows within COMMIT_FLUSH_MS, the followers
   * are told on their own, so their state machines lag by no more than that.
   */
  #armCommitFlush(): void {
    if (this.#commitFlushTimer !== undefined || !this.#core.commitPending) return;
    this.#commitFlushTimer = setTimeout(() => {
      this.#commitFlushTimer = undefined;
      if (!this.#stopped && this.#core.flushCommit()) this.#schedule();
    }, COMMIT_FLUSH_MS);
  }

  /** Applies committed entries outside a Ready (one is being persisted). */
  #applyCommitted(): void {
    if (this.#installing) return; // they follow the snapshot being installed
    const entries = this.#core.takeCommittedEntries();
    const last = entries[entries.length - 1];
    if (!last) return;
    for (const e of entries) this.#apply(e);
    this.#core.appliedTo(last.index);
    this.#releaseAppliedReads();
  }

  #flushProposals(): void {
    if (this.#proposalQueue.length === 0) return;
    const batch = this.#proposalQueue.filter((p) => this.#proposals.has(p.id)); // not timed out
    this.#proposalQueue = [];
    if (batch.length === 0 || this.#core.proposeBatch(batch.map((p) => p.data))) return;
    const error = new UnavailableError("Cannot write: the leader is not accepting proposals now");
    for (const p of batch) {
      const w = this.#proposals.get(p.id);
      this.#proposals.delete(p.id);
      w?.reject(error);
    }
  }

  async #handleReady(rd: Ready): Promise<void> {
    this.#learnAddresses(rd.entries);
    this.#sendMessages(rd.messages);
    if (rd.softState) this.#onSoftState(rd);
    // Like etcd's MustSync: entries, a snapshot, a new term or a vote need an
    // fsync; a hard state whose only change is the commit index does not (a
    // restarted node learns the commit index again from the leader), so it
    // rides along with the next write instead of costing an fsync of its own.
    let saved: Promise<void> | undefined;
    if (rd.hardState) this.#unsavedHardState = rd.hardState;
    const hs = this.#unsavedHardState;
    const mustSync = rd.snapshot !== undefined || rd.entries.length > 0 ||
      (hs !== undefined && (hs.term !== this.#savedTerm || hs.vote !== this.#savedVote));
    if (mustSync) {
      const req: Parameters<LogStorage["save"]>[0] = { entries: rd.entries };
      if (rd.snapshot) req.snapshot = rd.snapshot;
      if (hs) {
        req.hardState = hs;
        this.#savedTerm = hs.term;
        this.#savedVote = hs.vote;
        this.#unsavedHardState = undefined;
      }
      saved = this.#storage.save(req);
      // Awaited below; a failure while a snapshot is installed must not count as unhandled.
      saved.catch(() => {});
    }
    // Committed entries are already durable here and on a quorum (the core hands
    // out only entries persisted in an earlier Ready): apply them while this
    // Ready's new entries are written, so a write's answer never waits for the
    // next batch's fsync. Only in-memory state changes before the fsync.
    if (rd.snapshot) {
      await this.#installSnapshot(rd.snapshot);
      if (this.#stopped) return;
    }
    for (const e of rd.committedEntries) this.#apply(e);
    for (const rs of rd.readStates) this.#onReadState(rs);
    this.#releaseAppliedReads();
    if (saved) await saved;
    if (this.#stopped) return;
    this.#sendMessages(rd.persistedMessages);
    this.#core.advance(rd);
    this.#releaseAppliedReads();
    if (this.#core.removed) this.#onRemoved();
    this.#maybeSnapshot();
  }

  #sendMessages(msgs: Message[]): void {
    if (msgs.length === 0) return;
    let plain = msgs;
    if (msgs.some((m) => m.type === "snap")) {
      plain = msgs.filter((m) => m.type !== "snap");
      for (const m of msgs) if (m.type === "snap") this.#sendSnapshot(m);
    }
    this.#transport.send(plain);
  }

  /** The core names the snapshot; the data comes from storage (the newest one). */
  async #sendSnapshot(m: Message): Promise<void> {
    try {
      // Streamed from its file: a large snapshot is never held whole here.
      const stream = await this.#storage.latestSnapshotStream();
      if (!stream) throw new Error("no snapshot stored");
      this.#log("sending snapshot", {
        to: m.to,
        index: stream.meta.index,
        bytes: stream.dataBytes,
      });
      this.#transport.sendSnapshot(m, stream);
    } catch (error) {
      this.#log("cannot send snapshot", { to: m.to, error: String(error) });
      this.#core.reportSnapshot(m.to, false);
      this.#schedule();
    }
  }

  #onSoftState(rd: Ready): void {
    const ss = rd.softState!;
    this.#log("role changed", {
      id: this.id,
      role: ss.role,
      leader: ss.leader,
      term: this.#core.term,
    });
    if (ss.leader !== NONE) {
      for (const w of this.#leaderWaiters.splice(0)) w.resolve();
    }
    // A read round in flight with an old leader will never finish: retry at once.
    if (this.#readRound) {
      this.#readsQueued.unshift(...this.#readRound.waiters);
      this.#readRound = undefined;
    }
    this.#startReadRound();
  }

  /**
   * Replaces the state machine with a snapshot's. The store is rebuilt a
   * chunk at a time, the event loop turning between chunks (1M keys take
   * about 0.8 s); nothing is applied meanwhile.
   */
  async #installSnapshot(snap: Snapshot): Promise<void> {
    const payload = decodeSnapshotPayload(snap.data);
    this.#installing = true;
    try {
      this.#kv = await KvStore.restoreAsync(payload.kv);
    } finally {
      this.#installing = false;
    }
    this.#members = membersFromPayload(payload);
    this.#syncPeers();
    this.#appliedConf = snap.meta.conf;
    this.#appliedIndex = snap.meta.index;
    this.#appliedTerm = snap.meta.term;
    this.#lastSnapshotIndex = snap.meta.index;
    this.#lastSnapshotBytes = snap.data.byteLength;
    this.#bytesSinceSnapshot = 0;
    this.#log("installed snapshot", { index: snap.meta.index, keys: this.#kv.size });
  }

  #apply(e: Entry): void {
    if (e.index <= this.#appliedIndex) return; // already in the state machine (snapshot)
    this.#appliedIndex = e.index;
    this.#appliedTerm = e.term;
    if (e.type === "conf") {
      this.#applyConf(e);
      return;
    }
    if (e.data.byteLength === 0) return; // a new leader's no-op
    this.#bytesSinceSnapshot += e.data.byteLength;
    const own = this.#proposedCommands.get(e.data);
    // Dropped now, not when the log is compacted: a weak map of 100,000
    // entries makes every full GC of the leader's heap pause for longer.
    if (own !== undefined) this.#proposedCommands.delete(e.data);
    const result = own !== undefined ? this.#kv.applyCommand(own) : this.#kv.apply(e.data);
    if (!result.ok) {
      this.#log("skipped a malformed command", { index: e.index, error: result.error });
      return;
    }
    if (typeof result.id === "string") {
      const w = this.#proposals.get(result.id);
      if (w) {
        this.#proposals.delete(result.id);
        w.resolve(result.op === "delete" ? result.existed : true);
      }
    }
  }

  #applyConf(e: Entry): void {
    let cc: ConfChange;
    try {
      cc = decodeConfChange(e.data);
    } catch {
      return;
    }
    // The same deterministic rule as the core: an invalid change is a no-op.
    if (confChangeError(this.#appliedConf, cc) !== undefined) return;
    this.#appliedConf = applyConfChange(this.#appliedConf, cc);
    if (cc.context) {
      const ctx = decode(cc.context) as ConfContext;
      this.#members.set(cc.nodeId, { addr: ctx.addr, api: ctx.api, removed: false });
    }
    if (cc.type === "remove") {
      const m = this.#members.get(cc.nodeId);
      if (m) m.removed = true;
    }
    this.#syncPeers();
    const key = `${cc.type}:${cc.nodeId}`;
    for (const w of this.#confWaiters.get(key) ?? []) w.resolve();
    this.#confWaiters.delete(key);
    this.#log("membership changed", { index: e.index, change: cc.type, node: cc.nodeId });
  }

  /**
   * A membership change is in force once in the log (thesis §4.1), before
   * it is applied: learn a new member's address as soon as its entry appears.
   */
  #learnAddresses(entries: Entry[]): void {
    for (const e of entries) {
      if (e.type !== "conf") continue;
      try {
        const cc = decodeConfChange(e.data);
        if (!cc.context || this.#members.has(cc.nodeId)) continue;
        const ctx = decode(cc.context) as ConfContext;
        this.#members.set(cc.nodeId, { addr: ctx.addr, api: ctx.api, removed: false });
        if (cc.nodeId !== this.id) this.#transport.setPeer(cc.nodeId, ctx.addr);
      } catch { /* malformed: the core skips it too */ }
    }
  }

  /** Points the transport at every member (removed ones too: they are told they were removed). */
  #syncPeers(): void {
    for (const [id, m] of this.#members) {
      if (id !== this.id) this.#transport.setPeer(id, m.addr);
    }
  }

  #maybeSnapshot(): void {
    if (this.#snapshotting || this.#stopping) return;
    const bytes = this.#bytesSinceSnapshot;
    const due = bytes >= this.#options.snapshotBytes ||
      (this.#appliedIndex - this.#lastSnapshotIndex >= this.#options.snapshotEntries &&
        bytes >= this.#options.snapshotLogRatio * this.#lastSnapshotBytes);
    if (!due) return;
    this.#snapshotting = true;
    this.#takeSnapshot().then(
      () => this.#snapshotting = false,
      (error) => this.#fail(error),
    );
  }

  /** Takes a snapshot at the applied index without stopping the node while it is written. */
  async #takeSnapshot(): Promise<void> {
    const started = performance.now();
    const meta: SnapshotMeta = {
      index: this.#appliedIndex,
      term: this.#appliedTerm,
      conf: this.#appliedConf,
    };
    if ((this.#storage.latestSnapshotMeta()?.index ?? 0) >= meta.index) return;
    const members = [...this.#members].map(([id, m]) =>
      [id, m.addr, m.api, m.removed] as [NodeId, string, string, boolean]
    );
    const header = snapshotPayloadHeader({
      v: SNAPSHOT_PAYLOAD_VERSION,
      clusterId: this.clusterId,
      members,
    });
    // The store freezes its state now (later writes go to a new layer) and
    // encodes it a chunk at a time as storage writes it: a large state is
    // never held in one buffer, and the event loop gets a turn between chunks.
    const kv = this.#kv.snapshotChunks();
    const keys = this.#kv.size;
    let size = header.byteLength;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      yield header;
      for await (const chunk of kv) {
        size += chunk.byteLength;
        yield chunk;
      }
    }
    const compactIndex = Math.max(0, meta.index - this.#options.catchUpEntries);
    try {
      await this.#storage.saveSnapshot({ meta, chunks: chunks() }, compactIndex);
    } finally {
      await kv.return(); // released even if storage never started reading
    }
    if (this.#stopped) return;
    this.#lastSnapshotIndex = meta.index;
    this.#lastSnapshotBytes = size;
    this.#bytesSinceSnapshot = 0;
    this.#core.compact(compactIndex, meta);
    this.#log("took snapshot", {
      index: meta.index,
      keys,
      bytes: size,
      ms: Math.round(performance.now() - started),
    });
  }

  // ------------------------------------------------------------ reads

  #onReadState(rs: ReadState): void {
    const ctx = new TextDecoder().decode(rs.context);
    const round = this.#readRound;
    if (!round || round.ctx !== ctx) return;
    this.#readRound = undefined;
    this.#readsApplying.push({ index: rs.index, waiters: round.waiters });
    this.#startReadRound();
  }

  #releaseAppliedReads(): void {
    while (this.#readsApplying.length > 0 && this.#readsApplying[0]!.index <= this.#appliedIndex) {
      for (const w of this.#readsApplying.shift()!.waiters) w.resolve();
    }
  }

  #startReadRound(): void {
    if (this.#readRound || this.#readsQueued.length === 0 || this.#stopped) return;
    const waiters = this.#readsQueued.filter((w) => !w.signal.aborted);
    this.#readsQueued = [];
    if (waiters.length === 0) return;
    const ctx = `${this.#incarnation}.r${++this.#seq}`;
    if (!this.#core.readIndex(new TextEncoder().encode(ctx))) {
      // No leader known: wait for one (the requests' deadlines bound this).
      this.#readsQueued = waiters;
      return;
    }
    this.#readRound = { ctx, waiters, startedTicks: this.#ticks };
    this.#schedule();
  }

  /** A round lost on the way (a dropped message, a deposed leader) is retried. */
  #checkReadRound(): void {
    const round = this.#readRound;
    if (round && this.#ticks - round.startedTicks > 10) {
      this.#readRound = undefined;
      this.#readsQueued.unshift(...round.waiters);
    }
    this.#startReadRound();
  }

  /** Waits until a read at this moment is linearizable here. */
  #linearizable(signal: AbortSignal): Promise<void> {
    this.#checkRunning();
    if (this.#readsQueued.length >= READS_PENDING_MAX) {
      return Promise.reject(new UnavailableError("Cannot read: too many reads pending"));
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = () =>
        reject(new UnavailableError("Cannot read: no leader confirmed the read in time"));
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#readsQueued.push({
        signal,
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (e) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      });
      this.#startReadRound();
    });
  }

  // ------------------------------------------------------------ KvService

  /** Sets `key` to `value`; resolves once committed and applied here. */
  async put(key: string, value: string, signal: AbortSignal): Promise<void> {
    await this.#proposeCommand({ op: "put", key, value }, signal);
  }

  /** Deletes `key`; true if it existed. */
  delete(key: string, signal: AbortSignal): Promise<boolean> {
    return this.#proposeCommand({ op: "delete", key }, signal);
  }

  /** The value of `key`, linearizably. */
  async get(key: string, signal: AbortSignal): Promise<string | undefined> {
    await this.#linearizable(signal);
    return this.#kv.get(key);
  }

  async #proposeCommand(cmd: KvCommand, signal: AbortSignal): Promise<boolean> {
    this.#checkRunning();
    if (this.#proposals.size >= PROPOSALS_PENDING_MAX) {
      throw new UnavailableError("Cannot write: too many writes pending");
    }
    if (this.#core.leader === NONE) await this.#waitForLeader(signal);
    const id = `${this.#incarnation}.${++this.#seq}`;
    const command: KvCommand = { ...cmd, id };
    const data = encodeCommand(command);
    this.#proposedCommands.set(data, command);
    const waiter = new ProposalWaiter(id, signal, this.#proposals);
    this.#proposals.set(id, waiter);
    // Proposals made in the same event-loop turn go to the core as one batch.
    this.#proposalQueue.push({ id, data });
    this.#schedule();
    return await waiter.promise;
  }

  async #waitForLeader(signal: AbortSignal): Promise<void> {
    if (this.#core.leader !== NONE) return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(new UnavailableError("Cannot serve: no leader elected in time"));
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#leaderWaiters.push({
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject,
      });
    });
  }

  /** The members as this node knows them (committed membership). */
  members(_signal?: AbortSignal): Promise<Member[]> {
    const conf = this.#core.conf();
    const leader = this.#core.leader;
    const list: Member[] = [];
    for (const [ids, type] of [[conf.voters, "voter"], [conf.learners, "learner"]] as const) {
      for (const id of ids) {
        const m = this.#members.get(id);
        list.push({ id, addr: m?.addr ?? "", api: m?.api ?? "", type, leader: id === leader });
      }
    }
    list.sort((a, b) => a.id - b.id);
    return Promise.resolve(list);
  }

  /** Removes a member; resolves once the removal is committed and applied here. */
  async removeMember(id: NodeId, signal: AbortSignal): Promise<void> {
    this.#checkRunning();
    const conf = this.#core.conf();
    if (!conf.voters.includes(id) && !conf.learners.includes(id)) {
      throw new UnknownMemberError(`Cannot remove node ${id}: it is not a member`);
    }
    if (this.#core.role !== "leader") {
      // Wait for the removal to apply here too, so a read that follows sees it.
      const applied = this.#waitConfApplied("remove", id, signal);
      applied.catch(() => {});
      await this.#forwardToLeader({ type: "remove", id }, signal);
      await applied;
      return;
    }
    await this.#changeMembership({ type: "remove", nodeId: id }, signal);
  }

  /** A status summary for operators. */
  status(): CoreStatus & { cluster: string; raft: string; api: string; keys: number } {
    return {
      ...this.#core.status(),
      applied: this.#appliedIndex,
      cluster: this.clusterId,
      raft: this.raftAddr,
      api: this.apiAddr,
      keys: this.#kv.size,
    };
  }

  // ------------------------------------------------------------ membership

  /** Proposes one membership change on the leader and waits until it is applied here. */
  #changeMembership(cc: ConfChange, signal: AbortSignal): Promise<void> {
    return this.#withMembershipLock(() => this.#changeMembershipLocked(cc, signal));
  }

  /** Runs `fn` after every membership change queued before it (one at a time). */
  #withMembershipLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#membershipLock.then(fn);
    this.#membershipLock = run.catch(() => {});
    return run;
  }

  async #changeMembershipLocked(cc: ConfChange, signal: AbortSignal): Promise<void> {
    {
      for (let attempt = 0;; attempt++) {
        if (signal.aborted) throw new UnavailableError("Cannot change membership in time");
        if (this.#core.role !== "leader") {
          throw new NotLeaderError("Cannot change membership: not the leader", this.#core.leader);
        }
        const error = confChangeError(this.#core.conf(), cc);
        if (error !== undefined) {
          if (cc.type === "remove") throw new UnknownMemberError(`Cannot remove: ${error}`);
          throw new UnavailableError(`Cannot change membership: ${error}`);
        }
        // The waiter is registered in the same turn as the proposal: it cannot apply before.
        if (this.#core.canChangeConf() && this.#core.proposeConfChange(cc)) {
          this.#schedule();
          await this.#waitConfApplied(cc.type, cc.nodeId, signal);
          return;
        }
        await delay(Math.min(50 * (attempt + 1), 500), signal);
      }
    }
  }

  #waitConfApplied(type: ConfChange["type"], nodeId: NodeId, signal: AbortSignal): Promise<void> {
    const key = `${type}:${nodeId}`;
    return new Promise<void>((resolve, reject) => {
      const onAbort = () =>
        reject(new OutcomeUnknownError("Cannot confirm the membership change in time"));
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      const list = this.#confWaiters.get(key) ?? [];
      list.push({
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject,
      });
      this.#confWaiters.set(key, list);
    });
  }

  /** The leader promotes learners that have caught up. */
  #maybePromoteLearners(): void {
    if (this.#promoting || this.#core.role !== "leader") return;
    const st = this.#core.status();
    const learner = st.conf.learners.find((id) => {
      const pr = st.progress?.[id];
      // Caught up: it acknowledged appends (replicating) and is close to the commit index.
      return pr !== undefined && pr.active && pr.state === "replicate" && pr.match > 0 &&
        st.commit - pr.match <= 100;
    });
    if (learner === undefined) return;
    this.#promoting = true;
    const signal = AbortSignal.timeout(5000);
    let promoted = false;
    this.#changeMembership({ type: "promote", nodeId: learner }, signal).then(
      () => {
        promoted = true;
        this.#log("promoted learner to voter", { node: learner });
      },
      (error) => this.#log("cannot promote learner yet", { node: learner, error: String(error) }),
    ).finally(() => {
      this.#promoting = false;
      // The next learner that has caught up need not wait for a tick.
      if (promoted) this.#maybePromoteLearners();
    });
  }

  /** Handles a join request on the leader: the new node is added as a learner. */
  #join(addr: string, api: string, signal: AbortSignal): Promise<JoinAnswer> {
    return this.#withMembershipLock(async () => {
      // Joining twice with the same address is idempotent.
      const conf = this.#core.conf();
      for (const [id, m] of this.#members) {
        if (
          m.addr === addr && !m.removed && (conf.voters.includes(id) || conf.learners.includes(id))
        ) {
          return this.#joinAnswer(id);
        }
      }
      // Ids only grow: a removed id is never handed out again.
      const nodeId = Math.max(0, ...this.#members.keys(), ...conf.removed) + 1;
      const context = encode({ addr, api } satisfies ConfContext);
      await this.#changeMembershipLocked({ type: "addLearner", nodeId, context }, signal);
      this.#log("added learner", { node: nodeId, addr, api });
      return this.#joinAnswer(nodeId);
    });
  }

  #joinAnswer(nodeId: NodeId): JoinAnswer {
    const members: [NodeId, string, string][] = [];
    for (const [id, m] of this.#members) if (!m.removed) members.push([id, m.addr, m.api]);
    return { nodeId, clusterId: this.clusterId, members };
  }

  // ------------------------------------------------------------ rpc

  async #onRequest(req: unknown): Promise<unknown> {
    const r = req as { type?: string; addr?: string; api?: string; id?: number };
    const signal = AbortSignal.timeout(10_000);
    if (this.#core.role !== "leader") {
      if (r.type === "join" || r.type === "remove") return await this.#forwardToLeader(r, signal);
    }
    switch (r.type) {
      case "join":
        if (typeof r.addr !== "string" || typeof r.api !== "string") {
          throw new TypeError("Cannot join: the request needs addr and api");
        }
        return await this.#join(r.addr, r.api, signal);
      case "remove":
        if (typeof r.id !== "number") throw new TypeError("Cannot remove: the request needs id");
        await this.#changeMembership({ type: "remove", nodeId: r.id }, signal);
        return { ok: true };
      default:
        throw new TypeError(`Cannot serve request of type ${String(r.type)}`);
    }
  }

  async #forwardToLeader(req: unknown, signal: AbortSignal): Promise<unknown> {
    await this.#waitForLeader(signal);
    const leader = this.#members.get(this.#core.leader);
    if (!leader) throw new UnavailableError("Cannot forward: the leader's address is unknown");
    const resp = await this.#transport.request(leader.addr, req, { timeoutMs: 10_000 }) as {
      error?: string;
    };
    if (resp && typeof resp === "object" && typeof resp.error === "string") {
      if (resp.error.includes("not a member")) throw new UnknownMemberError(resp.error);
      throw new UnavailableError(`The leader refused: ${resp.error}`);
    }
    return resp;
  }

  // ------------------------------------------------------------ lifecycle

  #checkRunning(): void {
    if (this.#stopping || this.#stopped) {
      throw new StoppedError("Cannot serve: the node is shutting down");
    }
  }

  #onRemoved(): void {
    if (this.#stopping) return;
    this.#log("removed from the cluster: shutting down", { id: this.id });
    // Being told of our removal proves it committed: a request that asked for it succeeded.
    const key = `remove:${this.id}`;
    for (const w of this.#confWaiters.get(key) ?? []) w.resolve();
    this.#confWaiters.delete(key);
    // Recorded, so that a restart on this state refuses instead of campaigning
    // until a peer tells it again.
    const recorded = this.#storage
      .saveIdentity({ nodeId: this.id, clusterId: this.clusterId, removed: true })
      .catch((error) =>
        this.#log("cannot record the removal in the state directory", { error: String(error) })
      );
    // Let the answer to the removal request go out first.
    setTimeout(() => void recorded.then(() => this.#shutdown({ reason: "removed" })), 200);
    this.#stopping = true;
  }

  #fail(error: unknown): void {
    const e = error instanceof Error ? error : new Error(String(error));
    this.#log("fatal: stopping the node", { id: this.id, error: e.message });
    void this.#shutdown({ reason: "failed", error: e });
  }

  /** Stops gracefully: a leader hands leadership over first. */
  async close(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#stopping && this.#core.role === "leader") await this.#handOver();
    await this.#shutdown({ reason: "closed" });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #handOver(): Promise<void> {
    const st = this.#core.status();
    const heir = st.conf.voters
      .filter((id) => id !== this.id && st.progress?.[id]?.active)
      .sort((a, b) => (st.progress?.[b]?.match ?? 0) - (st.progress?.[a]?.match ?? 0))[0];
    if (heir === undefined) return;
    this.#log("handing leadership over", { to: heir });
    this.#core.transferLeader(heir);
    this.#schedule();
    const deadline = Date.now() + 500; // a transfer takes a few round trips
    while (this.#core.role === "leader" && Date.now() < deadline) await delay(20);
  }

  async #shutdown(reason: StopReason): Promise<void> {
    if (this.#stopped) return;
    this.#stopping = true;
    this.#stopped = true;
    clearInterval(this.#ticker);
    clearTimeout(this.#commitFlushTimer);
    const err = new StoppedError("Cannot serve: the node stopped");
    for (const w of this.#proposals.values()) w.reject(err);
    this.#proposals.clear();
    for (const list of this.#confWaiters.values()) for (const w of list) w.reject(err);
    this.#confWaiters.clear();
    for (const w of this.#leaderWaiters.splice(0)) w.reject(err);
    const reads = [
      ...this.#readsQueued,
      ...(this.#readRound?.waiters ?? []),
      ...this.#readsApplying.flatMap((r) => r.waiters),
    ];
    for (const w of reads) w.reject(err);
    await this.#transport.close().catch(() => {});
    await this.#storage.close().catch(() => {});
    this.#log("node stopped", { id: this.id, reason: reason.reason });
    this.#stop(reason);
  }
}

/** Decides how the node starts: restart, join, or a new cluster. */
async function prepare(
  storage: LogStorage,
  loaded: LoadedState,
  transport: TcpTransport,
  options: NodeOptions & { raftAddr: string; apiAddr: string },
  log: (message: string, fields: Record<string, unknown>) => void,
): Promise<{
  identity: Identity;
  initial: InitialState;
  kv: KvStore;
  /** The loaded snapshot's size (0: none). */
  snapshotBytes: number;
  members: Map<NodeId, MemberAddr>;
}> {
  if (loaded.identity?.removed) {
    const { nodeId, clusterId } = loaded.identity;
    throw new Error(
      `This node (id ${nodeId}) was removed from cluster ${clusterId} and does not start again ` +
        "on that state. To add this machine back, start it with a new, empty --state-dir and " +
        "--join a member's raft address.",
    );
  }
  if (loaded.identity) {
    if (options.join) log("restarting from existing state; --join ignored", { join: options.join });
    const snap = loaded.snapshot;
    let kv = new KvStore();
    let members = new Map<NodeId, MemberAddr>();
    if (snap) {
      const payload = decodeSnapshotPayload(snap.data);
      kv = KvStore.restore(payload.kv);
      members = membersFromPayload(payload);
    }
    const snapshotMeta = snap?.meta ?? { index: 0, term: 0, conf: emptyConf() };
    // Addresses of members added after the snapshot come from the log's membership entries.
    for (const e of loaded.entries) {
      if (e.type !== "conf") continue;
      try {
        const cc = decodeConfChange(e.data);
        if (cc.context) {
          const ctx = decode(cc.context) as ConfContext;
          if (!members.has(cc.nodeId)) {
            members.set(cc.nodeId, { addr: ctx.addr, api: ctx.api, removed: false });
          }
        }
      } catch { /* a malformed entry is skipped by the core as well */ }
    }
    transport.setIdentity(loaded.identity.nodeId, loaded.identity.clusterId);
    return {
      identity: loaded.identity,
      initial: {
        hardState: loaded.hardState,
        snapshotMeta,
        entries: loaded.entries,
        applied: snapshotMeta.index,
      },
      kv,
      snapshotBytes: snap?.data.byteLength ?? 0,
      members,
    };
  }
  if (options.join) {
    const answer = await joinCluster(transport, options, log);
    const identity: Identity = { nodeId: answer.nodeId, clusterId: answer.clusterId };
    await storage.saveIdentity(identity);
    transport.setIdentity(identity.nodeId, identity.clusterId);
    return {
      identity,
      initial: {
        hardState: { term: 0, vote: NONE, commit: 0 },
        snapshotMeta: { index: 0, term: 0, conf: emptyConf() },
        entries: [],
        applied: 0,
      },
      kv: new KvStore(),
      snapshotBytes: 0,
      members: new Map(
        answer.members.map(([id, addr, api]) => [id, { addr, api, removed: false }]),
      ),
    };
  }
  // A new one-member cluster: entry 1 makes this node its first voter.
  const identity: Identity = { nodeId: 1, clusterId: crypto.randomUUID() };
  const context = encode(
    {
      addr: options.raftAddr,
      api: options.apiAddr,
      clusterId: identity.clusterId,
    } satisfies ConfContext,
  );
  const cc: ConfChange = { type: "addVoter", nodeId: 1, context };
  const entry: Entry = { index: 1, term: 1, type: "conf", data: encode(cc) };
  const hardState = { term: 1, vote: NONE, commit: 1 };
  await storage.save({ entries: [entry], hardState });
  await storage.saveIdentity(identity);
  transport.setIdentity(identity.nodeId, identity.clusterId);
  log("bootstrapped a new cluster", { id: 1, cluster: identity.clusterId });
  return {
    identity,
    initial: {
      hardState,
      snapshotMeta: { index: 0, term: 0, conf: emptyConf() },
      entries: [entry],
      applied: 0,
    },
    kv: new KvStore(),
    snapshotBytes: 0,
    members: new Map(),
  };
}

/** Asks `options.join`'s cluster for an id, retrying until it answers or time runs out. */
async function joinCluster(
  transport: TcpTransport,
  options: NodeOptions & { raftAddr: string; apiAddr: string },
  log: (message: string, fields: Record<string, unknown>) => void,
): Promise<JoinAnswer> {
  const deadline = Date.now() + (options.joinTimeoutMs ?? 60_000);
  let lastError = "";
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    try {
      const resp = await transport.request(
        options.join!,
        { type: "join", addr: options.raftAddr, api: options.apiAddr },
        { timeoutMs: 12_000 },
      ) as Partial<JoinAnswer> & { error?: unknown };
      if (
        typeof resp?.nodeId === "number" && typeof resp.clusterId === "string" &&
        Array.isArray(resp.members)
      ) {
        log("joined the cluster", { id: resp.nodeId, cluster: resp.clusterId, via: options.join });
        return { nodeId: resp.nodeId, clusterId: resp.clusterId, members: resp.members };
      }
      lastError = String(resp?.error ?? "malformed answer");
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    if (attempt % 5 === 0) {
      log("join not answered yet; retrying", { via: options.join, error: lastError });
    }
    await delay(Math.min(200 * (attempt + 1), 1000));
  }
  throw new Error(
    `Cannot join the cluster through ${options.join}: ${lastError}. Check that a member is running there`,
  );
}

/**
 * The snapshot payload: a 4-byte big-endian length, the MessagePack header
 * (version, cluster id, members), then the state machine's bytes as they
 * are. Wrapping 100+ MiB of state in MessagePack would copy it several
 * times while the buffer grows, stalling the node.
 */
function snapshotPayloadHeader(p: Omit<SnapshotPayload, "kv">): Uint8Array {
  const header = encode({ v: p.v, clusterId: p.clusterId, members: p.members });
  const out = new Uint8Array(4 + header.byteLength);
  new DataView(out.buffer).setUint32(0, header.byteLength);
  out.set(header, 4);
  return out;
}

function decodeSnapshotPayload(data: Uint8Array): SnapshotPayload {
  const headerBytes = data.byteLength >= 4
    ? new DataView(data.buffer, data.byteOffset, 4).getUint32(0)
    : Infinity;
  if (4 + headerBytes > data.byteLength) {
    throw new TypeError("Cannot read the snapshot: its header is cut short");
  }
  const h = decode(data.subarray(4, 4 + headerBytes)) as Omit<SnapshotPayload, "kv">;
  if (typeof h !== "object" || h === null || h.v !== SNAPSHOT_PAYLOAD_VERSION) {
    throw new TypeError("Cannot read the snapshot: unknown payload version");
  }
  return { ...h, kv: data.subarray(4 + headerBytes) };
}

function membersFromPayload(p: SnapshotPayload): Map<NodeId, MemberAddr> {
  return new Map(p.members.map(([id, addr, api, removed]) => [id, { addr, api, removed }]));
}

/**
 * The address others dial for a listener bound to `host:port`: an
 * unspecified host (all interfaces) becomes 127.0.0.1.
 */
export function dialAddress(host: string, port: number): string {
  if (host === "" || host === "0.0.0.0" || host === "::" || host === "[::]") {
    return `127.0.0.1:${port}`;
  }
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** {@linkcode dialAddress} of a bound "host:port". */
function boundDialAddress(bound: string): string {
  const i = bound.lastIndexOf(":");
  return dialAddress(bound.slice(0, i), Number(bound.slice(i + 1)));
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
