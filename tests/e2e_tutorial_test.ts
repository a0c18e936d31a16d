/**
 * End-to-end: the tutorial's walk-through (`../shared/scenarios/tutorial.sh`
 * beside the repository), run against this checkout with the tutorial's
 * default timings, on free ports.
 *
 * @module
 */

import { assertEquals, assertMatch } from "./assert.ts";
import { freePortRange, MAIN_PATH, REPO_ROOT } from "./harness.ts";

const SCRIPT = new URL("../../shared/scenarios/tutorial.sh", import.meta.url).pathname;
/** The script waits up to 20 s per step; a hung run is stopped after this. */
const SCRIPT_TIMEOUT_MS = 150_000;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function signal(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch {
    // Already exited.
  }
}

const present = exists(SCRIPT);
if (!present) {
  console.warn(`e2e_tutorial_test.ts: ${SCRIPT} is missing; the tutorial test is ignored`);
}

Deno.test({
  name: "the tutorial walk-through passes",
  ignore: !present,
  fn: async () => {
    // Raft ports base..base+2, API ports base+3..base+5.
    const base = freePortRange(6);
    const child = new Deno.Command("bash", {
      args: [SCRIPT, Deno.execPath(), "run", "-A", MAIN_PATH],
      cwd: REPO_ROOT,
      env: { RAFT_PORT: String(base), API_PORT: String(base + 3), NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // SIGTERM runs the script's cleanup (it stops its nodes); SIGKILL if that hangs.
    const timers = [
      setTimeout(() => signal(child, "SIGTERM"), SCRIPT_TIMEOUT_MS),
      setTimeout(() => signal(child, "SIGKILL"), SCRIPT_TIMEOUT_MS + 15_000),
    ];
    const output = await child.output();
    for (const t of timers) clearTimeout(t);
    const text = new TextDecoder();
    const stdout = text.decode(output.stdout);
    const stderr = text.decode(output.stderr);
    const report = `exit ${output.code}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`;
    const last = stdout.trimEnd().split("\n").at(-1) ?? "";
    assertMatch(last, /^tutorial: [1-9][0-9]* passed, 0 failed$/, report);
    assertEquals(output.code, 0, report);
  },
});
