import { FileStorage } from "./file_storage.ts";
import { storageConformance } from "./storage_conformance.ts";

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
