/**
 * A checker for histories of reads and writes of registers (keys) taken
 * from outside a running cluster, as a black-box fault test records them.
 * Every write writes a value no other write uses, so a read names the write
 * it saw. Stale reads, lost and invented values, and reads that go back in
 * time are reported as such; when none is found, a zone test (Gibbons and
 * Korach) decides whether any linearization exists, so a history passes
 * exactly when it is linearizable.
 *
 * @module
 */

/** One operation as a client saw it. Times are from one clock (`performance.now()`). */
export interface Op {
  kind: "write" | "read";
  key: string;
  /** The value written, or the value read (`undefined`: the key was absent). */
  value: string | undefined;
  invoke: number;
  /** When the answer came; `Infinity` for a write whose outcome is unknown (no answer). */
  complete: number;
}

/** The violations in `history`, one line each; empty if none was found. */
export function checkRegisterHistory(history: readonly Op[]): string[] {
  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    const list = byKey.get(op.key);
    if (list) list.push(op);
    else byKey.set(op.key, [op]);
  }
  const problems: string[] = [];
  for (const [key, ops] of byKey) problems.push(...checkKey(key, ops));
  return problems;
}

function checkKey(key: string, ops: Op[]): string[] {
  const problems: string[] = [];
  const writes = ops.filter((o) => o.kind === "write");
  const acked = writes.filter((w) => w.complete !== Infinity);
  const byValue = new Map<string, Op>();
  for (const w of writes) {
    if (w.value === undefined || byValue.has(w.value)) {
      throw new Error(`Cannot check ${key}: a write without a unique value`);
    }
    byValue.set(w.value, w);
  }
  const reads = ops.filter((o) => o.kind === "read");
  const fmt = (o: Op) =>
    `${o.kind} ${JSON.stringify(o.value ?? null)} [${o.invoke.toFixed(1)}, ${
      o.complete.toFixed(1)
    }]`;
  // The write each read saw (undefined: the initial, absent value).
  const source = new Map<Op, Op | undefined>();
  for (const r of reads) {
    if (r.value === undefined) {
      source.set(r, undefined);
      // Absent: no write may have finished before the read began.
      const done = acked.find((w) => w.complete < r.invoke);
      if (done) problems.push(`${key}: ${fmt(r)} saw no value after ${fmt(done)} finished`);
      continue;
    }
    const w = byValue.get(r.value);
    if (w === undefined) {
      problems.push(`${key}: ${fmt(r)} saw a value nobody wrote`);
      continue;
    }
    source.set(r, w);
    if (w.invoke > r.complete) {
      problems.push(`${key}: ${fmt(r)} saw ${fmt(w)}, which began after the read ended`);
    }
    // Stale: a later write (begun after w ended) finished before the read began.
    const newer = acked.find((w2) => w2.invoke > w.complete && w2.complete < r.invoke);
    if (newer) {
      problems.push(`${key}: ${fmt(r)} is stale: ${fmt(newer)} replaced it before the read began`);
    }
  }
  // Reads do not go back in time: a read that begins after another ended sees
  // nothing older than what that one saw.
  const byComplete = [...reads].sort((a, b) => a.complete - b.complete);
  const byInvoke = [...reads].sort((a, b) => a.invoke - b.invoke);
  let i = 0;
  let newest: { read: Op; write: Op } | undefined; // the seen write that began last
  for (const r2 of byInvoke) {
    for (; i < byComplete.length && byComplete[i]!.complete < r2.invoke; i++) {
      const r1 = byComplete[i]!;
      const w1 = source.get(r1);
      if (w1 !== undefined && (newest === undefined || w1.invoke > newest.write.invoke)) {
        newest = { read: r1, write: w1 };
      }
    }
    if (newest === undefined || !source.has(r2)) continue;
    const w2 = source.get(r2);
    if (w2 === undefined || w2.complete < newest.write.invoke) {
      problems.push(
        `${key}: ${fmt(r2)} went back in time: ${fmt(newest.read)} ended before it began`,
      );
    }
  }
  // The checks above explain the usual faults; when they find none, decide
  // whether any linearization exists at all (exact for such histories).
  if (problems.length === 0) problems.push(...checkZones(key, writes, reads, source));
  return problems;
}

interface Zone {
  /** The value (undefined: the initial absent one). */
  value: string | undefined;
  forward: boolean;
  lo: number;
  hi: number;
}

/**
 * Gibbons and Korach's test for registers whose writes all write distinct
 * values (as refined by Golab, Li and Shah, "Analyzing consistency
 * properties for fun and profit", PODC 2011): a value's cluster is its write
 * and the reads that saw it. If some operation of a cluster ended before
 * another of it began, the cluster has a forward zone from the first end to
 * the last start, in which the value must be the register's; otherwise a
 * backward zone from the last start to the first end. Given that every read
 * saw a value written by a write not begun after the read ended (checked
 * above), a history is linearizable exactly when no two forward zones
 * overlap and no backward zone lies inside a forward zone. A write with no
 * answer that nobody saw may never have happened and is left out; one that
 * somebody saw ends at infinity. The initial absent value is written at
 * minus infinity.
 */
function checkZones(
  key: string,
  writes: Op[],
  reads: Op[],
  source: Map<Op, Op | undefined>,
): string[] {
  const clusters = new Map<Op | undefined, { lo: number; hi: number }>();
  const seen = new Set(source.values());
  for (const w of writes) {
    if (w.complete === Infinity && !seen.has(w)) continue;
    clusters.set(w, { lo: w.complete, hi: w.invoke });
  }
  for (const r of reads) {
    const w = source.get(r);
    if (!source.has(r)) continue;
    let c = clusters.get(w);
    if (c === undefined) clusters.set(w, c = { lo: -Infinity, hi: -Infinity }); // the initial value
    c.lo = Math.min(c.lo, r.complete);
    c.hi = Math.max(c.hi, r.invoke);
  }
  const forward: Zone[] = [];
  const backward: Zone[] = [];
  for (const [w, { lo, hi }] of clusters) {
    const value = w?.value;
    if (lo < hi) forward.push({ value, forward: true, lo, hi });
    else backward.push({ value, forward: false, lo: hi, hi: lo });
  }
  const show = (z: Zone) =>
    `${JSON.stringify(z.value ?? null)} (${z.forward ? "forward" : "backward"} zone [${
      z.lo.toFixed(1)
    }, ${z.hi.toFixed(1)}])`;
  const problems: string[] = [];
  forward.sort((a, b) => a.lo - b.lo);
  for (let i = 1; i < forward.length; i++) {
    const a = forward[i - 1]!;
    const b = forward[i]!;
    if (b.lo < a.hi) {
      problems.push(
        `${key}: no linearization: ${show(a)} and ${
          show(b)
        } must each be the register's value over an overlapping time`,
      );
    }
  }
  if (problems.length > 0) return problems;
  for (const z of backward) {
    // The forward zones are disjoint: only the last one starting before z can hold it.
    let lo = 0;
    let hi = forward.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (forward[mid]!.lo < z.lo) lo = mid + 1;
      else hi = mid;
    }
    const f = forward[lo - 1];
    if (f !== undefined && z.hi < f.hi) {
      problems.push(
        `${key}: no linearization: every operation on ${show(z)} lies inside ${
          show(f)
        }, where the register must hold the other value`,
      );
    }
  }
  return problems;
}
