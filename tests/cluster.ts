/**
 * `deno task cluster [-- --dir DIR --base-raft PORT --base-api PORT]`: three
 * local raftkv nodes like the tutorial's — raft ports 8080-8082, API ports
 * 9090-9092, state under DIR/1, DIR/2 and DIR/3 (default `./cluster-data`).
 * Node 1 starts first (a new cluster, or its existing state); nodes 2 and 3
 * join it. Every log line is prefixed with its node's name (`[n1] ...`);
 * once all three are ready the curl commands to try are printed. Ctrl-C (or
 * SIGTERM) is forwarded to the nodes, which hand over and exit; a second one
 * makes them exit at once.
 *
 * Works from any directory: main.ts is found next to this file.
 *
 * @module
 */

import { parseArgs } from "node:util";

const MAIN_PATH = new URL("../main.ts", import.meta.url).pathname;
const NODES = 3;
/** How long a node may take to say `raftkv ready`. */
const READY_TIMEOUT_MS = 60_000;
/** How long to wait for all three to be listed as voters before printing the commands. */
const VOTERS_TIMEOUT_MS = 30_000;

const USAGE = `Usage: deno task cluster [-- options]

Starts three local raftkv nodes (raft 127.0.0.1:8080-8082, API 9090-9092);
Ctrl-C stops all three.

Options:
  --dir DIR         state directories DIR/1, DIR/2, DIR/3 (default: ./cluster-data)
  --base-raft PORT  raft port of node 1; nodes 2 and 3 take the next two (default: 8080)
  --base-api PORT   API port of node 1; nodes 2 and 3 take the next two (default: 9090)
  -h, --help        print this help`;

/** The parsed command line of the cluster launcher. */
export interface ClusterFlags {
  dir: string;
  baseRaft: number;
  baseApi: number;
}

/** Parses the launcher's flags; throws a `TypeError` with a one-line message on bad ones. */
export function parseClusterFlags(args: string[]): ClusterFlags | { help: true } {
  const { values } = parseArgs({
    args: args[0] === "--" ? args.slice(1) : args,
    options: {
      dir: { type: "string", default: "./cluster-data" },
      "base-raft": { type: "string", default: "8080" },
      "base-api": { type: "string", default: "9090" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help === true) return { help: true };
  const port = (name: string, value: string): number => {
    const n = Number(value);
    if (!/^[0-9]+$/.test(value) || n < 1 || n > 65535 - (NODES - 1)) {
      throw new TypeError(`Invalid --${name} ${JSON.stringify(value)}: want a port 1-65533`);
    }
    return n;
  };
  const flags = {
    dir: values.dir,
    baseRaft: port("base-raft", values["base-raft"]),
    baseApi: port("base-api", values["base-api"]),
  };
  const raft = [flags.baseRaft, flags.baseRaft + NODES - 1];
  const api = [flags.baseApi, flags.baseApi + NODES - 1];
  if (raft[0]! <= api[1]! && api[0]! <= raft[1]!) {
    throw new TypeError("Invalid ports: the raft and API port ranges overlap");
  }
  return flags;
}

interface RunningNode {
  name: string;
  child: Deno.ChildProcess;
  ready: Promise<boolean>;
  status: Promise<Deno.CommandStatus>;
  /** Resolves once both output streams are drained. */
  drained: Promise<void>;
}

/** Copies `stream` to `out` line by line with `prefix`; calls `onLine` for each line. */
async function relay(
  stream: ReadableStream<Uint8Array>,
  out: { writeSync(p: Uint8Array): number },
  prefix: string,
  onLine: (line: string) => void,
): Promise<void> {
  const encoder = new TextEncoder();
  const write = (line: string) => {
    const bytes = encoder.encode(`${prefix}${line}\n`);
    for (let off = 0; off < bytes.length;) off += out.writeSync(bytes.subarray(off));
  };
  let rest = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      const lines = rest.split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        write(line);
        onLine(line);
      }
    }
  } catch {
    // The node went away mid-read.
  }
  if (rest !== "") write(rest);
}

function startNode(n: number, flags: ClusterFlags, dir: string): RunningNode {
  const name = `n${n}`;
  const args = [
    "run",
    "-A",
    MAIN_PATH,
    "--state-dir",
    `${dir}/${n}`,
    "--raft",
    `127.0.0.1:${flags.baseRaft + n - 1}`,
    "--api",
    `127.0.0.1:${flags.baseApi + n - 1}`,
  ];
  if (n > 1) args.push("--join", `127.0.0.1:${flags.baseRaft}`);
  // Its own process group: a terminal's Ctrl-C reaches only us, and we forward it once.
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  let markReady!: (ok: boolean) => void;
  const ready = new Promise<boolean>((resolve) => markReady = resolve);
  const onLine = (line: string) => {
    if (line.includes("raftkv ready")) markReady(true);
  };
  const prefix = `[${name}] `;
  const drained = Promise.all([
    relay(child.stdout, Deno.stdout, prefix, onLine),
    relay(child.stderr, Deno.stderr, prefix, onLine),
  ]).then(() => {});
  const status = child.status;
  void status.then(() => markReady(false));
  return { name, child, ready, status, drained };
}

function signal(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch {
    // Already exited.
  }
}

function say(text: string): void {
  console.log(`[cluster] ${text}`);
}

/** Polls node 1's member list until it shows three voters, or gives up quietly. */
async function waitForVoters(flags: ClusterFlags, stopping: () => boolean): Promise<boolean> {
  const deadline = Date.now() + VOTERS_TIMEOUT_MS;
  while (Date.now() < deadline && !stopping()) {
    try {
      const response = await fetch(`http://127.0.0.1:${flags.baseApi}/mgmt/nodes`, {
        signal: AbortSignal.timeout(2000),
      });
      const members = response.ok ? await response.json() as { type?: string }[] : [];
      if (!response.ok) await response.body?.cancel();
      if (members.filter((m) => m.type === "voter").length === NODES) return true;
    } catch {
      // Not answering yet.
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

function curlCommands(flags: ClusterFlags): string {
  const api = (n: number) => `http://127.0.0.1:${flags.baseApi + n - 1}`;
  return [
    "All three nodes are ready. Try:",
    `  curl -X PUT -d '{"Key":"hello","Value":"world"}' ${api(1)}/`,
    `  curl ${api(2)}/hello`,
    `  curl ${api(3)}/hello`,
    `  curl ${api(1)}/mgmt/nodes`,
    `  curl -X DELETE ${api(1)}/hello`,
    "Press Ctrl-C to stop all three.",
  ].join("\n");
}

/** Runs the three nodes until they have all exited; returns the exit code. */
export async function runCluster(flags: ClusterFlags): Promise<number> {
  const dir = flags.dir.startsWith("/") ? flags.dir : `${Deno.cwd()}/${flags.dir}`;
  await Deno.mkdir(dir, { recursive: true });
  const nodes: RunningNode[] = [];
  let signals = 0;
  let firstSignalAt = 0;
  const onSignal = (sig: Deno.Signal) => {
    // One Ctrl-C can arrive twice: from the terminal and forwarded by `deno task`.
    if (signals > 0 && Date.now() - firstSignalAt < 1000) return;
    if (signals === 0) firstSignalAt = Date.now();
    signals++;
    say(
      signals === 1
        ? `${sig}: stopping the nodes (again to stop them at once)`
        : `${sig}: stopping the nodes at once`,
    );
    for (const node of nodes) signal(node.child, signals === 1 ? "SIGTERM" : "SIGINT");
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGINT", () => onSignal("SIGINT")],
    ["SIGTERM", () => onSignal("SIGTERM")],
  ];
  for (const [sig, fn] of handlers) Deno.addSignalListener(sig, fn);
  let failed = false;
  try {
    say(`state in ${dir}/{1,2,3}; main.ts at ${MAIN_PATH}`);
    for (let n = 1; n <= NODES && signals === 0; n++) {
      const node = startNode(n, flags, dir);
      nodes.push(node);
      // Node 1 first: the others join through it. Then 2 before 3, for a calm log.
      const timer = new Promise<false>((r) => setTimeout(() => r(false), READY_TIMEOUT_MS));
      const ok = await Promise.race([node.ready, timer]);
      if (!ok && signals === 0) {
        say(`${node.name} did not become ready; stopping`);
        failed = true;
        onSignal("SIGTERM");
        break;
      }
    }
    if (!failed && signals === 0 && await waitForVoters(flags, () => signals > 0)) {
      console.log(curlCommands(flags));
    }
    // Report nodes that exit on their own (removed, failed) and run until all have.
    const exits = nodes.map(async (node) => {
      const status = await node.status;
      await node.drained;
      if (status.code !== 0) failed = true;
      say(`${node.name} exited with ${status.signal ?? `code ${status.code}`}`);
    });
    await Promise.all(exits);
  } finally {
    for (const node of nodes) signal(node.child, "SIGKILL");
    for (const [sig, fn] of handlers) Deno.removeSignalListener(sig, fn);
  }
  return failed ? 1 : 0;
}

if (import.meta.main) {
  let flags: ReturnType<typeof parseClusterFlags>;
  try {
    flags = parseClusterFlags(Deno.args);
  } catch (error) {
    console.error(`cluster: ${error instanceof Error ? error.message.split("\n")[0] : error}`);
    console.error("Try 'deno task cluster -- --help' for more information.");
    Deno.exit(2);
  }
  if ("help" in flags) {
    console.log(USAGE);
    Deno.exit(0);
  }
  Deno.exit(await runCluster(flags));
}
