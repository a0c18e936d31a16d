import { assert, assertEquals, assertRejects, assertThrows } from "../tests/assert.ts";
import { collectBytes } from "../raft/bytes.ts";
import { decode, encode } from "../raft/msgpack.ts";
import { decodeCommand, encodeCommand, type KvCommand } from "./command.ts";
import { KvStore, SNAPSHOT_FORMAT, SNAPSHOT_VERSION } from "./store.ts";
import { seededRandom as rng } from "../raft/testing.ts";

function put(key: string, value: string): Uint8Array {
  return encodeCommand({ op: "put", key, value });
}

function del(key: string): Uint8Array {
  return encodeCommand({ op: "delete", key });
}

/** Every key and value of a store, read through `get` for the given keys. */
function contents(store: KvStore, keys: Iterable<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of [...keys].sort()) {
    const value = store.get(key);
    if (value !== undefined) out[key] = value;
  }
  return out;
}

function fromMap(map: Map<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of [...map.keys()].sort()) out[key] = map.get(key)!;
  return out;
}

Deno.test("encodeCommand() and decodeCommand() round-trip puts and deletes, with and without id", () => {
  const commands: KvCommand[] = [
    { op: "put", key: "k", value: "v" },
    { op: "put", key: "a/b ü", value: "", id: 7 },
    { op: "delete", key: "k" },
    { op: "delete", key: "k", id: "node1-42" },
  ];
  for (const cmd of commands) assertEquals(decodeCommand(encodeCommand(cmd)), cmd);
});

Deno.test("decodeCommand() drops unknown fields and rejects bad commands", () => {
  assertEquals(decodeCommand(encode({ op: "delete", key: "k", extra: 1 })), {
    op: "delete",
    key: "k",
  });
  assertThrows(() => decodeCommand(new Uint8Array([0xc1])), SyntaxError, "Cannot decode");
  assertThrows(() => decodeCommand(encode({ op: "incr", key: "k" })), TypeError, "unknown op");
  assertThrows(() => decodeCommand(encode({ op: "put", key: "k", value: 1 })), TypeError, "value");
  assertThrows(() => decodeCommand(encode({ op: "put", key: "", value: "v" })), TypeError, "key");
  assertThrows(() => decodeCommand(encode(["put", "k", "v"])), TypeError, "not a map");
  assertThrows(() => decodeCommand(encode({ op: "delete", key: "k", id: [] })), TypeError, "id");
});

Deno.test("encodeCommand() rejects an ill-typed command", () => {
  assertThrows(
    () => encodeCommand({ op: "put", key: "k", value: 5 } as unknown as KvCommand),
    TypeError,
    "Cannot encode the command: value must be a string",
  );
});

Deno.test("encodeCommand() rejects text with a lone surrogate (UTF-8 cannot carry it)", () => {
  const long = "x".repeat(300);
  assertThrows(
    () => encodeCommand({ op: "put", key: "k", value: long + "\ud800" }),
    TypeError,
    "the value is not valid Unicode",
  );
  assertThrows(
    () => encodeCommand({ op: "delete", key: "\udc00k" }),
    TypeError,
    "the key is not valid Unicode",
  );
  // Well-formed text, astral characters included, round-trips exactly.
  const cmd = { op: "put", key: "k😀", value: long + "é😀" } as const;
  assertEquals(decodeCommand(encodeCommand(cmd)), cmd);
});

Deno.test("apply() puts, overwrites and deletes keys and keeps size", () => {
  const store = new KvStore();
  assertEquals(store.apply(put("a", "1")), { ok: true, op: "put" });
  assertEquals(store.apply(put("b", "2")), { ok: true, op: "put" });
  assertEquals(store.apply(put("a", "3")), { ok: true, op: "put" });
  assertEquals(store.size, 2);
  assertEquals(store.get("a"), "3");
  assertEquals(store.apply(del("a")), { ok: true, op: "delete", existed: true });
  assertEquals(store.apply(del("a")), { ok: true, op: "delete", existed: false });
  assertEquals(store.get("a"), undefined);
  assertEquals(store.size, 1);
});

Deno.test("apply() returns the command's id", () => {
  const store = new KvStore();
  assertEquals(store.apply(encodeCommand({ op: "put", key: "k", value: "v", id: 9 })), {
    ok: true,
    op: "put",
    id: 9,
  });
  assertEquals(store.apply(encodeCommand({ op: "delete", key: "k", id: "x" })), {
    ok: true,
    op: "delete",
    existed: true,
    id: "x",
  });
});

Deno.test("apply() turns undecodable commands and unknown ops into no-op errors, never throws", () => {
  const store = new KvStore();
  store.apply(put("k", "v"));
  const before = store.snapshot();
  const bad = [
    new Uint8Array(),
    new Uint8Array([0xc1]),
    new Uint8Array([0x92, 0x01]), // truncated array
    encode({ op: "put", key: "k", value: "v" }).subarray(0, 5),
    encode({ op: "drop", key: "k" }),
    encode({ op: "put", key: "k" }),
    encode({ op: "put", key: 1, value: "v" }),
    encode({ op: "delete" }),
    encode("put k v"),
    encode(null),
    encode([1, 2, 3]),
  ];
  for (const bytes of bad) {
    const result = store.apply(bytes);
    assertEquals(result.ok, false);
    assert(!result.ok && result.error.length > 0);
  }
  assertEquals(store.snapshot(), before);
  assertEquals(store.get("k"), "v");
});

Deno.test("apply() is deterministic: the same commands give the same snapshot bytes", () => {
  const random = rng(1);
  const commands: Uint8Array[] = [];
  for (let i = 0; i < 2000; i++) {
    const key = `k${Math.floor(random() * 300)}`;
    commands.push(random() < 0.7 ? put(key, `v${i}`) : del(key));
  }
  const a = new KvStore();
  const b = new KvStore();
  for (const c of commands) a.apply(c);
  for (const c of commands) b.apply(c);
  assertEquals(a.snapshot(), b.snapshot());
});

Deno.test("restore() round-trips snapshot(), including empty stores and unusual keys", () => {
  assertEquals(KvStore.restore(new KvStore().snapshot()).size, 0);
  const store = new KvStore();
  const keys = ["a/b", "__proto__", "constructor", "ü ✓ 🚀", " ", "x".repeat(5000)];
  for (const [i, key] of keys.entries()) store.apply(put(key, `value ${i}`));
  store.apply(put("empty", ""));
  const copy = KvStore.restore(store.snapshot());
  assertEquals(copy.size, store.size);
  assertEquals(contents(copy, [...keys, "empty"]), contents(store, [...keys, "empty"]));
  assertEquals(copy.get("empty"), "");
});

Deno.test("snapshot() writes the format name and version first", () => {
  const store = new KvStore();
  store.apply(put("k", "v"));
  const bytes = store.snapshot({ chunkKeysMax: 1 });
  // The header is readable by any MessagePack decoder.
  const restored = KvStore.restore(bytes);
  assertEquals(restored.get("k"), "v");
  assertEquals(bytes[0], 0xdd);
  assert(new TextDecoder().decode(bytes).includes(SNAPSHOT_FORMAT));
});

Deno.test("restore() rejects bytes that are not a valid snapshot", () => {
  const v1 = (value: unknown) => encode(value); // a version-1 chunk: [key, value, ...]
  /** A version-2 chunk from its pair count, UTF-16 lengths and text bytes. */
  const v2 = (pairs: number, lengths: number[], text: Uint8Array | string) => {
    const bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
    const out = new Uint8Array(4 + 4 * lengths.length + bytes.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, pairs, true);
    lengths.forEach((n, i) => view.setUint32(4 + 4 * i, n, true));
    out.set(bytes, 4 + 4 * lengths.length);
    return out;
  };
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0xc1]), "not MessagePack"],
    [encode({ v: 1 }), "not a raftkv.kv snapshot"],
    [encode([SNAPSHOT_FORMAT, 99, 0]), "unsupported snapshot version 99"],
    [encode([SNAPSHOT_FORMAT, SNAPSHOT_VERSION, -1]), "bad key count"],
    [encode([SNAPSHOT_FORMAT, SNAPSHOT_VERSION, 1, "chunk"]), "not a byte string"],
    [encode([SNAPSHOT_FORMAT, 1, 1, new Uint8Array([0xc1])]), "not MessagePack"],
    [encode([SNAPSHOT_FORMAT, 1, 1, v1(["k"])]), "not an array of key-value"],
    [encode([SNAPSHOT_FORMAT, 1, 1, v1(["k", 1])]), "not a string"],
    [encode([SNAPSHOT_FORMAT, 1, 1, v1(["", "v"])]), "not a string"],
    [encode([SNAPSHOT_FORMAT, 1, 2, v1(["k", "v"])]), "header says 2"],
    [encode([SNAPSHOT_FORMAT, 1, 2, v1(["k", "v", "k", "w"])]), "holds 1"],
    [encode([SNAPSHOT_FORMAT, 2, 1, new Uint8Array([1, 0])]), "cut short"],
    [encode([SNAPSHOT_FORMAT, 2, 1, v2(1, [1], "kv")]), "cut short"],
    [encode([SNAPSHOT_FORMAT, 2, 1, v2(1, [1, 2], "kv")]), "lengths past its text"],
    [encode([SNAPSHOT_FORMAT, 2, 1, v2(1, [1, 1], "kvx")]), "text past its lengths"],
    [encode([SNAPSHOT_FORMAT, 2, 1, v2(1, [0, 2], "kv")]), "an empty key"],
    [encode([SNAPSHOT_FORMAT, 2, 1, v2(1, [1, 1], new Uint8Array([0x6b, 0xff]))]), "UTF-8"],
    [encode([SNAPSHOT_FORMAT, 2, 2, v2(2, [1, 1, 1, 1], "kvkw")]), "holds 1"],
  ];
  for (const [bytes, message] of cases) assertThrows(() => KvStore.restore(bytes), Error, message);
});

Deno.test("restore() reads version-1 snapshots (MessagePack chunks)", () => {
  const bytes = encode([SNAPSHOT_FORMAT, 1, 3, encode(["a", "1", "b", "2"]), encode(["c", "é😀"])]);
  const store = KvStore.restore(bytes);
  assertEquals(store.size, 3);
  assertEquals([store.get("a"), store.get("b"), store.get("c")], ["1", "2", "é😀"]);
});

Deno.test("a version-2 snapshot round-trips any well-formed text", () => {
  const store = new KvStore();
  const keys = ["k", "é", "😀key", "x".repeat(300), "\u0000"];
  keys.forEach((k, i) => store.apply(put(k, i % 2 === 0 ? "" : `v😀${"é".repeat(i * 50)}`)));
  for (const chunkKeysMax of [1, 2, 4096]) {
    const restored = KvStore.restore(store.snapshot({ chunkKeysMax }));
    assertEquals(restored.size, keys.length);
    for (const k of keys) assertEquals(restored.get(k), store.get(k));
  }
});

Deno.test("restoreAsync() rejects what restore() rejects and restores what it restores", async () => {
  await assertRejects(() => KvStore.restoreAsync(new Uint8Array([1])), TypeError);
  const store = new KvStore();
  for (let i = 0; i < 100; i++) store.apply(put(`k${i}`, `v${i}`));
  const copy = await KvStore.restoreAsync(store.snapshot({ chunkKeysMax: 7 }));
  assertEquals(copy.snapshot(), store.snapshot());
});

Deno.test("snapshotChunks() concatenates to what snapshot() returned at the call", async () => {
  const store = new KvStore();
  for (let i = 0; i < 50; i++) store.apply(put(`k${i}`, `v${i}`));
  const expected = store.snapshot({ chunkKeysMax: 4 });
  const parts: Uint8Array[] = [];
  for await (const chunk of store.snapshotChunks({ chunkKeysMax: 4 })) parts.push(chunk);
  assertEquals(parts.length, 1 + Math.ceil(50 / 4));
  assertEquals(new Uint8Array(parts.flatMap((p) => [...p])), expected);
});

Deno.test("snapshotChunks() is a consistent view while writes continue", async () => {
  const store = new KvStore();
  const keys: string[] = [];
  for (let i = 0; i < 100; i++) {
    keys.push(`k${i}`);
    store.apply(put(`k${i}`, `old${i}`));
  }
  const expected = contents(store, keys);
  const pending = collectBytes(store.snapshotChunks({ chunkKeysMax: 3 }));
  // Overwrite, delete, delete-and-recreate, and add keys while the snapshot runs.
  for (let i = 0; i < 100; i += 2) store.apply(put(`k${i}`, `new${i}`));
  for (let i = 1; i < 100; i += 4) store.apply(del(`k${i}`));
  store.apply(put("k1", "recreated"));
  for (let i = 100; i < 120; i++) store.apply(put(`k${i}`, `added${i}`));
  await new Promise((resolve) => setTimeout(resolve, 0));
  store.apply(put("k3", "later"));
  const snapshot = await pending;
  const restored = KvStore.restore(snapshot);
  assertEquals(restored.size, 100);
  assertEquals(contents(restored, keys), expected);
  // The live store kept every write, and still does after the layers folded.
  assertEquals(store.get("k0"), "new0");
  assertEquals(store.get("k1"), "recreated");
  assertEquals(store.get("k3"), "later");
  assertEquals(store.get("k5"), undefined);
  assertEquals(store.get("k119"), "added119");
  assertEquals(store.size, 100 - 25 + 1 + 20);
  assertEquals(KvStore.restore(store.snapshot()).size, store.size);
});

Deno.test("snapshotChunks() streams that overlap each keep their own view", async () => {
  const store = new KvStore();
  store.apply(put("a", "1"));
  const first = store.snapshotChunks({ chunkKeysMax: 1 });
  store.apply(put("b", "2"));
  store.apply(del("a"));
  const second = store.snapshotChunks({ chunkKeysMax: 1 });
  store.apply(put("a", "3"));
  store.apply(put("c", "4"));
  const collect = async (stream: AsyncIterable<Uint8Array>) => {
    const parts: Uint8Array[] = [];
    for await (const part of stream) parts.push(part);
    return KvStore.restore(new Uint8Array(parts.flatMap((p) => [...p])));
  };
  const [one, two] = await Promise.all([collect(first), collect(second)]);
  assertEquals(contents(one, ["a", "b", "c"]), { a: "1" });
  assertEquals(contents(two, ["a", "b", "c"]), { b: "2" });
  assertEquals(contents(store, ["a", "b", "c"]), { a: "3", b: "2", c: "4" });
});

Deno.test("snapshotChunks() released early (return, break, dispose) leaves the store correct", async () => {
  const store = new KvStore();
  for (let i = 0; i < 10; i++) store.apply(put(`k${i}`, "v"));
  const unused = store.snapshotChunks();
  store.apply(del("k0"));
  await unused.return();
  assertEquals(await unused.next(), { done: true, value: undefined });
  for await (const _ of store.snapshotChunks({ chunkKeysMax: 2 })) break;
  {
    await using _stream = store.snapshotChunks();
    store.apply(put("k1", "w"));
  }
  assertEquals(store.get("k0"), undefined);
  assertEquals(store.get("k1"), "w");
  assertEquals(store.size, 9);
  // After every stream ended, a fresh one sees the latest state.
  assertEquals(KvStore.restore(await collectBytes(store.snapshotChunks())).get("k1"), "w");
});

Deno.test("snapshotChunks() gives a due timer a turn between chunks", async () => {
  const store = new KvStore();
  for (let i = 0; i < 200; i++) store.apply(put(`k${i}`, "v"));
  let fired = false;
  setTimeout(() => fired = true, 0);
  let chunks = 0;
  for await (const _ of store.snapshotChunks({ chunkKeysMax: 10 })) {
    // Make sure the timer is due, without giving the event loop a turn ourselves.
    const start = performance.now();
    while (chunks === 0 && performance.now() - start < 5) { /* busy */ }
    chunks++;
    if (fired) break;
  }
  assert(fired, "the timer did not run during the snapshot");
  assert(chunks < 21, `the timer ran only after all ${chunks} chunks`);
});

Deno.test("snapshot methods reject a chunk size that is not a positive integer", () => {
  assertThrows(() => new KvStore().snapshot({ chunkKeysMax: 0 }), RangeError, "chunkKeysMax");
  assertThrows(() => new KvStore().snapshotChunks({ chunkKeysMax: 1.5 }), RangeError);
});

Deno.test("random writes interleaved with snapshots match a plain Map (seeds 1-20)", async () => {
  for (let seed = 1; seed <= 20; seed++) {
    const random = rng(seed);
    const store = new KvStore();
    const model = new Map<string, string>();
    const keys = new Set<string>();
    const pending: Promise<void>[] = [];
    for (let step = 0; step < 400; step++) {
      const key = `k${Math.floor(random() * 40)}`;
      keys.add(key);
      const r = random();
      if (r < 0.55) {
        store.apply(put(key, `v${step}`));
        model.set(key, `v${step}`);
      } else if (r < 0.9) {
        const result = store.apply(del(key));
        assertEquals(result, { ok: true, op: "delete", existed: model.delete(key) });
      } else if (r < 0.97) {
        const expected = fromMap(model);
        const size = model.size;
        const snapshot = collectBytes(
          store.snapshotChunks({ chunkKeysMax: 1 + Math.floor(random() * 5) }),
        );
        pending.push(snapshot.then((bytes) => {
          const restored = KvStore.restore(bytes);
          assertEquals(restored.size, size, `seed ${seed} step ${step}`);
          assertEquals(contents(restored, keys), expected, `seed ${seed} step ${step}`);
        }));
      } else {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      assertEquals(store.size, model.size, `seed ${seed} step ${step}`);
      assertEquals(store.get(key), model.get(key), `seed ${seed} step ${step}`);
    }
    await Promise.all(pending);
    assertEquals(contents(store, keys), fromMap(model), `seed ${seed}`);
    assertEquals(contents(KvStore.restore(store.snapshot()), keys), fromMap(model));
  }
});

Deno.test("a snapshot restores keys and values that start with U+FEFF (not a byte-order mark there)", async () => {
  const store = new KvStore();
  const bom = "\ufeff";
  store.applyCommand({ op: "put", key: `${bom}first`, value: `${bom}v` });
  store.applyCommand({ op: "put", key: "k", value: bom + "x".repeat(300) });
  for (
    const copy of [KvStore.restore(store.snapshot()), await KvStore.restoreAsync(store.snapshot())]
  ) {
    assertEquals(copy.get(`${bom}first`), `${bom}v`);
    assertEquals(copy.get("k"), bom + "x".repeat(300));
    assertEquals(copy.size, 2);
  }
});

/** The text length (UTF-16 code units) and pair count of each chunk of a version-2 snapshot. */
function chunkShapes(snapshot: Uint8Array): { pairs: number; chars: number }[] {
  const [, , , ...chunks] = decode(snapshot) as [string, number, number, ...Uint8Array[]];
  return chunks.map((chunk) => {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const pairs = view.getUint32(0, true);
    let chars = 0;
    for (let i = 0; i < 2 * pairs; i++) chars += view.getUint32(4 + 4 * i, true);
    return { pairs, chars };
  });
}

Deno.test("snapshot chunks stay under chunkCharsMax of text (a larger pair alone), so large values can be snapshotted", async () => {
  const random = rng(7);
  const store = new KvStore();
  const expected = new Map<string, string>();
  for (let i = 0; i < 300; i++) {
    const value = "x".repeat(Math.floor(random() * 3000)) +
      (random() < 0.1 ? "y".repeat(5000) : "");
    store.applyCommand({ op: "put", key: `k${i}`, value });
    expected.set(`k${i}`, value);
  }
  // While an earlier snapshot is open, writes go to a layer of their own: the second
  // snapshot merges two layers.
  const open = store.snapshotChunks();
  for (let i = 0; i < 50; i++) {
    store.applyCommand({ op: "put", key: `k${i}`, value: "z".repeat(4000) });
    expected.set(`k${i}`, "z".repeat(4000));
  }
  store.applyCommand({ op: "delete", key: "k60" });
  expected.delete("k60");
  const options = { chunkKeysMax: 50, chunkCharsMax: 4500 };
  const snapshots = [store.snapshot(options), await collectBytes(store.snapshotChunks(options))];
  await open.return();
  for (const snapshot of snapshots) {
    const shapes = chunkShapes(snapshot);
    assert(shapes.length > 300 * 1500 / 4500, `only ${shapes.length} chunks`);
    for (const { pairs, chars } of shapes) {
      assert(pairs >= 1 && pairs <= 50, `a chunk of ${pairs} pairs`);
      assert(chars <= 4500 || pairs === 1, `a chunk of ${pairs} pairs and ${chars} code units`);
    }
    const restored = KvStore.restore(snapshot);
    assertEquals(restored.size, expected.size);
    for (const [key, value] of expected) assertEquals(restored.get(key), value, key);
  }
  assertThrows(() => store.snapshot({ chunkCharsMax: 0 }), RangeError, "chunkCharsMax");
});
