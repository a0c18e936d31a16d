/**
 * The one conformance suite for `LogStorage`: every implementation registers
 * it from its own test file, e.g.
 *
 * ```ts
 * storageConformance("MemoryStorage", () => Promise.resolve(memoryHarness()));
 * ```
 *
 * @module
 */

import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import { collectBytes, concatBytes } from "./bytes.ts";
import type { LogStorage } from "./storage.ts";
import type { Entry, HardState, Snapshot } from "./types.ts";

/** One storage under test and how to restart it. */
export interface StorageHarness {
  /** A fresh, empty, not yet loaded storage. */
  storage: LogStorage;
  /**
   * Stops the current storage the way a crash would (no further writes) and
   * returns a fresh, not yet loaded instance over the same durable state.
   */
  restart(): Promise<LogStorage>;
  /** Releases everything (temp directories). */
  cleanup(): Promise<void>;
}

/** An entry whose data names its index and term, for checking content after a restart. */
export function entry(index: number, term: number, type: Entry["type"] = "normal"): Entry {
  return { index, term, type, data: new TextEncoder().encode(`e${index}t${term}`) };
}

/** Entries `from`..`to` inclusive, all of `term`. */
export function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

/** A snapshot at `index`/`term` with a small recognisable payload. */
export function snapshot(index: number, term: number): Snapshot {
  return {
    meta: { index, term, conf: { voters: [1, 2, 3], learners: [4], removed: [5] } },
    data: new TextEncoder().encode(`snapshot at ${index}`),
  };
}

function summary(list: Entry[]): string[] {
  return list.map((e) => `${e.index}/${e.term}/${e.type}/${new TextDecoder().decode(e.data)}`);
}

/** Registers the conformance tests for one implementation. */
export function storageConformance(
  name: string,
  makeStorage: () => Promise<StorageHarness>,
): void {
  function test(title: string, fn: (h: StorageHarness) => Promise<void>): void {
    Deno.test(`${name}: ${title}`, async () => {
      const harness = await makeStorage();
      try {
        await fn(harness);
      } finally {
        await harness.cleanup();
      }
    });
  }

  test("load() of new storage returns an empty log and a zero hard state", async (h) => {
    const state = await h.storage.load();
    assertEquals(state.hardState, { term: 0, vote: 0, commit: 0 });
    assertEquals(state.entries, []);
    assertEquals(state.snapshot, undefined);
    assertEquals(state.identity, undefined);
    assertEquals(h.storage.latestSnapshotMeta(), undefined);
    assertEquals(await h.storage.latestSnapshot(), undefined);
  });

  test("saved entries, hard state and identity survive a restart", async (h) => {
    await h.storage.load();
    await h.storage.saveIdentity({ nodeId: 7, clusterId: "c-1" });
    const hs: HardState = { term: 2, vote: 3, commit: 2 };
    await h.storage.save({ entries: [...entries(1, 3, 1), entry(4, 2, "conf")], hardState: hs });
    const state = await (await h.restart()).load();
    assertEquals(state.identity, { nodeId: 7, clusterId: "c-1" });
    assertEquals(state.hardState, hs);
    assertEquals(summary(state.entries), summary([...entries(1, 3, 1), entry(4, 2, "conf")]));
  });

  test("an identity marked removed survives a restart", async (h) => {
    await h.storage.load();
    await h.storage.saveIdentity({ nodeId: 7, clusterId: "c-1" });
    await h.storage.saveIdentity({ nodeId: 7, clusterId: "c-1", removed: true });
    const state = await (await h.restart()).load();
    assertEquals(state.identity, { nodeId: 7, clusterId: "c-1", removed: true });
  });

  test("the latest hard state wins after a restart", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: [], hardState: { term: 1, vote: 1, commit: 0 } });
    await h.storage.save({ entries: entries(1, 2, 1), hardState: { term: 1, vote: 1, commit: 1 } });
    await h.storage.save({ entries: [], hardState: { term: 3, vote: 0, commit: 2 } });
    const state = await (await h.restart()).load();
    assertEquals(state.hardState, { term: 3, vote: 0, commit: 2 });
  });

  test("entries that start inside the log replace the conflicting suffix durably", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 10, 1) });
    await h.storage.save({ entries: entries(6, 7, 2) });
    await h.storage.save({ entries: entries(8, 8, 3) });
    const state = await (await h.restart()).load();
    assertEquals(
      summary(state.entries),
      summary([...entries(1, 5, 1), ...entries(6, 7, 2), entry(8, 3)]),
    );
  });

  test("save() rejects entries that would leave a gap and the storage stays usable", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 3, 1) });
    await assertRejects(
      () => h.storage.save({ entries: entries(5, 6, 1) }),
      RangeError,
      "ends at 3",
    );
    await assertRejects(
      () => h.storage.save({ entries: [entry(4, 1), entry(6, 1)] }),
      RangeError,
    );
    await h.storage.save({ entries: entries(4, 4, 1) });
    const state = await (await h.restart()).load();
    assertEquals(summary(state.entries), summary(entries(1, 4, 1)));
  });

  test("concurrent saves all resolve, in call order, and all survive", async (h) => {
    await h.storage.load();
    const order: number[] = [];
    const calls: Promise<void>[] = [];
    for (let i = 1; i <= 50; i++) {
      calls.push(
        h.storage.save({ entries: [entry(i, 1)], hardState: { term: 1, vote: 1, commit: i - 1 } })
          .then(() => {
            order.push(i);
          }),
      );
    }
    await Promise.all(calls);
    assertEquals(order, entries(1, 50, 1).map((e) => e.index));
    const state = await (await h.restart()).load();
    assertEquals(summary(state.entries), summary(entries(1, 50, 1)));
    assertEquals(state.hardState.commit, 49);
  });

  test("a local snapshot compacts entries at or below the compact index", async (h) => {
    await h.storage.load();
    await h.storage.save({
      entries: entries(1, 20, 1),
      hardState: { term: 1, vote: 1, commit: 15 },
    });
    await h.storage.saveSnapshot(snapshot(15, 1), 10);
    assertEquals(h.storage.latestSnapshotMeta(), snapshot(15, 1).meta);
    assertEquals(await h.storage.latestSnapshot(), snapshot(15, 1));
    await h.storage.save({ entries: entries(21, 22, 1) });
    const state = await (await h.restart()).load();
    assertEquals(state.snapshot, snapshot(15, 1));
    assertEquals(summary(state.entries), summary(entries(16, 22, 1)));
    assertEquals(state.hardState.commit, 15);
  });

  test("a snapshot given as a stream of chunks is stored as their concatenation", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 20, 1) });
    const whole = snapshot(15, 1);
    const parts = [whole.data.subarray(0, 3), new Uint8Array(0), whole.data.subarray(3)];
    async function* chunks() {
      for (const part of parts) {
        await Promise.resolve(); // produced asynchronously, like the state machine's encoder
        yield part;
      }
    }
    await h.storage.saveSnapshot({ meta: whole.meta, chunks: chunks() }, 10);
    assertEquals(h.storage.latestSnapshotMeta(), whole.meta);
    assertEquals(await h.storage.latestSnapshot(), whole);
    const state = await (await h.restart()).load();
    assertEquals(state.snapshot, whole);
    assertEquals(summary(state.entries), summary(entries(16, 20, 1)));
  });

  test("the newest snapshot streams as chunks of at most the size asked that make up its data", async (h) => {
    await h.storage.load();
    assertEquals(await h.storage.latestSnapshotStream(), undefined);
    await h.storage.save({ entries: entries(1, 30, 1) });
    await h.storage.saveSnapshot(snapshot(10, 1), 0);
    await h.storage.saveSnapshot(snapshot(20, 2), 0);
    const stream = await h.storage.latestSnapshotStream();
    assertEquals(stream?.meta, snapshot(20, 2).meta);
    assertEquals(stream?.dataBytes, snapshot(20, 2).data.byteLength);
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream!.chunks(4)) chunks.push(chunk);
    assert(chunks.length > 1 && chunks.every((c) => c.byteLength > 0 && c.byteLength <= 4));
    assertEquals(concatBytes(chunks), snapshot(20, 2).data);
    // Taken again, from the start.
    assertEquals(await collectBytes(stream!.chunks(1000)), snapshot(20, 2).data);
  });

  test("a newer snapshot replaces the older one as the latest", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 30, 1) });
    for (const index of [5, 10, 15, 20, 25]) {
      await h.storage.saveSnapshot(snapshot(index, 1), index);
    }
    assertEquals(await h.storage.latestSnapshot(), snapshot(25, 1));
    const restarted = await h.restart();
    const state = await restarted.load();
    assertEquals(state.snapshot, snapshot(25, 1));
    assertEquals(restarted.latestSnapshotMeta(), snapshot(25, 1).meta);
    assertEquals(summary(state.entries), summary(entries(26, 30, 1)));
  });

  test("saveSnapshot() rejects a compact index above the snapshot and an older snapshot", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 10, 1) });
    await assertRejects(() => h.storage.saveSnapshot(snapshot(5, 1), 6), RangeError);
    await h.storage.saveSnapshot(snapshot(8, 1), 8);
    await assertRejects(() => h.storage.saveSnapshot(snapshot(6, 1), 6), RangeError, "newer");
    await assertRejects(
      () => h.storage.save({ entries: entries(8, 9, 2) }),
      RangeError,
      "snapshot",
    );
  });

  test("a received snapshot replaces the whole log, even entries after its index", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 20, 1) });
    await h.storage.save({
      snapshot: snapshot(10, 2),
      entries: [],
      hardState: { term: 2, vote: 0, commit: 10 },
    });
    assertEquals(h.storage.latestSnapshotMeta(), snapshot(10, 2).meta);
    const state = await (await h.restart()).load();
    assertEquals(state.snapshot, snapshot(10, 2));
    assertEquals(state.entries, []);
    assertEquals(state.hardState, { term: 2, vote: 0, commit: 10 });
  });

  test("entries saved with a received snapshot follow it and survive", async (h) => {
    await h.storage.load();
    await h.storage.save({ entries: entries(1, 5, 1) });
    await h.storage.save({ snapshot: snapshot(12, 3), entries: entries(13, 14, 3) });
    await h.storage.save({ entries: entries(15, 15, 3) });
    const state = await (await h.restart()).load();
    assertEquals(state.snapshot, snapshot(12, 3));
    assertEquals(summary(state.entries), summary(entries(13, 15, 3)));
  });

  test("every method but load() rejects before load()", async (h) => {
    await assertRejects(() => h.storage.save({ entries: entries(1, 1, 1) }), Error, "load()");
    await assertRejects(() => h.storage.saveIdentity({ nodeId: 1, clusterId: "c" }), Error);
    await assertRejects(() => h.storage.saveSnapshot(snapshot(1, 1), 1), Error);
    await h.storage.load();
    await assertRejects(() => h.storage.load(), Error, "already");
  });

  test("a closed storage rejects every call", async (h) => {
    await h.storage.load();
    await h.storage.close();
    await assertRejects(() => h.storage.save({ entries: entries(1, 1, 1) }), Error, "closed");
    await assertRejects(() => h.storage.latestSnapshot(), Error, "closed");
    const restarted = await h.restart();
    assert((await restarted.load()).entries.length === 0);
  });
}
