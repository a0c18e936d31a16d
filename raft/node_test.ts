import { assert, assertEquals } from "../tests/assert.ts";
import { encodeCommand } from "../kv/command.ts";
import { type NodeOptions, RaftNode } from "./node.ts";

/** Waits for `cond` to hold, polling, or fails after `ms`. */
async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string) {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 10_000; i++) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`Gave up waiting for ${what}`);
}

const quiet = Deno.env.get("NODE_TEST_LOG")
  ? (m: string, f: Record<string, unknown>) => console.log(m, JSON.stringify(f))
  : () => {};
const signal = () => AbortSignal.timeout(5000);

async function open(dir: string, extra: Partial<NodeOptions> = {}): Promise<RaftNode> {
  return await RaftNode.open({
    stateDir: dir,
    raftListen: "127.0.0.1:0",
    apiAdvertise: "127.0.0.1:1",
    tickIntervalMs: 20,
    log: quiet,
    ...extra,
  });
}

/** A cluster of three in one process, with its directories removed at the end. */
async function cluster(extra: Partial<NodeOptions> = {}) {
  const dirs = [0, 1, 2].map(() => Deno.makeTempDirSync({ prefix: "raftkv-node-test-" }));
  const nodes: RaftNode[] = [await open(dirs[0]!, extra)];
  await nodes[0]!.put("boot", "1", signal());
  for (const dir of dirs.slice(1)) {
    nodes.push(await open(dir, { ...extra, join: nodes[0]!.raftAddr }));
  }
  await waitFor(
    async () => (await nodes[0]!.members()).filter((m) => m.type === "voter").length === 3,
    10_000,
    "three voters",
  );
  return {
    dirs,
    nodes,
    async [Symbol.asyncDispose]() {
      for (const n of nodes) await n.close();
      for (const d of dirs) await Deno.remove(d, { recursive: true });
    },
  };
}

Deno.test("a single node commits, applies and reads back its own writes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "raftkv-node-test-" });
  const node = await open(dir);
  try {
    await node.put("hello", "medium", signal());
    assertEquals(await node.get("hello", signal()), "medium");
    assertEquals(await node.get("absent", signal()), undefined);
    assertEquals(await node.delete("hello", signal()), true);
    assertEquals(await node.get("hello", signal()), undefined);
  } finally {
    await node.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("joined nodes are promoted to voters and serve linearizable reads of follower writes", async () => {
  await using c = await cluster();
  const [n1, n2, n3] = c.nodes as [RaftNode, RaftNode, RaftNode];
  await n2.put("foo", "foo", signal());
  for (const n of c.nodes) assertEquals(await n.get("foo", signal()), "foo");
  const members = await n3.members();
  assertEquals(members.map((m) => m.id), [1, 2, 3]);
  assertEquals(members.filter((m) => m.leader).length, 1);
  await n1.put("foo", "bar", signal());
  // Linearizable: a read that starts after the write completed sees it, on any member.
  assertEquals(await n3.get("foo", signal()), "bar");
});

Deno.test("a removed member shuts itself down and the others keep serving", async () => {
  await using c = await cluster();
  const [n1, n2, n3] = c.nodes as [RaftNode, RaftNode, RaftNode];
  await n1.removeMember(3, signal());
  assertEquals((await n3.stopped).reason, "removed");
  await waitFor(async () => (await n1.members()).length === 2, 5000, "two members");
  await n2.put("after", "removal", signal());
  assertEquals(await n1.get("after", signal()), "removal");
});

Deno.test("a whole cluster restarted from its state directories keeps every acknowledged write", async () => {
  const c = await cluster({ snapshotEntries: 50, catchUpEntries: 10 });
  const written: string[] = [];
  for (let i = 0; i < 120; i++) {
    await c.nodes[i % 3]!.put(`k${i}`, `v${i}`, signal());
    written.push(`k${i}`);
  }
  const addrs = c.nodes.map((n) => n.raftAddr);
  for (const n of c.nodes) await n.close();
  const nodes = [];
  for (const [i, d] of c.dirs.entries()) {
    // A node restarts on its own address: that is where its peers dial it.
    nodes.push(await open(d, { snapshotEntries: 50, catchUpEntries: 10, raftListen: addrs[i]! }));
  }
  try {
    for (const [i, key] of written.entries()) {
      assertEquals(await nodes[i % 3]!.get(key, signal()), `v${i}`);
    }
  } finally {
    for (const n of nodes) await n.close();
    for (const d of c.dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("a follower that was down while the log was compacted catches up by snapshot", async () => {
  await using c = await cluster({ snapshotEntries: 40, catchUpEntries: 5 });
  const [n1, n2, n3] = c.nodes as [RaftNode, RaftNode, RaftNode];
  const addr3 = n3.raftAddr;
  await n3.close();
  for (let i = 0; i < 200; i++) await n1.put(`k${i}`, `v${i}`, signal());
  assert(n1.status().firstIndex > 10, "the leader compacted its log");
  const back = await open(c.dirs[2]!, {
    snapshotEntries: 40,
    catchUpEntries: 5,
    raftListen: addr3,
  });
  c.nodes[2] = back;
  await waitFor(() => back.status().applied >= n1.status().commit, 10_000, "catch-up");
  assertEquals(await back.get("k199", signal()), "v199");
  assertEquals(await back.get("k0", signal()), "v0");
  await n2.put("still", "works", signal());
});

Deno.test("a node takes a snapshot once enough command bytes were applied, whatever their count", async () => {
  const dir = await Deno.makeTempDir({ prefix: "raftkv-node-test-" });
  const node = await open(dir, { snapshotEntries: 1_000_000, snapshotBytes: 4096 });
  const snapshots = () => [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".snap"));
  try {
    for (let i = 0; i < 10; i++) await node.put(`k${i}`, "v".repeat(100), signal());
    assertEquals(snapshots().length, 0, "ten small values are under the byte threshold");
    await node.put("big", "x".repeat(5000), signal());
    await waitFor(() => snapshots().length === 1, 5000, "a snapshot file");
  } finally {
    await node.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a large state is snapshotted once the log since the last snapshot is a fraction of its size", async () => {
  const dir = await Deno.makeTempDir({ prefix: "raftkv-node-test-" });
  const taken: { index: number; bytes: number }[] = [];
  const node = await open(dir, {
    snapshotEntries: 10,
    snapshotLogRatio: 0.5,
    log: (message, fields) => {
      if (message === "took snapshot") taken.push(fields as { index: number; bytes: number });
    },
  });
  const value = "v".repeat(200);
  // With the proposal id the node adds (far shorter than 80 characters).
  const commandBytesMax = encodeCommand({ op: "put", key: "k9999", value, id: "i".repeat(80) })
    .byteLength;
  try {
    for (let i = 0; i < 1000; i++) await node.put(`k${i}`, value, signal());
  } finally {
    await node.close();
    await Deno.remove(dir, { recursive: true });
  }
  assert(taken.length >= 3, `only ${taken.length} snapshots`);
  for (let i = 1; i < taken.length; i++) {
    const [a, b] = [taken[i - 1]!, taken[i]!];
    const gap = b.index - a.index;
    assert(gap >= 10, `snapshots at ${a.index} and ${b.index}`);
    // Each entry in between carried at most commandBytesMax: together half a snapshot at least.
    assert(gap * commandBytesMax >= 0.5 * a.bytes, `${gap} entries after ${a.bytes} bytes`);
  }
  // The state grew to 200 kB: snapshots came far apart, not every 10 entries.
  assert(taken.at(-1)!.bytes > 100_000, `last snapshot ${taken.at(-1)!.bytes} bytes`);
  assert(taken.length < 20, `${taken.length} snapshots`);
});
