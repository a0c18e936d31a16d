/**
 * raftkv: a Raft-replicated key-value server. This module is the command
 * line: it parses flags, opens the node, serves HTTP and handles signals.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createApp, type LogFunction } from "./http/app.ts";
import { dialAddress, type NodeOptions, RaftNode } from "./raft/node.ts";

/** The program's version, printed by `--version`. */
export const VERSION = "0.1.0";

/** The text `--help` prints. */
export const USAGE = `raftkv ${VERSION}: a Raft-replicated key-value server

Usage:
  raftkv --state-dir DIR --raft HOST:PORT --api HOST:PORT [--join HOST:PORT]
  raftkv -state_dir=DIR -raft :8080 -api :9090 [-join :8080]

Flags:
  --state-dir DIR             where the log and snapshots live (required)
  --raft HOST:PORT            peer address to listen on; :PORT listens on all
                              interfaces (required; port 0 lets the OS pick)
  --api HOST:PORT             HTTP API address to listen on (required)
  --join HOST:PORT            any member's raft address: join its cluster when
                              the state directory is empty; ignored otherwise
  --advertise-raft HOST:PORT  raft address peers dial (default: --raft, with
                              localhost for an empty host)
  --advertise-api HOST:PORT   API address shown in /mgmt/nodes (default: --api)
  --log-level LEVEL           debug, info, warn or error (default: info)
  --heartbeat-interval MS     leader heartbeat period (default: 100)
  --election-timeout MS       time without a leader before an election; a
                              multiple of the heartbeat interval (default: 1000)
  --snapshot-entries N        take a snapshot after N applied entries (once
                              the log since the last one is also half its
                              size) and compact the log (default: 100000)
  -h, --help                  print this help and exit
  --version                   print the version and exit

Every flag may be spelled --flag VALUE, --flag=VALUE, -flag VALUE or
-flag=VALUE, with - or _ between words. Without --join and without state,
the node starts a new one-member cluster.

HTTP API:
  PUT / or POST / {"Key":"k","Value":"v"}   204 once committed
  GET /KEY                                  200 the value and a newline; 404
  DELETE /KEY                               204; 404 if absent
  GET /mgmt/nodes                           the members as JSON
  DELETE /mgmt/nodes/ID                     204 once the removal is committed
  GET /mgmt/status, GET /mgmt/health

Exit status: 0 on a clean shutdown, 2 on bad flags.`;

/** The log levels `--log-level` accepts. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** The parsed command line of a node. Addresses are as given: `HOST:PORT` or `:PORT`. */
export interface Flags {
  stateDir: string;
  raft: string;
  api: string;
  join?: string;
  advertiseRaft?: string;
  advertiseApi?: string;
  logLevel?: LogLevel;
  heartbeatIntervalMs?: number;
  electionTimeoutMs?: number;
  snapshotEntries?: number;
}

/** A bad command line; the message is one line, for `raftkv: <message>`. */
export class FlagError extends Error {
  override name = "FlagError";
}

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** The flags, by their canonical (`--kebab-case`) names. */
const OPTIONS = {
  "state-dir": { type: "string" },
  "raft": { type: "string" },
  "api": { type: "string" },
  "join": { type: "string" },
  "advertise-raft": { type: "string" },
  "advertise-api": { type: "string" },
  "log-level": { type: "string" },
  "heartbeat-interval": { type: "string" },
  "election-timeout": { type: "string" },
  "snapshot-entries": { type: "string" },
  "help": { type: "boolean", short: "h" },
  "version": { type: "boolean" },
} as const;

type OptionName = keyof typeof OPTIONS;

function isOptionName(name: string): name is OptionName {
  return Object.hasOwn(OPTIONS, name);
}

/**
 * Parses a node's command line. Accepts Go-style single-dash long flags and
 * `_` for `-` (`-state_dir=DIR`, `-raft :8080`) as well as `--state-dir DIR`.
 * Throws a {@linkcode FlagError} with a one-line message on an unknown,
 * repeated, malformed or missing flag, or a stray argument.
 *
 * @example
 * ```ts
 * parseFlags(["-state_dir=/tmp/n1", "-raft", ":8080", "-api", ":9090"]);
 * // { stateDir: "/tmp/n1", raft: ":8080", api: ":9090" }
 * ```
 */
export function parseFlags(args: string[]): Flags | { help: true } | { version: true } {
  // `deno task start -- --raft ...` passes the `--` through: a leading one means nothing.
  if (args[0] === "--") args = args.slice(1);
  const normalized = normalizeArgs(args);
  let parsed;
  try {
    parsed = parseArgs({
      args: normalized,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
      tokens: true,
    });
  } catch (error) {
    // Only our normalization's leftovers reach here (e.g. arguments after `--`).
    const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new FlagError(message ?? "Cannot parse the flags");
  }
  const seen = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== "option") continue;
    if (seen.has(token.name)) throw new FlagError(`Flag given more than once: --${token.name}`);
    seen.add(token.name);
  }
  const values = parsed.values;
  if (values.help === true) return { help: true };
  if (values.version === true) return { version: true };

  const stateDir = values["state-dir"];
  if (stateDir === undefined) throw new FlagError("Missing required flag: --state-dir");
  if (stateDir === "") throw new FlagError("Invalid --state-dir: it is empty");
  const raft = required(values.raft, "raft");
  const api = required(values.api, "api");
  checkAddress(raft, "raft", { portZero: true });
  checkAddress(api, "api", { portZero: true });
  const flags: Flags = { stateDir, raft, api };
  if (values.join !== undefined) flags.join = checkAddress(values.join, "join");
  const advertiseRaft = values["advertise-raft"];
  if (advertiseRaft !== undefined) {
    flags.advertiseRaft = checkAddress(advertiseRaft, "advertise-raft");
  }
  const advertiseApi = values["advertise-api"];
  if (advertiseApi !== undefined) flags.advertiseApi = checkAddress(advertiseApi, "advertise-api");
  const logLevel = values["log-level"];
  if (logLevel !== undefined) {
    if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
      throw new FlagError(
        `Invalid --log-level ${JSON.stringify(logLevel)}: want debug, info, warn or error`,
      );
    }
    flags.logLevel = logLevel as LogLevel;
  }
  const heartbeat = positiveInteger(values["heartbeat-interval"], "heartbeat-interval", 1, 60_000);
  if (heartbeat !== undefined) flags.heartbeatIntervalMs = heartbeat;
  const election = positiveInteger(values["election-timeout"], "election-timeout", 1, 600_000);
  if (election !== undefined) flags.electionTimeoutMs = election;
  const hb = flags.heartbeatIntervalMs ?? 100;
  if ((flags.electionTimeoutMs ?? 1000) < 2 * hb) {
    throw new FlagError(
      "Invalid --election-timeout: it must be at least twice --heartbeat-interval",
    );
  }
  const snapshots = positiveInteger(values["snapshot-entries"], "snapshot-entries", 1, 2 ** 40);
  if (snapshots !== undefined) flags.snapshotEntries = snapshots;
  return flags;
}

/**
 * Splits `HOST:PORT`, `:PORT` or `[IPV6]:PORT` into host (`""` for all
 * interfaces) and port. Throws a `SyntaxError` if `address` is not one.
 *
 * @example
 * ```ts
 * parseAddress(":8080"); // { host: "", port: 8080 }
 * ```
 */
export function parseAddress(address: string): { host: string; port: number } {
  const parsed = splitAddress(address);
  if (typeof parsed === "string") {
    throw new SyntaxError(`Cannot parse address ${JSON.stringify(address)}: ${parsed}`);
  }
  return parsed;
}

/** The host and port of `address`, or why it is not an address. */
function splitAddress(address: string): { host: string; port: number } | string {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)?):([0-9]+)$/
    .exec(address);
  if (match === null) return "want HOST:PORT or :PORT";
  const port = Number(match[3]);
  if (port > 65535) return "the port must be 0-65535";
  return { host: match[1] ?? match[2] ?? "", port };
}

/**
 * Rewrites every flag to `--canonical-name[=value]` so that `parseArgs`
 * (which would read `-state_dir=x` as a cluster of short flags) sees one
 * spelling, and joins each string flag with its value so that a missing value
 * is reported here, in one line.
 */
function normalizeArgs(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      throw new FlagError(`Unexpected argument: ${arg}`);
    }
    if (arg === "-h") {
      out.push(arg);
      continue;
    }
    const body = arg.slice(arg.startsWith("--") ? 2 : 1);
    const eq = body.indexOf("=");
    const spelled = eq === -1 ? arg : arg.slice(0, arg.length - body.length + eq);
    const name = (eq === -1 ? body : body.slice(0, eq)).replaceAll("_", "-");
    if (!isOptionName(name)) throw new FlagError(`Unknown flag: ${spelled}`);
    if (OPTIONS[name].type === "boolean") {
      if (eq !== -1) throw new FlagError(`Flag takes no value: ${arg}`);
      out.push(`--${name}`);
    } else if (eq !== -1) {
      out.push(`--${name}=${body.slice(eq + 1)}`);
    } else {
      const value = args[i + 1];
      if (value === undefined || (value.startsWith("-") && value.length > 1)) {
        throw new FlagError(`Flag needs a value: ${spelled}`);
      }
      out.push(`--${name}=${value}`);
      i++;
    }
  }
  return out;
}

function positiveInteger(
  value: string | undefined,
  name: OptionName,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < min || n > max) {
    throw new FlagError(
      `Invalid --${name} ${JSON.stringify(value)}: want a whole number ${min}-${max}`,
    );
  }
  return n;
}

function required(value: string | undefined, name: OptionName): string {
  if (value === undefined) throw new FlagError(`Missing required flag: --${name}`);
  return value;
}

function checkAddress(
  address: string,
  name: OptionName,
  options: { portZero?: boolean } = {},
): string {
  const parsed = splitAddress(address);
  const problem = typeof parsed === "string"
    ? parsed
    : parsed.port === 0 && options.portZero !== true
    ? "port 0 cannot be dialled"
    : undefined;
  if (problem !== undefined) {
    throw new FlagError(`Invalid --${name} ${JSON.stringify(address)}: ${problem}`);
  }
  return address;
}

/** A log function that writes one line per event to stderr: time, level, message, fields. */
export function createLogger(level: LogLevel = "info", prefix = ""): LogFunction {
  const min = LOG_LEVELS.indexOf(level);
  return (message, fields) => {
    const lvl = levelOf(message);
    if (LOG_LEVELS.indexOf(lvl) < min) return;
    const json = Object.keys(fields).length > 0 ? " " + JSON.stringify(fields) : "";
    console.error(`${new Date().toISOString()} ${lvl.padEnd(5)} ${prefix}${message}${json}`);
  };
}

/** Chatty protocol lines are debug; failures are warnings or errors; the rest is info. */
function levelOf(message: string): LogLevel {
  if (/^(fatal|cannot|refused)|: (cut|closed connection|peer refused)/i.test(message)) {
    return message.startsWith("fatal") ? "error" : "warn";
  }
  if (/^raft: (saw a higher term|ignored|applied membership|sending snapshot)/.test(message)) {
    return "debug";
  }
  return "info";
}

/** Runs a node until it is stopped; returns the exit code. */
export async function run(flags: Flags): Promise<number> {
  const log = createLogger(flags.logLevel);
  const api = parseAddress(flags.api);
  let node: RaftNode | undefined;
  const notReady = () =>
    Response.json({ error: "The node is starting; retry shortly" }, {
      status: 503,
      headers: { "Retry-After": "1" },
    });
  // Set once the node is open; until then every request gets a 503.
  const ready: { app?: { fetch: (req: Request) => Response | Promise<Response> } } = {};
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: api.host === "" ? "0.0.0.0" : api.host,
      port: api.port,
      onListen: () => {},
    }, (req) => ready.app ? ready.app.fetch(req) : notReady());
  } catch (error) {
    console.error(`raftkv: Cannot listen for HTTP on ${flags.api}: ${errorMessage(error)}`);
    return 1;
  }
  const apiAddr = flags.advertiseApi ?? dialAddress(api.host, server.addr.port);
  try {
    const options: NodeOptions = {
      stateDir: flags.stateDir,
      raftListen: flags.raft,
      apiAdvertise: apiAddr,
      log,
    };
    if (flags.join !== undefined) options.join = flags.join;
    if (flags.advertiseRaft !== undefined) options.raftAdvertise = flags.advertiseRaft;
    if (flags.snapshotEntries !== undefined) options.snapshotEntries = flags.snapshotEntries;
    // The core counts ticks: one tick per heartbeat, the election timeout in ticks.
    const tick = flags.heartbeatIntervalMs ?? 100;
    options.tickIntervalMs = tick;
    options.heartbeatTicks = 1;
    options.electionTicks = Math.max(2, Math.round((flags.electionTimeoutMs ?? 1000) / tick));
    node = await RaftNode.open(options);
  } catch (error) {
    await server.shutdown();
    console.error(`raftkv: Cannot start the node: ${errorMessage(error)}`);
    return 1;
  }
  ready.app = createApp({ service: node, logError: log });
  log("raftkv ready", {
    id: node.id,
    role: node.status().role,
    raft: node.raftAddr,
    api: node.apiAddr,
    stateDir: flags.stateDir,
  });

  let signals = 0;
  const onSignal = (name: string) => {
    signals++;
    if (signals > 1) {
      log("second signal: exiting at once", { signal: name });
      Deno.exit(1);
    }
    log("shutting down", { signal: name });
    void node!.close();
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGINT", () => onSignal("SIGINT")],
    ["SIGTERM", () => onSignal("SIGTERM")],
  ];
  for (const [sig, fn] of handlers) Deno.addSignalListener(sig, fn);

  const stop = await node.stopped;
  for (const [sig, fn] of handlers) Deno.removeSignalListener(sig, fn);
  // Let answers in flight (such as the one to our own removal) go out.
  await Promise.race([server.shutdown(), new Promise((r) => setTimeout(r, 2000))]);
  switch (stop.reason) {
    case "removed":
      log("exiting: this node was removed from the cluster", { id: node.id });
      return 0;
    case "closed":
      log("exiting", { id: node.id });
      return 0;
    case "failed":
      console.error(
        `raftkv: The node stopped on an error: ${stop.error?.message}. ` +
          "Fix the cause and restart it; its state directory is kept.",
      );
      return 1;
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

if (import.meta.main) {
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags(Deno.args);
  } catch (error) {
    if (!(error instanceof FlagError)) throw error;
    console.error(`raftkv: ${error.message}`);
    console.error("Try 'raftkv --help' for more information.");
    Deno.exit(2);
  }
  if ("help" in flags) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if ("version" in flags) {
    console.log(`raftkv ${VERSION}`);
    Deno.exit(0);
  }
  Deno.exit(await run(flags));
}
