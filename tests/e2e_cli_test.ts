/**
 * End-to-end: the command line of the real program — bad flags exit with
 * code 2 and a one-line error, `--version` and `--help` exit with 0.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "./assert.ts";
import { runProgram } from "./harness.ts";
import { VERSION } from "../main.ts";

const BAD_COMMAND_LINES: [string, string[]][] = [
  ["an unknown flag", ["--bogus"]],
  ["no flags at all", []],
  ["a missing --state-dir", ["--raft", ":0", "--api", ":0"]],
  ["a missing --api", ["--state-dir", "/nonexistent/raftkv", "--raft", ":0"]],
  ["a malformed address", [
    "--state-dir",
    "/nonexistent/raftkv",
    "--raft",
    "nohost",
    "--api",
    ":0",
  ]],
  ["a port over 65535", ["--state-dir", "/nonexistent/raftkv", "--raft", ":70000", "--api", ":0"]],
  ["a flag without its value", ["--state-dir", "/nonexistent/raftkv", "--raft", ":0", "--api"]],
  ["a stray argument", ["--state-dir", "/nonexistent/raftkv", "--raft", ":0", "--api", ":0", "x"]],
  ["a repeated flag", ["--state-dir", "a", "--state-dir", "b", "--raft", ":0", "--api", ":0"]],
  [
    "a non-numeric election timeout",
    [
      "--state-dir",
      "/nonexistent/raftkv",
      "--raft",
      ":0",
      "--api",
      ":0",
      "--election-timeout",
      "soon",
    ],
  ],
  [
    "an election timeout under two heartbeats",
    [
      "--state-dir",
      "/nonexistent/raftkv",
      "--raft",
      ":0",
      "--api",
      ":0",
      "--heartbeat-interval",
      "100",
      "--election-timeout",
      "150",
    ],
  ],
  ["a value on --version", ["--version=yes"]],
];

for (const [what, args] of BAD_COMMAND_LINES) {
  Deno.test(`the program exits with code 2 and a one-line error on ${what}`, async () => {
    const r = await runProgram(args);
    assertEquals(r.code, 2, `exit code for ${JSON.stringify(args)}; stderr: ${r.stderr}`);
    assertEquals(r.stdout, "", "nothing on stdout");
    const lines = r.stderr.trimEnd().split("\n");
    assertMatch(lines[0] ?? "", /^raftkv: \S.*$/, "the error is one line on stderr");
    // At most a hint follows the error.
    assert(lines.length <= 2, `stderr has ${lines.length} lines: ${r.stderr}`);
    if (lines[1] !== undefined) assertMatch(lines[1], /--help/);
  });
}

Deno.test("--version prints the version and exits with 0", async () => {
  const r = await runProgram(["--version"]);
  assertEquals(r.code, 0);
  assertEquals(r.stdout, `raftkv ${VERSION}\n`);
  assertEquals(r.stderr, "");
});

Deno.test("--help prints the usage and exits with 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const r = await runProgram([flag]);
    assertEquals(r.code, 0, flag);
    assertMatch(r.stdout, /^raftkv .*\n\nUsage:/);
    assertMatch(r.stdout, /--state-dir/);
  }
});
