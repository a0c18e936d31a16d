/**
 * The load generator of the cluster benchmarks: a separate process so that
 * its CPU use is not charged to a server and its event loop is not shared
 * with the harness. It runs one closed-loop workload (N clients, each with
 * one request in flight) against raftkv's HTTP API or etcd's JSON gateway,
 * records every latency, and prints one JSON {@linkcode LoadResult} on
 * stdout. A progress line goes to stderr about once a second.
 *
 * Usage: `deno run --allow-net bench/load.ts --config '<LoadConfig JSON>'`
 *
 * @module
 */

import { parseArgs } from "node:util";
import http from "node:http";
import { rawRequester } from "./raw_http.ts";

/** Which server API the requests are shaped for. */
export type LoadSystem = "raftkv" | "etcd";

/** The load generator's HTTP client. */
export type LoadClient = "raw" | "fetch" | "node";

/** What each client does in its loop. */
export type LoadMode = "write" | "read" | "mixed";

/** A run of keys written earlier: `${prefix}${i}` for i in [0, count). */
export interface KeyRange {
  prefix: string;
  count: number;
}

/** One workload, as passed on the command line in `--config`. */
export interface LoadConfig {
  /** A name for the progress line and the result. */
  label: string;
  system: LoadSystem;
  mode: LoadMode;
  /** Concurrent clients, each with exactly one request in flight. */
  clients: number;
  /** Measured duration; requests still in flight at the end are awaited and counted. */
  seconds: number;
  /** Unmeasured run before the measured one (connections opened, JIT warmed). */
  warmupSeconds: number;
  /** Stop issuing after this many requests (bulk loading); `seconds` still bounds the run. */
  maxOps?: number;
  /** Retry a failed write of the same key until it succeeds (bulk loading). */
  retryWrites?: boolean;
  valueBytes: number;
  /** Base URLs (`http://127.0.0.1:PORT`) that writes go to; client i uses entry i mod n. */
  writeUrls: string[];
  /** Base URLs that reads go to; client i uses entry i mod n. */
  readUrls: string[];
  /** Prefix of the unique keys this run writes: `${keyPrefix}${n}`. */
  keyPrefix: string;
  /** Keys that reads choose from, uniformly. */
  readRanges: KeyRange[];
  /** HTTP client: a minimal HTTP/1.1 one (bench/raw_http.ts), Deno's fetch, or node:http with a keep-alive Agent. */
  client: LoadClient;
  /** Per-request timeout. */
  timeoutMs: number;
  /** Server pids whose CPU use over the measured window is reported (Linux). */
  watchPids?: number[];
}

/** What a run measured. Latencies are of successful requests only, in milliseconds. */
export interface LoadResult {
  label: string;
  /** 2xx answers (for reads: with the key found) completed in the measured window. */
  ok: number;
  /** Answers that were not 2xx, by status. */
  non2xx: number;
  /** Reads of a key that was not found (404 from raftkv, no `kvs` from etcd). Included in non2xx. */
  misses: number;
  /** Requests that got no answer: refused, reset, timed out. */
  errors: number;
  /** Seconds from the start of the measured window until the last request finished. */
  elapsedS: number;
  opsPerS: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
  /** Keys this run wrote (or tried to): `${keyPrefix}0` .. `${keyPrefix}${keysIssued - 1}`. */
  keysIssued: number;
  /** Write keys whose write failed and was not retried (capped sample). */
  failedKeys: string[];
  /** Count of answers by status code, plus "error". */
  statusCounts: Record<string, number>;
  /** A few error messages, for the log. */
  errorSamples: string[];
  /** CPU seconds (user + system) this process used from the start of the measured window to the end; NaN off Linux. */
  cpuS: number;
  /** CPU seconds the watchPids used together over the measured window; NaN off Linux. */
  watchedCpuS: number;
  /** The slowest successful requests: wall-clock start (ISO, to match server logs) and latency. */
  slowest: { at: string; ms: number }[];
  /** CPU seconds the whole machine was busy over the measured window (all processes); NaN off Linux. */
  machineBusyCpuS: number;
}

/** CPU seconds the machine has been busy (all CPUs, not idle or iowait), from /proc/stat; NaN if unreadable. */
export function machineBusyCpuSeconds(): number {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
    return (user + nice + system + irq + softirq + steal) / 100;
  } catch {
    return NaN;
  }
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat; NaN if unreadable. */
export function processCpuSeconds(pid: number | "self"): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start at state (field 3).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

interface Answer {
  status: number;
  body: string;
}

type Requester = (method: string, url: string, body: string | undefined) => Promise<Answer>;

/** Sends requests with Deno's fetch, which keeps connections alive per host. */
function fetchRequester(timeoutMs: number): Requester {
  return async (method, url, body) => {
    const init: RequestInit = { method, signal: AbortSignal.timeout(timeoutMs) };
    if (body !== undefined) {
      init.body = body;
      init.headers = { "content-type": "application/json" };
    }
    const res = await fetch(url, init);
    // The body must be read to the end for the connection to go back to the pool.
    return { status: res.status, body: await res.text() };
  };
}

/** Sends requests with node:http through one keep-alive Agent with a socket per client. */
function nodeRequester(timeoutMs: number, sockets: number): Requester {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
  return (method, url, body) =>
    new Promise<Answer>((resolve, reject) => {
      const headers: Record<string, string | number> = {};
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = new TextEncoder().encode(body).length;
      }
      const req = http.request(url, { method, agent, headers }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => text += chunk);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on("error", reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`Request timed out: ${url}`)));
      req.on("error", reject);
      req.end(body);
    });
}

/** A growable array of latencies in milliseconds. */
interface Samples {
  values: Float64Array;
  length: number;
}

function pushSample(s: Samples, v: number): void {
  if (s.length === s.values.length) {
    const grown = new Float64Array(s.values.length * 2);
    grown.set(s.values);
    s.values = grown;
  }
  s.values[s.length++] = v;
}

/**
 * The value at quantile q (0..1) of sorted values, by the nearest-rank rule;
 * NaN for no values.
 */
export function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? NaN;
}

function randomText(bytes: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  let s = "";
  for (let i = 0; i < bytes; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return s;
}

function b64(text: string): string {
  return btoa(text);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function pickReadKey(ranges: KeyRange[], total: number): string {
  let i = Math.floor(Math.random() * total);
  for (const r of ranges) {
    if (i < r.count) return `${r.prefix}${i}`;
    i -= r.count;
  }
  const last = ranges[ranges.length - 1];
  return last ? `${last.prefix}0` : "missing";
}

/** Runs one workload and returns what it measured. */
export async function runLoad(cfg: LoadConfig): Promise<LoadResult> {
  const request = cfg.client === "node"
    ? nodeRequester(cfg.timeoutMs, cfg.clients)
    : cfg.client === "raw"
    ? rawRequester(cfg.timeoutMs)
    : fetchRequester(cfg.timeoutMs);
  const value = randomText(cfg.valueBytes);
  const valueB64 = b64(value);
  const readTotal = cfg.readRanges.reduce((a, r) => a + r.count, 0);
  if (cfg.mode !== "write" && readTotal === 0) {
    throw new RangeError("Cannot run reads: no keys were written before (readRanges is empty)");
  }
  const samples: Samples = { values: new Float64Array(1 << 16), length: 0 };
  const statusCounts: Record<string, number> = {};
  const errorSamples: string[] = [];
  const failedKeys: string[] = [];
  let ok = 0, non2xx = 0, misses = 0, errors = 0, issued = 0, okAll = 0, keysIssued = 0;
  const start = performance.now();
  const measureFrom = start + cfg.warmupSeconds * 1000;
  const stopAt = measureFrom + cfg.seconds * 1000;
  let lastDone = measureFrom;

  const slowest: { t0: number; ms: number }[] = [];
  const noteSlow = (t0: number, ms: number) => {
    if (slowest.length >= 10 && ms <= (slowest[slowest.length - 1]?.ms ?? 0)) return;
    slowest.push({ t0, ms });
    slowest.sort((a, b) => b.ms - a.ms);
    if (slowest.length > 10) slowest.pop();
  };
  const count = (key: string) => statusCounts[key] = (statusCounts[key] ?? 0) + 1;

  async function write(base: string, key: string): Promise<Answer> {
    if (cfg.system === "etcd") {
      return await request(
        "POST",
        `${base}/v3/kv/put`,
        `{"key":"${b64(key)}","value":"${valueB64}"}`,
      );
    }
    return await request("PUT", `${base}/`, JSON.stringify({ Key: key, Value: value }));
  }

  async function read(base: string, key: string): Promise<{ a: Answer; found: boolean }> {
    if (cfg.system === "etcd") {
      const a = await request("POST", `${base}/v3/kv/range`, `{"key":"${b64(key)}"}`);
      return { a, found: a.status < 300 && a.body.includes('"kvs"') };
    }
    const a = await request("GET", `${base}/${encodeURIComponent(key)}`, undefined);
    return { a, found: a.status === 200 };
  }

  async function client(id: number): Promise<void> {
    const writeBase = cfg.writeUrls[id % cfg.writeUrls.length] ?? "";
    const readBase = cfg.readUrls[id % cfg.readUrls.length] ?? "";
    let retryKey: string | undefined;
    // Bounded by time (stopAt) and, when set, by count (maxOps).
    while (performance.now() < stopAt && (cfg.maxOps === undefined || issued < cfg.maxOps)) {
      const isWrite = cfg.mode === "write" || (cfg.mode === "mixed" && Math.random() < 0.5) ||
        retryKey !== undefined;
      let key: string;
      if (!isWrite) key = pickReadKey(cfg.readRanges, readTotal);
      else if (retryKey !== undefined) key = retryKey;
      else key = `${cfg.keyPrefix}${keysIssued++}`;
      if (retryKey === undefined) issued++;
      retryKey = undefined;
      const t0 = performance.now();
      let good = false;
      let backoffMs = 0;
      try {
        let status: number;
        if (isWrite) {
          const a = await write(writeBase, key);
          status = a.status;
          good = status >= 200 && status < 300;
        } else {
          const { a, found } = await read(readBase, key);
          status = a.status;
          good = found;
          if (!found && status < 500) misses++;
        }
        const t1 = performance.now();
        count(String(status));
        if (good) {
          okAll++;
          if (t0 >= measureFrom) {
            ok++;
            pushSample(samples, t1 - t0);
            noteSlow(t0, t1 - t0);
          }
        } else {
          if (t0 >= measureFrom) non2xx++;
          if (status >= 500 || status === 429) backoffMs = 10;
        }
        if (t1 > lastDone) lastDone = t1;
      } catch (e) {
        count("error");
        if (t0 >= measureFrom) errors++;
        if (errorSamples.length < 5) errorSamples.push(String(e instanceof Error ? e.message : e));
        backoffMs = 20;
        lastDone = Math.max(lastDone, performance.now());
      }
      if (isWrite && !good) {
        if (cfg.retryWrites) retryKey = key;
        else if (failedKeys.length < 1000) failedKeys.push(key);
      }
      if (backoffMs > 0) await sleep(backoffMs);
    }
  }

  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let lastOk = 0;
  let lastT = start;
  let cpuAtMeasure = NaN;
  let watchedAtMeasure = NaN;
  const watched = () => (cfg.watchPids ?? []).reduce((a, p) => a + processCpuSeconds(p), 0);
  let machineAtMeasure = NaN;
  const cpuTimer = setTimeout(() => {
    machineAtMeasure = machineBusyCpuSeconds();
    cpuAtMeasure = processCpuSeconds("self");
    watchedAtMeasure = watched();
  }, cfg.warmupSeconds * 1000);
  const progress = setInterval(() => {
    const now = performance.now();
    const rate = (okAll - lastOk) / ((now - lastT) / 1000);
    lastOk = okAll;
    lastT = now;
    const phase = now < measureFrom ? "warmup" : "run";
    const line = `[${cfg.label}] ${phase} ${((now - start) / 1000).toFixed(1)}s ok=${okAll} ` +
      `${Math.round(rate)} ops/s non2xx=${non2xx} errors=${errors}`;
    Deno.stderr.writeSync(enc.encode(tty ? `\r\x1b[K${line}` : `${line}\n`));
  }, 1000);
  try {
    await Promise.all(Array.from({ length: cfg.clients }, (_, i) => client(i)));
  } finally {
    clearInterval(progress);
    clearTimeout(cpuTimer);
    if (tty) Deno.stderr.writeSync(enc.encode("\r\x1b[K"));
  }

  const cpuS = processCpuSeconds("self") - cpuAtMeasure;
  const watchedCpuS = watched() - watchedAtMeasure;
  const machineBusyCpuS = machineBusyCpuSeconds() - machineAtMeasure;
  const sorted = samples.values.slice(0, samples.length).sort();
  const elapsedS = Math.max(1e-9, (lastDone - measureFrom) / 1000);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    label: cfg.label,
    ok,
    non2xx,
    misses,
    errors,
    elapsedS,
    opsPerS: ok / elapsedS,
    p50Ms: quantile(sorted, 0.5),
    p90Ms: quantile(sorted, 0.9),
    p99Ms: quantile(sorted, 0.99),
    p999Ms: quantile(sorted, 0.999),
    maxMs: sorted.length ? sorted[sorted.length - 1] ?? NaN : NaN,
    meanMs: sorted.length ? sum / sorted.length : NaN,
    keysIssued,
    failedKeys,
    statusCounts,
    errorSamples,
    cpuS,
    watchedCpuS,
    machineBusyCpuS,
    slowest: slowest.map((x) => ({
      at: new Date(performance.timeOrigin + x.t0).toISOString(),
      ms: Math.round(x.ms * 10) / 10,
    })),
  };
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { config: { type: "string" } } });
  if (values.config === undefined) {
    console.error("Usage: load.ts --config '<LoadConfig JSON>'");
    Deno.exit(2);
  }
  const cfg = JSON.parse(values.config) as LoadConfig;
  const result = await runLoad(cfg);
  console.log(JSON.stringify(result));
}
