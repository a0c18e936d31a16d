import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { seededRandom } from "../raft/testing.ts";
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

Deno.test("a history with no linearization that no single read betrays is reported", () => {
  // a, then b, then a again: each read alone is plausible, together they are not.
  only(
    checkRegisterHistory([w("a", 0, 10), w("b", 1, 10), r("a", 11), r("b", 13), r("a", 15)]),
    "no linearization",
  );
});

/** Whether some order of the operations explains every read (by trying them all). */
function linearizable(history: Op[]): boolean {
  const must = history.filter((o) => o.complete !== Infinity);
  const placed = new Set<Op>();
  const search = (value: string | undefined): boolean => {
    if (must.every((o) => placed.has(o))) return true;
    for (const o of history) {
      if (placed.has(o)) continue;
      // o may go next only if nothing left ended before it began.
      if (history.some((p) => !placed.has(p) && p !== o && p.complete < o.invoke)) continue;
      if (o.kind === "read" && o.value !== value) continue;
      placed.add(o);
      if (search(o.kind === "write" ? o.value : value)) return true;
      placed.delete(o);
    }
    return false;
  };
  return search(undefined);
}

Deno.test("the checker's verdict matches an exhaustive search on 4,000 random small histories", () => {
  const random = seededRandom(20261126);
  let linearizableCount = 0;
  for (let i = 0; i < 4000; i++) {
    const values = ["a", "b", "c"].slice(0, 1 + Math.floor(random() * 3));
    const history: Op[] = [];
    const span = () => {
      const invoke = random() * 20;
      return [invoke, invoke + 0.5 + random() * 8] as const;
    };
    for (const v of values) {
      const [invoke, complete] = span();
      history.push(w(v, invoke, random() < 0.2 ? Infinity : complete));
    }
    const readCount = 1 + Math.floor(random() * 4);
    for (let j = 0; j < readCount; j++) {
      const [invoke, complete] = span();
      const pick = Math.floor(random() * (values.length + 1));
      history.push(r(values[pick], invoke, complete));
    }
    const expected = linearizable(history);
    if (expected) linearizableCount++;
    const problems = checkRegisterHistory(history);
    assertEquals(
      problems.length === 0,
      expected,
      `history ${JSON.stringify(history)}: exhaustive ${expected}, checker ${problems.join("; ")}`,
    );
  }
  // Both verdicts were exercised.
  assert(linearizableCount > 400 && linearizableCount < 3600, `${linearizableCount} linearizable`);
});
