/**
 * The peer transport: Raft messages and small request/response calls between
 * nodes, as length-prefixed MessagePack frames ({@link ./frame.ts}) over TCP.
 *
 * Wire format (every item is one frame):
 *
 * - The dialler's first frame is the handshake
 *   `{proto: "raftkv", version: 1, clusterId, from, kind: "raft" | "rpc"}`;
 *   the acceptor answers `{ok: true}`, or `{ok: false, error}` and closes.
 *   A `raft` handshake needs a matching cluster id (unless the acceptor has
 *   none yet) and a non-zero `from`; an `rpc` handshake may carry an empty
 *   cluster id (a joining node has none yet).
 * - On a `raft` connection the dialler then sends {@linkcode Message}s, one per
 *   frame, many frames per write. A `snap` message is streamed instead:
 *   `{frame: "snapBegin", message: <the Message without snapshot>, meta,
 *   dataBytes}`, then `{frame: "snapChunk", data}` frames of at most
 *   `snapshotChunkBytes` (1 MiB) until `dataBytes` arrived; the acceptor
 *   delivers one whole Message and answers `{frame: "snapAck"}` on the same
 *   connection (the only frame that flows back after the handshake).
 * - On an `rpc` connection the dialler sends one request frame and the
 *   acceptor answers one frame: the handler's result, or `{error: message}` if
 *   it threw; then both close.
 *
 * One outbound raft connection per peer carries everything for that peer, so
 * a snapshot being streamed delays that peer's other messages (they queue,
 * bounded) but never another peer's.
 *
 * @module
 */

import { FRAME_BYTES_MAX_DEFAULT, FrameReader, FrameTooLargeError, FrameWriter } from "./frame.ts";
import { type SnapshotStream, snapshotStreamOf } from "./storage.ts";
import type { Entry, Message, MessageType, NodeId, Snapshot, SnapshotMeta } from "./types.ts";

/** The protocol version carried in every handshake; a peer with another version is refused. */
export const PROTOCOL_VERSION = 1;

/** A structured log sink: a constant message plus a fields object. */
export type TransportLog = (message: string, fields: Record<string, unknown>) => void;

/** What the transport calls back into; passed to {@linkcode TcpTransport.listen}. */
export interface TransportHandlers {
  /** A validated message arrived from a peer (a `snap` arrives whole, with its snapshot). */
  onMessage(msg: Message): void;
  /** An rpc request arrived; the resolved value is sent back (a throw sends `{error: message}`). */
  onRequest(req: unknown, remote: string): Promise<unknown>;
  /** Messages to `id` were dropped because it could not be reached. */
  onUnreachable?(id: NodeId): void;
  /** A snapshot send to `to` finished: `ok` once the peer acknowledged it whole. */
  onSnapshotSent?(to: NodeId, ok: boolean): void;
}

/** Options of {@linkcode TcpTransport}. */
export interface TcpTransportOptions {
  /** This node's id; 0 while unknown (a joining node learns it late, see `setIdentity`). */
  nodeId: NodeId;
  /** The cluster's id; "" while unknown. */
  clusterId: string;
  /** Where to listen: "host:port" or ":port" (all interfaces); port 0 picks a free port. */
  listenAddr: string;
  /** The largest frame accepted or sent. Default 16 MiB. */
  frameBytesMax?: number;
  /** Queued messages per peer before the oldest non-snapshot ones are dropped. Default 4096. */
  queueMessagesMax?: number;
  /** Queued bytes (estimated) per peer before the oldest non-snapshot ones are dropped. Default 64 MiB. */
  queueBytesMax?: number;
  /** Bytes per snapshot chunk frame. Default 1 MiB. */
  snapshotChunkBytes?: number;
  /** The largest snapshot accepted from a peer. Default 2 GiB - 1. */
  snapshotBytesMax?: number;
  /** How long a sender waits for a snapshot's acknowledgement after its last chunk. Default 30 s. */
  snapshotAckTimeoutMs?: number;
  /** First reconnect delay. Default 50 ms. */
  backoffMinMs?: number;
  /** Cap of the reconnect delay. Default 1000 ms. */
  backoffMaxMs?: number;
  /** Limit on connecting plus the handshake, both directions. Default 5000 ms. */
  handshakeTimeoutMs?: number;
  /** Default timeout of {@linkcode TcpTransport.request}. Default 5000 ms. */
  requestTimeoutMs?: number;
  /**
   * A connection we keep writing to that sends nothing back (the peer
   * answers every 250 ms while frames arrive) for this long is replaced.
   * Default 3000 ms.
   */
  silenceMsMax?: number;
  /** Log sink; default `console.error`. Pass `() => {}` to silence. */
  log?: TransportLog;
  /** Randomness for backoff jitter, in [0, 1). Default `Math.random`. */
  random?: () => number;
}

interface Handshake {
  proto: "raftkv";
  version: number;
  clusterId: string;
  from: NodeId;
  kind: "raft" | "rpc";
  /** The dialler's own raft address, so that a node that lost its address book can answer. */
  addr?: string;
}

interface HostPort {
  hostname: string;
  port: number;
}

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

/** Counters since the transport was created, summed over peers. */
export interface TransportStats {
  /** Messages written to peer connections (a streamed snapshot counts once). */
  messagesSent: number;
  /** Batches written (one write call each); fewer than `messagesSent` when batching works. */
  batchesWritten: number;
  /** Messages dropped: queue overflow, unreachable or unknown peers, oversized. */
  messagesDropped: number;
}

/** Per-peer outbound state, driven by one loop (`#runPeer`). */
interface Peer {
  /** When a frame last came back on the current connection (or it opened). */
  heardAt: number;
  /** When a batch was last written on the current connection. */
  wroteAt: number;
  id: NodeId;
  addr: string;
  queue: Message[];
  head: number;
  queueBytes: number;
  /** After a failed dial or a lost connection, until the backoff delay passed: sends are dropped. */
  backingOff: boolean;
  /** Set once `queueMessagesMax` dropped something; reset when the queue drains. */
  overflowLogged: boolean;
  /** Logged "cannot reach" for the current outage. */
  unreachableLogged: boolean;
  backoffMs: number;
  stopped: boolean;
  conn: Deno.TcpConn | undefined;
  dialAbort: AbortController | undefined;
  /** Wakes the loop: new work, a broken connection, or stop. */
  wake: (() => void) | undefined;
  cancelSleep: (() => void) | undefined;
  ack: Waiter | undefined;
  broken: Error | undefined;
  loop: Promise<void> | undefined;
}

const MESSAGE_TYPES: ReadonlySet<string> = new Set<MessageType>([
  "hup",
  "beat",
  "prop",
  "app",
  "appResp",
  "vote",
  "voteResp",
  "preVote",
  "preVoteResp",
  "snap",
  "heartbeat",
  "heartbeatResp",
  "timeoutNow",
  "transferLeader",
  "readIndex",
  "readIndexResp",
  "snapStatus",
  "unreachable",
  "removed",
]);

const BATCH_BYTES_MAX = 1024 * 1024;
/** How often a receiver tells a sender that its frames arrive (`{frame: "alive"}`). */
const ALIVE_INTERVAL_MS = 250;
const BATCH_MESSAGES_MAX = 4096;

/**
 * Raft's peer transport over TCP: one lazily dialled outbound connection per
 * peer with a bounded queue and batched writes, reconnect with capped
 * exponential backoff and jitter, snapshots streamed in chunks, and one-shot
 * rpc calls on the same port.
 *
 * @example
 * ```ts
 * await using transport = new TcpTransport({ nodeId: 1, clusterId: "c1", listenAddr: ":8080" });
 * await transport.listen({ onMessage: (m) => node.step(m), onRequest: (r) => handle(r) });
 * transport.setPeer(2, ":8081");
 * transport.send(ready.messages);
 * ```
 */
export class TcpTransport implements AsyncDisposable {
  #nodeId: NodeId;
  #clusterId: string;
  #listenAddr: string;
  #frameBytesMax: number;
  #queueMessagesMax: number;
  #queueBytesMax: number;
  #snapshotChunkBytes: number;
  #snapshotBytesMax: number;
  #snapshotAckTimeoutMs: number;
  #backoffMinMs: number;
  #backoffMaxMs: number;
  #handshakeTimeoutMs: number;
  #requestTimeoutMs: number;
  #log: TransportLog;
  #random: () => number;

  #handlers: TransportHandlers | undefined;
  #listener: Deno.TcpListener | undefined;
  #acceptLoop: Promise<void> | undefined;
  #peers = new Map<NodeId, Peer>();
  /** The data of `snap` messages queued by {@linkcode sendSnapshot}. */
  #snapshotStreams = new WeakMap<Message, SnapshotStream>();
  /** Loops of removed or replaced peers, still finishing. */
  #stoppingLoops = new Set<Promise<void>>();
  #inbound = new Set<Deno.Conn>();
  #inboundLoops = new Set<Promise<void>>();
  #requests = new Set<{ conn: Deno.Conn | undefined; abort: AbortController }>();
  #requestLoops = new Set<Promise<unknown>>();
  #refusalsLogged = new Set<string>();
  #unknownPeersLogged = new Set<NodeId>();
  #stats: TransportStats = { messagesSent: 0, batchesWritten: 0, messagesDropped: 0 };
  #closed = false;
  #livenessTimer: ReturnType<typeof setInterval> | undefined;
  #silenceMsMax: number;
  #advertiseAddr: string | undefined;
  #closedSignal: Promise<void>;
  #resolveClosed!: () => void;

  constructor(options: TcpTransportOptions) {
    this.#nodeId = options.nodeId;
    this.#clusterId = options.clusterId;
    this.#listenAddr = options.listenAddr;
    this.#frameBytesMax = options.frameBytesMax ?? FRAME_BYTES_MAX_DEFAULT;
    this.#queueMessagesMax = options.queueMessagesMax ?? 4096;
    this.#queueBytesMax = options.queueBytesMax ?? 64 * 1024 * 1024;
    this.#snapshotChunkBytes = Math.min(
      options.snapshotChunkBytes ?? 1024 * 1024,
      this.#frameBytesMax - 64,
    );
    this.#snapshotBytesMax = options.snapshotBytesMax ?? 2 ** 31 - 1;
    this.#snapshotAckTimeoutMs = options.snapshotAckTimeoutMs ?? 30_000;
    this.#backoffMinMs = options.backoffMinMs ?? 50;
    this.#backoffMaxMs = options.backoffMaxMs ?? 1000;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? 5000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.#silenceMsMax = options.silenceMsMax ?? 3000;
    this.#log = options.log ?? ((message, fields) => console.error(message, fields));
    this.#random = options.random ?? Math.random;
    this.#closedSignal = new Promise((resolve) => this.#resolveClosed = resolve);
    if (this.#snapshotChunkBytes < 1) {
      throw new RangeError(
        `Cannot create transport: frameBytesMax ${this.#frameBytesMax} leaves no room for snapshot chunks`,
      );
    }
  }

  /** The address the listener is bound to ("host:port"), e.g. to learn the port picked for port 0. */
  get addr(): string {
    if (this.#listener === undefined) {
      throw new Error("Cannot read the transport's address: it is not listening");
    }
    const { hostname, port } = this.#listener.addr;
    return formatHostPort(hostname, port);
  }

  /** A copy of the transport's counters. */
  get stats(): TransportStats {
    return { ...this.#stats };
  }

  /** Starts accepting peer connections on `listenAddr`; resolves once bound. */
  listen(handlers: TransportHandlers): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Cannot listen: the transport is closed"));
    if (this.#listener !== undefined) {
      return Promise.reject(new Error("Cannot listen: the transport is already listening"));
    }
    this.#handlers = handlers;
    this.#livenessTimer = setInterval(() => this.#checkLiveness(), ALIVE_INTERVAL_MS);
    const { hostname, port } = parseHostPort(this.#listenAddr, "0.0.0.0");
    this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    this.#acceptLoop = this.#accept(this.#listener);
    for (const peer of this.#peers.values()) peer.loop ??= this.#runPeer(peer);
    return Promise.resolve();
  }

  /** Adds or updates a peer's address; an address like ":8081" is dialled on 127.0.0.1. */
  setPeer(id: NodeId, addr: string): void {
    if (this.#closed) return;
    const existing = this.#peers.get(id);
    if (existing !== undefined) {
      if (existing.addr === addr) return;
      this.#stopPeer(existing);
    }
    this.#unknownPeersLogged.delete(id);
    const peer: Peer = {
      id,
      addr,
      heardAt: 0,
      wroteAt: 0,
      queue: [],
      head: 0,
      queueBytes: 0,
      backingOff: false,
      overflowLogged: false,
      unreachableLogged: false,
      backoffMs: this.#backoffMinMs,
      stopped: false,
      conn: undefined,
      dialAbort: undefined,
      wake: undefined,
      cancelSleep: undefined,
      ack: undefined,
      broken: undefined,
      loop: undefined,
    };
    this.#peers.set(id, peer);
    // Dial at once rather than at the first message: a node that restarts
    // thereby tells its peers it is back (see #serve), and they stop
    // waiting out their backoff towards it.
    if (this.#listener !== undefined) peer.loop = this.#runPeer(peer);
  }

  /** Forgets a peer: closes its connection and drops its queue. */
  removePeer(id: NodeId): void {
    const peer = this.#peers.get(id);
    if (peer === undefined) return;
    this.#peers.delete(id);
    this.#stopPeer(peer);
  }

  /** The raft address this node tells peers in its handshakes. */
  setAdvertiseAddr(addr: string): void {
    this.#advertiseAddr = addr;
  }

  /** Sets this node's id and cluster id once learned (a joining node learns them late). */
  setIdentity(nodeId: NodeId, clusterId: string): void {
    this.#nodeId = nodeId;
    this.#clusterId = clusterId;
  }

  /**
   * Queues messages for their peers (by `to`) and returns at once. Messages to
   * unknown or currently unreachable peers are dropped (Raft tolerates loss);
   * a full queue drops its oldest non-snapshot messages.
   */
  send(messages: readonly Message[]): void {
    if (this.#closed) return;
    for (const msg of messages) {
      const peer = this.#peers.get(msg.to);
      if (peer === undefined) {
        if (!this.#unknownPeersLogged.has(msg.to)) {
          this.#unknownPeersLogged.add(msg.to);
          this.#log("transport: dropped message to unknown peer", { to: msg.to, type: msg.type });
        }
        this.#stats.messagesDropped++;
        if (msg.type === "snap") this.#handlers?.onSnapshotSent?.(msg.to, false);
        continue;
      }
      this.#enqueue(peer, msg);
    }
  }

  /**
   * Queues a `snap` message whose snapshot is read from `stream` as it is
   * sent (a large state is never held whole); like {@linkcode send} otherwise.
   */
  sendSnapshot(msg: Message, stream: SnapshotStream): void {
    const queued: Message = { ...msg };
    delete queued.snapshot;
    this.#snapshotStreams.set(queued, stream);
    this.send([queued]);
  }

  /**
   * Sends one request to `addr` on a fresh `rpc` connection and resolves to
   * the one response frame (which is `{error: message}` if the remote handler
   * threw). Rejects if the peer refuses, the connection fails, or no response
   * arrives within `timeoutMs` (default `requestTimeoutMs`).
   */
  request(addr: string, body: unknown, options: { timeoutMs?: number } = {}): Promise<unknown> {
    if (this.#closed) {
      return Promise.reject(new Error(`Cannot send request to ${addr}: the transport is closed`));
    }
    const promise = this.#request(addr, body, options.timeoutMs ?? this.#requestTimeoutMs);
    const tracked = promise.catch(() => {});
    this.#requestLoops.add(tracked);
    tracked.finally(() => this.#requestLoops.delete(tracked));
    return promise;
  }

  /** Closes the listener and every connection, cancels timers and waits for every loop to end. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#livenessTimer);
    this.#resolveClosed();
    if (this.#listener !== undefined) closeQuietly(this.#listener);
    for (const peer of this.#peers.values()) this.#stopPeer(peer);
    this.#peers.clear();
    for (const conn of this.#inbound) closeQuietly(conn);
    for (const req of this.#requests) {
      req.abort.abort();
      if (req.conn !== undefined) closeQuietly(req.conn);
    }
    await Promise.allSettled([
      this.#acceptLoop,
      ...this.#stoppingLoops,
      ...this.#inboundLoops,
      ...this.#requestLoops,
    ]);
  }

  /** Same as {@linkcode close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- outbound raft connections ----

  #enqueue(peer: Peer, msg: Message): void {
    if (peer.backingOff) {
      this.#stats.messagesDropped++;
      if (msg.type === "snap") this.#handlers?.onSnapshotSent?.(peer.id, false);
      return;
    }
    if (msg.type === "snap") {
      // Only the newest snapshot is worth sending; an older unsent one fails.
      for (let i = peer.head; i < peer.queue.length; i++) {
        if (peer.queue[i]?.type === "snap") {
          peer.queue.splice(i, 1);
          this.#stats.messagesDropped++;
          this.#handlers?.onSnapshotSent?.(peer.id, false);
          break;
        }
      }
    } else {
      peer.queueBytes += estimateBytes(msg);
    }
    peer.queue.push(msg);
    let dropped = 0;
    while (
      (peer.queue.length - peer.head > this.#queueMessagesMax ||
        peer.queueBytes > this.#queueBytesMax) && this.#dropOldest(peer)
    ) dropped++;
    if (dropped > 0 && !peer.overflowLogged) {
      peer.overflowLogged = true;
      this.#log("transport: queue full, dropping oldest messages", {
        to: peer.id,
        queueMessagesMax: this.#queueMessagesMax,
      });
    }
    if (peer.loop === undefined) peer.loop = this.#runPeer(peer);
    peer.wake?.();
  }

  /** Drops the oldest non-snapshot message; false if there is none. */
  #dropOldest(peer: Peer): boolean {
    for (let i = peer.head; i < peer.queue.length; i++) {
      const msg = peer.queue[i]!;
      if (msg.type === "snap") continue;
      if (i === peer.head) peer.head++;
      else peer.queue.splice(i, 1);
      peer.queueBytes -= estimateBytes(msg);
      this.#stats.messagesDropped++;
      return true;
    }
    return false;
  }

  #takeBatch(peer: Peer): Message[] {
    const batch: Message[] = [];
    let bytes = 0;
    while (peer.head < peer.queue.length && batch.length < BATCH_MESSAGES_MAX) {
      const msg = peer.queue[peer.head]!;
      if (msg.type === "snap" && batch.length > 0) break;
      peer.queue[peer.head++] = undefined!;
      batch.push(msg);
      if (msg.type === "snap") break;
      const size = estimateBytes(msg);
      peer.queueBytes -= size;
      bytes += size;
      if (bytes >= BATCH_BYTES_MAX) break;
    }
    if (peer.head === peer.queue.length) {
      peer.queue = [];
      peer.head = 0;
      peer.queueBytes = 0;
      peer.overflowLogged = false;
    } else if (peer.head > 1024 && peer.head * 2 > peer.queue.length) {
      peer.queue = peer.queue.slice(peer.head);
      peer.head = 0;
    }
    return batch;
  }

  /** Drops everything queued for `peer`, failing queued snapshots. */
  #dropQueue(peer: Peer): number {
    let dropped = 0;
    for (let i = peer.head; i < peer.queue.length; i++) {
      dropped++;
      if (peer.queue[i]?.type === "snap") this.#handlers?.onSnapshotSent?.(peer.id, false);
    }
    peer.queue = [];
    peer.head = 0;
    peer.queueBytes = 0;
    peer.overflowLogged = false;
    this.#stats.messagesDropped += dropped;
    return dropped;
  }

  #stopPeer(peer: Peer): void {
    peer.stopped = true;
    peer.dialAbort?.abort();
    if (peer.conn !== undefined) closeQuietly(peer.conn);
    peer.cancelSleep?.();
    peer.wake?.();
    peer.ack?.reject(new Error("Cannot finish sending snapshot: the peer was removed"));
    if (peer.loop !== undefined) {
      const loop = peer.loop;
      this.#stoppingLoops.add(loop);
      loop.finally(() => this.#stoppingLoops.delete(loop));
    }
    this.#dropQueue(peer);
  }

  /** Waits until the peer has queued work, its connection broke, or it stopped. */
  #waitForWork(peer: Peer): Promise<void> {
    if (peer.stopped || peer.broken !== undefined || peer.head < peer.queue.length) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      peer.wake = () => {
        peer.wake = undefined;
        resolve();
      };
    });
  }

  #sleep(peer: Peer, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        peer.cancelSleep = undefined;
        resolve();
      }, ms);
      peer.cancelSleep = () => {
        clearTimeout(timer);
        peer.cancelSleep = undefined;
        resolve();
      };
    });
  }

  /** Backs off after a failure: sends are dropped until the (jittered) delay passed. */
  async #backOff(peer: Peer): Promise<void> {
    peer.backingOff = true;
    const delay = peer.backoffMs * (0.5 + 0.5 * this.#random());
    peer.backoffMs = Math.min(peer.backoffMs * 2, this.#backoffMaxMs);
    await this.#sleep(peer, delay);
    peer.backingOff = false;
  }

  #failPeer(peer: Peer, reason: string): void {
    const dropped = this.#dropQueue(peer);
    if (!peer.unreachableLogged) {
      peer.unreachableLogged = true;
      this.#log("transport: cannot reach peer", { id: peer.id, addr: peer.addr, reason, dropped });
    }
    if (!peer.stopped) this.#handlers?.onUnreachable?.(peer.id);
  }

  /** Dials (first at once, later when there is work) and writes to one peer until it is stopped. */
  async #runPeer(peer: Peer): Promise<void> {
    for (let first = true; !peer.stopped; first = false) {
      if (!first) await this.#waitForWork(peer);
      if (peer.stopped) break;
      let dialled: { conn: Deno.TcpConn; reader: FrameReader };
      try {
        dialled = await this.#dial(peer.addr, "raft", (abort) => peer.dialAbort = abort);
      } catch (error) {
        peer.dialAbort = undefined;
        if (peer.stopped) break;
        this.#failPeer(peer, errorMessage(error));
        await this.#backOff(peer);
        continue;
      }
      peer.dialAbort = undefined;
      const { conn, reader } = dialled;
      if (peer.stopped) {
        closeQuietly(conn);
        break;
      }
      if (peer.unreachableLogged) {
        this.#log("transport: reconnected to peer", { id: peer.id, addr: peer.addr });
      }
      peer.unreachableLogged = false;
      peer.backoffMs = this.#backoffMinMs;
      peer.conn = conn;
      peer.broken = undefined;
      peer.heardAt = Date.now();
      const acks = this.#readAcks(peer, reader);
      try {
        await this.#writeLoop(peer, conn);
      } catch (error) {
        if (!peer.stopped) this.#failPeer(peer, errorMessage(peer.broken ?? error));
      } finally {
        closeQuietly(conn);
        peer.conn = undefined;
        await acks;
        peer.broken = undefined;
      }
      if (!peer.stopped) await this.#backOff(peer);
    }
    this.#dropQueue(peer);
  }

  async #writeLoop(peer: Peer, conn: Deno.TcpConn): Promise<void> {
    const writer = new FrameWriter(conn, { frameBytesMax: this.#frameBytesMax });
    for (;;) {
      // Resumes in a microtask: every send() of the caller's synchronous run
      // (the node sends once or twice per processing step) joins one write:
      // one syscall and one wake-up of the peer, without waiting a turn.
      await this.#waitForWork(peer);
      if (peer.stopped) return;
      if (peer.broken !== undefined) throw peer.broken;
      const batch = this.#takeBatch(peer);
      const first = batch[0];
      if (first?.type === "snap") {
        await this.#sendSnapshot(peer, writer, first);
        continue;
      }
      try {
        peer.wroteAt = Date.now();
        await writer.write(batch);
        this.#stats.messagesSent += batch.length;
        this.#stats.batchesWritten++;
      } catch (error) {
        if (!(error instanceof FrameTooLargeError)) throw error;
        // Nothing was written: send the others one by one and drop the oversized.
        for (const msg of batch) {
          try {
            await writer.write([msg]);
            this.#stats.messagesSent++;
            this.#stats.batchesWritten++;
          } catch (error) {
            if (!(error instanceof FrameTooLargeError)) throw error;
            this.#stats.messagesDropped++;
            this.#log("transport: dropped oversized message", {
              to: peer.id,
              type: msg.type,
              reason: error.message,
            });
          }
        }
      }
    }
  }

  async #sendSnapshot(peer: Peer, writer: FrameWriter, msg: Message): Promise<void> {
    const { snapshot, ...rest } = msg;
    const stream = this.#snapshotStreams.get(msg) ??
      (snapshot === undefined ? undefined : snapshotStreamOf(snapshot));
    if (stream === undefined) {
      this.#log("transport: dropped snap message without a snapshot", { to: peer.id });
      this.#handlers?.onSnapshotSent?.(peer.id, false);
      return;
    }
    let ok = false;
    try {
      const acked = new Promise<void>((resolve, reject) => peer.ack = { resolve, reject });
      acked.catch(() => {}); // observed below; avoid an unhandled rejection if writes fail first
      await writer.write([{
        frame: "snapBegin",
        message: rest,
        meta: stream.meta,
        dataBytes: stream.dataBytes,
      }]);
      let sent = 0;
      // Leaving the loop early (a throw) closes the stream's file.
      for await (const data of stream.chunks(this.#snapshotChunkBytes)) {
        if (peer.stopped) throw new Error("Cannot send snapshot: the peer was removed");
        if (peer.broken !== undefined) throw peer.broken;
        if (sent + data.byteLength > stream.dataBytes) break;
        await writer.write([{ frame: "snapChunk", data }]);
        sent += data.byteLength;
      }
      if (sent !== stream.dataBytes) {
        throw new Error(
          `Cannot send snapshot: its data did not match the ${stream.dataBytes} bytes announced`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `Cannot send snapshot to node ${peer.id}: no acknowledgement within ${this.#snapshotAckTimeoutMs} ms`,
              ),
            ),
          this.#snapshotAckTimeoutMs,
        );
      });
      try {
        await Promise.race([acked, timeout]);
      } finally {
        clearTimeout(timer);
      }
      ok = true;
      this.#stats.messagesSent++;
    } finally {
      peer.ack = undefined;
      this.#log(ok ? "transport: sent snapshot" : "transport: failed to send snapshot", {
        to: peer.id,
        index: stream.meta.index,
        dataBytes: stream.dataBytes,
      });
      this.#handlers?.onSnapshotSent?.(peer.id, ok);
    }
  }

  /** Reads what flows back on an outbound raft connection: snapshot acknowledgements, or its end. */
  async #readAcks(peer: Peer, reader: FrameReader): Promise<void> {
    let broken: Error;
    try {
      for (;;) {
        const { done, value } = await reader.next();
        if (done) {
          broken = new Error("Connection closed by the peer");
          break;
        }
        peer.heardAt = Date.now();
        if (isRecord(value) && value.frame === "alive") continue;
        if (isRecord(value) && value.frame === "snapAck" && peer.ack !== undefined) {
          peer.ack.resolve();
          continue;
        }
        broken = new Error("Cannot read from peer: unexpected frame on a raft connection");
        break;
      }
    } catch (error) {
      broken = error instanceof Error ? error : new Error(String(error));
    }
    peer.broken = broken;
    peer.ack?.reject(broken);
    if (peer.conn !== undefined) closeQuietly(peer.conn);
    peer.wake?.();
  }

  /**
   * Replaces connections that swallow writes: through a partition (packets
   * dropped, no reset) writes succeed for minutes while nothing arrives, and
   * TCP's retransmission backoff would delay recovery long after the network
   * heals. A fresh connection is dialled instead.
   */
  #checkLiveness(): void {
    const now = Date.now();
    for (const peer of this.#peers.values()) {
      if (peer.conn === undefined || peer.broken !== undefined) continue;
      if (peer.wroteAt > peer.heardAt && now - peer.heardAt > this.#silenceMsMax) {
        peer.broken = new Error(
          `Cannot reach peer: nothing came back for ${now - peer.heardAt} ms; reconnecting`,
        );
        peer.ack?.reject(peer.broken);
        closeQuietly(peer.conn);
        peer.wake?.();
      }
    }
  }

  /** Connects and completes the handshake; rejects with the peer's reason if refused. */
  async #dial(
    addr: string,
    kind: "raft" | "rpc",
    onAbort: (abort: AbortController) => void,
    timeoutMs = this.#handshakeTimeoutMs,
  ): Promise<{ conn: Deno.TcpConn; reader: FrameReader }> {
    const { hostname, port } = parseHostPort(addr, "127.0.0.1");
    const abort = new AbortController();
    onAbort(abort);
    let conn: Deno.TcpConn | undefined;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
      if (conn !== undefined) closeQuietly(conn);
    }, timeoutMs);
    try {
      conn = await Deno.connect({ hostname, port, transport: "tcp", signal: abort.signal });
      if (abort.signal.aborted) throw new Error("Connection aborted");
      conn.setNoDelay(true);
      const writer = new FrameWriter(conn, { frameBytesMax: this.#frameBytesMax });
      const handshake: Handshake = {
        proto: "raftkv",
        version: PROTOCOL_VERSION,
        clusterId: this.#clusterId,
        from: this.#nodeId,
        kind,
      };
      if (this.#advertiseAddr !== undefined) handshake.addr = this.#advertiseAddr;
      await writer.write([handshake]);
      const reader = new FrameReader(conn, { frameBytesMax: this.#frameBytesMax });
      const { done, value } = await reader.next();
      if (done) throw new Error("Connection closed during the handshake");
      if (!isRecord(value) || typeof value.ok !== "boolean") {
        throw new Error("Peer answered the handshake with an unexpected frame");
      }
      if (!value.ok) {
        const reason = typeof value.error === "string" ? value.error : "no reason given";
        const key = `${addr}\n${reason}`;
        if (!this.#refusalsLogged.has(key)) {
          this.#refusalsLogged.add(key);
          this.#log("transport: peer refused", { addr, reason: `peer says: ${reason}` });
        }
        throw new Error(`Peer refused the connection: ${reason}`);
      }
      return { conn, reader };
    } catch (error) {
      if (conn !== undefined) closeQuietly(conn);
      if (timedOut) throw new Error(`Connection timed out after ${timeoutMs} ms`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- rpc client ----

  async #request(addr: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const entry: { conn: Deno.Conn | undefined; abort: AbortController } = {
      conn: undefined,
      abort: new AbortController(),
    };
    this.#requests.add(entry);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      entry.abort.abort();
      if (entry.conn !== undefined) closeQuietly(entry.conn);
    }, timeoutMs);
    try {
      const { conn, reader } = await this.#dial(addr, "rpc", (abort) => {
        entry.abort.signal.addEventListener("abort", () => abort.abort(), { once: true });
      }, timeoutMs + 1000);
      entry.conn = conn;
      if (timedOut || this.#closed) closeQuietly(conn);
      await new FrameWriter(conn, { frameBytesMax: this.#frameBytesMax }).write([body]);
      const { done, value } = await reader.next();
      if (done) throw new Error("Connection closed before the response");
      return value;
    } catch (error) {
      if (timedOut) {
        throw new Error(`Cannot send request to ${addr}: no response within ${timeoutMs} ms`);
      }
      if (this.#closed) {
        throw new Error(`Cannot send request to ${addr}: the transport is closed`);
      }
      throw new Error(`Cannot send request to ${addr}: ${errorMessage(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
      if (entry.conn !== undefined) closeQuietly(entry.conn);
      this.#requests.delete(entry);
    }
  }

  // ---- inbound ----

  async #accept(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#closed) return;
        this.#log("transport: accept failed", { reason: errorMessage(error) });
        if (error instanceof Deno.errors.BadResource) return;
        continue;
      }
      if (this.#closed) {
        closeQuietly(conn);
        return;
      }
      this.#inbound.add(conn);
      const loop = this.#serve(conn).finally(() => {
        closeQuietly(conn);
        this.#inbound.delete(conn);
        this.#inboundLoops.delete(loop);
      });
      this.#inboundLoops.add(loop);
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const remote = formatHostPort(conn.remoteAddr.hostname, conn.remoteAddr.port);
    try {
      conn.setNoDelay(true);
      const reader = new FrameReader(conn, { frameBytesMax: this.#frameBytesMax });
      const writer = new FrameWriter(conn, { frameBytesMax: this.#frameBytesMax });
      const first = await this.#withDeadline(conn, () => reader.next());
      if (first.done) return;
      const handshake = parseHandshake(first.value);
      const refusal = this.#checkHandshake(handshake);
      if (refusal !== undefined) {
        const key = `${handshake.from}\n${handshake.kind}\n${refusal}`;
        if (!this.#refusalsLogged.has(key)) {
          this.#refusalsLogged.add(key);
          this.#log("transport: refused peer", { remote, from: handshake.from, reason: refusal });
        }
        await writer.write([{ ok: false, error: refusal }]);
        return;
      }
      await writer.write([{ ok: true }]);
      const known = handshake.kind === "raft" ? this.#peers.get(handshake.from) : undefined;
      if (known?.backingOff) {
        // The peer just dialled us, so it is up: dial it now, not when our backoff ends.
        known.backoffMs = this.#backoffMinMs;
        known.cancelSleep?.();
      }
      if (
        handshake.kind === "raft" && handshake.addr !== undefined &&
        !this.#peers.has(handshake.from) && handshake.from !== this.#nodeId
      ) {
        // A peer we have no address for (we restarted before learning it): answer it there.
        this.setPeer(handshake.from, handshake.addr);
      }
      if (handshake.kind === "rpc") await this.#serveRpc(conn, remote, reader, writer);
      else await this.#serveRaft(handshake.from, reader, writer);
    } catch (error) {
      if (this.#closed) return;
      this.#log("transport: closed connection", { remote, reason: errorMessage(error) });
    }
  }

  /** Runs `fn`, closing `conn` if it takes longer than the handshake timeout. */
  async #withDeadline<T>(conn: Deno.Conn, fn: () => Promise<T>): Promise<T> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      closeQuietly(conn);
    }, this.#handshakeTimeoutMs);
    try {
      return await fn();
    } catch (error) {
      if (timedOut) {
        throw new Error(`Cannot read handshake: nothing within ${this.#handshakeTimeoutMs} ms`);
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #checkHandshake(h: Handshake): string | undefined {
    if (h.version !== PROTOCOL_VERSION) {
      return `protocol version mismatch: ours ${PROTOCOL_VERSION}, theirs ${h.version}`;
    }
    const ours = this.#clusterId;
    // An rpc from a node that has no cluster id yet (it is joining) is allowed;
    // a node that has no cluster id itself cannot check and accepts.
    const clusterOk = ours === "" || h.clusterId === ours ||
      (h.kind === "rpc" && h.clusterId === "");
    if (!clusterOk) {
      return `cluster id mismatch: ours ${JSON.stringify(ours)}, theirs ${
        JSON.stringify(h.clusterId)
      }`;
    }
    if (h.kind === "raft" && h.from === 0) {
      return "node id missing: a raft connection needs the sender's node id";
    }
    if (h.kind === "raft" && h.from === this.#nodeId) {
      return `node id conflict: the sender claims our own id ${h.from}`;
    }
    return undefined;
  }

  async #serveRpc(
    conn: Deno.Conn,
    remote: string,
    reader: FrameReader,
    writer: FrameWriter,
  ): Promise<void> {
    const request = await this.#withDeadline(conn, () => reader.next());
    if (request.done) return;
    const handlers = this.#handlers!;
    let response: unknown;
    try {
      const result = await Promise.race([
        handlers.onRequest(request.value, remote),
        this.#closedSignal,
      ]);
      if (this.#closed) return;
      response = result;
    } catch (error) {
      response = { error: errorMessage(error) };
    }
    try {
      await writer.write([response === undefined ? null : response]);
    } catch (error) {
      if (!(error instanceof FrameTooLargeError)) throw error;
      await writer.write([{ error: `Cannot send response: ${error.message}` }]);
    }
  }

  async #serveRaft(from: NodeId, reader: FrameReader, writer: FrameWriter): Promise<void> {
    const handlers = this.#handlers!;
    let snap:
      | { message: Message; meta: SnapshotMeta; data: Uint8Array; filled: number }
      | undefined;
    let misroutedLogged = false;
    const deliver = (msg: Message) => {
      if (msg.from !== from) {
        throw new TypeError(
          `Cannot accept message: it claims to be from node ${msg.from} on a connection from node ${from}`,
        );
      }
      if (this.#nodeId !== 0 && msg.to !== this.#nodeId) {
        if (!misroutedLogged) {
          misroutedLogged = true;
          this.#log("transport: dropped message for another node", {
            from,
            to: msg.to,
            nodeId: this.#nodeId,
          });
        }
        return;
      }
      try {
        handlers.onMessage(msg);
      } catch (error) {
        this.#log("transport: onMessage threw", {
          from,
          type: msg.type,
          reason: errorMessage(error),
        });
      }
    };
    let aliveSentAt = 0;
    for (;;) {
      const { done, value } = await reader.next();
      const now = Date.now();
      if (!done && now - aliveSentAt >= ALIVE_INTERVAL_MS) {
        // Tells the sender its frames arrive: a connection through a partition
        // accepts writes for minutes while nothing gets here (see #checkLiveness).
        aliveSentAt = now;
        await writer.write([{ frame: "alive" }]);
      }
      if (done) {
        if (snap !== undefined) {
          throw new Error(
            `Cannot receive snapshot: the connection closed after ${snap.filled} of ${snap.data.byteLength} bytes`,
          );
        }
        return;
      }
      if (isRecord(value) && "frame" in value) {
        if (value.frame === "snapBegin") {
          if (snap !== undefined) {
            throw new TypeError("Cannot receive snapshot: a new one began before the last ended");
          }
          const message = parseMessage(value.message);
          const meta = parseSnapshotMeta(value.meta);
          const dataBytes = value.dataBytes;
          if (!isCount(dataBytes) || dataBytes > this.#snapshotBytesMax) {
            throw new RangeError(
              `Cannot receive snapshot: dataBytes ${
                String(dataBytes)
              } is not a count up to snapshotBytesMax ${this.#snapshotBytesMax}`,
            );
          }
          snap = { message, meta, data: new Uint8Array(dataBytes), filled: 0 };
        } else if (value.frame === "snapChunk") {
          if (snap === undefined) {
            throw new TypeError("Cannot receive snapshot chunk: no snapshot began");
          }
          const data = value.data;
          if (
            !(data instanceof Uint8Array) || snap.filled + data.byteLength > snap.data.byteLength
          ) {
            throw new TypeError("Cannot receive snapshot chunk: bad data or more than announced");
          }
          snap.data.set(data, snap.filled);
          snap.filled += data.byteLength;
        } else {
          throw new TypeError(
            `Cannot accept frame: unknown frame kind ${JSON.stringify(value.frame)}`,
          );
        }
        if (snap !== undefined && snap.filled === snap.data.byteLength) {
          const snapshot: Snapshot = { meta: snap.meta, data: snap.data };
          const msg: Message = { ...snap.message, snapshot };
          snap = undefined;
          deliver(msg);
          await writer.write([{ frame: "snapAck" }]);
        }
        continue;
      }
      if (snap !== undefined) {
        throw new TypeError("Cannot accept message: a snapshot is being received");
      }
      deliver(parseMessage(value));
    }
  }
}

// ---- validation ----

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Uint8Array);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function parseHandshake(value: unknown): Handshake {
  if (
    !isRecord(value) || value.proto !== "raftkv" || typeof value.version !== "number" ||
    typeof value.clusterId !== "string" || !isCount(value.from) ||
    (value.kind !== "raft" && value.kind !== "rpc")
  ) {
    throw new TypeError("Cannot accept connection: the first frame is not a raftkv handshake");
  }
  const handshake: Handshake = {
    proto: "raftkv",
    version: value.version,
    clusterId: value.clusterId,
    from: value.from,
    kind: value.kind,
  };
  if (typeof value.addr === "string" && value.addr.length <= 300) handshake.addr = value.addr;
  return handshake;
}

const COUNT_FIELDS = ["from", "to", "term", "logTerm", "index", "commit", "rejectHint"] as const;

/**
 * Checks that a decoded value has a Message's shape (a cheap check: kinds and
 * ranges, not Raft semantics) and returns it with only the known fields.
 * Throws a `TypeError` naming the first bad field.
 */
export function parseMessage(value: unknown): Message {
  if (!isRecord(value)) throw new TypeError("Cannot accept message: it is not a map");
  const type = value.type;
  if (typeof type !== "string" || !MESSAGE_TYPES.has(type)) {
    throw new TypeError(`Cannot accept message: unknown type ${JSON.stringify(type)}`);
  }
  for (const field of COUNT_FIELDS) {
    if (!isCount(value[field])) {
      throw new TypeError(`Cannot accept message: ${field} is not a non-negative safe integer`);
    }
  }
  if (typeof value.reject !== "boolean") {
    throw new TypeError("Cannot accept message: reject is not a boolean");
  }
  const entries = value.entries;
  if (!Array.isArray(entries)) {
    throw new TypeError("Cannot accept message: entries is not an array");
  }
  for (const entry of entries) checkEntry(entry);
  const msg: Message = {
    type: type as MessageType,
    from: value.from as number,
    to: value.to as number,
    term: value.term as number,
    logTerm: value.logTerm as number,
    index: value.index as number,
    entries: entries as Entry[],
    commit: value.commit as number,
    reject: value.reject,
    rejectHint: value.rejectHint as number,
  };
  if (value.context !== undefined && value.context !== null) {
    if (!(value.context instanceof Uint8Array)) {
      throw new TypeError("Cannot accept message: context is not a byte string");
    }
    msg.context = value.context;
  }
  if (value.snapshot !== undefined && value.snapshot !== null) {
    const s = value.snapshot;
    if (!isRecord(s) || !(s.data instanceof Uint8Array)) {
      throw new TypeError("Cannot accept message: snapshot is not {meta, data}");
    }
    msg.snapshot = { meta: parseSnapshotMeta(s.meta), data: s.data };
  }
  return msg;
}

function checkEntry(entry: unknown): void {
  if (
    !isRecord(entry) || !isCount(entry.index) || !isCount(entry.term) ||
    (entry.type !== "normal" && entry.type !== "conf") || !(entry.data instanceof Uint8Array)
  ) {
    throw new TypeError("Cannot accept message: an entry is not {index, term, type, data}");
  }
}

function isIdList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every(isCount);
}

function parseSnapshotMeta(value: unknown): SnapshotMeta {
  if (!isRecord(value) || !isCount(value.index) || !isCount(value.term) || !isRecord(value.conf)) {
    throw new TypeError("Cannot accept snapshot: meta is not {index, term, conf}");
  }
  const conf = value.conf;
  if (!isIdList(conf.voters) || !isIdList(conf.learners) || !isIdList(conf.removed)) {
    throw new TypeError("Cannot accept snapshot: conf is not {voters, learners, removed}");
  }
  return {
    index: value.index,
    term: value.term,
    conf: { voters: conf.voters, learners: conf.learners, removed: conf.removed },
  };
}

// ---- helpers ----

function estimateBytes(msg: Message): number {
  let bytes = 64 + (msg.context?.byteLength ?? 0);
  for (const entry of msg.entries) bytes += 16 + entry.data.byteLength;
  return bytes;
}

/** Parses "host:port", ":port" or "[v6]:port"; an empty host becomes `defaultHost`. */
export function parseHostPort(addr: string, defaultHost: string): HostPort {
  const colon = addr.lastIndexOf(":");
  const portText = addr.slice(colon + 1);
  let hostname = colon < 0 ? "" : addr.slice(0, colon);
  if (hostname.startsWith("[") && hostname.endsWith("]")) hostname = hostname.slice(1, -1);
  const port = Number(portText);
  if (colon < 0 || portText === "" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(
      `Cannot parse address ${JSON.stringify(addr)}: expected "host:port" or ":port"`,
    );
  }
  return { hostname: hostname === "" ? defaultHost : hostname, port };
}

function formatHostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
