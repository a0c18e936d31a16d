/**
 * The pure Raft core, in the spirit of etcd's raft.go: no I/O, no clock, no
 * timers, no randomness of its own. Time moves by {@linkcode RaftCore.tick},
 * messages come in by {@linkcode RaftCore.step}, and what the core wants done
 * comes out as one {@linkcode Ready} batch that the driver acknowledges with
 * {@linkcode RaftCore.advance}.
 *
 * Membership changes are single-step (one voter added or removed at a time)
 * and take effect on every node when their entry commits there.
 *
 * @example
 * ```ts
 * const core = new RaftCore({ id: 1, initial, random: seededRandom });
 * core.tick();
 * if (core.hasReady()) {
 *   const rd = core.ready();
 *   // persist rd.snapshot, rd.entries, rd.hardState; fsync
 *   // send rd.persistedMessages; apply rd.committedEntries
 *   core.advance(rd);
 * }
 * ```
 *
 * @module
 */

import { LogLimits, RaftLog } from "./log.ts";
import { Progress } from "./progress.ts";
import { committedIndex, hasQuorum, voteResult } from "./quorum.ts";
import { decode, encode } from "./msgpack.ts";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type InitialState,
  type Message,
  message,
  type MessageType,
  type NodeId,
  NONE,
  type ReadState,
  type Ready,
  type Role,
  type SnapshotMeta,
  type SoftState,
} from "./types.ts";

/** Options of a {@linkcode RaftCore}. */
export interface CoreOptions {
  id: NodeId;
  /** Everything the node's storage holds. */
  initial: InitialState;
  /** A seeded source of numbers in [0, 1): the core's only randomness. */
  random: () => number;
  /** Ticks without a leader before a follower campaigns (randomised in [n, 2n)). Default 10. */
  electionTicks?: number;
  /** Ticks between a leader's heartbeats. Default 1. */
  heartbeatTicks?: number;
  /** Ask for votes only after a pre-vote round would win (thesis §9.6). Default true. */
  preVote?: boolean;
  /** A leader that has not heard from a quorum for an election timeout steps down. Default true. */
  checkQuorum?: boolean;
  /** Appends in flight per follower. Default 256. */
  inflightMessagesMax?: number;
  /** Entries per append message or apply batch. Default 1024. */
  batchEntriesMax?: number;
  /** Data bytes per append message or apply batch. Default 1 MiB. */
  batchBytesMax?: number;
  /** Entries a leader accepts beyond its commit index before it refuses proposals. Default 20000. */
  uncommittedEntriesMax?: number;
  /** Log lines: a constant message plus fields. */
  log?: (message: string, fields: Record<string, unknown>) => void;
}

/** A read the leader is confirming with a heartbeat round. */
interface PendingRead {
  index: number;
  /** Who asked: this node, or a follower to answer with `readIndexResp`. */
  from: NodeId;
  context: Uint8Array;
  acks: Set<NodeId>;
}

interface LeaderState {
  role: "leader";
  progress: Map<NodeId, Progress>;
  /** No new membership change until this index is committed. */
  pendingConfIndex: number;
  /** Reads waiting for a quorum of heartbeat acknowledgements, in order. */
  reads: PendingRead[];
  /** Reads waiting for the first commit of this term. */
  readsBeforeCommit: Message[];
  /** Leadership transfer in progress to this node, or NONE. */
  transferee: NodeId;
  /**
   * Appends of new entries to every follower are due. They go out once, when
   * messages are next taken, however many proposals arrived meanwhile.
   */
  bcastPending: boolean;
  /**
   * The commit index moved and the followers have not been told. It rides on
   * the next append broadcast or heartbeat, or goes out on {@linkcode RaftCore.flushCommit}.
   */
  commitPending: boolean;
  /**
   * Followers that forwarded proposals, with the last index those took: a
   * follower answers its client only once it knows the entry committed, so
   * it is told at once rather than lazily.
   */
  forwarded: Map<NodeId, number>;
}

interface CandidateState {
  role: "candidate" | "preCandidate";
  votes: Map<NodeId, boolean>;
}

interface FollowerState {
  role: "follower";
}

type RoleState = LeaderState | CandidateState | FollowerState;

/** What {@linkcode RaftCore.status} reports. */
export interface CoreStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  firstIndex: number;
  lastIndex: number;
  stable: number;
  role: Role;
  leader: NodeId;
  conf: ConfState;
  removed: boolean;
  /** The leader's view of each peer; absent on other roles. */
  progress?: Record<string, { match: number; next: number; state: string; active: boolean }>;
}

const CAMPAIGN_TRANSFER = new Uint8Array([1]);

/** Encodes a membership change for a `conf` entry. */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  return encode(cc);
}

/** Decodes a `conf` entry's membership change; throws on garbage. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  const v = decode(data) as ConfChange;
  if (
    typeof v !== "object" || v === null || typeof v.nodeId !== "number" ||
    !["addVoter", "addLearner", "promote", "remove"].includes(v.type)
  ) {
    throw new TypeError("Cannot decode a membership change: malformed entry");
  }
  return v;
}

/** Applies a committed membership change to a configuration (pure). */
export function applyConfChange(conf: ConfState, cc: ConfChange): ConfState {
  const voters = conf.voters.filter((id) => id !== cc.nodeId);
  const learners = conf.learners.filter((id) => id !== cc.nodeId);
  const removed = [...conf.removed];
  switch (cc.type) {
    case "addVoter":
    case "promote":
      voters.push(cc.nodeId);
      break;
    case "addLearner":
      learners.push(cc.nodeId);
      break;
    case "remove":
      if (!removed.includes(cc.nodeId)) removed.push(cc.nodeId);
      break;
  }
  voters.sort((a, b) => a - b);
  learners.sort((a, b) => a - b);
  return { voters, learners, removed };
}

/** Why a membership change may not be proposed against `conf`, or undefined if it may. */
export function confChangeError(conf: ConfState, cc: ConfChange): string | undefined {
  const id = cc.nodeId;
  if (!Number.isSafeInteger(id) || id <= 0) return `invalid node id ${id}`;
  if (conf.removed.includes(id)) return `node ${id} was removed and its id is never reused`;
  const isVoter = conf.voters.includes(id);
  const isLearner = conf.learners.includes(id);
  switch (cc.type) {
    case "addVoter":
    case "addLearner":
      return isVoter || isLearner ? `node ${id} is already a member` : undefined;
    case "promote":
      return isLearner ? undefined : `node ${id} is not a learner`;
    case "remove":
      if (!isVoter && !isLearner) return `node ${id} is not a member`;
      if (isVoter && conf.voters.length === 1) return `node ${id} is the last voter`;
      return undefined;
  }
}

/** The pure Raft state machine. */
export class RaftCore {
  readonly id: NodeId;
  #term: number;
  #vote: NodeId;
  #leader: NodeId = NONE;
  #state: RoleState = { role: "follower" };
  #log: RaftLog;
  /**
   * Thesis §4.1: a node uses the newest configuration in its log, committed
   * or not; a truncated change is rolled back. `#confBase` is the
   * configuration at the log's compaction point, `#confHistory` one entry
   * per membership change in the log after it, `#conf` the newest.
   */
  #conf: ConfState;
  #confBase: ConfState;
  #confHistory: { index: number; conf: ConfState; change: ConfChange }[] = [];
  /** Highest committed index already scanned for committed membership changes. */
  #confCommitScan: number;
  #removed = false;

  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedElectionTimeout = 0;
  readonly #electionTicks: number;
  readonly #heartbeatTicks: number;
  readonly #preVote: boolean;
  readonly #checkQuorum: boolean;
  readonly #inflightMessagesMax: number;
  readonly #limits: LogLimits;
  /** Apply batches are not bound by the size of an append message. */
  readonly #applyLimits: LogLimits;
  readonly #uncommittedEntriesMax: number;
  readonly #random: () => number;
  readonly #logLine: (message: string, fields: Record<string, unknown>) => void;

  #snapshotMeta: SnapshotMeta;
  #pendingSnapshot: { meta: SnapshotMeta; data: Uint8Array } | undefined;
  #msgs: Message[] = [];
  #msgsAfterPersist: Message[] = [];
  #readStates: ReadState[] = [];
  #prevHardState: HardState;
  /** Term and vote as last persisted: messages go out at once only while they match. */
  #durableTerm: number;
  #durableVote: NodeId;
  #prevSoftState: SoftState;
  #readyOutstanding = false;

  constructor(options: CoreOptions) {
    if (!Number.isSafeInteger(options.id) || options.id <= 0) {
      throw new RangeError(
        `Cannot create a Raft node with id ${options.id}: ids are positive integers`,
      );
    }
    this.id = options.id;
    this.#electionTicks = options.electionTicks ?? 10;
    this.#heartbeatTicks = options.heartbeatTicks ?? 1;
    if (this.#heartbeatTicks >= this.#electionTicks) {
      throw new RangeError("Cannot create a Raft node: heartbeatTicks must be below electionTicks");
    }
    this.#preVote = options.preVote ?? true;
    this.#checkQuorum = options.checkQuorum ?? true;
    this.#inflightMessagesMax = options.inflightMessagesMax ?? 256;
    this.#limits = {
      batchEntriesMax: options.batchEntriesMax ?? 1024,
      batchBytesMax: options.batchBytesMax ?? 1 << 20,
    };
    this.#applyLimits = {
      batchEntriesMax: Math.max(this.#limits.batchEntriesMax, 4096),
      batchBytesMax: Math.max(this.#limits.batchBytesMax, 64 << 20),
    };
    this.#uncommittedEntriesMax = options.uncommittedEntriesMax ?? 20000;
    this.#random = options.random;
    this.#logLine = options.log ?? (() => {});

    const { hardState, snapshotMeta, entries, applied } = options.initial;
    this.#term = hardState.term;
    this.#vote = hardState.vote;
    this.#snapshotMeta = snapshotMeta;
    this.#log = new RaftLog({
      snapIndex: snapshotMeta.index,
      snapTerm: snapshotMeta.term,
      entries,
      committed: hardState.commit,
      applied,
    });
    // The configuration is the snapshot's plus every committed change after it.
    this.#confBase = snapshotMeta.conf;
    this.#conf = snapshotMeta.conf;
    this.#confCommitScan = this.#log.committed;
    this.#rebuildConf(this.#log.firstIndex());
    this.#removed = this.#confAt(this.#log.committed).removed.includes(this.id);
    this.#prevHardState = this.#hardState();
    this.#durableTerm = this.#term;
    this.#durableVote = this.#vote;
    this.#prevSoftState = this.#softState();
    this.#resetRandomizedElectionTimeout();
  }

  // ---------------------------------------------------------------- inputs

  /** Advances logical time by one tick. */
  tick(): void {
    if (this.#state.role === "leader") this.#tickHeartbeat(this.#state);
    else this.#tickElection();
  }

  /** Feeds one message (from a peer, or a local intent). */
  step(m: Message): void {
    if (m.type === "removed") {
      // Only a member that committed our removal says so: it is final.
      if (!this.#removed) this.#logLine("learned of own removal", { id: this.id, from: m.from });
      this.#removed = true;
      if (this.#state.role !== "leader") this.#becomeFollower(this.#term, NONE);
      return;
    }
    if (
      m.from !== this.id && m.from !== NONE && this.#committedRemoved(m.from) &&
      // A leader that committed its own removal hands off with a timeout-now
      // sent right after the append that tells us of that removal: take it.
      m.type !== "timeoutNow"
    ) {
      // A removed node that still talks: tell it, so it shuts itself down.
      if (m.type !== "snapStatus" && m.type !== "unreachable") {
        this.#send(message({ type: "removed", from: this.id, to: m.from, term: this.#term }));
      }
      return;
    }
    if (m.term > this.#term) {
      if (!this.#stepHigherTerm(m)) return;
    } else if (m.term > 0 && m.term < this.#term) {
      this.#stepLowerTerm(m);
      return;
    }

    switch (m.type) {
      case "hup":
        this.#hup(this.#preVote ? "preCandidate" : "candidate", false);
        return;
      case "vote":
      case "preVote":
        this.#stepVote(m);
        return;
    }
    switch (this.#state.role) {
      case "leader":
        this.#stepLeader(this.#state, m);
        return;
      case "candidate":
      case "preCandidate":
        this.#stepCandidate(this.#state, m);
        return;
      case "follower":
        this.#stepFollower(m);
        return;
    }
  }

  /**
   * Proposes a command. Returns false if it was dropped for certain (no
   * leader known, a leadership transfer is in progress, too many
   * uncommitted entries); true means appended or forwarded to the leader —
   * which can still lose it.
   */
  propose(data: Uint8Array): boolean {
    return this.#propose([{ index: 0, term: 0, type: "normal", data }]);
  }

  /**
   * Proposes several commands at once: one append (or one forward) carries
   * them all. All or none are accepted, as with {@linkcode propose}.
   */
  proposeBatch(data: readonly Uint8Array[]): boolean {
    if (data.length === 0) return true;
    return this.#propose(data.map((d) => ({ index: 0, term: 0, type: "normal", data: d })));
  }

  /** Proposes a membership change; false if refused here (see {@linkcode propose}). */
  proposeConfChange(cc: ConfChange): boolean {
    return this.#propose([{ index: 0, term: 0, type: "conf", data: encodeConfChange(cc) }]);
  }

  #propose(entries: Entry[]): boolean {
    const m = message({ type: "prop", from: this.id, to: this.id, entries });
    if (this.#state.role === "leader") return this.#leaderAppendProposal(this.#state, m);
    if (this.#leader === NONE || this.#removed) return false;
    this.#send({ ...m, to: this.#leader });
    return true;
  }

  /**
   * Asks for a linearizable read point. When it is safe, a
   * {@linkcode ReadState} with this context comes out in a Ready. False if
   * no leader is known.
   */
  readIndex(context: Uint8Array): boolean {
    const m = message({ type: "readIndex", from: this.id, to: this.id, context });
    if (this.#state.role === "leader") {
      this.#leaderReadIndex(this.#state, m);
      return true;
    }
    if (this.#leader === NONE) return false;
    this.#send({ ...m, to: this.#leader });
    return true;
  }

  /** Hands leadership to `to` (thesis §3.10); a follower forwards the request. */
  transferLeader(to: NodeId): void {
    this.step(message({ type: "transferLeader", from: to, to: this.id }));
  }

  /** Starts an election now (if this node may). */
  campaign(): void {
    this.step(message({ type: "hup", from: this.id, to: this.id }));
  }

  /** Reports that the runtime could not reach `peer`. */
  reportUnreachable(peer: NodeId): void {
    this.step(message({ type: "unreachable", from: peer, to: this.id }));
  }

  /** Reports how sending a snapshot to `peer` ended. */
  reportSnapshot(peer: NodeId, ok: boolean): void {
    this.step(message({ type: "snapStatus", from: peer, to: this.id, reject: !ok }));
  }

  /**
   * The runtime saved a snapshot at `meta.index` (applied here); entries
   * through `compactIndex` (≤ meta.index) may be dropped from memory.
   */
  compact(compactIndex: number, meta: SnapshotMeta): void {
    if (meta.index > this.#log.applied) {
      throw new RangeError(
        `Cannot record a snapshot at index ${meta.index}: applied only ${this.#log.applied}`,
      );
    }
    if (meta.index > this.#snapshotMeta.index) this.#snapshotMeta = meta;
    this.#log.compact(Math.min(compactIndex, meta.index, this.#log.stable));
  }

  // ---------------------------------------------------------------- output

  /** True if a Ready has work in it. */
  hasReady(): boolean {
    if (this.#readyOutstanding) return false;
    return this.#msgs.length > 0 || (this.#state.role === "leader" && this.#state.bcastPending) ||
      this.#msgsAfterPersist.length > 0 ||
      this.#readStates.length > 0 || this.#pendingSnapshot !== undefined ||
      this.#log.persisting < this.#log.lastIndex() || this.#log.hasEntriesToApply() ||
      !sameHardState(this.#hardState(), this.#prevHardState) ||
      !sameSoftState(this.#softState(), this.#prevSoftState);
  }

  /** Takes the next batch of work. Only one may be outstanding: call {@linkcode advance} first. */
  ready(): Ready {
    if (this.#readyOutstanding) {
      throw new Error("Cannot take a Ready: the previous one was not advanced");
    }
    this.#readyOutstanding = true;
    this.#flushBcast();
    const entries = this.#log.unstableEntries();
    if (entries.length > 0) this.#log.persisting = this.#log.lastIndex();
    const committedEntries = this.#log.entriesToApply(this.#applyLimits);
    if (committedEntries.length > 0) {
      this.#log.applying = committedEntries[committedEntries.length - 1]!.index;
    }
    const rd: Ready = {
      entries,
      committedEntries,
      messages: this.#msgs,
      persistedMessages: this.#msgsAfterPersist,
      readStates: this.#readStates,
    };
    this.#msgs = [];
    this.#msgsAfterPersist = [];
    this.#readStates = [];
    const hs = this.#hardState();
    if (!sameHardState(hs, this.#prevHardState)) {
      rd.hardState = hs;
      this.#prevHardState = hs;
    }
    const ss = this.#softState();
    if (!sameSoftState(ss, this.#prevSoftState)) {
      rd.softState = ss;
      this.#prevSoftState = ss;
    }
    if (this.#pendingSnapshot) {
      rd.snapshot = this.#pendingSnapshot;
      this.#pendingSnapshot = undefined;
    }
    return rd;
  }

  /** The runtime finished a Ready: persisted, sent and applied what it asked. */
  advance(rd: Ready): void {
    if (!this.#readyOutstanding) throw new Error("Cannot advance: no Ready is outstanding");
    this.#readyOutstanding = false;
    if (rd.hardState) {
      this.#durableTerm = rd.hardState.term;
      this.#durableVote = rd.hardState.vote;
    }
    if (rd.snapshot) this.#log.stableTo(rd.snapshot.meta.index, rd.snapshot.meta.term);
    const last = rd.entries[rd.entries.length - 1];
    if (last) this.#log.stableTo(last.index, last.term);
    const applied = rd.committedEntries[rd.committedEntries.length - 1];
    if (applied) this.#log.applied = Math.max(this.#log.applied, applied.index);
    this.#log.applied = Math.max(this.#log.applied, this.#log.snapIndex);
    this.#log.applying = Math.max(this.#log.applying, this.#log.applied);
    const st = this.#state;
    if (st.role === "leader") {
      // The leader counts its own copy only once it is durable.
      const self = st.progress.get(this.id);
      if (self && self.maybeUpdate(this.#log.stable) && this.#maybeCommit(st)) {
        this.#committed(st);
      }
    }
  }

  /**
   * Takes the messages that may be sent at once (they depend on nothing
   * being persisted), so heartbeats never wait behind a slow disk. The rest
   * come out in the next Ready.
   */
  takeMessages(): Message[] {
    this.#flushBcast();
    const msgs = this.#msgs;
    this.#msgs = [];
    return msgs;
  }

  /**
   * Committed entries, persisted here, that no Ready or earlier call handed
   * out. Callable while a Ready is outstanding, so the runtime can apply
   * what a quorum acknowledged without waiting for its own fsync of newer
   * entries. Apply them in order after everything handed out before, then
   * call {@linkcode appliedTo}.
   */
  takeCommittedEntries(): Entry[] {
    const entries = this.#log.entriesToApply(this.#applyLimits);
    const last = entries[entries.length - 1];
    if (last) this.#log.applying = last.index;
    return entries;
  }

  /** The runtime applied the entries {@linkcode takeCommittedEntries} gave, through `index`. */
  appliedTo(index: number): void {
    if (index > this.#log.applying) {
      throw new RangeError(
        `Cannot mark ${index} applied: only ${this.#log.applying} was handed out`,
      );
    }
    this.#log.applied = Math.max(this.#log.applied, index);
  }

  /** True if this leader's commit index moved and its followers have not been told yet. */
  get commitPending(): boolean {
    return this.#state.role === "leader" && this.#state.commitPending;
  }

  /**
   * Tells the followers the commit index now, if it moved since they were
   * last told (an append of no entries each). The runtime calls this when no
   * append has carried it for a moment; true if messages were queued.
   */
  flushCommit(): boolean {
    const st = this.#state;
    if (st.role !== "leader" || !st.commitPending) return false;
    this.#bcastAppend(st);
    return true;
  }

  // ---------------------------------------------------------------- queries

  get term(): number {
    return this.#term;
  }

  get role(): Role {
    return this.#state.role;
  }

  get leader(): NodeId {
    return this.#leader;
  }

  get removed(): boolean {
    return this.#removed;
  }

  /** The current membership (committed changes only). */
  conf(): ConfState {
    return this.#conf;
  }

  /** Whether a new membership change may be proposed on this leader now. */
  canChangeConf(): boolean {
    const st = this.#state;
    return st.role === "leader" && this.#committedInCurrentTerm() &&
      st.pendingConfIndex <= this.#log.committed;
  }

  status(): CoreStatus {
    const s: CoreStatus = {
      id: this.id,
      term: this.#term,
      vote: this.#vote,
      commit: this.#log.committed,
      applied: this.#log.applied,
      firstIndex: this.#log.firstIndex(),
      lastIndex: this.#log.lastIndex(),
      stable: this.#log.stable,
      role: this.#state.role,
      leader: this.#leader,
      conf: this.#conf,
      removed: this.#removed,
    };
    if (this.#state.role === "leader") {
      s.progress = {};
      for (const [id, pr] of this.#state.progress) {
        s.progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          active: pr.recentActive,
        };
      }
    }
    return s;
  }

  /** Every entry held in memory from `lo` on (for tests and the simulator). */
  entriesFrom(lo: number): Entry[] {
    return this.#log.entriesFrom(lo);
  }

  // ---------------------------------------------------------------- terms and roles

  #hardState(): HardState {
    return { term: this.#term, vote: this.#vote, commit: this.#log.committed };
  }

  #softState(): SoftState {
    return { leader: this.#leader, role: this.#state.role, removed: this.#removed };
  }

  /** §5.1: a message from a newer term. Returns false if the message is to be ignored. */
  #stepHigherTerm(m: Message): boolean {
    if (m.type === "vote" || m.type === "preVote") {
      const force = m.context !== undefined && sameBytes(m.context, CAMPAIGN_TRANSFER);
      const inLease = this.#checkQuorum && this.#leader !== NONE &&
        this.#electionElapsed < this.#electionTicks;
      if (!force && inLease) {
        // §4.2.3: a node that hears from a live leader ignores disruptive votes.
        this.#logLine("ignored vote request within lease", {
          id: this.id,
          from: m.from,
          term: m.term,
          ourTerm: this.#term,
        });
        return false;
      }
    }
    if (m.type === "preVote") return true; // a pre-vote never changes our term
    if (m.type === "preVoteResp" && !m.reject) return true; // we bump our term when we win
    this.#logLine("saw a higher term", { id: this.id, from: m.from, type: m.type, term: m.term });
    const leader = m.type === "app" || m.type === "heartbeat" || m.type === "snap" ? m.from : NONE;
    this.#becomeFollower(m.term, leader);
    return true;
  }

  #stepLowerTerm(m: Message): void {
    if ((this.#checkQuorum || this.#preVote) && (m.type === "heartbeat" || m.type === "app")) {
      // A stale leader (or a node that rejoined with a higher term during a
      // partition) learns our term from this answer and steps down.
      this.#send(message({ type: "appResp", from: this.id, to: m.from, term: this.#term }));
    } else if (m.type === "preVote") {
      this.#send(
        message({ type: "preVoteResp", from: this.id, to: m.from, term: this.#term, reject: true }),
      );
    }
    // Anything else from an old term is ignored.
  }

  #becomeFollower(term: number, leader: NodeId): void {
    const wasLeader = this.#state.role === "leader";
    this.#reset(term);
    this.#state = { role: "follower" };
    this.#leader = leader;
    if (wasLeader) this.#logLine("stepped down", { id: this.id, term });
  }

  #becomeCandidate(pre: boolean): void {
    if (this.#state.role === "leader") throw new Error("Cannot become a candidate from leader");
    if (pre) {
      // A pre-candidate changes neither term nor vote (thesis §9.6).
      this.#state = { role: "preCandidate", votes: new Map() };
      this.#leader = NONE;
    } else {
      this.#reset(this.#term + 1);
      this.#vote = this.id;
      this.#state = { role: "candidate", votes: new Map() };
    }
    this.#logLine(pre ? "became pre-candidate" : "became candidate", {
      id: this.id,
      term: this.#term,
    });
  }

  #becomeLeader(): void {
    const progress = new Map<NodeId, Progress>();
    const next = this.#log.lastIndex() + 1;
    for (const id of this.#conf.voters) {
      progress.set(id, new Progress(next, false, this.#inflightMessagesMax));
    }
    for (const id of this.#conf.learners) {
      progress.set(id, new Progress(next, true, this.#inflightMessagesMax));
    }
    this.#reset(this.#term);
    const st: LeaderState = {
      role: "leader",
      progress,
      // Diego's single-server-change fix: no membership change before an
      // entry of this term commits, which also covers any older change.
      pendingConfIndex: this.#log.lastIndex(),
      reads: [],
      readsBeforeCommit: [],
      transferee: NONE,
      bcastPending: false,
      commitPending: false,
      forwarded: new Map(),
    };
    this.#state = st;
    this.#leader = this.id;
    const self = progress.get(this.id);
    if (self) {
      self.becomeReplicate();
      self.maybeUpdate(this.#log.stable);
      self.recentActive = true;
    }
    this.#logLine("became leader", { id: this.id, term: this.#term });
    // §5.4.2: an empty entry of our term lets earlier entries commit.
    this.#appendEntries([{ index: 0, term: 0, type: "normal", data: new Uint8Array(0) }]);
    this.#bcastAppend(st);
  }

  #reset(term: number): void {
    if (this.#term !== term) {
      this.#term = term;
      this.#vote = NONE;
    }
    this.#leader = NONE;
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#resetRandomizedElectionTimeout();
  }

  #resetRandomizedElectionTimeout(): void {
    this.#randomizedElectionTimeout = this.#electionTicks +
      Math.floor(this.#random() * this.#electionTicks);
  }

  /** A voter that was not removed may campaign. */
  #promotable(): boolean {
    return !this.#removed && this.#conf.voters.includes(this.id);
  }

  // ---------------------------------------------------------------- ticks

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#promotable() && this.#electionElapsed >= this.#randomizedElectionTimeout) {
      this.#electionElapsed = 0;
      this.campaign();
    }
  }

  #tickHeartbeat(st: LeaderState): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#electionTicks) {
      this.#electionElapsed = 0;
      if (this.#checkQuorum && !this.#checkQuorumActive(st)) {
        this.#logLine("stepped down: no quorum heard within an election timeout", {
          id: this.id,
          term: this.#term,
        });
        this.#becomeFollower(this.#term, NONE);
        return;
      }
      if (st.transferee !== NONE) {
        this.#logLine("leadership transfer timed out", { id: this.id, to: st.transferee });
        st.transferee = NONE;
      }
    }
    if (this.#heartbeatElapsed >= this.#heartbeatTicks) {
      this.#heartbeatElapsed = 0;
      this.#bcastHeartbeat(st);
    }
  }

  #checkQuorumActive(st: LeaderState): boolean {
    const active = new Set<NodeId>();
    for (const [id, pr] of st.progress) {
      if (id === this.id || pr.recentActive) active.add(id);
      if (id !== this.id) pr.recentActive = false;
    }
    return hasQuorum(this.#conf.voters, active);
  }

  // ---------------------------------------------------------------- elections

  #hup(kind: "preCandidate" | "candidate", transfer: boolean): void {
    if (this.#state.role === "leader") return;
    if (!this.#promotable()) {
      this.#logLine("cannot campaign: not a voter", { id: this.id });
      return;
    }
    this.#campaign(kind, transfer);
  }

  #campaign(kind: "preCandidate" | "candidate", transfer: boolean): void {
    const pre = kind === "preCandidate";
    this.#becomeCandidate(pre);
    const term = pre ? this.#term + 1 : this.#term;
    const st = this.#state as CandidateState;
    // Our own vote counts at once (for a real vote it is persisted before any
    // request goes out, since requests are sent after the persist).
    st.votes.set(this.id, true);
    if (this.#tally(st)) return;
    for (const id of this.#conf.voters) {
      if (id === this.id) continue;
      const m = message({
        type: pre ? "preVote" : "vote",
        from: this.id,
        to: id,
        term,
        index: this.#log.lastIndex(),
        logTerm: this.#log.lastTerm(),
      });
      if (transfer) m.context = CAMPAIGN_TRANSFER;
      this.#send(m);
    }
  }

  /** Counts votes; returns true if the round ended. */
  #tally(st: CandidateState): boolean {
    const result = voteResult(this.#conf.voters, st.votes);
    if (result === "won") {
      if (st.role === "preCandidate") this.#campaign("candidate", false);
      else this.#becomeLeader();
      return true;
    }
    if (result === "lost") {
      this.#becomeFollower(this.#term, NONE);
      return true;
    }
    return false;
  }

  #stepVote(m: Message): void {
    // §5.2, §5.4.1: one vote per term, only for a log at least as up to date.
    const canVote = this.#vote === m.from ||
      (this.#vote === NONE && this.#leader === NONE) ||
      (m.type === "preVote" && m.term > this.#term);
    const respType: MessageType = m.type === "vote" ? "voteResp" : "preVoteResp";
    if (canVote && this.#log.isUpToDate(m.index, m.logTerm)) {
      // A granted pre-vote answers in the asked term, so the pre-candidate counts it.
      this.#send(message({ type: respType, from: this.id, to: m.from, term: m.term }));
      if (m.type === "vote") {
        this.#electionElapsed = 0;
        this.#vote = m.from;
      }
    } else {
      this.#send(
        message({ type: respType, from: this.id, to: m.from, term: this.#term, reject: true }),
      );
    }
  }

  #stepCandidate(st: CandidateState, m: Message): void {
    switch (m.type) {
      case "prop":
        return; // no leader to take it
      case "app":
        this.#becomeFollower(m.term, m.from);
        this.#handleAppend(m);
        return;
      case "heartbeat":
        this.#becomeFollower(m.term, m.from);
        this.#handleHeartbeat(m);
        return;
      case "snap":
        this.#becomeFollower(m.term, m.from);
        this.#handleSnapshot(m);
        return;
      case "voteResp":
      case "preVoteResp": {
        const mine = st.role === "candidate" ? "voteResp" : "preVoteResp";
        if (m.type !== mine) return;
        st.votes.set(m.from, !m.reject);
        this.#tally(st);
        return;
      }
    }
  }

  // ---------------------------------------------------------------- follower

  #stepFollower(m: Message): void {
    switch (m.type) {
      case "prop":
        if (this.#leader === NONE) return;
        this.#send({ ...m, to: this.#leader });
        return;
      case "app":
        this.#electionElapsed = 0;
        this.#leader = m.from;
        this.#handleAppend(m);
        return;
      case "heartbeat":
        this.#electionElapsed = 0;
        this.#leader = m.from;
        this.#handleHeartbeat(m);
        return;
      case "snap":
        this.#electionElapsed = 0;
        this.#leader = m.from;
        this.#handleSnapshot(m);
        return;
      case "transferLeader":
        if (this.#leader === NONE) return;
        this.#send({ ...m, to: this.#leader });
        return;
      case "timeoutNow":
        // Thesis §3.10: the leader asks us to campaign at once, skipping pre-vote.
        this.#logLine("campaigning on a leadership transfer", { id: this.id, term: this.#term });
        this.#hup("candidate", true);
        return;
      case "readIndex":
        if (this.#leader === NONE) return;
        this.#send({ ...m, to: this.#leader });
        return;
      case "readIndexResp":
        if (m.context) this.#readStates.push({ index: m.index, context: m.context });
        return;
    }
  }

  #handleAppend(m: Message): void {
    if (m.index < this.#log.committed) {
      this.#send(
        message({ type: "appResp", from: this.id, to: m.from, index: this.#log.committed }),
      );
      return;
    }
    if (this.#log.matchTerm(m.index, m.logTerm)) {
      const { lastNew, changedFrom } = this.#log.maybeAppend(m.index, m.entries);
      if (changedFrom !== Infinity) this.#rebuildConf(changedFrom);
      this.#commitTo(Math.min(m.commit, lastNew));
      this.#send(message({ type: "appResp", from: this.id, to: m.from, index: lastNew }));
      return;
    }
    // §5.3 with fast backtracking: point the leader at where our log may match.
    const hintIndex = this.#log.findConflictByTerm(
      Math.min(m.index, this.#log.lastIndex()),
      m.logTerm,
    );
    this.#send(message({
      type: "appResp",
      from: this.id,
      to: m.from,
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: this.#log.term(hintIndex) ?? 0,
    }));
  }

  #handleHeartbeat(m: Message): void {
    this.#commitTo(Math.min(m.commit, this.#log.lastIndex()));
    const resp = message({ type: "heartbeatResp", from: this.id, to: m.from });
    if (m.context) resp.context = m.context;
    this.#send(resp);
  }

  #handleSnapshot(m: Message): void {
    const snap = m.snapshot;
    if (!snap) return;
    const { index, term } = snap.meta;
    if (index <= this.#log.committed) {
      this.#send(
        message({ type: "appResp", from: this.id, to: m.from, index: this.#log.committed }),
      );
      return;
    }
    if (this.#log.matchTerm(index, term)) {
      // We already hold the snapshot's entries: just fast-forward the commit.
      this.#commitTo(index);
      this.#send(message({ type: "appResp", from: this.id, to: m.from, index }));
      return;
    }
    this.#logLine("installing snapshot", { id: this.id, index, term });
    this.#log.restore(index, term);
    this.#confBase = snap.meta.conf;
    this.#confHistory = [];
    this.#conf = snap.meta.conf;
    this.#confCommitScan = index;
    this.#removed = this.#conf.removed.includes(this.id);
    this.#snapshotMeta = snap.meta;
    this.#pendingSnapshot = snap;
    this.#send(message({ type: "appResp", from: this.id, to: m.from, index }));
  }

  #commitTo(index: number): void {
    if (this.#log.commitTo(index)) this.#onCommittedConfChanges();
  }

  /** The configuration in force at `index` (the newest change at or before it). */
  #confAt(index: number): ConfState {
    let conf = this.#confBase;
    for (const h of this.#confHistory) {
      if (h.index > index) break;
      conf = h.conf;
    }
    return conf;
  }

  /** True if `id`'s removal is committed (so telling it so is final). */
  #committedRemoved(id: NodeId): boolean {
    return this.#conf.removed.includes(id) &&
      this.#confAt(this.#log.committed).removed.includes(id);
  }

  /**
   * Recomputes the configuration from the log's entries at and after
   * `from` (they were appended, or replaced a conflicting suffix).
   */
  #rebuildConf(from: number): void {
    while (this.#confHistory.length > 0 && this.#confHistory.at(-1)!.index >= from) {
      this.#confHistory.pop();
    }
    let conf = this.#confHistory.at(-1)?.conf ?? this.#confBase;
    for (const e of this.#log.entriesFrom(Math.max(from, this.#log.firstIndex()))) {
      if (e.type !== "conf") continue;
      let cc: ConfChange;
      try {
        cc = decodeConfChange(e.data);
      } catch {
        this.#logLine("ignored a malformed membership entry", { id: this.id, index: e.index });
        continue;
      }
      // A proposal was validated by its leader; re-checking against the
      // configuration before it keeps every node's outcome the same.
      if (confChangeError(conf, cc) !== undefined) continue;
      conf = applyConfChange(conf, cc);
      this.#confHistory.push({ index: e.index, conf, change: cc });
    }
    this.#conf = conf;
  }

  /** Effects of membership changes that just committed: a removed node learns it is out. */
  #onCommittedConfChanges(): void {
    const committed = this.#log.committed;
    for (const h of this.#confHistory) {
      if (h.index <= this.#confCommitScan) continue;
      if (h.index > committed) break;
      this.#logLine("membership change committed", {
        id: this.id,
        index: h.index,
        change: h.change.type,
        node: h.change.nodeId,
      });
      if (h.change.type === "remove" && h.change.nodeId === this.id) {
        this.#removed = true;
        if (this.#state.role === "leader") this.#stepDownRemoved(this.#state);
      } else if (h.change.type === "remove" && this.#state.role === "leader") {
        // Tell the removed node now (it gets no more appends), so it can shut down at once.
        this.#send(message({ type: "removed", from: this.id, to: h.change.nodeId }));
      }
    }
    this.#confCommitScan = Math.max(this.#confCommitScan, committed);
  }

  // ---------------------------------------------------------------- leader

  /** Brings the leader's per-peer progress in line with the configuration. */
  #syncProgress(st: LeaderState): void {
    const members = new Set([...this.#conf.voters, ...this.#conf.learners]);
    for (const id of [...st.progress.keys()]) {
      // The leader keeps its own record while its removal is pending.
      if (!members.has(id) && id !== this.id) {
        st.progress.delete(id);
        if (st.transferee === id) st.transferee = NONE;
      }
    }
    for (const id of members) {
      const learner = this.#conf.learners.includes(id);
      const pr = st.progress.get(id);
      if (pr) {
        pr.isLearner = learner;
        continue;
      }
      const fresh = new Progress(this.#log.lastIndex() + 1, learner, this.#inflightMessagesMax);
      fresh.recentActive = true;
      st.progress.set(id, fresh);
    }
  }

  /**
   * Our own removal committed: tell the followers (so they apply it too) and
   * hand leadership to the most up-to-date voter, then step down.
   */
  #stepDownRemoved(st: LeaderState): void {
    this.#bcastAppend(st);
    const last = this.#log.lastIndex();
    const heir = this.#conf.voters.find((id) => st.progress.get(id)?.match === last);
    if (heir !== undefined) {
      this.#send(message({ type: "timeoutNow", from: this.id, to: heir }));
    }
    this.#logLine("stepped down: removed from the cluster", { id: this.id, heir: heir ?? NONE });
    this.#becomeFollower(this.#term, NONE);
  }

  #stepLeader(st: LeaderState, m: Message): void {
    switch (m.type) {
      case "beat":
        this.#bcastHeartbeat(st);
        return;
      case "prop":
        this.#leaderAppendProposal(st, m);
        return;
      case "readIndex":
        this.#leaderReadIndex(st, m);
        return;
      case "transferLeader":
        this.#leaderTransfer(st, m.from);
        return;
    }
    const pr = st.progress.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case "appResp":
        this.#handleAppendResponse(st, pr, m);
        return;
      case "heartbeatResp":
        pr.recentActive = true;
        pr.probeSent = false;
        // Appends may have been lost: free a slot so a full window cannot stall forever.
        if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirst();
        if (pr.match < this.#log.lastIndex()) this.#sendAppend(st, m.from);
        if (m.context) this.#leaderReadAck(st, m.from, m.context);
        return;
      case "snapStatus":
        if (pr.state !== "snapshot") return;
        if (m.reject) pr.pendingSnapshot = 0;
        this.#logLine(m.reject ? "snapshot send failed" : "snapshot sent", {
          id: this.id,
          to: m.from,
        });
        pr.becomeProbe();
        // Wait for the follower's answer (or a heartbeat) before probing again.
        pr.probeSent = true;
        return;
      case "unreachable":
        if (pr.state === "replicate") pr.becomeProbe();
        return;
    }
  }

  #leaderAppendProposal(st: LeaderState, m: Message): boolean {
    if (st.transferee !== NONE) return false;
    if (!st.progress.has(this.id) || this.#removed) return false;
    if (this.#log.lastIndex() - this.#log.committed >= this.#uncommittedEntriesMax) return false;
    for (const e of m.entries) {
      if (e.type !== "conf") continue;
      if (!this.canChangeConf()) {
        this.#logLine("refused membership change: another is pending", { id: this.id });
        return false;
      }
      let cc: ConfChange;
      try {
        cc = decodeConfChange(e.data);
      } catch {
        return false;
      }
      const error = confChangeError(this.#conf, cc);
      if (error !== undefined) {
        this.#logLine("refused membership change", { id: this.id, reason: error });
        return false;
      }
    }
    const last = this.#appendEntries(
      m.entries.map((e) => ({ index: 0, term: 0, type: e.type, data: e.data })),
    );
    for (const e of m.entries) if (e.type === "conf") st.pendingConfIndex = last;
    if (m.from !== this.id && m.from !== NONE) st.forwarded.set(m.from, last);
    st.bcastPending = true;
    return true;
  }

  /**
   * The commit index moved: the followers are told lazily, except those
   * waiting to answer a write they forwarded, which get an append now.
   */
  #committed(st: LeaderState): void {
    st.commitPending = true;
    for (const [id, index] of st.forwarded) {
      if (index <= this.#log.committed && this.#sendAppend(st, id)) st.forwarded.delete(id);
    }
  }

  /** Appends entries of this term at the end of the log; returns the last index. */
  #appendEntries(entries: Entry[]): number {
    let index = this.#log.lastIndex();
    for (const e of entries) {
      e.index = ++index;
      e.term = this.#term;
    }
    this.#log.append(entries);
    if (entries.some((e) => e.type === "conf")) {
      this.#rebuildConf(entries[0]!.index);
      if (this.#state.role === "leader") this.#syncProgress(this.#state);
    }
    return index;
  }

  #handleAppendResponse(st: LeaderState, pr: Progress, m: Message): void {
    pr.recentActive = true;
    if (m.reject) {
      let next = m.rejectHint;
      if (m.logTerm > 0) next = this.#log.findConflictByTerm(m.rejectHint, m.logTerm);
      if (pr.maybeDecrTo(m.index, next)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.#sendAppend(st, m.from);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) return;
    if (pr.state === "probe") pr.becomeReplicate();
    else if (pr.state === "snapshot" && pr.match >= pr.pendingSnapshot) {
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === "replicate") pr.inflights.freeLE(m.index);

    // A new commit index is not broadcast at once: it rides on the next append
    // or heartbeat, or goes when the runtime calls flushCommit() (soon, if
    // nothing else is sent). A write is answered by the leader, and a read on
    // a follower gets the commit index in the heartbeat round that confirms
    // it, so neither waits; under a steady stream of writes this halves the
    // messages, and the followers' wake-ups, per write.
    if (this.#maybeCommit(st)) this.#committed(st);
    if (this.#state !== st) return; // we committed our own removal and stepped down
    if (wasPaused) this.#sendAppend(st, m.from);
    // Keep the window full while there is more to send.
    for (let i = 0; i < this.#inflightMessagesMax && this.#sendAppend(st, m.from, false); i++);
    if (m.from === st.transferee && pr.match === this.#log.lastIndex()) {
      this.#send(message({ type: "timeoutNow", from: this.id, to: m.from, term: this.#term }));
      this.#logLine("sent timeout-now for leadership transfer", { id: this.id, to: m.from });
    }
  }

  /**
   * §5.3, §5.4.2: commit the highest index on a quorum, only if it is of our
   * term. True if the commit index moved and we are still this leader.
   */
  #maybeCommit(st: LeaderState): boolean {
    const ci = committedIndex(this.#conf.voters, (id) => st.progress.get(id)?.match ?? 0);
    if (ci <= this.#log.committed || this.#log.term(ci) !== this.#term) return false;
    const firstOfTerm = !this.#committedInCurrentTerm();
    this.#commitTo(ci);
    if (this.#state !== st) return false; // our own removal committed: we stepped down
    if (firstOfTerm) {
      // Reads that waited for our first commit may go now.
      const waiting = st.readsBeforeCommit;
      st.readsBeforeCommit = [];
      for (const r of waiting) this.#leaderReadIndex(st, r);
    }
    return true;
  }

  #committedInCurrentTerm(): boolean {
    return this.#log.term(this.#log.committed) === this.#term;
  }

  #flushBcast(): void {
    const st = this.#state;
    if (st.role !== "leader" || !st.bcastPending) return;
    st.bcastPending = false;
    this.#bcastAppend(st);
  }

  #bcastAppend(st: LeaderState): void {
    st.commitPending = false;
    for (const id of st.progress.keys()) if (id !== this.id) this.#sendAppend(st, id);
  }

  #bcastHeartbeat(st: LeaderState, context?: Uint8Array): void {
    st.commitPending = false;
    const ctx = context ?? st.reads[st.reads.length - 1]?.context;
    for (const [id, pr] of st.progress) {
      if (id === this.id) continue;
      const m = message({
        type: "heartbeat",
        from: this.id,
        to: id,
        term: this.#term,
        // A follower may not hold entries beyond its match: never commit past them.
        commit: Math.min(pr.match, this.#log.committed),
      });
      if (ctx) m.context = ctx;
      this.#send(m);
    }
  }

  /** Sends an append (or a snapshot) to `to`; false if nothing was sent. */
  #sendAppend(st: LeaderState, to: NodeId, sendIfEmpty = true): boolean {
    const pr = st.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.#log.term(prevIndex);
    const entries = this.#log.slice(pr.next, this.#log.lastIndex(), this.#limits);
    if (prevTerm === undefined || entries === undefined) {
      // §7: what the follower needs was compacted away: send a snapshot.
      const meta = this.#snapshotMeta;
      this.#send(message({
        type: "snap",
        from: this.id,
        to,
        term: this.#term,
        snapshot: { meta, data: new Uint8Array(0) },
      }));
      pr.becomeSnapshot(meta.index);
      this.#logLine("sending snapshot", { id: this.id, to, index: meta.index });
      return true;
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.#send(message({
      type: "app",
      from: this.id,
      to,
      term: this.#term,
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.#log.committed,
    }));
    const last = entries[entries.length - 1];
    if (last) {
      if (pr.state === "replicate") {
        pr.next = last.index + 1;
        pr.inflights.add(last.index);
      } else if (pr.state === "probe") {
        pr.probeSent = true;
      }
    } else if (pr.state === "probe") {
      pr.probeSent = true;
    }
    return true;
  }

  #leaderReadIndex(st: LeaderState, m: Message): void {
    const context = m.context ?? new Uint8Array(0);
    if (!this.#committedInCurrentTerm()) {
      // Our commit index may be stale until an entry of our term commits.
      if (st.readsBeforeCommit.length < 4096) st.readsBeforeCommit.push(m);
      return;
    }
    const index = this.#log.committed;
    if (this.#conf.voters.length === 1 && this.#conf.voters[0] === this.id) {
      this.#releaseRead({ index, from: m.from, context, acks: new Set() });
      return;
    }
    const read: PendingRead = { index, from: m.from, context, acks: new Set([this.id]) };
    st.reads.push(read);
    this.#bcastHeartbeat(st, context);
  }

  #leaderReadAck(st: LeaderState, from: NodeId, context: Uint8Array): void {
    const at = st.reads.findIndex((r) => sameBytes(r.context, context));
    if (at < 0) return;
    st.reads[at]!.acks.add(from);
    if (!hasQuorum(this.#conf.voters, st.reads[at]!.acks)) return;
    // A quorum confirmed our leadership after this read (and every earlier one) arrived.
    const released = st.reads.splice(0, at + 1);
    for (const r of released) this.#releaseRead(r);
  }

  #releaseRead(r: PendingRead): void {
    if (r.from === this.id || r.from === NONE) {
      this.#readStates.push({ index: r.index, context: r.context });
    } else {
      this.#send(message({
        type: "readIndexResp",
        from: this.id,
        to: r.from,
        term: this.#term,
        index: r.index,
        context: r.context,
      }));
    }
  }

  #leaderTransfer(st: LeaderState, to: NodeId): void {
    const pr = st.progress.get(to);
    if (to === this.id || !pr || pr.isLearner) return;
    if (st.transferee === to) return;
    st.transferee = to;
    this.#electionElapsed = 0; // the transfer must finish within an election timeout
    this.#logLine("transferring leadership", { id: this.id, to });
    if (pr.match === this.#log.lastIndex()) {
      this.#send(message({ type: "timeoutNow", from: this.id, to, term: this.#term }));
    } else {
      this.#sendAppend(st, to);
    }
  }

  // ---------------------------------------------------------------- sending

  /**
   * Queues a message. A leader's appends, heartbeats and snapshots may go at
   * once; anything that promises persisted state (votes, append
   * acknowledgements) waits for the persist (thesis §3.8).
   */
  #send(m: Message): void {
    if (VOTE_TYPES.has(m.type)) {
      // Vote messages carry the term they are about (a pre-vote asks for the next one).
      if (m.term === 0) throw new Error(`Cannot send ${m.type} without a term`);
    } else if (m.type === "prop" || m.type === "readIndex" || m.type === "transferLeader") {
      m.term = 0; // forwarded requests are termless, like local ones
    } else {
      m.term = this.#term;
    }
    const durable = this.#term === this.#durableTerm && this.#vote === this.#durableVote;
    if (durable && IMMEDIATE.has(m.type)) this.#msgs.push(m);
    else this.#msgsAfterPersist.push(m);
  }
}

const VOTE_TYPES: ReadonlySet<MessageType> = new Set<MessageType>([
  "vote",
  "preVote",
  "voteResp",
  "preVoteResp",
]);

const IMMEDIATE: ReadonlySet<MessageType> = new Set<MessageType>([
  "app",
  "heartbeat",
  "snap",
  "timeoutNow",
  "readIndexResp",
  "prop",
  "readIndex",
  "transferLeader",
  "heartbeatResp",
  "removed",
]);

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function sameSoftState(a: SoftState, b: SoftState): boolean {
  return a.leader === b.leader && a.role === b.role && a.removed === b.removed;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
