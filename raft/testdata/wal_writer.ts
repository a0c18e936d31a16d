/**
 * A child process for the crash test in raft/file_storage_test.ts: appends
 * batches of entries to the FileStorage in `Deno.args[0]` (several saves in
 * flight at once, so that group commit is exercised), prints each entry's
 * index once the save that holds it has resolved, and now and then takes a
 * snapshot that compacts the log. It runs until it is killed.
 *
 * Usage: deno run -A raft/testdata/wal_writer.ts DIR SEED
 *
 * @module
 */

import { FileStorage } from "../file_storage.ts";
import type { Entry } from "../types.ts";

/** The data of the entry at `index`: recognisable, and of varying length. */
export function entryData(index: number): Uint8Array {
  return new TextEncoder().encode(`entry ${index} `.padEnd(16 + (index % 97), "x"));
}

if (import.meta.main) {
  const [dir, seedText] = Deno.args;
  if (dir === undefined || seedText === undefined) throw new TypeError("usage: DIR SEED");
  let seed = Number(seedText) >>> 0;
  const random = (n: number) => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return (seed >>> 8) % n;
  };
  const storage = await FileStorage.open(dir, { segmentBytesMax: 16 * 1024 });
  const state = await storage.load();
  let last = state.entries.at(-1)?.index ?? state.snapshot?.meta.index ?? 0;
  console.log(`ready ${last}`);
  const inFlight = new Set<Promise<void>>();
  for (;;) {
    const count = 1 + random(40);
    const entries: Entry[] = [];
    for (let i = 0; i < count; i++) {
      const index = last + 1 + i;
      entries.push({ index, term: 1, type: "normal", data: entryData(index) });
    }
    last += count;
    const firstIndex = entries[0]!.index;
    const save = storage.save({ entries, hardState: { term: 1, vote: 1, commit: last } }).then(
      () => {
        const lines: string[] = [];
        for (let i = firstIndex; i < firstIndex + count; i++) lines.push(String(i));
        console.log(lines.join("\n"));
      },
    );
    inFlight.add(save);
    save.finally(() => inFlight.delete(save));
    if (inFlight.size >= 4) await Promise.race(inFlight);
    if (random(20) === 0) {
      await Promise.all(inFlight);
      const data = new TextEncoder().encode(`snapshot ${last}`);
      const meta = { index: last, term: 1, conf: { voters: [1], learners: [], removed: [] } };
      await storage.saveSnapshot({ meta, data }, Math.max(0, last - 200));
      console.log(`snapshot ${last}`);
    }
  }
}
