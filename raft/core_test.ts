/**
 * Unit tests of the pure Raft core, named after the rules of the Raft paper
 * (Ongaro & Ousterhout, "In Search of an Understandable Consensus
 * Algorithm") and, where the paper is silent, Ongaro's thesis. They run with
 * no permissions: the core does no I/O.
 *
 * @module
 */

import { assert, assertEquals, assertThrows } from "../tests/assert.ts";
import { bytes, Cluster, stateWithLog, text } from "./testing.ts";
import { message, type NodeId } from "./types.ts";

const ELECTION_TICKS = 10;

/** Node `id`'s vote responses (granted or not) sent since `since`. */
function votesFrom(c: Cluster, id: NodeId, since = 0) {
  return c.sentOf("voteResp", { from: id, since }).map((m) => ({ to: m.to, granted: !m.reject }));
}

/** Ticks node `id` (stabilizing after each tick) until `done`, at most `max` ticks; returns the count. */
function tickUntil(c: Cluster, id: NodeId, done: () => boolean, max = 100): number {
  for (let i = 1; i <= max; i++) {
    c.tick(id);
    if (done()) return i;
  }
  throw new Error(`Condition not reached within ${max} ticks of node ${id}`);
}

/** Ticks every node until `done`, at most `max` rounds; returns the count. */
function tickAllUntil(c: Cluster, done: () => boolean, max = 200): number {
  for (let i = 1; i <= max; i++) {
    c.tickAll();
    if (done()) return i;
  }
  throw new Error(`Condition not reached within ${max} ticks`);
}

// ---------------------------------------------------------------- §5.1 terms

Deno.test("§5.1 a node rejects a message from a stale term and tells the sender its term", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1); // term 2
  const before = c.core(2).status();
  const since = c.sent.length;
  // A deposed leader of term 1 tries to append.
  c.deliver(message({
    type: "app",
    from: 3,
    to: 2,
    term: 1,
    index: before.lastIndex,
    logTerm: 2,
    entries: [{ index: before.lastIndex + 1, term: 1, type: "normal", data: bytes("stale") }],
    commit: before.lastIndex + 1,
  }));
  // And a candidate of term 1 asks for a vote.
  c.deliver(message({ type: "vote", from: 3, to: 2, term: 1, index: 99, logTerm: 9 }));
  c.stabilize();
  const after = c.core(2).status();
  assertEquals(after.lastIndex, before.lastIndex);
  assertEquals(after.commit, before.commit);
  assertEquals(after.term, 2);
  assertEquals(after.leader, 1);
  const replies = c.sentOf("appResp", { from: 2, to: 3, since });
  assertEquals(replies.length, 1);
  assertEquals(replies[0]!.term, 2);
  assertEquals(votesFrom(c, 2, since), []);
});

Deno.test("§5.1 a leader that sees a higher term becomes a follower in that term", () => {
  const c = new Cluster({ voters: 3, core: { checkQuorum: false } });
  c.elect(1);
  assertEquals(c.core(1).term, 2);
  c.isolate(1);
  c.elect(2); // term 3, with node 3's vote
  assertEquals(c.core(1).role, "leader"); // it has not heard yet
  c.heal();
  c.tick(1); // its heartbeats are answered with term 3
  assertEquals(c.core(1).role, "follower");
  assertEquals(c.core(1).term, 3);
  c.tick(2);
  assertEquals(c.core(1).leader, 2);
});

// ---------------------------------------------------------------- §5.2 elections

Deno.test("§5.2 a follower campaigns after its election timeout and wins with a majority", () => {
  const c = new Cluster({ voters: 3 });
  const ticks = tickUntil(c, 1, () => c.core(1).role === "leader");
  assert(ticks >= ELECTION_TICKS && ticks < 2 * ELECTION_TICKS, `campaigned after ${ticks}`);
  assertEquals(c.core(1).term, 2);
  for (const id of [2, 3]) {
    assertEquals(c.core(id).role, "follower");
    assertEquals(c.core(id).leader, 1);
    assertEquals(c.core(id).term, 2);
    assertEquals(c.core(id).status().vote, 1);
  }
});

Deno.test("§5.2 election timeouts are randomized in [electionTicks, 2 × electionTicks)", () => {
  const timeouts = new Set<number>();
  for (let seed = 1; seed <= 8; seed++) {
    const c = new Cluster({ voters: 3, seed });
    timeouts.add(tickUntil(c, 1, () => c.core(1).role !== "follower", 40));
  }
  for (const t of timeouts) assert(t >= ELECTION_TICKS && t < 2 * ELECTION_TICKS, `timeout ${t}`);
  assert(timeouts.size > 1, `every seed gave the same timeout: ${[...timeouts]}`);
});

Deno.test("§5.2 a node grants at most one vote per term, first come first served", () => {
  const c = new Cluster({ voters: 3, core: { preVote: false } });
  c.deliver(message({ type: "vote", from: 1, to: 3, term: 2, index: 3, logTerm: 1 }));
  c.deliver(message({ type: "vote", from: 2, to: 3, term: 2, index: 3, logTerm: 1 }));
  // A repeated request from the node it voted for is granted again (a lost reply).
  c.deliver(message({ type: "vote", from: 1, to: 3, term: 2, index: 3, logTerm: 1 }));
  c.stabilize();
  assertEquals(votesFrom(c, 3), [
    { to: 1, granted: true },
    { to: 2, granted: false },
    { to: 1, granted: true },
  ]);
  assertEquals(c.node(3).store.hardState.vote, 1);
});

Deno.test("§5.2 a split vote is retried after randomized timeouts until one candidate wins", () => {
  const c = new Cluster({ voters: 4, core: { preVote: false } });
  c.partition([1, 3], [2, 4]);
  c.core(1).campaign();
  c.core(2).campaign();
  c.stabilize();
  // Two votes each out of four: nobody has a majority.
  assertEquals(c.core(1).role, "candidate");
  assertEquals(c.core(2).role, "candidate");
  assertEquals(c.core(1).term, 2);
  assertEquals(c.core(2).term, 2);
  c.heal();
  tickAllUntil(c, () => c.leader() !== undefined, 6 * ELECTION_TICKS);
  const leader = c.leader()!;
  assert(c.core(leader).term >= 3);
  for (const id of c.liveIds()) assertEquals(c.core(id).leader, leader);
});

Deno.test("§5.2 a candidate steps down when it hears from a leader of its own term", () => {
  const c = new Cluster({ voters: 3, core: { preVote: false } });
  c.isolate(1);
  c.core(1).campaign();
  c.stabilize();
  assertEquals(c.core(1).role, "candidate");
  assertEquals(c.core(1).term, 2);
  c.heal();
  c.cut(1, 2);
  c.cut(1, 3);
  c.elect(2); // term 2 too, with node 3's vote
  c.heal();
  c.tick(2); // a heartbeat of term 2
  assertEquals(c.core(1).role, "follower");
  assertEquals(c.core(1).term, 2);
  assertEquals(c.core(1).leader, 2);
});

// ---------------------------------------------------------------- §5.3 replication

Deno.test("§5.3 the leader commits an entry once a majority stores it, and nodes apply in order", () => {
  const c = new Cluster({ voters: 5 });
  c.elect(1);
  c.isolate(4);
  c.isolate(5);
  assert(c.propose(1, "x"));
  assert(c.propose(2, "y")); // forwarded to the leader
  c.stabilize();
  const committed = c.core(1).status().commit;
  assertEquals(c.core(1).status().lastIndex, committed);
  for (const id of [1, 2, 3]) assertEquals(c.commands(id), ["x", "y"]);
  for (const id of [4, 5]) assertEquals(c.commands(id), []);

  c.isolate(3);
  assert(c.propose(1, "z"));
  c.stabilize();
  // Two of five hold it: not committed, not applied.
  assertEquals(c.core(1).status().commit, committed);
  assertEquals(c.commands(1), ["x", "y"]);

  c.heal();
  c.tick(1);
  for (const id of c.liveIds()) {
    assertEquals(c.commands(id), ["x", "y", "z"]);
    assertEquals(
      c.node(id).applied.map((e) => e.index),
      [...Array(committed + 1).keys()].map((i) => i + 1),
    );
  }
});

Deno.test("§5.3 a new commit index rides on the next append or heartbeat, or goes on flushCommit when idle", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  assert(c.propose(1, "x"));
  c.stabilize({ flushCommit: false });
  assertEquals(c.commands(1), ["x"]); // the leader applies at once
  assertEquals(c.commands(2), []); // the followers store x but were not told it committed
  assert(c.core(1).commitPending);

  let since = c.sent.length;
  assert(c.propose(1, "y"));
  c.stabilize({ flushCommit: false });
  for (const id of [2, 3]) assertEquals(c.commands(id), ["x"]); // y's append carried x's commit
  assertEquals(c.sentOf("app", { from: 1, since }).filter((m) => m.entries.length === 0), []);

  since = c.sent.length;
  assert(c.core(1).flushCommit());
  c.stabilize({ flushCommit: false });
  for (const id of [2, 3]) assertEquals(c.commands(id), ["x", "y"]);
  assertEquals(c.sentOf("app", { from: 1, since }).length, 2); // one empty append each
  assert(!c.core(1).commitPending);
  assert(!c.core(1).flushCommit()); // nothing left to tell

  assert(c.propose(1, "z"));
  c.stabilize({ flushCommit: false });
  c.core(1).tick(); // heartbeatTicks 1: a heartbeat carries the commit index
  c.stabilize({ flushCommit: false });
  for (const id of [2, 3]) assertEquals(c.commands(id), ["x", "y", "z"]);
  assert(!c.core(1).commitPending);
});

Deno.test("§5.3 a follower that forwarded a proposal is told of its commit at once", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  assert(c.propose(2, "x")); // forwarded to the leader
  c.stabilize({ flushCommit: false });
  assertEquals(c.commands(2), ["x"]); // it can answer its client now
  assertEquals(c.commands(3), []); // the other follower learns lazily
  assert(c.core(1).flushCommit());
  c.stabilize({ flushCommit: false });
  assertEquals(c.commands(3), ["x"]);
});

Deno.test("§5.3 entries a quorum acknowledged can be taken for applying while a newer Ready is being persisted", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  const leader = c.core(1);
  const holdAcks = c.drop((m) => m.type === "appResp" && m.to === 1);
  const since = c.sent.length;
  assert(c.propose(1, "x"));
  c.stabilize({ flushCommit: false }); // the followers store x; their acks are held back
  assertEquals(c.commands(1), []);
  assert(c.propose(1, "y"));
  const rd = leader.ready(); // y is being persisted
  assertEquals(rd.entries.map((e) => text(e.data)), ["y"]);
  assertEquals(rd.committedEntries, []);
  assertEquals(leader.takeCommittedEntries(), []); // x is not committed yet
  holdAcks();
  for (const m of c.sentOf("appResp", { to: 1, since })) c.deliver(m);
  const taken = leader.takeCommittedEntries();
  assertEquals(taken.map((e) => text(e.data)), ["x"]);
  assertEquals(leader.takeCommittedEntries(), []); // handed out once
  assertThrows(() => leader.appliedTo(taken[0]!.index + 1), RangeError);
  leader.appliedTo(taken[0]!.index);
  assertEquals(leader.status().applied, taken[0]!.index);
  leader.advance(rd);
  assert(!leader.ready().committedEntries.some((e) => text(e.data) === "x"));
});

/** Terms after the three bootstrap entries (term 1), from Figure 7 of the paper. */
const FIGURE_7_LEADER = [4, 4, 5, 5, 6, 6, 6];
const FIGURE_7_FOLLOWERS: [string, string, number[]][] = [
  ["a", "is missing entries", [4, 4, 5, 5, 6, 6]],
  ["b", "is missing many entries", [4]],
  ["c", "has an extra uncommitted entry", [4, 4, 5, 5, 6, 6, 6, 6]],
  ["d", "has extra uncommitted entries of a later term", [4, 4, 5, 5, 6, 6, 6, 7, 7]],
  ["e", "is missing entries and has extra ones", [4, 4, 4, 4]],
  ["f", "has a long suffix of terms the leader never saw", [2, 2, 2, 3, 3, 3, 3, 3]],
];

for (const [name, what, terms] of FIGURE_7_FOLLOWERS) {
  Deno.test(`§5.3 Figure 7 (${name}): a follower that ${what} is brought in line with the leader`, () => {
    const c = new Cluster({
      voters: 3,
      initial: (id) => stateWithLog(3, id === 2 ? terms : FIGURE_7_LEADER, { term: 7 }),
    });
    c.elect(1); // term 8, with node 3's vote
    assertEquals(c.core(1).term, 8);
    c.tick(1);
    const expected = [1, 1, 1, ...FIGURE_7_LEADER, 8];
    assertEquals(c.logTerms(1), expected);
    assertEquals(c.logTerms(2), expected);
    assertEquals(c.core(2).entriesFrom(1), c.core(1).entriesFrom(1));
    assertEquals(c.node(2).store.entries, c.node(1).store.entries);
    assertEquals(c.core(2).status().commit, expected.length);
  });
}

Deno.test("§5.3 fast backtracking repairs a long divergent suffix in a few round trips", () => {
  const leaderLog = [2, 2, 2, 2, 2, ...Array<number>(50).fill(4)];
  const followerLog = [2, 2, 2, 2, 2, ...Array<number>(100).fill(3)];
  const c = new Cluster({
    voters: 3,
    initial: (id) => stateWithLog(3, id === 2 ? followerLog : leaderLog, { term: 4 }),
  });
  c.elect(1);
  c.tick(1);
  assertEquals(c.logTerms(2), c.logTerms(1));
  const appends = c.sentOf("app", { from: 1, to: 2 });
  const rejections = c.sentOf("appResp", { from: 2 }).filter((m) => m.reject);
  // One probe at the end, one at the last term-2 entry, then the whole suffix.
  assert(rejections.length <= 2, `${rejections.length} rejections`);
  assert(appends.length <= 4, `${appends.length} appends`);
});

Deno.test("§5.3 a leader keeps at most inflightMessagesMax appends outstanding to an unresponsive follower", () => {
  const c = new Cluster({ voters: 3, core: { inflightMessagesMax: 4 } });
  c.elect(1);
  c.propose(1, "warm-up");
  c.stabilize();
  assertEquals(c.core(1).status().progress?.[3]?.state, "replicate");
  const since = c.sent.length;
  c.drop((m) => m.to === 3 || m.from === 3);
  for (let i = 0; i < 20; i++) {
    c.propose(1, `v${i}`);
    c.stabilize();
  }
  // Appends that carry entries fill the window; once it is full nothing more goes
  // (empty appends that only carry the commit index are not tracked).
  const toFollower = c.sentOf("app", { from: 1, to: 3, since });
  assertEquals(toFollower.filter((m) => m.entries.length > 0).length, 4);
  const last = toFollower[toFollower.length - 1]!;
  assertEquals(last.entries.map((e) => e.index), [last.index + 1]);
  assertEquals(c.core(1).status().progress?.[3]?.next, last.index + 2);
  assertEquals(
    c.sentOf("app", { from: 1, to: 2, since }).filter((m) => m.entries.length > 0).length,
    20,
  );
  assertEquals(c.commands(2).length, 21);
  // Once it answers again, it catches up.
  c.heal();
  c.tick(1);
  assertEquals(c.commands(3), c.commands(1));
});

// ---------------------------------------------------------------- §5.4 safety

Deno.test("§5.4.1 a vote is refused to a candidate whose log is less up to date", () => {
  // Node 1's log is longer but ends in an older term; node 2's ends in the same term but is longer.
  const logs: Record<number, number[]> = { 1: [2, 2, 2], 2: [3, 3], 3: [3] };
  const c = new Cluster({
    voters: 3,
    core: { preVote: false },
    initial: (id) => stateWithLog(3, logs[id]!, { term: 3 }),
  });
  c.core(1).campaign();
  c.stabilize();
  assertEquals(votesFrom(c, 2).map((v) => v.granted), [false]);
  assertEquals(votesFrom(c, 3).map((v) => v.granted), [false]);
  assert(c.core(1).role !== "leader");

  const since = c.sent.length;
  c.core(3).campaign(); // same last term as node 2, shorter log
  c.stabilize();
  assertEquals(votesFrom(c, 2, since).map((v) => v.granted), [false]);
  assertEquals(votesFrom(c, 1, since).map((v) => v.granted), [true]);
  assertEquals(c.core(3).role, "leader");
});

Deno.test("§5.4.2 Figure 8: a leader does not commit an entry of an earlier term by counting replicas; it commits it with an entry of its own term", () => {
  // (b)/(c): index 6 of term 2 is on nodes 1 and 2; node 5 holds index 6 of term 3.
  const logs: Record<number, number[]> = { 1: [2], 2: [2], 3: [], 4: [], 5: [3] };
  const c = new Cluster({
    voters: 5,
    core: { checkQuorum: false },
    initial: (id) => stateWithLog(5, logs[id]!, { term: 3 }),
  });
  const removeDrop = c.drop((m) => m.type === "app" && m.from === 1);
  c.elect(1); // term 4 with the votes of 2, 3, 4; its no-op (index 7) reaches nobody
  assertEquals(c.core(1).term, 4);
  assertEquals(c.logTerms(1), [1, 1, 1, 1, 1, 2, 4]);
  // (c): the leader replicates index 6 alone to node 3 (and node 2 acknowledges it).
  const entry6 = c.core(1).entriesFrom(6)[0]!;
  for (const to of [2, 3]) {
    c.core(to).step(message({
      type: "app",
      from: 1,
      to,
      term: 4,
      index: 5,
      logTerm: 1,
      entries: [entry6],
      commit: 5,
    }));
  }
  c.stabilize();
  assertEquals(c.core(1).status().progress?.[3]?.match, 6);
  // Index 6 is on nodes 1, 2 and 3, a majority, yet it is not committed.
  assertEquals(c.core(1).status().commit, 5);
  assertEquals(c.commands(1), []);

  // (e): once the entry of term 4 reaches a majority, both commit.
  removeDrop();
  c.tick(1);
  assertEquals(c.core(1).status().commit, 7);
  assertEquals(c.commands(1), ["6@2"]);
  for (const id of c.liveIds()) assertEquals(c.logTerms(id), [1, 1, 1, 1, 1, 2, 4]);
});

Deno.test("§5.4.2 Figure 8 (d): an entry of an earlier term on a majority may still be overwritten", () => {
  const logs: Record<number, number[]> = { 1: [2], 2: [2], 3: [2], 4: [], 5: [3] };
  const c = new Cluster({
    voters: 5,
    core: { checkQuorum: false },
    initial: (id) => stateWithLog(5, logs[id]!, { term: 4 }),
  });
  // Node 5's last term (3) beats the term-2 entry that a majority holds.
  c.isolate(1);
  c.elect(5);
  c.tick(5);
  for (const id of [2, 3, 4, 5]) assertEquals(c.logTerms(id), [1, 1, 1, 1, 1, 3, 5]);
});

// ---------------------------------------------------------------- persistence before promises

Deno.test("§3.8 (thesis) vote responses and append acknowledgements wait for the persist; a leader's appends go at once", () => {
  const c = new Cluster({ voters: 3, core: { preVote: false } });
  c.elect(1);
  c.propose(1, "x");
  c.stabilize();
  const viaOf = (type: string) =>
    new Set(c.sent.filter((s) => s.message.type === type).map((s) => s.via));
  assertEquals(viaOf("voteResp"), new Set(["persistedMessages"]));
  assertEquals(viaOf("appResp"), new Set(["persistedMessages"]));
  assertEquals(viaOf("app"), new Set(["messages"]));
  // A granted vote leaves in the same Ready that persists it.
  for (const { id, ready } of c.readies) {
    for (const m of ready.persistedMessages) {
      if (m.type === "voteResp" && !m.reject) {
        assertEquals(ready.hardState?.vote, m.to, `node ${id}`);
        assertEquals(ready.hardState?.term, m.term, `node ${id}`);
      }
    }
    // An acknowledgement of new entries leaves with those entries.
    for (const m of ready.persistedMessages) {
      if (m.type === "appResp" && !m.reject && ready.entries.length > 0) {
        assert(ready.entries[ready.entries.length - 1]!.index <= m.index);
      }
    }
    assert(ready.messages.every((m) => m.type !== "voteResp" && m.type !== "appResp"));
  }
});

Deno.test("§3.8 (thesis) a candidate asks for votes only after persisting its new term and self-vote", () => {
  const c = new Cluster({ voters: 3, core: { preVote: false } });
  c.core(1).campaign();
  const rd = c.core(1).ready();
  assertEquals(rd.hardState, { term: 2, vote: 1, commit: 3 });
  assertEquals(rd.messages, []);
  assertEquals(rd.persistedMessages.map((m) => [m.type, m.to, m.term]), [
    ["vote", 2, 2],
    ["vote", 3, 2],
  ]);
  c.core(1).advance(rd);
});

// ---------------------------------------------------------------- pre-vote and check-quorum (thesis §9.6, §6.2)

Deno.test("§9.6 (thesis) pre-vote: a partitioned node does not inflate its term and does not disrupt the leader on rejoining", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.isolate(3);
  c.tickAll(10 * ELECTION_TICKS);
  assertEquals(c.core(3).term, 2);
  assertEquals(c.core(3).role, "preCandidate");
  assertEquals(c.leader(), 1);
  c.heal();
  c.tickAll(3 * ELECTION_TICKS);
  assertEquals(c.leader(), 1);
  for (const id of c.liveIds()) {
    assertEquals(c.core(id).term, 2);
    assertEquals(c.core(id).leader, 1);
  }
});

Deno.test("§9.6 (thesis) without pre-vote, the same partitioned node inflates its term and deposes the leader", () => {
  const c = new Cluster({ voters: 3, core: { preVote: false } });
  c.elect(1);
  c.isolate(3);
  c.tickAll(10 * ELECTION_TICKS);
  assert(c.core(3).term > 3, `term ${c.core(3).term}`);
  c.heal();
  c.tickAll(1);
  assertEquals(c.core(1).role, "follower");
});

Deno.test("§6.2 (thesis) check-quorum: a leader cut off from a quorum steps down after an election timeout without hearing from it", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.tickAll(3);
  c.isolate(1);
  // It counts who it heard from over each election timeout: it steps down at the
  // end of the first full timeout in which a quorum stayed silent.
  const ticks = tickUntil(c, 1, () => c.core(1).role !== "leader", 2 * ELECTION_TICKS);
  assert(ticks <= 2 * ELECTION_TICKS, `${ticks} ticks`);
  assertEquals(c.core(1).role, "follower");
  assertEquals(c.core(1).term, 2);
  // Without check-quorum it would stay leader forever.
  const d = new Cluster({ voters: 3, core: { checkQuorum: false } });
  d.elect(1);
  d.isolate(1);
  d.tick(1, 5 * ELECTION_TICKS);
  assertEquals(d.core(1).role, "leader");
});

Deno.test("§4.2.3 (thesis) a follower that hears from a live leader ignores a vote request", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.tickAll(2);
  const since = c.sent.length;
  c.deliver(message({ type: "vote", from: 3, to: 2, term: 5, index: 100, logTerm: 4 }));
  c.deliver(message({ type: "preVote", from: 3, to: 2, term: 5, index: 100, logTerm: 4 }));
  c.stabilize();
  assertEquals(c.core(2).term, 2);
  assertEquals(c.core(2).leader, 1);
  assertEquals(c.core(2).status().vote, 1);
  assertEquals(votesFrom(c, 2, since), []);
  assertEquals(c.sentOf("preVoteResp", { from: 2, since }), []);
  // Once the leader has been silent for an election timeout, the request counts.
  c.isolate(1);
  c.tick(2, ELECTION_TICKS);
  c.deliver(message({ type: "vote", from: 3, to: 2, term: 5, index: 100, logTerm: 4 }));
  c.stabilize();
  assertEquals(c.core(2).term, 5);
  assertEquals(votesFrom(c, 2, since), [{ to: 3, granted: true }]);
});

// ---------------------------------------------------------------- ReadIndex (thesis §6.4)

Deno.test("§6.4 (thesis) ReadIndex: the leader releases a read only after a quorum acknowledges a heartbeat", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "x");
  c.stabilize();
  const commit = c.core(1).status().commit;
  const stopAcks = c.drop((m) => m.type === "heartbeatResp");
  c.core(1).readIndex(bytes("r1"));
  c.stabilize();
  assertEquals(c.node(1).readStates, []);
  c.tick(1, 3);
  assertEquals(c.node(1).readStates, []);
  stopAcks();
  c.drop((m) => m.type === "heartbeatResp" && m.from === 3); // one follower suffices
  c.tick(1);
  assertEquals(c.node(1).readStates, [{ index: commit, context: bytes("r1") }]);
});

Deno.test("§6.4 (thesis) a new leader answers no read until an entry of its term has committed", () => {
  const c = new Cluster({ voters: 3 });
  const stopAppends = c.drop((m) => m.type === "app");
  c.elect(1);
  c.core(1).readIndex(bytes("r1"));
  c.tick(1, 3); // heartbeats are acknowledged, but the no-op does not commit
  assertEquals(c.core(1).status().commit, 3);
  assertEquals(c.node(1).readStates, []);
  stopAppends();
  c.tick(1, 2);
  assertEquals(c.core(1).status().commit, 4);
  assertEquals(c.node(1).readStates, [{ index: 4, context: bytes("r1") }]);
});

Deno.test("§6.4 (thesis) a follower's read is answered through the leader", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "x");
  c.stabilize();
  assert(c.core(2).readIndex(bytes("f1")));
  c.stabilize();
  const commit = c.core(1).status().commit;
  assertEquals(c.node(2).readStates, [{ index: commit, context: bytes("f1") }]);
  assertEquals(c.node(1).readStates, []);
  assertEquals(c.sentOf("readIndexResp", { from: 1, to: 2 }).length, 1);
});

Deno.test("§6.4 (thesis) a deposed leader does not answer a read", () => {
  const c = new Cluster({ voters: 3, core: { checkQuorum: false } });
  c.elect(1);
  c.isolate(1);
  c.elect(2); // term 3
  c.propose(2, "written by the new leader");
  c.stabilize();
  // Node 1 still believes it leads term 2.
  assertEquals(c.core(1).role, "leader");
  c.core(1).readIndex(bytes("stale"));
  c.tick(1, 3);
  assertEquals(c.node(1).readStates, []);
  c.heal();
  c.tick(1); // its heartbeat (with the read's context) is answered with term 3
  assertEquals(c.core(1).role, "follower");
  c.tickAll(3);
  assertEquals(c.node(1).readStates, []);
});

// ---------------------------------------------------------------- leadership transfer (thesis §3.10)

Deno.test("§3.10 (thesis) leadership transfers to an up-to-date follower", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "x");
  c.stabilize();
  c.core(1).transferLeader(2);
  c.stabilize();
  assertEquals(c.leader(), 2);
  assertEquals(c.core(2).term, 3);
  assertEquals(c.core(1).leader, 2);
  assert(c.propose(1, "y"));
  c.stabilize();
  assertEquals(c.commands(3), ["x", "y"]);
});

Deno.test("§3.10 (thesis) leadership transfers to a lagging follower once it has caught up", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.drop((m) => m.to === 3 || m.from === 3);
  for (let i = 0; i < 5; i++) c.propose(1, `v${i}`);
  c.stabilize();
  assertEquals(c.commands(3), []);
  c.heal();
  const since = c.sent.length;
  c.core(1).transferLeader(3);
  c.stabilize();
  assertEquals(c.leader(), 3);
  // The timeout-now went only after node 3 acknowledged the leader's last entry.
  const sent = c.sent.slice(since).map((s) => s.message);
  const timeoutNow = sent.findIndex((m) => m.type === "timeoutNow");
  const caughtUp = sent.findIndex((m) =>
    m.type === "appResp" && m.from === 3 && !m.reject && m.index === 9
  );
  assert(
    caughtUp >= 0 && caughtUp < timeoutNow,
    `ack at ${caughtUp}, timeout-now at ${timeoutNow}`,
  );
  c.propose(3, "after");
  c.stabilize();
  assertEquals(c.commands(3), ["v0", "v1", "v2", "v3", "v4", "after"]);
});

Deno.test("§3.10 (thesis) proposals are refused during a transfer, until it times out", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.drop((m) => m.to === 3);
  c.propose(1, "x");
  c.stabilize();
  c.core(1).transferLeader(3);
  c.stabilize();
  assertEquals(c.core(1).role, "leader");
  assertEquals(c.propose(1, "refused"), false);
  c.tick(1, ELECTION_TICKS); // the transfer gives up after an election timeout
  assertEquals(c.core(1).role, "leader");
  assert(c.propose(1, "accepted"));
  c.stabilize();
  assertEquals(c.commands(2), ["x", "accepted"]);
});

// ---------------------------------------------------------------- §6 membership (single-server changes, thesis §4.1)

Deno.test("§6 a learner is added, catches up, and is promoted to voter", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "x");
  c.stabilize();
  c.addNode(4);
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  c.stabilize();
  assertEquals(c.core(1).conf().learners, [4]);
  c.tick(1); // a heartbeat finds the new node; the leader sends it the whole log
  assertEquals(c.commands(4), ["x"]);
  assertEquals(c.core(4).conf(), { voters: [1, 2, 3], learners: [4], removed: [] });
  assertEquals(c.core(4).leader, 1);
  // A learner never campaigns.
  c.isolate(4);
  c.tick(4, 5 * ELECTION_TICKS);
  assertEquals(c.core(4).role, "follower");
  c.heal();
  assert(c.core(1).proposeConfChange({ type: "promote", nodeId: 4 }));
  c.stabilize();
  c.tick(1);
  for (const id of c.liveIds()) {
    assertEquals(c.core(id).conf(), { voters: [1, 2, 3, 4], learners: [], removed: [] });
  }
  // Four voters: a quorum is three.
  c.isolate(3);
  c.isolate(4);
  c.propose(1, "y");
  c.stabilize();
  assertEquals(c.commands(1), ["x"]);
  c.heal();
  c.tick(1);
  assertEquals(c.commands(4), ["x", "y"]);
});

Deno.test("§6 removing a voter shrinks the quorum", () => {
  const c = new Cluster({ voters: 4 });
  c.elect(1);
  c.isolate(3);
  c.isolate(4);
  c.propose(1, "x");
  c.stabilize();
  assertEquals(c.commands(1), []); // two of four
  c.heal();
  c.tick(1);
  assertEquals(c.commands(1), ["x"]);
  assert(c.core(1).proposeConfChange({ type: "remove", nodeId: 4 }));
  c.stabilize();
  c.tick(1);
  for (const id of [1, 2, 3]) {
    assertEquals(c.core(id).conf(), { voters: [1, 2, 3], learners: [], removed: [4] });
  }
  c.isolate(3);
  c.isolate(4);
  c.propose(1, "y");
  c.stabilize();
  assertEquals(c.commands(1), ["x", "y"]); // two of three
});

Deno.test("§6 a leader that removes itself steps down once the removal commits", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  const stopAppends = c.drop((m) => m.type === "app");
  assert(c.core(1).proposeConfChange({ type: "remove", nodeId: 1 }));
  c.tick(1, 3);
  // Not committed yet: it still leads, under the new configuration (thesis §4.2.2:
  // in force once appended), which it manages without counting itself.
  assertEquals(c.core(1).role, "leader");
  assertEquals(c.core(1).conf().voters, [2, 3]);
  assertEquals(c.core(1).removed, false);
  stopAppends();
  c.tick(1);
  assertEquals(c.core(1).role, "follower");
  assert(c.core(1).removed);
  assertEquals(c.core(1).conf(), { voters: [2, 3], learners: [], removed: [1] });
  // The rest elect a leader (at once, through a timeout-now to the most up-to-date voter).
  const leader = c.leader();
  assert(leader === 2 || leader === 3, `leader ${leader}`);
  for (const id of [2, 3]) {
    assertEquals(c.core(id).conf(), { voters: [2, 3], learners: [], removed: [1] });
  }
  assert(c.propose(leader, "after"));
  c.stabilize();
  assertEquals(c.commands(2), ["after"]);
  // The removed node never campaigns.
  c.tick(1, 5 * ELECTION_TICKS);
  assertEquals(c.core(1).role, "follower");
  assertEquals(c.core(1).propose(bytes("no")), false);
});

Deno.test("§6 a removed id is refused when re-added", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  assert(c.core(1).proposeConfChange({ type: "remove", nodeId: 3 }));
  c.stabilize();
  assertEquals(c.core(1).conf().removed, [3]);
  assertEquals(c.core(1).proposeConfChange({ type: "addVoter", nodeId: 3 }), false);
  assertEquals(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 3 }), false);
  assertEquals(c.core(1).conf().voters, [1, 2]);
});

Deno.test("§6 only one membership change may be pending at a time", () => {
  const c = new Cluster({ voters: 3 });
  const stopAppends = c.drop((m) => m.type === "app");
  c.elect(1);
  // A new leader accepts none until an entry of its term commits.
  assertEquals(c.core(1).canChangeConf(), false);
  assertEquals(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }), false);
  stopAppends();
  c.tick(1);
  assert(c.core(1).canChangeConf());
  c.drop((m) => m.type === "app");
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  assertEquals(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 5 }), false);
  c.stabilize();
  assertEquals(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 5 }), false);
  c.heal();
  c.tick(1);
  assertEquals(c.core(1).conf().learners, [4]);
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 5 }));
  c.stabilize();
  assertEquals(c.core(1).conf().learners, [4, 5]);
});

Deno.test("§6 a removed node that still sends messages is told so and learns it was removed", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.isolate(3);
  assert(c.core(1).proposeConfChange({ type: "remove", nodeId: 3 }));
  c.stabilize();
  assertEquals(c.core(1).conf().removed, [3]);
  assertEquals(c.core(3).removed, false); // it never heard
  c.heal();
  c.cut(1, 3); // only node 2 hears from it
  const since = c.sent.length;
  tickUntil(c, 3, () => c.core(3).removed, 3 * ELECTION_TICKS);
  assertEquals(c.sentOf("removed", { from: 2, to: 3, since }).length, 1);
  assertEquals(c.core(3).role, "follower");
  assertEquals(c.core(2).term, 2);
  assertEquals(c.leader(), 1);
});

// ---------------------------------------------------------------- §7 log compaction

Deno.test("§7 a follower whose entries were compacted receives a snapshot, installs it, then catches up with appends", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "a");
  c.stabilize();
  c.isolate(3);
  for (let i = 0; i < 10; i++) c.propose(1, `v${i}`);
  // A membership change the snapshot must carry (node 4 never starts: messages to it are lost).
  c.stabilize();
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  c.stabilize();
  const snap = c.compact(1);
  assertEquals(c.core(1).status().firstIndex, snap.meta.index + 1);
  c.compact(2);
  c.heal();
  const since = c.sent.length;
  c.tick(1);
  const snaps = c.sentOf("snap", { from: 1, to: 3, since });
  assertEquals(snaps.length, 1);
  assertEquals(snaps[0]!.snapshot?.meta.index, snap.meta.index);
  // The follower's log now starts after the snapshot, with the snapshot's membership.
  const st3 = c.core(3).status();
  assertEquals(st3.firstIndex, snap.meta.index + 1);
  assertEquals(st3.commit, snap.meta.index);
  assertEquals(c.core(3).conf(), { voters: [1, 2, 3], learners: [4], removed: [] });
  assertEquals(c.node(3).store.snapshot.meta.index, snap.meta.index);
  assertEquals(c.commands(3), c.commands(1));
  assertEquals(c.core(1).status().progress?.[3]?.state, "replicate");
  // New entries then go by append.
  const after = c.sent.length;
  c.propose(1, "b");
  c.stabilize();
  assertEquals(c.commands(3), [...c.commands(2)]);
  assertEquals(c.commands(3).at(-1), "b");
  assertEquals(c.sentOf("snap", { since: after }).length, 0);
  assert(c.sentOf("app", { from: 1, to: 3, since: after }).some((m) => m.entries.length > 0));
});

Deno.test("§7 a snapshot that lags the follower's commit index is acknowledged without installing", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "a");
  c.stabilize();
  const meta = c.compact(1).meta;
  const since = c.sent.length;
  c.deliver(message({
    type: "snap",
    from: 1,
    to: 2,
    term: 2,
    snapshot: { meta: { ...meta, index: 3, term: 1 }, data: new Uint8Array(0) },
  }));
  c.stabilize();
  assertEquals(c.core(2).status().firstIndex, 1);
  assertEquals(c.commands(2), ["a"]);
  assertEquals(c.sentOf("appResp", { from: 2, since }).map((m) => m.index), [meta.index]);
});

// ---------------------------------------------------------------- restart

Deno.test("§5.1 §5.2 a node rebuilt from its store keeps its term, vote, log and membership", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "a");
  c.stabilize();
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  c.stabilize();
  c.propose(1, "b");
  c.stabilize();
  const before = c.core(2).status();
  const log = c.core(2).entriesFrom(1);
  c.crash(2);
  c.restart(2);
  const after = c.core(2).status();
  assertEquals(after.term, before.term);
  assertEquals(after.vote, 1);
  assertEquals(after.lastIndex, before.lastIndex);
  assertEquals(c.core(2).entriesFrom(1), log);
  assertEquals(after.conf, { voters: [1, 2, 3], learners: [4], removed: [] });
  assertEquals(after.role, "follower");
  // It re-applies what was committed, once more.
  c.tick(1);
  assertEquals(c.commands(2), ["a", "b"]);
  // It does not vote twice in its term.
  const since = c.sent.length;
  c.crash(1);
  c.deliver(message({ type: "vote", from: 3, to: 2, term: before.term, index: 99, logTerm: 9 }));
  c.stabilize();
  assertEquals(votesFrom(c, 2, since), [{ to: 3, granted: false }]);
});

Deno.test("§7 a node restarted from a snapshot keeps the snapshot's membership and the entries after it", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  c.stabilize();
  c.propose(1, "a");
  c.stabilize();
  const snap = c.compact(2);
  c.propose(1, "b");
  c.tick(1);
  c.restart(2);
  assertEquals(c.core(2).status().firstIndex, snap.meta.index + 1);
  assertEquals(c.core(2).conf().learners, [4]);
  assertEquals(c.commands(2), ["a"]); // the state machine came back from the snapshot
  c.tick(1);
  assertEquals(c.commands(2), ["a", "b"]);
});

// ---------------------------------------------------------------- edge cases

Deno.test("§3.10 (thesis) a follower forwards a transfer request; transfers to itself, a learner or a stranger are ignored", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.addNode(4);
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  c.stabilize();
  c.tick(1);
  for (const to of [1, 4, 9]) {
    c.core(1).transferLeader(to);
    c.stabilize();
    assertEquals(c.leader(), 1, `transfer to ${to}`);
    assert(c.propose(1, `still leading after ${to}`));
  }
  c.core(2).transferLeader(3);
  c.stabilize();
  assertEquals(c.leader(), 3);
});

Deno.test("§5.3 a follower that restarts after losing appends in flight is repaired", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.propose(1, "a");
  c.stabilize();
  c.crash(3);
  for (let i = 0; i < 5; i++) c.propose(1, `v${i}`);
  c.stabilize();
  c.restart(3);
  c.tick(1);
  assertEquals(c.commands(3), ["a", "v0", "v1", "v2", "v3", "v4"]);
  assertEquals(c.core(1).status().progress?.[3]?.state, "replicate");
});

Deno.test("flow control: a leader refuses proposals beyond uncommittedEntriesMax", () => {
  const c = new Cluster({ voters: 3, core: { uncommittedEntriesMax: 5 } });
  c.elect(1);
  c.isolate(1);
  let accepted = 0;
  for (let i = 0; i < 10; i++) if (c.propose(1, `v${i}`)) accepted++;
  assertEquals(accepted, 5);
  c.heal();
  c.tick(1);
  assertEquals(c.commands(2).length, 5);
  assert(c.propose(1, "room again"));
});

Deno.test("§5.2 a node without a known leader refuses proposals and reads", () => {
  const c = new Cluster({ voters: 3 });
  assertEquals(c.propose(2, "x"), false);
  assertEquals(c.core(2).readIndex(bytes("r")), false);
});

Deno.test("§5.2 a single-node cluster elects itself at its timeout and commits alone", () => {
  const c = new Cluster({ voters: 1 });
  tickUntil(c, 1, () => c.core(1).role === "leader", 2 * ELECTION_TICKS);
  assert(c.propose(1, "x"));
  c.stabilize();
  assertEquals(c.commands(1), ["x"]);
  c.core(1).readIndex(bytes("r"));
  c.stabilize();
  assertEquals(c.node(1).readStates, [{ index: 3, context: bytes("r") }]);
});

Deno.test("§6 a promoted learner may campaign and lead", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  c.addNode(4);
  assert(c.core(1).proposeConfChange({ type: "addLearner", nodeId: 4 }));
  c.stabilize();
  c.tick(1);
  assert(c.core(1).proposeConfChange({ type: "promote", nodeId: 4 }));
  c.stabilize();
  c.tick(1);
  c.core(1).transferLeader(4);
  c.stabilize();
  assertEquals(c.leader(), 4);
  assert(c.propose(4, "from 4"));
  c.stabilize();
  assertEquals(c.commands(2), ["from 4"]);
});

Deno.test("§6 a removed node restarted from its store learns of its removal again on first contact, without disrupting the cluster", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  assert(c.core(1).proposeConfChange({ type: "remove", nodeId: 3 }));
  c.stabilize();
  // The leader stops sending appends to it once the removal is in its log, so node 3
  // never sees the entry; the leader tells it directly once the removal commits.
  assert(c.core(3).removed);
  assertEquals(c.core(3).conf().voters, [1, 2, 3]);
  // That knowledge is not in its store: after a restart it believes it is a voter...
  c.restart(3);
  assertEquals(c.core(3).removed, false);
  // ...until its first campaign is answered with "removed".
  tickUntil(c, 3, () => c.core(3).removed, 3 * ELECTION_TICKS);
  assertEquals(c.leader(), 1);
  assertEquals(c.core(1).term, 2);
  c.tick(3, 5 * ELECTION_TICKS);
  assertEquals(c.core(3).role, "follower");
  assertEquals(c.core(3).term, 2);
});

Deno.test("§6.4 (thesis) reads waiting for a quorum are released in the order they arrived", () => {
  const c = new Cluster({ voters: 3 });
  c.elect(1);
  const stopAcks = c.drop((m) => m.type === "heartbeatResp");
  c.core(1).readIndex(bytes("r1"));
  c.propose(1, "x");
  c.stabilize();
  c.core(1).readIndex(bytes("r2"));
  c.stabilize();
  assertEquals(c.node(1).readStates, []);
  stopAcks();
  c.tick(1); // the heartbeat carries the newest read's context: its quorum confirms both
  const commit = c.core(1).status().commit;
  assertEquals(c.node(1).readStates, [
    { index: commit - 1, context: bytes("r1") },
    { index: commit, context: bytes("r2") },
  ]);
});
