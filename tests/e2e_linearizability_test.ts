/**
 * End-to-end, from outside: clients read and write a few keys through every
 * node while the leader is killed with SIGKILL, restarted, and a leader is
 * paused with SIGSTOP (with reads sent to it while it is stopped, after the
 * new leader acknowledged writes); the history they saw is then checked
 * (tests/linearizability.ts): no stale read, no lost or invented value, no
 * read going back in time.
 *
 * @module
 */

import { assert, assertEquals } from "./assert.ts";
import { e2eTest, FAST_TIMINGS, RegisterRecorder, type TestNode, waitFor } from "./harness.ts";
import { checkRegisterHistory } from "./linearizability.ts";

const CLIENTS = 6;
const KEYS = ["x", "y", "z"];
/** Per request: past it, a write's outcome is unknown. */
const REQUEST_TIMEOUT_MS = 2000;
/** Requests per client at most (the phases below end the run sooner). */
const OPS_PER_CLIENT_MAX = 20_000;

e2eTest(
  "clients see a linearizable history through a leader SIGKILL, a restart and a leader pause",
  async (h) => {
    const cluster = await h.startCluster(3);
    const recorder = new RegisterRecorder(REQUEST_TIMEOUT_MS);
    const { history, unexpected } = recorder;
    const write = (node: TestNode, key: string, value: string) => recorder.write(node, key, value);
    const read = (node: TestNode, key: string) => recorder.read(node, key);
    let stopping = false;
    const probes: Promise<void>[] = [];
    const clients = Array.from({ length: CLIENTS }, async (_, c) => {
      let n = 0;
      for (; n < OPS_PER_CLIENT_MAX && !stopping; n++) {
        // Any node, running or not: a stopped one just does not answer.
        const node = cluster.nodes[(c + n) % cluster.nodes.length]!;
        const key = KEYS[(n * 7 + c) % KEYS.length]!;
        if ((n + c) % 2 === 0) await write(node, key, `c${c}-${n}`);
        else await read(node, key);
        if (!node.running) await new Promise((r) => setTimeout(r, 10));
      }
    });

    const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      await settle(1000);
      const first = await cluster.leader();
      await first.stop("SIGKILL");
      await cluster.leader({ not: first });
      await settle(1000);
      await first.start();
      await settle(1000);
      const second = await cluster.leader();
      second.pause();
      const pausedAt = performance.now();
      await cluster.leader({ not: second });
      // Once writes made after the pause are acknowledged, reads sent to the
      // paused old leader must not answer with what it knew before: they are
      // held until it runs again, and it must not serve them as leader then.
      await waitFor(
        () =>
          history.filter((o) => o.kind === "write" && o.invoke > pausedAt && o.complete < Infinity)
            .length >= 20,
        { what: "20 writes acknowledged by the new leader" },
      );
      for (const key of KEYS) for (let i = 0; i < 3; i++) probes.push(read(second, key));
      await settle(Math.max(0, pausedAt + 3 * FAST_TIMINGS.electionTimeoutMs - performance.now()));
      second.resume();
      await settle(1500);
    } finally {
      stopping = true;
      await Promise.all([...clients, ...probes]);
    }

    assertEquals(unexpected, []);
    const acked = history.filter((o) => o.kind === "write" && o.complete !== Infinity).length;
    const reads = history.filter((o) => o.kind === "read").length;
    // Enough happened for the check to mean something, before and after the faults.
    assert(acked >= 100 && reads >= 100, `only ${acked} acknowledged writes and ${reads} reads`);
    assertEquals(
      checkRegisterHistory(history),
      [],
      `${acked} acknowledged writes and ${reads} reads checked`,
    );
  },
  { timeoutMs: 90_000 },
);
