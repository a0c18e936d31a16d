/**
 * Errors that callers of the node handle. HTTP maps each to a status code in
 * one place (http/app.ts `onError`).
 *
 * @module
 */

import type { NodeId } from "./types.ts";

/** This node cannot serve the request because no leader is known or reachable (HTTP 503). */
export class UnavailableError extends Error {
  override name = "UnavailableError";
  /** Seconds after which a retry may succeed. */
  retryAfterSeconds: number;
  constructor(message: string, options?: { retryAfterSeconds?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.retryAfterSeconds = options?.retryAfterSeconds ?? 1;
  }
}

/**
 * A write was submitted but its outcome is unknown: it may still commit
 * (HTTP 503; never reported as success, never as a 4xx).
 */
export class OutcomeUnknownError extends UnavailableError {
  override name = "OutcomeUnknownError";
}

/** The request must go to the leader; `leaderId` is a hint, `NONE` (0) if unknown. */
export class NotLeaderError extends UnavailableError {
  override name = "NotLeaderError";
  leaderId: NodeId;
  constructor(message: string, leaderId: NodeId) {
    super(message);
    this.leaderId = leaderId;
  }
}

/** A member id that is not in the cluster (HTTP 404). */
export class UnknownMemberError extends Error {
  override name = "UnknownMemberError";
}

/** The node is shutting down or was removed; nothing more will be served. */
export class StoppedError extends UnavailableError {
  override name = "StoppedError";
}
