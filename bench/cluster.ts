/**
 * `deno task bench:cluster [-- options]`: a three-node raftkv cluster, and
 * a three-member etcd when `etcd` is on PATH, under the same HTTP workloads
 * from a separate load-generator process (`bench/load.ts`). Prints the
 * physical floor (fdatasync and loopback round trip) and a side-by-side table
 * with the ratio raftkv/etcd for every row.
 *
 * The process and cluster helpers are exported for `bench/scale.ts`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { machineBusyCpuSeconds } from "./load.ts";
import type { KeyRange, LoadClient, LoadConfig, LoadMode, LoadResult, LoadSystem } from "./load.ts";

// ---------------------------------------------------------------------------
// Processes, ports, temp dirs and cleanup

/** A server process started by the harness. */
export interface ServerProcess {
  /** "raftkv-1", "etcd-2", … */
  name: string;
  child: Deno.ChildProcess;
  pid: number;
  /** The command line, to start it again after a restart. */
  argv: string[];
  logPath: string;
  /** performance.now() right after the spawn. */
  startedAt: number;
  /** Resolves with the exit status once the process has exited. */
  exited: Promise<Deno.CommandStatus>;
}

const running = new Set<ServerProcess>();
const tempDirs = new Set<string>();
let cleaningUp: Promise<void> | undefined;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Returns n distinct free TCP ports on 127.0.0.1 (held open together, then released). */
export function freePorts(n: number): number[] {
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of listeners) l.close();
  return ports;
}

/** Makes a temp dir that {@linkcode cleanup} removes. */
export async function makeTempDir(prefix: string, base?: string): Promise<string> {
  const dir = await Deno.makeTempDir(base === undefined ? { prefix } : { prefix, dir: base });
  tempDirs.add(dir);
  return dir;
}

/** Prints the last lines of each node's log to stderr (the logs go when the temp dir is removed). */
export async function printLogTails(nodes: ClusterNode[], lines = 15): Promise<void> {
  for (const n of nodes) {
    const text = await Deno.readTextFile(n.proc.logPath).catch(() => "");
    const tail = text.trimEnd().split("\n").slice(-lines).join("\n");
    console.error(`--- last lines of ${n.proc.logPath}\n${tail || "(empty)"}`);
  }
}

/** Keeps a temp dir made by {@linkcode makeTempDir}: cleanup will not remove it. */
export function keepTempDir(dir: string): void {
  tempDirs.delete(dir);
}

/** True while the process has not exited. */
export function isRunning(p: ServerProcess): boolean {
  return running.has(p);
}

/**
 * Starts a process with stdout and stderr appended to logPath. The shell
 * redirects and then `exec`s the server, so the pid is the server's own and
 * no output passes through this process.
 */
export function spawnServer(name: string, argv: string[], logPath: string): ServerProcess {
  if (argv.length === 0) throw new TypeError("Cannot start a server: empty command");
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", 'log=$1; shift; exec "$@" >>"$log" 2>&1', "sh", logPath, ...argv],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const proc: ServerProcess = {
    name,
    child,
    pid: child.pid,
    argv,
    logPath,
    startedAt: performance.now(),
    exited: child.status.then((s) => {
      running.delete(proc);
      return s;
    }),
  };
  running.add(proc);
  return proc;
}

/** Sends SIGTERM, waits up to graceMs for the exit, then SIGKILL. Returns ms until exit. */
export async function stopServer(p: ServerProcess, graceMs = 5000): Promise<number> {
  const t0 = performance.now();
  try {
    p.child.kill("SIGTERM");
  } catch { /* already gone */ }
  const done = await Promise.race([p.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done) {
    console.error(`${p.name} did not exit within ${graceMs} ms of SIGTERM: killing it`);
    try {
      p.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await Promise.race([p.exited, sleep(2000)]);
  }
  return performance.now() - t0;
}

/** Stops every process this module started and removes every temp dir it made. */
export function cleanup(): Promise<void> {
  cleaningUp ??= (async () => {
    await Promise.all([...running].map((p) => stopServer(p, 3000)));
    for (const d of tempDirs) {
      try {
        await Deno.remove(d, { recursive: true });
      } catch { /* already gone */ }
    }
    tempDirs.clear();
  })();
  return cleaningUp;
}

/** On SIGINT / SIGTERM: stop everything, remove temp dirs, exit 130. */
export function installSignalHandlers(): void {
  const onSignal = () => {
    console.error("\ninterrupted: stopping servers and removing temp dirs");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
}

/**
 * Polls fn every intervalMs until it returns a value other than undefined;
 * throws after timeoutMs, or at once when fatal() returns a reason.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 100,
  fatal?: () => string | undefined,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last = "";
  for (let i = 0; i < 1_000_000 && performance.now() < deadline; i++) {
    const why = fatal?.();
    if (why) throw new Error(`Gave up waiting for ${what}: ${why}`);
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    await sleep(intervalMs);
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** One HTTP request with a timeout; returns status and body text. */
export async function httpCall(
  method: string,
  url: string,
  body?: string,
  timeoutMs = 3000,
): Promise<{ status: number; body: string }> {
  const init: RequestInit = { method, signal: AbortSignal.timeout(timeoutMs) };
  if (body !== undefined) {
    init.body = body;
    init.headers = { "content-type": "application/json" };
  }
  const res = await fetch(url, init);
  return { status: res.status, body: await res.text() };
}

/** Resident and peak memory of a process in bytes, from /proc/<pid>/status. */
export async function readMemory(pid: number): Promise<{ rss: number; hwm: number }> {
  const text = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (field: string) => {
    const m = text.match(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m"));
    return m?.[1] ? Number(m[1]) * 1024 : NaN;
  };
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Number of sockets a process holds open (its TCP connections), from /proc/<pid>/fd. */
export function countSockets(pid: number): number {
  let n = 0;
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        if (Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).startsWith("socket:")) n++;
      } catch { /* fd closed meanwhile */ }
    }
  } catch { /* process gone */ }
  return n;
}

// ---------------------------------------------------------------------------
// Clusters

/** A running cluster of either system, seen through its HTTP API. */
export interface Cluster {
  system: LoadSystem;
  nodes: ClusterNode[];
  /** The base URL of the current leader's HTTP API. */
  leaderUrl(): Promise<string>;
  /** Writes key=value through the system's API at baseUrl; true on 2xx. */
  put(baseUrl: string, key: string, value: string): Promise<boolean>;
  /** Reads key at baseUrl, linearizably; the value, or undefined if absent or not answered. */
  get(baseUrl: string, key: string): Promise<string | undefined>;
  /** Starts a stopped node again from its state. */
  restart(node: ClusterNode): void;
  /** Adds a new member that joins the running cluster; returns it once started. */
  addNode(): Promise<ClusterNode>;
}

/** Waits until a write through the cluster's leader succeeds (the cluster is ready). */
async function waitForPut(
  cluster: Cluster,
  what: string,
  timeoutMs: number,
  fatal: () => string | undefined,
): Promise<void> {
  await waitFor(
    what,
    async () => (await cluster.put(await cluster.leaderUrl(), "bench-ready", "1")) || undefined,
    timeoutMs,
    200,
    fatal,
  );
}

/** One member: its process, addresses and state directory. */
export interface ClusterNode {
  name: string;
  /** `http://127.0.0.1:PORT` */
  apiUrl: string;
  /** `127.0.0.1:PORT` (raftkv's raft address or etcd's peer URL host:port). */
  peerAddr: string;
  stateDir: string;
  proc: ServerProcess;
}

/** How to start raftkv nodes. */
export interface RaftkvOptions {
  /** The command that starts one node, before its flags; default `deno run -A <repo>/main.ts`. */
  cmd: string[];
  /** Directory under which state dirs and logs are made. */
  baseDir: string;
  /** Time allowed for the cluster to form. */
  startTimeoutMs: number;
}

/** The default command that starts one raftkv node. */
export function defaultRaftkvCmd(): string[] {
  return [Deno.execPath(), "run", "-A", new URL("../main.ts", import.meta.url).pathname];
}

function normalizeApi(api: string): string {
  if (api.startsWith("http://") || api.startsWith("https://")) return api.replace(/\/$/, "");
  if (api.startsWith(":")) return `http://127.0.0.1${api}`;
  return `http://${api}`;
}

interface RaftkvMember {
  id?: unknown;
  addr?: unknown;
  api?: unknown;
  type?: unknown;
  leader?: unknown;
}

async function raftkvMembers(apiUrl: string): Promise<RaftkvMember[]> {
  const r = await httpCall("GET", `${apiUrl}/mgmt/nodes`);
  if (r.status !== 200) throw new Error(`GET /mgmt/nodes answered ${r.status}: ${r.body}`);
  const v = JSON.parse(r.body) as unknown;
  if (!Array.isArray(v)) throw new Error(`GET /mgmt/nodes did not answer an array: ${r.body}`);
  return v as RaftkvMember[];
}

/** Starts node 1 alone, then nodes 2 and 3 with --join; resolves once 3 members are listed and a PUT succeeds. */
export async function startRaftkvCluster(opts: RaftkvOptions, size = 3): Promise<Cluster> {
  const nodes: ClusterNode[] = [];
  let nextIndex = 1;

  const launch = (join: string | undefined): ClusterNode => {
    const i = nextIndex++;
    const [raftPort, apiPort] = freePorts(2);
    const stateDir = `${opts.baseDir}/raftkv-${i}`;
    const argv = [
      ...opts.cmd,
      "--state-dir",
      stateDir,
      "--raft",
      `127.0.0.1:${raftPort}`,
      "--api",
      `127.0.0.1:${apiPort}`,
      ...(join === undefined ? [] : ["--join", join]),
    ];
    const proc = spawnServer(`raftkv-${i}`, argv, `${opts.baseDir}/raftkv-${i}.log`);
    const node: ClusterNode = {
      name: proc.name,
      apiUrl: `http://127.0.0.1:${apiPort}`,
      peerAddr: `127.0.0.1:${raftPort}`,
      stateDir,
      proc,
    };
    nodes.push(node);
    return node;
  };

  /** A reason to stop waiting: a node of ours has exited. */
  const anyExited = () => {
    const dead = nodes.find((n) => !running.has(n.proc));
    return dead && `${dead.name} exited during start; see ${dead.proc.logPath}`;
  };

  const waitMembers = (first: ClusterNode, count: number) =>
    waitFor(
      `${count} voters listed by ${first.name}`,
      async () => {
        const ms = await raftkvMembers(first.apiUrl);
        const voters = ms.filter((m) => m.type === undefined || m.type === "voter");
        return ms.length >= count && voters.length >= count ? true : undefined;
      },
      opts.startTimeoutMs,
      100,
      anyExited,
    );

  const leaderUrl = async (): Promise<string> => {
    for (const n of nodes) {
      try {
        const ms = await raftkvMembers(n.apiUrl);
        const leader = ms.find((m) => m.leader === true);
        if (leader === undefined) continue;
        const byAddr = nodes.find((x) =>
          typeof leader.addr === "string" && x.peerAddr === leader.addr
        );
        if (byAddr) return byAddr.apiUrl;
        if (typeof leader.api === "string") return normalizeApi(leader.api);
      } catch { /* try the next node */ }
    }
    throw new Error("No raftkv node reports a leader");
  };

  const cluster: Cluster = {
    system: "raftkv",
    nodes,
    leaderUrl,
    async put(base, key, value) {
      const r = await httpCall("PUT", `${base}/`, JSON.stringify({ Key: key, Value: value }));
      return r.status >= 200 && r.status < 300;
    },
    async get(base, key) {
      const r = await httpCall("GET", `${base}/${encodeURIComponent(key)}`);
      return r.status === 200 ? r.body.replace(/\n$/, "") : undefined;
    },
    restart(node) {
      const proc = spawnServer(node.name, node.proc.argv, node.proc.logPath);
      node.proc = proc;
    },
    addNode() {
      const first = nodes[0];
      if (first === undefined) {
        return Promise.reject(new Error("Cannot add a node to an empty cluster"));
      }
      return Promise.resolve(launch(first.peerAddr));
    },
  };

  try {
    await formRaftkvCluster();
  } catch (e) {
    for (const n of nodes) await stopServer(n.proc, 3000);
    await printLogTails(nodes);
    throw e;
  }
  return cluster;

  async function formRaftkvCluster(): Promise<void> {
    const n1 = launch(undefined);
    await waitFor(
      `${n1.name} to elect itself`,
      async () => {
        const ms = await raftkvMembers(n1.apiUrl);
        return ms.some((m) => m.leader === true) ? true : undefined;
      },
      opts.startTimeoutMs,
      100,
      anyExited,
    );
    for (let k = 2; k <= size; k++) {
      launch(n1.peerAddr);
      await waitMembers(n1, k);
    }
    await waitForPut(cluster, "a PUT to succeed", opts.startTimeoutMs, anyExited);
  }
}

/** How to start etcd members. */
export interface EtcdOptions {
  /** Path of the etcd binary. */
  bin: string;
  baseDir: string;
  startTimeoutMs: number;
}

/** Finds an executable on PATH; undefined if absent. */
export function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const p = `${dir}/${name}`;
      const st = Deno.statSync(p);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0) return p;
    } catch { /* not here */ }
  }
  return undefined;
}

/** `etcd --version`'s first line. */
export async function etcdVersion(bin: string): Promise<string> {
  const out = await new Deno.Command(bin, { args: ["--version"], stdout: "piped", stderr: "null" })
    .output();
  return new TextDecoder().decode(out.stdout).split("\n")[0]?.trim() ?? "?";
}

function b64(text: string): string {
  return btoa(text);
}

/** Starts a three-member etcd (static bootstrap, default durability); resolves once a put succeeds. */
export async function startEtcdCluster(opts: EtcdOptions, size = 3): Promise<Cluster> {
  interface Member {
    name: string;
    clientPort: number;
    peerPort: number;
  }
  const ports = freePorts(size * 2);
  const members: Member[] = Array.from({ length: size }, (_, i) => ({
    name: `etcd-${i + 1}`,
    clientPort: ports[2 * i] ?? 0,
    peerPort: ports[2 * i + 1] ?? 0,
  }));
  const nodes: ClusterNode[] = [];
  const argvFor = (m: Member, initialCluster: string, state: "new" | "existing") => {
    const dataDir = `${opts.baseDir}/${m.name}`;
    return {
      dataDir,
      argv: [
        opts.bin,
        "--name",
        m.name,
        "--data-dir",
        dataDir,
        "--listen-client-urls",
        `http://127.0.0.1:${m.clientPort}`,
        "--advertise-client-urls",
        `http://127.0.0.1:${m.clientPort}`,
        "--listen-peer-urls",
        `http://127.0.0.1:${m.peerPort}`,
        "--initial-advertise-peer-urls",
        `http://127.0.0.1:${m.peerPort}`,
        "--initial-cluster",
        initialCluster,
        "--initial-cluster-state",
        state,
        "--initial-cluster-token",
        "raftkv-bench",
        "--logger",
        "zap",
        "--log-level",
        "warn",
      ],
    };
  };
  const clusterSpec = (ms: Member[]) =>
    ms.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(",");
  const start = (m: Member, initialCluster: string, state: "new" | "existing") => {
    const { dataDir, argv } = argvFor(m, initialCluster, state);
    const proc = spawnServer(m.name, argv, `${opts.baseDir}/${m.name}.log`);
    const node: ClusterNode = {
      name: m.name,
      apiUrl: `http://127.0.0.1:${m.clientPort}`,
      peerAddr: `127.0.0.1:${m.peerPort}`,
      stateDir: dataDir,
      proc,
    };
    nodes.push(node);
    return node;
  };

  const status = async (url: string) => {
    const r = await httpCall("POST", `${url}/v3/maintenance/status`, "{}");
    if (r.status !== 200) throw new Error(`status answered ${r.status}`);
    return JSON.parse(r.body) as { leader?: string; header?: { member_id?: string } };
  };

  const leaderUrl = async (): Promise<string> => {
    for (const n of nodes) {
      try {
        const s = await status(n.apiUrl);
        if (s.leader !== undefined && s.leader !== "0" && s.leader === s.header?.member_id) {
          return n.apiUrl;
        }
      } catch { /* stopped or not ready */ }
    }
    throw new Error("No etcd member reports itself as leader");
  };

  const cluster: Cluster = {
    system: "etcd",
    nodes,
    leaderUrl,
    async put(base, key, value) {
      const r = await httpCall(
        "POST",
        `${base}/v3/kv/put`,
        JSON.stringify({ key: b64(key), value: b64(value) }),
      );
      return r.status >= 200 && r.status < 300;
    },
    async get(base, key) {
      const r = await httpCall("POST", `${base}/v3/kv/range`, JSON.stringify({ key: b64(key) }));
      if (r.status !== 200) return undefined;
      const v = JSON.parse(r.body) as { kvs?: { value?: string }[] };
      const value = v.kvs?.[0]?.value;
      return value === undefined ? undefined : atob(value);
    },
    restart(node) {
      node.proc = spawnServer(node.name, node.proc.argv, node.proc.logPath);
    },
    async addNode() {
      const [clientPort, peerPort] = freePorts(2);
      const m: Member = {
        name: `etcd-${members.length + 1}`,
        clientPort: clientPort ?? 0,
        peerPort: peerPort ?? 0,
      };
      // etcd refuses a member add (503 "unhealthy cluster") until every member
      // has been connected for a few seconds, e.g. after a restart: retry.
      await waitFor(
        "etcd to accept the member add",
        async () => {
          const leader = await leaderUrl();
          const r = await httpCall(
            "POST",
            `${leader}/v3/cluster/member/add`,
            JSON.stringify({ peerURLs: [`http://127.0.0.1:${m.peerPort}`] }),
            10_000,
          );
          if (r.status === 200) return true;
          if (r.status === 503) return undefined;
          throw new Error(`etcd member add answered ${r.status}: ${r.body}`);
        },
        60_000,
        500,
      );
      members.push(m);
      return start(m, clusterSpec(members), "existing");
    },
  };

  try {
    const initial = clusterSpec(members);
    for (const m of members) start(m, initial, "new");
    await waitForPut(
      cluster,
      "etcd to elect a leader and accept a put",
      opts.startTimeoutMs,
      () => {
        const dead = nodes.find((n) => !running.has(n.proc));
        return dead && `${dead.name} exited during start; see ${dead.proc.logPath}`;
      },
    );
  } catch (e) {
    for (const n of nodes) await stopServer(n.proc, 3000);
    await printLogTails(nodes);
    throw e;
  }
  return cluster;
}

// ---------------------------------------------------------------------------
// The load generator process

/** Runs bench/load.ts in its own process; returns its result and the socket count seen mid-run. */
export async function runLoadProcess(
  cfg: LoadConfig,
): Promise<{ result: LoadResult; socketsMidRun: number }> {
  const loadPath = new URL("./load.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      // Deno grants reading /proc/<pid>/stat (CPU use) only with --allow-all.
      "--allow-all",
      loadPath,
      "--config",
      JSON.stringify(cfg),
    ],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  let socketsMidRun = 0;
  const sampleAt = (cfg.warmupSeconds + cfg.seconds / 2) * 1000;
  const timer = setTimeout(() => socketsMidRun = countSockets(child.pid), sampleAt);
  const killer = setTimeout(
    () => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    },
    (cfg.warmupSeconds + cfg.seconds) * 1000 + cfg.timeoutMs + 30_000,
  );
  try {
    const out = await child.output();
    if (!out.success) throw new Error(`load generator failed with code ${out.code}`);
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
    return { result: JSON.parse(text) as LoadResult, socketsMidRun };
  } finally {
    clearTimeout(timer);
    clearTimeout(killer);
  }
}

// ---------------------------------------------------------------------------
// The physical floor

/** Cores the machine keeps busy over one second, before anything of ours runs (NaN off Linux). */
export async function measureIdleBusy(): Promise<number> {
  const a = machineBusyCpuSeconds();
  await sleep(1000);
  return machineBusyCpuSeconds() - a;
}

/**
 * p50 (and p99) of writing 100 bytes to a file in dir and fdatasync, one
 * after another: "append" grows the file each time (the fdatasync also
 * writes its new size); "in place" writes into space zero-filled and synced
 * beforehand, as raftkv's WAL does (one disk write per fdatasync), with a
 * blocking call so that no thread hop is counted. "in place" is the floor.
 */
export async function measureFsync(
  dir: string,
  mode: "append" | "in place",
  iterations = 1000,
  maxMs = 15_000,
): Promise<{ p50Ms: number; p99Ms: number; n: number }> {
  const path = `${dir}/fsync-probe.bin`;
  const data = new Uint8Array(100).fill(0x61);
  const times: number[] = [];
  {
    using f = await Deno.open(path, { create: true, write: true, truncate: true });
    if (mode === "in place") {
      await f.write(new Uint8Array(data.length * iterations));
      await f.syncData();
      await f.seek(0, Deno.SeekMode.Start);
    }
    const deadline = performance.now() + maxMs;
    for (let i = 0; i < iterations && performance.now() < deadline; i++) {
      const t0 = performance.now();
      if (mode === "in place") {
        f.writeSync(data);
        f.syncDataSync();
      } else {
        await f.write(data);
        await f.syncData();
      }
      times.push(performance.now() - t0);
    }
  }
  await Deno.remove(path);
  return { p50Ms: pct(times, 0.5), p99Ms: pct(times, 0.99), n: times.length };
}

/** p50 of a 1-byte echo over a TCP connection on 127.0.0.1 (both ends in this process). */
export async function measureLoopbackRtt(
  iterations = 2000,
  maxMs = 10_000,
): Promise<{ p50Ms: number; p99Ms: number; n: number }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const server = (async () => {
    const conn = await listener.accept();
    conn.setNoDelay(true);
    const buf = new Uint8Array(64);
    for (let i = 0; i < iterations + 100; i++) {
      const n = await conn.read(buf);
      if (n === null) break;
      await conn.write(buf.subarray(0, n));
    }
    conn.close();
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const one = new Uint8Array([1]);
  const buf = new Uint8Array(64);
  const times: number[] = [];
  const deadline = performance.now() + maxMs;
  for (let i = 0; i < iterations && performance.now() < deadline; i++) {
    const t0 = performance.now();
    await conn.write(one);
    const n = await conn.read(buf);
    if (n === null) break;
    if (i >= 50) times.push(performance.now() - t0); // the first ones warm the JIT
  }
  conn.close();
  await server.catch(() => {});
  listener.close();
  return { p50Ms: pct(times, 0.5), p99Ms: pct(times, 0.99), n: times.length };
}

/**
 * The replication pipeline floor (bench/pipeline.ts): a lone client's
 * writes through three Deno processes that do only what any replicated
 * durable write must (HTTP in, TCP to two followers, a write and an
 * fdatasync on each, an answer after a majority), driven by the same load
 * generator as the rows. undefined if it could not be run.
 */
export async function measurePipeline(
  dir: string,
  opts: { seconds: number; warmupSeconds: number; valueBytes: number; client: LoadClient },
): Promise<LoadResult | undefined> {
  const script = new URL("./pipeline.ts", import.meta.url).pathname;
  const [leaderPort, ...followerPorts] = freePorts(3) as [number, number, number];
  const deno = [Deno.execPath(), "run", "-A", script];
  const procs: ServerProcess[] = [];
  try {
    for (const port of followerPorts) {
      procs.push(spawnServer(
        `pipeline-follower-${port}`,
        [...deno, "--role", "follower", "--port", String(port), "--dir", dir],
        `${dir}/pipeline-follower-${port}.log`,
      ));
    }
    const url = `http://127.0.0.1:${leaderPort}`;
    const exited = () => procs.some((p) => !running.has(p)) ? "a process exited" : undefined;
    // The leader dials its followers once: wait until both listen.
    await waitFor(
      "the pipeline followers",
      async () => {
        for (const port of followerPorts) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          conn.close();
        }
        return true;
      },
      30_000,
      100,
      exited,
    );
    procs.push(spawnServer(
      "pipeline-leader",
      [
        ...deno,
        "--role",
        "leader",
        "--port",
        String(leaderPort),
        "--followers",
        followerPorts.join(","),
        "--dir",
        dir,
      ],
      `${dir}/pipeline-leader.log`,
    ));
    await waitFor(
      "the pipeline leader",
      async () => (await httpCall("PUT", `${url}/`, "{}")).status === 204 || undefined,
      30_000,
      100,
      exited,
    );
    const { result } = await runLoadProcess({
      label: "pipeline write c=1",
      system: "raftkv",
      mode: "write",
      clients: 1,
      seconds: opts.seconds,
      warmupSeconds: opts.warmupSeconds,
      valueBytes: opts.valueBytes,
      writeUrls: [url],
      readUrls: [url],
      keyPrefix: "pipeline-",
      readRanges: [],
      client: opts.client,
      timeoutMs: 5000,
      watchPids: procs.map((p) => p.pid),
    });
    return result;
  } catch (e) {
    console.error(`pipeline floor not measured: ${e instanceof Error ? e.message : e}`);
    return undefined;
  } finally {
    for (const p of procs) await stopServer(p);
  }
}

function pct(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
}

// ---------------------------------------------------------------------------
// The benchmark

/** One row of the table: a workload at a concurrency. */
export interface RowSpec {
  label: string;
  mode: LoadMode;
  clients: number;
  /** "leader": writes to the leader; "all": writes spread over every node. Reads always go to every node. */
  writeTo: "leader" | "all";
}

/** The rows `bench:cluster` runs, in order (writes first, so that reads have keys). */
export const ROWS: RowSpec[] = [
  { label: "write c=1", mode: "write", clients: 1, writeTo: "leader" },
  { label: "write c=16", mode: "write", clients: 16, writeTo: "leader" },
  { label: "write c=64", mode: "write", clients: 64, writeTo: "leader" },
  { label: "write c=256", mode: "write", clients: 256, writeTo: "leader" },
  { label: "write all-nodes c=64", mode: "write", clients: 64, writeTo: "all" },
  { label: "read c=16", mode: "read", clients: 16, writeTo: "leader" },
  { label: "read c=64", mode: "read", clients: 64, writeTo: "leader" },
  { label: "mixed 50/50 c=64", mode: "mixed", clients: 64, writeTo: "leader" },
];

/** Options of one benchmark run against one cluster. */
export interface WorkloadOptions {
  seconds: number;
  warmupSeconds: number;
  valueBytes: number;
  client: LoadClient;
  timeoutMs: number;
  rows: RowSpec[];
}

/** A measured row. */
export interface RowResult {
  spec: RowSpec;
  result: LoadResult;
  socketsMidRun: number;
  /** CPU cores the server processes kept busy on average during the row (sum over nodes). */
  serverCores: number;
}

/**
 * Runs every row against every cluster, each row from a fresh load-generator
 * process. Rows are interleaved (row 1 on each system, then row 2, …) so that
 * a disturbance on a shared machine hits the systems alike; the clusters not
 * under load sit idle meanwhile. A cluster whose row fails is dropped from the
 * later rows, with a note.
 */
export async function runWorkloads(
  clusters: Cluster[],
  opts: WorkloadOptions,
  notes: string[],
): Promise<Map<LoadSystem, RowResult[]>> {
  const out = new Map<LoadSystem, RowResult[]>();
  const readRanges = new Map<LoadSystem, KeyRange[]>();
  const live = new Set(clusters);
  for (const c of clusters) {
    out.set(c.system, []);
    readRanges.set(c.system, []);
  }
  for (const [i, spec] of opts.rows.entries()) {
    for (const cluster of clusters) {
      if (!live.has(cluster)) continue;
      const ranges = readRanges.get(cluster.system) ?? [];
      if (spec.mode !== "write" && ranges.length === 0) {
        console.error(`skipping ${spec.label}: no keys written before it`);
        continue;
      }
      try {
        const row = await runRow(cluster, spec, i, ranges, opts);
        if (spec.mode === "write" && row.result.keysIssued > 0) {
          ranges.push({ prefix: rowPrefix(cluster, i), count: row.result.keysIssued });
        }
        out.get(cluster.system)?.push(row);
      } catch (e) {
        notes.push(
          `${cluster.system} failed in row "${spec.label}": ${e instanceof Error ? e.message : e}`,
        );
        console.error(notes[notes.length - 1]);
        live.delete(cluster);
      }
    }
  }
  return out;
}

function rowPrefix(cluster: Cluster, row: number): string {
  return `${cluster.system}-r${row}-`;
}

async function runRow(
  cluster: Cluster,
  spec: RowSpec,
  index: number,
  readRanges: KeyRange[],
  opts: WorkloadOptions,
): Promise<RowResult> {
  const all = cluster.nodes.map((n) => n.apiUrl);
  const leader = await waitFor("a leader", () => cluster.leaderUrl(), 10_000, 200);
  const cfg: LoadConfig = {
    label: `${cluster.system} ${spec.label}`,
    system: cluster.system,
    mode: spec.mode,
    clients: spec.clients,
    seconds: opts.seconds,
    warmupSeconds: opts.warmupSeconds,
    valueBytes: opts.valueBytes,
    writeUrls: spec.writeTo === "leader" ? [leader] : all,
    readUrls: all,
    keyPrefix: rowPrefix(cluster, index),
    readRanges: [...readRanges],
    client: opts.client,
    timeoutMs: opts.timeoutMs,
    watchPids: cluster.nodes.map((n) => n.proc.pid),
  };
  const { result, socketsMidRun } = await runLoadProcess(cfg);
  const serverCores = result.watchedCpuS / result.elapsedS;
  console.error(
    `${cfg.label}: ${Math.round(result.opsPerS)} ops/s p50 ${fmtMs(result.p50Ms)} ms ` +
      `p99 ${fmtMs(result.p99Ms)} ms p99.9 ${fmtMs(result.p999Ms)} ms ` +
      `non2xx ${result.non2xx} errors ${result.errors} sockets ${socketsMidRun} ` +
      `cores: servers ${serverCores.toFixed(2)} load ${
        (result.cpuS / result.elapsedS).toFixed(2)
      }` +
      (result.errorSamples.length ? ` (${result.errorSamples[0]})` : ""),
  );
  return { spec, result, socketsMidRun, serverCores };
}

/** Formats milliseconds for the table. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0);
}

function fmtRatio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) {
    return "-";
  }
  return `${(a / b).toFixed(2)}x`;
}

/** Renders rows of cells as an aligned text table (the first leftColumns left-aligned, the rest right). */
export function renderTable(header: string[], rows: string[][], leftColumns = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function systemCells(r: RowResult | undefined): string[] {
  if (r === undefined) return ["-", "-", "-", "-", "-"];
  const x = r.result;
  return [
    Math.round(x.opsPerS).toString(),
    fmtMs(x.p50Ms),
    fmtMs(x.p99Ms),
    fmtMs(x.p999Ms),
    String(x.non2xx + x.errors),
  ];
}

/** The side-by-side table of raftkv and etcd results. */
export function comparisonTable(raftkv: RowResult[], etcd: RowResult[]): string {
  const labels = [...new Set([...raftkv, ...etcd].map((r) => r.spec.label))];
  const header = ["workload"];
  const sys: [string, RowResult[]][] = [];
  if (raftkv.length) sys.push(["raftkv", raftkv]);
  if (etcd.length) sys.push(["etcd", etcd]);
  for (const [name] of sys) {
    header.push(`${name} ops/s`, "p50 ms", "p99 ms", "p99.9", "errs");
  }
  const both = raftkv.length > 0 && etcd.length > 0;
  if (both) header.push("thr r/e", "p50 r/e", "p99 r/e");
  const rows = labels.map((label) => {
    const cells = [label];
    for (const [, rs] of sys) cells.push(...systemCells(rs.find((r) => r.spec.label === label)));
    if (both) {
      const a = raftkv.find((r) => r.spec.label === label)?.result;
      const b = etcd.find((r) => r.spec.label === label)?.result;
      cells.push(
        fmtRatio(a?.opsPerS, b?.opsPerS),
        fmtRatio(a?.p50Ms, b?.p50Ms),
        fmtRatio(a?.p99Ms, b?.p99Ms),
      );
    }
    return cells;
  });
  return renderTable(header, rows);
}

/**
 * CPU per row: cores busy in the servers (sum of nodes), in the load
 * generator, and in every other process on the machine (a benchmark shares
 * the box: a high "other" means the row was disturbed), and server CPU per op.
 */
export function cpuTable(raftkv: RowResult[], etcd: RowResult[]): string {
  const header = ["cpu (2 cores total)"];
  const sys: [string, RowResult[]][] = [];
  if (raftkv.length) sys.push(["raftkv", raftkv]);
  if (etcd.length) sys.push(["etcd", etcd]);
  for (const [name] of sys) header.push(`${name} servers`, "loadgen", "other", "srv us/op");
  const labels = [...new Set([...raftkv, ...etcd].map((r) => r.spec.label))];
  const rows = labels.map((label) => {
    const cells = [label];
    for (const [, rs] of sys) {
      const r = rs.find((x) => x.spec.label === label);
      if (r === undefined) {
        cells.push("-", "-", "-", "-");
        continue;
      }
      const ops = r.result.opsPerS;
      const load = r.result.cpuS / r.result.elapsedS;
      const other = r.result.machineBusyCpuS / r.result.elapsedS - r.serverCores - load;
      cells.push(
        r.serverCores.toFixed(2),
        load.toFixed(2),
        Number.isFinite(other) ? Math.max(0, other).toFixed(2) : "-",
        ops > 0 ? Math.round((r.serverCores / ops) * 1e6).toString() : "-",
      );
    }
    return cells;
  });
  return renderTable(header, rows);
}

const USAGE = `Usage: deno task bench:cluster [-- options]
  --seconds N         measured seconds per row (default 5)
  --warmup N          unmeasured seconds before each row (default 1)
  --value-bytes N     value size (default 100)
  --systems LIST      raftkv,etcd (default both; etcd only if on PATH)
  --rows LIST         comma-separated row numbers (1-based) to run (default all)
  --client NAME       raw | fetch | node (HTTP client of the load generator; default raw)
  --raftkv-cmd CMD    command that starts one raftkv node (default: deno run -A main.ts)
  --dir DIR           where temp state dirs go (default: the system temp dir)
  --json PATH         also write every raw result as JSON to PATH
  --keep              keep the temp dirs (logs, state) and print where they are`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: stripDashes(Deno.args),
    options: {
      seconds: { type: "string", default: "5" },
      warmup: { type: "string", default: "1" },
      "value-bytes": { type: "string", default: "100" },
      systems: { type: "string", default: "raftkv,etcd" },
      rows: { type: "string" },
      client: { type: "string", default: "raw" },
      "raftkv-cmd": { type: "string" },
      dir: { type: "string" },
      json: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const seconds = Number(values.seconds);
  const warmupSeconds = Number(values.warmup);
  const valueBytes = Number(values["value-bytes"]);
  const client = values.client as LoadClient;
  if (!["raw", "fetch", "node"].includes(client)) {
    console.error(`Cannot run: --client must be raw, fetch or node, not ${values.client}`);
    return 2;
  }
  if (!(seconds > 0) || !(warmupSeconds >= 0) || !(valueBytes > 0)) {
    console.error("Cannot run: --seconds and --value-bytes must be positive numbers");
    return 2;
  }
  const systems = new Set(values.systems.split(",").map((s) => s.trim()));
  let rows = ROWS;
  if (values.rows !== undefined) {
    const pick = new Set(values.rows.split(",").map((s) => Number(s.trim())));
    rows = ROWS.filter((_, i) => pick.has(i + 1));
  }
  const raftkvCmd = values["raftkv-cmd"]?.split(/\s+/).filter(Boolean) ?? defaultRaftkvCmd();
  const wl: WorkloadOptions = {
    seconds,
    warmupSeconds,
    valueBytes,
    client,
    timeoutMs: 10_000,
    rows,
  };

  installSignalHandlers();
  const base = await makeTempDir("raftkv-bench-", values.dir);
  if (values.keep) keepTempDir(base);
  console.error(`state and logs under ${base}`);
  console.log(
    `bench:cluster  ${new Date().toISOString()}  ${Deno.build.os}/${Deno.build.arch}, ` +
      `${navigator.hardwareConcurrency} cpus, deno ${Deno.version.deno}`,
  );
  console.log(
    `workload: ${seconds}s per row after ${warmupSeconds}s warmup, ${valueBytes}-byte values, ` +
      `unique keys, closed loop, HTTP/1.1 keep-alive (${client}), load generator in its own process`,
  );

  const busy = await measureIdleBusy();
  if (busy > 0.25) {
    console.log(
      `warning: the machine was already busy (${
        busy.toFixed(2)
      } cores over 1 s before starting): ` +
        `figures will be disturbed; see the "other" column`,
    );
  }
  const fsync = await measureFsync(base, "in place");
  const fsyncAppend = await measureFsync(base, "append");
  const rtt = await measureLoopbackRtt();
  console.log(
    `floor: fdatasync of 100 B in ${base}: in place p50 ${fmtMs(fsync.p50Ms)} ms, p99 ${
      fmtMs(fsync.p99Ms)
    } ms (n=${fsync.n}); appending p50 ${fmtMs(fsyncAppend.p50Ms)} ms, p99 ${
      fmtMs(fsyncAppend.p99Ms)
    } ms; loopback TCP echo: p50 ${rtt.p50Ms.toFixed(3)} ms (n=${rtt.n})`,
  );
  const pipeline = await measurePipeline(base, {
    seconds: Math.min(seconds, 5),
    warmupSeconds,
    valueBytes,
    client,
  });
  if (pipeline !== undefined) {
    console.log(
      `pipeline floor: one client's PUTs through three Deno processes doing only HTTP, TCP to ` +
        `two followers and an fdatasync on each, answered after two of three (bench/pipeline.ts): ` +
        `p50 ${fmtMs(pipeline.p50Ms)} ms, p99 ${fmtMs(pipeline.p99Ms)} ms, ${
          Math.round(pipeline.opsPerS)
        } ops/s, ` +
        `errors ${pipeline.errors + pipeline.non2xx}`,
    );
  }

  let raftkvRows: RowResult[] = [];
  let etcdRows: RowResult[] = [];
  const notes: string[] = [];
  try {
    const clusters: Cluster[] = [];
    if (systems.has("raftkv")) {
      console.error(`starting raftkv: ${raftkvCmd.join(" ")}`);
      try {
        clusters.push(
          await startRaftkvCluster({ cmd: raftkvCmd, baseDir: base, startTimeoutMs: 60_000 }),
        );
      } catch (e) {
        notes.push(`raftkv failed to start: ${e instanceof Error ? e.message : e}`);
        console.error(notes[notes.length - 1]);
      }
    }
    if (systems.has("etcd")) {
      const bin = which("etcd");
      if (bin === undefined) {
        notes.push(
          "etcd is not on PATH: raftkv alone (apt-get install etcd-server for the comparison)",
        );
      } else {
        const version = await etcdVersion(bin);
        console.log(`etcd: ${bin} (${version}), 3 members, default durability, JSON gateway`);
        try {
          clusters.push(await startEtcdCluster({ bin, baseDir: base, startTimeoutMs: 60_000 }));
        } catch (e) {
          notes.push(`etcd failed to start: ${e instanceof Error ? e.message : e}`);
          console.error(notes[notes.length - 1]);
        }
      }
    }
    if (clusters.length > 1) {
      console.log("rows interleaved: each row runs on every system before the next row starts");
    }
    const results = await runWorkloads(clusters, wl, notes);
    raftkvRows = results.get("raftkv") ?? [];
    etcdRows = results.get("etcd") ?? [];
    for (const c of clusters) for (const n of c.nodes) await stopServer(n.proc);
  } finally {
    await cleanup();
  }

  const floor = fsync.p50Ms + rtt.p50Ms;
  const single = raftkvRows.find((r) => r.spec.clients === 1 && r.spec.mode === "write");
  const singleEtcd = etcdRows.find((r) => r.spec.clients === 1 && r.spec.mode === "write");
  const ratio = (r: RowResult | undefined) =>
    r && Number.isFinite(r.result.p50Ms) ? `${(r.result.p50Ms / floor).toFixed(2)}x` : "-";
  console.log(
    `single-client write p50 / (fsync p50 + RTT p50 = ${fmtMs(floor)} ms): raftkv ${
      ratio(single)
    }` +
      `, etcd ${ratio(singleEtcd)}`,
  );
  if (pipeline !== undefined && Number.isFinite(pipeline.p50Ms)) {
    const p50 = pipeline.p50Ms;
    const vs = (r: RowResult | undefined) =>
      r && Number.isFinite(r.result.p50Ms) ? `${(r.result.p50Ms / p50).toFixed(2)}x` : "-";
    console.log(
      `single-client write p50 / pipeline floor p50 (${fmtMs(p50)} ms, ${
        (p50 / floor).toFixed(2)
      }x the physical floor): raftkv ${vs(single)}, etcd ${vs(singleEtcd)}`,
    );
  }
  console.log("");
  console.log(comparisonTable(raftkvRows, etcdRows));
  const socketNote = [...raftkvRows, ...etcdRows]
    .map((r) => `${r.result.label}: ${r.socketsMidRun}`)
    .join(", ");
  console.log("");
  console.log(cpuTable(raftkvRows, etcdRows));
  console.log("");
  console.log(
    "ops/s counts 2xx answers only (reads: key found); latencies are of those, from the load " +
      "generator; errs = non-2xx + no answer.",
  );
  console.log(`load-generator sockets mid-run (keep-alive check): ${socketNote}`);
  for (const n of notes) console.log(`note: ${n}`);
  if (values.json !== undefined) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify(
        { fsync, fsyncAppend, rtt, raftkv: raftkvRows, etcd: etcdRows, notes },
        null,
        2,
      ),
    );
  }
  if (values.keep) console.error(`kept ${base}`);
  return raftkvRows.length + etcdRows.length > 0 ? 0 : 1;
}

/** Drops the `--` that `deno task NAME -- options` passes through. */
export function stripDashes(args: string[]): string[] {
  return args[0] === "--" ? args.slice(1) : args;
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    console.error(e instanceof Error ? e.stack ?? e.message : e);
  } finally {
    await cleanup();
  }
  Deno.exit(code);
}
