import { assert, assertEquals } from "../tests/assert.ts";
import { freePorts, waitFor } from "./cluster.ts";

const SCRIPT = new URL("./pipeline.ts", import.meta.url).pathname;

function spawn(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
}

/** Whether `haystack` contains `needle` as a contiguous run of bytes. */
function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("pipeline floor: every PUT is answered 204 and is in both followers' files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "raftkv-pipeline-test-" });
  const [leaderPort, f1, f2] = freePorts(3) as [number, number, number];
  const procs: Deno.ChildProcess[] = [];
  try {
    for (const port of [f1, f2]) {
      procs.push(spawn(["--role", "follower", "--port", String(port), "--dir", dir]));
    }
    await waitFor("the followers", async () => {
      for (const port of [f1, f2]) (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    }, 20_000);
    procs.push(spawn([
      "--role",
      "leader",
      "--port",
      String(leaderPort),
      "--followers",
      `${f1},${f2}`,
      "--dir",
      dir,
    ]));
    const url = `http://127.0.0.1:${leaderPort}/`;
    await waitFor("the leader", async () => {
      const r = await fetch(url, { method: "PUT", body: "warm" });
      await r.body?.cancel();
      return r.status === 204 || undefined;
    }, 20_000);
    // Small bodies, and one larger than a follower's first read buffer (64 KiB).
    const bodies = Array.from({ length: 20 }, (_, i) => `body-${i}-${"x".repeat(i * 7)}`);
    bodies.push(`big-${"y".repeat(100_000)}`);
    for (const body of bodies) {
      const r = await fetch(url, { method: "PUT", body });
      await r.body?.cancel();
      assertEquals(r.status, 204);
    }
    // Each answer came after a follower synced the body: it is in one file at least.
    const encoder = new TextEncoder();
    const files = await Promise.all(
      [f1, f2].map((port) => Deno.readFile(`${dir}/pipeline-follower-${port}.bin`)),
    );
    for (const body of bodies) {
      const bytes = encoder.encode(body);
      assert(files.some((f) => contains(f, bytes)), `no follower holds ${body.slice(0, 12)}`);
    }
    // And the slower follower gets every one too.
    const last = encoder.encode(bodies.at(-1)!);
    await waitFor("both followers to hold the last body", async () => {
      for (const port of [f1, f2]) {
        if (!contains(await Deno.readFile(`${dir}/pipeline-follower-${port}.bin`), last)) {
          return undefined;
        }
      }
      return true;
    }, 10_000);
  } finally {
    for (const p of procs) {
      try {
        p.kill("SIGKILL");
      } catch { /* gone */ }
      await p.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});
