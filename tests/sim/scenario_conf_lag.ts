/**
 * A directed scenario (FINDINGS.md §2): a node whose durable commit index
 * lags two membership changes behind its log — a torn WAL tail kept the
 * entries record and cut the hard-state record — restarts with the
 * configuration of two changes ago and, in a partition, commits with a
 * quorum of it while the real cluster commits with a quorum of the new one.
 *
 * Run: `deno run tests/sim/scenario_conf_lag.ts` (no permissions). Prints
 * each step; exits 1 if two different entries were committed at one index.
 *
 * @module
 */

import { encodeConfChange, RaftCore } from "../../raft/core.ts";
import { emptyConf, type Entry, type HardState, type Message } from "../../raft/types.ts";

interface Disk {
  hardState: HardState;
  entries: Entry[];
}

interface ScenarioNode {
  id: number;
  core: RaftCore;
  disk: Disk;
  applied: Map<number, string>;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

function describe(e: Entry): string {
  if (e.type === "conf") return `${e.index}/${e.term}:conf`;
  return `${e.index}/${e.term}:${e.data.length === 0 ? "noop" : textDecoder.decode(e.data)}`;
}

/** A hand-driven cluster: instant persistence, delivery under a cut-link filter. */
class Harness {
  readonly nodes = new Map<number, ScenarioNode>();
  readonly cut = new Set<string>();
  /** When set, this node's next Ready with entries and hard state is torn and the node crashes. */
  tearNode = 0;
  torn = false;
  #inbox: Message[] = [];

  start(id: number, disk: Disk, random: number): ScenarioNode {
    const core = new RaftCore({
      id,
      initial: {
        hardState: { ...disk.hardState },
        snapshotMeta: { index: 0, term: 0, conf: emptyConf() },
        entries: disk.entries.slice(),
        applied: 0,
      },
      random: () => random,
    });
    const node: ScenarioNode = { id, core, disk, applied: new Map() };
    this.nodes.set(id, node);
    return node;
  }

  cutLinks(a: readonly number[], b: readonly number[]): void {
    for (const x of a) {
      for (const y of b) {
        this.cut.add(`${x}>${y}`);
        this.cut.add(`${y}>${x}`);
      }
    }
  }

  drive(node: ScenarioNode): void {
    if (this.nodes.get(node.id) !== node) return; // crashed
    this.#inbox.push(...node.core.takeMessages());
    while (node.core.hasReady()) {
      const rd = node.core.ready();
      const tear = node.id === this.tearNode && rd.entries.length > 0 && rd.hardState;
      this.#persist(node.disk, rd.entries, tear ? undefined : rd.hardState);
      if (tear) {
        console.log(
          `n${node.id}: Ready entries [${rd.entries.map((e) => e.index)}] + hard state ` +
            `${
              JSON.stringify(rd.hardState)
            }: torn write keeps the entries, loses the hard state; crash`,
        );
        this.nodes.delete(node.id);
        this.torn = true;
        return;
      }
      this.#inbox.push(...rd.messages, ...rd.persistedMessages);
      for (const e of rd.committedEntries) node.applied.set(e.index, describe(e));
      node.core.advance(rd);
      this.#inbox.push(...node.core.takeMessages());
    }
  }

  pump(rounds = 50): void {
    for (let r = 0; r < rounds; r++) {
      for (const n of this.nodes.values()) this.drive(n);
      const batch = this.#inbox.splice(0);
      if (batch.length === 0) return;
      for (const m of batch) {
        if (this.cut.has(`${m.from}>${m.to}`)) continue;
        const target = this.nodes.get(m.to);
        if (target === undefined) continue;
        target.core.step(m);
        this.drive(target);
      }
    }
  }

  #persist(disk: Disk, entries: readonly Entry[], hardState: HardState | undefined): void {
    for (const e of entries) {
      disk.entries.length = e.index - 1; // bootstrap logs start at 1, never compacted here
      disk.entries.push(e);
    }
    if (hardState !== undefined) disk.hardState = { ...hardState };
  }
}

function conf(node: ScenarioNode): string {
  const s = node.core.status();
  return `last ${s.lastIndex} commit ${s.commit} voters [${s.conf.voters}]`;
}

/** Runs the scenario; returns true if two entries were committed at one index. */
export function runConfLagScenario(): boolean {
  const h = new Harness();
  const boot: Entry[] = [1, 2, 3].map((id) => ({
    index: id,
    term: 1,
    type: "conf",
    data: encodeConfChange({ type: "addVoter", nodeId: id }),
  }));
  for (const id of [1, 2, 3]) {
    h.start(id, { hardState: { term: 1, vote: 0, commit: 3 }, entries: boot.slice() }, 0.99);
  }
  const empty = (): Disk => ({ hardState: { term: 0, vote: 0, commit: 0 }, entries: [] });
  const n1 = h.nodes.get(1) as ScenarioNode;
  const n2 = h.nodes.get(2) as ScenarioNode;
  const n3 = h.nodes.get(3) as ScenarioNode;
  n3.core.campaign();
  h.pump();
  console.log(`n3 is ${n3.core.status().role} of term ${n3.core.term}`);

  // C1 = {1,2,3,4}: node 2 stores the entry but its acknowledgement is lost,
  // node 1's makes the quorum; then node 2 hears nothing for a while.
  h.start(4, empty(), 0.99);
  n3.core.proposeConfChange({ type: "addVoter", nodeId: 4 });
  h.cut.add("2>3");
  h.drive(n3);
  h.pump(1);
  h.cutLinks([2], [3, 4]);
  h.pump();
  console.log(`after C1: n3 ${conf(n3)}; n2 ${conf(n2)}`);

  // C2 = {1,2,3,4,5}, committed by {3,4,1}.
  h.start(5, empty(), 0.99);
  n3.core.proposeConfChange({ type: "addVoter", nodeId: 5 });
  h.pump();
  console.log(`after C2: n3 ${conf(n3)}`);

  // Node 2 reconnects, receives the rest of the log with the new commit,
  // and crashes in the middle of persisting it.
  h.cut.clear();
  h.tearNode = 2;
  for (let i = 0; i < 5 && !h.torn; i++) {
    n3.core.tick();
    h.drive(n3);
    h.pump();
  }
  h.tearNode = 0;
  const n2b = h.start(2, n2.disk, 0);
  console.log(`n2 restarted: ${conf(n2b)}`);

  // Partition {1,2} | {3,4,5}; node 1's lease runs out; node 2 campaigns.
  h.cutLinks([1, 2], [3, 4, 5]);
  for (let i = 0; i < 10; i++) n1.core.tick();
  h.drive(n1);
  n2b.core.campaign();
  h.pump();
  console.log(
    `n2 is ${n2b.core.status().role} of term ${n2b.core.term}; n3 is ${n3.core.status().role} of term ${n3.core.term}`,
  );
  n3.core.propose(textEncoder.encode("from-3"));
  n2b.core.propose(textEncoder.encode("from-2"));
  h.pump();

  const committed = new Map<number, { value: string; node: number }>();
  let split = false;
  for (const node of h.nodes.values()) {
    const tail = [...node.applied.values()].slice(-3);
    console.log(`n${node.id} applied … ${tail.join(" ")}`);
    for (const [index, value] of node.applied) {
      const seen = committed.get(index);
      if (seen === undefined) committed.set(index, { value, node: node.id });
      else if (seen.value !== value && !split) {
        split = true;
        console.log(
          `SPLIT BRAIN: index ${index} is ${seen.value} on n${seen.node} but ${value} on n${node.id}`,
        );
      }
    }
  }
  return split;
}

if (import.meta.main) {
  const split = runConfLagScenario();
  console.log(split ? "scenario: REPRODUCED" : "scenario: safe");
  Deno.exit(split ? 1 : 0);
}
