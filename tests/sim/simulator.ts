/**
 * The deterministic cluster simulator: several nodes of the real Raft core in
 * one process, on a simulated network and simulated disks, driven by one
 * seeded generator. Everything — the cluster size, the fault rates, every
 * message's latency, every crash — comes from the seed, so a failing seed
 * replays exactly.
 *
 * A run has two phases. In the fault phase clients write and read, members
 * are added, promoted and removed, leadership is transferred, and the
 * network and the nodes misbehave. Then everything heals (a perfect network,
 * every crashed node restarted) and a new write must commit on a quorum
 * within a tick budget. Safety invariants ({@linkcode Checker}) are checked
 * after every event of both phases.
 *
 * Time is in simulated milliseconds; a Raft tick is {@linkcode TICK_MS}.
 *
 * @module
 */

import { type CoreOptions, type CoreStatus, RaftCore } from "../../raft/core.ts";
import { encodeConfChange } from "../../raft/core.ts";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  type InitialState,
  type Message,
  message,
  type NodeId,
  type Ready,
  type Role,
} from "../../raft/types.ts";
import { Checker, KvHistory } from "./checker.ts";
import { EventQueue } from "./event_queue.ts";
import { decodePut, encodePut, KvMachine } from "./kv_machine.ts";
import { drawNetworkFaults, Network, type NetworkFaults, PERFECT_NETWORK } from "./network.ts";
import { Prng } from "./prng.ts";
import { SimFailure } from "./sim_failure.ts";
import { recordCount, SimStorage } from "./sim_storage.ts";

/** Simulated milliseconds per Raft tick. */
export const TICK_MS = 10;

/** Everything about a run that the seed decides. */
export interface SimConfig {
  clusterSize: number;
  /** "static": every initial voter bootstrapped identically; "dynamic": node 1 alone, the rest added through membership changes. */
  bootstrap: "static" | "dynamic";
  electionTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  network: NetworkFaults;
  /** Per-node tick jitter: each tick lands within ± this of its nominal time. */
  tickJitterMs: number;
  /**
   * Each node's tick period is TICK_MS ± up to this: its clock runs fast or
   * slow (0.05 ms in 10 is 0.5%, far more than real quartz drift; a larger
   * skew starves a slow-clocked node of elections when pre-vote is off).
   */
  clockDriftMs: number;
  /** Entries per append message (small values split a new leader's catch-up into many appends). */
  batchEntriesMax: number;
  /** Appends in flight per follower. */
  inflightMessagesMax: number;
  /** A Ready's fsync completes after a delay uniform in [0, max]. */
  fsyncDelayMaxMs: number;
  /**
   * How long a leader leaves a new commit index for an append or heartbeat to
   * carry before it tells its followers on its own (`flushCommit`).
   */
  commitFlushMs: number;
  /** Probability that a crash with a write in flight keeps a prefix of it (a torn tail). */
  tornWriteRate: number;
  crashRatePerTick: number;
  /** Probability of a crash while a Ready holding a membership change is being written. */
  crashOnConfWriteRate: number;
  downtimeTicksMax: number;
  partitionRatePerTick: number;
  partitionTicksMax: number;
  writesPerTick: number;
  readsPerTick: number;
  keyCount: number;
  confChangeRatePerTick: number;
  transferRatePerTick: number;
  /** The application snapshots every this many applied entries (Infinity: never). */
  compactEveryEntries: number;
  /** Entries kept behind a snapshot for slow followers. */
  compactKeepEntries: number;
  faultTicks: number;
  healTicksMax: number;
}

/**
 * Driver bugs the simulator can plant in itself: a volatile hard state
 * (votes forgotten on crash), a disk that loses the newest entries on crash
 * (fsync lies), reads answered from local state without ReadIndex, and
 * applying entries before they commit.
 */
export type Sabotage = "volatileHardState" | "lossyDisk" | "localReads" | "applyUncommitted";

/** Options of one run. */
export interface SimOptions {
  seed: number;
  /** Receives one line per event when given. */
  trace?: (line: string) => void;
  /**
   * Deliberately breaks the driver, to prove that the checker notices
   * (the simulator's self-test). Never set in real runs.
   */
  sabotage?: Sabotage;
  /** Overrides the fault phase's length. */
  faultTicks?: number;
  /** Overrides parts of the drawn configuration (to aim a batch of seeds at one area). */
  overrides?: Partial<SimConfig>;
}

/** Counters of one run. */
export interface SimStats {
  clusterSize: number;
  bootstrap: string;
  events: number;
  ticks: number;
  delivered: number;
  dropped: number;
  crashes: number;
  partitions: number;
  leaders: number;
  maxTerm: number;
  committed: number;
  writesAcknowledged: number;
  readsCompleted: number;
  confChanges: number;
  snapshotsSent: number;
  compactions: number;
  recoveryTicks: number;
}

/** The outcome of one run. */
export interface SimResult {
  seed: number;
  ok: boolean;
  failure?: string;
  stats: SimStats;
}

/** Draws a run's configuration from its generator. */
export function drawConfig(rng: Prng): SimConfig {
  const config: SimConfig = {
    clusterSize: rng.pick([3, 3, 5, 5, 7]),
    bootstrap: rng.chance(0.25) ? "dynamic" : "static",
    electionTicks: rng.pick([10, 10, 10, 5, 20]),
    preVote: rng.chance(0.75),
    checkQuorum: rng.chance(0.75),
    network: drawNetworkFaults(rng),
    tickJitterMs: rng.pick([0, 1, 3]),
    clockDriftMs: rng.pick([0, 0, 0.01, 0.05]),
    fsyncDelayMaxMs: rng.pick([0, 1, 4, 15]),
    tornWriteRate: rng.pick([0, 0.5, 1]),
    crashRatePerTick: rng.pick([0, 0.005, 0.01, 0.03, 0.06]),
    downtimeTicksMax: rng.pick([5, 30, 100]),
    crashOnConfWriteRate: rng.pick([0, 0, 0.3]),
    partitionRatePerTick: rng.pick([0, 0.01, 0.02, 0.05]),
    partitionTicksMax: rng.pick([10, 40, 100]),
    writesPerTick: rng.pick([0.2, 1, 3]),
    readsPerTick: rng.pick([0, 0.3, 1]),
    keyCount: rng.pick([1, 3, 10]),
    confChangeRatePerTick: rng.pick([0, 0.005, 0.02, 0.05, 0.2]),
    transferRatePerTick: rng.pick([0, 0.005, 0.02]),
    compactEveryEntries: rng.pick([5, 20, 100, Infinity]),
    compactKeepEntries: rng.pick([0, 3, 20]),
    faultTicks: 900,
    healTicksMax: 0,
    batchEntriesMax: 1024,
    inflightMessagesMax: 256,
    commitFlushMs: 0,
  };
  // Drawn last, so that the draws above keep their meaning for older seeds' settings.
  config.batchEntriesMax = rng.pick([1, 1024, 1024, 1024]);
  // A small window only with large batches: one entry per round trip cannot
  // drain a backlog within the liveness budget after healing.
  const window = rng.pick([1, 2, 8, 256]);
  config.inflightMessagesMax = config.batchEntriesMax >= 1024 ? window : 256;
  // At least thirty election timeouts: without pre-vote a stale voter can win the
  // race to time out (and so reset the up-to-date voter's timer) several
  // rounds in a row by plain luck (seed 931368 with aimed overrides: ten).
  config.healTicksMax = Math.max(300, 30 * config.electionTicks);
  // With a few entries per append, every message the network reorders makes the
  // follower reject what follows and the leader probe again: a backlog drains
  // slowly (a liveness cost of reordering, which TCP does not do).
  if (config.batchEntriesMax < 1024) config.healTicksMax *= 3;
  // 2 is what the runtime does; 30 lets heartbeats (every tick) carry most commits.
  config.commitFlushMs = rng.pick([0, 1, 2, 2, 5, 30]);
  return config;
}

type SimEvent =
  | { kind: "world" }
  | { kind: "tick"; node: NodeId; inc: number }
  | { kind: "deliver"; msg: Message; senderInc: number; reportSnap: boolean }
  | { kind: "snapStatus"; node: NodeId; inc: number; peer: NodeId; reject: boolean }
  | { kind: "fsync"; node: NodeId; inc: number }
  | { kind: "flushCommit"; node: NodeId; inc: number }
  | { kind: "restart"; node: NodeId; inc: number }
  | { kind: "cut"; from: NodeId; to: NodeId }
  | { kind: "restore"; from: NodeId; to: NodeId }
  | { kind: "unreachable"; node: NodeId; inc: number; peer: NodeId }
  | { kind: "crash"; node: NodeId; inc: number };

interface PendingRead {
  id: number;
  key: string;
  invokedAt: number;
  index: number;
}

interface SimNode {
  id: NodeId;
  storage: SimStorage;
  core: RaftCore | undefined;
  /** Bumped on every crash and restart: events for an older incarnation are stale. */
  inc: number;
  kv: KvMachine;
  /** The Ready whose fsync is in flight. */
  pending: Ready | undefined;
  /** Removed from the cluster and shut down for good. */
  stopped: boolean;
  role: Role;
  term: number;
  commit: number;
  /** Leader completeness: the first committed index not yet checked in this node's log. */
  leaderCheckedFrom: number;
  /** Reads waiting for their read state, by context. */
  reads: Map<string, PendingRead>;
  /** Reads with a read index, waiting for the state machine to catch up. */
  readsReady: PendingRead[];
  /** Writes proposed here, by value, waiting to be applied here. */
  writes: Map<string, string>;
  lastSnapshotIndex: number;
  probeApplied: boolean;
  /** A flushCommit event is queued for this incarnation. */
  commitFlushQueued: boolean;
  /**
   * Entries from takeCommittedEntries() while a Ready was being persisted,
   * to apply after that Ready's committed entries (the simulator applies
   * those when the fsync completes).
   */
  applyAfterPending: Entry[];
  /** This node's tick period: clocks drift apart. */
  tickMs: number;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const PROBE_KEY = "probe";
const READ_TIMEOUT_MS = 100 * TICK_MS;
const NODES_MAX = 16;
const VOTERS_MAX = 7;

function fmtMsg(m: Message): string {
  let s = `${m.type} ${m.from}->${m.to} t${m.term}`;
  switch (m.type) {
    case "app":
      s += ` prev=${m.index}/${m.logTerm} ents=${m.entries.length}` +
        (m.entries.length > 0 ? `[${m.entries[0]?.index}..${m.entries.at(-1)?.index}]` : "") +
        ` commit=${m.commit}`;
      break;
    case "appResp":
      s += ` idx=${m.index}` + (m.reject ? ` REJECT hint=${m.rejectHint}/${m.logTerm}` : "");
      break;
    case "vote":
    case "preVote":
      s += ` last=${m.index}/${m.logTerm}`;
      break;
    case "voteResp":
    case "preVoteResp":
      s += m.reject ? " REJECT" : " granted";
      break;
    case "heartbeat":
      s += ` commit=${m.commit}`;
      break;
    case "snap":
      s += ` snap=${m.snapshot?.meta.index}/${m.snapshot?.meta.term}`;
      break;
    case "readIndexResp":
      s += ` idx=${m.index}`;
      break;
  }
  if (m.context !== undefined && m.context.length > 1) s += ` ctx=${textDecoder.decode(m.context)}`;
  return s;
}

function sameIds(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  if (a.length !== b.length) return false;
  const sorted = [...b].sort((x, y) => x - y);
  return [...a].sort((x, y) => x - y).every((id, i) => id === sorted[i]);
}

function sameConf(a: ConfState, b: ConfState): boolean {
  return sameIds(a.voters, b.voters) && sameIds(a.learners, b.learners) &&
    sameIds(a.removed, b.removed);
}

function fmtEntry(e: Entry): string {
  if (e.type === "conf") return `${e.index}/${e.term}:conf`;
  if (e.data.length === 0) return `${e.index}/${e.term}:noop`;
  return `${e.index}/${e.term}:${textDecoder.decode(e.data)}`;
}

/** One simulation run. */
class Simulation {
  readonly seed: number;
  readonly config: SimConfig;
  readonly stats: SimStats;
  #rng: Prng;
  #coreRng: Prng;
  #trace: ((line: string) => void) | undefined;
  #sabotage: Sabotage | undefined;
  #queue = new EventQueue<SimEvent>();
  #network: Network;
  #nodes = new Map<NodeId, SimNode>();
  #checker = new Checker();
  #history = new KvHistory();
  #now = 0;
  #nextNodeId = 1;
  #opSeq = 0;
  #faultEndMs: number;
  #endMs: number;
  #healed = false;
  #healedAt = 0;
  #probeProposedAt = -Infinity;
  #done = false;
  #lastAddAt = -Infinity;

  constructor(options: SimOptions) {
    this.seed = options.seed;
    const root = new Prng(options.seed);
    this.config = drawConfig(root.fork());
    Object.assign(this.config, options.overrides);
    if (options.faultTicks !== undefined) this.config.faultTicks = options.faultTicks;
    this.#rng = root.fork();
    this.#coreRng = root.fork();
    this.#network = new Network(root.fork(), this.config.network);
    this.#trace = options.trace;
    this.#sabotage = options.sabotage;
    this.#faultEndMs = this.config.faultTicks * TICK_MS;
    this.#endMs = this.#faultEndMs + this.config.healTicksMax * TICK_MS;
    this.stats = {
      clusterSize: this.config.clusterSize,
      bootstrap: this.config.bootstrap,
      events: 0,
      ticks: 0,
      delivered: 0,
      dropped: 0,
      crashes: 0,
      partitions: 0,
      leaders: 0,
      maxTerm: 0,
      committed: 0,
      writesAcknowledged: 0,
      readsCompleted: 0,
      confChanges: 0,
      snapshotsSent: 0,
      compactions: 0,
      recoveryTicks: -1,
    };
  }

  // ------------------------------------------------------------------ running

  run(): void {
    const c = this.config;
    this.#t(
      `config ${JSON.stringify({ ...c, compactEveryEntries: String(c.compactEveryEntries) })}`,
    );
    this.#bootstrap();
    this.#queue.push(0, { kind: "world" });
    while (!this.#done) {
      const next = this.#queue.pop();
      if (next === undefined || next.at > this.#endMs) break;
      this.#now = next.at;
      this.stats.events++;
      this.#handle(next.value);
    }
    if (!this.#done) {
      throw new SimFailure(
        `liveness: no write committed on a quorum within ${c.healTicksMax} ticks after healing; ` +
          this.#describeCluster(),
      );
    }
  }

  #bootstrap(): void {
    const n = this.config.bootstrap === "static" ? this.config.clusterSize : 1;
    const entries: Entry[] = [];
    for (let id = 1; id <= n; id++) {
      entries.push({
        index: id,
        term: 1,
        type: "conf",
        data: encodeConfChange({ type: "addVoter", nodeId: id }),
      });
    }
    for (let id = 1; id <= n; id++) {
      const node = this.#createNode();
      node.storage.entries = entries.slice();
      node.storage.hardState = { term: 1, vote: 0, commit: n };
      this.#checker.observeWrite(id, entries, (i) => node.storage.termAt(i));
      this.#start(node);
    }
  }

  #createNode(): SimNode {
    const id = this.#nextNodeId++;
    const node: SimNode = {
      id,
      storage: new SimStorage(),
      core: undefined,
      inc: 0,
      kv: new KvMachine(),
      pending: undefined,
      stopped: false,
      role: "follower",
      term: 0,
      commit: 0,
      leaderCheckedFrom: 1,
      reads: new Map(),
      readsReady: [],
      writes: new Map(),
      lastSnapshotIndex: 0,
      probeApplied: false,
      commitFlushQueued: false,
      applyAfterPending: [],
      tickMs: TICK_MS + this.#rng.float(-this.config.clockDriftMs, this.config.clockDriftMs),
    };
    this.#nodes.set(id, node);
    return node;
  }

  /** Builds a core from the node's durable state and starts its ticks. */
  #start(node: SimNode): void {
    const initial: InitialState = node.storage.load();
    // No committed entry lost: what the disk says is committed agrees with
    // what the cluster applied.
    for (const e of initial.entries) {
      if (e.index > initial.hardState.commit) break;
      const c = this.#checker.committed[e.index];
      if (c !== undefined && c.term !== e.term) {
        throw new SimFailure(
          `durability: node ${node.id} restarts with entry ${e.index} term ${e.term} at or below its ` +
            `commit ${initial.hardState.commit}, but term ${c.term} was committed there`,
        );
      }
    }
    const snap = node.storage.snapshot;
    node.kv = snap !== undefined ? KvMachine.restore(snap.data) : new KvMachine();
    if (snap !== undefined) {
      this.#checker.observeSnapshotState(node.id, snap.meta.index, snap.meta.term, node.kv.digest);
    }
    node.lastSnapshotIndex = node.kv.applied;
    node.inc++;
    node.commitFlushQueued = false;
    node.applyAfterPending = [];
    node.pending = undefined;
    node.role = "follower";
    node.term = initial.hardState.term;
    node.commit = initial.hardState.commit;
    const rng = this.#coreRng.fork();
    const options: CoreOptions = {
      id: node.id,
      initial,
      random: () => rng.next(),
      electionTicks: this.config.electionTicks,
      heartbeatTicks: 1,
      preVote: this.config.preVote,
      checkQuorum: this.config.checkQuorum,
      batchEntriesMax: this.config.batchEntriesMax,
      inflightMessagesMax: this.config.inflightMessagesMax,
    };
    const trace = this.#trace;
    if (trace !== undefined) {
      options.log = (msg, fields) =>
        trace(`${this.#stamp()} n${node.id} core: ${msg} ${JSON.stringify(fields)}`);
    }
    node.core = new RaftCore(options);
    this.#t(
      `n${node.id} start term=${initial.hardState.term} vote=${initial.hardState.vote} ` +
        `commit=${initial.hardState.commit} snap=${initial.snapshotMeta.index} ` +
        `entries=${initial.entries.length} last=${node.storage.lastIndex()}`,
    );
    this.#queue.push(this.#now + this.#rng.int(1, TICK_MS), {
      kind: "tick",
      node: node.id,
      inc: node.inc,
    });
    this.#afterCore(node);
  }

  #handle(ev: SimEvent): void {
    switch (ev.kind) {
      case "world":
        this.#world();
        return;
      case "tick": {
        const node = this.#nodes.get(ev.node);
        if (node?.core === undefined || node.inc !== ev.inc) return;
        const j = this.config.tickJitterMs;
        this.#queue.push(this.#now + node.tickMs + this.#rng.int(-j, j), ev);
        node.core.tick();
        this.#afterCore(node);
        return;
      }
      case "deliver":
        this.#deliver(ev.msg, ev.senderInc, ev.reportSnap);
        return;
      case "flushCommit": {
        const node = this.#nodes.get(ev.node);
        if (node?.core === undefined || node.inc !== ev.inc) return;
        node.commitFlushQueued = false;
        if (node.core.flushCommit()) this.#t(`n${node.id} flushCommit`);
        this.#afterCore(node);
        return;
      }
      case "snapStatus": {
        const node = this.#nodes.get(ev.node);
        if (node?.core === undefined || node.inc !== ev.inc) return;
        this.#t(`n${node.id} snapStatus peer=${ev.peer} reject=${ev.reject}`);
        node.core.step(
          message({ type: "snapStatus", from: ev.peer, to: node.id, reject: ev.reject }),
        );
        this.#afterCore(node);
        return;
      }
      case "fsync": {
        const node = this.#nodes.get(ev.node);
        if (node?.core === undefined || node.inc !== ev.inc) return;
        this.#fsync(node);
        this.#afterCore(node);
        return;
      }
      case "crash": {
        const node = this.#nodes.get(ev.node);
        if (node?.core === undefined || node.inc !== ev.inc) return;
        this.#crash(node);
        return;
      }
      case "restart": {
        const node = this.#nodes.get(ev.node);
        if (node === undefined || node.stopped || node.core !== undefined || node.inc !== ev.inc) {
          return;
        }
        this.#start(node);
        return;
      }
      case "cut":
        if (this.#healed) return;
        this.#t(`cut ${ev.from}->${ev.to}`);
        this.#network.cut(ev.from, ev.to);
        return;
      case "restore":
        this.#t(`restore ${ev.from}->${ev.to}`);
        this.#network.restore(ev.from, ev.to);
        return;
      case "unreachable": {
        const node = this.#nodes.get(ev.node);
        if (node?.core === undefined || node.inc !== ev.inc) return;
        this.#t(`n${node.id} unreachable peer=${ev.peer}`);
        node.core.reportUnreachable(ev.peer);
        this.#afterCore(node);
        return;
      }
    }
  }

  // ------------------------------------------------------------------ the driver

  /** After any call into a core: send what may go, handle Readies, check invariants. */
  #afterCore(node: SimNode): void {
    const core = node.core;
    if (core === undefined) return;
    this.#send(node, core.takeMessages());
    while (node.core !== undefined && node.pending === undefined && node.core.hasReady()) {
      const rd = node.core.ready();
      if (this.#trace !== undefined) this.#traceReady(node, rd);
      this.#send(node, rd.messages);
      node.pending = rd;
      const delay = this.#rng.int(0, this.config.fsyncDelayMaxMs);
      if (delay > 0) {
        this.#queue.push(this.#now + delay, { kind: "fsync", node: node.id, inc: node.inc });
        // Buggify: crash in the middle of writing a membership change, the
        // moment where a torn write does the most damage.
        if (
          !this.#healed && rd.entries.some((e) => e.type === "conf") &&
          this.#rng.chance(this.config.crashOnConfWriteRate)
        ) {
          this.#queue.push(this.#now + this.#rng.int(0, delay - 1), {
            kind: "crash",
            node: node.id,
            inc: node.inc,
          });
        }
        break;
      }
      this.#fsync(node);
    }
    if (node.core !== undefined && node.pending !== undefined) {
      // Like the runtime: apply what committed while the Ready is persisted.
      node.applyAfterPending.push(...node.core.takeCommittedEntries());
      if (node.pending.committedEntries.length === 0) this.#applyTaken(node);
    }
    if (node.core?.commitPending && !node.commitFlushQueued) {
      node.commitFlushQueued = true;
      this.#queue.push(this.#now + this.config.commitFlushMs, {
        kind: "flushCommit",
        node: node.id,
        inc: node.inc,
      });
    }
    this.#observe(node);
  }

  #traceReady(node: SimNode, rd: Ready): void {
    const parts: string[] = [];
    if (rd.softState) {
      parts.push(`soft=${rd.softState.role}/leader${rd.softState.leader}`);
      if (rd.softState.removed) parts.push("REMOVED");
    }
    if (rd.hardState) {
      parts.push(`hard=t${rd.hardState.term}/v${rd.hardState.vote}/c${rd.hardState.commit}`);
    }
    if (rd.snapshot) parts.push(`snapshot=${rd.snapshot.meta.index}/${rd.snapshot.meta.term}`);
    if (rd.entries.length > 0) parts.push(`entries=[${rd.entries.map(fmtEntry).join(" ")}]`);
    if (rd.committedEntries.length > 0) {
      const f = rd.committedEntries[0] as Entry;
      const l = rd.committedEntries.at(-1) as Entry;
      parts.push(`apply=${f.index}..${l.index}`);
    }
    if (rd.messages.length > 0) parts.push(`msgs=${rd.messages.length}`);
    if (rd.persistedMessages.length > 0) parts.push(`after-persist=${rd.persistedMessages.length}`);
    if (rd.readStates.length > 0) {
      parts.push(
        `reads=[${
          rd.readStates.map((r) => `${textDecoder.decode(r.context)}@${r.index}`).join(" ")
        }]`,
      );
    }
    this.#t(`n${node.id} ready ${parts.join(" ")}`);
  }

  /** The simulated fsync completed: make the Ready durable, then do the rest of its duties. */
  #fsync(node: SimNode): void {
    const rd = node.pending;
    const core = node.core;
    if (rd === undefined || core === undefined) return;
    node.pending = undefined;
    const write = { entries: rd.entries } as Parameters<SimStorage["write"]>[0];
    if (rd.snapshot) write.snapshot = rd.snapshot;
    if (rd.hardState) write.hardState = rd.hardState;
    if (this.#sabotage === "volatileHardState") delete write.hardState;
    const written = node.storage.write(write);
    this.#checker.observeWrite(node.id, written, (i) => node.storage.termAt(i));
    this.#send(node, rd.persistedMessages);
    if (rd.snapshot) this.#installSnapshot(node, rd.snapshot.meta.index, rd.snapshot.data);
    if (this.#sabotage === "applyUncommitted") {
      for (const e of rd.entries) if (e.index === node.kv.applied + 1) this.#apply(node, e);
    }
    for (const e of rd.committedEntries) {
      if (this.#sabotage === "applyUncommitted" && e.index <= node.kv.applied) continue;
      this.#apply(node, e);
    }
    this.#applyTaken(node);
    for (const rs of rd.readStates) {
      const ctx = textDecoder.decode(rs.context);
      const read = node.reads.get(ctx);
      if (read === undefined) continue;
      node.reads.delete(ctx);
      read.index = rs.index;
      node.readsReady.push(read);
    }
    core.advance(rd);
    this.#completeReads(node);
    this.#maybeCompact(node);
  }

  /** Applies the entries taken with takeCommittedEntries() and tells the core. */
  #applyTaken(node: SimNode): void {
    const entries = node.applyAfterPending;
    const last = entries[entries.length - 1];
    if (last === undefined || node.core === undefined) return;
    node.applyAfterPending = [];
    for (const e of entries) {
      if (this.#sabotage === "applyUncommitted" && e.index <= node.kv.applied) continue;
      this.#apply(node, e);
    }
    node.core.appliedTo(last.index);
    this.#completeReads(node);
  }

  #installSnapshot(node: SimNode, index: number, data: Uint8Array): void {
    if (index <= node.kv.applied) {
      throw new SimFailure(
        `snapshot: node ${node.id} asked to install a snapshot at ${index}, at or below its applied ${node.kv.applied}`,
      );
    }
    if (data.length === 0) {
      throw new SimFailure(`simulator: node ${node.id} received a snapshot without data`);
    }
    const kv = KvMachine.restore(data);
    if (kv.applied !== index) {
      throw new SimFailure(
        `snapshot: node ${node.id} installed a snapshot whose metadata says ${index} but whose state is at ${kv.applied}`,
      );
    }
    this.#checker.observeSnapshotState(node.id, kv.applied, kv.appliedTerm, kv.digest);
    node.kv = kv;
    node.lastSnapshotIndex = kv.applied;
    this.#t(`n${node.id} installed snapshot ${index}/${kv.appliedTerm}`);
  }

  #apply(node: SimNode, e: Entry): void {
    const kv = node.kv;
    if (e.index !== kv.applied + 1) {
      throw new SimFailure(
        `apply: node ${node.id} asked to apply entry ${e.index} after applying ${kv.applied}`,
      );
    }
    kv.apply(e);
    this.#checker.observeApply(node.id, e, kv.digest);
    if (e.type === "conf") {
      this.#t(`n${node.id} applied ${fmtEntry(e)} conf=${JSON.stringify(kv.conf)}`);
      return;
    }
    const put = decodePut(e.data);
    if (put === undefined) return;
    if (put.key === PROBE_KEY) node.probeApplied = true;
    const key = node.writes.get(put.value);
    if (key !== undefined) {
      node.writes.delete(put.value);
      this.#history.writeAcknowledged(key, e.index);
      this.#t(`n${node.id} ack write ${put.key}=${put.value} @${e.index}`);
    }
  }

  #completeReads(node: SimNode): void {
    if (node.readsReady.length === 0) return;
    const waiting: PendingRead[] = [];
    for (const r of node.readsReady) {
      if (r.index > node.kv.applied) {
        waiting.push(r);
        continue;
      }
      const v = node.kv.values.get(r.key);
      this.#t(
        `n${node.id} read r${r.id} ${r.key} -> ${v?.value ?? "(absent)"}@${
          v?.index ?? 0
        } (read index ${r.index}, applied ${node.kv.applied})`,
      );
      this.#history.readCompleted(r.id, node.id, v?.index ?? 0, r.index);
    }
    node.readsReady = waiting;
  }

  #maybeCompact(node: SimNode): void {
    const core = node.core;
    const kv = node.kv;
    if (
      core === undefined || kv.applied - node.lastSnapshotIndex < this.config.compactEveryEntries
    ) {
      return;
    }
    const meta = { index: kv.applied, term: kv.appliedTerm, conf: kv.conf };
    const compactIndex = Math.max(0, kv.applied - this.config.compactKeepEntries);
    node.storage.saveLocalSnapshot({ meta, data: kv.snapshot() }, compactIndex);
    core.compact(compactIndex, meta);
    node.lastSnapshotIndex = kv.applied;
    this.stats.compactions++;
    this.#t(`n${node.id} compact snapshot=${kv.applied}/${kv.appliedTerm} through=${compactIndex}`);
  }

  /** Checks a node's status after it did something. */
  #observe(node: SimNode): void {
    const core = node.core;
    if (core === undefined) return;
    const s = core.status();
    if (s.term < node.term) {
      throw new SimFailure(`term: node ${node.id} went from term ${node.term} back to ${s.term}`);
    }
    if (s.commit < node.commit) {
      throw new SimFailure(
        `commit: node ${node.id} went from commit ${node.commit} back to ${s.commit}`,
      );
    }
    if (s.commit > node.commit) {
      this.#checker.observeCommit(node.commit, s.commit, s.term);
      this.#t(`n${node.id} commit ${node.commit} -> ${s.commit}`);
    }
    if (s.role !== node.role || s.term !== node.term) {
      this.#t(`n${node.id} role ${node.role}/t${node.term} -> ${s.role}/t${s.term}`);
    }
    if (s.role === "leader") {
      // A leader counts once its term and self-vote are on disk. A sole voter
      // wins in memory at once; if it crashes before the persist, that
      // leadership had no effect (every message and commit waits for the
      // persist) and its vote is legitimately forgotten (seed 8010621).
      const hs = node.storage.hardState;
      if (hs.term === s.term && hs.vote === node.id) this.#checker.observeLeader(node.id, s.term);
      if (node.role !== "leader" || node.term !== s.term) {
        this.stats.leaders++;
        node.leaderCheckedFrom = 1;
        this.#checkLeader(node, s, Infinity);
      }
    }
    // The core uses the newest configuration in its log (thesis §4.1): it equals
    // the applied one only when nothing uncommitted follows.
    if (
      node.kv.applied === s.commit && s.commit === s.lastIndex && !sameConf(node.kv.conf, s.conf)
    ) {
      throw new SimFailure(
        `membership: node ${node.id} applied through ${s.commit} giving ${
          JSON.stringify(node.kv.conf)
        } ` +
          `but its core's configuration is ${JSON.stringify(s.conf)}`,
      );
    }
    node.role = s.role;
    node.term = s.term;
    node.commit = s.commit;
    if (s.term > this.stats.maxTerm) this.stats.maxTerm = s.term;
    if (s.removed) this.#stop(node);
  }

  #checkLeader(node: SimNode, s: CoreStatus, limit: number): void {
    const core = node.core;
    if (core === undefined) return;
    node.leaderCheckedFrom = this.#checker.checkLeaderLog(
      node.id,
      s.term,
      s.firstIndex,
      core.entriesFrom(s.firstIndex),
      node.leaderCheckedFrom,
      limit,
    );
  }

  #stop(node: SimNode): void {
    this.#t(`n${node.id} removed: stopping`);
    node.core = undefined;
    node.pending = undefined;
    node.stopped = true;
    node.inc++;
    node.commitFlushQueued = false;
    node.applyAfterPending = [];
    this.#abandonClientOps(node);
  }

  /**
   * Messages that promise durable state (thesis §3.8) may leave only once
   * that state is on the simulated disk: a granted vote, a candidate's vote
   * request, an append acknowledgement.
   */
  #checkPromise(node: SimNode, m: Message): void {
    const hs = node.storage.hardState;
    if ((m.type === "voteResp" && !m.reject) || m.type === "vote") {
      const candidate = m.type === "vote" ? m.from : m.to;
      if (hs.term < m.term || (hs.term === m.term && hs.vote !== candidate)) {
        throw new SimFailure(
          `durability: node ${node.id} sends ${
            fmtMsg(m)
          } but its disk holds term ${hs.term} vote ${hs.vote}`,
        );
      }
    } else if (m.type === "appResp" && !m.reject && hs.term === m.term) {
      // Only while the disk is still in the acknowledged term: once a newer
      // leader has truncated the log, a late acknowledgement is the same as
      // one sent before the truncation (and a network may delay it so).
      const last = node.storage.lastIndex();
      if (last < m.index) {
        throw new SimFailure(
          `durability: node ${node.id} acknowledges index ${m.index} but its disk ends at ${last}`,
        );
      }
    }
  }

  #send(node: SimNode, msgs: readonly Message[]): void {
    for (const m of msgs) {
      this.#checkPromise(node, m);
      let out = m;
      if (m.type === "snap") {
        const stored = node.storage.snapshot;
        if (stored === undefined || stored.meta.index < (m.snapshot?.meta.index ?? 0)) {
          throw new SimFailure(
            `snapshot: node ${node.id} sends a snapshot at ${m.snapshot?.meta.index} but stores ${stored?.meta.index}`,
          );
        }
        out = { ...m, snapshot: stored };
        this.stats.snapshotsSent++;
      }
      const target = this.#nodes.get(m.to);
      const latencies = target === undefined ? [] : this.#network.route(m.from, m.to);
      if (latencies.length === 0) {
        this.stats.dropped++;
        this.#t(`drop ${fmtMsg(out)}`);
        if (!this.#network.connected(m.from, m.to) && this.#rng.chance(0.2)) {
          // A real transport notices a broken connection now and then.
          this.#queue.push(this.#now + 1, {
            kind: "unreachable",
            node: node.id,
            inc: node.inc,
            peer: m.to,
          });
        }
        if (m.type === "snap") {
          this.#queue.push(this.#now + TICK_MS, {
            kind: "snapStatus",
            node: node.id,
            inc: node.inc,
            peer: m.to,
            reject: true,
          });
        }
        continue;
      }
      latencies.forEach((latency, i) => {
        this.#queue.push(this.#now + latency, {
          kind: "deliver",
          msg: i === 0 ? out : { ...out },
          senderInc: node.inc,
          reportSnap: m.type === "snap" && i === 0,
        });
      });
    }
  }

  #deliver(m: Message, senderInc: number, reportSnap: boolean): void {
    const target = this.#nodes.get(m.to);
    const core = target?.core;
    let ok = true;
    if (target === undefined || core === undefined) {
      this.#t(`drop ${fmtMsg(m)} (target down)`);
      ok = false;
    } else if (!this.#network.connected(m.from, m.to)) {
      this.#t(`drop ${fmtMsg(m)} (link cut in flight)`);
      ok = false;
    }
    if (target !== undefined && core !== undefined && ok) {
      this.stats.delivered++;
      this.#t(`deliver ${fmtMsg(m)}`);
      core.step(m);
      this.#afterCore(target);
    } else {
      this.stats.dropped++;
    }
    if (reportSnap) {
      const sender = this.#nodes.get(m.from);
      if (sender?.core !== undefined && sender.inc === senderInc) {
        this.#t(`n${sender.id} snapStatus peer=${m.to} reject=${!ok}`);
        sender.core.step(message({ type: "snapStatus", from: m.to, to: sender.id, reject: !ok }));
        this.#afterCore(sender);
      }
    }
  }

  // ------------------------------------------------------------------ crashes

  #crash(node: SimNode): void {
    const core = node.core;
    if (core === undefined) return;
    const rd = node.pending;
    let torn = "";
    if (rd !== undefined && this.#rng.chance(this.config.tornWriteRate)) {
      const write = { entries: rd.entries } as Parameters<SimStorage["write"]>[0];
      if (rd.snapshot) write.snapshot = rd.snapshot;
      if (rd.hardState) write.hardState = rd.hardState;
      const records = this.#rng.int(0, recordCount(write) - 1);
      const written = node.storage.write(write, records);
      this.#checker.observeWrite(node.id, written, (i) => node.storage.termAt(i));
      torn = ` (torn write: ${records} of ${recordCount(write)} records kept)`;
    } else if (rd !== undefined) {
      torn = " (unsynced write lost)";
    }
    if (this.#sabotage === "lossyDisk") {
      const keep = node.storage.entries.length - this.#rng.int(0, 3);
      node.storage.entries = node.storage.entries.slice(0, Math.max(0, keep));
    }
    node.core = undefined;
    node.pending = undefined;
    node.inc++;
    node.commitFlushQueued = false;
    node.applyAfterPending = [];
    this.stats.crashes++;
    this.#abandonClientOps(node);
    const downtime = this.#rng.int(1, this.config.downtimeTicksMax) * TICK_MS;
    this.#t(`n${node.id} CRASH${torn}; restart in ${downtime / TICK_MS} ticks`);
    this.#queue.push(this.#now + downtime, { kind: "restart", node: node.id, inc: node.inc });
  }

  #abandonClientOps(node: SimNode): void {
    for (const r of node.reads.values()) this.#history.readAbandoned(r.id);
    for (const r of node.readsReady) this.#history.readAbandoned(r.id);
    node.reads.clear();
    node.readsReady = [];
    node.writes.clear(); // outcome unknown: never acknowledged
  }

  // ------------------------------------------------------------------ the world

  #world(): void {
    const tick = this.#now / TICK_MS;
    this.stats.ticks = tick;
    this.#t(`--- tick ${tick} ---`);
    if (this.#now < this.#faultEndMs) {
      this.#faults();
      this.#clients();
      this.#membership();
    } else if (!this.#healed) {
      this.#heal();
    } else {
      this.#probe();
    }
    this.#expireReads();
    // Leader completeness, incrementally, for entries committed since the last check.
    for (const node of this.#nodes.values()) {
      if (node.core === undefined || node.role !== "leader") continue;
      this.#checkLeader(node, node.core.status(), 512);
    }
    if (!this.#done) this.#queue.push(this.#now + TICK_MS, { kind: "world" });
  }

  #live(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.#nodes.values()) if (n.core !== undefined) out.push(n);
    return out;
  }

  #ids(): NodeId[] {
    const out: NodeId[] = [];
    for (const n of this.#nodes.values()) if (!n.stopped) out.push(n.id);
    return out;
  }

  /** The live node that believes it leads in the highest term. */
  #leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.#nodes.values()) {
      if (n.core === undefined || n.role !== "leader") continue;
      if (best === undefined || n.term > best.term) best = n;
    }
    return best;
  }

  #faults(): void {
    const c = this.config;
    const rng = this.#rng;
    if (rng.chance(c.crashRatePerTick)) {
      const live = this.#live();
      const leader = this.#leader();
      // Leaders are the interesting victims: pick one half of the time.
      const victim = leader !== undefined && rng.chance(0.5)
        ? leader
        : live.length > 0
        ? rng.pick(live)
        : undefined;
      if (victim !== undefined) this.#crash(victim);
    }
    if (rng.chance(c.partitionRatePerTick)) this.#partition();
  }

  #partition(): void {
    const rng = this.#rng;
    const ids = rng.shuffle(this.#ids());
    if (ids.length < 2) return;
    const until = this.#now + rng.int(1, this.config.partitionTicksMax) * TICK_MS;
    const links: [NodeId, NodeId][] = [];
    const kind = rng.pick(["split", "oneWay", "isolate", "flap"] as const);
    this.stats.partitions++;
    if (kind === "flap") {
      // A node's connections drop one by one and come back in random order.
      const node = ids[0] as NodeId;
      this.#t(`partition flap n${node}`);
      for (const other of ids.slice(1)) {
        for (const [from, to] of [[node, other], [other, node]] as const) {
          const cutAt = this.#now + rng.int(0, 5 * TICK_MS);
          this.#queue.push(cutAt, { kind: "cut", from, to });
          this.#queue.push(until + rng.int(0, 5 * TICK_MS), { kind: "restore", from, to });
        }
      }
      return;
    }
    let a: NodeId[];
    let b: NodeId[];
    if (kind === "isolate") {
      a = ids.slice(0, 1);
      b = ids.slice(1);
    } else {
      const k = rng.int(1, ids.length - 1);
      a = ids.slice(0, k);
      b = ids.slice(k);
    }
    for (const x of a) {
      for (const y of b) {
        links.push([x, y]);
        if (kind !== "oneWay") links.push([y, x]);
      }
    }
    this.#t(`partition ${kind} [${a}] ${kind === "oneWay" ? "-/->" : "<-/->"} [${b}]`);
    for (const [from, to] of links) {
      this.#network.cut(from, to);
      this.#queue.push(until + rng.int(0, 3 * TICK_MS), { kind: "restore", from, to });
    }
  }

  #clients(): void {
    const c = this.config;
    const rng = this.#rng;
    const count = (rate: number) => Math.floor(rate) + (rng.chance(rate % 1) ? 1 : 0);
    for (let i = count(c.writesPerTick); i > 0; i--) {
      const live = this.#live();
      if (live.length === 0) break;
      const node = rng.pick(live);
      // Sometimes a batch, as the runtime hands over one event-loop turn's writes.
      const batch = rng.chance(0.2) ? rng.int(2, 5) : 1;
      const puts: [string, string][] = [];
      for (let j = 0; j < batch; j++) {
        puts.push([`k${rng.int(0, c.keyCount - 1)}`, `v${++this.#opSeq}`]);
      }
      const core = node.core as RaftCore;
      const ok = batch === 1
        ? core.propose(encodePut(...(puts[0] as [string, string])))
        : core.proposeBatch(puts.map(([k, v]) => encodePut(k, v)));
      this.#t(
        `n${node.id} propose ${puts.map(([k, v]) => `${k}=${v}`).join(" ")}${ok ? "" : " REFUSED"}`,
      );
      if (ok) { for (const [k, v] of puts) node.writes.set(v, k); }
      this.#afterCore(node);
    }
    for (let i = count(c.readsPerTick); i > 0; i--) {
      const live = this.#live();
      if (live.length === 0) break;
      const node = rng.pick(live);
      const key = `k${rng.int(0, c.keyCount - 1)}`;
      const id = ++this.#opSeq;
      this.#history.readInvoked(id, key, this.#now);
      if (this.#sabotage === "localReads") {
        const v = node.kv.values.get(key);
        this.#history.readCompleted(id, node.id, v?.index ?? 0, node.kv.applied);
        continue;
      }
      const ok = (node.core as RaftCore).readIndex(textEncoder.encode(`r${id}`));
      this.#t(`n${node.id} read r${id} ${key}${ok ? "" : " REFUSED"}`);
      if (ok) node.reads.set(`r${id}`, { id, key, invokedAt: this.#now, index: 0 });
      else this.#history.readAbandoned(id);
      this.#afterCore(node);
    }
  }

  #expireReads(): void {
    for (const node of this.#nodes.values()) {
      for (const [ctx, r] of node.reads) {
        if (this.#now - r.invokedAt < READ_TIMEOUT_MS) continue;
        node.reads.delete(ctx);
        this.#history.readAbandoned(r.id);
      }
    }
  }

  #membership(): void {
    const c = this.config;
    const rng = this.#rng;
    const leader = this.#leader();
    if (leader?.core === undefined) return;
    const conf = leader.core.conf();
    const members = conf.voters.length + conf.learners.length;
    const growing = c.bootstrap === "dynamic" && conf.voters.length < c.clusterSize;
    if (growing && rng.chance(0.3)) {
      // Build the cluster up to its planned size: add a learner, then promote it.
      const learner = conf.learners[0];
      if (learner !== undefined) {
        this.#proposeConf(leader, { type: "promote", nodeId: learner });
      } else if (members < c.clusterSize && this.#now - this.#lastAddAt > 30 * TICK_MS) {
        this.#addNode(leader, "addLearner");
      }
      return;
    }
    if (rng.chance(c.confChangeRatePerTick)) {
      const op = rng.pick(["addLearner", "addVoter", "promote", "remove", "remove"] as const);
      switch (op) {
        case "addLearner":
        case "addVoter":
          if (this.#nodes.size < NODES_MAX && conf.voters.length < VOTERS_MAX) {
            this.#addNode(leader, op);
          }
          break;
        case "promote": {
          if (conf.learners.length > 0 && conf.voters.length < VOTERS_MAX) {
            this.#proposeConf(leader, { type: "promote", nodeId: rng.pick(conf.learners) });
          }
          break;
        }
        case "remove": {
          const candidates = [...conf.learners, ...(conf.voters.length > 3 ? conf.voters : [])];
          if (candidates.length > 0) {
            this.#proposeConf(leader, { type: "remove", nodeId: rng.pick(candidates) });
          }
          break;
        }
      }
    }
    if (rng.chance(c.transferRatePerTick)) {
      const others = conf.voters.filter((v) => v !== leader.id);
      if (others.length > 0) {
        const to = rng.pick(others);
        this.#t(`n${leader.id} transfer leadership to n${to}`);
        leader.core.transferLeader(to);
        this.#afterCore(leader);
      }
    }
  }

  #addNode(leader: SimNode, type: "addLearner" | "addVoter"): void {
    const node = this.#createNode();
    this.#lastAddAt = this.#now;
    this.#start(node);
    this.#proposeConf(leader, { type, nodeId: node.id });
  }

  #proposeConf(leader: SimNode, cc: ConfChange): void {
    const core = leader.core;
    if (core === undefined) return;
    const ok = core.proposeConfChange(cc);
    this.#t(`n${leader.id} propose conf ${cc.type} n${cc.nodeId}${ok ? "" : " REFUSED"}`);
    if (ok) this.stats.confChanges++;
    this.#afterCore(leader);
  }

  // ------------------------------------------------------------------ healing and liveness

  #heal(): void {
    this.#healed = true;
    this.#healedAt = this.#now;
    this.#network.faults = PERFECT_NETWORK;
    this.#network.healAll();
    this.#t("HEAL: perfect network, every crashed node restarts");
    for (const node of this.#nodes.values()) {
      if (!node.stopped && node.core === undefined) this.#start(node);
    }
  }

  #probe(): void {
    const leader = this.#leader();
    if (leader?.core === undefined) return;
    const voters = leader.core.conf().voters;
    let applied = 0;
    for (const v of voters) if (this.#nodes.get(v)?.probeApplied) applied++;
    if (applied >= Math.floor(voters.length / 2) + 1) {
      this.stats.recoveryTicks = (this.#now - this.#healedAt) / TICK_MS;
      this.#t(`LIVE: probe applied on ${applied} of ${voters.length} voters`);
      this.#finalCheck(leader);
      this.#done = true;
      return;
    }
    if (this.#now - this.#probeProposedAt < 20 * TICK_MS) return;
    this.#probeProposedAt = this.#now;
    const value = `p${++this.#opSeq}`;
    const ok = leader.core.propose(encodePut(PROBE_KEY, value));
    this.#t(`n${leader.id} propose probe ${value}${ok ? "" : " REFUSED"}`);
    this.#afterCore(leader);
  }

  /** No committed entry lost: the final leader's log holds every committed entry it keeps. */
  #finalCheck(leader: SimNode): void {
    const core = leader.core as RaftCore;
    const s = core.status();
    const entries = core.entriesFrom(s.firstIndex);
    const committed = this.#checker.committed;
    for (let i = s.firstIndex; i < committed.length; i++) {
      const c = committed[i];
      if (c === undefined) continue;
      const e = entries[i - s.firstIndex];
      if (e === undefined || e.term !== c.term) {
        throw new SimFailure(
          `durability: the final leader ${leader.id} (term ${s.term}) lacks committed entry ${i} term ${c.term}` +
            (e === undefined ? "" : ` (it has term ${e.term})`),
        );
      }
    }
    this.stats.committed = this.#checker.maxCommitted;
    this.stats.writesAcknowledged = this.#history.acknowledgedWrites;
    this.stats.readsCompleted = this.#history.completedReads;
  }

  #describeCluster(): string {
    const parts: string[] = [];
    for (const n of this.#nodes.values()) {
      if (n.stopped) {
        parts.push(`n${n.id}: removed`);
        continue;
      }
      if (n.core === undefined) {
        parts.push(`n${n.id}: down`);
        continue;
      }
      const s = n.core.status();
      parts.push(
        `n${n.id}: ${s.role} t${s.term} leader=${s.leader} commit=${s.commit} applied=${s.applied} ` +
          `last=${s.lastIndex} voters=[${s.conf.voters}] learners=[${s.conf.learners}]`,
      );
    }
    return parts.join("; ");
  }

  // ------------------------------------------------------------------ tracing

  #stamp(): string {
    return `${this.#now.toFixed(2).padStart(9)}ms`;
  }

  #t(line: string): void {
    if (this.#trace !== undefined) this.#trace(`${this.#stamp()} ${line}`);
  }
}

/**
 * Runs one seed. Never throws for an invariant violation or a core
 * exception: they come back as `ok: false` with the reason.
 *
 * @example
 * ```ts
 * const result = runSeed({ seed: 42 });
 * if (!result.ok) console.log(result.failure);
 * ```
 */
export function runSeed(options: SimOptions): SimResult {
  const sim = new Simulation(options);
  try {
    sim.run();
    return { seed: options.seed, ok: true, stats: sim.stats };
  } catch (error) {
    const failure = error instanceof SimFailure
      ? error.message
      : `exception: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
    return { seed: options.seed, ok: false, failure, stats: sim.stats };
  }
}

/** The command that replays a seed with its trace. */
export function replayCommand(seed: number): string {
  return `deno task sim --seed ${seed} --trace`;
}

/** Replays a failed seed with tracing on and returns its last `lines` trace lines. */
export function traceTail(seed: number, lines = 200): string[] {
  const ring: string[] = [];
  runSeed({
    seed,
    trace: (line) => {
      ring.push(line);
      if (ring.length > lines * 2) ring.splice(0, ring.length - lines);
    },
  });
  return ring.slice(-lines);
}
