import { assert, assertEquals, assertRejects } from "../tests/assert.ts";
import {
  type ByteSource,
  encodeFrames,
  FrameFormatError,
  FrameReader,
  FrameTooLargeError,
  FrameWriter,
} from "./frame.ts";

/** A source that hands out predetermined chunks, one per read (split further if `p` is small). */
function chunkSource(chunks: Uint8Array[]): ByteSource {
  const queue = chunks.map((c) => c.slice());
  return {
    read(p: Uint8Array): Promise<number | null> {
      const chunk = queue[0];
      if (chunk === undefined) return Promise.resolve(null);
      const n = Math.min(p.byteLength, chunk.byteLength);
      p.set(chunk.subarray(0, n));
      if (n === chunk.byteLength) queue.shift();
      else queue[0] = chunk.subarray(n);
      return Promise.resolve(n);
    },
  };
}

async function readAll(reader: FrameReader): Promise<unknown[]> {
  const values: unknown[] = [];
  for await (const value of reader) values.push(value);
  return values;
}

const values: unknown[] = [
  { type: "app", term: 3, data: new Uint8Array([1, 2, 3]) },
  "hello",
  [1, 2, 3],
  42,
  { nested: { bytes: new Uint8Array(300).fill(7) } },
];

Deno.test("FrameReader decodes frames split at every byte boundary", async () => {
  const bytes = encodeFrames(values);
  for (let cut = 1; cut < bytes.byteLength; cut++) {
    const reader = new FrameReader(chunkSource([bytes.subarray(0, cut), bytes.subarray(cut)]));
    assertEquals(await readAll(reader), values, `cut at ${cut}`);
  }
});

Deno.test("FrameReader decodes a stream delivered one byte per read", async () => {
  const bytes = encodeFrames(values);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.byteLength; i++) chunks.push(bytes.subarray(i, i + 1));
  assertEquals(await readAll(new FrameReader(chunkSource(chunks))), values);
});

Deno.test("FrameReader decodes many frames from one read", async () => {
  const many = Array.from({ length: 1000 }, (_, i) => ({ i, data: new Uint8Array([i & 255]) }));
  const reader = new FrameReader(chunkSource([encodeFrames(many)]), {
    readBufferBytes: 1 << 20,
  });
  assertEquals(await readAll(reader), many);
});

Deno.test("FrameReader keeps decoded byte strings valid after later reads reuse its buffer", async () => {
  const many = Array.from({ length: 200 }, (_, i) => new Uint8Array(100).fill(i));
  const bytes = encodeFrames(many);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.byteLength; i += 333) chunks.push(bytes.subarray(i, i + 333));
  const got = await readAll(new FrameReader(chunkSource(chunks), { readBufferBytes: 1024 }));
  assertEquals(got, many);
});

Deno.test("FrameReader reads a frame larger than its buffer", async () => {
  const big = new Uint8Array(3 * 1024 * 1024);
  for (let i = 0; i < big.byteLength; i += 4096) big[i] = i % 251;
  const bytes = encodeFrames(["before", big, "after"]);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.byteLength; i += 70_000) chunks.push(bytes.subarray(i, i + 70_000));
  const got = await readAll(new FrameReader(chunkSource(chunks)));
  assertEquals(got, ["before", big, "after"]);
});

Deno.test("FrameReader reads from a ReadableStream", async () => {
  const bytes = encodeFrames(values);
  const stream = ReadableStream.from([bytes.subarray(0, 7), bytes.subarray(7)]);
  assertEquals(await readAll(new FrameReader(stream)), values);
});

Deno.test("FrameReader rejects a frame over frameBytesMax before reading its payload", async () => {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, 1025);
  const ok = encodeFrames(["first"]);
  const reader = new FrameReader(chunkSource([ok, header]), { frameBytesMax: 1024 });
  assertEquals(await reader.next(), { done: false, value: "first" });
  await assertRejects(() => reader.next(), FrameTooLargeError, "exceeds frameBytesMax 1024");
});

Deno.test("FrameReader rejects a stream that ends inside a frame", async () => {
  const bytes = encodeFrames(["abc"]);
  const reader = new FrameReader(chunkSource([bytes.subarray(0, bytes.byteLength - 1)]));
  await assertRejects(() => reader.next(), FrameFormatError, "ended inside a frame");
});

Deno.test("FrameReader rejects a payload that is not one MessagePack value", async () => {
  const frame = new Uint8Array([0, 0, 0, 2, 0xc1, 0xc1]); // 0xc1 is never used
  await assertRejects(() => new FrameReader(chunkSource([frame])).next(), FrameFormatError);
  const trailing = new Uint8Array([0, 0, 0, 2, 0x01, 0x02]); // two values in one frame
  await assertRejects(() => new FrameReader(chunkSource([trailing])).next(), FrameFormatError);
});

Deno.test("encodeFrames rejects a value over frameBytesMax", () => {
  let thrown: unknown;
  try {
    encodeFrames([new Uint8Array(2000)], { frameBytesMax: 1024 });
  } catch (error) {
    thrown = error;
  }
  assert(thrown instanceof FrameTooLargeError);
});

Deno.test("FrameWriter writes a batch of values with one write", async () => {
  const writes: Uint8Array[] = [];
  const writer = new FrameWriter({
    write(p: Uint8Array): Promise<number> {
      writes.push(p.slice());
      return Promise.resolve(p.byteLength);
    },
  });
  await writer.write(values);
  await writer.write(["more"]);
  assertEquals(writes.length, 2);
  assertEquals(writer.batches, 2);
  assertEquals(writer.frames, values.length + 1);
  assertEquals(await readAll(new FrameReader(chunkSource(writes))), [...values, "more"]);
});

Deno.test("FrameWriter completes short writes", async () => {
  const received: Uint8Array[] = [];
  const writer = new FrameWriter({
    write(p: Uint8Array): Promise<number> {
      const n = Math.min(5, p.byteLength);
      received.push(p.slice(0, n));
      return Promise.resolve(n);
    },
  });
  await writer.write(values);
  assertEquals(await readAll(new FrameReader(chunkSource(received))), values);
});
