/**
 * End-to-end: durability across restarts of real processes — every node at
 * once (SIGTERM and SIGKILL, with writes in flight), and a node that was
 * down while the others compacted their logs.
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";
import { e2eTest, missingWrites, putAll, type TestNode, waitFor } from "./harness.ts";

/** Writers in flight while the cluster is stopped. */
const WRITERS = 6;
/** Writes acknowledged before the stop signal goes out. */
const ACKED_BEFORE_STOP = 60;
/** Each writer gives up after this many writes (a bound; the stop ends them sooner). */
const WRITES_PER_WRITER_MAX = 2000;

for (const signal of ["SIGTERM", "SIGKILL"] as const) {
  e2eTest(
    `every acknowledged write survives a ${signal} of all nodes at once, with writes in flight`,
    async (h) => {
      const cluster = await h.startCluster(3);
      const acked = new Map<string, string>();
      let stopping = false;
      const writers = Array.from({ length: WRITERS }, async (_, w) => {
        const deadline = Date.now() + 20_000;
        for (let j = 0; j < WRITES_PER_WRITER_MAX && !stopping && Date.now() < deadline; j++) {
          const node = cluster.node((w + j) % 3);
          const key = `w${w}-${j}`;
          const value = `v${w}-${j}-${signal}`;
          const status = await node.put(key, value, { timeoutMs: 3000 });
          if (status === 204) acked.set(key, value);
        }
      });
      await waitFor(() => acked.size >= ACKED_BEFORE_STOP, {
        what: `${ACKED_BEFORE_STOP} acknowledged writes`,
      });
      const statuses = await Promise.all(cluster.nodes.map((n) => n.stop(signal)));
      stopping = true;
      await Promise.all(writers);
      for (const [i, s] of statuses.entries()) {
        if (signal === "SIGTERM") {
          assertEquals(s.code, 0, `n${i + 1} exits with 0 on SIGTERM`);
        } else {
          assertEquals(s.signal, "SIGKILL", `n${i + 1} was killed`);
        }
      }

      await Promise.all(cluster.nodes.map((n) => n.start()));
      const problems = await missingWrites(cluster.nodes, acked);
      assertEquals(problems, [], `${problems.length} of ${acked.size} acknowledged writes lost`);
      // And the restarted cluster takes new writes.
      assertEquals(await cluster.node(1).putRetrying("after-restart", "yes"), 204);
      assertEquals((await cluster.node(2).read("after-restart")).value, "yes");
    },
  );
}

const SNAPSHOT_ENTRIES = 100;
/** Keys written while the node is down: many snapshots' worth. */
const KEYS_WRITTEN = 1000;

e2eTest(
  "a node stopped while the others compact their logs catches up by snapshot",
  async (h) => {
    const cluster = await h.startCluster(3, { snapshotEntries: SNAPSHOT_ENTRIES });
    const leader = await cluster.leader();
    const down = cluster.nodes.find((n) => n !== leader)!;
    const before = await down.status();
    await down.stop("SIGTERM");

    // The leader keeps at most a snapshot's worth of entries behind its latest
    // snapshot (186eb37), so these writes compact away the down node's next entry.
    const count = KEYS_WRITTEN;
    const entries = Array.from({ length: count }, (_, i) => [`key${i}`, `value${i}`] as const);
    await putAll(leader, entries, { concurrency: 16 });
    const compacted = await waitFor(async () => {
      const s = await leader.status();
      return s.firstIndex > before.lastIndex + 1 ? s : undefined;
    }, { what: `the leader's log to start after index ${before.lastIndex + 1}` });
    assert(compacted.firstIndex > 1);

    await down.start();
    await waitFor(() => down.currentLogLines.some((l) => l.includes("installed snapshot")), {
      what: `${down.name} to log "installed snapshot"`,
      timeoutMs: 20_000,
    });
    await checkRead(down, "key0", "value0");
    await checkRead(down, `key${count - 1}`, `value${count - 1}`);
  },
  { timeoutMs: 90_000 },
);

async function checkRead(node: TestNode, key: string, value: string): Promise<void> {
  const r = await node.read(key);
  assertEquals({ status: r.status, value: r.value }, { status: 200, value }, `GET ${key}`);
}
