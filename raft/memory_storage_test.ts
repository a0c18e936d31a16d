import { assertEquals, assertRejects } from "../tests/assert.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { entries, storageConformance } from "./storage_conformance.ts";

storageConformance("MemoryStorage", () => {
  let current = new MemoryStorage();
  return Promise.resolve({
    storage: current,
    restart() {
      current = current.crash();
      return Promise.resolve(current);
    },
    cleanup: () => Promise.resolve(),
  });
});

Deno.test("MemoryStorage: crash() stops the old instance and keeps what was saved", async () => {
  const storage = new MemoryStorage();
  await storage.load();
  await storage.save({ entries: entries(1, 3, 1) });
  const restarted = storage.crash();
  await assertRejects(() => storage.save({ entries: entries(4, 4, 1) }), Error, "closed");
  assertEquals((await restarted.load()).entries.map((e) => e.index), [1, 2, 3]);
});

Deno.test("MemoryStorage: an injected fault rejects the write and stops the storage", async () => {
  const storage = new MemoryStorage();
  await storage.load();
  storage.injectFault();
  await assertRejects(() => storage.save({ entries: entries(1, 1, 1) }), Error, "injected");
  await assertRejects(() => storage.save({ entries: entries(1, 1, 1) }), Error, "stopped");
  assertEquals((await storage.crash().load()).entries, []);
});
