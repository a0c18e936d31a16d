/**
 * The simulator's command line (`deno task sim`, no permissions needed):
 *
 * ```
 * deno task sim --seeds N [--seed-base B]   # run seeds B..B+N-1
 * deno task sim --seed S [--trace]          # replay one seed
 * ```
 *
 * Without `--seed-base` the base is random (and printed). Exits 1 if any
 * seed failed; a failing seed prints its replay command and the last lines
 * of its trace.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { replayCommand, runSeed, type SimResult, traceTail } from "./simulator.ts";

const TRACE_TAIL_LINES = 200;

function parseSeed(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.log(`sim: --${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
    Deno.exit(2);
  }
  return n;
}

function randomBase(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  // 2^40 leaves room for any number of seeds after the base.
  return ((words[0] as number) % 2 ** 8) * 2 ** 32 + (words[1] as number);
}

function reportFailure(result: SimResult): void {
  console.log(`FAIL seed ${result.seed}: ${result.failure}`);
  console.log(`  replay: ${replayCommand(result.seed)}`);
}

function main(): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        seeds: { type: "string" },
        "seed-base": { type: "string" },
        seed: { type: "string" },
        trace: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
    }));
  } catch (error) {
    console.log(`sim: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  if (values.help) {
    console.log("usage: deno task sim --seeds N [--seed-base B] | --seed S [--trace]");
    return 0;
  }
  const seed = parseSeed("seed", values.seed);
  if (seed !== undefined) {
    const result = runSeed(
      values.trace ? { seed, trace: (line) => console.log(line) } : { seed },
    );
    console.log(`seed ${seed}: ${JSON.stringify(result.stats)}`);
    if (result.ok) {
      console.log(`sim: seed ${seed} passed`);
      return 0;
    }
    if (!values.trace) {
      console.log(`--- last ${TRACE_TAIL_LINES} trace lines ---`);
      for (const line of traceTail(seed, TRACE_TAIL_LINES)) console.log(line);
    }
    reportFailure(result);
    return 1;
  }
  const count = parseSeed("seeds", values.seeds) ?? 100;
  const base = parseSeed("seed-base", values["seed-base"]) ?? randomBase();
  console.log(`sim: seeds ${base}..${base + count - 1}`);
  const started = performance.now();
  const failed: SimResult[] = [];
  for (let i = 0; i < count; i++) {
    const result = runSeed({ seed: base + i });
    if (!result.ok) {
      if (failed.length === 0) {
        console.log(`--- seed ${result.seed}: last ${TRACE_TAIL_LINES} trace lines ---`);
        for (const line of traceTail(result.seed, TRACE_TAIL_LINES)) console.log(line);
      }
      reportFailure(result);
      failed.push(result);
    }
    if ((i + 1) % 1000 === 0) {
      const secs = (performance.now() - started) / 1000;
      console.log(`sim: ${i + 1} seeds in ${secs.toFixed(1)} s, ${failed.length} failed`);
    }
  }
  const secs = (performance.now() - started) / 1000;
  console.log(
    `sim: ${(count / secs).toFixed(1)} seeds/s over ${secs.toFixed(1)} s`,
  );
  console.log(`sim: ${count - failed.length} passed, ${failed.length} failed`);
  return failed.length > 0 ? 1 : 0;
}

Deno.exit(main());
