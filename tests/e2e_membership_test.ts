/**
 * End-to-end: removing members of a cluster of real processes.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { e2eTest, runProgram } from "./harness.ts";

e2eTest(
  "a removed follower exits with code 0, the rest keep serving, and an unknown id gives 404",
  async (h) => {
    const cluster = await h.startCluster(3);
    assertEquals(await cluster.node(0).putRetrying("before", "removal"), 204);
    const leader = await cluster.leader();
    const followers = cluster.nodes.filter((n) => n !== leader);
    const victim = followers[0]!;
    const via = followers[1]!;
    // Asked through the other follower: the request is forwarded to the leader.
    const r = await via.request("DELETE", `/mgmt/nodes/${victim.id}`, { timeoutMs: 10_000 });
    assertEquals(r.status, 204, `DELETE /mgmt/nodes/${victim.id}: ${r.text}`);
    const exit = await victim.waitExit();
    assertEquals(exit.code, 0, `${victim.name} exits with 0 once removed`);
    // Started again on its state, it refuses at once and says what to do.
    const restarted = await runProgram([
      "--state-dir",
      victim.stateDir,
      "--raft",
      victim.raftAddr,
      "--api",
      new URL(victim.apiUrl).host,
    ]);
    assertEquals(restarted.code, 1, restarted.stderr);
    assertStringIncludes(restarted.stderr, `(id ${victim.id}) was removed`);
    assertStringIncludes(restarted.stderr, "empty --state-dir");

    const members = await cluster.waitVoters(2, leader);
    assertEquals(
      members.map((m) => m.id).sort(),
      [leader.id, via.id].sort(),
      "the remaining members are listed",
    );
    assert(!members.some((m) => m.addr === victim.raftAddr), "the removed node is not listed");
    assertEquals(await via.putRetrying("after", "removal"), 204);
    assertEquals((await leader.read("after")).value, "removal");
    assertEquals((await via.read("before")).value, "removal");

    const unknown = await leader.request("DELETE", "/mgmt/nodes/999", { timeoutMs: 10_000 });
    assertEquals(unknown.status, 404, `DELETE of an unknown id: ${unknown.text}`);
    assertEquals(typeof (JSON.parse(unknown.text) as { error: unknown }).error, "string");
    // Removing it again is also an unknown member now.
    const again = await leader.request("DELETE", `/mgmt/nodes/${victim.id}`, { timeoutMs: 10_000 });
    assertEquals(again.status, 404, `DELETE of the removed id again: ${again.text}`);
  },
);

e2eTest(
  "a removed leader exits with code 0 and the others elect a leader and keep serving",
  async (h) => {
    const cluster = await h.startCluster(3);
    const old = await cluster.leader();
    assertEquals(await old.putRetrying("before", "removal"), 204);
    const r = await old.request("DELETE", `/mgmt/nodes/${old.id}`, { timeoutMs: 10_000 });
    assertEquals(r.status, 204, `DELETE /mgmt/nodes/${old.id} on the leader: ${r.text}`);
    assertEquals((await old.waitExit()).code, 0);
    const next = await cluster.leader({ not: old });
    const members = await cluster.waitVoters(2, next);
    assert(!members.some((m) => m.id === old.id), "the removed leader is not listed");
    for (const n of cluster.live) {
      assertEquals(await n.putRetrying(`after-${n.name}`, "ok"), 204);
      assertEquals((await n.read("before")).value, "removal");
    }
  },
);
