/**
 * WAL throughput: entries/s, MB/s and fdatasync calls/s of `FileStorage.save`
 * for 100 B and 4 KiB entries at batch sizes 1, 64 and 1024 (one awaited
 * save per batch, like one Raft `Ready` at a time), plus a group-commit row
 * (8 saves of 64 in flight), against this disk's raw fdatasync rate
 * (write 100 B + fdatasync in a loop, no framing).
 *
 * Run: `deno task bench` (about 30 s).
 *
 * @module
 */

import { FileStorage } from "../raft/file_storage.ts";
import type { Entry } from "../raft/types.ts";

const ROW_MS = 2000;

async function rawFdatasyncRate(dir: string): Promise<number> {
  const file = await Deno.open(`${dir}/raw`, { write: true, create: true, truncate: true });
  const bytes = new Uint8Array(100).fill(7);
  let count = 0;
  const start = performance.now();
  while (performance.now() - start < ROW_MS) {
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.syncData();
    count++;
  }
  const seconds = (performance.now() - start) / 1000;
  file.close();
  return count / seconds;
}

interface Row {
  entryBytes: number;
  batch: number;
  inFlight: number;
  entriesPerSecond: number;
  megabytesPerSecond: number;
  syncsPerSecond: number;
}

async function measure(dir: string, entryBytes: number, batch: number, inFlight: number) {
  const storage = await FileStorage.open(`${dir}/wal-${entryBytes}-${batch}-${inFlight}`);
  await storage.load();
  const data = new Uint8Array(entryBytes).fill(0x61);
  let next = 1;
  const makeBatch = (): Entry[] => {
    const entries = new Array<Entry>(batch);
    for (let i = 0; i < batch; i++) entries[i] = { index: next++, term: 1, type: "normal", data };
    return entries;
  };
  const syncsBefore = storage.syncCount;
  const start = performance.now();
  let entries = 0;
  const running = new Set<Promise<void>>();
  while (performance.now() - start < ROW_MS) {
    const save = storage.save({
      entries: makeBatch(),
      hardState: { term: 1, vote: 1, commit: next - 1 },
    });
    entries += batch;
    running.add(save);
    save.then(() => running.delete(save));
    if (running.size >= inFlight) await Promise.race(running);
  }
  await Promise.all(running);
  const seconds = (performance.now() - start) / 1000;
  const syncs = storage.syncCount - syncsBefore;
  await storage.close();
  return {
    entryBytes,
    batch,
    inFlight,
    entriesPerSecond: entries / seconds,
    megabytesPerSecond: (entries * entryBytes) / seconds / 1e6,
    syncsPerSecond: syncs / seconds,
  } satisfies Row;
}

function format(n: number, digits = 0): string {
  return n.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

const dir = await Deno.makeTempDir({ prefix: "raftkv-wal-bench-" });
try {
  const raw = await rawFdatasyncRate(dir);
  console.log(`raw fdatasync (write 100 B + fdatasync): ${format(raw)} /s  (dir ${dir})\n`);
  console.log(
    "| entry | batch | in flight | entries/s | MB/s | fdatasync/s | entries/s ÷ (batch × raw fdatasync/s) |",
  );
  console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const cases: [number, number, number][] = [
    [100, 1, 1],
    [100, 64, 1],
    [100, 1024, 1],
    [4096, 1, 1],
    [4096, 64, 1],
    [4096, 1024, 1],
    [100, 64, 8],
  ];
  for (const [entryBytes, batch, inFlight] of cases) {
    const row = await measure(dir, entryBytes, batch, inFlight);
    const ratio = row.entriesPerSecond / (batch * raw);
    console.log(
      `| ${entryBytes === 100 ? "100 B" : "4 KiB"} | ${batch} | ${inFlight} | ${
        format(row.entriesPerSecond)
      } | ${format(row.megabytesPerSecond, 1)} | ${format(row.syncsPerSecond)} | ${
        format(ratio, 2)
      } |`,
    );
  }
  const rawAfter = await rawFdatasyncRate(dir);
  console.log(
    `\nraw fdatasync again after the rows: ${format(rawAfter)} /s (the disk is shared: ` +
      "compare ratios only within one run)",
  );
  console.log(
    "\nGoal: batch 64 × 100 B ≥ 0.5 × 64 × raw fdatasync/s (or ≥ 200,000 entries/s where CPU-bound).",
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
