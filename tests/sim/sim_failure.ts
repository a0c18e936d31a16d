/**
 * The error the simulator throws when an invariant breaks: the seed fails.
 *
 * @module
 */

/** An invariant violation found by the simulator (a failed seed). */
export class SimFailure extends Error {
  override name = "SimFailure";
}
