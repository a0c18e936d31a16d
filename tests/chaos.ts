/**
 * `deno task chaos [-- --seconds N --seed S --snapshot-entries N]`: a fault
 * and fidelity run against real processes. Three nodes on 127.0.0.1 (ports
 * the OS picks, state in a temp dir) take writes from 8 clients at random
 * nodes. The keys and values are random Unicode text: a leading U+FEFF, line
 * breaks, NUL, combining marks, emoji, U+FFFE, `/`, `%`, `?` and `#`. Every
 * 2–4 s a random node is SIGKILLed and, 0.3–1.8 s later, started again. At
 * the end every acknowledged write must read back, byte for byte, from every
 * node. Prints the counts; exits 1 on any mismatch.
 *
 * Not part of `deno task test`: it runs for as long as asked.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { missingWrites, startCluster, trickyText } from "./harness.ts";
import { seededRandom } from "../raft/testing.ts";

const WRITERS = 8;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
    options: {
      seconds: { type: "string", default: "30" },
      seed: { type: "string", default: String(Date.now() % 1_000_000) },
      "snapshot-entries": { type: "string", default: "300" },
    },
  });
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
  const writers = Array.from({ length: WRITERS }, async (_, w) => {
    for (let i = 0; !stopping; i++) {
      const key = `w${w}-${i}-${text(6)}`; // never "." or ".."
      const value = text(random() < 0.5 ? 20 : 400);
      const status = await cluster.node(pick(3)).put(key, value, { timeoutMs: 3000 });
      if (status === 204) acked.set(key, value);
      else refused++;
    }
  });
  const end = Date.now() + seconds * 1000;
  let kills = 0;
  while (Date.now() < end) {
    await sleep(2000 + pick(2000));
    const victim = cluster.node(pick(3));
    await victim.stop("SIGKILL");
    kills++;
    await sleep(300 + pick(1500));
    await victim.start();
  }
  stopping = true;
  await Promise.all(writers);
  console.log(
    `acknowledged ${acked.size} writes, ${refused} refused or unanswered, ${kills} kills`,
  );
  const problems = await missingWrites(cluster.nodes, acked, { concurrency: 16 });
  console.log(`read back ${3 * acked.size} times: ${problems.length} mismatches`);
  for (const p of problems.slice(0, 10)) console.log(`  ${p}`);
  return problems.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
