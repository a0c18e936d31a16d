import { assertEquals, assertStringIncludes } from "./assert.ts";
import { checkRegisterHistory, type Op } from "./linearizability.ts";

const w = (value: string, invoke: number, complete = invoke + 1, key = "k"): Op => ({
  kind: "write",
  key,
  value,
  invoke,
  complete,
});
const r = (value: string | undefined, invoke: number, complete = invoke + 1, key = "k"): Op => ({
  kind: "read",
  key,
  value,
  invoke,
  complete,
});

function only(problems: string[], text: string): void {
  assertEquals(problems.length, 1, problems.join("\n"));
  assertStringIncludes(problems[0]!, text);
}

Deno.test("a linearizable history passes, overlapping operations included", () => {
  assertEquals(
    checkRegisterHistory([
      r(undefined, 0),
      w("a", 2, 4),
      r(undefined, 3, 5), // overlaps the write: may see either
      r("a", 3, 6),
      w("b", 7, 20),
      r("a", 8, 9), // b has not finished
      r("b", 10, 11), // b may take effect any time before it ends
      r("b", 12, 13),
      w("c", 14, Infinity), // outcome unknown
      r("c", 30, 31), // it did happen
      r(undefined, 0, 1, "other"),
    ]),
    [],
  );
});

Deno.test("a read that misses a write finished before it began is reported", () => {
  only(checkRegisterHistory([w("a", 0, 1), r(undefined, 2)]), "saw no value after");
  only(checkRegisterHistory([w("a", 0, 1), w("b", 2, 3), r("a", 4)]), "is stale");
});

Deno.test("a value nobody wrote, or from a write begun after the read, is reported", () => {
  only(checkRegisterHistory([r("x", 0)]), "nobody wrote");
  only(checkRegisterHistory([r("a", 0, 1), w("a", 2, 3)]), "began after the read ended");
});

Deno.test("a read that goes back in time after another read is reported", () => {
  // b and c overlap, so either may take effect last.
  const history = [w("b", 0, 10), w("c", 0, 10), r("c", 2, 3), r("b", 4, 5), r("b", 6, 7)];
  assertEquals(checkRegisterHistory(history), []);
  only(
    checkRegisterHistory([w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("a", 5, 6)]),
    "went back in time",
  );
  only(
    checkRegisterHistory([w("b", 2, Infinity), r("b", 3, 4), r(undefined, 5, 6)]),
    "went back in time",
  );
});
