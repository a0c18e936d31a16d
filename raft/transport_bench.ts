/**
 * Micro-benchmark of the peer transport: small append messages (one 100-byte
 * entry each) from one TcpTransport to another over loopback, and the framing
 * codec alone. Prints figures; asserts nothing.
 *
 *     deno run --allow-net raft/transport_bench.ts [messages]
 *
 * @module
 */

import { encodeFrames, FrameReader } from "./frame.ts";
import { TcpTransport } from "./transport.ts";
import { type Message, message } from "./types.ts";

function app(index: number, data: Uint8Array): Message {
  return message({
    type: "app",
    from: 1,
    to: 2,
    term: 7,
    logTerm: 7,
    index,
    commit: index,
    entries: [{ index: index + 1, term: 7, type: "normal", data }],
  });
}

function rate(count: number, ms: number): string {
  return `${Math.round(count / (ms / 1000)).toLocaleString("en-US")} msgs/s`;
}

/** Encodes and decodes `count` messages as frames, in batches of 256, without sockets. */
async function benchCodec(count: number): Promise<void> {
  const data = new Uint8Array(100).fill(1);
  const batch = Array.from({ length: 256 }, (_, i) => app(i, data));
  let t0 = performance.now();
  const chunks: Uint8Array[] = [];
  for (let sent = 0; sent < count; sent += batch.length) chunks.push(encodeFrames(batch));
  const encodeMs = performance.now() - t0;
  let i = 0;
  const reader = new FrameReader({
    read(p) {
      const chunk = chunks[i];
      if (chunk === undefined) return Promise.resolve(null);
      const n = Math.min(p.byteLength, chunk.byteLength);
      p.set(chunk.subarray(0, n));
      if (n === chunk.byteLength) i++;
      else chunks[i] = chunk.subarray(n);
      return Promise.resolve(n);
    },
  });
  t0 = performance.now();
  let decoded = 0;
  for await (const _ of reader) decoded++;
  const decodeMs = performance.now() - t0;
  console.log(`codec encode (frames, batches of 256): ${rate(decoded, encodeMs)}`);
  console.log(`codec decode (frames from a stream):   ${rate(decoded, decodeMs)}`);
}

/** Sends `count` messages from one transport to another over loopback and waits for all. */
async function benchLoopback(count: number): Promise<void> {
  let received = 0;
  let progress: () => void = () => {};
  await using a = new TcpTransport({
    nodeId: 1,
    clusterId: "bench",
    listenAddr: "127.0.0.1:0",
    queueMessagesMax: 100_000,
  });
  await using b = new TcpTransport({ nodeId: 2, clusterId: "bench", listenAddr: "127.0.0.1:0" });
  await a.listen({ onMessage: () => {}, onRequest: (r) => Promise.resolve(r) });
  await b.listen({
    onMessage: () => {
      received++;
      progress();
    },
    onRequest: (r) => Promise.resolve(r),
  });
  a.setPeer(2, b.addr);
  const data = new Uint8Array(100).fill(1);
  const t0 = performance.now();
  /** Resolves once at least `n` messages arrived. */
  const receivedAtLeast = (n: number) =>
    received >= n ? Promise.resolve() : new Promise<void>((resolve) => {
      progress = () => {
        if (received < n) return;
        progress = () => {};
        resolve();
      };
    });
  // Send in rounds of 1000, keeping at most 20,000 in flight so the bounded queue never drops.
  for (let sent = 0; sent < count;) {
    const n = Math.min(1000, count - sent);
    a.send(Array.from({ length: n }, (_, i) => app(sent + i, data)));
    sent += n;
    await receivedAtLeast(sent - 20_000);
  }
  await receivedAtLeast(count);
  const ms = performance.now() - t0;
  const stats = a.stats;
  console.log(
    `loopback TcpTransport: ${count} messages in ${ms.toFixed(0)} ms = ${rate(count, ms)} ` +
      `(${stats.batchesWritten} writes, ${stats.messagesDropped} dropped)`,
  );

  // Round trip latency: one message at a time.
  const rounds = 2000;
  let got = 0;
  let next: () => void = () => {};
  b.setPeer(1, a.addr);
  await using c = new TcpTransport({ nodeId: 3, clusterId: "bench", listenAddr: "127.0.0.1:0" });
  await c.listen({
    onMessage: () => {
      got++;
      next();
    },
    onRequest: (r) => Promise.resolve(r),
  });
  a.setPeer(3, c.addr);
  const t1 = performance.now();
  for (let i = 0; i < rounds; i++) {
    const arrived = new Promise<void>((resolve) => next = resolve);
    a.send([{ ...app(i, data), to: 3 }]);
    await arrived;
  }
  const ms1 = performance.now() - t1;
  console.log(
    `loopback one-at-a-time: ${got} messages, ${(ms1 * 1000 / rounds).toFixed(0)} µs each`,
  );
}

if (import.meta.main) {
  const count = Number(Deno.args[0] ?? 200_000);
  await benchCodec(count);
  await benchLoopback(count);
}
