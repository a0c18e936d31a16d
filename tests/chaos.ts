/**
 * `deno task chaos [-- --seconds N --seed S --snapshot-entries N]`: a fault
 * and fidelity run against real processes. Three nodes on 127.0.0.1 (ports
 * the OS picks, state in a temp dir) take requests from 12 clients at random
 * nodes. The keys and values are random Unicode text: a leading U+FEFF, line
 * breaks, NUL, combining marks, emoji, U+FFFE, `/`, `%`, `?` and `#`. Every
 * 2–4 s a random node (one time in five two nodes, a majority) is either
 * SIGKILLed and, 0.3–1.8 s later, started again, or paused with SIGSTOP for
 * 0.3–3 s (past an election timeout: a paused leader is replaced, and
 * continued it must not serve what it knew).
 * Six clients write unique keys; two more put and delete a pool of 200
 * shared keys, one operation per key at a time; four more read and write
 * five registers at random nodes, and their history is checked for
 * linearizability (tests/linearizability.ts, exact for such histories). At
 * the end every acknowledged unique write must read back, byte for byte,
 * from every node, and every shared key must read the same on all three
 * nodes: its last acknowledged outcome, or that of a later operation left
 * unanswered (which may still have taken effect). Prints the counts; exits 1
 * on any problem.
 *
 * Not part of `deno task test`: it runs for as long as asked.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  missingWrites,
  RegisterRecorder,
  startCluster,
  type TestNode,
  trickyText,
} from "./harness.ts";
import { checkRegisterHistory } from "./linearizability.ts";
import { seededRandom } from "../raft/testing.ts";

const WRITERS = 6;
const SHARED_WRITERS = 2;
const SHARED_KEYS = 200;
const REGISTER_CLIENTS = 4;
const REGISTERS = 5;
/** Per request: past it, a write's outcome is unknown and a read is not recorded. */
const REQUEST_TIMEOUT_MS = 3000;

async function main(): Promise<number> {
  const usage = "Usage: deno task chaos [-- --seconds N (30) --seed S --snapshot-entries N (300)]";
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
      options: {
        seconds: { type: "string", default: "30" },
        seed: { type: "string", default: String(Date.now() % 1_000_000) },
        "snapshot-entries": { type: "string", default: "300" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    console.error(`Cannot run: ${error instanceof Error ? error.message : error}\n${usage}`);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const seconds = Number(values.seconds);
  const seed = Number(values.seed);
  const snapshotEntries = Number(values["snapshot-entries"]);
  if (!(seconds > 0) || !Number.isSafeInteger(seed) || !(snapshotEntries >= 1)) {
    console.error("Cannot run: --seconds and --snapshot-entries must be > 0, --seed an integer");
    return 2;
  }
  console.log(`chaos: ${seconds} s, seed ${seed}, snapshots every ${snapshotEntries} entries`);
  const random = seededRandom(seed);
  const pick = (n: number) => Math.floor(random() * n);
  const text = (max: number) => trickyText(random, max);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  await using cluster = await startCluster(3, { snapshotEntries, name: "raftkv-chaos-" });
  const acked = new Map<string, string>();
  let stopping = false;
  let refused = 0;
  // Shared keys: the last acknowledged outcome (null: deleted) and the outcomes of
  // operations left unanswered since.
  const shared = Array.from({ length: SHARED_KEYS }, (_, i) => `shared-${i}-${text(4)}`);
  const lastAcked = new Map<string, string | null>();
  const unanswered = new Map<string, Set<string | null>>();
  const busy = new Set<string>();
  let sharedOps = 0;
  const sharedWriters = Array.from({ length: SHARED_WRITERS }, async () => {
    while (!stopping) {
      const key = shared[pick(shared.length)]!;
      if (busy.has(key)) continue;
      busy.add(key);
      const value = random() < 0.3 ? null : text(50);
      const node = cluster.node(pick(3));
      const status = value === null
        ? await node.del(key, { timeoutMs: 3000 })
        : await node.put(key, value, { timeoutMs: 3000 });
      sharedOps++;
      if (status === 204 || (value === null && status === 404)) {
        lastAcked.set(key, value);
        unanswered.delete(key);
      } else if (status === 0 || status >= 500) {
        const outcomes = unanswered.get(key) ?? new Set();
        outcomes.add(value);
        unanswered.set(key, outcomes);
      }
      busy.delete(key);
    }
  });
  const writers = Array.from({ length: WRITERS }, async (_, w) => {
    for (let i = 0; !stopping; i++) {
      const key = `w${w}-${i}-${text(6)}`; // never "." or ".."
      const value = text(random() < 0.5 ? 20 : 400);
      const status = await cluster.node(pick(3)).put(key, value, { timeoutMs: 3000 });
      if (status === 204) acked.set(key, value);
      else refused++;
    }
  });
  // Registers: every write a unique value, every answer timed, for the checker.
  const registers = new RegisterRecorder(REQUEST_TIMEOUT_MS);
  const registerClients = Array.from({ length: REGISTER_CLIENTS }, async (_, c) => {
    for (let n = 0; !stopping; n++) {
      const node = cluster.node(pick(3));
      const key = `reg-${pick(REGISTERS)}`;
      if (random() < 0.5) await registers.write(node, key, `c${c}-${n}-${text(8)}`);
      else await registers.read(node, key);
      if (!node.running) await sleep(10);
    }
  });
  const end = Date.now() + seconds * 1000;
  let kills = 0;
  let pauses = 0;
  let quorumLosses = 0;
  while (Date.now() < end) {
    await sleep(2000 + pick(2000));
    // Mostly one node; one time in five two at once, so that the cluster
    // loses its quorum and must recover when they come back.
    const first = pick(3);
    const victims: TestNode[] = [cluster.node(first)];
    if (random() < 0.2) victims.push(cluster.node((first + 1 + pick(2)) % 3));
    if (victims.length > 1) quorumLosses++;
    if (random() < 0.6) {
      for (const v of victims) await v.stop("SIGKILL");
      kills += victims.length;
      await sleep(300 + pick(1500));
      for (const v of victims) await v.start();
    } else {
      for (const v of victims) v.pause();
      pauses += victims.length;
      await sleep(300 + pick(2700));
      for (const v of victims) v.resume();
    }
  }
  stopping = true;
  await Promise.all([...writers, ...sharedWriters, ...registerClients]);
  console.log(
    `acknowledged ${acked.size} writes, ${refused} refused or unanswered, ${kills} kills, ${pauses} pauses (${quorumLosses} times two nodes at once)`,
  );
  const { history, unexpected } = registers;
  const problems = [...unexpected];
  const registerWrites = history.filter((o) => o.kind === "write" && o.complete !== Infinity);
  const registerReads = history.filter((o) => o.kind === "read");
  const violations = checkRegisterHistory(history);
  console.log(
    `registers: ${registerWrites.length} acknowledged writes and ${registerReads.length} reads checked for linearizability: ${violations.length} violations`,
  );
  problems.push(...violations);
  const mismatches = await missingWrites(cluster.nodes, acked, { concurrency: 16 });
  console.log(`read back ${3 * acked.size} times: ${mismatches.length} mismatches`);
  problems.push(...mismatches);
  for (const key of shared) {
    if (!lastAcked.has(key) && !unanswered.has(key)) continue;
    const allowed = new Set([lastAcked.get(key) ?? null, ...(unanswered.get(key) ?? [])]);
    const seen: (string | null)[] = [];
    for (const node of cluster.nodes) {
      const r = await node.read(key);
      seen.push(r.status === 404 ? null : r.value ?? null);
    }
    if (!seen.every((v) => v === seen[0]) || !allowed.has(seen[0]!)) {
      problems.push(
        `shared ${JSON.stringify(key)}: nodes read ${JSON.stringify(seen)}, allowed ${
          JSON.stringify([...allowed])
        }`,
      );
    }
  }
  console.log(`${sharedOps} puts and deletes on ${SHARED_KEYS} shared keys checked`);
  for (const p of problems.slice(0, 10)) console.log(`  ${p}`);
  console.log(`chaos: ${problems.length === 0 ? "passed" : `${problems.length} problems`}`);
  return problems.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
