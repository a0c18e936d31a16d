import { assert, assertEquals, assertRejects, assertStringIncludes } from "../tests/assert.ts";
import { FileStorage, type FileStorageOptions } from "./file_storage.ts";
import { crc32c } from "./checksum.ts";
import { encode } from "./msgpack.ts";
import { type LoadedState, StorageCorruptionError } from "./storage.ts";
import { entries, entry, snapshot, storageConformance } from "./storage_conformance.ts";
import { entryData } from "./testdata/wal_writer.ts";
import { waitFor } from "../tests/harness.ts";

storageConformance("FileStorage", async () => {
  const dir = await Deno.makeTempDir({ prefix: "raftkv-storage-" });
  let current = await FileStorage.open(dir);
  return {
    storage: current,
    async restart() {
      await current.close();
      current = await FileStorage.open(dir);
      return current;
    },
    async cleanup() {
      await current.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
});

// ---- file-specific tests ----------------------------------------------------

/** Runs `fn` with a fresh state directory, removed afterwards. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "raftkv-storage-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `fn` with console.warn captured; returns the captured calls. */
async function capturingWarnings(fn: () => Promise<void>): Promise<unknown[][]> {
  const original = console.warn;
  const calls: unknown[][] = [];
  console.warn = (...args: unknown[]) => calls.push(args);
  try {
    await fn();
  } finally {
    console.warn = original;
  }
  return calls;
}

/** Opens, loads and closes the storage in `dir`; returns the loaded state. */
async function loadDir(dir: string, options: FileStorageOptions = {}): Promise<LoadedState> {
  await using storage = await FileStorage.open(dir, options);
  return await storage.load();
}

function indexes(state: LoadedState): number[] {
  return state.entries.map((e) => e.index);
}

const SEGMENT_1 = "wal-0000000000000001.wal";

/** Where one WAL record ends, and what the log holds once it is complete. */
interface RecordEnd {
  end: number;
  lastIndex: number;
  commit: number;
}

/** Where the records of a segment end: the rest of the file is preallocated zeros. */
function recordsEnd(segment: Uint8Array): number {
  const view = new DataView(segment.buffer, segment.byteOffset, segment.byteLength);
  let offset = 20; // the segment header
  while (offset + 12 <= segment.length) {
    if (view.getUint32(offset + 8, true) !== crc32c(segment.subarray(offset, offset + 8))) break;
    offset += 12 + view.getUint32(offset, true);
  }
  return offset;
}

/**
 * Writes one save per entry 1..count (every other one with a hard state, a
 * second record) and returns where each record ends in the segment.
 */
async function writeSmallWal(dir: string, count: number): Promise<RecordEnd[]> {
  const records: RecordEnd[] = [];
  await using storage = await FileStorage.open(dir);
  await storage.load();
  let commit = 0;
  for (let i = 1; i <= count; i++) {
    const hardState = i % 2 === 0 ? { term: 1, vote: 1, commit: i - 1 } : undefined;
    await storage.save({ entries: [entry(i, 1)], ...(hardState ? { hardState } : {}) });
    const end = recordsEnd(await Deno.readFile(`${dir}/${SEGMENT_1}`));
    if (hardState) {
      const hardStateBytes = 12 + encode([2, 1, 1, hardState.commit]).length;
      records.push({ end: end - hardStateBytes, lastIndex: i, commit });
      commit = hardState.commit;
    }
    records.push({ end, lastIndex: i, commit });
  }
  return records;
}

Deno.test("FileStorage: a cut at every byte of the last records recovers exactly the complete records before it", async () => {
  await withDir(async (dir) => {
    const records = await writeSmallWal(dir, 12);
    const written = await Deno.readFile(`${dir}/${SEGMENT_1}`);
    const full = written.subarray(0, records.at(-1)!.end);
    assert(written.length > full.length, "the segment has no preallocated space");
    const from = records[records.length - 6]!.end; // the last five records
    let cuts = 0;
    for (let cut = from; cut <= full.length; cut++) {
      const complete = records.filter((r) => r.end <= cut).at(-1)!;
      const tornBytes = full.subarray(complete.end, cut);
      // Cut where the file ends (an append that stopped), or inside the
      // preallocated zeros (an overwrite that stopped).
      for (const preallocated of [false, true]) {
        const file = preallocated ? written.slice() : full.slice(0, cut);
        if (preallocated) file.fill(0, cut);
        await Deno.writeFile(`${dir}/${SEGMENT_1}`, file);
        let state: LoadedState | undefined;
        const warnings = await capturingWarnings(async () => {
          state = await loadDir(dir);
        });
        const at = `a cut at ${cut}${preallocated ? " in preallocated space" : ""}`;
        assertEquals(indexes(state!), entries(1, complete.lastIndex, 1).map((e) => e.index), at);
        assertEquals(state!.entries.at(-1)?.data, entry(complete.lastIndex, 1).data);
        assertEquals(state!.hardState.commit, complete.commit, `commit after ${at}`);
        const torn = tornBytes.some((b) => b !== 0);
        assertEquals(warnings.length, torn ? 1 : 0, `warnings for ${at}`);
        if (torn) {
          assertEquals(warnings[0]![0], "wal: cut torn tail");
          assertEquals(warnings[0]![1], {
            file: `${dir}/${SEGMENT_1}`,
            offset: complete.end,
            bytes: file.length - complete.end,
          });
          // The cut is durable: the file now ends at the last complete record.
          assertEquals((await Deno.stat(`${dir}/${SEGMENT_1}`)).size, complete.end);
        }
        cuts++;
      }
    }
    assert(cuts > 200);
  });
});

Deno.test("FileStorage: writes go over the preallocated zeros, and a reopened log goes on from its last record", async () => {
  await withDir(async (dir) => {
    const records = await writeSmallWal(dir, 3);
    const size = (await Deno.stat(`${dir}/${SEGMENT_1}`)).size;
    assert(size > records.at(-1)!.end, `no preallocated space: ${size} bytes`);
    for (let round = 0; round < 3; round++) {
      const warnings = await capturingWarnings(async () => {
        await using storage = await FileStorage.open(dir);
        const state = await storage.load();
        assertEquals(indexes(state), entries(1, 3 + round, 1).map((e) => e.index));
        await storage.save({ entries: [entry(4 + round, 1)] });
      });
      assertEquals(warnings, [], "zeros after the records are not a torn tail");
      // The records grow in place; the file keeps its preallocated size.
      assertEquals((await Deno.stat(`${dir}/${SEGMENT_1}`)).size, size);
    }
    assertEquals(indexes(await loadDir(dir)), entries(1, 6, 1).map((e) => e.index));
  });
});

/** Saves entries 1..count one at a time with small segments; returns the segment names in order. */
async function writeSegments(
  dir: string,
  options: FileStorageOptions,
  count: number,
): Promise<string[]> {
  {
    await using storage = await FileStorage.open(dir, options);
    await storage.load();
    for (let i = 1; i <= count; i++) await storage.save({ entries: [entry(i, 1)] });
  }
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".wal")).sort();
}

Deno.test("FileStorage: a rolled segment is cut to its records (only the last may end in zeros)", async () => {
  await withDir(async (dir) => {
    const options = { segmentBytesMax: 1024 };
    const segments = await writeSegments(dir, options, 200);
    assert(segments.length >= 3, `only ${segments.length} segments`);
    for (const name of segments.slice(0, -1)) {
      const bytes = await Deno.readFile(`${dir}/${name}`);
      assertEquals(recordsEnd(bytes), bytes.length, `${name} ends in zeros`);
    }
    const last = await Deno.readFile(`${dir}/${segments.at(-1)}`);
    assertEquals(last.length, 1024);
    assert(recordsEnd(last) < last.length);
    assertEquals(indexes(await loadDir(dir, options)), entries(1, 200, 1).map((e) => e.index));
  });
});

Deno.test("FileStorage: a flipped bit anywhere but the last record's payload stops the load", async () => {
  await withDir(async (dir) => {
    const count = 6;
    const records = await writeSmallWal(dir, count);
    const full = (await Deno.readFile(`${dir}/${SEGMENT_1}`)).subarray(0, records.at(-1)!.end);
    // Save 6 holds an entries record and a hard-state record; the last one is the hard state.
    const lastRecordStart = full.length - (12 + encode([2, 1, 1, 5]).length);
    let thrown = 0;
    for (let pos = 0; pos < full.length; pos++) {
      const damaged = full.slice();
      damaged[pos]! ^= 1 << (pos % 8);
      await Deno.writeFile(`${dir}/${SEGMENT_1}`, damaged);
      try {
        const state = await capturingWarnings(() => loadDir(dir).then(() => {}));
        // Only the last record may be cut, and only for a payload bit flip.
        assert(pos >= lastRecordStart + 12, `a flip at ${pos} was not detected`);
        assertEquals(state.length, 1);
        const after = await loadDir(dir);
        assertEquals(indexes(after), entries(1, count, 1).map((e) => e.index));
        assertEquals(after.hardState, { term: 1, vote: 1, commit: 3 });
      } catch (error) {
        if (!(error instanceof StorageCorruptionError)) throw error;
        assertStringIncludes(error.message, `${dir}/${SEGMENT_1} at offset `);
        assertStringIncludes(error.message, "re-join");
        thrown++;
      }
    }
    assertEquals(records.at(-1)!.end, full.length);
    assert(thrown >= lastRecordStart + 12);
  });
});

Deno.test("FileStorage: damage to the last record of an earlier segment stops the load", async () => {
  await withDir(async (dir) => {
    const options = { segmentBytesMax: 200 };
    const segments = await writeSegments(dir, options, 30);
    assert(segments.length >= 3);
    const path = `${dir}/${segments[0]}`;
    const original = await Deno.readFile(path);
    const damaged = original.slice();
    damaged[damaged.length - 1]! ^= 0x10;
    await Deno.writeFile(path, damaged);
    const error = await assertRejects(() => loadDir(dir, options), StorageCorruptionError);
    assertStringIncludes(error.message, `Cannot open WAL segment ${path} at offset`);
    assertStringIncludes(error.message, "checksum mismatch");
    // Truncated instead: the record runs past the end of a segment that is not the last.
    await Deno.writeFile(path, original.subarray(0, original.length - 3));
    await assertRejects(() => loadDir(dir, options), StorageCorruptionError, "past the end");
    await Deno.writeFile(path, original);
    assertEquals(indexes(await loadDir(dir, options)), entries(1, 30, 1).map((e) => e.index));
  });
});

Deno.test("FileStorage: a missing segment in the middle stops the load", async () => {
  await withDir(async (dir) => {
    const options = { segmentBytesMax: 200 };
    {
      await using storage = await FileStorage.open(dir, options);
      await storage.load();
      for (let i = 1; i <= 30; i++) await storage.save({ entries: [entry(i, 1)] });
    }
    await Deno.remove(`${dir}/wal-0000000000000002.wal`);
    await assertRejects(
      () => loadDir(dir, options),
      StorageCorruptionError,
      "wal-0000000000000002.wal: it is missing",
    );
  });
});

Deno.test("FileStorage: a wrong format version in a segment header stops the load", async () => {
  await withDir(async (dir) => {
    await writeSmallWal(dir, 2);
    const bytes = await Deno.readFile(`${dir}/${SEGMENT_1}`);
    bytes[4] = 9;
    await Deno.writeFile(`${dir}/${SEGMENT_1}`, bytes);
    await assertRejects(() => loadDir(dir), StorageCorruptionError, "format version 9");
  });
});

Deno.test("FileStorage: segments roll at the size limit and compaction removes the old ones", async () => {
  await withDir(async (dir) => {
    const options = { segmentBytesMax: 300 };
    const wals = () => [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".wal")).length;
    {
      await using storage = await FileStorage.open(dir, options);
      await storage.load();
      for (let i = 1; i <= 60; i++) {
        await storage.save({ entries: [entry(i, 1)], hardState: { term: 1, vote: 2, commit: i } });
      }
      const before = wals();
      assert(before >= 5, `only ${before} segments`);
      await storage.saveSnapshot(snapshot(50, 1), 40);
      assert(wals() < before);
      assert(wals() >= 2);
    }
    const state = await loadDir(dir, options);
    assertEquals(state.snapshot, snapshot(50, 1));
    assertEquals(indexes(state), entries(51, 60, 1).map((e) => e.index));
    assertEquals(state.hardState, { term: 1, vote: 2, commit: 60 });
  });
});

Deno.test("FileStorage: only the newest three snapshots are kept", async () => {
  await withDir(async (dir) => {
    await using storage = await FileStorage.open(dir);
    await storage.load();
    await storage.save({ entries: entries(1, 10, 1) });
    for (let i = 1; i <= 6; i++) await storage.saveSnapshot(snapshot(i, 1), 0);
    const snaps = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".snap"));
    assertEquals(
      snaps.sort(),
      [4, 5, 6].map((i) => `snap-${i.toString(16).padStart(16, "0")}.snap`),
    );
  });
});

Deno.test("FileStorage: a snapshot stream that fails midway leaves no snapshot under its name", async () => {
  await withDir(async (dir) => {
    {
      await using storage = await FileStorage.open(dir);
      await storage.load();
      await storage.save({ entries: entries(1, 30, 1) });
      await storage.saveSnapshot(snapshot(10, 1), 0);
      const failing = async function* () {
        yield new Uint8Array(1000);
        throw new Error("the encoder failed");
      };
      await assertRejects(
        () => storage.saveSnapshot({ meta: snapshot(20, 1).meta, chunks: failing() }, 20),
        Error,
        "the encoder failed",
      );
    }
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert(!names.includes(`snap-${(20).toString(16).padStart(16, "0")}.snap`));
    const state = await loadDir(dir);
    assertEquals(state.snapshot, snapshot(10, 1));
    assertEquals(indexes(state), entries(11, 30, 1).map((e) => e.index));
  });
});

Deno.test("FileStorage: reads a version-1 snapshot file (data length in the header)", async () => {
  await withDir(async (dir) => {
    {
      await using storage = await FileStorage.open(dir);
      await storage.load();
      await storage.save({ entries: entries(1, 30, 1) });
      await storage.saveSnapshot(snapshot(20, 1), 0);
    }
    // Rewrite the file as the version-1 layout: magic, 1, meta length, data
    // length (u64), meta, data, CRC-32C of everything before it.
    const { meta, data } = snapshot(20, 1);
    const metaBytes = encode(meta);
    const file = new Uint8Array(20 + metaBytes.length + data.length + 4);
    const view = new DataView(file.buffer);
    view.setUint32(0, 0x53564b52, true);
    view.setUint32(4, 1, true);
    view.setUint32(8, metaBytes.length, true);
    view.setUint32(12, data.length, true);
    file.set(metaBytes, 20);
    file.set(data, 20 + metaBytes.length);
    view.setUint32(file.length - 4, crc32c(file.subarray(0, file.length - 4)), true);
    await Deno.writeFile(`${dir}/snap-${(20).toString(16).padStart(16, "0")}.snap`, file);
    const state = await loadDir(dir);
    assertEquals(state.snapshot, snapshot(20, 1));
    assertEquals(indexes(state), entries(21, 30, 1).map((e) => e.index));
    // And it streams as the same data.
    await using storage = await FileStorage.open(dir);
    await storage.load();
    const stream = await storage.latestSnapshotStream();
    assertEquals(stream?.meta, meta);
    const chunks = await Array.fromAsync(stream!.chunks(5));
    assertEquals(chunks.length, Math.ceil(data.length / 5));
    assertEquals(chunks.flatMap((c) => [...c]), [...data]);
  });
});

Deno.test("FileStorage: a snapshot damaged on disk fails its stream before the last chunk", async () => {
  await withDir(async (dir) => {
    await using storage = await FileStorage.open(dir);
    await storage.load();
    await storage.save({ entries: entries(1, 30, 1) });
    const data = new Uint8Array(100_000).map((_, i) => i % 251);
    const meta = snapshot(20, 1).meta;
    await storage.saveSnapshot({ meta, data }, 0);
    const stream = await storage.latestSnapshotStream();
    assertEquals(stream?.dataBytes, data.byteLength);
    // Flip a byte in the middle of the data, after the stream was opened.
    const path = `${dir}/snap-${(20).toString(16).padStart(16, "0")}.snap`;
    const file = await Deno.readFile(path);
    file[Math.floor(file.length / 2)]! ^= 0x40;
    await Deno.writeFile(path, file);
    let received = 0;
    const error = await assertRejects(async () => {
      for await (const chunk of stream!.chunks(10_000)) received += chunk.byteLength;
    }, StorageCorruptionError);
    assertStringIncludes(error.message, "checksum mismatch");
    assert(received < data.byteLength, `${received} bytes came out of a damaged snapshot`);
  });
});

Deno.test("FileStorage: an unreadable newest snapshot falls back to an older one the WAL still covers", async () => {
  await withDir(async (dir) => {
    {
      await using storage = await FileStorage.open(dir);
      await storage.load();
      await storage.save({ entries: entries(1, 30, 1) });
      await storage.saveSnapshot(snapshot(10, 1), 0);
      await storage.saveSnapshot(snapshot(20, 1), 0);
    }
    const newest = `${dir}/snap-${(20).toString(16).padStart(16, "0")}.snap`;
    const bytes = await Deno.readFile(newest);
    bytes[bytes.length - 6]! ^= 1;
    await Deno.writeFile(newest, bytes);
    let state: LoadedState | undefined;
    const warnings = await capturingWarnings(async () => {
      state = await loadDir(dir);
    });
    assertEquals(state!.snapshot, snapshot(10, 1));
    assertEquals(indexes(state!), entries(11, 30, 1).map((e) => e.index));
    assertEquals(warnings[0]![0], "snapshot: unreadable, using an older one");
  });
});

Deno.test("FileStorage: an unreadable newest snapshot the WAL no longer covers stops the load", async () => {
  await withDir(async (dir) => {
    const options = { segmentBytesMax: 200 };
    {
      await using storage = await FileStorage.open(dir, options);
      await storage.load();
      for (let i = 1; i <= 40; i++) await storage.save({ entries: [entry(i, 1)] });
      await storage.saveSnapshot(snapshot(10, 1), 0);
      await storage.saveSnapshot(snapshot(35, 1), 35);
    }
    const newest = `${dir}/snap-${(35).toString(16).padStart(16, "0")}.snap`;
    const bytes = await Deno.readFile(newest);
    bytes[30]! ^= 1;
    await Deno.writeFile(newest, bytes);
    await assertRejects(() => loadDir(dir, options), StorageCorruptionError, "is unreadable");
  });
});

Deno.test("FileStorage: a snapshot received just before a crash drops the conflicting log after it", async () => {
  await withDir(async (dir) => {
    {
      await using storage = await FileStorage.open(dir);
      await storage.load();
      await storage.save({ entries: entries(1, 8, 1) });
    }
    // The snapshot file became durable, the WAL record after it did not.
    {
      await using storage = await FileStorage.open(`${dir}/other`);
      await storage.load();
      await storage.save({ snapshot: snapshot(5, 2), entries: [] });
    }
    const name = `snap-${(5).toString(16).padStart(16, "0")}.snap`;
    await Deno.copyFile(`${dir}/other/${name}`, `${dir}/${name}`);
    await Deno.remove(`${dir}/other`, { recursive: true });
    let state: LoadedState | undefined;
    await capturingWarnings(async () => {
      state = await loadDir(dir);
    });
    assertEquals(state!.snapshot, snapshot(5, 2));
    assertEquals(state!.entries, []);
    assertEquals((await loadDir(dir)).entries, []);
  });
});

Deno.test("FileStorage: a failed fsync rejects the save and every later call", async () => {
  await withDir(async (dir) => {
    let failing = false;
    const faultInjector = (operation: string) => {
      if (failing && operation === "sync") throw new Error("EIO: injected");
    };
    {
      await using storage = await FileStorage.open(dir, { faultInjector });
      await storage.load();
      await storage.save({ entries: entries(1, 2, 1) });
      failing = true;
      await assertRejects(() => storage.save({ entries: entries(3, 3, 1) }), Error, "stopped");
      failing = false;
      await assertRejects(() => storage.save({ entries: entries(3, 3, 1) }), Error, "fail-stop");
      await assertRejects(() => storage.saveSnapshot(snapshot(2, 1), 2), Error, "fail-stop");
      await assertRejects(() => storage.saveIdentity({ nodeId: 1, clusterId: "c" }), Error);
    }
    const state = await loadDir(dir);
    assert(indexes(state).length >= 2);
  });
});

Deno.test("FileStorage: a second open of the same directory is refused while the first holds it", async () => {
  await withDir(async (dir) => {
    await using _storage = await FileStorage.open(dir);
    await assertRejects(() => FileStorage.open(dir), Error, "holds its lock");
  });
});

Deno.test("FileStorage: every acknowledged entry survives SIGKILL at random moments", async () => {
  await withDir(async (dir) => {
    const script = new URL("./testdata/wal_writer.ts", import.meta.url).pathname;
    let rng = 12345;
    const random = (n: number) => {
      rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0;
      return (rng >>> 8) % n;
    };
    const acknowledged = new Set<number>();
    let snapshots = 0;
    const rounds = 60;
    for (let round = 0; round < rounds; round++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", script, dir, String(round + 1)],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      let timer: ReturnType<typeof setTimeout> | undefined;
      for (;;) {
        const { value, done } = await lines.read();
        if (done) break;
        buffered += value;
        if (timer === undefined && buffered.includes("ready")) {
          timer = setTimeout(() => child.kill("SIGKILL"), random(60));
        }
      }
      clearTimeout(timer);
      const status = await child.status;
      assertEquals(status.signal, "SIGKILL", `round ${round}: ${buffered.slice(0, 400)}`);
      for (const line of buffered.split("\n")) {
        if (line.startsWith("snapshot")) snapshots++;
        else if (/^\d+$/.test(line)) acknowledged.add(Number(line));
      }
      // Reopen and check every acknowledged entry.
      let state: LoadedState = { hardState: { term: 0, vote: 0, commit: 0 }, entries: [] };
      await capturingWarnings(async () => {
        state = await loadDir(dir);
      });
      const snapshotIndex = state.snapshot?.meta.index ?? 0;
      const first = state.entries[0]?.index ?? snapshotIndex + 1;
      assertEquals(first, snapshotIndex + 1, `round ${round}: entries must follow the snapshot`);
      for (const index of acknowledged) {
        if (index <= snapshotIndex) continue;
        const e = state.entries[index - first];
        assert(e !== undefined, `round ${round}: acknowledged entry ${index} is missing`);
        assertEquals(e.index, index);
        assertEquals(e.data, entryData(index));
      }
    }
    assert(acknowledged.size > 1000, `only ${acknowledged.size} entries acknowledged`);
    assert(snapshots > 0);
  });
});

/** `promise`, or a failure naming `what` if it has not settled within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A snapshot of `chunkCount` chunks of 4 KiB; `pulled` counts the chunks the
 * storage has taken so far, and `data` is what the snapshot holds.
 */
function pacedSource(index: number, chunkCount: number) {
  const data = new Uint8Array(chunkCount * 4096);
  for (let i = 0; i < chunkCount; i++) data.fill(i + 1, i * 4096, (i + 1) * 4096);
  const src = {
    pulled: 0,
    data,
    meta: snapshot(index, 1).meta,
    async *source(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < chunkCount; i++) {
        src.pulled++;
        yield data.slice(i * 4096, (i + 1) * 4096);
      }
    },
  };
  return src;
}

/**
 * Storage in `dir` writing its own snapshots at 256 B/s (each 4 KiB chunk is
 * followed by a pause of 16 s), loaded, with entries 1..30.
 */
async function pacedStorage(dir: string): Promise<FileStorage> {
  const storage = await FileStorage.open(dir, { snapshotBytesPerSecond: 256 });
  await storage.load();
  await storage.save({ entries: entries(1, 30, 1) });
  return storage;
}

Deno.test("FileStorage: a snapshot the node takes is written at the set pace, and flat out once the storage closes", async () => {
  await withDir(async (dir) => {
    const storage = await pacedStorage(dir);
    const src = pacedSource(20, 16);
    const saved = storage.saveSnapshot({ meta: src.meta, chunks: src.source() }, 0);
    await waitFor(() => src.pulled >= 1, { what: "the first chunk taken", intervalMs: 5 });
    // Paced: the second chunk is due 16 s after the first.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert(src.pulled < 16, `all ${src.pulled} chunks taken at once`);
    await within(storage.close(), 10_000, "close during a paced snapshot");
    await within(saved, 1000, "the snapshot write");
    assertEquals(src.pulled, 16);
    const state = await loadDir(dir);
    assertEquals(state.snapshot?.meta, src.meta);
    assertEquals(state.snapshot?.data, src.data);
  });
});

Deno.test("FileStorage: a read of the snapshot does not wait for a paced write's pauses", async () => {
  await withDir(async (dir) => {
    await using storage = await pacedStorage(dir);
    const src = pacedSource(20, 16);
    const saved = storage.saveSnapshot({ meta: src.meta, chunks: src.source() }, 0);
    await waitFor(() => src.pulled >= 1, { what: "the first chunk taken", intervalMs: 5 });
    // A leader about to send the snapshot to a follower: it gets the new one.
    const read = await within(storage.latestSnapshot(), 10_000, "the snapshot read");
    assertEquals(read?.meta, src.meta);
    assertEquals(read?.data, src.data);
    await within(saved, 1000, "the snapshot write");
  });
});

Deno.test("FileStorage: a crash in the middle of a paced snapshot leaves the state as it was before it", async () => {
  await withDir(async (dir) => {
    await withDir(async (crashed) => {
      const storage = await pacedStorage(dir);
      await storage.saveSnapshot(snapshot(10, 1), 0);
      const src = pacedSource(20, 16);
      const saved = storage.saveSnapshot({ meta: src.meta, chunks: src.source() }, 20);
      const written = () =>
        [...Deno.readDirSync(dir)].some((e) =>
          e.name.endsWith(".tmp") && Deno.statSync(`${dir}/${e.name}`).size >= 4096
        );
      await waitFor(written, { what: "the first chunk written", intervalMs: 5 });
      // What the disk holds if the process dies now: a copy, with the half-written temp file.
      for (const e of Deno.readDirSync(dir)) {
        if (e.isFile && e.name !== "LOCK") {
          Deno.copyFileSync(`${dir}/${e.name}`, `${crashed}/${e.name}`);
        }
      }
      const names = [...Deno.readDirSync(crashed)].map((e) => e.name);
      assert(names.some((n) => n.endsWith(".tmp")), `no temp file among ${names}`);
      let state: LoadedState | undefined;
      const warnings = await capturingWarnings(async () => {
        state = await loadDir(crashed);
      });
      assertStringIncludes(String(warnings[0]?.[0]), "removed leftover temp file");
      assert(![...Deno.readDirSync(crashed)].some((e) => e.name.endsWith(".tmp")));
      assertEquals(state?.snapshot, snapshot(10, 1));
      assertEquals(indexes(state!), entries(11, 30, 1).map((e) => e.index));
      await within(storage.close(), 10_000, "close");
      await within(saved, 1000, "the snapshot write");
    });
  });
});
