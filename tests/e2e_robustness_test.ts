/**
 * End-to-end: garbage on the raft port and malformed API requests leave a
 * real node serving.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { type Cluster, e2eTest, type TestNode } from "./harness.ts";
import { decode, encode } from "../raft/msgpack.ts";

/** How long the server may take to close a connection it refuses. */
const CLOSE_WAIT_MS = 5000;

/** One frame: a 4-byte big-endian length, then the payload. */
function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

/** The frames in `bytes`, decoded; a trailing partial frame is ignored. */
function decodeFrames(bytes: Uint8Array): unknown[] {
  const values: unknown[] = [];
  let at = 0;
  while (at + 4 <= bytes.length) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at).getUint32(0);
    if (at + 4 + length > bytes.length) break;
    values.push(decode(bytes.subarray(at + 4, at + 4 + length)));
    at += 4 + length;
  }
  return values;
}

/**
 * Connects to `addr`, writes `bytes`, and reads until the server closes the
 * connection or `waitMs` passes; returns what was read and whether the
 * server closed it.
 */
async function exchange(
  addr: string,
  bytes: Uint8Array,
  waitMs: number,
): Promise<{ reply: Uint8Array; closedByServer: boolean }> {
  const [hostname, port] = addr.split(":") as [string, string];
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const chunks: Uint8Array[] = [];
  let closedByServer = false;
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* already closed */ }
  }, waitMs);
  try {
    try {
      await conn.write(bytes);
    } catch {
      // The server may close before it has read everything.
    }
    const buf = new Uint8Array(64 * 1024);
    for (let reads = 0; reads < 10_000; reads++) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (error) {
        // A reset is the server closing too; our own close (the timer) is "bad resource".
        closedByServer = !(error instanceof Deno.errors.BadResource);
        break;
      }
      if (n === null) {
        closedByServer = true;
        break;
      }
      chunks.push(buf.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  const reply = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    reply.set(c, offset);
    offset += c.length;
  }
  return { reply, closedByServer };
}

/** Asserts that the node's process runs and that it takes a write and a read. */
async function assertServing(cluster: Cluster, node: TestNode, tag: string): Promise<void> {
  assert(node.running, `${node.name} still runs after ${tag}`);
  assertEquals(await node.putRetrying(`after-${tag}`, tag), 204, `PUT after ${tag}`);
  const r = await node.read(`after-${tag}`);
  assertEquals(
    { status: r.status, value: r.value },
    { status: 200, value: tag },
    `GET after ${tag}`,
  );
  for (const other of cluster.nodes) assert(other.running, `${other.name} still runs after ${tag}`);
}

e2eTest(
  "garbage on the raft port closes that connection and leaves the node serving",
  async (h) => {
    const cluster = await h.startCluster(3);
    const leader = await cluster.leader();
    const clusterId = (await leader.status() as unknown as { cluster: string }).cluster;
    const addr = leader.raftAddr;
    const handshake = (fields: Record<string, unknown>) =>
      frame(encode({ proto: "raftkv", version: 1, clusterId, from: 99, kind: "raft", ...fields }));

    // Random bytes: whatever they announce, the node must survive them.
    const random = crypto.getRandomValues(new Uint8Array(4096));
    await exchange(addr, random, 500);
    await assertServing(cluster, leader, "random-bytes");

    // An HTTP request: "GET " read as a length is far over the frame limit.
    const http = await exchange(
      addr,
      new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${addr}\r\n\r\n`),
      CLOSE_WAIT_MS,
    );
    assert(http.closedByServer, "an HTTP request on the raft port is closed by the server");
    await assertServing(cluster, leader, "http-request");

    // A length prefix of 0xFFFFFFFF.
    const huge = await exchange(
      addr,
      new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
      CLOSE_WAIT_MS,
    );
    assert(huge.closedByServer, "a 4 GiB length prefix is closed by the server");
    await assertServing(cluster, leader, "huge-length");

    // A valid length with a payload that is not MessagePack (0xc1 is never used).
    const notMsgpack = await exchange(
      addr,
      frame(new Uint8Array([0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1])),
      CLOSE_WAIT_MS,
    );
    assert(notMsgpack.closedByServer, "a non-MessagePack frame is closed by the server");
    await assertServing(cluster, leader, "not-msgpack");

    // MessagePack that is not a handshake.
    const notHandshake = await exchange(addr, frame(encode([1, 2, 3])), CLOSE_WAIT_MS);
    assert(notHandshake.closedByServer, "a first frame that is not a handshake is closed");
    await assertServing(cluster, leader, "not-handshake");

    // A handshake with a wrong cluster id: refused with a reason, then closed.
    const wrongCluster = await exchange(
      addr,
      handshake({ clusterId: "not-this-cluster" }),
      CLOSE_WAIT_MS,
    );
    assert(wrongCluster.closedByServer, "a wrong cluster id is closed by the server");
    const [answer] = decodeFrames(wrongCluster.reply) as [{ ok: boolean; error: string }];
    assertEquals(answer?.ok, false, "the handshake is refused");
    assertStringIncludes(answer.error, "cluster id");
    await assertServing(cluster, leader, "wrong-cluster");

    // A handshake with a wrong protocol version: refused too.
    const wrongVersion = await exchange(addr, handshake({ version: 999 }), CLOSE_WAIT_MS);
    const [versionAnswer] = decodeFrames(wrongVersion.reply) as [{ ok: boolean; error: string }];
    assertEquals(versionAnswer?.ok, false, "a wrong protocol version is refused");
    assertStringIncludes(versionAnswer.error, "version");
    await assertServing(cluster, leader, "wrong-version");

    // A valid handshake, then frames that are not Raft messages: that connection closes.
    const badMessages = await exchange(
      addr,
      new Uint8Array([
        ...handshake({}),
        ...frame(encode({ type: "no-such-message", term: 2 ** 60 })),
        ...frame(encode(42)),
      ]),
      CLOSE_WAIT_MS,
    );
    assert(badMessages.closedByServer, "frames that are not messages are closed by the server");
    await assertServing(cluster, leader, "bad-messages");

    // An rpc that the node does not know: answered with an error, nothing else happens.
    const rpc = await exchange(
      addr,
      new Uint8Array([
        ...handshake({ kind: "rpc", from: 0 }),
        ...frame(encode({ type: "no-such-request" })),
      ]),
      CLOSE_WAIT_MS,
    );
    assert(rpc.closedByServer, "an rpc connection is closed after its answer");
    await assertServing(cluster, leader, "unknown-rpc");

    // A frame cut short by the client.
    const cut = new Uint8Array([0, 0, 0, 100, 1, 2, 3, 4, 5]);
    await exchange(addr, cut, 200);
    await assertServing(cluster, leader, "cut-frame");
  },
  { timeoutMs: 60_000 },
);

e2eTest("malformed API requests are answered 4xx and leave the node serving", async (h) => {
  const cluster = await h.startCluster(1);
  const node = cluster.node(0);
  const json = { "Content-Type": "application/json" };
  const cases: { what: string; method: string; path: string; body?: BodyInit; want: number }[] = [
    { what: "bad JSON", method: "PUT", path: "/", body: '{"Key": "k", "Value": ', want: 400 },
    { what: "not an object", method: "PUT", path: "/", body: '["k", "v"]', want: 400 },
    { what: "missing Value", method: "PUT", path: "/", body: '{"Key": "k"}', want: 400 },
    { what: "missing Key", method: "POST", path: "/", body: '{"Value": "v"}', want: 400 },
    { what: "empty body", method: "PUT", path: "/", body: "", want: 400 },
    {
      what: "non-string Value",
      method: "PUT",
      path: "/",
      body: '{"Key":"k","Value":5}',
      want: 400,
    },
    { what: "null Key", method: "PUT", path: "/", body: '{"Key":null,"Value":"v"}', want: 400 },
    {
      what: "2 MiB body",
      method: "PUT",
      path: "/",
      body: JSON.stringify({ Key: "big", Value: "x".repeat(2 * 1024 * 1024) }),
      want: 413,
    },
    { what: "unknown route", method: "PATCH", path: "/some-key", want: 404 },
    { what: "unknown management route", method: "POST", path: "/mgmt/nothing", want: 404 },
    { what: "non-numeric member id", method: "DELETE", path: "/mgmt/nodes/abc", want: 400 },
    { what: "bad percent-encoding", method: "GET", path: "/%E0%A4%A", want: 400 },
  ];
  for (const c of cases) {
    const init: { body?: BodyInit; headers: HeadersInit } = { headers: json };
    if (c.body !== undefined) init.body = c.body;
    const r = await node.request(c.method, c.path, init);
    assertEquals(r.status, c.want, `${c.what}: ${c.method} ${c.path} -> ${r.status} ${r.text}`);
    const body = JSON.parse(r.text) as { error?: unknown };
    assertEquals(typeof body.error, "string", `${c.what}: the body is {"error": "..."}`);
  }
  const big = await node.get("big");
  assertEquals(big.status, 404, "the 2 MiB write was not applied");
  await assertServing(cluster, node, "malformed-api");
});
