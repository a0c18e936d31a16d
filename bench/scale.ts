/**
 * `deno task bench:scale [-- options]`: a three-node raftkv loaded with
 * 1,000,000 keys of 100-byte values, then: resident memory per node, snapshot
 * size on disk, the time to restart a follower, write throughput at 64
 * clients with the keys loaded against an empty store's (measured first, on
 * a cluster of its own), and the time for a new fourth node to join and
 * catch up.
 *
 * `--system etcd` runs the same steps against a three-member etcd, for
 * comparison (and to test this harness without raftkv).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  cleanup,
  type Cluster,
  type ClusterNode,
  defaultRaftkvCmd,
  etcdVersion,
  fmtMs,
  installSignalHandlers,
  isRunning,
  keepTempDir,
  makeTempDir,
  readMemory,
  renderTable,
  runLoadProcess,
  startEtcdCluster,
  startRaftkvCluster,
  stopServer,
  stripDashes,
  waitFor,
  which,
} from "./cluster.ts";
import type { LoadConfig, LoadResult } from "./load.ts";

/** Bytes of the files under dir whose name matches, recursively (bounded depth). */
export async function dirBytes(dir: string, match: (name: string) => boolean): Promise<number> {
  let total = 0;
  const walk = async (d: string, depth: number) => {
    if (depth > 8) return;
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await walk(p, depth + 1);
      else if (e.isFile && match(e.name)) {
        try {
          total += (await Deno.stat(p)).size;
        } catch { /* removed meanwhile */ }
      }
    }
  };
  try {
    await walk(dir, 0);
  } catch { /* dir gone */ }
  return total;
}

/** The *.snap files directly in dir: their count, total bytes, and the bytes of the newest (by name). */
export async function snapFiles(
  dir: string,
): Promise<{ count: number; totalBytes: number; newestBytes: number }> {
  const snaps: { name: string; size: number }[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".snap")) {
        snaps.push({ name: e.name, size: (await Deno.stat(`${dir}/${e.name}`)).size });
      }
    }
  } catch { /* dir gone */ }
  snaps.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    count: snaps.length,
    totalBytes: snaps.reduce((a, x) => a + x.size, 0),
    newestBytes: snaps[snaps.length - 1]?.size ?? 0,
  };
}

/** Formats bytes as MiB (KiB below 1 MiB). */
export function fmtMiB(bytes: number): string {
  if (!Number.isFinite(bytes)) return "-";
  if (bytes < 1048576) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

function fmtS(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

async function throughputRow(
  cluster: Cluster,
  label: string,
  prefix: string,
  seconds: number,
  valueBytes: number,
): Promise<LoadResult> {
  const leader = await waitFor("a leader", () => cluster.leaderUrl(), 10_000, 200);
  const cfg: LoadConfig = {
    label,
    system: cluster.system,
    mode: "write",
    clients: 64,
    seconds,
    warmupSeconds: 1,
    valueBytes,
    writeUrls: [leader],
    readUrls: [leader],
    keyPrefix: prefix,
    readRanges: [],
    client: "raw",
    timeoutMs: 10_000,
    watchPids: cluster.nodes.map((n) => n.proc.pid),
  };
  return (await runLoadProcess(cfg)).result;
}

/** Waits until node answers GET key with value; returns ms since its process was started. */
async function timeUntilRead(
  cluster: Cluster,
  node: ClusterNode,
  key: string,
  value: string,
  timeoutMs: number,
): Promise<number> {
  await waitFor(
    `${node.name} to answer GET ${key}`,
    async () => {
      try {
        return (await cluster.get(node.apiUrl, key)) === value ? true : undefined;
      } catch {
        return undefined;
      }
    },
    timeoutMs,
    50,
    () => isRunning(node.proc) ? undefined : `${node.name} exited; see ${node.proc.logPath}`,
  );
  return performance.now() - node.proc.startedAt;
}

const USAGE = `Usage: deno task bench:scale [-- options]
  --keys N            keys to load (default 1000000)
  --value-bytes N     value size (default 100)
  --load-clients N    concurrency of the bulk load (default 256)
  --seconds N         measured seconds of each 64-client write run (default 20)
  --system NAME       raftkv (default) | etcd
  --raftkv-cmd CMD    command that starts one raftkv node (default: deno run -A main.ts)
  --dir DIR           where temp state dirs go (default: the system temp dir)
  --load-timeout N    seconds allowed for the bulk load (default 1800)
  --keep              keep the temp dirs (logs, state)`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: stripDashes(Deno.args),
    options: {
      keys: { type: "string", default: "1000000" },
      "value-bytes": { type: "string", default: "100" },
      "load-clients": { type: "string", default: "256" },
      seconds: { type: "string", default: "20" },
      system: { type: "string", default: "raftkv" },
      "raftkv-cmd": { type: "string" },
      dir: { type: "string" },
      "load-timeout": { type: "string", default: "1800" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const keys = Math.floor(Number(values.keys));
  const valueBytes = Number(values["value-bytes"]);
  const loadClients = Number(values["load-clients"]);
  const seconds = Number(values.seconds);
  const loadTimeoutS = Number(values["load-timeout"]);
  if (!(keys > 0) || !(valueBytes > 0) || !(loadClients > 0) || !(seconds > 0)) {
    console.error("Cannot run: --keys, --value-bytes, --load-clients and --seconds must be > 0");
    return 2;
  }
  installSignalHandlers();
  const base = await makeTempDir("raftkv-scale-", values.dir);
  if (values.keep) keepTempDir(base);
  console.error(`state and logs under ${base}`);

  let start: (baseDir: string) => Promise<Cluster>;
  let snapDirOf = (d: string) => d;
  const snapLabel = "snapshots (*.snap)";
  if (values.system === "etcd") {
    const bin = which("etcd");
    if (bin === undefined) {
      console.error("Cannot run --system etcd: etcd is not on PATH");
      return 2;
    }
    console.log(`system: ${await etcdVersion(bin)}, 3 members`);
    start = (baseDir) => startEtcdCluster({ bin, baseDir, startTimeoutMs: 60_000 });
    snapDirOf = (d) => `${d}/member/snap`;
  } else {
    const cmd = values["raftkv-cmd"]?.split(/\s+/).filter(Boolean) ?? defaultRaftkvCmd();
    console.log(`system: raftkv (${cmd.join(" ")}), 3 nodes`);
    start = (baseDir) => startRaftkvCluster({ cmd, baseDir, startTimeoutMs: 60_000 });
  }
  console.log(`${keys} keys of ${valueBytes} bytes, loaded by ${loadClients} clients`);
  const snapText = async (dir: string) => {
    const sf = await snapFiles(snapDirOf(dir));
    const extra = values.system === "etcd"
      ? `, bbolt db ${fmtMiB(await dirBytes(dir, (name) => name === "db"))}`
      : "";
    return `${snapLabel} ${fmtMiB(sf.totalBytes)} in ${sf.count} file(s), newest ${
      fmtMiB(sf.newestBytes)
    }${extra}`;
  };
  const figures: [string, string][] = [];

  // 1. Write throughput on an empty store, in a cluster of its own: the
  // keys it writes would otherwise add to the million below.
  await Deno.mkdir(`${base}/empty`);
  const emptyCluster = await start(`${base}/empty`);
  const empty = await throughputRow(
    emptyCluster,
    "empty write c=64",
    "empty-",
    seconds,
    valueBytes,
  );
  for (const n of emptyCluster.nodes) await stopServer(n.proc, 10_000);

  await Deno.mkdir(`${base}/loaded`);
  const cluster = await start(`${base}/loaded`);

  // 2. Bulk load.
  const leader = await waitFor("a leader", () => cluster.leaderUrl(), 10_000, 200);
  const tLoad = performance.now();
  const load = (await runLoadProcess({
    label: "load",
    system: cluster.system,
    mode: "write",
    clients: loadClients,
    seconds: loadTimeoutS,
    warmupSeconds: 0,
    maxOps: keys,
    retryWrites: true,
    valueBytes,
    writeUrls: [leader],
    readUrls: [leader],
    keyPrefix: "key-",
    readRanges: [],
    client: "raw",
    timeoutMs: 30_000,
  })).result;
  const loadMs = performance.now() - tLoad;
  figures.push([
    "bulk load",
    `${load.ok} keys in ${fmtS(loadMs)} = ${Math.round(load.ok / (loadMs / 1000))} writes/s ` +
    `(p50 ${fmtMs(load.p50Ms)} ms, p99 ${fmtMs(load.p99Ms)} ms, retried failures ${
      load.non2xx + load.errors
    }${load.non2xx + load.errors > 0 ? `: answers ${JSON.stringify(load.statusCounts)}` : ""})`,
  ]);
  if (load.ok < keys) {
    figures.push(["WARNING", `only ${load.ok} of ${keys} keys were written within the time limit`]);
  }
  const lastKey = "scale-last-key";
  const lastValue = `written-after-${load.ok}-keys`;
  await waitFor(
    "the last PUT",
    async () => {
      const l = await cluster.leaderUrl();
      return (await cluster.put(l, lastKey, lastValue)) ? true : undefined;
    },
    30_000,
    200,
  );

  // 3. Memory and snapshot size.
  const sizes = async () => {
    for (const n of cluster.nodes) {
      const mem = await readMemory(n.proc.pid).catch(() => ({ rss: NaN, hwm: NaN }));
      const snap = await snapText(n.stateDir);
      const all = await dirBytes(n.stateDir, () => true);
      figures.push([
        `${n.name} memory`,
        `RSS ${fmtMiB(mem.rss)} (peak ${fmtMiB(mem.hwm)}); ${snap}; ` +
        `state dir ${fmtMiB(all)}`,
      ]);
    }
  };
  await sizes();

  // 4. Restart a follower.
  const leaderNow = await waitFor("a leader", () => cluster.leaderUrl(), 10_000, 200);
  const follower = cluster.nodes.find((n) => n.apiUrl !== leaderNow);
  if (follower === undefined) throw new Error("Cannot find a follower to restart");
  const stopMs = await stopServer(follower.proc, 30_000);
  cluster.restart(follower);
  const restartMs = await timeUntilRead(cluster, follower, lastKey, lastValue, 300_000);
  figures.push([
    `restart ${follower.name} (follower)`,
    `${fmtS(restartMs)} from start to its linearizable GET of the last key ` +
    `(SIGTERM to exit: ${fmtS(stopMs)})`,
  ]);
  const mem = await readMemory(follower.proc.pid).catch(() => ({ rss: NaN, hwm: NaN }));
  figures.push([`${follower.name} after restart`, `RSS ${fmtMiB(mem.rss)}`]);

  // 5. Write throughput with the keys loaded (the restarted node back in).
  const loaded = await throughputRow(cluster, "loaded write c=64", "loaded-", seconds, valueBytes);
  const row = (r: LoadResult) =>
    `${Math.round(r.opsPerS)} ops/s, p50 ${fmtMs(r.p50Ms)} ms, p99 ${fmtMs(r.p99Ms)} ms, ` +
    `p99.9 ${fmtMs(r.p999Ms)} ms, errs ${r.non2xx + r.errors}; cores: servers ` +
    `${(r.watchedCpuS / r.elapsedS).toFixed(2)}, other processes ` +
    `${Math.max(0, (r.machineBusyCpuS - r.watchedCpuS - r.cpuS) / r.elapsedS).toFixed(2)}`;
  figures.push(["write c=64, empty store", row(empty)]);
  figures.push([`write c=64, ${load.ok} keys loaded`, row(loaded)]);
  figures.push([
    "throughput loaded / empty",
    empty.opsPerS > 0 ? `${(loaded.opsPerS / empty.opsPerS).toFixed(2)}x` : "-",
  ]);

  // 6. A new fourth node joins and catches up. The leader's RSS is sampled
  // meanwhile: sending the snapshot is what it costs the leader.
  const leaderUrl = await waitFor("a leader", () => cluster.leaderUrl(), 10_000, 200);
  const leaderNode = cluster.nodes.find((n) => n.apiUrl === leaderUrl);
  const rssOf = async () =>
    leaderNode === undefined
      ? NaN
      : (await readMemory(leaderNode.proc.pid).catch(() => ({ rss: NaN }))).rss;
  const rssBefore = await rssOf();
  let rssMax = rssBefore;
  let joining = true;
  const sampler = (async () => {
    for (let i = 0; i < 100_000 && joining; i++) {
      rssMax = Math.max(rssMax, await rssOf());
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const fourth = await cluster.addNode();
  let joinMs: number;
  try {
    joinMs = await timeUntilRead(cluster, fourth, lastKey, lastValue, 600_000);
  } finally {
    joining = false;
    await sampler;
  }
  const mem4 = await readMemory(fourth.proc.pid).catch(() => ({ rss: NaN, hwm: NaN }));
  const snap4 = await snapText(fourth.stateDir);
  figures.push([
    `new ${fourth.name} joins`,
    `${fmtS(joinMs)} from start to its linearizable GET of the last key; ` +
    `RSS ${fmtMiB(mem4.rss)}; ${snap4}`,
  ]);
  figures.push([
    `${leaderNode?.name ?? "leader"} (leader) during the join`,
    `RSS ${fmtMiB(rssBefore)} before, ${fmtMiB(rssMax)} at most (sampled every 100 ms)`,
  ]);

  console.log("");
  console.log(renderTable(["figure", "value"], figures.map(([a, b]) => [a, b]), 2));
  if (values.keep) console.error(`kept ${base}`);
  for (const n of cluster.nodes) await stopServer(n.proc, 10_000);
  return 0;
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
