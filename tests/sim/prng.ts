/**
 * A small, fast, seedable pseudo-random generator for the simulator: sfc32
 * (Chris Doty-Humphrey's Small Fast Counting generator), seeded through
 * splitmix32 so that neighbouring seeds give unrelated streams. One seed
 * drives a whole simulation; sub-streams are forked from it so that adding a
 * draw in one place does not shift every other decision.
 *
 * @module
 */

/** splitmix32: a 32-bit mixer, used to expand seeds into generator state. */
function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * A deterministic generator of numbers in [0, 1) and helpers on top.
 *
 * @example
 * ```ts
 * const rng = new Prng(42);
 * const coin = rng.chance(0.5);
 * const die = rng.int(1, 6);
 * ```
 */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** Seeds the generator from any non-negative safe integer. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`Cannot seed the generator: ${seed} is not a non-negative safe integer`);
    }
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    const mix = { s: lo ^ Math.imul(hi, 0x27d4eb2d) ^ 0x5bd1e995 };
    this.#a = splitmix32(mix);
    this.#b = splitmix32(mix) ^ hi;
    this.#c = splitmix32(mix);
    this.#d = splitmix32(mix) | 1;
    // Discard the first outputs: sfc32's first few draws are weakly mixed.
    for (let i = 0; i < 12; i++) this.next32();
  }

  /** The next 32-bit unsigned integer. */
  next32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.next32() / 4294967296;
  }

  /** An integer in [lo, hi], both inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** A float in [lo, hi). */
  float(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Cannot pick from an empty array");
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** A shuffled copy (Fisher–Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const tmp = out[i] as T;
      out[i] = out[j] as T;
      out[j] = tmp;
    }
    return out;
  }

  /** An independent generator seeded from this one's next draws. */
  fork(): Prng {
    return new Prng(this.next32() * 2 ** 21 + (this.next32() >>> 11));
  }
}
