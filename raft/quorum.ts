/**
 * Pure quorum maths: no Raft state, just numbers.
 *
 * @module
 */

import type { NodeId } from "./types.ts";

/** The smallest number of voters that forms a majority of `voters`. */
export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/**
 * The highest index replicated on a majority of `voters`, given each voter's
 * match index (a missing voter counts as 0).
 */
export function committedIndex(voters: readonly NodeId[], match: (id: NodeId) => number): number {
  if (voters.length === 0) return 0;
  const indexes = voters.map(match).sort((a, b) => b - a);
  // Sorted descending, the quorum-th highest index is on a majority.
  return indexes[quorumSize(voters.length) - 1] ?? 0;
}

/** The outcome of a vote count. */
export type VoteResult = "won" | "lost" | "pending";

/** Tallies `votes` (granted or rejected, by voter) among `voters`. */
export function voteResult(
  voters: readonly NodeId[],
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  const q = quorumSize(voters.length);
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  if (granted >= q) return "won";
  if (voters.length - rejected < q) return "lost";
  return "pending";
}

/** True if the members of `acked` that are voters form a majority. */
export function hasQuorum(voters: readonly NodeId[], acked: ReadonlySet<NodeId>): boolean {
  let n = 0;
  for (const id of voters) if (acked.has(id)) n++;
  return voters.length > 0 && n >= quorumSize(voters.length);
}
