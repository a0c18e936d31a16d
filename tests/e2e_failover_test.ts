/**
 * End-to-end: leader failures of real processes — a SIGKILLed leader under
 * a steady write load, and a leader paused with SIGSTOP and continued.
 *
 * @module
 */

import { assert, assertEquals, assertNotEquals } from "./assert.ts";
import { e2eTest, FAST_TIMINGS, missingWrites, type TestNode, waitFor } from "./harness.ts";

const WRITERS = 4;
const WRITES_PER_WRITER_MAX = 5000;
/** How long the load runs in all (it also runs until the new leader took some writes). */
const LOAD_MS = 3000;

e2eTest(
  "SIGKILL of the leader under write load: another node takes over and no acknowledged write is lost",
  async (h) => {
    const cluster = await h.startCluster(3);
    const old = await cluster.leader();
    const acked = new Map<string, string>();
    const unexpected: string[] = [];
    let ackedAfterFailover = 0;
    let failedOver = false;
    let stopping = false;
    const started = Date.now();
    const writers = Array.from({ length: WRITERS }, async (_, w) => {
      const deadline = started + 30_000;
      for (let j = 0; j < WRITES_PER_WRITER_MAX && !stopping && Date.now() < deadline; j++) {
        // Spread over the live nodes: followers forward to the leader.
        const live = cluster.live;
        const node = live[(w + j) % live.length];
        if (node === undefined) break;
        const key = `w${w}-${j}`;
        const value = `value-${w}-${j}`;
        const status = await node.put(key, value, { timeoutMs: 3000 });
        if (status === 204) {
          acked.set(key, value);
          if (failedOver) ackedAfterFailover++;
        } else if (status !== 503 && status !== 0) {
          // 503 and no answer leave the outcome unknown; anything else is wrong.
          unexpected.push(`PUT ${key} on ${node.name}: ${status}`);
        }
      }
    });
    await waitFor(() => acked.size >= 50, { what: "50 acknowledged writes before the kill" });
    await old.stop("SIGKILL");
    const next = await cluster.leader({ not: old });
    assertNotEquals(next.id, old.id);
    failedOver = true;
    await waitFor(() => ackedAfterFailover >= 50 && Date.now() - started >= LOAD_MS, {
      what: "50 writes acknowledged after the failover",
      timeoutMs: 20_000,
    });
    stopping = true;
    await Promise.all(writers);
    assertEquals(unexpected, []);

    // The killed node comes back and catches up; every node has every acknowledged write.
    await old.start();
    const problems = await missingWrites(cluster.nodes, acked);
    assertEquals(problems, [], `${problems.length} of ${acked.size} acknowledged writes lost`);
  },
  { timeoutMs: 90_000 },
);

e2eTest(
  "a paused leader is replaced; continued, it steps down and catches up",
  async (h) => {
    const cluster = await h.startCluster(3);
    const old = await cluster.leader();
    assertEquals(await old.putRetrying("before", "pause"), 204);
    old.pause();
    const pausedAt = Date.now();
    const next = await cluster.leader({ not: old });
    const written = new Map<string, string>();
    for (let i = 0; i < 20; i++) {
      assertEquals(await next.putRetrying(`during${i}`, `v${i}`), 204);
      written.set(`during${i}`, `v${i}`);
    }
    // Keep it stopped for about two election timeouts in all.
    const pauseMs = 2 * FAST_TIMINGS.electionTimeoutMs;
    await new Promise((r) => setTimeout(r, Math.max(0, pausedAt + pauseMs - Date.now())));
    old.resume();

    const stepped = await waitFor(async () => {
      const s = await old.status();
      return s.role !== "leader" && s.leader === next.id ? s : undefined;
    }, { what: `${old.name} to follow ${next.name}` });
    assert(stepped.role === "follower", `${old.name} is a follower, not ${stepped.role}`);
    // The old leader's reads are linearizable: it serves what was written while it slept.
    const problems = await missingWrites([old], new Map([...written, ["before", "pause"]]));
    assertEquals(problems, []);
    // And the cluster keeps taking writes through it.
    assertEquals(await old.putRetrying("after", "resume"), 204);
    assertEquals((await next.read("after")).value, "resume");
    await checkCaughtUp(old, next);
  },
);

/** Waits until `node` has applied everything `leader` had committed when asked. */
async function checkCaughtUp(node: TestNode, leader: TestNode): Promise<void> {
  const commit = (await leader.status()).commit;
  await waitFor(async () => (await node.status()).applied >= commit, {
    what: `${node.name} to apply up to ${commit}`,
  });
}
