/**
 * The simulated network: per-message latency drawn from a distribution with
 * a long tail (which reorders messages), loss, duplication, and directed
 * link cuts from which symmetric partitions, one-way partitions and isolated
 * nodes are built. It decides each message's fate; the simulator owns the
 * clock and delivers.
 *
 * Time is in simulated milliseconds.
 *
 * @module
 */

import type { NodeId } from "../../raft/types.ts";
import type { Prng } from "./prng.ts";

/** How unreliable the network is; drawn from the seed. */
export interface NetworkFaults {
  /** Probability that a message is lost. */
  lossRate: number;
  /** Probability that a delivered message is delivered twice. */
  duplicateRate: number;
  /** Latency of an ordinary message: uniform in [min, max]. */
  latencyMinMs: number;
  latencyMaxMs: number;
  /** Probability that a message takes the slow path (a retransmission, a GC pause). */
  tailRate: number;
  /** Latency of the slow path: uniform in [latencyMaxMs, tailMaxMs]. */
  tailMaxMs: number;
}

/** A network that never loses, duplicates or delays much: used once faults heal. */
export const PERFECT_NETWORK: NetworkFaults = {
  lossRate: 0,
  duplicateRate: 0,
  latencyMinMs: 1,
  latencyMaxMs: 3,
  tailRate: 0,
  tailMaxMs: 3,
};

/** Draws a network fault profile from the seed's generator. */
export function drawNetworkFaults(rng: Prng): NetworkFaults {
  const latencyMinMs = rng.int(0, 3);
  const latencyMaxMs = latencyMinMs + rng.pick([1, 3, 8, 15, 30]);
  return {
    lossRate: rng.pick([0, 0, 0.01, 0.05, 0.1, 0.2]),
    duplicateRate: rng.pick([0, 0, 0.01, 0.05, 0.1]),
    latencyMinMs,
    latencyMaxMs,
    tailRate: rng.pick([0, 0.01, 0.05, 0.1]),
    tailMaxMs: latencyMaxMs + rng.pick([20, 100, 300]),
  };
}

function linkKey(from: NodeId, to: NodeId): number {
  return from * 2 ** 20 + to;
}

/** Directed links that can be cut and restored, plus the per-message fault draw. */
export class Network {
  #rng: Prng;
  #faults: NetworkFaults;
  #cut = new Set<number>();

  /** Creates a network with `faults`, drawing from `rng`. */
  constructor(rng: Prng, faults: NetworkFaults) {
    this.#rng = rng;
    this.#faults = faults;
  }

  /** The current fault profile. */
  get faults(): NetworkFaults {
    return this.#faults;
  }

  /** Replaces the fault profile (e.g. with {@linkcode PERFECT_NETWORK} when healing). */
  set faults(faults: NetworkFaults) {
    this.#faults = faults;
  }

  /** True if messages from `from` can reach `to` right now. */
  connected(from: NodeId, to: NodeId): boolean {
    return !this.#cut.has(linkKey(from, to));
  }

  /** Cuts the directed link `from` → `to`. */
  cut(from: NodeId, to: NodeId): void {
    this.#cut.add(linkKey(from, to));
  }

  /** Restores the directed link `from` → `to`. */
  restore(from: NodeId, to: NodeId): void {
    this.#cut.delete(linkKey(from, to));
  }

  /** The number of directed links currently cut. */
  get cutCount(): number {
    return this.#cut.size;
  }

  /**
   * Splits `a` from `b`: both directions, or only a → b when `oneWay`.
   */
  partition(a: readonly NodeId[], b: readonly NodeId[], options: { oneWay?: boolean } = {}): void {
    for (const x of a) {
      for (const y of b) {
        this.cut(x, y);
        if (!options.oneWay) this.cut(y, x);
      }
    }
  }

  /** Cuts every link to and from `node`. */
  isolate(node: NodeId, others: readonly NodeId[]): void {
    this.partition([node], others.filter((o) => o !== node));
  }

  /** Restores every link. */
  healAll(): void {
    this.#cut.clear();
  }

  /**
   * Decides a message's fate: the latencies (ms) of its deliveries — empty if
   * lost or the link is cut, two entries if duplicated.
   */
  route(from: NodeId, to: NodeId): number[] {
    if (!this.connected(from, to)) return [];
    const f = this.#faults;
    const rng = this.#rng;
    if (rng.chance(f.lossRate)) return [];
    const first = this.#latency();
    if (!rng.chance(f.duplicateRate)) return [first];
    return [first, this.#latency()];
  }

  #latency(): number {
    const f = this.#faults;
    const rng = this.#rng;
    if (rng.chance(f.tailRate)) return rng.int(f.latencyMaxMs, f.tailMaxMs);
    return rng.int(f.latencyMinMs, f.latencyMaxMs);
  }
}
