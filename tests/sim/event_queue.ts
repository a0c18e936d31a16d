/**
 * A priority queue of timed events: a binary min-heap ordered by time, then
 * by insertion order, so that events due at the same instant run in the order
 * they were scheduled and every run of a seed is identical.
 *
 * @module
 */

interface Slot<T> {
  at: number;
  seq: number;
  value: T;
}

function before<T>(x: Slot<T>, y: Slot<T>): boolean {
  return x.at < y.at || (x.at === y.at && x.seq < y.seq);
}

/** A deterministic min-heap of values due at a time. */
export class EventQueue<T> {
  #heap: Slot<T>[] = [];
  #seq = 0;

  /** The number of pending events. */
  get size(): number {
    return this.#heap.length;
  }

  /** Schedules `value` at time `at`. */
  push(at: number, value: T): void {
    const heap = this.#heap;
    heap.push({ at, seq: this.#seq++, value });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent] as Slot<T>;
      const c = heap[i] as Slot<T>;
      if (!before(c, p)) break;
      heap[parent] = c;
      heap[i] = p;
      i = parent;
    }
  }

  /** The time of the earliest event, or Infinity when empty. */
  peekTime(): number {
    return this.#heap[0]?.at ?? Infinity;
  }

  /** Removes and returns the earliest event. */
  pop(): { at: number; value: T } | undefined {
    const heap = this.#heap;
    const top = heap[0];
    if (top === undefined) return undefined;
    const last = heap.pop() as Slot<T>;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l] as Slot<T>, heap[m] as Slot<T>)) m = l;
        if (r < heap.length && before(heap[r] as Slot<T>, heap[m] as Slot<T>)) m = r;
        if (m === i) break;
        const tmp = heap[i] as Slot<T>;
        heap[i] = heap[m] as Slot<T>;
        heap[m] = tmp;
        i = m;
      }
    }
    return { at: top.at, value: top.value };
  }
}
