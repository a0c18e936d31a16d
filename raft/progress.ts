/**
 * The leader's view of one follower: how much of the log it holds and how
 * the leader is sending to it (probe / replicate / snapshot), with a bounded
 * window of appends in flight.
 *
 * @module
 */

/** How the leader is sending to a follower. */
export type ProgressState = "probe" | "replicate" | "snapshot";

/** A ring of the last indexes of appends in flight, bounded. */
export class Inflights {
  #buffer: number[];
  #start = 0;
  #count = 0;

  constructor(size: number) {
    this.#buffer = new Array<number>(size).fill(0);
  }

  get count(): number {
    return this.#count;
  }

  full(): boolean {
    return this.#count === this.#buffer.length;
  }

  add(lastIndex: number): void {
    if (this.full()) throw new RangeError("Cannot add an inflight append: the window is full");
    this.#buffer[(this.#start + this.#count) % this.#buffer.length] = lastIndex;
    this.#count++;
  }

  /** Frees every append whose last index is ≤ `index` (acknowledged). */
  freeLE(index: number): void {
    while (this.#count > 0 && this.#buffer[this.#start]! <= index) {
      this.#start = (this.#start + 1) % this.#buffer.length;
      this.#count--;
    }
  }

  /** Frees the oldest append in flight. */
  freeFirst(): void {
    if (this.#count === 0) return;
    this.#start = (this.#start + 1) % this.#buffer.length;
    this.#count--;
  }

  reset(): void {
    this.#start = 0;
    this.#count = 0;
  }
}

/** The leader's record of one peer. */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** In probe state: an append was sent and no answer came yet. */
  probeSent = false;
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  isLearner: boolean;
  inflights: Inflights;

  constructor(next: number, isLearner: boolean, inflightMessagesMax: number) {
    this.next = next;
    this.isLearner = isLearner;
    this.inflights = new Inflights(inflightMessagesMax);
  }

  becomeProbe(): void {
    // After a snapshot, resume right after it.
    if (this.state === "snapshot") {
      this.next = Math.max(this.match + 1, this.pendingSnapshot + 1);
    } else {
      this.next = this.match + 1;
    }
    this.#reset("probe");
  }

  becomeReplicate(): void {
    this.next = this.match + 1;
    this.#reset("replicate");
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.#reset("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  #reset(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  /** Records an acknowledgement of `index`; false if it is stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the append at `rejected`; `hint` is where the follower's
   * log may match. False if the rejection is stale.
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  /** True if the leader should hold back appends to this peer. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }
}
