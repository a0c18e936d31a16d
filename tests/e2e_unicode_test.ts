/**
 * End-to-end: keys and values of any Unicode text survive replication,
 * snapshots and a SIGKILL, read back byte for byte from every node.
 *
 * @module
 */

import { assertEquals } from "./assert.ts";
import { e2eTest, missingWrites, putAll, trickyText } from "./harness.ts";
import { seededRandom } from "../raft/testing.ts";

const SNAPSHOT_ENTRIES = 50;

function pairs(seed: number, count: number): [string, string][] {
  const random = seededRandom(seed);
  const text = (max: number) => trickyText(random, max);
  // A unique prefix keeps keys distinct; the rest is random (a key may not be "." or "..").
  return Array.from({ length: count }, (_, i) => [
    `${seed}-${i}${text(8)}`,
    text(random() < 0.5 ? 12 : 300),
  ]);
}

e2eTest(
  "keys and values of any Unicode text read back exactly from every node, after snapshots and a SIGKILL",
  async (h) => {
    const cluster = await h.startCluster(3, { snapshotEntries: SNAPSHOT_ENTRIES });
    const fixed: [string, string][] = [
      ["\ufeff", "\ufeff"],
      ["\n", "a\r\nb"],
      ["mgmt/nodes", "not the member list"],
      ["%2F", "\u2028\u2029"],
      [" ", ""],
    ];
    const first = [...fixed, ...pairs(1, 150)];
    const leader = await cluster.leader();
    await putAll(leader, first);
    const down = cluster.nodes.find((n) => n !== leader)!;
    await down.stop("SIGKILL");
    // Several snapshots' worth while it is down: it catches up from a snapshot.
    const second = pairs(2, 4 * SNAPSHOT_ENTRIES);
    await putAll(leader, second);
    await down.start();
    const expected = new Map([...first, ...second]);
    const problems = await missingWrites(cluster.nodes, expected);
    assertEquals(problems, [], `${problems.length} of ${3 * expected.size} reads differ`);
  },
);
