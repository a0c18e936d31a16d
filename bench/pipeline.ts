/**
 * The replication pipeline floor: the least a replicated, durable write over
 * HTTP costs on this machine when built from the same parts as raftkv (Deno,
 * its HTTP server, TCP between processes, fdatasync), with no Raft, no
 * log format and no state machine. `bench:cluster` runs it beside the
 * physical floor so that a single client's latency can be read against
 * both: what the hardware allows, and what three processes on it allow.
 *
 * Three processes, started by `bench/cluster.ts`:
 *
 * - `--role follower --port P --dir D`: accepts one TCP connection; for every
 *   frame (4-byte little-endian length, then the bytes) it writes the bytes
 *   into a file of D preallocated and synced beforehand, fdatasyncs, and
 *   answers one byte. Frames are handled one at a time, in order.
 * - `--role leader --port P --followers P1,P2 --dir D`: an HTTP server on
 *   127.0.0.1:P. Every request's body is sent to every follower as a frame
 *   and written and fdatasynced here too; the answer (204) goes out once this
 *   node and one follower, or both followers, have synced it: a majority of
 *   three, as Raft commits.
 *
 * Nothing is batched: each request costs one write and one fdatasync per
 * process, which is the cheapest a lone client can be served durably.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Bytes preallocated for the synced-in-place file of each process. */
const FILE_BYTES = 16 * 1024 * 1024;

/** A file written in place in preallocated, synced space: one disk write per fdatasync. */
class SyncedFile {
  #file: Deno.FsFile;
  #pos = 0;

  constructor(path: string) {
    this.#file = Deno.openSync(path, { create: true, read: true, write: true, truncate: true });
    this.#file.writeSync(new Uint8Array(FILE_BYTES));
    this.#file.syncSync();
  }

  /** Writes `bytes` at the next position (wrapping round) and fdatasyncs. */
  write(bytes: Uint8Array): void {
    if (this.#pos + bytes.length > FILE_BYTES) this.#pos = 0;
    this.#file.seekSync(this.#pos, Deno.SeekMode.Start);
    let written = 0;
    while (written < bytes.length) written += this.#file.writeSync(bytes.subarray(written));
    this.#pos += bytes.length;
    this.#file.syncDataSync();
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

async function follower(port: number, dir: string): Promise<void> {
  const file = new SyncedFile(`${dir}/pipeline-follower-${port}.bin`);
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const ack = new Uint8Array([1]);
  for await (const conn of listener) {
    conn.setNoDelay(true);
    (async () => {
      let buf = new Uint8Array(64 * 1024);
      let end = 0;
      for (;;) {
        const n = await conn.read(buf.subarray(end));
        if (n === null) break;
        end += n;
        let start = 0;
        while (end - start >= 4) {
          const length = new DataView(buf.buffer, start, 4).getUint32(0, true);
          if (end - start < 4 + length) {
            if (4 + length > buf.length) {
              const bigger = new Uint8Array(4 + length);
              bigger.set(buf.subarray(start, end));
              buf = bigger;
              end -= start;
              start = 0;
            }
            break;
          }
          file.write(buf.subarray(start + 4, start + 4 + length));
          start += 4 + length;
          await writeAll(conn, ack);
        }
        buf.copyWithin(0, start, end);
        end -= start;
      }
    })().catch(() => {}).finally(() => conn.close());
  }
}

/** One follower connection: frames out, one-byte acknowledgements back, in order. */
class FollowerLink {
  #conn: Deno.TcpConn;
  #waiting: (() => void)[] = [];

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#readAcks();
  }

  async #readAcks(): Promise<void> {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await this.#conn.read(buf).catch(() => null);
      if (n === null) {
        console.error("pipeline leader: a follower closed its connection");
        Deno.exit(1);
      }
      for (let i = 0; i < n; i++) this.#waiting.shift()?.();
    }
  }

  /** Sends one frame; resolves when the follower has synced it. */
  send(frame: Uint8Array): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiting.push(resolve);
    writeAll(this.#conn, frame).catch(() => {});
    return promise;
  }
}

async function leader(port: number, followerPorts: number[], dir: string): Promise<void> {
  const file = new SyncedFile(`${dir}/pipeline-leader.bin`);
  const links: FollowerLink[] = [];
  for (const p of followerPorts) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: p });
    conn.setNoDelay(true);
    links.push(new FollowerLink(conn));
  }
  Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
    const body = new Uint8Array(await req.arrayBuffer());
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length, true);
    frame.set(body, 4);
    const synced = links.map((link) => link.send(frame));
    file.write(body);
    // This node has synced: one follower more makes a majority of three.
    await Promise.any(synced);
    return new Response(null, { status: 204 });
  });
  console.log(`pipeline leader listening on 127.0.0.1:${port}`);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      role: { type: "string" },
      port: { type: "string" },
      followers: { type: "string", default: "" },
      dir: { type: "string" },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port <= 0 || values.dir === undefined) {
    console.error("Usage: pipeline.ts --role leader|follower --port P --dir D [--followers P1,P2]");
    Deno.exit(2);
  }
  if (values.role === "follower") await follower(port, values.dir);
  else if (values.role === "leader") {
    const ports = values.followers.split(",").filter(Boolean).map(Number);
    await leader(port, ports, values.dir);
  } else {
    console.error(`Unknown role ${values.role}: leader or follower`);
    Deno.exit(2);
  }
}
