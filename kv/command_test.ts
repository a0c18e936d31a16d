import { assertEquals } from "../tests/assert.ts";
import {
  decodeCommand,
  decodeCommandGeneric,
  encodeCommand,
  encodeCommandGeneric,
  type KvCommand,
} from "./command.ts";
import { encode } from "../raft/msgpack.ts";
import { seededRandom as random } from "../raft/testing.ts";

// Lengths around every MessagePack str header boundary, in UTF-8 bytes or code units.
const LENGTHS = [0, 1, 5, 31, 32, 33, 100, 255, 256, 257, 1000, 65535, 65536, 70000];
// ASCII, 2-, 3- and 4-byte UTF-8 (a surrogate pair).
const ALPHABETS = ["abcxyz019-/_ ", "üéßñ", "€中文字", "😀🎉"];

function text(rnd: () => number, minLength: number): string {
  const length = Math.max(minLength, LENGTHS[Math.floor(rnd() * LENGTHS.length)]!);
  const mixed = rnd() < 0.5;
  const base = ALPHABETS[Math.floor(rnd() * ALPHABETS.length)]!;
  const chars = [...(mixed ? ALPHABETS.join("") : base)];
  let s = "";
  while (s.length < length) s += chars[Math.floor(rnd() * chars.length)];
  return s;
}

function command(rnd: () => number): KvCommand {
  const cmd: KvCommand = rnd() < 0.75
    ? { op: "put", key: text(rnd, 1), value: text(rnd, 0) }
    : { op: "delete", key: text(rnd, 1) };
  const r = rnd();
  if (r < 0.4) cmd.id = text(rnd, 0);
  else if (r < 0.6) cmd.id = [0, 127, 128, 65536, -1, -33, 2 ** 40, 1.5][Math.floor(rnd() * 8)]!;
  return cmd;
}

/** What `fn` returns, or the class and message of what it throws. */
function outcome<T>(fn: () => T): T | { threw: string; message: string } {
  try {
    return fn();
  } catch (error) {
    const e = error as Error;
    return { threw: e.constructor.name, message: e.message };
  }
}

Deno.test("encodeCommand() writes the same bytes as the generic MessagePack encoder", () => {
  for (let seed = 1; seed <= 400; seed++) {
    const cmd = command(random(seed));
    assertEquals(encodeCommand(cmd), encodeCommandGeneric(cmd), `seed ${seed}`);
  }
});

Deno.test("decodeCommand() agrees with the generic decoder on commands and on damaged bytes", () => {
  for (let seed = 1; seed <= 400; seed++) {
    const rnd = random(seed);
    const bytes = encodeCommand(command(rnd));
    assertEquals(decodeCommand(bytes), decodeCommandGeneric(bytes), `seed ${seed}`);
    // Cut short, a byte changed, a byte added: whatever the generic decoder
    // makes of it (a command, a SyntaxError or a TypeError), so does this.
    const cut = bytes.subarray(0, Math.floor(rnd() * bytes.length));
    const flipped = bytes.slice();
    flipped[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
    const longer = new Uint8Array([...bytes, Math.floor(rnd() * 256)]);
    for (const damaged of [cut, flipped, longer]) {
      assertEquals(
        outcome(() => decodeCommand(damaged)),
        outcome(() => decodeCommandGeneric(damaged)),
        `seed ${seed}: ${damaged}`,
      );
    }
  }
});

Deno.test("decodeCommand() takes the generic path for maps it does not write itself", () => {
  const cases: unknown[] = [
    { key: "k", op: "put", value: "v" }, // another field order
    { op: "put", key: "k", value: "v", extra: [1, 2] },
    { op: "put", key: "k", value: "v", id: 12 },
    { op: "delete", key: "k", value: "ignored" },
    { op: "put", key: "k" },
    { op: "get", key: "k" },
    { op: "put", key: "", value: "v" },
    { op: "put", key: "k", value: new Uint8Array([1]) },
  ];
  for (const c of cases) {
    const bytes = encode(c);
    assertEquals(outcome(() => decodeCommand(bytes)), outcome(() => decodeCommandGeneric(bytes)));
  }
  // Invalid UTF-8 in the value, and a repeated field: the generic decoder decides.
  const bad = encodeCommand({ op: "put", key: "k", value: "ab" });
  bad[bad.length - 1] = 0xff;
  assertEquals(outcome(() => decodeCommand(bad)), outcome(() => decodeCommandGeneric(bad)));
  const twice = new Uint8Array([
    0x83,
    0xa2,
    0x6f,
    0x70,
    0xa3,
    0x70,
    0x75,
    0x74,
    0xa3,
    0x6b,
    0x65,
    0x79,
    0xa1,
    0x61,
    0xa3,
    0x6b,
    0x65,
    0x79,
    0xa1,
    0x62,
  ]);
  assertEquals(outcome(() => decodeCommand(twice)), outcome(() => decodeCommandGeneric(twice)));
});

Deno.test("a leading U+FEFF in a key, value or id survives encoding and decoding, short or long", () => {
  for (const tail of ["", "ab", "ü", "x".repeat(40), "x".repeat(300), "€".repeat(100)]) {
    const text = "\ufeff" + tail;
    for (
      const cmd of [
        { op: "put", key: text, value: text, id: text },
        { op: "put", key: "k", value: text, id: 7 },
        { op: "delete", key: text },
      ] as KvCommand[]
    ) {
      assertEquals(decodeCommand(encodeCommand(cmd)), cmd, JSON.stringify(cmd).slice(0, 60));
    }
  }
});

Deno.test("decodeCommand() reads numeric ids as the generic decoder does", () => {
  const ids = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 53 - 1];
  for (const n of [...ids, ...ids.map((i) => -i - 1), 1.5, -0.25, 1e300]) {
    const bytes = encodeCommand({ op: "put", key: "k", value: "v", id: n });
    assertEquals(decodeCommand(bytes), decodeCommandGeneric(bytes), String(n));
    assertEquals(decodeCommand(bytes).id, n);
  }
});

Deno.test("encodeCommand() has room for the longest UTF-8 and headers (3-byte characters, str32)", () => {
  const big = "中".repeat(70_000);
  const cmd: KvCommand = { op: "put", key: big, value: big, id: "中中" };
  assertEquals(encodeCommand(cmd), encodeCommandGeneric(cmd));
  assertEquals(decodeCommand(encodeCommand(cmd)), cmd);
});
