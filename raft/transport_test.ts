import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "../tests/assert.ts";
import { encodeFrames } from "./frame.ts";
import { parseHostPort, parseMessage, TcpTransport, type TransportHandlers } from "./transport.ts";
import { type Message, message, type NodeId } from "./types.ts";

const DEADLINE_MS = 10_000;

type LogLine = { message: string; fields: Record<string, unknown> };

/** Collects values and lets a test wait, with a deadline, until a condition holds. */
class Collector<T> {
  items: T[] = [];
  #waiters = new Set<() => void>();

  push(item: T): void {
    this.items.push(item);
    for (const wake of this.#waiters) wake();
  }

  /** Resolves once `predicate(items)` holds; rejects after `timeoutMs` naming `what`. */
  until(what: string, predicate: (items: T[]) => boolean, timeoutMs = DEADLINE_MS): Promise<void> {
    if (predicate(this.items)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate(this.items)) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.#waiters.add(check);
    });
  }
}

interface Node {
  transport: TcpTransport;
  messages: Collector<Message>;
  logs: Collector<LogLine>;
  unreachable: Collector<NodeId>;
  snapshotsSent: Collector<[NodeId, boolean]>;
}

async function startNode(
  nodeId: NodeId,
  options: {
    clusterId?: string;
    listenAddr?: string;
    onRequest?: TransportHandlers["onRequest"];
    queueMessagesMax?: number;
    frameBytesMax?: number;
    handshakeTimeoutMs?: number;
    backoffMs?: number;
    snapshotChunkBytes?: number;
  } = {},
): Promise<Node> {
  const messages = new Collector<Message>();
  const logs = new Collector<LogLine>();
  const unreachable = new Collector<NodeId>();
  const snapshotsSent = new Collector<[NodeId, boolean]>();
  const transport = new TcpTransport({
    nodeId,
    clusterId: options.clusterId ?? "c1",
    listenAddr: options.listenAddr ?? "127.0.0.1:0",
    log: (message, fields) => logs.push({ message, fields }),
    ...(options.queueMessagesMax === undefined
      ? {}
      : { queueMessagesMax: options.queueMessagesMax }),
    ...(options.frameBytesMax === undefined ? {} : { frameBytesMax: options.frameBytesMax }),
    ...(options.handshakeTimeoutMs === undefined
      ? {}
      : { handshakeTimeoutMs: options.handshakeTimeoutMs }),
    ...(options.backoffMs === undefined
      ? {}
      : { backoffMinMs: options.backoffMs, backoffMaxMs: options.backoffMs }),
    ...(options.snapshotChunkBytes === undefined
      ? {}
      : { snapshotChunkBytes: options.snapshotChunkBytes }),
  });
  await transport.listen({
    onMessage: (msg) => messages.push(msg),
    onRequest: options.onRequest ?? ((req) => Promise.resolve({ echo: req })),
    onUnreachable: (id) => unreachable.push(id),
    onSnapshotSent: (to, ok) => snapshotsSent.push([to, ok]),
  });
  return { transport, messages, logs, unreachable, snapshotsSent };
}

function app(
  from: NodeId,
  to: NodeId,
  index: number,
  data = new Uint8Array([index & 255]),
): Message {
  return message({
    type: "app",
    from,
    to,
    term: 1,
    index,
    logTerm: 1,
    commit: index,
    entries: [{ index: index + 1, term: 1, type: "normal", data }],
  });
}

function hasLog(message: string, includes = ""): (lines: LogLine[]) => boolean {
  return (lines) =>
    lines.some((l) => l.message === message && JSON.stringify(l.fields).includes(includes));
}

/** Sends `make(i)` for growing i every `intervalMs` until `done()` or the deadline. */
async function sendUntil(
  node: Node,
  make: (i: number) => Message,
  done: () => boolean,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  for (let i = 0; !done(); i++) {
    if (Date.now() > deadline) throw new Error("Timed out sending until the condition held");
    node.transport.send([make(i)]);
    await new Promise<void>((resolve) => setTimeout(resolve, intervalMs));
  }
}

async function rawConnect(addr: string): Promise<Deno.TcpConn> {
  const { hostname, port } = parseHostPort(addr, "127.0.0.1");
  return await Deno.connect({ hostname, port });
}

/** Reads until the server closes the connection; returns the bytes read. */
async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break; // reset by peer
    }
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.byteLength, 0));
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.byteLength;
  }
  return out;
}

Deno.test("TcpTransport delivers 10,000 messages in order, many per write", async () => {
  const a = await startNode(1, { queueMessagesMax: 20_000 });
  const b = await startNode(2);
  try {
    a.transport.setPeer(2, b.transport.addr);
    const count = 10_000;
    for (let i = 0; i < count; i += 100) {
      a.transport.send(Array.from({ length: 100 }, (_, j) => app(1, 2, i + j)));
    }
    await b.messages.until("10,000 messages", (m) => m.length >= count);
    assertEquals(b.messages.items.map((m) => m.index), Array.from({ length: count }, (_, i) => i));
    assertEquals(b.messages.items[7], app(1, 2, 7));
    const stats = a.transport.stats;
    assertEquals(stats.messagesSent, count);
    assert(stats.batchesWritten < count / 10, `batches ${stats.batchesWritten}`);
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport drops the oldest messages when a peer's queue is full", async () => {
  const a = await startNode(1, { queueMessagesMax: 10 });
  const b = await startNode(2);
  try {
    a.transport.setPeer(2, b.transport.addr);
    // All 100 are queued before the lazy dial can finish.
    a.transport.send(Array.from({ length: 100 }, (_, i) => app(1, 2, i)));
    await b.messages.until("the last 10 messages", (m) => m.length >= 10);
    assertEquals(b.messages.items.map((m) => m.index), [90, 91, 92, 93, 94, 95, 96, 97, 98, 99]);
    assertEquals(a.transport.stats.messagesDropped, 90);
    assert(hasLog("transport: queue full, dropping oldest messages")(a.logs.items));
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport reports an unreachable peer and reconnects after it restarts on the same port", async () => {
  const a = await startNode(1);
  let b = await startNode(2);
  try {
    const addr = b.transport.addr;
    a.transport.setPeer(2, addr);
    a.transport.send([app(1, 2, 0)]);
    await b.messages.until("the first message", (m) => m.length === 1);

    await b.transport.close();
    await sendUntil(a, (i) => app(1, 2, 100 + i), () => a.unreachable.items.includes(2));
    assert(hasLog("transport: cannot reach peer")(a.logs.items));

    b = await startNode(2, { listenAddr: addr });
    const restarted = b;
    await sendUntil(a, (i) => app(1, 2, 1000 + i), () => restarted.messages.items.length > 0);
    assert(restarted.messages.items.every((m) => m.index >= 1000));
    await a.logs.until("the reconnect log line", hasLog("transport: reconnected to peer"));
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport redials a peer at once when that peer, restarted, dials it", async () => {
  // A backs off 15-30 s after a failed dial: far past the deadline, so only
  // B's own dial at start (not A's backoff running out) can bring A back to it.
  const a = await startNode(1, { backoffMs: 30_000 });
  let b = await startNode(2);
  try {
    const addr = b.transport.addr;
    await b.transport.close();
    a.transport.setPeer(2, addr);
    await a.unreachable.until("a failed dial", (ids) => ids.includes(2));

    b = await startNode(2, { listenAddr: addr });
    const restarted = b;
    restarted.transport.setPeer(1, a.transport.addr); // dials A without a message to send
    await sendUntil(a, (i) => app(1, 2, i), () => restarted.messages.items.length > 0);
    await a.logs.until("the reconnect log line", hasLog("transport: reconnected to peer"));
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport reports a peer that nothing listens on as unreachable", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const addr = `127.0.0.1:${probe.addr.port}`;
  probe.close();
  const a = await startNode(1);
  try {
    a.transport.setPeer(2, addr);
    a.transport.send([app(1, 2, 0)]);
    await a.unreachable.until("an unreachable report", (ids) => ids.includes(2));
    assertEquals(a.transport.stats.messagesDropped, 1);
  } finally {
    await a.transport.close();
  }
});

Deno.test("TcpTransport refuses a peer with another cluster id and logs it once on both sides", async () => {
  const a = await startNode(1, { clusterId: "abc" });
  const b = await startNode(2, { clusterId: "def" });
  try {
    a.transport.setPeer(2, b.transport.addr);
    a.transport.send([app(1, 2, 0)]);
    await a.logs.until("the refusal on the dialler", hasLog("transport: peer refused"));
    await b.logs.until("the refusal on the acceptor", hasLog("transport: refused peer"));
    const dialler = a.logs.items.find((l) => l.message === "transport: peer refused")!;
    assertStringIncludes(
      String(dialler.fields.reason),
      'cluster id mismatch: ours "def", theirs "abc"',
    );
    assertEquals(dialler.fields.addr, b.transport.addr);
    await a.unreachable.until("an unreachable report", (ids) => ids.includes(2));

    // Keep trying: still refused, still logged only once on each side.
    await sendUntil(a, (i) => app(1, 2, i), () => a.unreachable.items.length >= 3);
    assertEquals(a.logs.items.filter(hasOne("transport: peer refused")).length, 1);
    assertEquals(b.logs.items.filter(hasOne("transport: refused peer")).length, 1);
    assertEquals(b.messages.items.length, 0);
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

function hasOne(message: string): (line: LogLine) => boolean {
  return (line) => line.message === message;
}

Deno.test("TcpTransport closes connections that send garbage and keeps serving", async () => {
  const a = await startNode(1);
  const b = await startNode(2, { frameBytesMax: 1024 * 1024 });
  try {
    const handshake = { proto: "raftkv", version: 1, clusterId: "c1", from: 1, kind: "raft" };
    const tooLong = new Uint8Array([0x7f, 0xff, 0xff, 0xff]);
    const random = new Uint8Array(512);
    crypto.getRandomValues(random);
    random[0] = 0xff; // a length prefix far over the limit
    const attempts: [string, Uint8Array][] = [
      ["an HTTP request", new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
      ["random bytes", random],
      ["a non-handshake first frame", encodeFrames([{ hello: "world" }])],
      [
        "an oversized length prefix after the handshake",
        concat(encodeFrames([handshake]), tooLong),
      ],
      [
        "a frame that is not a message",
        concat(encodeFrames([handshake]), encodeFrames([{ type: "bogus", from: 1 }])),
      ],
      [
        "a message with a negative term",
        concat(encodeFrames([handshake]), encodeFrames([{ ...app(1, 2, 0), term: -1 }])),
      ],
      [
        "a payload that is not MessagePack",
        concat(encodeFrames([handshake]), new Uint8Array([0, 0, 0, 1, 0xc1])),
      ],
    ];
    for (const [what, bytes] of attempts) {
      const before = b.logs.items.length;
      const conn = await rawConnect(b.transport.addr);
      try {
        await conn.write(bytes);
        await readToEnd(conn); // returns once the transport closed the connection
      } finally {
        conn.close();
      }
      await b.logs.until(
        `the log line for ${what}`,
        (lines) => lines.slice(before).some((l) => l.message === "transport: closed connection"),
      );
    }
    assertEquals(b.messages.items.length, 0);

    a.transport.setPeer(2, b.transport.addr);
    a.transport.send([app(1, 2, 42)]);
    await b.messages.until("a real message after the garbage", (m) => m.length === 1);
    assertEquals(b.messages.items[0]?.index, 42);
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.byteLength;
  }
  return out;
}

Deno.test("TcpTransport closes a connection that sends no handshake in time", async () => {
  const b = await startNode(2, { handshakeTimeoutMs: 100 });
  try {
    const conn = await rawConnect(b.transport.addr);
    try {
      await conn.write(new Uint8Array([0, 0])); // half a length prefix, then silence
      assertEquals((await readToEnd(conn)).byteLength, 0);
    } finally {
      conn.close();
    }
    await b.logs.until("the timeout log line", hasLog("transport: closed connection", "handshake"));
  } finally {
    await b.transport.close();
  }
});

Deno.test("TcpTransport streams a 20 MiB snapshot intact and reports it sent", async () => {
  const a = await startNode(1);
  const b = await startNode(2);
  try {
    a.transport.setPeer(2, b.transport.addr);
    const data = new Uint8Array(20 * 1024 * 1024);
    for (let i = 0; i < data.byteLength; i += 65536) {
      crypto.getRandomValues(data.subarray(i, i + 65536));
    }
    const meta = { index: 500, term: 3, conf: { voters: [1, 2, 3], learners: [4], removed: [] } };
    a.transport.send([
      app(1, 2, 1),
      message({ type: "snap", from: 1, to: 2, term: 3, snapshot: { meta, data } }),
      app(1, 2, 2),
    ]);
    await b.messages.until("the snapshot and the message after it", (m) => m.length === 3);
    await a.snapshotsSent.until("the sent report", (s) => s.length === 1);
    assertEquals(a.snapshotsSent.items, [[2, true]]);
    const [first, snap, last] = b.messages.items;
    assertEquals(first?.index, 1);
    assertEquals(last?.index, 2);
    assertEquals(snap?.type, "snap");
    assertEquals(snap?.term, 3);
    assertEquals(snap?.snapshot?.meta, meta);
    assertEquals(snap?.snapshot?.data.byteLength, data.byteLength);
    assert(snap?.snapshot?.data !== undefined && bytesEqual(snap.snapshot.data, data));
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

function bytesEqual(x: Uint8Array, y: Uint8Array): boolean {
  if (x.byteLength !== y.byteLength) return false;
  const a = new BigUint64Array(x.buffer, x.byteOffset, x.byteLength / 8);
  const b = new BigUint64Array(y.buffer, y.byteOffset, y.byteLength / 8);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("TcpTransport streams a snapshot read as it is sent, and a failing stream is released and reported", async () => {
  const a = await startNode(1, { snapshotChunkBytes: 1000 });
  const b = await startNode(2);
  try {
    a.transport.setPeer(2, b.transport.addr);
    const data = new Uint8Array(10_500).map((_, i) => i % 253);
    const meta = { index: 70, term: 2, conf: { voters: [1, 2], learners: [], removed: [] } };
    const asked: number[] = [];
    let released = 0;
    const stream = (failAt?: number) => ({
      meta,
      dataBytes: data.byteLength,
      async *chunks(maxBytes: number) {
        asked.push(maxBytes);
        try {
          for (let pos = 0; pos < data.byteLength; pos += maxBytes) {
            if (pos === failAt) throw new Error("Cannot read snapshot: damaged");
            yield data.slice(pos, pos + maxBytes);
          }
        } finally {
          released++;
        }
      },
    });
    a.transport.sendSnapshot(message({ type: "snap", from: 1, to: 2, term: 2 }), stream());
    await b.messages.until("the snapshot", (m) => m.length === 1);
    await a.snapshotsSent.until("the sent report", (s) => s.length === 1);
    assertEquals(a.snapshotsSent.items, [[2, true]]);
    assertEquals(asked, [1000]);
    const snap = b.messages.items[0];
    assertEquals(snap?.snapshot?.meta, meta);
    assertEquals([...snap!.snapshot!.data], [...data]);
    // A stream that throws midway: reported failed, its generator finished.
    a.transport.sendSnapshot(message({ type: "snap", from: 1, to: 2, term: 2 }), stream(5000));
    await a.snapshotsSent.until("the failure report", (s) => s.length === 2);
    assertEquals(a.snapshotsSent.items[1], [2, false]);
    assertEquals(released, 2);
    // The connection was given up (the peer holds half a snapshot); what
    // follows goes on a new one, once the backoff is over.
    for (let i = 0; i < 100 && b.messages.items.at(-1)?.index !== 9; i++) {
      a.transport.send([app(1, 2, 9)]);
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(b.messages.items.at(-1)?.index, 9);
  } finally {
    await a.transport.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport reports a snapshot to an unreachable peer as failed", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const addr = `127.0.0.1:${probe.addr.port}`;
  probe.close();
  const a = await startNode(1);
  try {
    a.transport.setPeer(2, addr);
    const meta = { index: 5, term: 1, conf: { voters: [1, 2], learners: [], removed: [] } };
    a.transport.send([
      message({ type: "snap", from: 1, to: 2, snapshot: { meta, data: new Uint8Array(10) } }),
    ]);
    await a.snapshotsSent.until("the failure report", (s) => s.length === 1);
    assertEquals(a.snapshotsSent.items, [[2, false]]);
  } finally {
    await a.transport.close();
  }
});

Deno.test("TcpTransport answers rpc requests, reports handler errors and times out", async () => {
  let release: () => void = () => {};
  const hung = new Promise<void>((resolve) => release = resolve);
  const b = await startNode(2, {
    onRequest: async (req, remote) => {
      if (isRecord(req) && req.op === "fail") throw new Error("Cannot join: no quorum");
      if (isRecord(req) && req.op === "hang") {
        await hung;
        return "late";
      }
      return { echo: req, remoteIsLoopback: remote.startsWith("127.0.0.1:") };
    },
  });
  // A joining node knows neither its id nor the cluster id yet.
  const joiner = new TcpTransport({
    nodeId: 0,
    clusterId: "",
    listenAddr: "127.0.0.1:0",
    log: () => {},
  });
  const wrong = new TcpTransport({
    nodeId: 9,
    clusterId: "other",
    listenAddr: "127.0.0.1:0",
    log: () => {},
  });
  try {
    const body = { op: "join", addr: ":8083", bytes: new Uint8Array([1, 2]) };
    assertEquals(await joiner.request(b.transport.addr, body), {
      echo: body,
      remoteIsLoopback: true,
    });
    assertEquals(await joiner.request(b.transport.addr, { op: "fail" }), {
      error: "Cannot join: no quorum",
    });
    await assertRejects(
      () => joiner.request(b.transport.addr, { op: "hang" }, { timeoutMs: 200 }),
      Error,
      "no response within 200 ms",
    );
    await assertRejects(
      () => wrong.request(b.transport.addr, { op: "join" }),
      Error,
      "cluster id mismatch",
    );
  } finally {
    release();
    await joiner.close();
    await wrong.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport refuses a raft connection without a cluster id", async () => {
  const b = await startNode(2);
  const joiner = new TcpTransport({
    nodeId: 3,
    clusterId: "",
    listenAddr: "127.0.0.1:0",
    log: () => {},
  });
  const unreachable = new Collector<NodeId>();
  await joiner.listen({
    onMessage: () => {},
    onRequest: () => Promise.resolve(null),
    onUnreachable: (id) => unreachable.push(id),
  });
  try {
    joiner.setPeer(2, b.transport.addr);
    joiner.send([app(3, 2, 0)]);
    await b.logs.until("the refusal", hasLog("transport: refused peer", "cluster id mismatch"));
    await unreachable.until("an unreachable report", (ids) => ids.includes(2));
    // Once it learns its identity, the same transport gets through.
    joiner.setIdentity(3, "c1");
    await sendUntil(
      { transport: joiner } as Node,
      (i) => app(3, 2, i),
      () => b.messages.items.length > 0,
    );
  } finally {
    await joiner.close();
    await b.transport.close();
  }
});

Deno.test("TcpTransport rejects a request to an address nothing listens on", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  await using t = new TcpTransport({ nodeId: 1, clusterId: "c1", listenAddr: ":0", log: () => {} });
  await assertRejects(() => t.request(`:${port}`, {}), Error, `Cannot send request to :${port}`);
});

Deno.test("TcpTransport listens on all interfaces for a :port address", async () => {
  await using t = new TcpTransport({ nodeId: 1, clusterId: "c1", listenAddr: ":0", log: () => {} });
  await t.listen({ onMessage: () => {}, onRequest: (r) => Promise.resolve(r) });
  assert(t.addr.startsWith("0.0.0.0:"), t.addr);
  const port = t.addr.slice("0.0.0.0:".length);
  assertEquals(await t.request(`:${port}`, "ping"), "ping");
});

Deno.test("parseMessage accepts every field and rejects bad shapes", () => {
  const good = app(1, 2, 3);
  assertEquals(parseMessage({ ...good, extra: 1 }), good);
  const withContext = { ...good, context: new Uint8Array([1]) };
  assertEquals(parseMessage(withContext), withContext);
  assertThrows(() => parseMessage({ ...good, type: "nope" }), TypeError, "unknown type");
  assertThrows(() => parseMessage({ ...good, term: -1 }), TypeError, "term");
  assertThrows(() => parseMessage({ ...good, index: 2 ** 53 }), TypeError, "index");
  assertThrows(() => parseMessage({ ...good, rejectHint: 1.5 }), TypeError, "rejectHint");
  assertThrows(() => parseMessage({ ...good, reject: 0 }), TypeError, "reject");
  assertThrows(
    () => parseMessage({ ...good, entries: [{ index: 1, term: 1, type: "normal" }] }),
    TypeError,
    "entry",
  );
  assertThrows(() => parseMessage({ ...good, context: "x" }), TypeError, "context");
  assertThrows(() => parseMessage([1, 2]), TypeError, "not a map");
});

Deno.test("parseHostPort reads host:port, :port and [v6]:port", () => {
  assertEquals(parseHostPort(":8080", "0.0.0.0"), { hostname: "0.0.0.0", port: 8080 });
  assertEquals(parseHostPort("10.0.0.1:81", "0.0.0.0"), { hostname: "10.0.0.1", port: 81 });
  assertEquals(parseHostPort("[::1]:82", "0.0.0.0"), { hostname: "::1", port: 82 });
  assertThrows(() => parseHostPort("nohost", "x"), TypeError, "Cannot parse address");
  assertThrows(() => parseHostPort("h:99999", "x"), TypeError, "Cannot parse address");
});

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

Deno.test("TcpTransport replaces a connection that swallows writes (a partition that drops packets)", async () => {
  // A peer that completes the handshake, then reads everything and never answers:
  // what a connection through a packet-dropping partition looks like to the sender.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const acceptLoop = (async () => {
    for await (const conn of listener) {
      accepted.push(conn);
      void (async () => {
        const buf = new Uint8Array(65536);
        let answered = false;
        try {
          for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
            if (!answered) {
              answered = true;
              await conn.write(encodeFrames([{ ok: true }]));
            }
          }
        } catch { /* closed by the test or by the sender */ }
      })();
    }
  })();
  const logs = new Collector<LogLine>();
  const sender = new TcpTransport({
    nodeId: 1,
    clusterId: "c1",
    listenAddr: "127.0.0.1:0",
    silenceMsMax: 300,
    log: (message, fields) => logs.push({ message, fields }),
  });
  await sender.listen({
    onMessage: () => {},
    onRequest: () => Promise.resolve(null),
  });
  try {
    sender.setPeer(2, `127.0.0.1:${listener.addr.port}`);
    const deadline = Date.now() + DEADLINE_MS;
    for (let i = 0; accepted.length < 2; i++) {
      assert(Date.now() < deadline, "the silent connection was never replaced");
      sender.send([app(1, 2, i)]);
      await new Promise<void>((resolve) => setTimeout(resolve, 50));
    }
    assert(hasLog("transport: cannot reach peer", "nothing came back")(logs.items));
  } finally {
    await sender.close();
    listener.close();
    for (const conn of accepted) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    await acceptLoop;
  }
});
