/**
 * A harness for end-to-end tests: real raftkv processes on 127.0.0.1, each
 * started as `deno run -A <repo>/main.ts` (independent of the cwd) with ports
 * the harness picks, a temp state directory and its stderr captured to a log
 * file whose tail is printed when a test fails.
 *
 * Nothing here sleeps and hopes: every wait is a {@linkcode waitFor} with a
 * deadline, and everything started is stopped (SIGKILL for leftovers) and
 * its temp directory removed when the cluster is disposed.
 *
 * @example
 * ```ts
 * e2eTest("a write is readable from every node", async (h) => {
 *   const cluster = await h.startCluster(3);
 *   assertEquals(await cluster.nodes[0]!.put("k", "v"), 204);
 * });
 * ```
 *
 * @module
 */

import type { Member } from "../http/app.ts";
import type { Op } from "./linearizability.ts";

/** A member as `GET /mgmt/nodes` lists it. */
export type { Member };

/** The server's entry point, resolved from this file (cwd-independent). */
export const MAIN_PATH = new URL("../main.ts", import.meta.url).pathname;

/** UTF-8 that keeps a leading U+FEFF (part of the text, not a byte-order mark). */
const faithfulUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** Characters that have broken text handling somewhere: a leading U+FEFF, line breaks, NUL... */
const TRICKY_CHARACTERS = [
  "a",
  "Z",
  "/",
  "%",
  "?",
  "#",
  " ",
  "\ufeff",
  "\n",
  "\r",
  "\t",
  "\u2028",
  "\u0000",
  "\u0085",
  "e\u0301",
  "ü",
  "€",
  "中",
  "😀",
  "\ufffe",
];

/**
 * Random text of fewer than `max` of those characters, drawn from `random`
 * (a number in [0, 1) per call); a quarter start with U+FEFF.
 */
export function trickyText(random: () => number, max: number): string {
  let s = random() < 0.25 ? "\ufeff" : "";
  for (let n = Math.floor(random() * max); n > 0; n--) {
    s += TRICKY_CHARACTERS[Math.floor(random() * TRICKY_CHARACTERS.length)];
  }
  return s;
}

/** Runs the program once with `args` (for flags that exit at once) and returns what it printed. */
export async function runProgram(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "-A", MAIN_PATH, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout),
    stderr: text.decode(output.stderr),
  };
}
/** The repository's root directory. */
export const REPO_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Fast timings for tests: heartbeat 50 ms, election timeout 500 ms. */
export const FAST_TIMINGS = { heartbeatIntervalMs: 50, electionTimeoutMs: 500 } as const;

/** How long a node may take from spawn to its `raftkv ready` line. */
const READY_TIMEOUT_MS = 30_000;
/** How long a SIGTERM may take before the harness sends SIGKILL. */
const STOP_GRACE_MS = 10_000;
/** Attempts at starting a node when its ports turn out to be taken. */
const START_ATTEMPTS_MAX = 5;
/** Lines of each node's log printed when a test fails. */
const LOG_TAIL_LINES = 40;

/** The fields of `GET /mgmt/status` the tests read. */
export interface NodeStatus {
  id: number;
  term: number;
  role: string;
  leader: number;
  commit: number;
  applied: number;
  firstIndex: number;
  lastIndex: number;
  keys: number;
}

/** One HTTP answer; `status` 0 means no answer (connection refused, reset or timed out). */
export interface HttpResult {
  status: number;
  /** The body, or the network error's message when `status` is 0. */
  text: string;
  headers: Headers;
}

/** Options for every node of a cluster. */
export interface NodeFlags {
  heartbeatIntervalMs?: number;
  electionTimeoutMs?: number;
  snapshotEntries?: number;
  /** More flags, appended verbatim. */
  extraArgs?: string[];
}

/** Options of {@linkcode startCluster}. */
export interface ClusterOptions extends NodeFlags {
  /** A prefix for the temp directory. Default "raftkv-e2e-". */
  name?: string;
}

/** Options of {@linkcode waitFor}. */
export interface WaitOptions {
  /** Give up after this long. Default 15 s. */
  timeoutMs?: number;
  /** What is awaited, for the error message. */
  what: string;
  /** Pause between attempts. Default 50 ms. */
  intervalMs?: number;
}

/** Options of an HTTP call. */
export interface RequestOptions {
  /** Abort the request after this long (status 0). Default 5 s. */
  timeoutMs?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Polls `cond` until it returns something other than `undefined`, `null` or
 * `false` and returns that; a throw counts as "not yet". Throws once
 * `timeoutMs` has passed, naming `what` and the last value or error seen.
 */
export async function waitFor<T>(
  cond: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: WaitOptions,
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let last = "nothing yet";
  for (let attempt = 0;; attempt++) {
    try {
      const value = await cond();
      if (value !== undefined && value !== null && value !== false) return value;
      last = `returned ${String(value)}`;
    } catch (error) {
      last = `threw ${errorText(error)}`;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `Timed out after ${timeoutMs} ms (${
          attempt + 1
        } attempts) waiting for ${options.what}: the last attempt ${last}`,
      );
    }
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
}

/** Ports this process has handed out: never handed out twice (a node may not listen yet). */
const portsHandedOut = new Set<number>();

/**
 * Returns `n` distinct free TCP ports on 127.0.0.1: bound to port 0 together,
 * read, closed. A port handed out before by this process is skipped.
 */
export function freePorts(n: number): number[] {
  const listeners: Deno.Listener[] = [];
  const ports: number[] = [];
  try {
    for (let attempt = 0; ports.length < n && attempt < 100 * n; attempt++) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      listeners.push(listener);
      if (portsHandedOut.has(listener.addr.port)) continue;
      ports.push(listener.addr.port);
    }
  } finally {
    for (const l of listeners) l.close();
  }
  if (ports.length < n) throw new Error(`Cannot find ${n} free ports`);
  for (const p of ports) portsHandedOut.add(p);
  return ports;
}

/**
 * Returns a base port such that `base .. base + count - 1` are all free now,
 * below the kernel's ephemeral range (for scripts that number ports from a base).
 */
export function freePortRange(count: number): number {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - count));
    const listeners: Deno.Listener[] = [];
    try {
      for (let i = 0; i < count; i++) {
        listeners.push(Deno.listen({ hostname: "127.0.0.1", port: base + i }));
      }
      return base;
    } catch {
      // Taken: try another base.
    } finally {
      for (const l of listeners) l.close();
    }
  }
  throw new Error(`Cannot find ${count} consecutive free ports`);
}

/** One raftkv process (and its restarts) with a fixed state directory and ports. */
export class TestNode {
  /** "n1", "n2", … */
  readonly name: string;
  /** The member id, known once the node has said `raftkv ready`. */
  id = 0;
  #stateDir: string;
  #raftPort: number;
  #apiPort: number;
  #join: string | undefined;
  #flags: NodeFlags;
  readonly logPath: string;
  #lines: string[] = [];
  #child: Deno.ChildProcess | undefined;
  #status: Promise<Deno.CommandStatus> | undefined;
  #lastStatus: Deno.CommandStatus | undefined;
  #pumps: Promise<void>[] = [];
  #log: Deno.FsFile | undefined;
  #paused = false;
  #incarnation = 0;

  constructor(
    init: {
      name: string;
      stateDir: string;
      logPath: string;
      join?: string;
      flags: NodeFlags;
    },
  ) {
    this.name = init.name;
    this.#stateDir = init.stateDir;
    this.logPath = init.logPath;
    this.#join = init.join;
    this.#flags = init.flags;
    [this.#raftPort, this.#apiPort] = freePorts(2) as [number, number];
  }

  /** This node's raft address, `127.0.0.1:PORT`. */
  get raftAddr(): string {
    return `127.0.0.1:${this.#raftPort}`;
  }

  /** This node's API base URL, `http://127.0.0.1:PORT`. */
  get apiUrl(): string {
    return `http://127.0.0.1:${this.#apiPort}`;
  }

  get stateDir(): string {
    return this.#stateDir;
  }

  /** True while the process runs (also while paused). */
  get running(): boolean {
    return this.#child !== undefined && this.#lastStatus === undefined;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** The exit status of the last process, once it has exited. */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#lastStatus;
  }

  /** Every log line of every incarnation so far. */
  get logLines(): readonly string[] {
    return this.#lines;
  }

  /** Log lines of the current (or last) incarnation only. */
  get currentLogLines(): string[] {
    const marker = `--- harness: ${this.name} start #${this.#incarnation} `;
    const i = this.#lines.findIndex((l) => l.startsWith(marker));
    return i === -1 ? [] : this.#lines.slice(i);
  }

  /** The last `n` lines of the log, each prefixed with the node's name. */
  logTail(n = LOG_TAIL_LINES): string {
    return this.#lines.slice(-n).map((l) => `[${this.name}] ${l}`).join("\n");
  }

  #args(): string[] {
    const f = this.#flags;
    const args = [
      "run",
      "-A",
      MAIN_PATH,
      "--state-dir",
      this.#stateDir,
      "--raft",
      this.raftAddr,
      "--api",
      `127.0.0.1:${this.#apiPort}`,
    ];
    if (this.#join !== undefined) args.push("--join", this.#join);
    if (f.heartbeatIntervalMs !== undefined) {
      args.push("--heartbeat-interval", String(f.heartbeatIntervalMs));
    }
    if (f.electionTimeoutMs !== undefined) {
      args.push("--election-timeout", String(f.electionTimeoutMs));
    }
    if (f.snapshotEntries !== undefined) args.push("--snapshot-entries", String(f.snapshotEntries));
    args.push(...(f.extraArgs ?? []));
    return args;
  }

  /**
   * Starts the process and waits for its `raftkv ready` line. A first start
   * whose ports were taken meanwhile is retried on new ports with an empty
   * state directory; a restart keeps its ports (peers know them) and retries
   * on the same ones.
   */
  async start(): Promise<void> {
    if (this.running) throw new Error(`Cannot start ${this.name}: it is running`);
    const fresh = !(await exists(this.#stateDir));
    for (let attempt = 1;; attempt++) {
      await this.#spawn();
      const outcome = await this.#waitReady();
      if (outcome === "ready") return;
      const inUse = this.currentLogLines.some((l) => /in use|AddrInUse|os error 98/i.test(l));
      if (!inUse || attempt >= START_ATTEMPTS_MAX) {
        throw new Error(
          `Cannot start ${this.name}: ${outcome}\n${this.logTail(15)}`,
        );
      }
      this.#note(`ports taken (attempt ${attempt}); retrying`);
      if (fresh) {
        await Deno.remove(this.#stateDir, { recursive: true }).catch(() => {});
        [this.#raftPort, this.#apiPort] = freePorts(2) as [number, number];
      } else {
        await sleep(200 * attempt);
      }
    }
  }

  /** Stops the node if it runs (SIGTERM), then starts it again from its state directory. */
  async restart(): Promise<void> {
    if (this.running) await this.stop("SIGTERM");
    await this.start();
  }

  /**
   * Sends `signal` and waits for the process to exit (a paused process is
   * continued so that it can act on SIGTERM). After `STOP_GRACE_MS` without an
   * exit, sends SIGKILL. Returns the exit status.
   */
  async stop(signal: "SIGTERM" | "SIGKILL" | "SIGINT" = "SIGTERM"): Promise<Deno.CommandStatus> {
    const child = this.#child;
    const status = this.#status;
    if (child === undefined || status === undefined) {
      throw new Error(`Cannot stop ${this.name}: it was never started`);
    }
    if (this.#lastStatus !== undefined) return this.#lastStatus;
    this.#note(`sending ${signal}`);
    trySignal(child, signal);
    if (this.#paused && signal !== "SIGKILL") trySignal(child, "SIGCONT");
    this.#paused = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), STOP_GRACE_MS);
    });
    const first = await Promise.race([status, timedOut]);
    clearTimeout(timer);
    if (first === "timeout") {
      this.#note(`no exit ${STOP_GRACE_MS} ms after ${signal}: sending SIGKILL`);
      trySignal(child, "SIGKILL");
    }
    return await this.waitExit();
  }

  /** Waits for the current process to exit on its own (or for `timeoutMs`, then throws). */
  async waitExit(timeoutMs = 30_000): Promise<Deno.CommandStatus> {
    const status = this.#status;
    if (status === undefined) throw new Error(`Cannot wait for ${this.name}: never started`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.name} did not exit within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const s = await Promise.race([status, timedOut]);
      await Promise.all(this.#pumps);
      return s;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the process with SIGSTOP (it keeps its sockets but answers nothing). */
  pause(): void {
    if (!this.running || this.#child === undefined) {
      throw new Error(`Cannot pause ${this.name}: not running`);
    }
    this.#note("sending SIGSTOP");
    this.#child.kill("SIGSTOP");
    this.#paused = true;
  }

  /** Continues a paused process with SIGCONT. */
  resume(): void {
    if (!this.running || this.#child === undefined) {
      throw new Error(`Cannot resume ${this.name}: not running`);
    }
    this.#note("sending SIGCONT");
    this.#child.kill("SIGCONT");
    this.#paused = false;
  }

  /** SIGKILLs the process if it runs and waits for it; closes the log file. */
  async dispose(): Promise<void> {
    if (this.running && this.#child !== undefined) {
      trySignal(this.#child, "SIGKILL");
      await this.#status?.catch(() => {});
    }
    await Promise.all(this.#pumps).catch(() => {});
    this.#log?.close();
    this.#log = undefined;
  }

  // ------------------------------------------------------------ HTTP

  /** One HTTP call to this node's API; never throws (status 0 when there is no answer). */
  async request(
    method: string,
    path: string,
    options: RequestOptions & { body?: BodyInit; headers?: HeadersInit } = {},
  ): Promise<HttpResult> {
    const init: RequestInit = {
      method,
      signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
    };
    if (options.body !== undefined) init.body = options.body;
    if (options.headers !== undefined) init.headers = options.headers;
    try {
      const response = await fetch(`${this.apiUrl}${path}`, init);
      // Not response.text(): it drops a leading U+FEFF, which may be a value's.
      const text = faithfulUtf8.decode(await response.arrayBuffer());
      return { status: response.status, text, headers: response.headers };
    } catch (error) {
      return { status: 0, text: errorText(error), headers: new Headers() };
    }
  }

  /** `PUT /` with `{"Key", "Value"}`; returns the status (0: no answer). */
  async put(key: string, value: string, options: RequestOptions = {}): Promise<number> {
    const body = JSON.stringify({ Key: key, Value: value });
    return (await this.request("PUT", "/", { ...options, body })).status;
  }

  /** `GET /{key}`; the value is the body without its trailing newline, on a 200. */
  async get(
    key: string,
    options: RequestOptions = {},
  ): Promise<{ status: number; value?: string; text: string }> {
    const r = await this.request("GET", `/${encodeURIComponent(key)}`, options);
    if (r.status !== 200) return { status: r.status, text: r.text };
    return { status: r.status, value: r.text.replace(/\n$/, ""), text: r.text };
  }

  /** `DELETE /{key}`; returns the status. */
  async del(key: string, options: RequestOptions = {}): Promise<number> {
    return (await this.request("DELETE", `/${encodeURIComponent(key)}`, options)).status;
  }

  /** `GET /mgmt/nodes`; throws unless it answers 200. */
  async members(options: RequestOptions = {}): Promise<Member[]> {
    const r = await this.request("GET", "/mgmt/nodes", options);
    if (r.status !== 200) throw new Error(`GET /mgmt/nodes on ${this.name}: ${r.status} ${r.text}`);
    return JSON.parse(r.text) as Member[];
  }

  /** `GET /mgmt/status`; throws unless it answers 200. */
  async status(options: RequestOptions = {}): Promise<NodeStatus> {
    const r = await this.request("GET", "/mgmt/status", { timeoutMs: 2000, ...options });
    if (r.status !== 200) {
      throw new Error(`GET /mgmt/status on ${this.name}: ${r.status} ${r.text}`);
    }
    return JSON.parse(r.text) as NodeStatus;
  }

  /**
   * A linearizable read that retries while the answer is 503 or missing (an
   * election, a restart); returns the first definite answer (200 or 404).
   */
  async read(key: string, options: { timeoutMs?: number } = {}): Promise<{
    status: number;
    value?: string;
  }> {
    return await waitFor(async () => {
      const r = await this.get(key);
      return r.status === 503 || r.status === 0 ? undefined : r;
    }, {
      what: `a definite answer to GET ${key} on ${this.name}`,
      timeoutMs: options.timeoutMs ?? 15_000,
    });
  }

  /** A PUT retried while the answer is 503 or missing; returns the first other status. */
  async putRetrying(
    key: string,
    value: string,
    options: { timeoutMs?: number } = {},
  ): Promise<number> {
    return await waitFor(async () => {
      const s = await this.put(key, value);
      return s === 503 || s === 0 ? undefined : s;
    }, {
      what: `PUT ${key} on ${this.name} to be answered`,
      timeoutMs: options.timeoutMs ?? 15_000,
    });
  }

  // ------------------------------------------------------------ process plumbing

  async #spawn(): Promise<void> {
    this.#incarnation++;
    this.#log ??= await Deno.open(this.logPath, { create: true, append: true, write: true });
    const args = this.#args();
    this.#note(`start #${this.#incarnation} deno ${args.join(" ")}`, true);
    const child = new Deno.Command(Deno.execPath(), {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#child = child;
    this.#lastStatus = undefined;
    this.#paused = false;
    this.#status = child.status.then((s) => {
      this.#lastStatus = s;
      return s;
    });
    this.#pumps = [this.#pump(child.stdout), this.#pump(child.stderr)];
  }

  /** Copies a stream into the log file and `#lines`, line by line. */
  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    const encoder = new TextEncoder();
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        const parts = rest.split("\n");
        rest = parts.pop() ?? "";
        for (const line of parts) this.#lines.push(line);
        if (parts.length > 0) await this.#log?.write(encoder.encode(parts.join("\n") + "\n"));
      }
    } catch {
      // The process went away mid-read; what was read is kept.
    }
    if (rest !== "") {
      this.#lines.push(rest);
      await this.#log?.write(encoder.encode(rest + "\n")).catch(() => 0);
    }
  }

  /** Waits for `raftkv ready` (sets `id`), or the process's exit, or the deadline. */
  async #waitReady(): Promise<"ready" | string> {
    const marker = `--- harness: ${this.name} start #${this.#incarnation} `;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let from = this.#lines.findIndex((l) => l.startsWith(marker));
    for (;;) {
      for (; from < this.#lines.length; from++) {
        const m = /raftkv ready (\{.*\})$/.exec(this.#lines[from] ?? "");
        if (m !== null) {
          this.id = (JSON.parse(m[1]!) as { id: number }).id;
          return "ready";
        }
      }
      if (this.#lastStatus !== undefined) {
        await Promise.all(this.#pumps);
        return `it exited with code ${this.#lastStatus.code} before it was ready`;
      }
      if (Date.now() > deadline) {
        this.#note(`not ready after ${READY_TIMEOUT_MS} ms: sending SIGKILL`);
        if (this.#child !== undefined) trySignal(this.#child, "SIGKILL");
        await this.#status;
        return `it was not ready within ${READY_TIMEOUT_MS} ms`;
      }
      await sleep(20);
    }
  }

  /** Writes a harness line into the node's log, so that the log tells the story. */
  #note(text: string, marker = false): void {
    const line = marker ? `--- harness: ${this.name} ${text}` : `--- harness: ${text}`;
    this.#lines.push(line);
    this.#log?.writeSync(new TextEncoder().encode(line + "\n"));
  }
}

function trySignal(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Already exited.
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** A set of nodes sharing a temp directory; disposing it SIGKILLs what runs and removes the dir. */
export class Cluster implements AsyncDisposable {
  readonly nodes: TestNode[] = [];
  readonly dir: string;
  readonly options: ClusterOptions;

  constructor(dir: string, options: ClusterOptions) {
    this.dir = dir;
    this.options = options;
  }

  /** The node named `n{i + 1}`; throws if there is none. */
  node(i: number): TestNode {
    const node = this.nodes[i];
    if (node === undefined) throw new RangeError(`No node at index ${i}`);
    return node;
  }

  /** Nodes whose process runs and is not paused. */
  get live(): TestNode[] {
    return this.nodes.filter((n) => n.running && !n.paused);
  }

  /**
   * Creates and starts a node; it joins through `join` (a raft address) if
   * given, else through the first live node, else bootstraps a new cluster.
   */
  async addNode(options: { join?: string | null; flags?: NodeFlags } = {}): Promise<TestNode> {
    const index = this.nodes.length + 1;
    const name = `n${index}`;
    const join = options.join === null ? undefined : options.join ?? this.live[0]?.raftAddr;
    const init: ConstructorParameters<typeof TestNode>[0] = {
      name,
      stateDir: `${this.dir}/${name}`,
      logPath: `${this.dir}/${name}.log`,
      flags: { ...this.options, ...options.flags },
    };
    if (join !== undefined) init.join = join;
    const node = new TestNode(init);
    this.nodes.push(node);
    await node.start();
    return node;
  }

  /**
   * Waits until a live node reports itself leader (the one with the highest
   * term if several do, such as an old leader that was paused) and returns it.
   * With `not`, waits for a leader other than that node.
   */
  async leader(options: { not?: TestNode; timeoutMs?: number } = {}): Promise<TestNode> {
    return await waitFor(async () => {
      const statuses = await Promise.all(
        this.live.map(async (n) => {
          try {
            return { node: n, status: await n.status() };
          } catch {
            return undefined;
          }
        }),
      );
      let best: { node: TestNode; status: NodeStatus } | undefined;
      for (const s of statuses) {
        if (s === undefined || s.status.role !== "leader" || s.status.leader !== s.node.id) {
          continue;
        }
        if (best === undefined || s.status.term > best.status.term) best = s;
      }
      if (best === undefined || best.node === options.not) return undefined;
      // A leader at a lower term than some live node knows of is stale.
      const maxTerm = Math.max(...statuses.map((s) => s?.status.term ?? 0));
      return best.status.term >= maxTerm ? best.node : undefined;
    }, {
      what: options.not === undefined ? "a leader" : `a leader other than ${options.not.name}`,
      timeoutMs: options.timeoutMs ?? 15_000,
    });
  }

  /** Waits until every live node answers a linearizable read (404 for a probe key). */
  async waitServing(options: { timeoutMs?: number } = {}): Promise<void> {
    await Promise.all(this.live.map((n) =>
      waitFor(async () => {
        const r = await n.get("harness-probe");
        return r.status === 404 || r.status === 200;
      }, {
        what: `${n.name} to serve a linearizable read`,
        timeoutMs: options.timeoutMs ?? 20_000,
      })
    ));
  }

  /** Waits until `via` lists exactly `count` voters. */
  async waitVoters(count: number, via?: TestNode): Promise<Member[]> {
    return await waitFor(async () => {
      const node = via ?? this.live[0];
      if (node === undefined) throw new Error("no live node");
      const members = await node.members();
      const voters = members.filter((m) => m.type === "voter");
      return voters.length === count && members.length === count ? members : undefined;
    }, { what: `${count} voters listed`, timeoutMs: 30_000 });
  }

  /** The tails of every node's log, for a failure message. */
  logTails(lines = LOG_TAIL_LINES): string {
    return this.nodes.map((n) => `--- tail of ${n.logPath}\n${n.logTail(lines)}`).join("\n");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.dispose()));
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Starts an `n`-node cluster: node 1 bootstraps, the others join it (all at
 * once); resolves when `n` voters are listed and every node serves a
 * linearizable read. Dispose it (`await using`) to stop everything.
 */
export async function startCluster(n: number, options: ClusterOptions = {}): Promise<Cluster> {
  const dir = await Deno.makeTempDir({ prefix: options.name ?? "raftkv-e2e-" });
  const cluster = new Cluster(dir, { ...FAST_TIMINGS, ...options });
  try {
    await cluster.addNode({ join: null });
    const first = cluster.node(0).raftAddr;
    const rest: Promise<TestNode>[] = [];
    for (let i = 1; i < n; i++) rest.push(cluster.addNode({ join: first }));
    await Promise.all(rest);
    await cluster.waitVoters(n);
    await cluster.waitServing();
    return cluster;
  } catch (error) {
    console.error(`startCluster(${n}) failed:\n${cluster.logTails()}`);
    await cluster[Symbol.asyncDispose]();
    throw error;
  }
}

/** What an {@linkcode e2eTest} body gets: cluster factories whose clusters are disposed after it. */
export class Harness implements AsyncDisposable {
  readonly clusters: Cluster[] = [];

  /** {@linkcode startCluster}, disposed with the harness. */
  async startCluster(n: number, options: ClusterOptions = {}): Promise<Cluster> {
    const cluster = await startCluster(n, options);
    this.clusters.push(cluster);
    return cluster;
  }

  /** An empty cluster (no node yet), disposed with the harness. */
  async emptyCluster(options: ClusterOptions = {}): Promise<Cluster> {
    const dir = await Deno.makeTempDir({ prefix: options.name ?? "raftkv-e2e-" });
    const cluster = new Cluster(dir, { ...FAST_TIMINGS, ...options });
    this.clusters.push(cluster);
    return cluster;
  }

  logTails(): string {
    return this.clusters.map((c) => c.logTails()).join("\n");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.clusters.map((c) => c[Symbol.asyncDispose]()));
  }
}

/** Options of {@linkcode e2eTest}. */
export interface E2eTestOptions {
  /** The test fails after this long (its processes are then killed). Default 60 s. */
  timeoutMs?: number;
  ignore?: boolean;
}

/**
 * Registers a `Deno.test` that runs `fn` with a {@linkcode Harness}, bounded
 * by `timeoutMs`; on failure it prints the tail of every node's log; at the
 * end everything the harness started is stopped and its files removed.
 */
export function e2eTest(
  name: string,
  fn: (h: Harness) => Promise<void>,
  options: E2eTestOptions = {},
): void {
  const timeoutMs = options.timeoutMs ?? 60_000;
  Deno.test({
    name,
    ignore: options.ignore ?? false,
    // Child processes, their pipes and fetch connections outlive single ops by design.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await using h = new Harness();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`The test did not finish within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        await Promise.race([fn(h), timedOut]);
      } catch (error) {
        console.error(`\n=== ${name} failed; node logs:\n${h.logTails()}\n===`);
        throw error;
      } finally {
        clearTimeout(timer);
      }
    },
  });
}

/**
 * Runs `fn` on every item with at most `concurrency` calls in flight;
 * resolves with the results in order.
 */
export async function mapConcurrent<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return results;
}

/**
 * Writes every `[key, value]` through `node` (retrying 503s and missing
 * answers, which is safe for these idempotent puts), `concurrency` at a time;
 * throws unless every write is acknowledged with 204.
 */
export async function putAll(
  node: TestNode,
  entries: readonly (readonly [string, string])[],
  options: { concurrency?: number } = {},
): Promise<void> {
  await mapConcurrent(entries, options.concurrency ?? 8, async ([key, value]) => {
    const status = await node.putRetrying(key, value);
    if (status !== 204) throw new Error(`PUT ${key} on ${node.name} answered ${status}`);
  });
}

/**
 * Checks that every node gives a linearizable read of every key with its
 * expected value (a 503 or no answer is retried; a 404 or another value
 * fails at once). Returns the problems found, empty when all is well.
 */
export async function missingWrites(
  nodes: readonly TestNode[],
  expected: ReadonlyMap<string, string>,
  options: { concurrency?: number } = {},
): Promise<string[]> {
  const problems: string[] = [];
  const keys = [...expected.keys()];
  await Promise.all(
    nodes.map((node) =>
      mapConcurrent(keys, options.concurrency ?? 6, async (key) => {
        const r = await node.read(key);
        const want = expected.get(key);
        if (r.status !== 200 || r.value !== want) {
          problems.push(
            `${node.name}: GET ${key} -> ${r.status} ${JSON.stringify(r.value)}, want ${
              JSON.stringify(want)
            }`,
          );
        }
      })
    ),
  );
  return problems;
}

/**
 * Records timed puts and gets of registers through nodes, as a black-box
 * fault test does, for `checkRegisterHistory` (tests/linearizability.ts).
 * Every value written must be unique. A write answered anything but 204 (no
 * answer, 503, a deadline) has an unknown outcome; a read without a definite
 * answer (200 or 404) is not recorded; a 4xx is a bug and is kept apart.
 */
export class RegisterRecorder {
  readonly history: Op[] = [];
  readonly unexpected: string[] = [];
  readonly #timeoutMs: number;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
  }

  async write(node: TestNode, key: string, value: string): Promise<void> {
    const invoke = performance.now();
    const status = await node.put(key, value, { timeoutMs: this.#timeoutMs });
    const complete = status === 204 ? performance.now() : Infinity;
    if (status >= 400 && status < 500) {
      this.unexpected.push(`PUT ${key} on ${node.name}: ${status}`);
    }
    this.history.push({ kind: "write", key, value, invoke, complete });
  }

  async read(node: TestNode, key: string): Promise<void> {
    const invoke = performance.now();
    const r = await node.get(key, { timeoutMs: this.#timeoutMs });
    const complete = performance.now();
    if (r.status === 200 || r.status === 404) {
      this.history.push({ kind: "read", key, value: r.value, invoke, complete });
    } else if (r.status >= 400 && r.status < 500) {
      this.unexpected.push(`GET ${key} on ${node.name}: ${r.status}`);
    }
  }
}
